"""The follow-up paper's per-sample files (arXiv 2504.10766): ``S_list`` in place of
``S_sum``/``S_max``, and the cosines ``cosine_sim`` and ``cosine_sim_qkvo``, through import and
export with every key kept; and the per-sample cosines of a computed run in the same format.

The lines are built with the structure of the follow-up's own files (its repository's
``dict_structure.txt``: four projections per layer with M_mean, M_max, M_min, frobenius_norm and
S_list, then cosine_sim per projection and cosine_sim_qkvo per layer), from random gradients so
that every number has a float64 reference computed here with numpy.
"""

from __future__ import annotations

import json
import math

import duckdb
import numpy as np
import pytest

from layerscope.analysis.cache import ResultsCache, migrations
from layerscope.analysis.cache import schema as cache_schema
from layerscope.analysis.interchange.paper_export import write_paper_jsonl
from layerscope.analysis.interchange.paper_ingest import import_paper_jsonl
from layerscope.analysis.interchange.paper_schema import PaperFormatError

LAYERS = 3
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def _cosines(vectors: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(vectors)
    norms = np.linalg.norm(stacked, axis=1)
    return (stacked @ stacked.T) / np.outer(norms, norms)


def follow_up_line(rng: np.random.Generator, index: int) -> dict:
    """One line as the follow-up writes it, from random 6 x 4 "gradients"."""
    gradients = {
        (layer, p): rng.standard_normal((6, 4)) for layer in range(LAYERS) for p in PROJECTIONS
    }
    record: dict = {
        "instruction": f"Question {index}?",
        "output": f"Answer {index}.",
        "loss": float(rng.uniform(0.5, 3.0)),
    }
    for layer in range(LAYERS):
        for p in PROJECTIONS:
            g = gradients[(layer, p)]
            record[f"model.layers.{layer}.self_attn.{p}.weight"] = {
                "M_mean": float(g.mean()),
                "M_max": float(g.max()),
                "M_min": float(g.min()),
                "frobenius_norm": float(np.linalg.norm(g)),
                "S_list": [float(s) for s in np.linalg.svd(g, compute_uv=False)],
            }
    record["cosine_sim"] = {
        p: {
            "layer_indices": list(range(LAYERS)),
            "matrix": _cosines([gradients[(i, p)].ravel() for i in range(LAYERS)]).tolist(),
        }
        for p in PROJECTIONS
    }
    record["cosine_sim_qkvo"] = {
        str(layer): {
            "q_proj_x_o_proj": float(
                _cosines(
                    [gradients[(layer, "q_proj")].ravel(), gradients[(layer, "o_proj")].ravel()]
                )[0, 1]
            ),
            "k_proj_x_v_proj": float(
                _cosines(
                    [gradients[(layer, "k_proj")].ravel(), gradients[(layer, "v_proj")].ravel()]
                )[0, 1]
            ),
        }
        for layer in range(LAYERS)
    }
    return record


@pytest.fixture
def cache(tmp_path):
    return ResultsCache(tmp_path / "c.duckdb", lock_timeout=5)


@pytest.fixture
def lines():
    rng = np.random.default_rng(7)
    return [follow_up_line(rng, i) for i in range(4)]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _import(cache, path, **names):
    return import_paper_jsonl(
        cache,
        path,
        model=names.get("model", "qwen2.5_7b"),
        dataset="wiz_10k",
        response_type=names.get("response_type", "highest_200"),
    ).info


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_kept(original, exported, where="line"):
    """Every key of ``original`` is in ``exported`` with the same value (numbers to float32)."""
    if isinstance(original, dict):
        assert isinstance(exported, dict), where
        missing = set(original) - set(exported)
        assert not missing, f"{where}: lost {sorted(missing)}"
        for key, value in original.items():
            assert_kept(value, exported[key], f"{where}.{key}")
    elif isinstance(original, list):
        assert isinstance(exported, list) and len(exported) == len(original), where
        for i, (a, b) in enumerate(zip(original, exported, strict=True)):
            assert_kept(a, b, f"{where}[{i}]")
    elif isinstance(original, float):
        assert exported == pytest.approx(original, rel=1e-6, abs=1e-7), where
    else:
        assert exported == original, where


def test_a_follow_up_file_round_trips_through_import_and_export_with_every_key(
    cache, tmp_path, lines
):
    info = _import(cache, _write(tmp_path / "follow_up.jsonl", lines))
    assert (info.status, info.samples_done, info.layers) == ("complete", 4, LAYERS)
    out = tmp_path / "exported.jsonl"
    assert write_paper_jsonl(cache, info.id, out) == 4
    exported = _read(out)
    for number, (original, written) in enumerate(zip(lines, exported, strict=True)):
        assert_kept(original, written, f"line {number + 1}")
        # What the export adds: the paper's own S_sum/S_max/S_min, and layerscope's metadata.
        assert set(written) - set(original) == {"layerscope"}
        for key, entry in original.items():
            if key.startswith("model.layers."):
                added = written[key]
                assert set(added) - set(entry) == {"S_sum", "S_max", "S_min"}
                spectrum = np.array(entry["S_list"])
                assert added["S_sum"] == pytest.approx(spectrum.sum(), rel=1e-6)
                assert added["S_max"] == pytest.approx(spectrum.max(), rel=1e-6)
                assert added["S_min"] == pytest.approx(spectrum.min(), rel=1e-6)
    # And the export imports again as the same numbers.
    again = _import(cache, out, model="again")
    for metric in ("nuclear_norm", "effective_rank", "stable_rank", "mean"):
        first, second = cache.curves([info.id, again.id], metric, ["q"])
        assert second.mean == pytest.approx(first.mean, rel=1e-6)
    assert (
        _read(_export(cache, again.id, tmp_path / "twice.jsonl"))[0]["cosine_sim"]
        == (exported[0]["cosine_sim"])
    )


def _export(cache, run_id, path):
    write_paper_jsonl(cache, run_id, path)
    return path


def test_statistics_from_the_spectrum_alone_match_numpy(cache, tmp_path, lines):
    info = _import(cache, _write(tmp_path / "f.jsonl", lines))
    spectra = [
        np.array(line[f"model.layers.{layer}.self_attn.k_proj.weight"]["S_list"])
        for line in lines
        for layer in range(LAYERS)
    ]
    by_layer = [spectra[layer::LAYERS] for layer in range(LAYERS)]

    def curve(metric):
        return cache.curves([info.id], metric, ["k"])[0].mean

    def reference(statistic):
        return [np.mean([statistic(s) for s in layer]) for layer in by_layer]

    def entropy_rank(s):
        p = s / s.sum()
        return math.exp(-(p * np.log(p)).sum())

    assert curve("nuclear_norm") == pytest.approx(reference(np.sum), rel=1e-6)
    assert curve("sigma_max") == pytest.approx(reference(np.max), rel=1e-6)
    assert curve("sigma_min") == pytest.approx(reference(np.min), rel=1e-6)
    assert curve("sigma1_ratio") == pytest.approx(reference(lambda s: s.max() / s.sum()), rel=1e-5)
    assert curve("effective_rank") == pytest.approx(reference(entropy_rank), rel=1e-6)
    assert curve("stable_rank") == pytest.approx(
        reference(lambda s: (s**2).sum() / s.max() ** 2), rel=1e-5
    )


def test_imported_cosines_are_the_runs_mean_cosines(cache, tmp_path, lines):
    info = _import(cache, _write(tmp_path / "f.jsonl", lines))
    for p in PROJECTIONS:
        expected = np.mean([line["cosine_sim"][p]["matrix"] for line in lines], axis=0)
        assert np.allclose(cache.layer_cosines(info.id, p[0]), expected, atol=1e-7)
    for pair, key in (("q-o", "q_proj_x_o_proj"), ("k-v", "k_proj_x_v_proj")):
        expected = [
            np.mean([line["cosine_sim_qkvo"][str(layer)][key] for line in lines])
            for layer in range(LAYERS)
        ]
        assert cache.pair_cosines(info.id, pair) == pytest.approx(expected, abs=1e-7)
    assert info.settings["cosines"] is True


def test_undefined_cosines_are_null_in_and_out(cache, tmp_path, lines):
    lines[0]["cosine_sim"]["v_proj"]["matrix"][1][2] = None
    lines[0]["cosine_sim_qkvo"]["2"]["k_proj_x_v_proj"] = None
    info = _import(cache, _write(tmp_path / "f.jsonl", lines))
    [first, *_rest] = _read(_export(cache, info.id, tmp_path / "out.jsonl"))
    assert first["cosine_sim"]["v_proj"]["matrix"][1][2] is None
    assert first["cosine_sim_qkvo"]["2"]["k_proj_x_v_proj"] is None
    # The mean leaves the undefined cosine out: the other three samples' mean.
    mean = cache.layer_cosines(info.id, "v")[1][2]
    expected = np.mean([line["cosine_sim"]["v_proj"]["matrix"][1][2] for line in lines[1:]])
    assert mean == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(cosine_sim=[1, 2]), "cosine_sim must be an object, got a list"),
        (
            lambda r: r["cosine_sim"].update(w_proj=r["cosine_sim"]["q_proj"]),
            "cosine_sim.w_proj is not a projection "
            "(q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)",
        ),
        (
            lambda r: r["cosine_sim"]["k_proj"]["matrix"].pop(),
            "cosine_sim.k_proj.matrix must be 3 lists of 3 numbers",
        ),
        (
            lambda r: r["cosine_sim"]["k_proj"].update(layer_indices=[0, 1, 1]),
            "cosine_sim.k_proj.layer_indices repeats a layer",
        ),
        (
            lambda r: r["cosine_sim"]["o_proj"]["matrix"][0].__setitem__(1, "high"),
            'cosine_sim.o_proj.matrix must be a number, got a string "high"',
        ),
        (
            lambda r: r["cosine_sim_qkvo"].update(top={"q_proj_x_o_proj": 0.1}),
            'cosine_sim_qkvo key must be a layer number from 0 to 32767, got a string "top"',
        ),
        (
            lambda r: r["cosine_sim_qkvo"]["1"].update(q_proj_x_k_proj=0.1),
            "cosine_sim_qkvo.1.q_proj_x_k_proj is not q_proj_x_o_proj or k_proj_x_v_proj",
        ),
    ],
)
def test_malformed_cosines_name_the_line_and_key_and_store_nothing(
    cache, tmp_path, lines, change, message
):
    change(lines[2])
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(PaperFormatError) as caught:
        _import(cache, path)
    assert str(caught.value).startswith(f"{path}:3: {message}")
    assert "\n" not in str(caught.value)
    assert cache.runs() == []


