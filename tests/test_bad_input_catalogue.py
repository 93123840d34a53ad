"""The bad-input catalogue (see ``tests/bad_inputs/__init__.py``): each case gets exactly one
line on stderr that names the thing, the exit status it must, and leaves the canary cache's runs
byte-identical."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from bad_inputs import Case, World
from bad_inputs.cases import CASES
from cache_helpers import fill_run
from test_runner import model_folder, write_dataset  # noqa: F401 (fixture)

from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.interchange.paper_export import write_paper_jsonl
from layerscope.app import cli

STAGE_LINE = re.compile(r"[a-z][^:]*…( \(.+\))?")


def exports(db: Path, scratch: Path) -> dict[str, bytes]:
    """Every run of a cache as CSV and paper-jsonl bytes (what "nothing lost" is checked on)."""
    cache = ResultsCache(db)
    found: dict[str, bytes] = {}
    scratch.mkdir(parents=True, exist_ok=True)
    for info in cache.runs():
        csv = scratch / f"{info.id}.csv"
        cache.export_table(info.id, csv, "csv")
        jsonl = scratch / f"{info.id}.jsonl"
        write_paper_jsonl(cache, info.id, jsonl)
        found[f"{info.id}.csv"] = csv.read_bytes()
        found[f"{info.id}.jsonl"] = jsonl.read_bytes()
        found[f"{info.id}.status"] = info.status.encode()
    return found


@pytest.fixture(scope="module")
def canary(tmp_path_factory, model_folder):  # noqa: F811
    """A cache with a computed run (the small llama on 3 samples) and a synthetic one."""
    root = tmp_path_factory.mktemp("canary")
    dataset = write_dataset(root / "toy", 3, "toy_no_cot")
    db = root / "canary.duckdb"
    compute = ("--model", str(model_folder), "--dataset", str(dataset), "--batch-size", "2",
               "--max-length", "64", "--db", str(db), "--quiet")  # fmt: skip
    assert cli.main(["compute", *compute]) == 0
    fill_run(ResultsCache(db), "synthetic", 6, spectra=True)
    runs = ResultsCache(db).runs()
    computed = next(i.id for i in runs if i.model != "synthetic")
    ResultsCache(db).checkpoint()
    reference = exports(db, root / "reference")
    assert len(reference) == 6
    return db, dataset, computed, compute[:-3], reference


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, canary, model_folder, tmp_path, monkeypatch, capsys):  # noqa: F811
    canary_db, dataset, computed, compute_argv, reference = canary
    db = tmp_path / "cache.duckdb"
    shutil.copyfile(canary_db, db)
    world = World(
        root=tmp_path / "world",
        db=db,
        model=model_folder,
        dataset=dataset,
        computed_run=computed,
        compute_argv=compute_argv,
    )
    world.root.mkdir()
    monkeypatch.chdir(world.root)
    monkeypatch.delenv("LAYERSCOPE_DEBUG", raising=False)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    if case.prepare is not None:
        case.prepare(world)
    capsys.readouterr()
    status = cli.main([str(a) for a in case.argv(world)])
    _out, err = capsys.readouterr()
    for name in case.env:
        monkeypatch.delenv(name)
    assert "Traceback" not in err
    *stages, error = err.strip().splitlines()
    # Before the error, only the loading stages a compute had begun ("loading weights…").
    assert all(STAGE_LINE.fullmatch(line) for line in stages), f"more than one line:\n{err}"
    assert error.startswith("layerscope: error: "), error
    assert "internal error" not in error, error
    for fragment in case.expected(world):
        assert fragment in error, f"{fragment!r} not in {error!r}"
    assert status == case.status, error
    after = exports(db, tmp_path / "after")
    assert after == reference, "the canary cache changed"


def test_catalogue_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    json.dumps(ids)
