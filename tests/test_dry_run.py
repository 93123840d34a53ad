"""``compute --dry-run``: the plan and cost of a computation, with nothing computed into the cache.

What a dry run says must be what ``compute`` then does: the same samples (``--limit``, samples
refused at ``--max-length``, what is already stored), the same token counts as the run records
per sample, and a cache that is neither created nor changed by asking.
"""

from __future__ import annotations

import json
import math

import pytest

from layerscope.analysis.cache import ResultsCache
from layerscope.app import cli

# Two bundled types; at 40 tokens some math prompts leave no response token (skipped).
REQUEST = ["--model", "tiny", "--dataset", "math", "--types", "none_cot,detailed_cot",
           "--max-length", "40", "--batch-size", "2"]  # fmt: skip


def dry_run(capsys, db, *extra):
    status = cli.main(["compute", *REQUEST, "--db", str(db), "--dry-run",
                       "--progress-format", "jsonl", *map(str, extra)])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert {line["event"] for line in lines[:-1]} <= {"stage"}
    assert lines[-1]["event"] == "estimate"
    return lines[-1]


def compute(capsys, db, *extra):
    status = cli.main(["compute", *REQUEST, "--db", str(db), "--quiet", *map(str, extra)])
    _out, err = capsys.readouterr()
    assert status == 0, err


def stored(db):
    """Per run label: samples stored, their prompt + response tokens, samples skipped."""
    cache = ResultsCache(db)
    found = {}
    for info in cache.runs():
        rows = cache.samples(info.id)
        tokens = sum(r.prompt_tokens + r.response_tokens for r in rows)
        found[f"{info.dataset}/{info.response_type}"] = (len(rows), tokens, info.samples_skipped)
    return found


@pytest.mark.slow
def test_dry_run_counts_what_compute_then_records_and_stores_nothing(tmp_path, capsys):
    db = tmp_path / "cache" / "c.duckdb"
    first = dry_run(capsys, db, "--limit", 3)
    assert not db.parent.exists()  # the cache (nor its folder) is not created by asking
    assert [run["label"] for run in first["runs"]] == ["math/none_cot", "math/detailed_cot"]
    assert all(run["cached"] == 0 for run in first["runs"])

    compute(capsys, db, "--limit", 3)
    assert stored(db) == {
        run["label"]: (run["samples"], run["tokens"], sum(run["skipped"].values()))
        for run in first["runs"]
    }

    # Resuming: with 3 of 8 stored (or skipped) per run, only the other 5 are to do.
    before = db.stat().st_mtime_ns, {i.id: i.samples_done for i in ResultsCache(db).runs()}
    rest = dry_run(capsys, db, "--limit", 8)
    assert (
        db.stat().st_mtime_ns,
        {i.id: i.samples_done for i in ResultsCache(db).runs()},
    ) == before
    for run in rest["runs"]:
        assert run["cached"] == 3
        assert run["samples"] + sum(run["skipped"].values()) == 5
    assert sum(sum(run["skipped"].values()) for run in rest["runs"]) > 0  # the test bites
    whole = stored(db)
    compute(capsys, db, "--limit", 8)
    for run in rest["runs"]:
        samples, tokens, skipped = stored(db)[run["label"]]
        was = whole[run["label"]]
        assert (samples - was[0], tokens - was[1], skipped - was[2]) == (
            run["samples"], run["tokens"], sum(run["skipped"].values()),
        )  # fmt: skip

    # The estimate: measured on the device, positive and finite.
    calibration = rest["calibration"]
    assert calibration["device"] == "cpu" and calibration["samples"] > 0
    assert calibration["peak_bytes"] > 0 and calibration["memory_kind"] == "rss"
    assert 0 < calibration["seconds_per_token"] < math.inf
    assert all(0 < run["seconds"] < math.inf for run in rest["runs"] if run["samples"])
    assert 0 < rest["seconds"] < math.inf and rest["tokens"] > 0

    # Everything stored: nothing to do, and no model loaded.
    done = dry_run(capsys, db, "--limit", 8)
    assert done["calibration"] is None and done["samples"] == 0 and done["seconds"] == 0


@pytest.mark.slow
def test_dry_run_table_for_a_person(tmp_path, capsys):
    db = tmp_path / "c.duckdb"
    status = cli.main(["compute", *REQUEST, "--db", str(db), "--dry-run", "--limit", "8"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert not db.exists() and list(tmp_path.iterdir()) == []
    assert "math/none_cot" in out and "math/detailed_cot" in out and "total" in out
    assert "estimate:" in out and "extrapolated from" in out and "peak memory" in out
    assert "would skip" in out  # the samples 40 tokens leave no response token, by reason
    assert "loading weights" in err  # the stages, once each
    assert err.count("loading weights") == 1


def test_dry_run_is_one_process(capsys):
    status = cli.main(["compute", *REQUEST, "--dry-run", "--nproc-per-node", "2"])
    _out, err = capsys.readouterr()
    assert status == 2
    assert "--dry-run" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_spent_budget_leaves_later_runs_the_pooled_rate(tmp_path):
    """With no time to spare, only the first run's first batch is measured; the other runs are
    still estimated, at the rate of what was measured."""
    from layerscope.analysis.runs.estimate import estimate
    from layerscope.analysis.runs.runner import RunRequest

    request = RunRequest.from_settings(
        "tiny", "math", ["none_cot", "detailed_cot"], {"limit": 8, "batch_size": 2}
    )
    result = estimate(request, tmp_path / "c.duckdb", budget_seconds=0.0)
    first, second = result.runs
    assert first.calibration_samples == 2 and second.calibration_samples == 0  # one batch
    assert result.calibration is not None and result.calibration.samples == 2
    rate = result.calibration.seconds_per_token
    assert second.seconds == pytest.approx(rate * second.tokens) and second.seconds > 0
    assert list(tmp_path.iterdir()) == []
