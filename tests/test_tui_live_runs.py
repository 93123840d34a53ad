"""The Runs tab's counts (and `layerscope runs`'): of what a run's request asked for (`--limit`), not of the data file's
size, and a run computed by another process followed live, its rate and ETA told by the
explorer's successive scans of the cache.

The other process is this test's own: a run begun here holds its claim (cache/liveness.py) as
a compute does, so the explorer sees it running and its batches arrive as a compute's would.
Tests wait on conditions (a scan handled), never on time.
"""

from __future__ import annotations

import json
from pathlib import Path

from test_runner import model_folder, write_dataset  # noqa: F401 (fixture)
from test_tui_browse import SIZE, leaf_labels, settle
from textual.widgets import Static
from tui_synthetic import begin, write

from layerscope.analysis.cache import ResultsCache
from layerscope.app import cli
from layerscope.app.tui.app import LayerscopeApp
from layerscope.app.tui.widgets.runs.runs_browser import RunsBrowser


def detail(app: LayerscopeApp) -> str:
    return str(app.query_one("#run-detail", Static).render())


async def test_a_run_computed_elsewhere_grows_with_a_rate_and_an_eta(cache_path: Path):
    run_id = begin(cache_path, "none_cot", samples=12, requested=8)
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        browser = app.query_one(RunsBrowser)
        label = leaf_labels(browser)[run_id]
        assert "running" in label and "0/8" in label and "ETA" not in label
        assert "0/8 (of 12 in the file)" in detail(app)

        write(cache_path, run_id, "none_cot", [0, 1], 12)  # a batch stored by the compute
        app.scan_cache()
        await settle(app, pilot)
        label = leaf_labels(browser)[run_id]
        assert "running" in label and "2/8 · " in label and "/s · ETA " in label
        assert "2/8 (of 12 in the file) · " in detail(app) and "ETA" in detail(app)
        assert browser.paces[run_id].eta_seconds is not None

        write(cache_path, run_id, "none_cot", [2, 3, 4, 5, 6], 12)  # sample 5 is skipped
        app.scan_cache()
        await settle(app, pilot)
        label = leaf_labels(browser)[run_id]
        assert "running" in label and "7/8 (1 skipped) · " in label and "ETA" in label

        write(cache_path, run_id, "none_cot", [7], 12)
        ResultsCache(cache_path).finish_run(run_id, "complete")
        app.scan_cache()
        await settle(app, pilot)
        label = leaf_labels(browser)[run_id]
        assert "complete" in label and "8/8 (1 skipped)" in label and "/s" not in label
        assert run_id not in browser.paces
        assert "8/8 (of 12 in the file, 1 skipped)" in detail(app)


def test_compute_with_a_limit_stores_it_and_the_runs_tab_counts_to_it(
    capsys,
    cache_path: Path,
    model_folder,  # noqa: F811
    tmp_path: Path,
):
    data = write_dataset(tmp_path / "data", 8)
    status = cli.main(
        ["compute", "--model", str(model_folder), "--dataset", str(data), "--limit", "3",
         "--batch-size", "2", "--max-length", "64", "--db", str(cache_path), "--quiet"]
    )  # fmt: skip
    assert status == 0
    [run] = ResultsCache(cache_path).runs()
    assert (run.samples_total, run.provenance["requested"], run.samples_requested) == (8, 3, 3)
    assert [s["requested"] for s in run.provenance["sessions"]] == [3]
    capsys.readouterr()
    assert cli.main(["runs", "--db", str(cache_path), "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert (record["samples"], record["samples_requested"], record["samples_total"]) == (3, 3, 8)
    assert cli.main(["runs", "--db", str(cache_path)]) == 0
    assert "3/3" in capsys.readouterr().out

    async def browse() -> None:
        app = LayerscopeApp(poll_seconds=0)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.press("2")
            await settle(app, pilot)
            label = leaf_labels(app.query_one(RunsBrowser))[run.id]
            assert "complete" in label and "3/3" in label and "/8" not in label
            assert "3/3 (of 8 in the file)" in detail(app)

    import asyncio

    asyncio.run(browse())
