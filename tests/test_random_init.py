"""The random-initialisation baseline (``--init random [--seed S]``): the same architecture with
freshly initialised weights, keyed by init and seed, reproducible, and named as such."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from modelkit import make_model, make_tokenizer

from layerscope.analysis.base.records import ComputeSettings
from layerscope.analysis.base.setting_schema import SettingError
from layerscope.analysis.base.settings import setting
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.runs.planning import RunRequest, plan
from layerscope.analysis.runs.runner import execute
from layerscope.app.cli.grammar import build_parser
from layerscope.app.labels import full_label, run_labels, run_settings

PRETRAINED_SEED = 1234


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    # Its "pretrained" weights: those of seed 1234, which no test draws as a random init.
    folder = tmp_path_factory.mktemp("models") / "small-llama"
    make_model("llama", seed=PRETRAINED_SEED).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    records = [
        {"instruction": f"What is {i} + {i + 1}?", "output": f"{i} + {i + 1} = {2 * i + 1}."}
        for i in range(3)
    ]
    file = folder / "arith.json"
    file.write_text(json.dumps(records))
    return file


def _request(model_folder, data_file, **settings):
    base = ComputeSettings(batch_size=3, max_length=64)
    return RunRequest(
        model=str(model_folder), dataset=data_file, settings=replace(base, **settings)
    )


def _run(model_folder, data_file, db, **settings):
    """Compute the request; its run id and its mean nuclear-norm curve of q."""
    updates = list(execute(_request(model_folder, data_file, **settings), db))
    assert updates[-1].status == "complete", updates[-1].message
    run_id = updates[-1].run_id
    (curve,) = ResultsCache(db).curves([run_id], "nuclear_norm", ["q"])
    return run_id, curve.mean


@pytest.fixture(scope="module")
def computed(model_folder, data_file, tmp_path_factory):
    db = tmp_path_factory.mktemp("cache") / "cache.duckdb"
    runs = {
        "pretrained": _run(model_folder, data_file, db),
        "seed 0": _run(model_folder, data_file, db, init="random", init_seed=0),
        "seed 0 again": None,
        "seed 1": _run(model_folder, data_file, db, init="random", init_seed=1),
        "seed 1234": _run(model_folder, data_file, db, init="random", init_seed=PRETRAINED_SEED),
    }
    cache_before = ResultsCache(db).runs()
    # The same seed a second time: the same key, found in the cache, nothing computed.
    again = list(execute(_request(model_folder, data_file, init="random", init_seed=0), db))
    runs["seed 0 again"] = (again[-1].run_id, None)
    assert [u.status for u in again] == ["cached"]
    assert len(ResultsCache(db).runs()) == len(cache_before)
    return db, runs


def _close(a, b):
    return all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(a, b, strict=True))


def test_a_random_init_differs_from_the_pretrained_run(computed):
    _db, runs = computed
    pretrained_id, pretrained = runs["pretrained"]
    random_id, random = runs["seed 0"]
    assert random_id != pretrained_id
    assert not _close(pretrained, random)


def test_a_seed_gives_the_same_numbers_and_another_seed_other_numbers(
    computed, model_folder, data_file, tmp_path
):
    _db, runs = computed
    assert runs["seed 0 again"][0] == runs["seed 0"][0]
    assert runs["seed 1"][0] != runs["seed 0"][0]
    assert not _close(runs["seed 0"][1], runs["seed 1"][1])
    # Computed afresh in another cache, seed 0 gives the same numbers (and the same key).
    run_id, curve = _run(model_folder, data_file, tmp_path / "other.duckdb", init="random")
    assert run_id == runs["seed 0"][0]
    assert _close(curve, runs["seed 0"][1])
    # The init is from_config under manual_seed: with the seed the saved weights were made
    # with, it rebuilds them (a run of its own key, the numbers of the pretrained run).
    assert runs["seed 1234"][0] != runs["pretrained"][0]
    assert _close(runs["seed 1234"][1], runs["pretrained"][1])


def test_a_random_init_run_is_named_by_its_init_and_seed(computed):
    db, runs = computed
    cache = ResultsCache(db)
    random = cache.run(runs["seed 1"][0])
    pretrained = cache.run(runs["pretrained"][0])
    assert "random init, seed 1" in run_settings(random)
    assert "random init" not in run_settings(pretrained)
    assert full_label(random).endswith("(base, random init, seed 1)")
    labels = run_labels([pretrained, random])
    assert labels[pretrained.id] == "trained"
    assert labels[random.id] == "random init, seed 1"


def test_a_pretrained_run_keeps_the_key_it_had_before_inits_existed(model_folder, data_file):
    keyed = ComputeSettings().key_fields()
    assert "init" not in keyed and "init_seed" not in keyed
    assert ComputeSettings(init="random", init_seed=3).key_fields()["init_seed"] == 3
    # The seed of a pretrained run changes nothing.
    first = plan(_request(model_folder, data_file, init_seed=5), ":memory:")
    second = plan(_request(model_folder, data_file), ":memory:")
    assert first[0].run_id == second[0].run_id


def test_init_and_seed_are_offered_on_compute_check_and_the_form():
    chosen = ["--init", "random", "--seed", "7"]
    for line in (["compute", "--model", "tiny", "--dataset", "math"], ["check", "tiny"]):
        args = build_parser().parse_args([*line, *chosen])
        assert (args.init, args.init_seed) == ("random", 7)
    assert "form" in setting("init").surfaces and "form" in setting("init_seed").surfaces
    with pytest.raises(SettingError, match="at least 0"):
        setting("init_seed").parse("-1")
    with pytest.raises(SettingError, match="choose one of trained, random"):
        setting("init").check("scratch")


def test_check_with_a_random_init_says_so_in_its_title(tmp_path, capsys, monkeypatch):
    from layerscope.app import cli

    monkeypatch.setenv("COLUMNS", "100")
    db = tmp_path / "c.duckdb"
    command = ["check", "tiny", "--init", "random", "--seed", "2", "--limit", "2", "--db", str(db)]
    assert cli.main(command) == 0
    out = capsys.readouterr().out
    assert "nuclear_norm by layer, tiny, 2/type, random init, seed 2" in out
    assert all(run.settings["init_seed"] == 2 for run in ResultsCache(db).runs())
