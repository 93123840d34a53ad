"""Errors with one root: every error layerscope raises on purpose is a LayerscopeError (so a
front end can tell a user's mistake from a bug), still caught by what callers caught before, and
naming the setting it is about by its record name, each front end spelling it its own way."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import re
import tempfile
from pathlib import Path

import pytest

import layerscope.analysis
import layerscope.app
from layerscope.analysis.base.errors import (
    LayerscopeError,
    QueryError,
    is_internal,
    mention,
    one_line,
    quoted,
)

# Not errors: a signal the cache raises and catches itself (an empty file, nothing stored yet),
# and Ctrl-C or SIGTERM before the first batch (a KeyboardInterrupt: it must pass every
# `except Exception` on its way out).
SIGNALS = {
    "layerscope.analysis.cache.connection.NoFile",
    "layerscope.app.cli.cancellation.StoppedWhileLoading",
}


def defined_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in (layerscope.analysis, layerscope.app):
        prefix = package.__name__ + "."
        for info in pkgutil.walk_packages(package.__path__, prefix):
            if info.name.endswith(".__main__"):  # running it would start the command line
                continue
            module = importlib.import_module(info.name)
            for _name, value in vars(module).items():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__ == info.name
                ):
                    found[f"{info.name}.{value.__qualname__}"] = value
    return found


def test_every_layerscope_error_class_has_the_one_root():
    classes = defined_exceptions()
    assert len(classes) >= 15  # the walk found them
    strays = [name for name, cls in classes.items() if not issubclass(cls, LayerscopeError)]
    assert sorted(strays) == sorted(SIGNALS)


def test_errors_keep_the_bases_their_callers_catch():
    from layerscope.analysis.base.setting_schema import SettingError
    from layerscope.analysis.cache import CacheError, UnknownRunError
    from layerscope.analysis.datasets import DatasetError
    from layerscope.analysis.models.sources import ModelLoadError
    from layerscope.analysis.runs.runner import RunnerError

    for cls in (DatasetError, ModelLoadError, SettingError, QueryError):
        assert issubclass(cls, ValueError) and issubclass(cls, LayerscopeError)
    for cls in (CacheError, RunnerError):
        assert issubclass(cls, RuntimeError) and issubclass(cls, LayerscopeError)
    assert issubclass(UnknownRunError, KeyError)
    assert str(UnknownRunError("no run 'ab'")) == "no run 'ab'"  # not quoted as KeyError does


def test_a_mentioned_setting_is_named_by_each_front_end_its_own_way():
    error = LayerscopeError(f"{mention('max_memory')} needs a device map ({mention('device_map')})")
    assert error.setting == "max_memory"  # the first one mentioned, unless given
    assert str(error) == "max memory needs a device map (device map)"
    flags = {"max_memory": "--max-memory", "device_map": "--device-map"}
    assert error.describe(flags.__getitem__) == "--max-memory needs a device map (--device-map)"
    assert LayerscopeError("plain", setting="limit").setting == "limit"
    # a value a user typed is never taken for a mention: repr escapes the mark
    typed = "x\0limit\0"
    odd = LayerscopeError(f"{mention('device')} {typed!r}: unknown")
    assert odd.describe(lambda name: f"<{name}>") == "<device> 'x\\x00limit\\x00': unknown"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.setting, str(copy), copy.message) == (error.setting, str(error), error.message)


def test_internal_is_anything_unexpected():
    assert not is_internal(LayerscopeError("a user's mistake"))
    assert is_internal(LayerscopeError("where it failed", internal=True))
    assert not is_internal(FileNotFoundError(2, "No such file or directory", "x.jsonl"))
    assert is_internal(RuntimeError("CUDA error: device-side assert triggered"))
    assert is_internal(ValueError("a bug"))


def test_a_wrapped_error_is_quoted_with_its_mentions_or_its_type():
    inner = LayerscopeError(f"{mention('checkpointing')}: not supported")
    assert quoted(inner) == f"{mention('checkpointing')}: not supported"
    assert quoted(RuntimeError("boom\nmore")) == "RuntimeError: boom"
    assert one_line(ValueError("")) == "ValueError"


@pytest.mark.parametrize("cls", [QueryError, LayerscopeError])
def test_describe_is_one_line(cls):
    error = cls("first\nsecond")
    assert error.describe(str) == "first"


# ---- the command line: a user's mistake is one line, anything else an internal error --------


def run_cli(capsys, *argv) -> tuple[int, list[str]]:
    from layerscope.app import cli

    capsys.readouterr()
    status = cli.main([str(a) for a in argv])
    return status, capsys.readouterr().err.strip().splitlines()


def test_a_bug_inside_the_engine_reaches_the_cli_as_an_internal_error(
    tmp_path, monkeypatch, capsys
):
    from layerscope.analysis.compute import passes

    def broken(*args, **kwargs):
        raise RuntimeError("a deliberate bug in the engine")

    monkeypatch.setattr(passes, "response_loss", broken)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("LAYERSCOPE_DEBUG", raising=False)
    status, err = run_cli(
        capsys, "compute", "--model", "tiny", "--dataset", "math", "--types", "none_cot",
        "--limit", "2", "--max-length", "64", "--db", tmp_path / "c.duckdb", "--quiet",
    )  # fmt: skip
    assert status == 70  # EX_SOFTWARE
    *samples, last = err  # before it, a line per failed sample, as for any sample failing
    each = r"math/none_cot: sample \d+ failed: RuntimeError: a deliberate bug in the engine"
    assert samples and all(re.fullmatch(each, line) for line in samples)
    assert not any("Traceback" in line for line in err)
    match = re.fullmatch(r"layerscope: internal error: (.+) \(traceback written to (.+)\)", last)
    assert match, last
    assert "computing failed for every sample of a chunk" in match[1]
    assert "RuntimeError: a deliberate bug in the engine" in match[1]
    written = Path(match[2])
    assert written.parent == tmp_path / "state" / "layerscope" / "internal-errors"
    report = written.read_text()
    assert "command: layerscope compute --model tiny" in report
    assert "Traceback (most recent call last)" in report
    assert "in broken" in report  # the frame that raised
    assert "RuntimeError: a deliberate bug in the engine" in report


def test_a_chunk_failing_with_a_layerscope_error_stays_the_users(tmp_path, monkeypatch, capsys):
    """Every sample refused for a reason layerscope gives (a setting the model cannot take):
    one line naming the option, exit status 1, no traceback file."""
    from layerscope.analysis.base.setting_schema import SettingError
    from layerscope.analysis.base.settings import setting
    from layerscope.analysis.compute import passes

    def refused(*args, **kwargs):
        raise SettingError(
            setting("checkpointing"), f"not here (run without {mention('checkpointing')})"
        )

    monkeypatch.setattr(passes, "response_loss", refused)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    status, err = run_cli(
        capsys, "compute", "--model", "tiny", "--dataset", "math", "--types", "none_cot",
        "--limit", "1", "--max-length", "64", "--db", tmp_path / "c.duckdb", "--quiet",
    )  # fmt: skip
    assert status == 1
    assert err[-1] == (
        "layerscope: error: math/none_cot: computing failed for every sample of a chunk: "
        "--checkpointing: not here (run without --checkpointing)"
    )
    assert not (tmp_path / "state").exists()


def test_a_bad_max_length_is_still_one_line_naming_it(tmp_path, capsys):
    for value in ("0", "lots"):
        status, err = run_cli(
            capsys, "compute", "--model", "tiny", "--dataset", "math", "--max-length", value,
            "--db", tmp_path / "c.duckdb",
        )  # fmt: skip
        assert status == 2
        assert len(err) == 1 and err[0].startswith("layerscope: error: ")
        assert "--max-length" in err[0] and "internal error" not in err[0]


def test_a_setting_the_core_refuses_is_named_by_its_option(tmp_path, capsys):
    status, err = run_cli(
        capsys, "compute", "--model", "tiny", "--dataset", "math", "--max-memory", "cpu=1GiB",
        "--db", tmp_path / "c.duckdb",
    )  # fmt: skip
    assert status == 1
    assert err == ["layerscope: error: --max-memory needs a device map (--device-map auto, ...)"]


def test_an_os_error_names_the_file_and_stays_the_users(tmp_path, monkeypatch, capsys):
    from layerscope.analysis.cache import ResultsCache

    def refused(self):
        raise PermissionError(13, "Permission denied", "/data/results.duckdb")

    monkeypatch.setattr(ResultsCache, "runs", refused)
    status, err = run_cli(capsys, "runs", "--db", tmp_path / "c.duckdb")
    assert status == 1
    assert err == ["layerscope: error: /data/results.duckdb: Permission denied"]


def test_a_value_error_that_no_layerscope_code_meant_is_internal(tmp_path, monkeypatch, capsys):
    """A ValueError from a bug used to read as the user's mistake; now it says what it is."""
    from layerscope.analysis.cache import ResultsCache

    def buggy(self):
        raise ValueError("too many values to unpack")

    monkeypatch.setattr(ResultsCache, "runs", buggy)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("LAYERSCOPE_DEBUG", raising=False)
    status, err = run_cli(capsys, "runs", "--db", tmp_path / "c.duckdb")
    assert status == 70 and len(err) == 1
    assert err[0].startswith("layerscope: internal error: ValueError: too many values to unpack")
    monkeypatch.setenv("LAYERSCOPE_DEBUG", "1")
    with pytest.raises(ValueError, match="too many values"):
        run_cli(capsys, "runs", "--db", tmp_path / "c.duckdb")


