"""``layerscope figure``: the paper's four-panel figure as a file a user puts in a paper.

The drawn numbers are checked against the stored curves (what ``show`` prints), the file by
opening it (its pixel size, the panels' titles in an SVG's text); tests that draw skip when
matplotlib, the optional ``figures`` extra, is absent (CI installs it).
"""

from __future__ import annotations

import math

import pytest
from test_tables import two_depths  # noqa: F401 (fixture)

from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.curves.statistics import ci95
from layerscope.analysis.results.compare import mad_row
from layerscope.app import cli


def run_cli(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerscope: error: "), err
    return lines[0]


def test_figure_writes_a_png_of_four_panels(capsys, tmp_path, two_depths):  # noqa: F811
    pytest.importorskip("matplotlib")
    from matplotlib import image

    from layerscope.app.figures import PNG_DPI, SIZE_INCHES

    db, runs = two_depths
    ids = [run_id[:10] for run_id, _ in runs.values()]
    png = tmp_path / "fig.png"
    status, out, err = run_cli(capsys, "figure", *ids, "--output", png, "--band", "--db", db)
    assert status == 0, err
    assert out == "" and f"to {png}" in err
    pixels = image.imread(png)
    assert pixels.shape[:2] == (round(SIZE_INCHES[1] * PNG_DPI), round(SIZE_INCHES[0] * PNG_DPI))
    assert pixels[..., :3].std() > 0.05  # not a blank page

    svg = tmp_path / "fig.svg"
    status, _, err = run_cli(capsys, "figure", *ids, "--output", svg, "--db", db)
    assert status == 0, err
    text = svg.read_text()
    for title in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert f">{title}<" in text  # text kept as text: editable, and searchable here
    for label in ("shallow-1.5B none_cot", "shallow-1.5B detailed_cot", "deep-9B none_cot"):
        assert label in text
    pdf = tmp_path / "fig.pdf"
    status, _, err = run_cli(capsys, "figure", *ids, "--output", pdf, "--db", db)
    assert status == 0, err
    assert pdf.read_bytes().startswith(b"%PDF")


def test_figure_draws_the_stored_curves_each_run_told_apart_without_colour(two_depths):  # noqa: F811
    pytest.importorskip("matplotlib")
    from layerscope.app.figures import paper_figure

    db, runs = two_depths
    cache = ResultsCache(db)
    ids = [run_id for run_id, _ in runs.values()]
    curves = cache.curves(ids, "nuclear_norm", ["q", "k", "v", "o"])
    labels = {run_id: name for name, (run_id, _) in runs.items()}
    layer_counts = {info.id: info.layers for info in cache.runs()}
    figure = paper_figure(
        curves, labels, "nuclear_norm", layer_counts=layer_counts, depth="normalised", band=True
    )
    panels = figure.axes
    assert [panel.get_title() for panel in panels] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    for panel, projection in zip(panels, "qkvo", strict=True):
        lines = panel.get_lines()
        # each run's label with its sample count (tests/test_tables.py's SAMPLES)
        assert [line.get_label() for line in lines] == [f"{name} (n=5)" for name in runs]
        for line, run_id in zip(lines, ids, strict=True):
            [curve] = [c for c in curves if c.run_id == run_id and c.projection == projection]
            assert list(line.get_ydata()) == pytest.approx(curve.mean, rel=1e-12)
            xs = list(line.get_xdata())
            assert xs[0] == 0.0 and xs[-1] == 1.0  # 28 and 42 layers both span 0..1
            assert xs[1] == pytest.approx(1 / (layer_counts[run_id] - 1))
        styles = {(line.get_marker(), line.get_linestyle()) for line in lines}
        assert len(styles) == len(lines)  # marker and dash differ, colour or not
        assert len(panel.collections) == len(lines)  # one 95% band per run
        band = panel.collections[0].get_paths()[0].vertices[:, 1]
        [first] = [c for c in curves if c.run_id == ids[0] and c.projection == projection]
        top = max(m + c for m, c in zip(first.mean, ci95(first), strict=True) if math.isfinite(c))
        assert band.max() == pytest.approx(top, rel=1e-9)
    assert panels[2].get_xlabel().startswith("normalised depth")
    by_layer = paper_figure(curves, labels, "nuclear_norm")
    figure.canvas.draw()
    by_layer.canvas.draw()
    ticks = [t for t in by_layer.axes[2].get_xticks() if 0 <= t <= 41]
    assert ticks and all(float(t).is_integer() for t in ticks)  # layers, not 0.5 steps
    assert by_layer.axes[2].get_lines()[2].get_xdata()[-1] == 41
    legend_texts = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend_texts == [f"{name} (n=5)" for name in runs]


def test_figure_refuses_to_overwrite_or_to_write_the_cache(capsys, tmp_path, two_depths):  # noqa: F811
    pytest.importorskip("matplotlib")
    db, runs = two_depths
    run_id = next(iter(runs.values()))[0]
    png = tmp_path / "fig.png"
    png.write_bytes(b"earlier figure")
    status, _, err = run_cli(capsys, "figure", run_id, "--output", png, "--db", db)
    assert status == 1 and "exists; use --force" in one_line_error(err)
    assert png.read_bytes() == b"earlier figure"
    status, _, err = run_cli(capsys, "figure", run_id, "--output", png, "--force", "--db", db)
    assert status == 0 and png.read_bytes().startswith(b"\x89PNG")
    trap = tmp_path / "trap.png"
    trap.symlink_to(db)
    before = db.read_bytes()
    status, _, err = run_cli(capsys, "figure", run_id, "--output", trap, "--force", "--db", db)
    assert status == 1 and "results cache" in one_line_error(err)
    assert db.read_bytes() == before


def test_figure_bad_input_is_one_line(capsys, tmp_path, two_depths):  # noqa: F811
    db, runs = two_depths
    run_id = next(iter(runs.values()))[0]
    status, _, err = run_cli(capsys, "figure", run_id, "--output", tmp_path / "f.jpg", "--db", db)
    assert status == 2 and "f.jpg: give a file name ending in .png, .svg or .pdf" in err
    status, _, err = run_cli(
        capsys, "figure", run_id, "--metric", "loss", "--output", tmp_path / "f.png", "--db", db
    )
    assert status == 2 and "loss has no layers" in one_line_error(err)
    status, _, err = run_cli(capsys, "figure", run_id, "--output", "-", "--db", db)
    assert status == 2 and "a figure is a file" in one_line_error(err)


def test_matplotlib_is_imported_only_to_draw():
    """Starting the command line or the explorer, or importing the figure module, never pays
    for matplotlib (a large optional extra): only drawing a figure does."""
    from test_boundaries import imported_after

    loaded = imported_after(
        "import layerscope.app.cli, layerscope.app.figures, layerscope.app.tui.app, "
        "layerscope.app.tui.export, layerscope.analysis.results.tables"
    )
    assert not any(name == "matplotlib" or name.startswith("matplotlib.") for name in loaded)


def test_figure_without_matplotlib_says_how_to_install_it(capsys, tmp_path, monkeypatch):
    import layerscope.app.figures as figures

    monkeypatch.setattr(figures, "have_matplotlib", lambda: False)
    status, _, err = run_cli(
        capsys, "figure", "abc", "--output", tmp_path / "f.png", "--db", tmp_path / "c.duckdb"
    )
    line = one_line_error(err)
    assert status == 2
    assert line == "layerscope: error: figure needs matplotlib: pip install 'layerscope[figures]'"
    assert not (tmp_path / "f.png").exists()


# --- the explorer: the chart against normalised depth, and the figure in its export -----------


def add_four_layer_run(db) -> str:
    """A run of a 4-layer model beside the synthetic cache's 6-layer ones."""
    from cache_helpers import fill_run

    return fill_run(ResultsCache(db), "four", 6, layers=4, model="four-layer")


async def chart_with_two_depths(app, pilot, filled, shallow):
    """Overlay a 6-layer run and a 4-layer one in the Chart tab."""
    from test_tui_browse import compare, settle

    await settle(app, pilot)
    await compare(app, pilot, [filled["none_cot"], shallow])


async def test_explorer_chart_toggles_to_normalised_depth(cache_path, filled):
    from test_tui_browse import SIZE, settle

    from layerscope.app.tui.app import LayerscopeApp
    from layerscope.app.tui.widgets.chart.compare_view import ComparePane
    from layerscope.app.tui.widgets.chart.layer_chart import LayerChart

    shallow = add_four_layer_run(cache_path)
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await chart_with_two_depths(app, pilot, filled, shallow)
        chart = app.query_one(LayerChart)
        deep_q = next(s for s in chart.series if s.projection == "q" and s.layers[-1] == 5)
        assert chart.depth == "layer" and "layer" in chart.as_text()
        await pilot.press("x")
        await settle(app, pilot)
        assert chart.depth == "normalised"
        by_label = {}
        for item in chart.series:
            if item.projection == "q":
                by_label[item.label] = item.layers
        assert sorted(by_label.values(), key=len) == [
            [0.0, 1 / 3, 2 / 3, 1.0],  # 4 layers
            [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],  # 6 layers
        ]
        assert deep_q.mean == next(s for s in chart.series if s.label == deep_q.label).mean
        text = chart.as_text()
        assert "depth" in text and "0.5" in text
        status = str(app.query_one("#chart-status").render())
        assert "x: depth 0-1" in status
        assert app.query_one(ComparePane).view_settings()["depth"] == "normalised"
        assert shallow in {c.run_id for c in app.query_one(ComparePane).curves}
        await pilot.press("x")
        await settle(app, pilot)
        assert chart.depth == "layer" and "x: depth" not in str(
            app.query_one("#chart-status").render()
        )


async def test_explorer_export_writes_the_papers_figure(cache_path, filled, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib import image
    from test_tui_browse import SIZE, settle

    from layerscope.app.figures import PNG_DPI, SIZE_INCHES
    from layerscope.app.tui.app import LayerscopeApp

    out = tmp_path / "exported"
    shallow = add_four_layer_run(cache_path)
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await chart_with_two_depths(app, pilot, filled, shallow)
        await pilot.press("b")  # the 95% band, in the figure too
        await settle(app, pilot)
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("#export-folder").value = str(out)
        await pilot.press("enter")
        await settle(app, pilot)
    names = sorted(path.name for path in out.iterdir())
    assert names == [
        "chart-nuclear_norm.txt",
        "comparison-nuclear_norm.csv",
        "figure-nuclear_norm.pdf",
        "figure-nuclear_norm.png",
        "table-nuclear_norm.md",
        "table-nuclear_norm.tex",
    ]
    # the paper's table of the two models, each split by its own depth, MADs as show's
    markdown = (out / "table-nuclear_norm.md").read_text()
    assert markdown.count("MAD over layers of nuclear_norm") == 4  # q, k, v, o
    cache = ResultsCache(cache_path)
    [q_six, q_four] = [
        next(c for c in cache.curves([run_id], "nuclear_norm", ["q"]))
        for run_id in (filled["none_cot"], shallow)
    ]
    q_block = markdown.split("\n\n")[1]
    assert f"| tiny | base | 6 | {mad_row(q_six).all:.4g} |" in q_block
    assert f"| four-layer | base | 4 | {mad_row(q_four).all:.4g} |" in q_block
    assert r"\begin{tabular}" in (out / "table-nuclear_norm.tex").read_text()
    pixels = image.imread(out / "figure-nuclear_norm.png")
    assert pixels.shape[:2] == (round(SIZE_INCHES[1] * PNG_DPI), round(SIZE_INCHES[0] * PNG_DPI))
    assert (out / "figure-nuclear_norm.pdf").read_bytes().startswith(b"%PDF")


async def test_explorer_export_without_matplotlib_writes_text_and_table(
    cache_path,
    filled,
    tmp_path,
    monkeypatch,
):
    from test_tui_browse import SIZE, compare, settle

    import layerscope.app.figures as figures
    from layerscope.app.tui.app import LayerscopeApp

    monkeypatch.setattr(figures, "have_matplotlib", lambda: False)
    out = tmp_path / "exported"
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [filled["none_cot"]])
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("#export-folder").value = str(out)
        await pilot.press("enter")
        await settle(app, pilot)
    assert sorted(p.name for p in out.iterdir()) == [
        "chart-nuclear_norm.txt",
        "comparison-nuclear_norm.csv",
        "table-nuclear_norm.md",
        "table-nuclear_norm.tex",
    ]
