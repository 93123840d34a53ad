"""The paper's MAD table (``layerscope table``) and the normalised-depth axis, for models of
different depths side by side.

References are numpy in float64 over the per-sample values written into the cache: the mean over
samples per layer, then the mean absolute difference of adjacent layers inside each segment,
with the paper's split points written out by hand (28 layers: 7/14/7, 42 layers: 12/18/12).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import numpy as np
import pytest
from cache_helpers import batch, make_result, make_samples, run_id_for, targets

from layerscope.analysis.base.records import RunHeader
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.results.compare import normalised_depth
from layerscope.analysis.results.tables import build_paper_table, render_table
from layerscope.app import cli

SAMPLES = 5
# The paper's splits, by hand: (early, middle, late) slices of the layer axis.
SPLITS = {
    28: (slice(0, 7), slice(7, 21), slice(21, 28)),
    42: (slice(0, 12), slice(12, 30), slice(30, 42)),
}


def varied_run(
    cache: ResultsCache,
    name: str,
    layers: int,
    *,
    model: str,
    response_type: str,
    mode: str = "base",
    seed: int = 0,
) -> tuple[str, dict[str, np.ndarray]]:
    """A run whose nuclear norms are random (samples x layers, per projection); returns its id
    and those values, for references to recompute from."""
    rng = np.random.default_rng(seed)
    # float32 values, as the cache stores them: the references start from what is stored
    values = {
        p: rng.uniform(1.0, 10.0, size=(SAMPLES, layers)).astype(np.float32).astype(np.float64)
        for p in "qkvo"
    }
    run_id = run_id_for(name)
    cache.begin_run(
        RunHeader(
            run_id,
            model=model,
            dataset="math",
            response_type=response_type,
            mode=mode,
            samples_total=SAMPLES,
            targets=targets(layers),
            settings={"max_length": 1024},
            provenance={"layerscope": "test"},
        )
    )
    results = [
        make_result(
            i,
            layers,
            overrides={
                (layer, p): {"nuclear_norm": float(values[p][i, layer])}
                for layer in range(layers)
                for p in "qkvo"
            },
        )
        for i in range(SAMPLES)
    ]
    cache.write_batch(run_id, batch(results), make_samples(SAMPLES))
    cache.finish_run(run_id, "complete")
    return run_id, values


def reference_mads(per_sample: np.ndarray) -> dict[str, float]:
    curve = per_sample.mean(axis=0)
    early, middle, late = SPLITS[len(curve)]
    return {
        "all": float(np.mean(np.abs(np.diff(curve)))),
        "early": float(np.mean(np.abs(np.diff(curve[early])))),
        "middle": float(np.mean(np.abs(np.diff(curve[middle])))),
        "late": float(np.mean(np.abs(np.diff(curve[late])))),
    }


@pytest.fixture
def two_depths(tmp_path):
    """Three runs of two models of different depths: 28 layers (fast and slow thinking) and
    42 layers (fast thinking)."""
    db = tmp_path / "c.duckdb"
    cache = ResultsCache(db)
    runs = {
        "shallow fast": varied_run(
            cache, "s-fast", 28, model="org/shallow-1.5B", response_type="none_cot", seed=1
        ),
        "shallow slow": varied_run(
            cache, "s-slow", 28, model="org/shallow-1.5B", response_type="detailed_cot", seed=2
        ),
        "deep fast": varied_run(
            cache, "d-fast", 42, model="org/deep-9B", response_type="none_cot", seed=3
        ),
    }
    return db, runs


def test_table_cells_are_the_mads_of_each_models_own_depth(two_depths):
    db, runs = two_depths
    cache = ResultsCache(db)
    ids = [run_id for run_id, _ in runs.values()]
    table = build_paper_table(cache, ids, "nuclear_norm", "k")
    assert table.columns == ["none_cot", "detailed_cot"]
    assert [(r.model, r.mode, r.layers) for r in table.rows] == [
        ("org/shallow-1.5B", "base", 28),
        ("org/deep-9B", "base", 42),
    ]
    shallow, deep = table.rows
    for row, column, name in (
        (shallow, "none_cot", "shallow fast"),
        (shallow, "detailed_cot", "shallow slow"),
        (deep, "none_cot", "deep fast"),
    ):
        expected = reference_mads(runs[name][1]["k"])
        cell = row.cells[column]
        for segment, value in expected.items():
            assert getattr(cell, segment) == pytest.approx(value, rel=1e-9), (name, segment)
    assert "detailed_cot" not in deep.cells  # no run: an empty cell, not a zero


def run_cli(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_table_command_writes_markdown_latex_and_csv(capsys, two_depths):
    db, runs = two_depths
    ids = [run_id[:10] for run_id, _ in runs.values()]
    status, out, err = run_cli(capsys, "table", *ids, "--proj", "q", "--format", "csv", "--db", db)
    assert status == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["model"], r["layers"]) for r in rows] == [("shallow-1.5B", "28"), ("deep-9B", "42")]
    for row, column, name in (
        (rows[0], "none_cot", "shallow fast"),
        (rows[0], "detailed_cot", "shallow slow"),
        (rows[1], "none_cot", "deep fast"),
    ):
        for segment, value in reference_mads(runs[name][1]["q"]).items():
            assert float(row[f"{column} {segment}"]) == pytest.approx(value, rel=1e-12)
        assert row[f"{column} n"] == str(SAMPLES)  # each run's sample count
    assert rows[1]["detailed_cot all"] == "" and rows[1]["detailed_cot n"] == ""

    status, out, err = run_cli(capsys, "table", *ids, "--format", "markdown", "--db", db)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("MAD over layers of nuclear_norm, q projection")
    header = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert header[:4] == ["model", "mode", "layers", "none_cot all"]
    assert header[4:8] == ["none_cot early", "none_cot middle", "none_cot late", "none_cot n"]
    assert len(header) == 3 + 2 * 5
    deep = [cell.strip() for cell in lines[5].strip("|").split("|")]
    expected = reference_mads(runs["deep fast"][1]["q"])
    assert deep[:3] == ["deep-9B", "base", "42"]
    assert float(deep[3]) == pytest.approx(expected["all"], rel=1e-3)  # 4 significant digits
    assert deep[7] == str(SAMPLES)
    assert deep[8:] == ["", "", "", "", ""]
    assert "n: samples per run" in lines[0]

    status, out, err = run_cli(capsys, "table", *ids, "--format", "latex", "--db", db)
    assert status == 0, err
    assert r"\multicolumn{5}{c}{none\_cot} & \multicolumn{5}{c}{detailed\_cot} \\" in out
    assert r"\cmidrule(lr){4-8} \cmidrule(lr){9-13}" in out
    body = [line for line in out.splitlines() if line.startswith("deep-9B")]
    assert len(body) == 1 and body[0].count("&") == 3 + 10 - 1  # 13 fields
    assert body[0].split(" & ")[3] == f"{expected['all']:.4g}"
    assert body[0].split(" & ")[7] == str(SAMPLES)


def test_table_refuses_two_runs_for_one_cell_and_bad_options(capsys, tmp_path):
    db = tmp_path / "c.duckdb"
    cache = ResultsCache(db)
    a, _ = varied_run(cache, "a", 28, model="m", response_type="none_cot", seed=1)
    b, _ = varied_run(cache, "b", 28, model="m", response_type="none_cot", seed=2)
    status, _, err = run_cli(capsys, "table", a, b, "--db", db)
    assert status == 1 and "both m (base) none_cot" in err and len(err.splitlines()) == 1
    status, _, err = run_cli(capsys, "table", a, "--proj", "q,k", "--db", db)
    assert status == 2 and "--proj q,k: give one projection" in err
    status, _, err = run_cli(capsys, "table", a, "--metric", "loss", "--db", db)
    assert status == 2 and "loss has no layers" in err
    status, _, err = run_cli(capsys, "table", a, "--proj", "gate", "--db", db)
    assert status == 2 and "has no gate matrices" in err


def test_table_of_several_datasets_names_columns_by_dataset_and_type(capsys, tmp_path):
    from layerscope.analysis.results.tables import paper_table

    db = tmp_path / "c.duckdb"
    cache = ResultsCache(db)
    a, _ = varied_run(cache, "a", 28, model="m", response_type="none_cot", seed=1)
    b, _ = varied_run(cache, "b", 28, model="m", response_type="none_cot", seed=2)
    infos = [cache.run(a), cache.run(b)]
    infos[1] = dataclasses.replace(infos[1], dataset="knowledge")
    curves = cache.curves([a, b], "nuclear_norm", ["q"])
    table = paper_table(infos, curves, "nuclear_norm", "q")
    assert table.columns == ["math/none_cot", "knowledge/none_cot"]
    assert len(table.rows) == 1
    # length control: no sample has 0-5 response tokens, said in one line
    status, _, err = run_cli(capsys, "table", a, "--tokens", "0-5", "--db", db)
    assert status == 1 and "no samples with 0-5 response tokens" in err
    assert len(err.strip().splitlines()) == 1


def test_render_table_escapes_latex_and_marks_undefined_segments(tmp_path):
    cache = ResultsCache(tmp_path / "c.duckdb")
    run_id, _ = varied_run(cache, "t", 4, model="my_model&co", response_type="none_cot")
    table = build_paper_table(cache, [run_id], "nuclear", "v")
    latex = render_table(table, "latex")
    assert r"my\_model\&co & base & 4 &" in latex
    # 4 layers split 1/2/1: a segment of one layer has no adjacent pair, so no MAD
    row = next(line for line in latex.splitlines() if line.startswith("my"))
    cells = [cell.strip(" \\") for cell in row.split(" & ")]
    assert cells[4] == "--" and cells[6] == "--" and cells[5] != "--"
    with pytest.raises(ValueError, match="unknown table format 'html'"):
        render_table(table, "html")


def test_normalised_depth_puts_models_of_any_depth_on_0_to_1():
    assert normalised_depth([0, 1, 2, 3, 4]) == [0.0, 0.25, 0.5, 0.75, 1.0]
    shallow, deep = normalised_depth(list(range(28))), normalised_depth(list(range(42)))
    assert (shallow[0], shallow[-1], deep[0], deep[-1]) == (0.0, 1.0, 0.0, 1.0)
    assert shallow[9] == pytest.approx(9 / 27) and deep[20] == pytest.approx(20 / 41)
    assert normalised_depth([3], 7) == [0.5]  # a curve over part of the layers
    assert normalised_depth([0], 1) == [0.0]
    with pytest.raises(ValueError, match=r"0\.\.3"):
        normalised_depth([4], 4)


def test_show_draws_against_normalised_depth(capsys, two_depths):
    db, runs = two_depths
    ids = [run_id for run_id, _ in runs.values()]
    status, out, err = run_cli(
        capsys, "show", ids[0], ids[2], "--proj", "q", "--depth", "normalised",
        "--width", "70", "--db", db,
    )  # fmt: skip
    assert status == 0, err
    assert "normalised depth" in out
    tick_line = next(line for line in out.splitlines() if "0.25" in line)
    assert "0.5" in tick_line and "0.75" in tick_line and "1" in tick_line
    status, out, _ = run_cli(capsys, "show", ids[0], "--proj", "q", "--width", "70", "--db", db)
    assert "normalised depth" not in out and "layer" in out
    status, out, _ = run_cli(capsys, "show", ids[0], ids[2], "--proj", "q", "--json", "--db", db)
    shallow, deep = json.loads(out)["curves"]
    assert shallow["depth"] == pytest.approx([layer / 27 for layer in range(28)])
    assert deep["depth"] == pytest.approx([layer / 41 for layer in range(42)])


async def test_the_explorer_shows_the_papers_table_of_the_chart(cache_path, filled):
    """T in the Chart tab: rows model x mode, columns response types, MAD cells; the same
    numbers as the analysis layer's table of those runs; escape closes it."""
    from test_tui_browse import SIZE, compare, settle

    from layerscope.analysis.results.compare import compare_runs
    from layerscope.analysis.results.tables import paper_table
    from layerscope.app.tui.app import LayerscopeApp

    chosen = [filled["none_cot"], filled["detailed_cot"], filled["detailed_cot/instruct"]]
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, chosen)
        await pilot.press("T")
        await settle(app, pilot)
        assert type(app.screen).__name__ == "PaperTableScreen"
        text = app.screen.text  # the Markdown, as the export writes it
        drawn = app.export_screenshot()  # and drawn as a table (not pipes and dashes)
        assert "none_cot" in drawn and "| --- |" not in drawn
        cache = ResultsCache(cache_path)
        infos = [cache.run(run_id) for run_id in chosen]
        curves = compare_runs(cache, chosen, "nuclear_norm", ["q"]).curves
        table = paper_table(infos, curves, "nuclear_norm", "q")
        assert {row.mode for row in table.rows} == {"base", "instruct"}
        for column in ("none_cot", "detailed_cot"):
            assert column in text
        first = table.rows[0].cells["none_cot"]
        assert f"{first.all:.4g}"[:4] in text
        await pilot.press("escape")
        await settle(app, pilot)
        assert type(app.screen).__name__ != "PaperTableScreen"


