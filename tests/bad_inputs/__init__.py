"""The bad-input catalogue: every input a user can get wrong, and what layerscope must answer.

Why one table: a promise such as "bad input gets one clear line that names the file, line or
option, and loses nothing" is only kept if every way in is tried the same way. Each
:class:`Case` is one command line with something wrong in it (a file, an option, an
environment variable, a damaged cache); the catalogue test (``tests/test_bad_input_catalogue.py``)
runs each one against a fresh copy of a *canary* cache and asserts

* the exit status (1 for a runtime error, 2 for a usage error);
* that stderr is exactly one line, ``layerscope: error: ...``, with no traceback, naming what
  the case says it must name (the file, ``FILE:LINE``, the option or the variable);
* that every run of the canary exports byte-identically (CSV and paper-jsonl) before and after:
  nothing a user types may destroy results.

Cases live in one module per area (:mod:`.export_cases`, :mod:`.import_cases`, ...), each with a
``CASES`` list; the catalogue test joins them into one parametrised table.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Case", "World"]


@dataclass
class World:
    """What a case runs against: a scratch folder, a copy of the canary cache, a small model."""

    root: Path
    db: Path  # a fresh copy of the canary cache; its runs must survive every case
    model: Path  # a small saved llama (weights and tokenizer)
    dataset: Path  # the dataset the canary's computed run was made from
    computed_run: str  # id of the canary's complete computed run (model on dataset)
    compute_argv: tuple[str, ...]  # the compute options that made it (a cached request)

    def file(self, name: str, content: str | bytes) -> Path:
        """Write a file under the scratch folder and return its path."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def model_copy(self, name: str = "model") -> Path:
        """A copy of the small model's folder, to break on purpose."""
        target = self.root / name
        shutil.copytree(self.model, target)
        return target


Text = str | Callable[[World], str]


@dataclass(frozen=True)
class Case:
    """One bad input and the answer it must get (see the module documentation).

    ``argv`` builds the command line (without the program name) in the world; ``names`` are
    fragments the one error line must contain, each a string or a function of the world (a
    path); ``env`` is set while the command runs; ``prepare`` damages something first.
    """

    id: str
    argv: Callable[[World], Sequence[str | Path]]
    status: int
    names: tuple[Text, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[World], None] | None = None

    def expected(self, world: World) -> list[str]:
        return [n(world) if callable(n) else n for n in self.names]
