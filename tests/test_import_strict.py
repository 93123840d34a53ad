"""The paper-format import is strict and all-or-nothing (issue 11): every value is checked
against what the cache's columns hold before anything is written, what float32 cannot hold is
stored as empty and reported by line, every refusal is one line naming ``FILE:LINE``, and a file
is one run or nothing, whatever stops it (a refused line, DuckDB, Ctrl-C, SIGKILL)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import duckdb
import pytest
from cache_helpers import fill_run, paper_matrices
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from layerscope.analysis.base.records import BatchResult, RunHeader, TargetInfo
from layerscope.analysis.cache import CacheError, ResultsCache
from layerscope.analysis.cache import writes as cache_writes
from layerscope.analysis.cache.schema import REAL_LIMIT
from layerscope.analysis.interchange.paper_export import write_paper_jsonl
from layerscope.analysis.interchange.paper_ingest import (
    IMPORT_BATCH,
    RunNameError,
    import_paper_jsonl,
    import_run_id,
)
from layerscope.analysis.interchange.paper_parse import read_paper_jsonl
from layerscope.analysis.interchange.paper_schema import PaperFormatError
from layerscope.app import cli

LAYERS = 2
MATRICES = LAYERS * 4


def record(index: int, layers: int = LAYERS, spectrum: bool = False) -> dict:
    """One valid line of the paper's format (with layerscope's metadata)."""
    line: dict = {"instruction": f"Q{index}?", "output": "A.", "loss": 1.0 + index / 100}
    line.update(paper_matrices(layers, 0.5, [4.0, 2.5, 0.5] if spectrum else None))
    line["layerscope"] = {"index": index, "prompt_tokens": 10, "response_tokens": 20 + index}
    return line


def lines_of(count: int, **kwargs) -> list[str]:
    return [json.dumps(record(i, **kwargs)) for i in range(count)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def set_number(line: str, key: str, literal: str, occurrence: int = 1) -> str:
    """The line with the ``occurrence``-th ``"key": number`` replaced by a JSON literal."""
    pattern = re.compile(rf'("{re.escape(key)}": )(-?[0-9.eE+-]+)')
    matches = list(pattern.finditer(line))
    match = matches[occurrence - 1]
    return line[: match.start(2)] + literal + line[match.end(2) :]


def state(db: Path, scratch: Path) -> tuple:
    """What "the cache is unchanged" is checked on: its runs and their exported bytes."""
    cache = ResultsCache(db)
    infos = cache.runs()
    scratch.mkdir(parents=True, exist_ok=True)
    exported = []
    for info in infos:
        csv = scratch / f"{info.id}.csv"
        cache.export_table(info.id, csv, "csv", force=True)  # scratch may be reused
        jsonl = scratch / f"{info.id}.jsonl"
        write_paper_jsonl(cache, info.id, jsonl, force=True)
        exported.append((csv.read_bytes(), jsonl.read_bytes()))
    return infos, exported


@pytest.fixture
def db(tmp_path) -> Path:
    """A cache that already holds a run, which no import may disturb."""
    path = tmp_path / "c.duckdb"
    fill_run(ResultsCache(path, lock_timeout=5), "existing", 5, spectra=True)
    ResultsCache(path).checkpoint()
    return path


def do_import(db: Path, path: Path, **kwargs):
    return import_paper_jsonl(
        ResultsCache(db, lock_timeout=5), path, model="m", dataset="d", response_type="t", **kwargs
    )


# ---- nothing left behind ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (lambda line: set_number(line, "index", str(2**40)), "layerscope.index"),
        (lambda line: set_number(line, "prompt_tokens", str(2**31)), "layerscope.prompt_tokens"),
        (lambda line: set_number(line, "response_tokens", "-3"), "layerscope.response_tokens"),
        (lambda line: line.replace("layers.1.self_attn.q", "layers.40000.self_attn.q"), "layer"),
    ],
    ids=["index-2^40", "prompt-tokens-2^31", "negative-tokens", "layer-40000"],
)
def test_an_integer_beyond_its_column_on_line_290_leaves_no_run(db, tmp_path, change, names):
    lines = lines_of(300)
    lines[289] = change(lines[289])
    path = write_lines(tmp_path / "stats.jsonl", lines)
    before = state(db, tmp_path / "before")
    with pytest.raises(PaperFormatError) as caught:
        do_import(db, path)
    message = str(caught.value)
    assert message.startswith(f"{path}:290: "), message
    assert names in message and "\n" not in message
    assert state(db, tmp_path / "after") == before


def test_a_duckdb_failure_mid_import_leaves_no_run(db, tmp_path, monkeypatch):
    path = write_lines(tmp_path / "stats.jsonl", lines_of(3 * IMPORT_BATCH))
    before = state(db, tmp_path / "before")
    real_insert = cache_writes.insert_results
    calls = []

    def failing_insert(con, run_no, results, samples):
        calls.append(len(results))
        if len(calls) == 3:
            raise duckdb.ConversionException("injected: out of range for the destination type")
        real_insert(con, run_no, results, samples)

    monkeypatch.setattr(cache_writes, "insert_results", failing_insert)
    with pytest.raises(CacheError, match="injected"):
        do_import(db, path)
    assert calls == [IMPORT_BATCH] * 3  # two batches were inserted, then rolled back
    assert state(db, tmp_path / "after") == before
    monkeypatch.setattr(cache_writes, "insert_results", real_insert)
    assert do_import(db, path).info.samples_done == 3 * IMPORT_BATCH


def test_an_interrupt_or_a_file_changing_mid_import_leaves_no_run(db, tmp_path):
    path = write_lines(tmp_path / "stats.jsonl", lines_of(2 * IMPORT_BATCH + 5))
    before = state(db, tmp_path / "before")

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        do_import(db, path, progress=interrupt)
    assert state(db, tmp_path / "after") == before

    def append(done, total):  # after the first stored batch, the file grows a line
        if done == IMPORT_BATCH:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record(9999)) + "\n")

    with pytest.raises(PaperFormatError, match="changed while it was imported"):
        do_import(db, path, progress=append)
    assert state(db, tmp_path / "after") == before


def test_importing_again_adds_nothing_and_completes_a_partial_import(db, tmp_path):
    path = write_lines(tmp_path / "stats.jsonl", lines_of(300, spectrum=True))
    # what an older layerscope left after failing on line 290: 256 samples, status failed
    cache = ResultsCache(db, lock_timeout=5)
    run_id = import_run_id(hashlib.sha256(path.read_bytes()).hexdigest(), "m", "d", "t", "base")
    parsed = list(read_paper_jsonl(path))
    targets = [
        TargetInfo(layer, projection, name, 0, 0)
        for (layer, projection), name in sorted(parsed[0].parameters.items())
    ]
    cache.begin_run(RunHeader(
        run_id, model="m", dataset="d", response_type="t", mode="base", samples_total=300,
        targets=targets, settings={"source": "import"}, provenance={"layerscope": "old"},
    ))  # fmt: skip
    first = parsed[:IMPORT_BATCH]
    cache.write_batch(
        run_id,
        BatchResult([p.result for p in first], [], len(first), len(first)),
        {p.sample.index: p.sample for p in first},
    )
    cache.finish_run(run_id, "failed", "Conversion Error: out of range")
    assert cache.run(run_id).samples_done == IMPORT_BATCH

    info = do_import(db, path).info
    assert (info.id, info.status, info.samples_done) == (run_id, "complete", 300)
    with duckdb.connect(str(db), read_only=True) as con:
        run_no = con.execute("SELECT run_no FROM runs WHERE id = ?", [run_id]).fetchone()[0]
        counts = con.execute(
            "SELECT (SELECT count(*) FROM samples WHERE run_no = $r), "
            "(SELECT count(DISTINCT sample_index) FROM samples WHERE run_no = $r), "
            "(SELECT count(*) FROM statistics WHERE run_no = $r), "
            "(SELECT count(*) FROM spectra WHERE run_no = $r), "
            "(SELECT min(samples) FROM curve_sums WHERE run_no = $r "
            " AND statistic = 'nuclear_norm')",
            {"r": run_no},
        ).fetchone()
    assert counts == (300, 300, 300 * MATRICES, 300 * MATRICES, 300)
    # the completed run has the curves of a fresh import
    fresh = tmp_path / "fresh.duckdb"
    fresh_info = do_import(fresh, path).info
    for metric in ("nuclear_norm", "effective_rank", "loss"):
        a = cache.curves([run_id], metric)
        b = ResultsCache(fresh).curves([fresh_info.id], metric)
        assert [(c.mean, c.count) for c in a] == [(c.mean, c.count) for c in b]

    sessions = len(cache.run(run_id).provenance["sessions"])
    again = do_import(db, path).info
    assert again.id == run_id and again.samples_done == 300
    assert len(cache.run(run_id).provenance["sessions"]) == sessions  # nothing written
    assert len(cache.runs()) == 2


# ---- values stored as empty ------------------------------------------------------------------


def stored_rows(db: Path, run_id: str, sample: int) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT t.layer, t.projection::VARCHAR, t.nuclear_norm, t.sigma_max, t.mean, "
            "t.sigma1_ratio, t.stable_rank, t.effective_rank, sp.singular_values "
            "FROM statistics t JOIN runs r USING (run_no) LEFT JOIN spectra sp "
            "ON sp.run_no = t.run_no AND sp.sample_index = t.sample_index "
            "AND sp.layer = t.layer AND sp.projection = t.projection "
            "WHERE r.id = ? AND t.sample_index = ? ORDER BY t.layer, t.projection",
            [run_id, sample],
        ).fetchall()


def test_values_float32_cannot_hold_are_stored_empty_and_reported_by_line(db, tmp_path):
    lines = lines_of(30, spectrum=True)
    lines[3] = set_number(lines[3], "S_sum", "NaN")  # line 4
    lines[8] = set_number(lines[8], "S_max", "Infinity")  # line 9
    lines[11] = set_number(lines[11], "M_mean", "1e400")  # line 12: JSON reads infinity
    lines[11] = set_number(lines[11], "M_mean", "-Infinity", occurrence=2)
    lines[14] = set_number(lines[14], "S_sum", "1e39")  # line 15: beyond float32
    lines[17] = set_number(lines[17], "M_max", "1" + "0" * 400)  # line 18: a 400-digit integer
    lines[20] = lines[20].replace("[4.0, 2.5, 0.5]", "[4.0, NaN, 0.5]", 1)  # line 21
    lines[23] = set_number(lines[23], "loss", "NaN")  # line 24: loss kept as NaN
    lines[26] = set_number(lines[26], "M_min", "-0.0")  # line 27: an ordinary number
    path = write_lines(tmp_path / "stats.jsonl", lines)
    imported = do_import(db, path)
    assert imported.info.status == "complete" and imported.info.samples_done == 30
    assert imported.empty_values == 8
    assert imported.first_empty_lines == (4, 9, 12, 15, 18, 21, 24)
    assert imported.empty_lines == 7
    run_id = imported.info.id

    # line 4, sample 3: q of layer 0 has no nuclear norm, nor what is derived from it
    q = stored_rows(db, run_id, 3)[0]
    assert q[:3] == (0, "q", None) and q[3] == 4.0 and q[5] is None and q[6] is None
    assert stored_rows(db, run_id, 14)[0][2] is None  # 1e39
    assert stored_rows(db, run_id, 11)[0][4] is None and stored_rows(db, run_id, 11)[1][4] is None
    spectrum_row = stored_rows(db, run_id, 20)[0]
    assert spectrum_row[8] == [4.0, None, 0.5] and spectrum_row[7] is None  # no effective rank
    assert math.isnan(next(s.loss for s in ResultsCache(db).samples(run_id) if s.index == 23))
    assert stored_rows(db, run_id, 26)[0][4] == pytest.approx(0.01)
    assert math.isnan(ResultsCache(db).sample_spectra(run_id, 20, "q")[0][1])  # NaN where empty

    # the empty values leave their layer's mean only
    [q_curve] = ResultsCache(db).curves([run_id], "nuclear_norm", ["q"])
    assert q_curve.count == [28, 30]
    # an export of the run imports again as the same run (null where empty)
    exported = tmp_path / "export.jsonl"
    write_paper_jsonl(ResultsCache(db), run_id, exported)
    copy = import_paper_jsonl(
        ResultsCache(db), exported, model="m2", dataset="d", response_type="t"
    )
    [copy_curve] = ResultsCache(db).curves([copy.info.id], "nuclear_norm", ["q"])
    assert copy_curve.count == q_curve.count
    assert copy_curve.mean == pytest.approx(q_curve.mean, rel=1e-12)


def test_1e39_on_line_290_is_stored_empty_not_a_failure_after_256_samples(db, tmp_path):
    lines = lines_of(300)
    lines[289] = set_number(lines[289], "S_sum", "1e39")  # what failed in DuckDB after 256
    imported = do_import(db, write_lines(tmp_path / "stats.jsonl", lines))
    assert (imported.info.status, imported.info.samples_done) == ("complete", 300)
    assert (imported.empty_values, imported.first_empty_lines) == (1, (290,))
    assert stored_rows(db, imported.info.id, 289)[0][2] is None


def test_the_float32_boundary_is_duckdbs(db, tmp_path):
    largest = 3.4028234663852886e38  # float32's largest finite value
    just_below = REAL_LIMIT * (1 - 2**-52)  # rounds to it
    lines = lines_of(3)
    for index, value in ((0, largest), (1, just_below)):  # S_sum as large: S_max <= S_sum
        lines[index] = set_number(lines[index], "S_max", repr(value))
        lines[index] = set_number(lines[index], "S_sum", repr(value))
    lines[2] = set_number(lines[2], "S_max", repr(REAL_LIMIT))  # rounds to infinity
    imported = do_import(db, write_lines(tmp_path / "stats.jsonl", lines))
    assert imported.empty_values == 1 and imported.first_empty_lines == (3,)
    sigma = [stored_rows(db, imported.info.id, i)[0][3] for i in range(3)]
    assert sigma == [largest, largest, None]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (
            lambda line: set_number(line, "loss", "-0.5"),
            "loss is -0.5; a loss (a cross-entropy) is never negative",
        ),
        (
            lambda line: set_number(line, "frobenius_norm", "-5.0", occurrence=3),
            "model.layers.0.self_attn.v_proj.weight.frobenius_norm is -5.0; a norm or singular "
            "value is never negative",
        ),
        (
            lambda line: set_number(line, "S_max", "7.5"),
            "model.layers.0.self_attn.q_proj.weight.S_max (7.5) is above "
            "model.layers.0.self_attn.q_proj.weight.S_sum (7.0); the largest singular value is "
            "never above the sum of them all",
        ),
        (
            lambda line: set_number(line, "S_min", "4.5"),
            "q_proj.weight.S_min (4.5) is above model.layers.0.self_attn.q_proj.weight.S_max (4.0)",
        ),
        (
            lambda line: set_number(line, "M_min", "0.75"),
            "q_proj.weight.M_min (0.75) is above model.layers.0.self_attn.q_proj.weight.M_max (0.5)",
        ),
        (lambda line: set_number(line, "index", "1" + "0" * 400), "an integer of 401 digits"),
        (lambda line: set_number(line, "loss", "9" * 5000), "integer literal too long"),
        (lambda line: set_number(line, "prompt_tokens", '"abc"'), 'got a string "abc"'),
        (lambda line: set_number(line, "response_tokens", "12.0"), "must be an integer"),
        (lambda line: set_number(line, "loss", '"high"'), "loss must be a number"),
        (lambda line: set_number(line, "loss", "null"), "loss must be a number, got null"),
        (lambda line: line.replace('"Q2?"', '"Q\\ud800"'), "lone surrogate \\ud800"),
        (lambda line: line.replace('"index": 2', '"index": true'), "got true"),
        (lambda line: line.replace('{"index": 2, ', '["index", '), "not valid JSON"),
        (lambda line: "[" * 100_000, "nested too deeply"),
        (lambda line: '"just a string"', 'expected a JSON object, got a string "just a string"'),
        (
            lambda line: line.replace('"layerscope": {', '"layerscope": [{').replace("}}", "}]}"),
            "layerscope must be an object",
        ),
        (
            lambda line: line.replace(
                '"model.layers.1.self_attn.o_proj.weight": {',
                '"model.layers.1.self_attn.o_proj.weight": 5, "x": {',
            ),
            "o_proj.weight must be an object of statistics, got 5",
        ),
    ],
    ids=[
        "negative-loss",
        "negative-norm",
        "s-max-above-s-sum",
        "s-min-above-s-max",
        "m-min-above-m-max",
        "400-digit-index",
        "5000-digit-loss",
        "abc-tokens",
        "float-tokens",
        "string-loss",
        "null-loss",
        "lone-surrogate",
        "bool-index",
        "not-json",
        "deep-nesting",
        "not-an-object",
        "metadata-list",
        "matrix-not-object",
    ],
)
def test_refusals_name_file_and_line(db, tmp_path, make, fragment):
    lines = lines_of(4)
    lines[2] = make(lines[2])
    path = write_lines(tmp_path / "stats.jsonl", lines)
    before = state(db, tmp_path / "before")
    with pytest.raises(PaperFormatError) as caught:
        do_import(db, path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: "), message
    assert fragment in message and "\n" not in message, message
    assert state(db, tmp_path / "after") == before


def test_impossible_values_in_the_spectrum_are_refused_and_rounding_is_not(db, tmp_path):
    lines = lines_of(3, spectrum=True)
    lines[1] = lines[1].replace('"S_list": [4.0, 2.5, 0.5]', '"S_list": [4.0, 2.5, -0.5]', 1)
    path = write_lines(tmp_path / "stats.jsonl", lines)
    with pytest.raises(PaperFormatError) as caught:
        do_import(db, path)
    assert str(caught.value) == (
        f"{path}:2: model.layers.0.self_attn.q_proj.weight.S_list[2] is -0.5; a singular value is "
        "never negative"
    )
    # Only S_list: the S_max it gives is above the S_sum the line gives, and named as its source.
    entry = {"S_sum": 3.0, "S_list": [4.0, 1.0]}
    line = {"loss": 1.0, "model.layers.0.self_attn.q_proj.weight": entry}
    with pytest.raises(PaperFormatError, match=r":1: .*q_proj\.weight\.S_list \(4\.0\) is above "
                       r".*q_proj\.weight\.S_sum \(3\.0\)"):  # fmt: skip
        do_import(db, write_lines(tmp_path / "list.jsonl", [json.dumps(line)]))
    # Two numbers computed apart may differ in their last digits: S_max a hair above S_sum, or
    # S_min a hair above S_max (one singular value), is kept as it is.
    lines = lines_of(2)
    lines[0] = set_number(lines[0], "S_max", repr(7.0 * (1 + 1e-7)))
    lines[1] = set_number(set_number(lines[1], "S_min", "4.00000001"), "M_min", "-0.5")
    imported = do_import(db, write_lines(tmp_path / "close.jsonl", lines))
    assert imported.info.samples_done == 2
    assert stored_rows(db, imported.info.id, 0)[0][3] == pytest.approx(7.0, rel=1e-6)


def test_a_repeated_sample_index_names_both_lines(db, tmp_path):
    lines = lines_of(4)
    lines[2] = set_number(lines[2], "index", "1")
    path = write_lines(tmp_path / "stats.jsonl", lines)
    with pytest.raises(
        PaperFormatError, match=r"stats\.jsonl:3: sample index 1 repeats \(line 2\)"
    ):
        do_import(db, path)


def test_invalid_utf8_names_its_line(db, tmp_path):
    data = "\n".join(lines_of(5)).encode() + b"\n"
    lines = data.split(b"\n")
    lines[2] = lines[2].replace(b"Q2?", b"Q\xff\xfe?")
    path = tmp_path / "stats.jsonl"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(PaperFormatError, match=r"stats\.jsonl:3: not UTF-8 text"):
        do_import(db, path)
    # a byte order mark on the first line is fine
    path.write_bytes(b"\xef\xbb\xbf" + data)
    assert do_import(db, path).info.samples_done == 5


def test_files_that_are_no_statistics_file(db, tmp_path):
    with pytest.raises(PaperFormatError, match="is a folder"):
        do_import(db, tmp_path)
    with pytest.raises(PaperFormatError, match="no such file"):
        do_import(db, tmp_path / "nope.jsonl")
    path = tmp_path / "blank.jsonl"
    path.write_text("\n  \n\t\n")
    with pytest.raises(PaperFormatError, match=r"blank\.jsonl: no samples"):
        do_import(db, path)
    lines = lines_of(3)
    lines[1] = json.dumps({k: v for k, v in record(1).items() if "layers.1.self_attn.v" not in k})
    with pytest.raises(PaperFormatError, match=r":2: measures 7 matrices, the first line 8; .* "
                       r"\(this one has no layer 1 v, which the first line has\)"):  # fmt: skip
        do_import(db, write_lines(path, lines))


# ---- the command line ------------------------------------------------------------------------


def test_cli_prints_the_summary_and_the_empty_values_and_nothing_else(db, tmp_path, capsys):
    lines = lines_of(40)
    for n in (3, 7, 11, 15, 19, 23, 27, 31, 35, 37, 38, 39, 40):
        lines[n - 1] = set_number(lines[n - 1], "S_sum", "NaN")
    path = write_lines(tmp_path / "stats.jsonl", lines)
    argv = ["import", str(path), "--model", "m", "--dataset", "d", "--type", "t", "--db", str(db)]
    capsys.readouterr()
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    run_id = out.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", run_id)
    assert err.splitlines() == [
        f"{run_id[:12]}  m / d/t: 40 samples, 2 layers",
        "13 values stored as empty (not finite or beyond float32 range): "
        "lines 3, 7, 11, 15, 19, 23, 27, 31, 35, 37 and 3 more",
    ]
    clean = write_lines(tmp_path / "clean.jsonl", lines_of(2))
    assert cli.main([*argv[:1], str(clean), *argv[2:]]) == 0
    out, err = capsys.readouterr()
    assert err == f"{out.strip()[:12]}  m / d/t: 2 samples, 2 layers\n"  # no empty line first


def test_cli_reports_the_entries_it_left_out(db, tmp_path, capsys):
    unknown = "model.layers.0.self_attn.zz_proj.weight"
    lines = [json.loads(line) for line in lines_of(14)]
    for number, line in enumerate(lines, start=1):
        if number % 2:
            line[unknown] = {"S_sum": 1.0, "S_max": 1.0}
        if number == 14:
            line["source\x1b[31m"] = "mine"  # shown escaped, as one line
    path = write_lines(tmp_path / "stats.jsonl", [json.dumps(line) for line in lines])
    argv = ["import", str(path), "--model", "m", "--dataset", "d", "--type", "t", "--db", str(db)]
    capsys.readouterr()
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{out.strip()[:12]}  m / d/t: 14 samples, 2 layers",
        f"8 entries left out, the format does not know their keys ({unknown}, "
        "source\\u001b[31m): lines 1, 3, 5, 7, 9, 11, 13, 14",
    ]
    imported = do_import(db, path)  # stored once: the same run, its matrices only
    assert imported.info.samples_done == 14
    assert len(ResultsCache(db).targets(imported.info.id)) == MATRICES
    assert (imported.unknown_entries, imported.unknown_lines) == (8, 8)


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--model", "", "argument --model: expected a name, got ''"),
        ("--dataset", "  ", "argument --dataset: expected a name, got '  '"),
        ("--type", "none\ncot", "argument --type: 'none\\ncot' holds a control character ('\\n'"),
        ("--model", "m\x1b[2J", "argument --model: 'm\\x1b[2J' holds a control character"),
    ],
)
def test_cli_refuses_names_that_are_not_one_printable_line(
    db, tmp_path, capsys, option, value, fragment
):
    path = write_lines(tmp_path / "stats.jsonl", lines_of(2))
    names = {"--model": "m", "--dataset": "d", "--type": "t", option: value}
    argv = ["import", str(path), *(x for pair in names.items() for x in pair), "--db", str(db)]
    before = state(db, tmp_path / "before")
    capsys.readouterr()
    assert cli.main(argv) == 2
    _out, err = capsys.readouterr()
    assert err.startswith(f"layerscope: error: {fragment}") and err.count("\n") == 1, err
    assert state(db, tmp_path / "after") == before
    with pytest.raises(RunNameError, match="holds a control character"):
        import_paper_jsonl(ResultsCache(db), path, model="m", dataset="d\u2028", response_type="t")


def test_cli_interrupt_says_nothing_was_imported(db, tmp_path, capsys, monkeypatch):
    import layerscope.analysis.interchange.paper_ingest as paper_ingest

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(paper_ingest, "import_paper_jsonl", interrupted)
    monkeypatch.delenv("LAYERSCOPE_DEBUG", raising=False)
    path = write_lines(tmp_path / "stats.jsonl", lines_of(2))
    capsys.readouterr()
    status = cli.main(["import", str(path), "--model", "m", "--dataset", "d", "--type", "t",
                       "--db", str(db)])  # fmt: skip
    _out, err = capsys.readouterr()
    assert status == 130
    assert err == "layerscope: error: interrupted; nothing was imported\n"


# ---- any bytes: a complete run, or one line and the cache untouched --------------------------

_BASE = (
    "\n".join(
        [
            json.dumps(record(0, layers=1, spectrum=True)),
            json.dumps(record(1, layers=1)),
            json.dumps({**record(2, layers=1), "layerscope": {}}),  # index and tokens absent
        ]
    )
    + "\n"
).encode()
_NUMBER = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_EXTREMES = [
    b"1e39", b"-1e39", b"-0.0", b"NaN", b"Infinity", b"-Infinity", b"1e400", b"1" + b"0" * 400,
    b"9" * 5000, b"2147483647", b"2147483648", b"1099511627776", b"32768", b"-1", b'"abc"',
    b"null", b"true", b"[]", b"{}", b"3.4028235677973366e38", b"3.4028234663852886e38",
    b"1e-320", b'"\\ud800"', b"0", b"1.5",
]  # fmt: skip
_LINES = [
    b"",
    b"   ",
    b"{}",
    b"[1, 2]",
    b'{"loss": 1}',
    b"\xff\xfe",
    b"\xef\xbb\xbf{}",
    b'{"loss": 1, "model.layers.0.self_attn.q_proj.weight": {"S_sum": 1, "S_max": 1}}',
    json.dumps(record(7, layers=1)).encode(),
    json.dumps(record(7, layers=2)).encode(),
]


@st.composite
def damaged_files(draw) -> bytes:
    data = bytearray(_BASE)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["number", "number", "flip", "cut", "line", "text", "drop"]))
        if kind == "number" and (spans := list(_NUMBER.finditer(bytes(data)))):
            span = spans[draw(st.integers(0, len(spans) - 1))]
            data[span.start() : span.end()] = draw(st.sampled_from(_EXTREMES))
        elif kind == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif kind in ("line", "text", "drop"):
            lines = bytes(data).split(b"\n")
            at = draw(st.integers(0, len(lines)))
            if kind == "drop" and at < len(lines):
                del lines[at]
            elif kind == "line":
                lines.insert(at, draw(st.sampled_from(_LINES)))
            else:
                lines.insert(at, draw(st.text(max_size=40)).encode("utf-8", "surrogatepass"))
            data = bytearray(b"\n".join(lines))
    return bytes(data)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "c.duckdb"
    fill_run(ResultsCache(path), "existing", 3)
    ResultsCache(path).checkpoint()
    return path


def table_counts(db: Path) -> tuple:
    with duckdb.connect(str(db), read_only=True) as con:
        return tuple(
            con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("runs", "samples", "statistics", "spectra", "targets", "curve_sums")
        )


@settings(
    # 60 fixed examples in the suite (about 25 s); LAYERSCOPE_EXAMPLES=1000 for a deeper search
    max_examples=int(os.environ.get("LAYERSCOPE_EXAMPLES", "60")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.one_of(damaged_files(), damaged_files(), st.binary(max_size=400)))
def test_any_bytes_import_whole_or_are_refused_in_one_line(template, data):
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "c.duckdb"
        shutil.copyfile(template, db)
        path = Path(folder) / "stats.jsonl"
        path.write_bytes(data)
        cache = ResultsCache(db, lock_timeout=5)
        before_runs, before_counts, before_bytes = cache.runs(), table_counts(db), db.read_bytes()
        try:
            imported = import_paper_jsonl(cache, path, model="m", dataset="d", response_type="t")
        except PaperFormatError as error:
            message = str(error)
            assert message.startswith(f"{path}:"), message
            event("refused: " + re.sub(r"[0-9]+", "N", message[len(str(path)) :])[:40])
            assert "\n" not in message and "\r" not in message, message
            assert cache.runs() == before_runs
            assert db.read_bytes() == before_bytes  # refused before the cache was opened
            assert not Path(f"{db}.wal").exists()
            return
        info = imported.info
        event(f"imported, {'some' if imported.empty_values else 'no'} values empty")
        assert info.status == "complete"
        assert info.samples_done == info.samples_total >= 1
        assert [i.id for i in cache.runs()] == [*(i.id for i in before_runs), info.id]
        counts = table_counts(db)
        added = [after - was for after, was in zip(counts, before_counts, strict=True)]
        assert added[:3] == [1, info.samples_done, info.samples_done * len(cache.targets(info.id))]


# ---- SIGKILL ---------------------------------------------------------------------------------

KILL_SAMPLES = 1600  # the kill points: before, after batch 1 and 6, after the last
KILL_LAYERS = 4

# The importer: with "wait", it stops at each point it reports (before it starts, and inside
# the transaction after each stored batch) until told to go on, so a kill lands exactly there.
_IMPORTER = textwrap.dedent("""
    import sys
    from layerscope.analysis.cache import ResultsCache
    from layerscope.analysis.interchange.paper_ingest import import_paper_jsonl

    def point(name):
        print(name, flush=True)
        if sys.argv[3] == "wait":
            sys.stdin.readline()

    point("started")
    imported = import_paper_jsonl(
        ResultsCache(sys.argv[1], lock_timeout=30), sys.argv[2], model="m", dataset="d",
        response_type="t", progress=lambda done, total: point(f"stored {done}"),
    )
    print("done", imported.info.samples_done, flush=True)