def test_a_line_with_neither_s_sum_nor_s_list_is_refused(cache, tmp_path, lines):
    del lines[0]["model.layers.1.self_attn.q_proj.weight"]["S_list"]
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(PaperFormatError, match=r":1: .*q_proj.weight has no S_sum \(nor S_list\)"):
        _import(cache, path)


def test_a_computed_run_exports_its_own_cosines_in_the_follow_ups_layout(tmp_path):
    """The engine's per-sample cosines reach the export: per projection the L x L matrix (1 on
    the diagonal) and per layer q-o and k-v, and they average to the run's stored means."""
    from layerscope.analysis.runs.runner import RunRequest, execute

    db = tmp_path / "c.duckdb"
    request = RunRequest.from_settings("tiny", "math", ["none_cot"], {"limit": 3, "max_length": 64})
    updates = list(execute(request, db))
    assert updates[-1].status == "complete", updates[-1].message
    cache = ResultsCache(db)
    run = cache.run(updates[-1].run_id)
    records = _read(_export(cache, run.id, tmp_path / "out.jsonl"))
    assert len(records) == 3
    for p in "qkvo":
        blocks = [r["cosine_sim"][f"{p}_proj"] for r in records]
        assert all(b["layer_indices"] == list(range(run.layers)) for b in blocks)
        matrices = np.array([b["matrix"] for b in blocks], dtype=float)
        assert np.allclose(np.diagonal(matrices, axis1=1, axis2=2), 1.0, atol=1e-6)
        assert np.allclose(matrices.mean(axis=0), cache.layer_cosines(run.id, p), atol=1e-6)
    assert set(records[0]["cosine_sim_qkvo"]) == {str(i) for i in range(run.layers)}
    q_o = [np.mean([r["cosine_sim_qkvo"][str(i)]["q_proj_x_o_proj"] for r in records])
           for i in range(run.layers)]  # fmt: skip
    assert q_o == pytest.approx(cache.pair_cosines(run.id, "q-o"), abs=1e-6)


