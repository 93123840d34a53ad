"""Catalogue cases: cache files and the environment variables the cache reads.

Cases that damage a cache damage a copy of the canary (``damaged.duckdb`` in the scratch folder)
and point ``--db`` at it, so that the canary itself stays as it is for the harness to check. The
helpers that damage a file are also used by ``tests/test_doctor.py``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import duckdb

from bad_inputs import Case, World
from layerscope.analysis.cache import ResultsCache


def set_schema_version(db: Path, value: str) -> None:
    """Overwrite the stored schema version (as a damaged or hand-edited file has it)."""
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE layerscope_meta SET value = ? WHERE key = 'schema_version'", [value])


def leave_in_log(db: Path) -> None:
    """Make a small committed change that stays in the write-ahead log (no checkpoint)."""
    con = duckdb.connect(str(db))
    try:
        con.execute("PRAGMA disable_checkpoint_on_shutdown")
        con.execute("SET checkpoint_threshold = '1GB'")
        con.execute("INSERT INTO layerscope_meta VALUES (?, ?)", ["pending-change", "x"])
    finally:
        con.close()


def corrupt_log(db: Path, *, header: bool = False) -> None:
    """Flip bytes of the file's write-ahead log: in the middle (an entry fails its checksum, and
    DuckDB refuses the file) or at the start (the header, and DuckDB ignores the whole log)."""
    wal = db.with_name(db.name + ".wal")
    data = bytearray(wal.read_bytes())
    start = 0 if header else len(data) // 2
    for i in range(start, min(len(data), start + 16)):
        data[i] ^= 0xFF
    wal.write_bytes(bytes(data))


def _damaged(world: World) -> Path:
    return world.root / "damaged.duckdb"


def _copy(world: World) -> Path:
    target = _damaged(world)
    shutil.copyfile(world.db, target)
    return target


def _version(value: str):
    def prepare(world: World) -> None:
        set_schema_version(_copy(world), value)

    return prepare


def _damaged_log(header: bool):
    def prepare(world: World) -> None:
        db = _copy(world)
        leave_in_log(db)
        corrupt_log(db, header=header)

    return prepare


def _foreign(world: World) -> None:
    with duckdb.connect(str(world.root / "other.duckdb")) as con:
        con.execute("CREATE TABLE measurements (x INTEGER)")


def _paper_file(world: World) -> None:
    from layerscope.analysis.interchange.paper_export import write_paper_jsonl

    write_paper_jsonl(ResultsCache(world.db), world.computed_run, world.root / "stats.jsonl")


def _import(world: World, db: Path) -> list[str | Path]:
    return [
        "import",
        world.root / "stats.jsonl",
        "--model",
        "m",
        "--dataset",
        "d",
        "--type",
        "t",
        "--db",
        db,
    ]


def _sqlite(world: World) -> Path:
    path = world.root / "results.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE runs (id TEXT)")
    con.close()
    return path


def _csv(world: World) -> Path:
    return world.file("results.csv", "run,layer,value\n1,0,0.5\n")


def _fifo(world: World) -> Path:
    path = world.root / "pipe"
    if not path.exists():
        os.mkfifo(path)
    return path


def _named(name: str):
    return lambda w: str(w.root / name)


def _damaged_name(world: World) -> str:
    return str(_damaged(world))


def _damaged_log_name(world: World) -> str:
    return f"{_damaged(world)}.wal"


CASES: list[Case] = [
    Case(
        "cache-schema-zero-with-runs",
        lambda w: ["runs", "--db", _damaged(w)],
        1,
        (_damaged_name, "schema version '0'", "holds 2 runs", "layerscope doctor"),
        prepare=_version("0"),
    ),
    Case(
        "cache-schema-word",
        lambda w: ["runs", "--db", _damaged(w)],
        1,
        (_damaged_name, "unreadable schema version 'two'", "layerscope doctor"),
        prepare=_version("two"),
    ),
    Case(
        "cache-schema-negative",
        lambda w: ["show", w.computed_run, "--db", _damaged(w)],
        1,
        (_damaged_name, "unreadable schema version '-1'"),
        prepare=_version("-1"),
    ),
    Case(
        "cache-schema-newer",
        lambda w: ["runs", "--db", _damaged(w)],
        1,
        (_damaged_name, "version 99", "upgrade layerscope"),
        prepare=_version("99"),
    ),
    Case(
        "cache-lock-timeout-word",
        lambda w: ["runs", "--db", w.db],
        1,
        ("LAYERSCOPE_LOCK_TIMEOUT", "'abc'", "a number of seconds"),
        env={"LAYERSCOPE_LOCK_TIMEOUT": "abc"},
    ),
    Case(
        "cache-lock-timeout-negative",
        lambda w: ["show", w.computed_run, "--db", w.db],
        1,
        ("LAYERSCOPE_LOCK_TIMEOUT", "'-1'", "at least 0"),
        env={"LAYERSCOPE_LOCK_TIMEOUT": "-1"},
    ),
    Case(
        "cache-block-size-word",
        lambda w: _import(w, w.root / "new.duckdb"),
        1,
        ("LAYERSCOPE_BLOCK_SIZE", "'abc'", "power of two from 16384 to 262144"),
        env={"LAYERSCOPE_BLOCK_SIZE": "abc"},
        prepare=_paper_file,
    ),
    Case(
        "cache-block-size-not-power-of-two",
        lambda w: _import(w, w.root / "new.duckdb"),
        1,
        ("LAYERSCOPE_BLOCK_SIZE", "'20000'"),
        env={"LAYERSCOPE_BLOCK_SIZE": "20000"},
        prepare=_paper_file,
    ),
    Case(
        "cache-wal-checkpoint-word",
        lambda w: _import(w, w.db),
        1,
        ("LAYERSCOPE_WAL_CHECKPOINT", "'lots'", "a size such as 8MB"),
        env={"LAYERSCOPE_WAL_CHECKPOINT": "lots"},
        prepare=_paper_file,
    ),
    Case(
        "cache-db-variable-folder",
        lambda w: ["runs"],
        1,
        (lambda w: str(w.root), "is a folder"),
        env={"LAYERSCOPE_DB": "."},  # the scratch folder: the harness runs in it
    ),
    Case(
        "cache-db-folder",
        lambda w: ["runs", "--db", w.root],
        1,
        (lambda w: str(w.root), "is a folder"),
    ),
    Case(
        "cache-not-duckdb",
        lambda w: ["runs", "--db", w.file("notes.duckdb", "not a database\n")],
        1,
        (lambda w: str(w.root / "notes.duckdb"), "not a DuckDB file"),
    ),
    Case(
        "cache-db-sqlite",
        lambda w: ["runs", "--db", _sqlite(w)],
        1,
        (_named("results.sqlite"), "not a layerscope cache", "a SQLite database"),
    ),
    Case(
        "cache-db-csv",
        lambda w: ["show", w.computed_run, "--db", _csv(w)],
        1,
        (_named("results.csv"), "not a layerscope cache", "a CSV file"),
    ),
    Case(
        "cache-db-fifo",
        lambda w: ["runs", "--db", _fifo(w)],
        1,
        (_named("pipe"), "not a layerscope cache", "a FIFO"),
    ),
    Case(
        "cache-db-empty-file",
        lambda w: ["runs", "--db", w.file("empty.duckdb", b"")],
        1,
        (_named("empty.duckdb"), "is an empty file", "remove it"),
    ),
    Case(
        "cache-import-into-csv",
        lambda w: _import(w, _csv(w)),
        1,
        (_named("results.csv"), "a CSV file"),
        prepare=_paper_file,
    ),
    Case(
        "cache-merge-into-csv",
        lambda w: ["merge", w.db, "--into", _csv(w)],
        1,
        (_named("results.csv"), "not a layerscope cache", "a CSV file"),
    ),
    Case(
        "cache-merge-into-fifo",
        lambda w: ["merge", w.db, "--into", _fifo(w)],
        1,
        (_named("pipe"), "a FIFO"),
    ),
    Case(
        "cache-merge-from-sqlite",
        lambda w: ["merge", w.db, _sqlite(w), "--into", w.root / "merged.duckdb"],
        1,
        (_named("results.sqlite"), "a SQLite database"),
    ),
    Case(
        "cache-not-layerscope",
        lambda w: ["runs", "--db", w.root / "other.duckdb"],
        1,
        (lambda w: str(w.root / "other.duckdb"), "not a layerscope cache"),
        prepare=_foreign,
    ),
    Case(
        "cache-wal-damaged-runs",
        lambda w: ["runs", "--db", _damaged(w)],
        1,
        (_damaged_log_name, "write-ahead log is damaged", "checksum", "--set-aside-wal"),
        prepare=_damaged_log(header=False),
    ),
    Case(
        "cache-wal-damaged-show",
        lambda w: ["show", w.computed_run, "--db", _damaged(w)],
        1,
        (_damaged_log_name, "write-ahead log is damaged", "--set-aside-wal"),
        prepare=_damaged_log(header=False),
    ),
    Case(
        "cache-wal-header-damaged",
        lambda w: ["runs", "--db", _damaged(w)],
        1,
        (_damaged_log_name, "DuckDB ignored it", "--set-aside-wal"),
        prepare=_damaged_log(header=True),
    ),
    Case(
        "cache-doctor-missing-file",
        lambda w: ["doctor", "--db", w.root / "missing.duckdb"],
        1,
        (lambda w: f"no cache at {w.root / 'missing.duckdb'}",),
    ),
    Case(
        "cache-doctor-set-aside-healthy-log",
        lambda w: ["doctor", "--set-aside-wal", "--db", w.db],
        1,
        (lambda w: str(w.db), "no write-ahead log", "nothing to set aside"),
    ),
]
