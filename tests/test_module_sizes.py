"""No module of ``analysis/`` or ``app/`` grows past 450 lines or borrows another's private names.

Why a limit: a module that long has almost always taken on a second concern (a parser and the
import built on it, commands and the launcher they share a file with), and a reader must hold
all of it to change any of it. When a module reaches the limit, split it by concern; the limit
is not a reason to cut a file in halves.
"""

from __future__ import annotations

from pathlib import Path

import layerscope.analysis as analysis_package
import layerscope.app as app_package

LIMIT = 450
ROOTS = (Path(analysis_package.__file__).parent, Path(app_package.__file__).parent)


def test_no_module_is_over_the_limit():
    sizes = {
        f"{root.name}/{path.relative_to(root)}": len(path.read_text(encoding="utf-8").splitlines())
        for root in ROOTS
        for path in root.rglob("*.py")
    }
    assert len(sizes) > 100  # the walk found the tree
    over = sorted(f"{name}: {lines}" for name, lines in sizes.items() if lines > LIMIT)
    assert not over, f"modules over {LIMIT} lines: " + ", ".join(over)


def test_no_module_imports_another_modules_private_name():
    """A name with a leading underscore belongs to its module: a second module that needs it
    means it is shared, and it becomes public where it is defined (one owner, one path)."""
    import ast

    borrowed = []
    for root in ROOTS:
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                    "layerscope."
                ):
                    continue
                for alias in node.names:
                    if alias.name.startswith("_"):
                        borrowed.append(f"{root.name}/{path.relative_to(root)}: {alias.name}")
    assert not borrowed, "private names imported from another module: " + ", ".join(borrowed)