def test_a_cache_from_before_per_sample_cosines_is_upgraded_and_exports_without_them(tmp_path):
    """A version-2 file (cosines only as run sums) opens, upgrades to the current version, and its runs
    export as before: no cosine keys, nothing invented."""
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        migrations.apply_migrations(con, 0, 2)
        con.execute(
            "INSERT INTO runs VALUES (1, ?, 'm', 'd', 't', 'base', 'complete', 1, 1, ['q'], "
            "'{}', '{}', now()::TIMESTAMP, NULL, NULL, NULL)",
            ["a" * 64],
        )
        con.execute("INSERT INTO samples VALUES (1, 0, 2.0, 3, 4, 'i', '', 'o')")
        con.execute(
            "INSERT INTO statistics (run_no, sample_index, layer, projection, nuclear_norm, "
            "sigma_max) VALUES (1, 0, 0, 'q', 5.0, 4.0)"
        )
        con.execute("INSERT INTO cosine_sums VALUES (1, 'layers', 'q', 1, [1.0], [1])")
    cache = ResultsCache(path, lock_timeout=5)
    assert cache.layer_cosines("a" * 64, "q") == [[1.0]]
    [record] = _read(_export(cache, "a" * 64, tmp_path / "out.jsonl"))
    assert "cosine_sim" not in record and "cosine_sim_qkvo" not in record
    assert record["layers.0.q_proj.weight"]["S_sum"] == 5.0
    with duckdb.connect(str(path), read_only=True) as con:
        version = con.execute(
            "SELECT value FROM layerscope_meta WHERE key = 'schema_version'"
        ).fetchone()
    assert version == (str(cache_schema.SCHEMA_VERSION),) == ("6",)


