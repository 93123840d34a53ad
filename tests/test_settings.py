"""The settings record is the one owner of every computing option: the command line is built
from it, the runner's request takes its defaults, and the run key depends on exactly its keyed
fields (so caches written before stay found)."""

from __future__ import annotations

import argparse
from typing import get_args

import pytest

from layerscope.analysis.base import choices
from layerscope.analysis.base import settings as record
from layerscope.analysis.base.records import ComputeSettings, Method, Mode, ModuleSet
from layerscope.analysis.base.setting_schema import SettingError
from layerscope.analysis.base.setting_values import check_values
from layerscope.analysis.runs.runner import RunRequest, run_key
from layerscope.app.cli.grammar import build_parser
from layerscope.app.settings_presentation import (
    flag,
    form_id,
    form_label,
    form_name,
    option_name,
)

# Arguments of the computing commands that are not settings: what to compute and how to show it.
NOT_SETTINGS = {"help", "db", "model", "dataset", "types", "quiet", "metric", "proj", "json"}
NOT_SETTINGS |= {"width", "height"}
NOT_SETTINGS |= {"shard", "progress_format"}  # how one request is run, not what it computes
NOT_SETTINGS |= {"dry_run", "budget"}  # what a command does with the request
# torchrun's options, passed on by `compute --nproc-per-node` (not settings of a run)
NOT_SETTINGS |= {"nproc_per_node", "nnodes", "node_rank", "rdzv_backend", "rdzv_endpoint"}
NOT_SETTINGS |= {"rdzv_id", "master_addr", "master_port", "gpus_per_replica"}


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[name]


@pytest.mark.parametrize("command", ["compute", "check"])
def test_cli_offers_exactly_the_records_settings_with_their_defaults(command):
    actions = {a.dest: a for a in subparser(command)._actions if a.dest not in NOT_SETTINGS}
    offered = record.offered(command)
    assert list(actions) == [s.name for s in offered]
    for item in offered:
        action = actions[item.name]
        assert action.option_strings == [flag(item)]
        assert action.default == item.default_for(command)
        if item.choices:
            assert tuple(action.choices) == item.choices
    argv = ["m"] if command == "check" else ["--model", "m", "--dataset", "d"]
    defaults = vars(subparser(command).parse_args(argv))
    assert {s.name: defaults[s.name] for s in offered} == {
        s.name: s.default_for(command) for s in offered
    }


def test_check_starts_small_and_compute_takes_everything():
    assert record.setting("limit").default_for("check") == 8
    assert record.setting("limit").default_for("compute") is None


def test_cpu_threads_are_offered_by_the_commands_on_auto_and_change_no_numbers():
    item = record.setting("cpu_threads")
    assert item.surfaces == {"compute", "check"}  # the form leaves it on auto
    assert (item.default, item.target, flag(item)) == (None, "request", "--cpu-threads")
    assert not item.keyed  # how many threads does not change the numbers
    for command in ("compute", "check"):
        (action,) = [a for a in subparser(command)._actions if a.dest == "cpu_threads"]
        assert action.default is None and action.help.endswith("(default: auto)")
    assert RunRequest.from_settings("m", "d", None, {"cpu_threads": 3}).cpu_threads == 3
    with pytest.raises(SettingError, match="must be at least 1, got 0"):
        RunRequest.from_settings("m", "d", None, {"cpu_threads": 0})


def test_literal_types_agree_with_the_records_choices():
    assert get_args(Mode) == choices.MODES
    assert get_args(ModuleSet) == choices.MODULE_SETS
    assert get_args(Method) == choices.METHODS


def test_request_from_settings_splits_values_and_defaults_the_rest():
    request = RunRequest.from_settings(
        "tiny", "math", ["none_cot"], {"max_length": 256, "dtype": "float64", "limit": 3}
    )
    assert request.settings == ComputeSettings(max_length=256)
    assert (request.dtype, request.limit, request.device) == ("float64", 3, "auto")
    assert request.types == ["none_cot"]
    assert RunRequest("m", "d") == RunRequest.from_settings("m", "d", None, {})


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"max_length": 0}, "must be at least 1, got 0"),
        ({"dtype": "float8"}, "choose one of auto, float32"),
        ({"sample_seed": 3}, "needs samples"),
        ({"spectra": "yes"}, "expected yes or no"),
    ],
)
def test_rejected_values_name_the_reason(values, fragment):
    with pytest.raises(SettingError, match=fragment):
        RunRequest.from_settings("m", "d", None, values)


