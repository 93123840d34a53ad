"""MAD, layer splits and relative difference against values computed by hand."""

from __future__ import annotations

import math

import pytest
from cache_helpers import fill_run, nuclear

from layerscope.analysis.base.records import LayerCurve
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.results.compare import (
    compare_runs,
    layer_splits,
    mad,
    mad_table,
    relative_difference,
)


def curve(values, run_id="a" * 64, projection="q"):
    n = len(values)
    return LayerCurve(run_id, projection, list(range(n)), list(values), [0.0] * n, [1] * n)


@pytest.mark.parametrize(
    ("layers", "sizes"),
    [
        (26, (7, 13, 6)),
        (28, (7, 14, 7)),
        (32, (10, 10, 12)),
        (42, (12, 18, 12)),
        (12, (4, 4, 4)),
        (4, (1, 2, 1)),
        (8, (2, 3, 3)),
        (3, (1, 1, 1)),
        (1, (0, 1, 0)),
    ],
)
def test_layer_splits_are_the_papers_or_thirds(layers, sizes):
    early, middle, late = layer_splits(layers)
    assert (len(early), len(middle), len(late)) == sizes
    assert early.start == 0 and early.stop == middle.start
    assert middle.stop == late.start and late.stop == layers


def test_mad_by_hand():
    # |3-1| + |2-3| + |6-2| = 7 over 3 differences
    assert mad([1, 3, 2, 6]) == pytest.approx(7 / 3)
    assert mad([5.0, 5.0]) == 0.0
    assert math.isnan(mad([1.0]))


def test_mad_table_uses_differences_inside_each_segment():
    # 4 layers -> early [0], middle [1, 2], late [3]
    [row] = mad_table([curve([1, 4, 6, 20])])
    assert row.all == pytest.approx((3 + 2 + 14) / 3)
    assert math.isnan(row.early)  # a single layer has no difference
    assert row.middle == pytest.approx(2.0)
    assert math.isnan(row.late)
    # 32 layers: the paper's 10/10/12 split
    values = [float(i * i) for i in range(32)]
    [row] = mad_table([curve(values)])
    assert row.early == pytest.approx(sum(2 * i + 1 for i in range(9)) / 9)  # layers 0..9
    assert row.middle == pytest.approx(sum(2 * i + 1 for i in range(10, 19)) / 9)  # 10..19
    assert row.late == pytest.approx(sum(2 * i + 1 for i in range(20, 31)) / 11)  # 20..31
    assert row.all == pytest.approx(31 * 31 / 31)


def test_relative_difference_by_hand():
    a = curve([1.0, 2.0, 4.0, 0.0, 10.0])
    b = curve([1.5, 2.0, 3.0, 1.0, 10.0])
    rd = relative_difference(a, b)
    # |a-b|/|a| = 0.5, 0, 0.25, 1/1e-10 (zero baseline as in the paper), 0
    assert rd.value == pytest.approx((0.5 + 0 + 0.25 + 1e10 + 0) / 5)
    assert [layer for layer, _ in rd.top_layers] == [3, 0, 2, 1, 4]
    assert rd.top_layers[1] == (0, pytest.approx(0.5))
    assert len(relative_difference(curve([1.0] * 9), curve([2.0] * 9)).top_layers) == 5


def test_relative_difference_skips_nonfinite_layers_and_needs_equal_depth():
    rd = relative_difference(curve([2.0, math.nan, 4.0]), curve([1.0, 1.0, 4.0]))
    assert rd.value == pytest.approx(0.25)
    assert all(layer != 1 for layer, _ in rd.top_layers)
    with pytest.raises(ValueError, match="different layers"):
        relative_difference(curve([1.0, 2.0]), curve([1.0, 2.0, 3.0]))


def test_compare_runs_on_the_cache(tmp_path):
    cache = ResultsCache(tmp_path / "c.duckdb")
    first = fill_run(cache, "first", 4, layers=4)
    second = fill_run(cache, "second", 6, layers=4, response_type="detailed_cot")
    result = compare_runs(cache, [first[:8], second[:8]], "nuclear_norm", projections=["q", "o"])
    assert [(c.run_id, c.projection) for c in result.curves] == [
        (first, "q"),
        (first, "o"),
        (second, "q"),
        (second, "o"),
    ]
    assert [(r.run_id, r.projection) for r in result.mad] == [
        (c.run_id, c.projection) for c in result.curves
    ]
    # q means by layer: mean over samples of (i + 1)(layer + 1) = (layer + 1) * mean(i + 1)
    q_first = [(layer + 1) * 2.5 for layer in range(4)]
    assert result.curves[0].mean == pytest.approx(q_first)
    assert result.mad[0].all == pytest.approx(2.5)
    [rd_q, rd_o] = result.relative
    assert (rd_q.baseline_run_id, rd_q.run_id, rd_q.projection) == (first, second, "q")
    q_second = [(layer + 1) * 3.5 for layer in range(4)]
    expected = sum(abs(a - b) / a for a, b in zip(q_first, q_second, strict=True)) / 4
    assert rd_q.value == pytest.approx(expected)
    assert rd_o.projection == "o"
    assert result.curves[1].mean[0] == pytest.approx(sum(nuclear(i, 0, "o") for i in range(4)) / 4)
