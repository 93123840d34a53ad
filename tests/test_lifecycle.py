"""The one run lifecycle (StoredRun): whatever ends the block, the run is left finished."""

from __future__ import annotations

import threading

import pytest
from cache_helpers import batch, make_result, make_samples, small_header

from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.runs.lifecycle import StoredRun, package_version


@pytest.fixture
def cache(tmp_path):
    return ResultsCache(tmp_path / "results.duckdb", lock_timeout=5)


def stored_run(cache, name: str, cancel: threading.Event | None = None) -> StoredRun:
    return StoredRun(cache, small_header(name), cancel=cancel)


def test_a_block_that_ends_normally_completes_the_run(cache):
    run = stored_run(cache, "ok")
    with run:
        assert cache.run(run.run_id).status == "running"
        assert run.done_indices() == set()
        assert run.write(batch([make_result(0, 2), make_result(1, 2)]), make_samples(2)) == 2
        assert run.done_indices() == {0, 1}
    assert (run.status, run.message) == ("complete", "")
    assert run.info is not None and run.info.status == "complete"
    assert cache.run(run.run_id).samples_done == 2


def test_an_error_fails_the_run_with_its_one_line_and_propagates(cache):
    run = stored_run(cache, "boom")
    with pytest.raises(RuntimeError, match="disk on fire"), run:
        run.write(batch([make_result(0, 2)]), make_samples(1))
        raise RuntimeError("disk on fire\nsecond line")
    info = cache.run(run.run_id)
    assert info.status == "failed"
    assert info.provenance["message"] == "RuntimeError: disk on fire"
    assert info.samples_done == 1  # what was written stays


def test_an_interrupt_or_a_cancel_event_cancels_the_run(cache):
    run = stored_run(cache, "interrupted")
    with pytest.raises(KeyboardInterrupt), run:
        raise KeyboardInterrupt
    assert run.status == "cancelled"
    assert "message" not in cache.run(run.run_id).provenance

    cancel = threading.Event()
    run = stored_run(cache, "cancelled", cancel)
    with run:
        cancel.set()
    assert (run.status, cache.run(run.run_id).status) == ("cancelled", "cancelled")
    assert "resume" in run.message


def test_closing_a_generator_inside_the_block_cancels_the_run(cache):
    run = stored_run(cache, "closed")

    def steps():
        with run:
            yield 1
            yield 2

    generator = steps()
    next(generator)
    generator.close()
    assert cache.run(run.run_id).status == "cancelled"


def test_package_version_of_a_missing_package_is_unknown():
    assert package_version("no-such-package-layerscope-test") == "unknown"
