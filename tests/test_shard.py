"""``compute --shard I/N``: the N shards of a request partition its samples exactly (every
task of an array job derives the same split on its own), are balanced by estimated cost, and a
sharded run says in ``runs`` that it is one shard."""

from __future__ import annotations

import json

import pytest
from test_runner import model_folder, write_dataset  # noqa: F401 (fixture)

from layerscope.analysis.base.records import Sample
from layerscope.analysis.runs.sharding import ShardError, parse_shard, sample_cost, shard_of
from layerscope.app import cli
from layerscope.app.settings_presentation import option_name


def samples(lengths):
    return [Sample(i, "x" * n, "y") for i, n in enumerate(lengths)]


def test_shards_partition_the_samples_exactly_and_deterministically():
    pool = samples([(i * 37) % 101 + 1 for i in range(53)])
    for count in (1, 2, 3, 8, 60):
        parts = [shard_of(pool, i, count) for i in range(count)]
        indices = [s.index for part in parts for s in part]
        assert sorted(indices) == list(range(53))  # union: all; no sample twice
        assert len(set(indices)) == len(indices)
        for i, part in enumerate(parts):
            assert [s.index for s in part] == sorted(s.index for s in part)
            # the same call in another task (even with the samples in another order) agrees
            assert shard_of(list(reversed(pool)), i, count) == part


def test_shards_are_balanced_by_characters():
    pool = samples([1000, 10, 10, 10, 10, 10, 990, 10, 10, 10])
    loads = [sum(sample_cost(s) for s in shard_of(pool, i, 2)) for i in range(2)]
    # two long samples go to different shards; counts alone would put both in shard 0
    assert abs(loads[0] - loads[1]) <= 20
    costs = [sample_cost(s) for s in pool]
    assert sum(loads) == sum(costs)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("3", "expected I/N"),
        ("a/2", "expected I/N"),
        ("2/2", "I must be 0 to 1"),
        ("-1/4", "I must be 0 to 3"),
        ("0/0", "N must be at least 1"),
    ],
)
def test_bad_shards_are_refused_naming_the_option(text, fragment):
    with pytest.raises(ShardError) as caught:
        parse_shard(text)
    assert caught.value.setting == "shard"
    assert caught.value.describe(option_name).startswith("--shard")
    assert fragment in str(caught.value)
    assert parse_shard(" 7/8 ") == (7, 8)


def test_compute_refuses_a_bad_shard_in_one_line(capsys, tmp_path):
    status = cli.main(
        ["compute", "--model", "tiny", "--dataset", "math", "--shard", "8/8",
         "--db", str(tmp_path / "c.duckdb"), "--quiet"]
    )  # fmt: skip
    _out, err = capsys.readouterr()
    assert status == 2
    assert err.strip().splitlines() == [
        "layerscope: error: --shard 8/8: I must be 0 to 7 (shards are 0-based)"
    ]
    assert not (tmp_path / "c.duckdb").exists()


def test_a_sharded_run_computes_its_shard_and_says_so(capsys, tmp_path, model_folder):  # noqa: F811
    data = write_dataset(tmp_path / "data", 5)
    db = tmp_path / "s.duckdb"
    argv = ["compute", "--model", str(model_folder), "--dataset", str(data), "--batch-size", "2",
            "--max-length", "64", "--db", str(db), "--quiet", "--shard", "1/2",
            "--progress-format", "jsonl"]  # fmt: skip
    assert cli.main(argv) == 0
    # --progress-format jsonl: stdout is one JSON object per line, for a program to follow
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] in ("plan", "stage") and kinds[-1] == "progress"
    (plan,) = [e for e in events if e["event"] == "plan"]
    assert plan["runs"][0]["total"] == len(shard_of(read(data), 1, 2))
    last = events[-1]
    assert last["status"] == "complete" and last["done"] == last["total"]
    for key in ("run_id", "dataset", "response_type", "status", "done", "total", "elapsed",
                "message"):  # fmt: skip
        assert key in last
    assert [e["done"] for e in events if e["event"] == "progress"] == sorted(
        e["done"] for e in events if e["event"] == "progress"
    )
    assert cli.main(["runs", "--db", str(db), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    expected = [s.index for s in shard_of(read(data), 1, 2)]
    assert run["samples"] == len(expected) < 5
    assert run["status"] == "complete"
    assert run["shard"] == "1/2"
    from layerscope.analysis.cache import ResultsCache

    stored = sorted(s.index for s in ResultsCache(db).samples(run["id"]))
    assert stored == expected
    assert ResultsCache(db).run(run["id"]).provenance["requested"] == 5
    assert ResultsCache(db).run(run["id"]).samples_requested == len(expected)  # its share
    assert cli.main(["runs", "--db", str(db)]) == 0
    assert "complete, shard 1/2" in capsys.readouterr().out


def read(path):
    from layerscope.analysis.datasets import discover_sources, read_samples

    (source,) = discover_sources(path)
    return read_samples(source)
