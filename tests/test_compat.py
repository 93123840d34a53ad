"""The other libraries' internals layerscope relies on are still there, in the installed versions.

Each compatibility module (``app/compat/``, ``analysis/compat/``) lists what it uses of its
library's private names; here each list is checked against the installed version, so that an
upgrade that drops or changes one fails here, naming the library, its version and what is gone,
instead of breaking a chart, the footer or a torchrun job at run time. A last test keeps private
imports of these libraries inside the compatibility modules.
"""

from __future__ import annotations

import ast
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import pytest

from layerscope.analysis.compat import torch_distributed
from layerscope.analysis.compat import transformers as transformers_compat
from layerscope.app.compat import plotext as plotext_compat
from layerscope.app.compat import textual as textual_compat

COMPAT_MODULES = [textual_compat, plotext_compat, torch_distributed, transformers_compat]
LIBRARIES = ("textual", "plotext", "torch", "rich", "duckdb", "transformers", "accelerate")
ROOT = Path(textual_compat.__file__).resolve().parents[2]


def assert_offered(compat: ModuleType) -> None:
    missing = compat.missing_internals()
    assert not missing, (
        f"{compat.LIBRARY} {version(compat.LIBRARY)} no longer offers {', '.join(missing)}, "
        f"which {compat.__name__} uses: adapt that module (or pin {compat.LIBRARY})"
    )


@pytest.mark.parametrize("compat", COMPAT_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_the_installed_version_offers_what_the_compat_module_uses(compat):
    assert_offered(compat)


def test_a_missing_internal_fails_naming_the_library_version_and_the_attribute(monkeypatch):
    monkeypatch.setattr(plotext_compat, "FIGURE_METHODS", ("build", "draw_on_the_moon"))
    with pytest.raises(AssertionError) as failed:
        assert_offered(plotext_compat)
    said = str(failed.value)
    assert f"plotext {version('plotext')} no longer offers figure.draw_on_the_moon" in said
    assert "layerscope.app.compat.plotext" in said


def test_the_internals_work_as_the_explorer_uses_them():
    from textual.app import App

    app = App[None]()
    assert not textual_compat.is_quitting(app)
    app.exit()
    assert textual_compat.is_quitting(app)
    figure = plotext_compat.new_figure()
    figure.plot_size(30, 8)
    figure.plot([1, 2, 3], [1, 4, 9])
    assert figure.build().strip()


def test_the_model_says_which_modules_stay_whole():
    from modelkit import make_model

    assert transformers_compat.no_split_modules(make_model("llama")) == ["LlamaDecoderLayer"]
    assert transformers_compat.no_split_modules(object()) == []


def test_enabling_checkpointing_sets_only_what_is_restored():
    """What transformers sets on a model's modules when checkpointing is enabled is all in
    CHECKPOINTING_ATTRIBUTES, and restoring leaves the model as it was (hooks included)."""
    from modelkit import make_model

    model = make_model("llama")
    modules = list(model.modules())
    before = [dict(module.__dict__) for module in modules]
    states = [transformers_compat.checkpointing_state(module) for module in modules]
    enable = getattr(model, "activation_checkpointing_enable", None)
    (enable or model.gradient_checkpointing_enable)()
    changed = {
        name
        for module, was in zip(modules, before, strict=True)
        for name, value in module.__dict__.items()
        if name not in was or was[name] is not value
    }
    assert "_gradient_checkpointing_func" in changed  # checkpointing is still enabled this way
    unexpected = sorted(changed - set(transformers_compat.CHECKPOINTING_ATTRIBUTES))
    assert not unexpected, (
        f"transformers {version('transformers')} sets {', '.join(unexpected)} when enabling "
        "checkpointing, which layerscope.analysis.compat.transformers does not restore"
    )
    for module, state in zip(modules, states, strict=True):
        transformers_compat.restore_checkpointing_state(module, state)
    assert [set(module.__dict__) for module in modules] == [set(was) for was in before]
    assert not model.get_input_embeddings()._forward_hooks


def test_the_tests_reach_into_textual_only_where_it_still_offers_it():
    """What some tests read of Textual's widgets (a Select's options, a DataTable's pending
    redraw in the snapshot tests), checked here so that an upgrade says what changed."""
    from textual.widgets import DataTable, Select

    missing = []
    if not hasattr(Select([("a", "a")]), "_options"):
        missing.append("Select._options")
    table = DataTable[str]()
    for name in ("_require_update_dimensions", "_updated_cells"):
        if not hasattr(table, name):
            missing.append(f"DataTable.{name}")
    assert not missing, f"textual {version('textual')} no longer offers {', '.join(missing)}"


def private_imports(path: Path) -> list[str]:
    """``module`` of every import of a private module or name of one of LIBRARIES."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            private = any(p.startswith("_") and not p.startswith("__") for p in parts[1:])
            if parts[0] in LIBRARIES and private:
                found.append(name)
    return found


def test_private_imports_of_other_libraries_live_in_the_compat_modules():
    outside = {}
    for folder in ("analysis", "app", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if "compat" in relative.parts[:2]:
                continue
            found = private_imports(path)
            if found:
                outside[str(relative)] = found
    assert outside == {}
