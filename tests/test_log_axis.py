"""``--log-y`` on ``show`` (plotext) and ``figure`` (matplotlib), and the sample counts
(``n=...``) that their legends give for each run.

A log axis is checked by where it puts the ticks (powers of ten evenly spaced), not by the
command merely running; a statistic with a mean <= 0 is one line and exit status 2, before any
file is written.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from cache_helpers import fill_run

from layerscope.analysis.base.records import LayerCurve
from layerscope.analysis.cache import ResultsCache
from layerscope.app import cli
from layerscope.app.charts import Series, render_curves
from layerscope.app.labels import counted_labels, sample_count


@pytest.fixture
def two_runs(tmp_path) -> tuple[Path, str, str]:
    """Run a of 3 samples and run b of 2, each of 2 layers, different response types."""
    db = tmp_path / "cache.duckdb"
    cache = ResultsCache(db)
    a = fill_run(cache, "a", 3, layers=2, response_type="none_cot")
    b = fill_run(cache, "b", 2, layers=2, response_type="detailed_cot")
    return db, a, b


def run_cli(capsys, *argv: str | Path) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerscope: error: "), err
    assert "Traceback" not in err
    return lines[0]


def tick_rows(chart: str, labels: list[str]) -> list[int]:
    """The line each y tick label is written on (the label at a line's start)."""
    lines = chart.splitlines()
    return [next(n for n, line in enumerate(lines) if line.lstrip().startswith(t)) for t in labels]


def test_render_curves_puts_decades_evenly_on_a_log_axis():
    series = [Series("a", [0, 1, 2, 3], [1.0, 10.0, 100.0, 1000.0])]
    chart = render_curves(series, width=60, height=24, log_y=True)
    rows = tick_rows(chart, ["1e3", "1e2", "1e1", "1e0"])
    gaps = [b - a for a, b in itertools.pairwise(rows)]
    assert all(gap > 0 for gap in gaps)  # 1e3 at the top, down to 1e0
    assert max(gaps) - min(gaps) <= 1  # evenly spaced: a log axis, not a linear one
    linear = render_curves(series, width=60, height=24)
    assert "1e1" not in linear


def test_render_curves_leaves_out_what_a_log_axis_cannot_show():
    series = [Series("a", [0, 1], [-1.0, 0.0])]
    assert render_curves(series, title="t", log_y=True) == "t: no positive values to plot"
    assert "no finite values" not in render_curves(series, title="t")


def test_show_log_y_draws_and_gives_sample_counts(capsys, two_runs):
    db, a, b = two_runs
    argv = ("show", a, b, "--proj", "q", "--width", "70", "--db", db)
    status, linear, err = run_cli(capsys, *argv)
    assert status == 0, err
    status, logged, err = run_cli(capsys, *argv, "--log-y")
    assert status == 0, err
    assert logged != linear
    for out in (linear, logged):
        assert "none_cot (n=3)" in out and "detailed_cot (n=2)" in out


def test_show_log_y_refuses_a_statistic_below_zero_in_one_line(capsys, two_runs):
    db, a, _b = two_runs
    status, out, err = run_cli(capsys, "show", a, "--metric", "min", "--log-y", "--db", db)
    assert status == 2 and out == ""
    line = one_line_error(err)
    # fill_run's min is -0.5 - layer: the first mean <= 0 is layer 0's, -0.5
    assert "--log-y: min has a mean <= 0 (" in line and "q, layer 0: -0.5)" in line
    status, _, err = run_cli(capsys, "show", a, "--metric", "loss", "--log-y", "--db", db)
    assert status == 2 and "--metric loss is a table" in one_line_error(err)


def test_figure_log_y_sets_log_axes_and_counts_in_the_legend(capsys, two_runs, tmp_path):
    pytest.importorskip("matplotlib")
    from layerscope.app.figures import paper_figure

    db, a, b = two_runs
    cache = ResultsCache(db)
    curves = cache.curves([a, b], "nuclear_norm", ["q", "k", "v", "o"])
    labels = {a: "fast", b: "slow"}
    figure = paper_figure(curves, labels, "nuclear_norm", log_y=True, band=True)
    figure.canvas.draw()
    assert [panel.get_yscale() for panel in figure.axes] == ["log"] * 4
    assert all(panel.get_ylim()[0] > 0 for panel in figure.axes)
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == ["fast (n=3)", "slow (n=2)"]
    assert [line.get_label() for line in figure.axes[0].get_lines()] == legend
    linear = paper_figure(curves, labels, "nuclear_norm")
    assert [panel.get_yscale() for panel in linear.axes] == ["linear"] * 4

    svg = tmp_path / "fig.svg"
    status, _, err = run_cli(capsys, "figure", a, b, "--log-y", "--output", svg, "--db", db)
    assert status == 0, err
    assert "none_cot (n=3)" in svg.read_text()


def test_figure_log_y_refuses_a_statistic_below_zero_before_writing(capsys, two_runs, tmp_path):
    pytest.importorskip("matplotlib")
    db, a, _b = two_runs
    png = tmp_path / "fig.png"
    status, _, err = run_cli(
        capsys, "figure", a, "--metric", "min", "--log-y", "--output", png, "--db", db
    )
    assert status == 2
    assert "--log-y: min has a mean <= 0" in one_line_error(err)
    assert not png.exists()


def curve(run_id: str, projection: str, count: list[int]) -> LayerCurve:
    layers = list(range(len(count)))
    return LayerCurve(run_id, projection, layers, [1.0] * len(count), [0.0] * len(count), count)


def test_sample_counts_of_curves_say_when_projections_differ():
    assert sample_count([curve("a", "q", [6, 6])]) == "n=6"
    assert sample_count([curve("a", "q", [6, 6]), curve("a", "k", [5, 5])]) == "n=5-6"
    assert sample_count([]) == "n=0"
    curves = [curve("a" * 64, "q", [4]), curve("b" * 64, "q", [7])]
    assert counted_labels({"a" * 64: "fast"}, curves) == {
        "a" * 64: "fast (n=4)",
        "b" * 64: "bbbbbbbb (n=7)",
    }
