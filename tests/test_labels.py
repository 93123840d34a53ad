"""Names and one-line settings of runs, as legends and tables show them."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace

from layerscope.app.labels import computing_seconds, duration, run_labels, run_settings

START = datetime(2026, 1, 1, 12, 0, 0)


def run(run_id="a" * 64, **fields):
    base = dict(
        id=run_id,
        model="tiny",
        dataset="math",
        response_type="none_cot",
        mode="base",
        settings={},
        provenance={},
        started_at=None,
        finished_at=None,
    )
    return SimpleNamespace(**{**base, **fields})


def test_labels_keep_only_what_differs_and_fall_back_to_the_id():
    a, b = run("a" * 64), run("b" * 64, response_type="detailed_cot")
    assert run_labels([a, b]) == {a.id: "none_cot", b.id: "detailed_cot"}
    twin = run("c" * 64)
    labels = run_labels([a, twin])
    assert labels[a.id] != labels[twin.id] and labels[a.id].endswith("#aaaaaaaa")


def test_settings_line_names_how_a_run_was_computed():
    sessions = [
        {"started_at": "2026-01-01T12:00:00", "finished_at": "2026-01-01T12:00:30"},
        {"started_at": "2026-01-03T08:00:00", "finished_at": "2026-01-03T08:01:00"},
    ]
    computed = run(
        settings={"dtype": "bfloat16", "max_length": 512, "modules": "attn"},
        provenance={"limit": 8, "device": "cuda:0", "gpu": "NVIDIA H200", "sessions": sessions},
        started_at=START,
        finished_at=START + timedelta(days=2),
    )
    # a resumed run counts the time it computed, not the two days between its sessions
    assert computing_seconds(computed) == 90.0
    assert run_settings(computed) == (
        "bfloat16, limit 8, max length 512, modules attn, NVIDIA H200, computed in 1m30s"
    )
    imported = run(started_at=START, finished_at=START + timedelta(seconds=4.25))
    assert run_settings(imported) == "all samples, computed in 4.2 s"


def test_durations_stay_short():
    assert [duration(s) for s in (0.04, 59.9, 61, 3600 * 2 + 5 * 60)] == [
        "0.0 s",
        "59.9 s",
        "1m01s",
        "2h05m",
    ]