def test_table_leaves_the_tests_of_significance_out(capsys, two_depths, monkeypatch):
    """It prints the curves' MADs only: running the paired and permutation tests for it was most
    of its time on a study-sized cache. ``show`` prints them, so it still runs them."""
    from layerscope.analysis.results import compare

    calls = []
    real = compare.significance_rows

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "significance_rows", counted)
    db, runs = two_depths
    ids = [run_id[:10] for run_id, _ in runs.values()]
    status, _, err = run_cli(capsys, "table", *ids, "--proj", "q", "--format", "csv", "--db", db)
    assert status == 0, err
    assert build_paper_table(ResultsCache(db), ids, "nuclear_norm", "k").rows
    assert calls == []
    status, _, err = run_cli(capsys, "show", *ids[:2], "--proj", "q", "--db", db)
    assert status == 0, err
    assert len(calls) == 1


def test_table_gives_each_runs_own_sample_count(capsys, tmp_path):
    """n is per run, not per table: a run of 3 samples and one of 2 side by side."""
    from cache_helpers import fill_run

    db = tmp_path / "c.duckdb"
    cache = ResultsCache(db)
    a = fill_run(cache, "a", 3, layers=4, response_type="none_cot")
    b = fill_run(cache, "b", 2, layers=4, response_type="detailed_cot")
    status, out, err = run_cli(capsys, "table", a, b, "--format", "csv", "--db", db)
    assert status == 0, err
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert (row["none_cot n"], row["detailed_cot n"]) == ("3", "2")
    status, out, err = run_cli(capsys, "table", a, b, "--tokens", "0-1000000", "--db", db)
    assert status == 0, err
    cells = [cell.strip() for cell in out.splitlines()[4].strip("|").split("|")]
    assert (cells[7], cells[12]) == ("3", "2")
