"""Samples as data: records' numeric fields kept in the cache, per-sample means, Spearman
correlations (checked against a float64 rank-then-Pearson reference and scipy), ``select``
written back as a dataset that ``compute`` reads, and the follow-up paper's data."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import duckdb
import numpy as np
import pytest
from cache_helpers import PROJECTIONS, batch, make_result, nuclear, run_id_for, targets
from scipy import stats

from layerscope.analysis.base.records import RunHeader
from layerscope.analysis.cache import ResultsCache, migrations
from layerscope.analysis.cache import schema as cache_schema
from layerscope.analysis.datasets import (
    DatasetError,
    FieldMap,
    ResponseTypeSource,
    file_sha256,
    read_records,
    read_samples,
)
from layerscope.analysis.results.selection import (
    LENGTH,
    LOSS,
    correlations,
    run_records,
    sample_variables,
    select_samples,
    spearman,
    write_selection,
)
from layerscope.app import cli

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gradient_unified"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/data/gradient_unified")

# Scores per sample (index 0..7): reward rises with the index except for a tie; "quality" is
# a float that falls; "flag" a boolean and "note" a string (neither is a number).
REWARDS = [-2.5, 0.5, 0.5, 1.25, 3.0, 2.0, 7.5, 9.0]


def records(count: int = 8) -> list[dict]:
    return [
        {
            "instruction": f"Question {i}: what is {i} + {i}?",
            "output": f"The answer is {2 * i}.",
            "reward": REWARDS[i],
            "diff": 8 - i,
            "flag": i % 2 == 0,
            "note": "text",
            "nested": {"score": 1},
        }
        for i in range(count)
    ]


def source_for(path: Path) -> ResponseTypeSource:
    return ResponseTypeSource("scores", path.stem, path, "correct")


def stored_run(cache: ResultsCache, path: Path, name: str = "scored", layers: int = 4) -> str:
    """A run of the file's samples with synthetic statistics (cache_helpers.make_result), its
    settings naming the file as a computed run's do."""
    samples = read_samples(source_for(path))
    run_id = run_id_for(name)
    cache.begin_run(
        RunHeader(
            run_id,
            model="synthetic",
            dataset="scores",
            response_type=path.stem,
            mode="base",
            samples_total=len(samples),
            targets=targets(layers),
            settings={
                "max_length": 1024,
                "data_file": str(path),
                "data_sha256": file_sha256(path),
                "relevance": "correct",
                "fields": asdict(FieldMap()),
            },
            provenance={"layerscope": "test"},
        )
    )
    by_index = {s.index: s for s in samples}
    cache.write_batch(run_id, batch([make_result(s.index, layers) for s in samples]), by_index)
    cache.finish_run(run_id, "complete")
    return run_id


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "scored.json"
    path.write_text(json.dumps(records(), indent=1))
    return path


@pytest.fixture
def cache(tmp_path) -> ResultsCache:
    return ResultsCache(tmp_path / "c.duckdb", lock_timeout=5)


# ---- fields from the file into the cache ------------------------------------------------------


def test_a_records_numbers_travel_with_it_and_nothing_else(data, cache):
    samples = read_samples(source_for(data))
    assert samples[3].numeric_fields == {"reward": 1.25, "diff": 5.0}  # not flag, note, nested
    run_id = stored_run(cache, data)
    fields = cache.sample_fields(run_id)
    assert set(fields) == {"reward", "diff"}
    assert fields["reward"] == dict(enumerate(REWARDS))
    assert fields["diff"] == {i: float(8 - i) for i in range(8)}
    # the records themselves, every field, in the indices of read_samples
    assert read_records(source_for(data)) == records()


def test_json_lines_records_keep_their_fields(tmp_path):
    path = tmp_path / "scored.jsonl"
    path.write_text("".join(json.dumps(r) + "\n\n" for r in records(3)))
    assert [s.numeric_fields["reward"] for s in read_samples(source_for(path))] == REWARDS[:3]
    assert read_records(source_for(path)) == records(3)


def test_a_version_2_cache_is_upgraded_and_its_runs_get_fields_from_their_file(tmp_path, data):
    path = tmp_path / "v2.duckdb"
    with duckdb.connect(str(path)) as con:
        migrations.apply_migrations(con, 0, 2)
    cache = ResultsCache(path, lock_timeout=5)
    # a run stored the old way: write it, then drop its fields as a version-2 file had none
    run_id = stored_run(cache, data)
    with duckdb.connect(str(path)) as con:
        con.execute("DELETE FROM sample_fields")
        assert con.execute("SELECT value FROM layerscope_meta").fetchone() == (
            str(cache_schema.SCHEMA_VERSION),
        )
    info = cache.run(run_id)
    assert cache.sample_fields(run_id) == {}
    variables = sample_variables(cache, info)
    assert variables["reward"] == dict(enumerate(REWARDS))  # read back from the unchanged file


