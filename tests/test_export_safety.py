"""``layerscope export`` never destroys anything (see ``analysis/base/outputs.py``): not the cache or
its write-ahead log under any name, not a file already there unless ``--force``, not a symbolic
link (its target is written), not a device; standard output carries exactly the data; and a
file appears only when complete, even when the export is killed outright."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bad_inputs.export_cases import leave_a_wal
from cache_helpers import fill_run

from layerscope.analysis.base import outputs
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.interchange.paper_export import write_paper_jsonl
from layerscope.app import cli

FORMATS = ("csv", "parquet", "paper-jsonl")


def export(capfd, run_id: str, db: Path, fmt: str, output: str | Path, *more: str):
    status = cli.main(["export", run_id, "--format", fmt, "--output", str(output), "--db",
                       str(db), *more])  # fmt: skip
    out, err = capfd.readouterr()
    return status, out, err


def one_line_error(err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("layerscope: error: "), lines[0]
    assert "Traceback" not in err and "internal error" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def files_of(db: Path) -> dict[str, bytes]:
    """The bytes of the cache and its write-ahead log, where there is one."""
    wal = db.with_name(f"{db.name}.wal")
    return {p.name: p.read_bytes() for p in (db, wal) if p.exists()}


def partials(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".partial"))


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll until ``condition()`` holds (a short poll interval, not a fixed wait)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def cli_process(*argv: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    """The command line in a process of its own (for what it does to its real stdout)."""
    command = [sys.executable, "-m", "layerscope.app", *map(str, argv)]
    return subprocess.run(command, stderr=subprocess.PIPE, text=True, timeout=120, **kwargs)


@pytest.fixture
def cache_db(tmp_path) -> tuple[Path, str]:
    db = tmp_path / "cache.duckdb"
    cache = ResultsCache(db)
    run_id = fill_run(cache, "small", 6, layers=2, spectra=True)
    cache.checkpoint()
    return db, run_id


def export_every_format(cache: ResultsCache, run_id: str, folder: Path) -> dict[str, bytes]:
    """The run exported once in every format, uninterrupted, into ``folder``: the bytes any
    export of it must produce."""
    found = {}
    for fmt in FORMATS:
        path = folder / f"reference.{fmt}"
        if fmt == "paper-jsonl":
            write_paper_jsonl(cache, run_id, path)
        else:
            cache.export_table(run_id, path, fmt)
        found[fmt] = path.read_bytes()
    return found


@pytest.fixture
def references(cache_db, tmp_path) -> dict[str, bytes]:
    """An uninterrupted export of the run in every format, written to fresh names."""
    db, run_id = cache_db
    cache = ResultsCache(db)
    folder = tmp_path / "reference"
    folder.mkdir()
    return export_every_format(cache, run_id, folder)


# ---- the cache under every name --------------------------------------------------------------


def _protected_target(kind: str, db: Path) -> Path:
    wal = db.with_name(f"{db.name}.wal")
    if kind == "cache":
        return db
    if kind == "wal":
        return leave_a_wal(db)
    if kind == "absent-wal":
        assert not wal.exists()
        return wal
    link = db.with_name("results.csv")
    if kind == "hard-link":
        os.link(db, link)
    elif kind == "symlink":
        link.symlink_to(db)
    elif kind == "symlink-to-wal":
        leave_a_wal(db)
        link.symlink_to(wal.name)
    elif kind == "hard-link-to-wal":
        os.link(leave_a_wal(db), link)
    return link


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize(
    "kind",
    ["cache", "wal", "absent-wal", "hard-link", "symlink", "symlink-to-wal", "hard-link-to-wal"],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_cache_is_refused_under_any_name(capfd, cache_db, fmt, kind, force):
    db, run_id = cache_db
    target = _protected_target(kind, db)
    before = files_of(db)
    was_link = target.is_symlink()
    status, out, err = export(capfd, run_id, db, fmt, target, *(["--force"] if force else []))
    assert status == 1
    line = one_line_error(err, "--output", str(target))
    assert "write-ahead log" in line if "wal" in kind else "results cache" in line
    assert out == ""
    assert files_of(db) == before
    assert target.is_symlink() == was_link
    assert partials(db.parent) == []
    assert len(ResultsCache(db).runs()) == 1


def test_standard_output_that_is_the_cache_is_refused(cache_db, tmp_path):
    """``--output - >> cache.duckdb`` would append to the cache: refused by identity."""
    db, run_id = cache_db
    before = files_of(db)
    with open(db, "ab") as appending:
        result = cli_process("export", run_id, "--format", "csv", "--output", "-", "--db", db,
                             stdout=appending)  # fmt: skip
    assert result.returncode == 1
    one_line_error(result.stderr, "--output -", "standard output", "results cache")
    assert files_of(db) == before


def test_a_link_to_stdout_redirected_to_a_file_is_refused(cache_db, tmp_path):
    """``--output /dev/stdout >> log``: replacing the file would drop the earlier lines, writing
    into it from offset 0 would overwrite them; the answer points to ``-``. (A link of its own
    to /proc/self/fd/1 stands in for /dev/stdout, which a regression must not replace.)"""
    db, run_id = cache_db
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    log = tmp_path / "log"
    log.write_bytes(b"earlier lines\n")
    with open(log, "ab") as appending:
        result = cli_process("export", run_id, "--format", "csv", "--output", link, "--force",
                             "--db", db, stdout=appending)  # fmt: skip
    assert result.returncode == 1
    one_line_error(result.stderr, f"--output {link}", "stdout", "use -")
    assert log.read_bytes() == b"earlier lines\n" and link.is_symlink()


def test_stdout_closed_early_is_one_line(cache_db):
    db, run_id = cache_db
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = cli_process("export", run_id, "--format", "paper-jsonl", "--output", "-",
                             "--db", db, stdout=write_end)  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode == 1
    one_line_error(result.stderr, "--output -", "closed")


# ---- files already there ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_existing_file_is_replaced_only_with_force(capfd, cache_db, references, tmp_path, fmt):
    db, run_id = cache_db
    target = tmp_path / "out.data"
    target.write_bytes(b"old bytes\n")
    target.chmod(0o600)
    status, out, err = export(capfd, run_id, db, fmt, target)
    assert status == 1
    one_line_error(err, "--output", str(target), "exists", "--force")
    assert target.read_bytes() == b"old bytes\n"
    status, out, err = export(capfd, run_id, db, fmt, target, "--force")
    assert status == 0, err
    assert target.read_bytes() == references[fmt]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # the replaced file's mode is kept
    assert f"to {target}" in err and out == ""
    assert partials(tmp_path) == []


def test_a_new_file_gets_mode_644_less_the_umask(capfd, cache_db, tmp_path):
    db, run_id = cache_db
    old = os.umask(0o027)
    try:
        status, _, err = export(capfd, run_id, db, "csv", tmp_path / "new.csv")
    finally:
        os.umask(old)
    assert status == 0, err
    assert stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o640


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_symbolic_link_stays_a_link_and_its_target_is_written(
    capfd, cache_db, references, tmp_path, fmt
):
    db, run_id = cache_db
    (tmp_path / "data").mkdir()
    real = tmp_path / "data" / "real.out"
    real.write_bytes(b"old bytes\n")
    link = tmp_path / "link.out"
    link.symlink_to(real)
    status, _, err = export(capfd, run_id, db, fmt, link)
    assert status == 1
    one_line_error(err, "--output", str(link), "symbolic link", "--force")
    assert real.read_bytes() == b"old bytes\n"
    status, _, err = export(capfd, run_id, db, fmt, link, "--force")
    assert status == 0, err
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == references[fmt]
    assert partials(tmp_path) == [] and partials(real.parent) == []


def test_a_dangling_link_needs_force_and_then_creates_its_target(
    capfd, cache_db, references, tmp_path
):
    db, run_id = cache_db
    link = tmp_path / "link.csv"
    link.symlink_to("made.csv")
    status, _, err = export(capfd, run_id, db, "csv", link)
    assert status == 1
    one_line_error(err, "--output", str(link), "symbolic link")
    assert not (tmp_path / "made.csv").exists()
    status, _, err = export(capfd, run_id, db, "csv", link, "--force")
    assert status == 0, err
    assert link.is_symlink() and (tmp_path / "made.csv").read_bytes() == references["csv"]


# ---- the partial file ------------------------------------------------------------------------


def test_a_link_planted_at_the_old_partial_name_is_not_followed(
    capfd, cache_db, references, tmp_path
):
    db, run_id = cache_db
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours\n")
    for fmt in ("csv", "paper-jsonl"):
        planted = tmp_path / f".out.{fmt}.partial"
        planted.symlink_to(victim)
        status, _, err = export(capfd, run_id, db, fmt, tmp_path / f"out.{fmt}")
        assert status == 0, err
        assert (tmp_path / f"out.{fmt}").read_bytes() == references[fmt]
        assert planted.is_symlink() and victim.read_bytes() == b"not yours\n"


@pytest.mark.parametrize("fmt", ["csv", "paper-jsonl"])
def test_a_link_planted_at_the_exact_partial_name_is_refused(
    capfd, cache_db, tmp_path, monkeypatch, fmt
):
    """Even a link at the very name the export picks (made predictable here) is never
    followed: the exclusive create fails and the export says so."""
    db, run_id = cache_db
    monkeypatch.setattr(outputs, "_token", lambda: "deadbeef")
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours\n")
    planted = tmp_path / f".out.{os.getpid()}.deadbeef.partial"
    planted.symlink_to(victim)
    status, _, err = export(capfd, run_id, db, fmt, tmp_path / "out")
    assert status == 1
    one_line_error(err, "--output", str(tmp_path / "out"), str(planted))
    assert victim.read_bytes() == b"not yours\n" and planted.is_symlink()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_a_failed_export_leaves_nothing_behind(cache_db, tmp_path, monkeypatch, interruption):
    db, run_id = cache_db
    cache = ResultsCache(db)
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"old bytes\n")
    real = ResultsCache.iter_sample_statistics

    def breaking(self, run):
        for done, item in enumerate(real(self, run)):
            if done == 3:
                raise interruption("stop")
            yield item

    monkeypatch.setattr(ResultsCache, "iter_sample_statistics", breaking)
    with pytest.raises(interruption):
        write_paper_jsonl(cache, run_id, target, force=True)
    assert target.read_bytes() == b"old bytes\n"
    assert partials(tmp_path) == []

    import layerscope.analysis.cache.exports as exports

    def copy_then_stop(source, handle, *args):
        handle.write(source.read(100))
        raise interruption("stop")

    monkeypatch.setattr(exports.shutil, "copyfileobj", copy_then_stop)
    with pytest.raises(interruption):
        cache.export_table(run_id, tmp_path / "out.csv", "csv")
    assert not (tmp_path / "out.csv").exists()
    assert partials(tmp_path) == []


def test_stale_partials_of_dead_exports_are_removed_and_others_kept(
    capfd, cache_db, references, tmp_path
):
    db, run_id = cache_db
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        stale = tmp_path / f".out.csv.{gone.pid}.0123abcd.partial"
        live = tmp_path / f".out.csv.{alive.pid}.0123abcd.partial"
        other = tmp_path / f".out.csv.{gone.pid}.notours.partial"
        for path in (stale, live, other):
            path.write_bytes(b"half")
        status, _, err = export(capfd, run_id, db, "csv", tmp_path / "out.csv")
        assert status == 0, err
        assert (tmp_path / "out.csv").read_bytes() == references["csv"]
        assert not stale.exists() and live.exists() and other.exists()
    finally:
        alive.communicate(b"")


# ---- standard output and other streams -------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "paper-jsonl"])
def test_dash_writes_exactly_the_data_to_stdout(capfdbinary, cache_db, references, fmt):
    db, run_id = cache_db
    status = cli.main(["export", run_id, "--format", fmt, "--output", "-", "--db", str(db)])
    out, err = capfdbinary.readouterr()
    assert status == 0, err
    assert out == references[fmt]
    assert err.decode().strip().splitlines() == [
        f"wrote {'6 samples' if fmt == 'paper-jsonl' else '48 rows'} of run "
        f"{run_id[:12]} to standard output"
    ]
    assert not Path("-").exists()


def test_parquet_to_stdout_is_a_usage_error(capfd, cache_db):
    db, run_id = cache_db
    status, out, err = export(capfd, run_id, db, "parquet", "-")
    assert status == 2
    one_line_error(err, "--output -")
    assert out == ""


def test_dot_slash_dash_is_a_file(capfd, cache_db, references, tmp_path, monkeypatch):
    db, run_id = cache_db
    monkeypatch.chdir(tmp_path)
    status, out, err = export(capfd, run_id, db, "csv", "./-")
    assert status == 0, err
    assert out == "" and (tmp_path / "-").read_bytes() == references["csv"]


@pytest.mark.parametrize("through_link", [False, True], ids=["fifo", "link-to-fifo"])
def test_a_fifo_is_written_into_not_replaced(capfd, cache_db, references, tmp_path, through_link):
    """A FIFO (and a link to one, as /dev/stdout is to a pipe) is written straight into."""
    db, run_id = cache_db
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    named = fifo
    if through_link:
        named = tmp_path / "stdout"
        named.symlink_to(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    status, _, err = export(capfd, run_id, db, "paper-jsonl", named)
    reader.join(timeout=60)
    assert status == 0, err
    assert received == [references["paper-jsonl"]]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and named.is_symlink() == through_link
    assert partials(tmp_path) == []


# ---- folders ---------------------------------------------------------------------------------


def test_folders_that_cannot_take_the_file_are_named(capfd, cache_db, tmp_path):
    db, run_id = cache_db
    (tmp_path / "afile").write_text("a file\n")
    for output, fragment in (
        (tmp_path / "missing" / "out.csv", f"folder {tmp_path / 'missing'} does not exist"),
        (tmp_path / "afile" / "out.csv", f"{tmp_path / 'afile'} is not a folder"),
    ):
        status, _, err = export(capfd, run_id, db, "csv", output)
        assert status == 1
        one_line_error(err, "--output", str(output), fragment)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_an_unwritable_folder_is_named(capfd, cache_db, tmp_path):
    db, run_id = cache_db
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        status, _, err = export(capfd, run_id, db, "csv", folder / "out.csv")
    finally:
        folder.chmod(0o755)
    assert status == 1
    one_line_error(err, "--output", str(folder / "out.csv"), "not writable")


# ---- killed outright -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_run(tmp_path_factory) -> tuple[Path, str, dict[str, bytes]]:
    """A run big enough for an export to take a moment (2000 samples x 4 layers with spectra:
    8 MB of paper-jsonl), with an uninterrupted export in every format."""
    root = tmp_path_factory.mktemp("big")
    db = root / "big.duckdb"
    cache = ResultsCache(db)
    run_id = fill_run(cache, "big", 2000, batch_size=250, spectra=True)
    cache.checkpoint()
    return db, run_id, export_every_format(cache, run_id, root)


def kill_export(command: list[str], target: Path, point: str | float, size: int) -> bool:
    """Start an export and SIGKILL it at ``point``: at once, when its partial file appears, or
    when that file holds ``point`` of the ``size`` bytes (or when it ends first, whichever
    comes first); returns whether its partial file was still there, i.e. it was killed before
    its file was published."""
    environment = {**os.environ, "TMPDIR": str(target.parent.parent)}  # the scratch of a CSV
    environment.pop("LAYERSCOPE_DEBUG", None)
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    prefix = f".{target.name}.{process.pid}."

    def own_partial() -> Path | None:
        return next((p for p in partials(target.parent) if p.name.startswith(prefix)), None)

    def reached() -> bool:
        if process.poll() is not None:
            return True
        partial = own_partial()
        if partial is None or point == "partial-appears":
            return partial is not None
        try:
            return partial.stat().st_size >= float(point) * size
        except FileNotFoundError:  # published meanwhile
            return True

    try:
        if point != "at-once":
            wait_for(reached, f"kill point {point}")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    return own_partial() is not None


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_killed_at_any_point_leaves_the_old_file_or_the_whole_new_one(
    capfd, big_run, tmp_path, fmt
):
    db, run_id, references = big_run
    complete = references[fmt]
    cache_before = files_of(db)
    rng = random.Random(f"kill-{fmt}")
    points: list[str | float] = ["at-once", "partial-appears"]
    points += sorted(rng.uniform(0.05, 0.9) for _ in range(3))
    target = tmp_path / "out" / f"export.{fmt}"
    target.parent.mkdir()
    landed_mid_write = 0
    for number, point in enumerate(points):
        old = None if number % 2 == 0 else f"old bytes {number}\n".encode()
        target.unlink(missing_ok=True)
        if old is not None:
            target.write_bytes(old)
        command = [sys.executable, "-m", "layerscope.app", "export", run_id, "--format", fmt,
                   "--output", str(target), "--db", str(db), *(["--force"] if old else [])]  # fmt: skip
        landed_mid_write += kill_export(command, target, point, len(complete))
        now = target.read_bytes() if target.exists() else None
        assert now in (old, complete), f"killed at {point}: the target is neither old nor complete"
        assert files_of(db) == cache_before, "the cache changed"
    if fmt == "paper-jsonl":  # slow enough that some kill lands while the file is written
        assert landed_mid_write >= 1
    # The stale partial files of killed exports never block the next one, which removes them.
    status, _, err = export(capfd, run_id, db, fmt, target, "--force")
    assert status == 0, err
    assert target.read_bytes() == complete
    assert partials(target.parent) == []
    assert files_of(db) == cache_before