# ---- the adjacent-layer cosine as a chart statistic ------------------------------------------


def test_the_adjacent_layer_cosine_curve_is_the_mean_of_matrix_i_i_plus_1(cache, tmp_path, lines):
    """Mean, standard deviation and count by layer i of matrix[i][i+1], as numpy computes them
    from the file; a sample with an undefined one at some layer leaves that projection's curve
    (the rule of every other statistic) and is counted."""
    lines[1]["cosine_sim"]["o_proj"]["matrix"][0][1] = None
    info = _import(cache, _write(tmp_path / "f.jsonl", lines))
    curves = {c.projection: c for c in cache.curves([info.id], "adjacent_cosine")}
    assert set(curves) == {"q", "k", "v", "o"}
    for p in PROJECTIONS:
        kept = [line for line in lines if line["cosine_sim"][p]["matrix"][0][1] is not None]
        values = np.array(
            [
                [line["cosine_sim"][p]["matrix"][i][i + 1] for i in range(LAYERS - 1)]
                for line in kept
            ]
        )
        curve = curves[p[0]]
        assert curve.layers == list(range(LAYERS - 1))
        assert curve.mean == pytest.approx(values.mean(axis=0).tolist(), abs=1e-6)
        assert curve.std == pytest.approx(values.std(axis=0, ddof=1).tolist(), abs=1e-6)
        assert curve.count == [len(kept)] * (LAYERS - 1)
        assert curve.excluded_nonfinite == (1 if p == "o_proj" else 0)


def test_the_adjacent_layer_cosine_is_a_metric_by_name_and_alias(cache, tmp_path, lines):
    from layerscope.analysis.results.compare import resolve_metric
    from layerscope.app.tui.widgets.chart.chart_view import STATISTICS

    assert resolve_metric("adjacent") == resolve_metric("adjacent-cosine") == "adjacent_cosine"
    assert "adjacent_cosine" in STATISTICS
    # A run without per-sample cosines has no such curve (nothing is made up).
    del lines[0]["cosine_sim"], lines[1]["cosine_sim"], lines[2]["cosine_sim"]
    del lines[3]["cosine_sim"]
    info = _import(cache, _write(tmp_path / "f.jsonl", lines))
    assert cache.curves([info.id], "adjacent_cosine") == []


