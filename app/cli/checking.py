"""``check``: a quick profile of a model, within a time budget, on one screen.

Why rounds: a check must be quick on the machine it runs on (a 135M-parameter model in two
minutes on a 2-core laptop), and how long a sample takes is known only once some were computed.
The profile's samples are taken in rounds (2, 4, 8, ... per type; see
:mod:`layerscope.analysis.results.profiles`): the model is loaded once, every round leaves a
whole profile in the cache, and a round begins only when the rate measured so far says it fits
in what is left of ``--budget``. What it will do is said before it starts, and each round's time
as it ends, on standard error; the profile is one screen on standard output (:mod:`.check_report`).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from layerscope.app.cli import output
from layerscope.app.cli.arguments import PROG, UsageError, projections
from layerscope.app.cli.computing import build_request, check_instruct, quiet_loading
from layerscope.app.cli.outcome import Outcome, summary_lines
from layerscope.app.cli.progress_bars import execute_with_progress
from layerscope.app.labels import duration, initialisation

if TYPE_CHECKING:
    from layerscope.analysis.runs.runner import RunRequest

# --budget when none is given: on a CPU a check must stay quick; a GPU computes the default
# 8 samples per type of a 7B model in about a minute, so its check is not cut.
CPU_BUDGET_SECONDS = 120.0


def default_budget(request: RunRequest) -> float:
    from layerscope.analysis.base.devices import device_file_gpu_count

    on_cpu = request.device == "cpu" or (request.device == "auto" and not device_file_gpu_count())
    return CPU_BUDGET_SECONDS if on_cpu else math.inf


def say(line: str) -> None:
    """A line on standard error, unwrapped (a log keeps it whole; a terminal wraps it)."""
    print(line, file=sys.stderr, flush=True)


def cmd_check(args: argparse.Namespace) -> int:
    from layerscope.analysis.base.records import ENTRY_STATISTICS
    from layerscope.analysis.results.profiles import ProfileError, check_types
    from layerscope.analysis.runs.distributed import detect
    from layerscope.analysis.runs.runner import resolve_sources
    from layerscope.app.cli.browsing import metric_name

    if detect() is not None:
        raise UsageError("check runs in one process; use compute under torchrun")
    began = time.perf_counter()
    quiet_loading(args.quiet)
    metric = metric_name(args.metric)
    projections(args.proj)
    check_instruct(args.model, args.mode)
    request = build_request(args, "check")
    if metric in ENTRY_STATISTICS:  # the profile shows them: computed after all
        request.settings = replace(request.settings, entry_statistics=True)
    sources = resolve_sources(request)
    try:
        request.types = check_types([s.response_type for s in sources], args.dataset)
    except ProfileError as error:
        raise UsageError(str(error)) from None
    from layerscope.analysis.models.inspection import inspect_model_path

    model_check = inspect_model_path(request.model, request.revision, request.offline)
    if not model_check.ok:  # said before what the check will do
        raise model_check.refusal()
    if not model_check.download:  # and what loading would refuse once the wait began
        from layerscope.analysis.models.inspection import read_config
        from layerscope.analysis.models.sources import resolve_model_spec
        from layerscope.analysis.models.weight_shapes import check_config_against_weights

        folder = resolve_model_spec(request.model, request.revision, request.offline).path
        check_config_against_weights(folder, read_config(folder))
    budget = args.budget if args.budget is not None else default_budget(request)
    outcome, per_type = _in_rounds(request, args, budget, began, _limit(request, sources))
    if outcome.cancelled is not None:
        print(f"{PROG}: cancelled; run the same command to resume", file=sys.stderr)
        return outcome.cancelled
    return _report(args, metric, request, outcome, per_type)


def _limit(request: RunRequest, sources: Any) -> int:
    """Samples per type the check asks for: ``--limit``, else the smallest type's count."""
    if request.limit is not None:
        return request.limit
    from layerscope.analysis.datasets import count_samples

    types = request.types or []
    return min(count_samples(s) for s in sources if s.response_type in types)


def _in_rounds(
    request: RunRequest, args: argparse.Namespace, budget: float, began: float, limit: int
) -> tuple[Outcome, int]:
    """Compute the profile in rounds within ``budget`` seconds from ``began``: the last
    round's outcome and its samples per type."""
    from layerscope.analysis.results.profiles import next_round_cost, rounds

    sizes = rounds(limit)
    err = output.console(stderr=True)
    types = list(request.types or [])
    within = "no time limit" if math.isinf(budget) else f"a budget of {duration(budget)}"
    if not args.quiet:
        say(
            f"check: {len(types)} response types × up to {limit} samples "
            f"({', '.join(types)}), in rounds of {', '.join(map(str, sizes))} per type, within "
            f"{within} (--budget); cosines and spectra off"
        )
    loaded: list[Any] = []
    rates: dict[str, float] = {}  # response type -> seconds per sample computed
    computing: dict[str, float] = {}  # run id -> seconds computing, over the rounds
    loading: float | None = None
    done = 0
    outcome: Outcome | None = None
    for size in sizes:
        left = budget - (time.perf_counter() - began)
        cost = next_round_cost(rates, types, done, size)
        if rates and cost > left:  # nothing measured yet (all cached): only a round tells
            say(
                f"check: stopping at {done} samples per type: {size} would take about "
                f"{duration(cost)} more, and {duration(max(left, 0))} of the budget is left "
                f"(--budget none or a longer one for up to {limit})"
            )
            break
        outcome = execute_with_progress(
            replace(request, limit=size),
            args.db,
            args.quiet,
            model=loaded[0] if loaded else None,
            on_model=loaded.append,
        )
        if outcome.cancelled is not None:
            return outcome, done
        loading = outcome.loading if loading is None else loading
        for run_id, seconds in outcome.computing.items():
            computing[run_id] = computing.get(run_id, 0.0) + seconds
        for final in outcome.finals:
            computed = final.done - min(done, final.done)
            if computed > 0 and final.run_id in outcome.computing:
                rates[final.response_type] = outcome.computing[final.run_id] / computed
        if not args.quiet:
            say(f"check: {size} samples per type after {duration(time.perf_counter() - began)}")
        done = size
    assert outcome is not None  # sizes is never empty
    outcome = replace(
        outcome, computing=computing, loading=loading, total=time.perf_counter() - began
    )
    for line in summary_lines(outcome):  # stdout is the profile's; runs are told on stderr
        err.print(line)
    return outcome, done


def _report(
    args: argparse.Namespace,
    metric: str,
    request: RunRequest,
    outcome: Outcome,
    per_type: int,
) -> int:
    from layerscope.analysis.base.records import ATTENTION_PROJECTIONS
    from layerscope.analysis.cache import ResultsCache
    from layerscope.analysis.results.profiles import check_pairs
    from layerscope.app.cli.check_report import report_profile
    from layerscope.app.labels import short_model

    cache = ResultsCache(args.db)
    by_type = {final.response_type: final.run_id for final in outcome.finals}
    infos = [cache.run(by_type[t]) for t in request.types or [] if t in by_type]
    if not args.proj:
        args.proj = ",".join(p for p in ATTENTION_PROJECTIONS if p in infos[0].projections)
    title = f"{metric} by layer, {short_model(infos[0].model)}, {per_type}/type"
    if initialisation(infos[0]):
        title += f", {initialisation(infos[0])}"
    return report_profile(cache, infos, args, check_pairs(by_type), title)