def test_typed_values_are_parsed_as_the_form_and_cli_do():
    limit = record.setting("limit")
    assert limit.parse("") is None and limit.parse(" 12 ") == 12
    with pytest.raises(SettingError, match="whole number"):
        record.setting("max_length").parse("1e3")
    with pytest.raises(SettingError) as caught:
        check_values({"sample_seed": 1})
    error = caught.value
    assert error.setting == "sample_seed"
    assert error.describe(option_name) == "--sample-seed: needs --limit"
    assert error.describe(form_name) == "seed: needs samples" == str(error)


def test_keyed_fields_are_the_records_and_run_keys_are_unchanged():
    """Run keys written by earlier versions must still be found: this pins two of them."""
    keyed = {s.name for s in record.SETTINGS if s.keyed}
    assert keyed == {
        "mode", "system_prompt", "max_length", "modules", "spectra", "entry_statistics",
        "cosines", "dtype", "init", "init_seed",
    }  # fmt: skip
    identity = {"name": "x", "config_sha256": "c", "weights_fingerprint": "w", "revision": None}
    plain = run_key(identity, "d" * 64, "none_cot", ComputeSettings(), "float32")
    assert plain == "ccf68ef95275633afaa21c407a4eca846475dae050948c2d59a0f1d23c30e7a3"
    settings = ComputeSettings(mode="instruct", spectra=True, batch_size=9)
    assert run_key(identity, "d" * 64, "none_cot", settings, "bfloat16") == (
        "10eeb88acb77fb42ce1a9a36b37bdbda6299095cdbb89ceb801feace26890bee"
    )
    # Batch size and method do not change the numbers, so not the key either.
    same = ComputeSettings(batch_size=1, method="reference")
    assert run_key(identity, "d" * 64, "none_cot", same, "float32") == plain


async def test_explorer_form_offers_exactly_the_records_settings_with_their_defaults():
    from textual.app import App
    from textual.widgets import Input, Label, Select

    from layerscope.app.tui.state import first_start_values
    from layerscope.app.tui.widgets.setup.settings_form import SettingsForm

    class FormApp(App[None]):
        def compose(self):
            yield SettingsForm(first_start_values(), id="form")

    app = FormApp()
    async with app.run_test(size=(80, 24)):
        form = app.query_one(SettingsForm)
        # GPUs is offered only where several GPUs are visible (tests/test_tui_subprocess_run.py)
        offered = [item for item in record.offered("form") if item.name != "gpus" or form.gpus > 1]
        offered.sort(key=lambda item: item.kind == "flag")  # the record's order, flags last
        labels = [str(label.render()) for label in form.query(Label)]
        assert labels == [form_label(item) for item in offered]
        fields = [w for w in form.children if isinstance(w, (Input, Select))]
        assert [w.id for w in fields] == [form_id(item) for item in offered]
        for item, widget in zip(offered, fields, strict=True):
            default = item.default_for("form")
            if isinstance(widget, Select) and item.kind == "flag":
                assert widget.value == ("on" if default else "off")  # never Python's "False"
            elif isinstance(widget, Select):
                assert widget.value == default
            else:
                assert widget.value == ("" if default is None else str(default))
        assert form.read() == {item.name: item.default_for("form") for item in offered}
        assert "spectra" in [item.name for item in offered]  # what `w` without spectra points to
        form.query_one("#setting-spectra", Select).value = "on"
        assert form.read()["spectra"] is True
        form.query_one("#setting-max-length", Input).value = "0"
        with pytest.raises(ValueError, match=r"^max length: must be at least 1, got 0$"):
            form.read()


def test_state_files_keep_their_layout_and_bad_values_get_defaults(tmp_path):
    import json

    from layerscope.app.tui.state import UiState, load_state, save_state

    path = tmp_path / "state.json"
    earlier = {"model": "m", "dataset": "d", "types": ["a"], "samples": 6, "max_length": 0}
    path.write_text(json.dumps({"last": {**earlier, "batch_size": 2, "dtype": "float8"}}))
    last = load_state(path).last
    assert (last.model, last.dataset, last.types) == ("m", "d", ["a"])
    assert last.values["limit"] == 6 and last.values["batch_size"] == 2
    assert last.values["max_length"] == 1024 and last.values["dtype"] == "auto"  # rejected
    save_state(path, UiState(last=last))
    assert json.loads(path.read_text())["last"]["samples"] == 6
    assert load_state(path).last == last