""")


def wait_for(condition, what: str, timeout: float = 120) -> None:
    """Poll a condition (never a fixed pause) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def kill_import_at(db: Path, path: Path, point: str) -> None:
    """Run the importer in a process and SIGKILL it at ``point`` (a line it prints, or "write":
    as soon as the cache file shows a write, the commit's log or the main file growing)."""
    mode = "free" if point == "write" else "wait"
    size = db.stat().st_size
    child = subprocess.Popen(
        [sys.executable, "-c", _IMPORTER, str(db), str(path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    try:
        if point == "write":
            wal = Path(f"{db}.wal")
            wait_for(
                lambda: wal.exists() or db.stat().st_size != size or child.poll() is not None,
                "a write to the cache",
            )
        else:
            for line in child.stdout:
                if line.strip() == point:
                    break
                child.stdin.write("go\n")
                child.stdin.flush()
            else:
                pytest.fail(f"the import ended before {point!r}: {child.stderr.read()}")
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()


@pytest.mark.slow
def test_sigkill_at_any_point_leaves_no_run_or_the_whole_run(tmp_path):
    path = write_lines(tmp_path / "big.jsonl", lines_of(KILL_SAMPLES, layers=KILL_LAYERS))
    db = tmp_path / "c.duckdb"
    fill_run(ResultsCache(db), "existing", 4)
    ResultsCache(db).checkpoint()
    before = state(db, tmp_path / "before")
    # before reading; inside the transaction after the first batch, the sixth, and the last
    # (the run is stored and only its finish and the commit are left)
    for point in ("started", "stored 256", "stored 1536", f"stored {KILL_SAMPLES}"):
        kill_import_at(db, path, point)
        assert state(db, tmp_path / "after") == before, point
    # wherever the first write lands: no run, or the complete run, never a part of it
    kill_import_at(db, path, "write")
    infos = ResultsCache(db).runs()
    if len(infos) == len(before[0]):
        assert state(db, tmp_path / "after") == before
    else:
        [imported] = [i for i in infos if i.model == "m"]
        assert (imported.status, imported.samples_done) == ("complete", KILL_SAMPLES)
    # importing again completes it (or finds it complete)
    info = do_import(db, path).info
    assert (info.status, info.samples_done) == ("complete", KILL_SAMPLES)
    with duckdb.connect(str(db), read_only=True) as con:
        rows, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (sample_index, layer, projection)) FROM statistics "
            "JOIN runs USING (run_no) WHERE id = ?",
            [info.id],
        ).fetchone()
    assert rows == distinct == KILL_SAMPLES * KILL_LAYERS * 4