# ---- per-sample means and correlations ---------------------------------------------------------


def test_sample_means_over_chosen_layers_and_projections(data, cache):
    run_id = stored_run(cache, data)
    q_middle = cache.sample_means(run_id, "nuclear_norm", "q", (1, 2))
    assert q_middle == {
        i: pytest.approx(np.mean([nuclear(i, layer, "q") for layer in (1, 2)])) for i in range(8)
    }
    everything = cache.sample_means(run_id, "nuclear_norm")
    assert everything[5] == pytest.approx(
        np.mean([nuclear(5, layer, p) for layer in range(4) for p in PROJECTIONS])
    )


def reference_spearman(x: list[float], y: list[float]) -> tuple[float, float]:
    """Average ranks, then Pearson in float64; the p-value from Student's t with n-2 dof."""
    rx = stats.rankdata(np.asarray(x, dtype=np.float64))
    ry = stats.rankdata(np.asarray(y, dtype=np.float64))
    rho = float(np.corrcoef(rx, ry)[0, 1])
    n = len(x)
    t = rho * math.sqrt((n - 2) / (1 - rho * rho))
    return rho, float(2 * stats.t.sf(abs(t), n - 2))


def test_correlations_with_fields_loss_and_length_match_a_reference(data, cache):
    run_id = stored_run(cache, data)
    info = cache.run(run_id)
    variables = sample_variables(cache, info, "effective_rank")
    assert list(variables)[:5] == [
        "effective_rank",
        "effective_rank q",
        "effective_rank k",
        "effective_rank v",
        "effective_rank o",
    ]
    assert {LOSS, LENGTH, "reward", "diff"} <= set(variables)
    # the nuclear norm per sample, by hand: (i+1)(l+1) + projection number, mean over layers
    nuclear_q = [np.mean([nuclear(i, layer, "q") for layer in range(4)]) for i in range(8)]
    found = spearman("n", cache.sample_means(run_id, "nuclear_norm", "q"), "r", variables["reward"])
    rho, p = reference_spearman(nuclear_q, REWARDS)
    assert (found.rho, found.p_value, found.n) == (pytest.approx(rho), pytest.approx(p), 8)
    assert found.rho == pytest.approx(stats.spearmanr(nuclear_q, REWARDS).statistic)
    assert 0.9 < found.rho < 1  # rises with the index, one tie and one swap
    # loss rises with the index (1 + i/10), diff falls: +1 and -1 exactly
    by_pair = {(c.first, c.second): c for c in correlations(variables)}
    assert by_pair[("effective_rank", LOSS)].n == 8
    assert by_pair[(LOSS, "diff")].rho == pytest.approx(-1.0)
    assert by_pair[(LOSS, LENGTH)].rho == pytest.approx(1.0)
    assert len(by_pair) == len(variables) * (len(variables) - 1) // 2  # each pair once


def test_spearman_leaves_out_missing_and_nonfinite_samples():
    x = {0: 1.0, 1: 2.0, 2: math.nan, 3: 4.0, 4: 5.0, 5: 3.0}
    y = {0: 10.0, 1: 30.0, 2: 0.0, 3: 20.0, 5: 40.0}  # 4 missing
    found = spearman("x", x, "y", y)
    rho, p = reference_spearman([1, 2, 4, 3], [10, 30, 20, 40])
    assert (found.n, found.rho, found.p_value) == (4, pytest.approx(rho), pytest.approx(p))
    assert math.isnan(spearman("x", {0: 1.0, 1: 2.0}, "y", {0: 1.0, 1: 2.0}).rho)  # n < 3
    assert math.isnan(spearman("x", x, "c", dict.fromkeys(x, 1.0)).rho)  # constant side


# ---- select ----------------------------------------------------------------------------------


def test_select_takes_the_extremes_and_writes_the_original_records(data, cache, tmp_path):
    run_id = stored_run(cache, data)
    info = cache.run(run_id)
    top = select_samples(cache, info, "nuclear_norm", 3, "top", "q", (0, 1))
    assert top.indices == (7, 6, 5) and top.candidates == 8
    bottom = select_samples(cache, info, LOSS, 2, "bottom")
    assert bottom.indices == (0, 1)
    assert select_samples(cache, info, "nuclear_norm", 20).indices == tuple(range(7, -1, -1))
    out = tmp_path / "top.json"
    assert write_selection(info, top, out, cache.files) == 3
    written = json.loads(out.read_text())
    assert written == [records()[i] for i in (7, 6, 5)]  # every field, most extreme first
    # what compute reads: the same samples, with their scores
    again = read_samples(source_for(out))
    assert [s.numeric_fields["reward"] for s in again] == [REWARDS[i] for i in (7, 6, 5)]