@pytest.fixture
def synthetic_cache(tmp_path, monkeypatch):
    """The explorer's synthetic cache (tests/tui_synthetic.py): runs with per-sample cosines."""
    from tui_synthetic import fill_cache

    db = tmp_path / "results.duckdb"
    monkeypatch.setenv("LAYERSCOPE_DB", str(db))
    monkeypatch.setenv("LAYERSCOPE_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    runs = fill_cache(db)
    return db, [runs["none_cot"], runs["detailed_cot"]]


async def _chart_of_adjacent_cosines(app, pilot, chosen):
    from test_tui_browse import compare, settle

    from layerscope.app.tui.widgets.chart.layer_chart import LayerChart

    await settle(app, pilot)
    await compare(app, pilot, chosen)
    chart = app.query_one(LayerChart)
    for _ in range(20):  # backwards (S): the cosine is next to last, each step a reload
        if chart.metric == "adjacent_cosine":
            break
        await pilot.press("S")
        await settle(app, pilot)
    assert chart.metric == "adjacent_cosine"
    return chart


async def test_the_explorers_statistic_cycle_reaches_the_adjacent_layer_cosine(synthetic_cache):
    from tui_synthetic import LAYERS as SYNTHETIC_LAYERS

    from layerscope.app.tui.app import LayerscopeApp

    db, chosen = synthetic_cache
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=(100, 32)) as pilot:
        chart = await _chart_of_adjacent_cosines(app, pilot, chosen)
        expected = {
            (c.run_id, c.projection): c.mean
            for c in ResultsCache(db).curves(chosen, "adjacent_cosine")
        }
        assert chart.series and len(chart.series) == len(expected), chart.placeholder
        for series in chart.series:
            assert series.layers == list(range(SYNTHETIC_LAYERS - 1))
        assert sorted(s.mean for s in chart.series) == sorted(expected.values())
        assert "adjacent_cosine" in chart.as_text(100, 24)


async def test_runs_without_per_sample_cosines_say_why_the_chart_is_empty(synthetic_cache):
    from layerscope.app.tui.app import LayerscopeApp

    db, chosen = synthetic_cache
    with duckdb.connect(str(db)) as con:  # as a run stored before schema version 4
        con.execute("DELETE FROM sample_cosines")
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=(100, 32)) as pilot:
        chart = await _chart_of_adjacent_cosines(app, pilot, chosen)
        assert not chart.series
        assert "No per-sample cosines in these runs" in chart.as_text(100, 24)


def test_differences_of_adjacent_cosines_are_tested_at_their_own_layers(synthetic_cache):
    """The adjacent-layer cosine has L - 1 layers: its tests are there, over every sample
    (the last layer, which has no next one, must not drop them all), and match scipy."""
    from scipy import stats
    from tui_synthetic import LAYERS as SYNTHETIC_LAYERS

    from layerscope.analysis.results.compare import compare_runs

    db, (a, b) = synthetic_cache
    cache = ResultsCache(db)
    comparison = compare_runs(cache, [a, b], "adjacent_cosine", ["q"])
    [row] = comparison.significance
    assert [t.layer for t in row.layers] == list(range(SYNTHETIC_LAYERS - 1))
    values_a = cache.sample_values(a, "adjacent_cosine", ["q"])["q"]
    values_b = cache.sample_values(b, "adjacent_cosine", ["q"])["q"]
    first = row.layers[0]
    if row.test.startswith("paired"):
        common = sorted(set(values_a) & set(values_b))
        assert first.n_a == len(common) > 2
        expected = stats.ttest_rel(
            [values_b[i][0] for i in common], [values_a[i][0] for i in common]
        )
    else:
        assert first.n_a == len(values_a) > 2
        expected = stats.ttest_ind(
            [v[0] for v in values_b.values()], [v[0] for v in values_a.values()], equal_var=False
        )
    assert math.isclose(first.p_value, float(expected.pvalue), rel_tol=1e-6)
