"""Catalogue cases: export. An ``--output`` that would destroy something (the cache, its
write-ahead log, a file already there) or cannot be written (no such folder, a folder that is a
file) gets one line naming ``--output`` and the path, and nothing is written."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from bad_inputs import Case, World

FORMATS = ("csv", "parquet", "paper-jsonl")


def leave_a_wal(db: Path) -> Path:
    """Give the cache a write-ahead log without changing its runs (a table made and dropped,
    no checkpoint at close: what a ``compute`` between checkpoints leaves); returns it."""
    con = duckdb.connect(str(db))
    try:
        con.execute("PRAGMA disable_checkpoint_on_shutdown")
        con.execute("CREATE TABLE wal_probe (a INTEGER)")
        con.execute("DROP TABLE wal_probe")
    finally:
        con.close()
    wal = db.with_name(f"{db.name}.wal")
    assert wal.exists()
    return wal


def _export(world: World, fmt: str, output: str | Path, *more: str) -> list[str | Path]:
    return [
        "export", world.computed_run, "--format", fmt, "--output", output, "--db", world.db, *more
    ]  # fmt: skip


def _wal(world: World) -> Path:
    return world.db.with_name(f"{world.db.name}.wal")


def _with_wal(world: World) -> None:
    leave_a_wal(world.db)


def _hard_link(world: World) -> None:
    os.link(world.db, world.root / "results.csv")


def _symlink(world: World) -> None:
    (world.root / "results.csv").symlink_to(world.db)


def _existing(world: World) -> None:
    world.file("old.out", "keep me\n")


def _a_file(world: World) -> None:
    world.file("somefile", "a file, not a folder\n")


def _cases(fmt: str) -> list[Case]:
    short = {"csv": "csv", "parquet": "parquet", "paper-jsonl": "jsonl"}[fmt]
    return [
        Case(
            f"export-{short}-over-cache",
            lambda w: _export(w, fmt, w.db, "--force"),
            1,
            ("--output", lambda w: str(w.db), "results cache"),
        ),
        Case(
            f"export-{short}-over-wal",
            lambda w: _export(w, fmt, _wal(w), "--force"),
            1,
            ("--output", lambda w: str(_wal(w)), "write-ahead log"),
            prepare=_with_wal,
        ),
        Case(
            f"export-{short}-to-absent-wal-name",
            lambda w: _export(w, fmt, _wal(w)),
            1,
            ("--output", lambda w: str(_wal(w)), "write-ahead log"),
        ),
        Case(
            f"export-{short}-over-hard-link-to-cache",
            lambda w: _export(w, fmt, w.root / "results.csv", "--force"),
            1,
            ("--output", lambda w: str(w.root / "results.csv"), lambda w: str(w.db)),
            prepare=_hard_link,
        ),
        Case(
            f"export-{short}-over-symlink-to-cache",
            lambda w: _export(w, fmt, w.root / "results.csv", "--force"),
            1,
            ("--output", lambda w: str(w.root / "results.csv"), lambda w: str(w.db)),
            prepare=_symlink,
        ),
        Case(
            f"export-{short}-existing-file",
            lambda w: _export(w, fmt, w.root / "old.out"),
            1,
            ("--output", lambda w: str(w.root / "old.out"), "exists", "--force"),
            prepare=_existing,
        ),
        Case(
            f"export-{short}-missing-folder",
            lambda w: _export(w, fmt, w.root / "no" / "such" / "out"),
            1,
            ("--output", lambda w: str(w.root / "no" / "such"), "does not exist"),
        ),
        Case(
            # A folder that cannot be written, even by root: a regular file
            f"export-{short}-folder-is-a-file",
            lambda w: _export(w, fmt, w.root / "somefile" / "out"),
            1,
            ("--output", lambda w: str(w.root / "somefile"), "not a folder"),
            prepare=_a_file,
        ),
    ]


CASES: list[Case] = [
    *(case for fmt in FORMATS for case in _cases(fmt)),
    Case(
        "export-parquet-to-stdout",
        lambda w: _export(w, "parquet", "-"),
        2,
        ("--output -", "Parquet"),
    ),
    Case("export-empty-output", lambda w: _export(w, "csv", ""), 2, ("--output", "empty")),
    Case(
        "export-output-ends-with-slash",
        lambda w: _export(w, "csv", f"{w.root / 'new'}/"),
        2,
        ("--output", lambda w: f"{w.root / 'new'}/", "folder"),
    ),
    Case(
        "export-output-is-a-folder",
        lambda w: _export(w, "csv", w.root),
        2,
        ("--output", lambda w: str(w.root), "folder"),
    ),
]