def test_select_never_picks_a_nonfinite_sample(tmp_path, cache):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records(4)))
    run_id = stored_run(cache, path)
    with duckdb.connect(str(cache.path)) as con:
        con.execute(
            "UPDATE statistics SET nuclear_norm = 'nan' WHERE sample_index = 3 AND layer = 2 AND projection = 'q'"
        )
    info = cache.run(run_id)
    chosen = select_samples(cache, info, "nuclear_norm", 2, "top")
    assert chosen.indices == (2, 1) and chosen.candidates == 3
    # one projection without the NaN still has sample 3
    assert select_samples(cache, info, "nuclear_norm", 1, "top", "k").indices == (3,)


def test_records_of_an_edited_file_are_refused(data, cache):
    run_id = stored_run(cache, data)
    data.write_text(json.dumps(records()[::-1]))
    with pytest.raises(DatasetError, match="changed since run"):
        run_records(cache.run(run_id))


# ---- the command line ------------------------------------------------------------------------


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_select_and_correlations_commands(data, cache, capsys, tmp_path):
    run_id = stored_run(cache, data)
    out_file = tmp_path / "low.jsonl"
    status, out, err = run(
        capsys, "select", run_id[:8], "--by", "nuclear", "--proj", "v", "--layers", "2-3",
        "--bottom", "2", "--output", out_file, "--db", cache.path,
    )  # fmt: skip
    assert status == 0, err
    assert "bottom 2 of 8 samples by nuclear_norm v, layers 2-3" in err and out == ""
    lines = out_file.read_text().splitlines()
    assert [json.loads(line) for line in lines] == records()[:2]

    status, out, err = run(
        capsys, "correlations", run_id[:8], "--with", "reward", "--json", "--db", cache.path
    )
    assert status == 0, err
    record = json.loads(out)
    pairs = {(c["first"], c["second"]): c for c in record["correlations"]}
    assert set(pairs) == {(f"nuclear_norm{p}", "reward") for p in ("", " q", " k", " v", " o")}
    assert all(c["n"] == 8 for c in pairs.values())

    # two statistics: each against the other, per projection too; the p-value from scipy
    with duckdb.connect(str(cache.path)) as con:  # an effective rank that is not constant
        con.execute("UPDATE statistics SET effective_rank = (sample_index * 37 + layer * 11) % 13")
    status, out, err = run(
        capsys, "correlations", run_id[:8], "--metric", "nuclear,effective_rank",
        "--with", "effective_rank", "--json", "--db", cache.path,
    )  # fmt: skip
    assert status == 0, err
    record = json.loads(out)
    assert record["statistics"] == ["nuclear_norm", "effective_rank"]
    [pair] = [
        c
        for c in record["correlations"]
        if (c["first"], c["second"]) == ("nuclear_norm q", "effective_rank")
    ]
    x = cache.sample_means(run_id, "nuclear_norm", "q")
    y = cache.sample_means(run_id, "effective_rank")
    expected = stats.spearmanr([x[i] for i in range(8)], [y[i] for i in range(8)])
    assert pair["rho"] == pytest.approx(expected.statistic)
    assert pair["p"] == pytest.approx(expected.pvalue) and 0 < abs(pair["rho"]) < 1

    status, out, err = run(
        capsys, "correlations", run_id[:8], "--scatter", "loss", "--width", "60", "--db", cache.path
    )
    assert status == 0, err
    assert "nuclear_norm against loss (rho +1.000)" in out and "Spearman correlations" in out


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--by", "nuclear", "--top", "2", "--bottom", "1"], "not allowed with argument"),
        (["--by", "nuclear", "--top", "0"], "--top: expected a positive integer"),
        (["--by", "bogus", "--top", "1"], "--by: unknown metric 'bogus'"),
        (["--by", "nuclear", "--top", "1", "--layers", "2-9"], "--layers 2-9: run"),
        (["--by", "nuclear", "--top", "1", "--layers", "3-1"], "empty or negative layer range"),
        (["--by", "nuclear", "--top", "1", "--proj", "gate"], "--proj gate: run"),
    ],
)
def test_select_refuses_bad_options_in_one_line(data, cache, capsys, tmp_path, argv, said):
    run_id = stored_run(cache, data)
    status, _out, err = run(
        capsys, "select", run_id[:8], *argv, "--output", tmp_path / "x.json", "--db", cache.path
    )
    assert status == 2
    assert err.count("\n") == 1 and said in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


def test_correlations_refuses_an_unknown_variable(data, cache, capsys):
    run_id = stored_run(cache, data)
    status, _out, err = run(capsys, "correlations", run_id, "--with", "ifd", "--db", cache.path)
    assert status == 2
    assert "--with ifd: run" in err and "reward" in err and err.count("\n") == 1


# ---- the follow-up paper's data (skipped when absent) ---------------------------------------


