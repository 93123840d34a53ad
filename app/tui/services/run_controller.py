"""Computing and planning in the background: the compute worker, its cancel events, the plan.

Owns everything about a run request after it was built: the request ids, the cancel Event of
each running request (the engine checks it between batches, so cancelling keeps every finished
sample), the thread worker that turns the runner's progress generator into RunStarted /
LoadStageReached / RunProgressed / ProblemReported / RunEnded messages (timed in the worker,
where the stages happen; a request on several GPUs as a `compute --nproc-per-node N`
subprocess whose JSON lines become the same messages), and the debounced plan worker behind the
Setup tab's "cached / partial" column (PlanComputed).

Why a service and not App methods: the App only decides what a message means for the screen;
how work is started, cancelled and reported is one concern with one owner, testable by its
messages. A request is planned once: the runner's `execute(on_plan=)` reports the plan it
computes anyway, and that becomes RunStarted. The runner module is imported inside the workers,
when work starts, so that neither torch nor the runner is imported at start-up.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from layerscope.analysis.base.errors import is_internal, one_line
from layerscope.app.tui.errors import problem_line, run_failure
from layerscope.app.tui.messages import (
    LoadStageReached,
    PlanComputed,
    ProblemReported,
    RunEnded,
    RunProgressed,
    RunStarted,
)

if TYPE_CHECKING:
    from textual.dom import DOMNode
    from textual.timer import Timer

    from layerscope.analysis.base.records import LoadStage
    from layerscope.analysis.runs.runner import PlannedRun, RunProgress, RunRequest

PLAN_DELAY = 0.3  # seconds of quiet picking before the cache status is planned
STAGE_INTERVAL = 0.05  # seconds between two progress updates of one loading step (weights)


class RunController:
    """Starts compute and plan workers on `node` (the App) and posts their messages to it."""

    def __init__(self, node: DOMNode, db_path: Path, plan_delay: float = PLAN_DELAY) -> None:
        self.node = node
        self.db_path = db_path
        self.plan_delay = plan_delay
        self._request_id = 0
        self._active: dict[int, threading.Event] = {}
        self._plan_token = 0
        self._plan_timer: Timer | None = None
        self._processes: dict[int, subprocess.Popen[str]] = {}
        self._signalled: set[int] = set()  # requests whose subprocess was sent SIGINT
        # Whether a several-GPU request's command names --nproc-per-node (tests turn it off)
        self.nproc_option = True

    # --- computing ---------------------------------------------------------------------------

    @property
    def computing(self) -> bool:
        """Whether a compute worker is running (until its RunEnded was handled)."""
        return bool(self._active)

    def start(self, request: RunRequest, description: str) -> int:
        """Compute `request` in a thread worker; returns the request id its messages carry.

        A request on more than one GPU runs `compute --nproc-per-node N` as a subprocess (see
        :meth:`_follow_subprocess`); its messages are the same as the in-process worker's.
        """
        self._request_id += 1
        request_id = self._request_id
        cancel = threading.Event()
        self._active[request_id] = cancel
        node = self.node
        db_path = self.db_path
        in_subprocess = request.gpus > 1
        if in_subprocess:  # the progress header and the Log say where it computes
            description = f"{description} on {request.gpus} GPUs (subprocess)"

        def compute() -> None:
            outcome = "complete"
            message = ""
            started = time.monotonic()
            loading: float | None = None
            last_step = ""
            last_post = 0.0

            def stage_reached(stage: LoadStage) -> None:
                nonlocal loading, last_step, last_post
                now = time.monotonic()
                begins = stage.step != last_step
                finished = stage.done is not None and stage.done == stage.total
                if not (begins or finished or now - last_post >= STAGE_INTERVAL):
                    return  # a weights step reports every tensor: enough to redraw the bar
                last_step, last_post = stage.step, now
                if stage.step == "first batch":
                    loading = now - started
                node.post_message(LoadStageReached(request_id, stage, now - started, begins))

            def planned(runs: list[PlannedRun]) -> None:
                node.post_message(RunStarted(request_id, description, runs))

            def progressed(progress: RunProgress) -> None:
                nonlocal outcome, message
                node.post_message(RunProgressed(request_id, progress))
                if progress.status == "failed":
                    outcome = "failed"
                    message = progress.message or f"{progress.response_type} failed"
                    node.post_message(ProblemReported("Run failed", message))
                elif progress.message and progress.status == "running":
                    node.post_message(
                        ProblemReported(progress.response_type, progress.message, "warning")
                    )

            try:
                if in_subprocess:
                    error = self._follow_subprocess(
                        request_id, request, cancel, planned, stage_reached, progressed
                    )
                    if error and outcome != "failed":
                        outcome, message = "failed", error
                        node.post_message(ProblemReported("Run failed", message))
                else:
                    from layerscope.analysis.runs.runner import execute

                    for progress in execute(
                        request,
                        db_path=db_path,
                        cancel=cancel,
                        on_plan=planned,
                        on_stage=stage_reached,
                    ):
                        progressed(progress)
                if cancel.is_set() and outcome != "failed":
                    outcome = "cancelled"
            except Exception as error:  # out of memory, a model that fails to load, a bad file
                outcome = "failed"
                said = run_failure(error)  # where an internal error's traceback went, too
                message = one_line(error) if is_internal(error) else said
                node.post_message(ProblemReported("Run failed", said))
            elapsed = time.monotonic() - started
            node.post_message(RunEnded(request_id, outcome, message, elapsed, loading))

        node.run_worker(compute, thread=True, group="compute", exit_on_error=False)
        return request_id

    # --- computing in a subprocess (several GPUs) ----------------------------------------------

    def compute_command(self, request: RunRequest) -> list[str]:
        """The `layerscope compute` command line of `request`, following it as JSON lines.

        Every compute setting is passed explicitly, so the subprocess computes exactly the
        runs (keys) the explorer planned. `nproc_option` False leaves out `--nproc-per-node`
        (tests: the same path on a CPU-only machine, one process).
        """
        from layerscope.analysis.base.settings import offered
        from layerscope.app.settings_presentation import flag

        argv = [sys.executable, "-m", "layerscope.app", "compute", "--model", request.model]
        argv += ["--dataset", str(request.dataset), "--db", str(self.db_path)]
        if request.types:
            argv += ["--types", ",".join(request.types)]
        for item in offered("compute"):
            holder = request.settings if item.target == "compute" else request
            value = getattr(holder, item.name)
            if item.kind == "flag":
                if bool(value) != bool(item.default):
                    argv.append(flag(item))
            elif value is None and item.default is None:
                continue  # unset and unset by default (max memory, revision): say nothing
            else:
                argv += [flag(item), "" if value is None else str(value)]
        if self.nproc_option:
            argv += ["--nproc-per-node", str(request.gpus)]
        return [*argv, "--progress-format", "jsonl", "--quiet"]

    def _follow_subprocess(
        self,
        request_id: int,
        request: RunRequest,
        cancel: threading.Event,
        planned: Callable[[list[PlannedRun]], None],
        stage_reached: Callable[[LoadStage], None],
        progressed: Callable[[RunProgress], None],
    ) -> str:
        """Run the request's compute command, turning its JSON lines into the worker's calls;
        returns its error line ("" when it completed or was cancelled).

        Cancelling sends SIGINT (the command stores the finished batches and exits 130) and
        waits for it. The explorer keeps no connection to the cache (each read opens and closes
        its own, see :mod:`layerscope.analysis.cache.connection`), so the subprocess is the only
        writer and the explorer's reads meanwhile wait their turn for the lock, as a `runs`
        from another terminal does.
        """
        from layerscope.analysis.runs.progress_codec import (
            NotAProgressLine,
            PlanEvent,
            ProgressEvent,
            StageEvent,
            decode,
        )

        process = subprocess.Popen(
            self.compute_command(request),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # the terminal's signals are the explorer's, not its
        )
        self._processes[request_id] = process
        if cancel.is_set() and request_id not in self._signalled:
            self._signalled.add(request_id)
            process.send_signal(signal.SIGINT)
        errors: list[str] = []
        reader = threading.Thread(
            target=lambda: errors.extend(line.rstrip() for line in process.stderr or ()),
            daemon=True,
        )
        reader.start()
        try:
            for line in process.stdout or ():
                try:
                    record = decode(line)
                except NotAProgressLine:
                    continue  # not one of ours (a library printing to stdout)
                if isinstance(record, PlanEvent):
                    planned(list(record.runs))
                elif isinstance(record, StageEvent):
                    stage_reached(record.stage)
                elif isinstance(record, ProgressEvent):
                    progressed(record.progress)
        finally:
            status = process.wait()
            reader.join()
            self._processes.pop(request_id, None)
            self._signalled.discard(request_id)
        if status == 0 or (cancel.is_set() and status in (130, 143)):
            return ""
        said = [line for line in errors if line.startswith("layerscope: error: ")]
        if said:
            return said[-1].removeprefix("layerscope: error: ")
        internal = [line for line in errors if line.startswith("layerscope: internal error: ")]
        if internal:  # it says where it wrote the traceback
            return internal[-1].removeprefix("layerscope: ")
        return f"the compute subprocess exited with status {status}" + (
            f": {errors[-1]}" if errors else ""
        )

    def ended(self, request_id: int) -> None:
        """The App handled this request's RunEnded: it no longer counts as computing."""
        self._active.pop(request_id, None)

    def cancel(self) -> bool:
        """Ask every running request to stop after its current batch; False if none runs."""
        if not self._active:
            return False
        for event in self._active.values():
            event.set()
        for request_id, process in list(self._processes.items()):
            if process.poll() is None and request_id not in self._signalled:
                # Once: a second SIGINT would stop it at once, before it reports the cancel.
                self._signalled.add(request_id)
                process.send_signal(signal.SIGINT)  # stores finished batches, exits 130
        return True

    # --- planning ----------------------------------------------------------------------------

    def schedule_plan(self, make_request: Callable[[], RunRequest | None]) -> None:
        """Plan `make_request()` once picking has been quiet for `plan_delay` seconds.

        `make_request` is called then (None: the picks are incomplete, nothing to plan).
        """
        if self._plan_timer is not None:
            self._plan_timer.stop()
        self._plan_timer = self.node.set_timer(
            self.plan_delay, lambda: self._start_plan(make_request)
        )

    def _start_plan(self, make_request: Callable[[], RunRequest | None]) -> None:
        self._plan_timer = None
        self._plan_token += 1  # a plan still running for older picks is dropped when it answers
        token = self._plan_token
        request = make_request()
        if request is None:
            return
        node = self.node
        db_path = self.db_path

        def plan_worker() -> None:
            try:
                from layerscope.analysis.runs.runner import plan

                planned = plan(request, db_path)
            except Exception as error:  # a plan is advisory: show why, never fail
                node.post_message(PlanComputed(token, [], error=problem_line(error)))
                return
            node.post_message(PlanComputed(token, planned))

        node.run_worker(plan_worker, thread=True, exclusive=True, group="plan", exit_on_error=False)

    def is_current(self, message: PlanComputed) -> bool:
        """Whether a plan result belongs to the newest picks (older ones are dropped)."""
        return message.token == self._plan_token
