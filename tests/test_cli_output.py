"""What the command line prints where a user reads it: tables at 80 columns, charts without
colour, stdout kept to what ``--help`` promises, and the stages of loading a model."""

from __future__ import annotations

import re

import pytest
from tui_synthetic import add_run

from layerscope.app import cli
from layerscope.app.charts import MARKERS, Series, render_curves


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


# ---- tables at 80 columns ---------------------------------------------------------------------


@pytest.fixture
def two_types(tmp_path):
    """A cache of two runs whose types differ only at their end, one with a long dataset name."""
    db = tmp_path / "c.duckdb"
    ids = [
        add_run(db, "none_cot", dataset="knowledge_with_a_long_dataset_name"),
        add_run(db, "none_cot_irrelevant", dataset="knowledge_with_a_long_dataset_name"),
    ]
    return db, ids


def test_runs_at_80_columns_shows_whole_ids_and_types(capsys, monkeypatch, two_types):
    db, ids = two_types
    monkeypatch.setenv("COLUMNS", "80")
    status, out, err = run(capsys, "runs", "--db", db)
    assert status == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out
    shown = re.findall(r"^\s*([0-9a-f]{12})\s", out, re.MULTILINE)
    assert shown == [run_id[:12] for run_id in ids]
    rows = [line for line in out.splitlines() if re.match(r"^\s*[0-9a-f]{12}\s", line)]
    assert re.search(r"\snone_cot\s", rows[0]) and re.search(r"\snone_cot_irrelevant\s", rows[1])
    for short_id in shown:  # the ids as printed are what `show` accepts
        status, out, err = run(capsys, "show", short_id, "--json", "--db", db)
        assert status == 0, err


def test_show_tables_at_80_columns_keep_run_labels_whole(capsys, monkeypatch, two_types):
    db, ids = two_types
    monkeypatch.setenv("COLUMNS", "80")
    status, out, err = run(capsys, "show", ids[0], ids[1], "--proj", "q", "--db", db)
    assert status == 0, err
    tables = out[out.index("MAD of") :]
    assert max(len(line) for line in tables.splitlines()) <= 80
    assert "…" not in tables
    assert re.search(r"\snone_cot_irrelevant\s", tables)


# ---- charts without colour --------------------------------------------------------------------


def legend_markers(chart: str, labels: list[str]) -> list[str]:
    """The glyph pair the legend shows before each label."""
    markers = []
    for label in labels:
        match = re.search(rf"(\S\S) {re.escape(label)}\b", chart)
        assert match, f"no legend entry for {label!r} in\n{chart}"
        markers.append(match.group(1))
    return markers


@pytest.mark.parametrize("color", [False, True])
def test_chart_series_differ_by_glyph_with_or_without_colour(monkeypatch, color):
    monkeypatch.delenv("NO_COLOR", raising=False)
    labels = ["none_cot", "detailed_cot", "none_cot_irrelevant"]
    series = [
        Series(label, [0, 1, 2, 3], [1.0 + 3 * n, 2.0 + 3 * n, 1.5 + 3 * n, 2.5 + 3 * n])
        for n, label in enumerate(labels)
    ]
    chart = render_curves(series, title="q", width=70, height=20, color=color)
    assert ("\x1b[" in chart) == color
    plain = re.sub(r"\x1b\[[0-9;]*m", "", chart)
    markers = legend_markers(plain, labels)
    assert len(set(markers)) == len(labels)
    assert [m[0] for m in markers] == list(MARKERS[: len(labels)])
    rows = plain.splitlines()
    plot = "\n".join(row.split("┤", 1)[1] for row in rows if "┤" in row)
    for label, marker in zip(labels, markers, strict=True):
        plot_without_legend = plot.replace(f"{marker} {label}", "")
        assert marker[0] in plot_without_legend, f"{label}'s {marker[0]} is not drawn"
    # every one of 4 layers is a tick, and the axis says what it counts
    ticks = rows[rows.index(next(r for r in rows if "└" in r)) + 1]
    assert ticks.split() == ["0", "1", "2", "3"]
    assert any(row.strip() == "layer" for row in rows)


def test_no_color_turns_colour_off(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    chart = render_curves([Series("a", [0, 1], [1.0, 2.0])], width=40, height=10, color=True)
    assert "\x1b[" not in chart