def test_the_traceback_goes_to_a_temporary_file_when_the_state_folder_cannot_take_it(
    tmp_path, monkeypatch
):
    from layerscope.app import error_reports

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocked))  # a file: no folder can be made in it
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    try:
        raise KeyError("lost")
    except KeyError as error:
        path = error_reports.write_traceback(error, "context line")
    assert path is not None and path.parent == tmp_path / "tmp"
    assert path.read_text().splitlines()[2] == "context line"


# ---- the explorer: its own names, and internal errors said as such --------------------------


def test_the_explorer_names_settings_as_its_form_and_says_what_is_internal(tmp_path, monkeypatch):
    from layerscope.analysis.base.setting_values import check_values
    from layerscope.analysis.runs.runner import RunnerError
    from layerscope.app.tui.errors import problem_line, run_failure

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with pytest.raises(LayerscopeError) as refused:
        check_values({"sample_seed": 4})
    assert problem_line(refused.value) == "seed: needs samples"
    assert run_failure(refused.value) == "seed: needs samples"
    line = problem_line(RuntimeError("disk on fire, here"))
    assert line.startswith("RuntimeError: disk on fire, here (traceback written to ")
    oom = run_failure(RuntimeError("CUDA out of memory here."))
    assert oom.startswith("CUDA out of memory here. (internal error: RuntimeError, traceback ")
    wrapped = RunnerError("toy: every sample failed: RuntimeError: boom", internal=True)
    assert run_failure(wrapped).startswith("toy: every sample failed: RuntimeError: boom (inter")
    assert len(list((tmp_path / "state" / "layerscope" / "internal-errors").iterdir())) == 3


def test_help_texts_name_settings_as_each_front_end_does():
    from layerscope.analysis.base.settings import SETTINGS, setting
    from layerscope.app.settings_presentation import form_help, option_help

    for item in SETTINGS:
        assert "\0" not in option_help(item) and "\0" not in form_help(item)
    budget = setting("tokens_per_batch")
    assert "; --batch-size caps the rows" in option_help(budget)
    assert "; batch size caps the rows" in form_help(budget)
    assert option_help(setting("cosines")).endswith("(--no-cosines skips them)")


def test_a_failure_that_repeats_is_written_once(tmp_path, monkeypatch):
    from layerscope.app.error_reports import traceback_note

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    notes = []
    for _ in range(3):  # a view redrawing with the same bug
        try:
            raise ZeroDivisionError("the same bug")
        except ZeroDivisionError as error:
            notes.append(traceback_note(error))
    assert len(set(notes)) == 1
    assert len(list((tmp_path / "state" / "layerscope" / "internal-errors").iterdir())) == 1
