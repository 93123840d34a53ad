"""Errors with one root: every error layerscope raises on purpose is a LayerscopeError (so a
front end can tell a user's mistake from a bug), still caught by what callers caught before, and
naming the setting it is about by its record name, each front end spelling it its own way."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import pytest

import layerscope.analysis
import layerscope.app
from layerscope.analysis.errors import (
    LayerscopeError,
    QueryError,
    is_internal,
    mention,
    one_line,
    quoted,
)

# Not errors: a signal the cache raises and catches itself (an empty file, nothing stored yet).
SIGNALS = {"layerscope.analysis.cache.connection.NoFile"}


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
    from layerscope.analysis.cache import CacheError, UnknownRunError
    from layerscope.analysis.datasets import DatasetError
    from layerscope.analysis.models import ModelLoadError
    from layerscope.analysis.runner import RunnerError
    from layerscope.analysis.settings import SettingError

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
