"""Catalogue cases: ``figure`` and ``table``. A figure file of no known format, one that exists
or is the cache under another name, a statistic without layers, a second projection or an unknown
format get one line naming the option, and nothing is written."""

from __future__ import annotations

from bad_inputs import Case, World


def _figure(output: str, *changes: str, link_to_cache: bool = False):
    def argv(world: World) -> list[str]:
        path = world.root / output
        if link_to_cache and not path.is_symlink():
            path.symlink_to(world.db)
        named = output if output == "-" else str(path)
        return ["figure", world.computed_run, "--db", str(world.db), "--output", named,
                *changes]  # fmt: skip

    return argv


def _existing_figure(world: World) -> list[str]:
    path = world.file("earlier.png", b"an earlier figure")
    return ["figure", world.computed_run, "--db", str(world.db), "--output", str(path)]


def _table(*changes: str):
    def argv(world: World) -> list[str]:
        return ["table", world.computed_run, "--db", str(world.db), *changes]

    return argv


CASES: list[Case] = [
    Case("figure-output-format-unknown", _figure("f.jpg"), 2, ("--output", "f.jpg", ".png")),
    Case("figure-output-stdout", _figure("-"), 2, ("--output -", "a figure is a file")),
    Case("figure-metric-loss", _figure("f.png", "--metric", "loss"), 2, ("--metric loss",)),
    Case("figure-metric-unknown", _figure("f.png", "--metric", "bogus"), 2, ("--metric",)),
    Case("figure-depth-unknown", _figure("f.png", "--depth", "log"), 2, ("--depth", "'log'")),
    Case("figure-output-exists", _existing_figure, 1, ("--output", "exists", "--force")),
    Case(
        "figure-output-links-to-cache",
        _figure("trap.png", "--force", link_to_cache=True),
        1,
        ("--output", "results cache"),
    ),
    Case("table-proj-two", _table("--proj", "q,k"), 2, ("--proj q,k", "one projection")),
    Case("table-proj-unknown", _table("--proj", "x"), 2, ("--proj", "'x'")),
    Case("table-format-unknown", _table("--format", "html"), 2, ("--format", "'html'")),
    Case("table-metric-loss", _table("--metric", "loss"), 2, ("--metric loss",)),
]
