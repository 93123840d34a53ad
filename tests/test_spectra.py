"""Spectra: the mean singular value by rank per layer (analysis), ``show --spectra`` (CLI) and
the Chart tab's spectra view (explorer).

Every mean is checked against numpy in float64 on constructed spectra of different lengths (a
sample with fewer values does not count at the ranks it lacks), stored unsorted and with a NaN
so that the sorting and the leaving out are tested too.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from cache_helpers import batch, fill_run, make_result, make_samples, run_id_for, targets

from layerscope.analysis.base.records import RunHeader
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.results.spectra import run_spectra, spread_layers

LAYERS = 4
SAMPLES = 5


def spectrum_of(rng: np.random.Generator, index: int) -> list[float]:
    """A sample's singular values, as many as its "tokens" (3 to 7), not sorted."""
    return [float(v) for v in rng.lognormal(0.0, 1.0, size=3 + index % 5)]


@pytest.fixture
def cache(tmp_path):
    return ResultsCache(tmp_path / "results.duckdb", lock_timeout=5)


def constructed_run(cache: ResultsCache, name: str = "spectra") -> tuple[str, dict]:
    """A run whose spectra are random, of different lengths, one with a NaN; returns its id and
    the spectra as stored: ``{(index, layer, projection): values}``."""
    rng = np.random.default_rng(7)
    run_id = run_id_for(name)
    cache.begin_run(
        RunHeader(
            run_id,
            model="synthetic",
            dataset="math",
            response_type="none_cot",
            mode="base",
            samples_total=SAMPLES,
            targets=targets(LAYERS),
            settings={"max_length": 1024, "spectra": True},
            provenance={"layerscope": "test"},
        )
    )
    stored: dict[tuple[int, int, str], list[float]] = {}
    results = []
    for index in range(SAMPLES):
        result = make_result(index, LAYERS)
        matrices = []
        for matrix in result.matrices:
            values = spectrum_of(rng, index + matrix.layer)
            if (index, matrix.layer, matrix.projection) == (2, 1, "q"):
                values[1] = math.nan
            stored[(index, matrix.layer, matrix.projection)] = values
            matrices.append(replace(matrix, spectrum=values))
        results.append(replace(result, matrices=matrices))
    cache.write_batch(run_id, batch(results), make_samples(SAMPLES))
    cache.finish_run(run_id, "complete")
    return run_id, stored


def reference(stored: dict, layer: int, projection: str) -> tuple[list[float], list[int]]:
    """Mean of the k-th largest finite value over the samples that have one, in float64."""
    spectra = [
        np.sort(np.asarray(v, dtype=np.float64)[np.isfinite(v)])[::-1]
        for (_i, lay, p), v in sorted(stored.items())
        if lay == layer and p == projection
    ]
    longest = max(len(s) for s in spectra)
    means, counts = [], []
    for k in range(longest):
        at_k = np.array([s[k] for s in spectra if len(s) > k], dtype=np.float64)
        means.append(float(at_k.mean()))
        counts.append(len(at_k))
    return means, counts


def test_mean_spectrum_by_rank_matches_numpy(cache):
    run_id, stored = constructed_run(cache)
    for projection in ("q", "o"):
        spectra = run_spectra(cache, run_id, projection)
        assert [s.layer for s in spectra] == list(range(LAYERS))
        for spectrum in spectra:
            means, counts = reference(stored, spectrum.layer, projection)
            assert spectrum.samples == counts
            np.testing.assert_allclose(spectrum.means, means, rtol=1e-6)  # stored as REAL
    # the NaN is left out: at layer 1 of q, sample 2 has one value fewer
    with_nan = run_spectra(cache, run_id, "q", layers=(1, 1))
    assert [s.layer for s in with_nan] == [1]
    assert sum(with_nan[0].samples) == sum(
        np.isfinite(v).sum() for (_i, lay, p), v in stored.items() if (lay, p) == (1, "q")
    )


def test_a_run_without_spectra_has_none(cache):
    run_id = fill_run(cache, "plain", 3, LAYERS, spectra=False)
    assert run_spectra(cache, run_id, "q") == []
    with pytest.raises(ValueError, match="no projection 'gate'"):
        run_spectra(cache, run_id, "gate")


def test_spread_layers_keeps_ends_and_at_most_eight():
    assert spread_layers(range(4)) == [0, 1, 2, 3]
    chosen = spread_layers(range(32))
    assert len(chosen) == 8 and chosen[0] == 0 and chosen[-1] == 31
    assert chosen == sorted(chosen)


def test_imported_s_list_is_drawn(cache, tmp_path):
    from cache_helpers import paper_matrices

    from layerscope.analysis.interchange.paper_ingest import import_paper_jsonl

    path = tmp_path / "stats.jsonl"
    lines = []
    for index, spectrum in enumerate(([4.0, 2.0, 1.0], [6.0, 1.0, 0.5])):
        line = {"instruction": f"Q{index}", "output": f"A{index}", "loss": 1.0}
        line.update(paper_matrices(2, spectrum[-1], spectrum))
        lines.append(json.dumps(line))
    path.write_text("\n".join(lines) + "\n")
    imported = import_paper_jsonl(cache, path, model="m", dataset="d", response_type="t")
    (layer0, layer1) = run_spectra(cache, imported.info.id, "k")
    assert layer0.means == pytest.approx([5.0, 1.5, 0.75]) and layer0.samples == [2, 2, 2]
    assert layer1.means == layer0.means


