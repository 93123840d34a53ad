"""The explorer on a machine with several GPUs: the run settings offer "GPUs: 1..N", and a
request on more than one runs `layerscope compute --nproc-per-node N` as a subprocess whose
progress arrives as the same messages the in-process worker posts; cancel stops it with the
finished batches kept.

The subprocess path is tested on CPU: the GPU count is faked (``$LAYERSCOPE_GPU_COUNT``) and the
controller launches the command without ``--nproc-per-node`` (one process), computing a real
small model. Tests wait on conditions (the first stored batch, the end), never on time.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from test_runner import model_folder, write_dataset  # noqa: F401 (fixture)
from textual.app import App
from textual.widgets import Label, Select

from layerscope.analysis.base import devices
from layerscope.analysis.base.records import ComputeSettings
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.runs.runner import RunRequest
from layerscope.app.tui.messages import (
    LoadStageReached,
    RunEnded,
    RunProgressed,
    RunStarted,
)
from layerscope.app.tui.services import gpus
from layerscope.app.tui.services.run_controller import RunController
from layerscope.app.tui.state import first_start_values
from layerscope.app.tui.widgets.setup.settings_form import SettingsForm


class Node:
    """What the controller posts to, recording the messages; workers run as threads."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.changed = threading.Condition()
        self.on_message = lambda _message: None

    def post_message(self, message: Any) -> None:
        with self.changed:
            self.messages.append(message)
            self.changed.notify_all()
        self.on_message(message)

    def run_worker(self, work, **_options) -> None:
        threading.Thread(target=work, daemon=True).start()

    def wait_for(self, condition, what: str) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: condition(self.messages), timeout=300), what


def test_the_gpu_count_needs_no_torch(monkeypatch):
    monkeypatch.setenv(gpus.GPU_COUNT_ENV, "3")
    assert gpus.visible_gpu_count() == 3
    monkeypatch.delenv(gpus.GPU_COUNT_ENV)
    monkeypatch.setattr(devices, "_library_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpus.visible_gpu_count() == 4
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    assert gpus.visible_gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")
    assert gpus.visible_gpu_count() == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpus.visible_gpu_count() == 0


@pytest.mark.parametrize(("count", "offered"), [(1, False), (4, True)])
async def test_the_form_offers_gpus_only_where_several_are_visible(monkeypatch, count, offered):
    monkeypatch.setenv(gpus.GPU_COUNT_ENV, str(count))

    class FormApp(App[None]):
        def compose(self):
            yield SettingsForm(first_start_values(), id="form")

    app = FormApp()
    async with app.run_test(size=(80, 30)):
        form = app.query_one(SettingsForm)
        labels = [str(label.render()) for label in form.query(Label)]
        assert ("GPUs" in labels) is offered
        if not offered:
            assert "gpus" not in form.read()
            return
        field = form.query_one("#setting-gpus", Select)
        assert [str(option[1]) for option in field._options] == ["1", "2", "3", "4"]
        assert form.read()["gpus"] == 1
        field.value = "3"
        assert form.read()["gpus"] == 3


def test_the_forms_gpus_reach_the_request():
    request = RunRequest.from_settings("tiny", "math", None, {"gpus": 2})
    assert request.gpus == 2
    assert RunRequest.from_settings("tiny", "math", None, {}).gpus == 1  # no field: one device
    with pytest.raises(ValueError, match="at least 1"):
        RunRequest.from_settings("tiny", "math", None, {"gpus": 0})


def request_for(model_folder, data, gpus_wanted=2):  # noqa: F811
    return RunRequest(
        model=str(model_folder),
        dataset=data,
        settings=ComputeSettings(batch_size=1, max_length=64),
        gpus=gpus_wanted,
    )


def test_the_subprocess_command_carries_the_request(tmp_path, model_folder):  # noqa: F811
    controller = RunController(Node(), tmp_path / "c.duckdb")
    request = request_for(model_folder, tmp_path / "d.json", 4)
    request.limit, request.types = 7, ["arith"]
    argv = controller.compute_command(request)
    assert argv[1:4] == ["-m", "layerscope.app", "compute"]
    joined = " ".join(argv[4:])
    for part in ("--batch-size 1", "--max-length 64", "--limit 7", "--types arith",
                 f"--db {tmp_path / 'c.duckdb'}", "--nproc-per-node 4",
                 "--progress-format jsonl"):  # fmt: skip
        assert part in joined
    controller.nproc_option = False
    assert "--nproc-per-node" not in controller.compute_command(request)


def test_a_request_on_several_gpus_computes_in_a_subprocess_and_cancel_keeps_batches(
    tmp_path,
    model_folder,  # noqa: F811
):
    data = write_dataset(tmp_path / "data", 12)
    db = tmp_path / "c.duckdb"
    node = Node()
    controller = RunController(node, db)
    controller.nproc_option = False  # one CPU process stands in for torchrun

    def cancel_after_the_first_batch(message: Any) -> None:
        if isinstance(message, RunProgressed) and message.progress.done > 0:
            controller.cancel()

    node.on_message = cancel_after_the_first_batch
    request_id = controller.start(request_for(model_folder, data), "small-llama on arith")
    node.wait_for(lambda ms: any(isinstance(m, RunEnded) for m in ms), "the run ended")
    kinds = [type(m) for m in node.messages]
    assert RunStarted in kinds, node.messages
    assert kinds.index(RunStarted) < kinds.index(RunProgressed) < kinds.index(RunEnded)
    assert LoadStageReached in kinds
    started = next(m for m in node.messages if isinstance(m, RunStarted))
    assert started.request_id == request_id and started.planned[0].total == 12
    assert started.description == "small-llama on arith on 2 GPUs (subprocess)"
    ended = next(m for m in node.messages if isinstance(m, RunEnded))
    assert ended.outcome == "cancelled", ended.message
    progress = [m.progress for m in node.messages if isinstance(m, RunProgressed)]
    assert progress[-1].status == "cancelled"
    (info,) = ResultsCache(db).runs()
    assert info.id == started.planned[0].run_id
    assert info.status == "cancelled"
    assert 0 < info.samples_done < 12  # finished batches kept, the rest not computed
    assert info.samples_done == progress[-1].done
