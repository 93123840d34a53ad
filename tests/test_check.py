"""`check` as a quick look: rounds of 2, 4, 8 samples per type within a time budget, the model
loaded once, what it will do said first, and the profile on one screen."""

from __future__ import annotations

import math

import pytest
from test_runner import model_folder  # noqa: F401 (fixture)

from layerscope.analysis.base.records import LayerCurve
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.models import loading
from layerscope.analysis.results.profiles import next_round_cost, projection_means, rounds
from layerscope.app import cli
from layerscope.app.cli.arguments import duration

SCREEN = 40  # lines: a terminal of 40 rows shows the whole profile


@pytest.mark.parametrize(
    ("limit", "sizes"),
    [(1, [1]), (2, [2]), (5, [2, 4, 5]), (8, [2, 4, 8]), (20, [2, 4, 8, 16, 20])],
)
def test_rounds_double_up_to_the_limit(limit, sizes):
    assert rounds(limit) == sizes


def test_the_next_round_is_priced_at_each_types_rate():
    rates = {"none_cot": 1.0, "detailed_cot": 3.0}
    assert next_round_cost(rates, ["none_cot", "detailed_cot"], 2, 4) == 8.0
    # a type whose samples were all cached is priced at the slowest measured rate
    assert next_round_cost(rates, ["none_cot", "detailed_cot", "x"], 2, 4) == 14.0
    assert next_round_cost({}, ["none_cot"], 0, 2) == math.inf


def test_the_profiles_curve_is_the_mean_of_the_projections():
    curves = [
        LayerCurve("r", "q", [0, 1, 2], [1.0, 2.0, 3.0], [0.1] * 3, [4, 4, 4]),
        LayerCurve("r", "k", [0, 1, 2], [3.0, 4.0, 5.0], [0.1] * 3, [4, 3, 4]),
        LayerCurve("s", "q", [0, 1, 2], [9.0, 9.0, 9.0], [0.1] * 3, [2, 2, 2]),
    ]
    r, s = projection_means(curves, "q+k")
    assert (r.run_id, r.projection, r.mean, r.count) == ("r", "q+k", [2.0, 3.0, 4.0], [4, 3, 4])
    assert s.mean == [9.0, 9.0, 9.0]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("2m", 120.0), ("1.5h", 5400.0),
                          ("none", math.inf)]
)  # fmt: skip
def test_budgets_are_read_as_people_write_them(text, seconds):
    assert duration(text) == seconds


def check(capsys, model_folder, db, *extra):  # noqa: F811
    argv = ["check", str(model_folder), "--proj", "q,k", "--max-length", "512", "--db", str(db),
            "--width", "80", *extra]  # fmt: skip
    status = cli.main(argv)
    out, err = capsys.readouterr()
    assert status == 0, err
    return out, err


def test_a_spent_budget_stops_after_the_first_round_with_a_whole_profile(
    capsys,
    tmp_path,
    model_folder,  # noqa: F811
):
    # loading alone takes longer than a second, so only the first round (always run) fits
    out, err = check(capsys, model_folder, tmp_path / "c.duckdb", "--budget", "1s")
    assert err.startswith("check: 4 response types × up to 8 samples")
    assert "in rounds of 2, 4, 8 per type, within a budget of 1.0 s" in err
    assert "check: stopping at 2 samples per type: 4 would take about" in err
    assert len(out.splitlines()) <= SCREEN, out
    assert "2/type" in out and "(n=2)" in out
    counts = {
        info.response_type: info.samples_done for info in ResultsCache(tmp_path / "c.duckdb").runs()
    }
    assert counts == dict.fromkeys(
        ["none_cot", "detailed_cot", "none_cot_irrelevant", "detailed_cot_irrelevant"], 2
    )


def test_without_a_limit_on_time_every_round_runs_and_the_model_loads_once(
    capsys,
    tmp_path,
    model_folder,  # noqa: F811
    monkeypatch,
):
    loads = []
    real = loading.load_model

    def counted(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "load_model", counted)
    out, err = check(
        capsys, model_folder, tmp_path / "c.duckdb", "--budget", "none", "--limit", "5"
    )
    assert "within no time limit" in err
    for size in (2, 4, 5):
        assert f"check: {size} samples per type after" in err
    assert "stopping" not in err
    assert len(loads) == 1
    assert "5/type" in out and "(n=5)" in out and len(out.splitlines()) <= SCREEN
    assert max(len(line) for line in out.splitlines()) <= 80  # fits an 80-column terminal
    assert out.splitlines()[-1].startswith("full report: layerscope show ")
    assert {i.samples_done for i in ResultsCache(tmp_path / "c.duckdb").runs()} == {5}


def test_a_check_whose_first_rounds_are_cached_goes_on_to_the_rest(
    capsys,
    tmp_path,
    model_folder,  # noqa: F811
):
    db = tmp_path / "c.duckdb"
    check(capsys, model_folder, db, "--limit", "2")
    out, err = check(capsys, model_folder, db, "--limit", "4", "--budget", "10m")
    # the cached round measured nothing, so the next one runs to learn the rate
    assert "check: 4 samples per type after" in err and "stopping" not in err
    assert "4/type" in out
    assert "layers of 3 where b differs from a" in out