# ---- CLI --------------------------------------------------------------------------------------


def cli(capsys, *argv) -> tuple[int, str, str]:
    from layerscope.app.cli import main

    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_show_spectra_draws_chosen_layers_log_log_and_json_carries_the_numbers(
    capsys, cache, tmp_path
):
    run_id, stored = constructed_run(cache)
    db = cache.path
    status, out, err = cli(
        capsys, "show", run_id[:10], "--spectra", "--proj", "q", "--layers", "1-2",
        "--width", "70", "--db", db,
    )  # fmt: skip
    assert status == 0, err
    assert "none_cot · q · mean σ by rank (5 samples)" in out
    assert "• layer 1  + layer 2" in out  # legend: one marker per layer
    assert "layer 0" not in out and "layer 3" not in out
    assert "rank" in out
    status, out, err = cli(capsys, "show", run_id, "--spectra", "--proj", "o", "--json", "--db", db)
    assert status == 0, err
    records = json.loads(out)["spectra"]
    assert [r["layer"] for r in records] == list(range(LAYERS))
    for record in records:
        means, counts = reference(stored, record["layer"], "o")
        assert record["projection"] == "o" and record["rank"] == list(range(1, len(means) + 1))
        assert record["samples"] == counts
        np.testing.assert_allclose(record["mean"], means, rtol=1e-6)


def test_show_spectra_of_a_run_without_them_says_how_to_compute_them(capsys, cache):
    run_id = fill_run(cache, "plain", 3, LAYERS, spectra=False)
    status, out, err = cli(capsys, "show", run_id, "--spectra", "--db", cache.path)
    assert status != 0 and out == ""
    assert err.count("\n") == 1
    assert "kept no singular-value spectra" in err and "compute ... --spectra" in err


def test_show_layers_are_checked(capsys, cache):
    run_id, _ = constructed_run(cache)
    status, _, err = cli(
        capsys, "show", run_id, "--spectra", "--layers", "9-12", "--db", cache.path
    )
    assert status == 2 and "--layers 9-12" in err and "layers 0-3" in err
    status, _, err = cli(capsys, "show", run_id, "--layers", "1-2", "--db", cache.path)
    assert status == 2 and "only with --spectra" in err


# ---- explorer ---------------------------------------------------------------------------------


async def test_chart_tab_w_shows_the_first_runs_spectra_by_layer(tmp_path, monkeypatch):
    from test_tui_browse import compare, settle

    from layerscope.app.tui.app import LayerscopeApp
    from layerscope.app.tui.widgets.chart.compare_view import ComparePane
    from layerscope.app.tui.widgets.chart.layer_chart import LayerChart
    from layerscope.app.tui.widgets.chart.spectrum_chart import SpectrumChart

    db = tmp_path / "results.duckdb"
    monkeypatch.setenv("LAYERSCOPE_DB", str(db))
    monkeypatch.setenv("LAYERSCOPE_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    cache = ResultsCache(db)
    with_spectra, stored = constructed_run(cache)
    without = fill_run(cache, "plain", 3, LAYERS, spectra=False, response_type="detailed_cot")
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [with_spectra, without])
        await pilot.press("w")
        await settle(app, pilot)
        chart = app.query_one(SpectrumChart)
        assert chart.display and not app.query_one(LayerChart).display
        assert [s.layer for s in chart.spectra] == list(range(LAYERS))
        for spectrum in chart.spectra:
            assert spectrum.projection == "q"  # the first projection shown
            means, counts = reference(stored, spectrum.layer, "q")
            np.testing.assert_allclose(spectrum.means, means, rtol=1e-6)
            assert spectrum.samples == counts
        drawn = chart.as_text(100, 24)
        assert "none_cot · q · mean σ by rank (5 samples)" in drawn
        assert "•• layer 0 ++ layer 1 xx layer 2 oo layer 3" in drawn
        assert "w: spectra" in str(app.query_one("#chart-status").render())
        assert "mean σ by rank" in app.query_one(ComparePane).export_chart_text()
        # the key is in the help's Chart tab section, with what it does
        from layerscope.app.tui.commands import help_sections

        chart_keys = dict(help_sections(app))["Chart tab"]
        (key,) = [b for b in chart_keys if b.id == "chart.spectra"]
        assert key.key == "w" and key.tooltip.startswith("Singular-value spectra of the first")
        # a first run without spectra says how to get them
        pane = app.query_one(ComparePane)
        pane.show_runs([without, with_spectra])
        await settle(app, pilot)
        assert chart.spectra == []
        assert "No spectra in run" in chart.as_text() and "computed without them" in chart.as_text()
        text = chart.as_text()
        assert "layerscope compute --spectra" in text and "Setup: spectra" in text
        await pilot.press("w")
        await settle(app, pilot)
        assert app.query_one(LayerChart).display and not chart.display


def test_decade_ticks_label_powers_of_ten_across_the_range():
    from layerscope.app.charts import decade_ticks

    assert decade_ticks([0.5, 0.2]) is None  # under two decades: plotext's own ticks
    ticks, labels = decade_ticks([0.54, 3e-5, 1e-12, 0.0, math.nan])
    assert labels[0] == "1e-12" and labels[-1] == "1e0" and len(ticks) <= 8
    assert all(math.isclose(t, 10.0 ** int(lab[2:])) for t, lab in zip(ticks, labels, strict=True))