@needs_shared
@pytest.mark.parametrize("metric", ["ifd_gpt2", "reward"])
def test_the_follow_ups_files_are_read_with_their_scores(metric):
    for end in ("highest", "lowest"):
        path = SHARED / metric / f"wiz_10k_{end}_200.json"
        samples = read_samples(ResponseTypeSource("wiz", path.stem, path, "correct"))
        assert len(samples) == 200
        assert {"ifd_gpt2", "ppl_gpt2", "reward", "instag", "diff"} <= set(
            samples[0].numeric_fields
        )
        raw = json.loads(path.read_text())
        assert [s.numeric_fields[metric] for s in samples] == [float(r[metric]) for r in raw]
    reasoning = read_samples(
        ResponseTypeSource("gsm8k", "R1", SHARED / "reasoning/gsm8k_R1.json", "correct")
    )
    assert len(reasoning) == 200 and reasoning[0].numeric_fields == {}


@needs_shared
def test_the_tiny_model_on_the_follow_ups_data(tmp_path, capsys):
    """Compute 8 records with the bundled tiny model; the cache holds their scores; the
    correlations agree with scipy on the file's own numbers; select writes a file compute reads."""
    db = tmp_path / "c.duckdb"
    path = SHARED / "reward" / "wiz_10k_highest_200.json"
    status, out, err = run(
        capsys, "compute", "--model", "tiny", "--dataset", path, "--limit", "8", "--quiet",
        "--db", db,
    )  # fmt: skip
    assert status == 0, err
    [run_id] = out.split()
    cache = ResultsCache(db)
    info = cache.run(run_id)
    fields = cache.sample_fields(run_id)
    raw = json.loads(path.read_text())
    # every measured sample has its scores (a record too long for the max length is skipped)
    measured = sorted(row.index for row in cache.samples(run_id))
    assert sorted(fields["reward"]) == measured and len(measured) >= 5
    assert fields["ifd_gpt2"] == {i: raw[i]["ifd_gpt2"] for i in measured}
    means = cache.sample_means(run_id, "nuclear_norm")
    expected = stats.spearmanr([means[i] for i in measured], [raw[i]["reward"] for i in measured])
    status, out, err = run(capsys, "correlations", run_id, "--with", "reward", "--json", "--db", db)
    assert status == 0, err
    [overall] = [c for c in json.loads(out)["correlations"] if c["first"] == "nuclear_norm"]
    assert overall["rho"] == pytest.approx(expected.statistic)
    assert overall["p"] == pytest.approx(expected.pvalue)

    chosen = tmp_path / "chosen.json"
    status, _out, err = run(
        capsys, "select", run_id, "--by", "nuclear", "--layers", "1-2", "--top", "3",
        "--output", chosen, "--db", db,
    )  # fmt: skip
    assert status == 0, err
    top = select_samples(cache, info, "nuclear_norm", 3, "top", None, (1, 2))
    assert json.loads(chosen.read_text()) == [raw[i] for i in top.indices]
    status, out, err = run(
        capsys, "compute", "--model", "tiny", "--dataset", chosen, "--quiet", "--db", db
    )
    assert status == 0, err
    again = cache.run(out.split()[0])
    assert again.samples_done == 3
    assert sorted(cache.sample_fields(again.id)["reward"].values()) == sorted(
        raw[i]["reward"] for i in top.indices
    )


def test_a_run_without_a_data_file_cannot_be_selected_from(cache, capsys, tmp_path):
    """Imported runs (and any run without its file) say why in one line."""
    from cache_helpers import fill_run

    run_id = fill_run(cache, "imported", 4)
    status, _out, err = run(
        capsys, "select", run_id, "--by", "nuclear", "--top", "1",
        "--output", tmp_path / "x.json", "--db", cache.path,
    )  # fmt: skip
    assert status == 1 and err.count("\n") == 1
    assert "has no data file of its own" in err and not (tmp_path / "x.json").exists()
    # its correlations need no file: statistics, loss and length are in the cache
    status, out, err = run(capsys, "correlations", run_id, "--json", "--db", cache.path)
    assert status == 0, err
    assert "reward" not in json.loads(out)["variables"]


def test_doctor_finds_and_repair_removes_orphaned_field_rows(data, cache):
    from layerscope.analysis.cache.health import examine, repair

    run_id = stored_run(cache, data)
    with duckdb.connect(str(cache.path)) as con:
        con.execute("INSERT INTO sample_fields VALUES (1, 99, 'reward', 1.0)")  # no sample 99
    problems = [f.message for f in examine(cache.path).findings if f.severity == "problem"]
    assert any("sample_fields" in message for message in problems)
    report = repair(cache.path)
    assert any("1 in sample_fields" in action for action in report.actions)
    assert cache.sample_fields(run_id)["reward"] == dict(enumerate(REWARDS))
