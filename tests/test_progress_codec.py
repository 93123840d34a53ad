"""The JSON-lines progress protocol: every record kind survives a round trip, the lines keep the
format programs follow, and a malformed line says what is wrong with it.

The CLI's side is checked end to end in test_shard (a real compute) and the explorer's in
test_tui_subprocess_run (a real subprocess); here each kind of line is checked on its own.
"""

from __future__ import annotations

import json

import pytest

from layerscope.analysis.base.records import LoadStage
from layerscope.analysis.runs.planning import PlannedRun
from layerscope.analysis.runs.progress_codec import (
    NotAProgressLine,
    PlanEvent,
    ProgressEvent,
    ProgressLineError,
    StageEvent,
    decode,
    encode,
)
from layerscope.analysis.runs.runner import RunProgress

RECORDS = [
    PlanEvent(
        (
            PlannedRun("a" * 64, "math", "none_cot", total=12, cached=4, samples_in_file=40),
            PlannedRun("b" * 64, "math", "detailed_cot", total=12, cached=0),
        )
    ),
    PlanEvent(()),
    StageEvent(LoadStage("weights", "loading weights", 3, 291), elapsed=1.25),
    StageEvent(LoadStage("imports", "importing torch and transformers"), elapsed=0.0),
    ProgressEvent(
        RunProgress(
            run_id="a" * 64,
            dataset="math",
            response_type="none_cot",
            done=6,
            total=12,
            samples_per_second=2.5,
            eta_seconds=2.4,
            mean_loss=1.875,
            status="running",
            message="1 sample skipped: out of memory",
            skipped=1,
            failed=0,
            tokens_per_second=812.5,
            memory_bytes=3 * 2**30,
            memory_peak_bytes=5 * 2**30,
            memory_kind="cuda",
        ),
        elapsed=12.345,
    ),
    ProgressEvent(
        RunProgress("b" * 64, "math", "detailed_cot", 0, 12, 0.0, None, None, "cached"),
        elapsed=0.5,
    ),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_every_record_kind_decodes_to_an_equal_value(record):
    line = encode(record)
    assert "\n" not in line
    assert decode(line) == record
    assert decode(line + "\n") == record  # as read from a pipe


def test_every_record_kind_is_covered():
    assert {type(r) for r in RECORDS} == {PlanEvent, StageEvent, ProgressEvent}


def test_the_lines_keep_their_format():
    """What a program following `compute --progress-format jsonl` reads (README, --help)."""
    plan, _, stage, _, progress, _ = (json.loads(encode(r)) for r in RECORDS)
    assert plan == {
        "event": "plan",
        "runs": [
            {
                "run_id": "a" * 64,
                "dataset": "math",
                "response_type": "none_cot",
                "total": 12,
                "cached": 4,
                "samples_in_file": 40,
            },
            {
                "run_id": "b" * 64,
                "dataset": "math",
                "response_type": "detailed_cot",
                "total": 12,
                "cached": 0,
                "samples_in_file": 0,
            },
        ],
    }
    assert list(stage) == ["event", "step", "description", "done", "total", "elapsed"]
    keys = list(progress)
    assert keys[0] == "event" and keys[-1] == "elapsed"
    assert progress["status"] == "running" and progress["memory_kind"] == "cuda"


def test_elapsed_travels_to_the_millisecond():
    record = decode(encode(StageEvent(LoadStage("device", "moving to cuda"), 1.23456)))
    assert isinstance(record, StageEvent) and record.elapsed == 1.235


def test_an_integer_in_a_float_field_reads_as_a_float():
    line = encode(RECORDS[-1]).replace('"samples_per_second": 0.0', '"samples_per_second": 0')
    record = decode(line)
    assert isinstance(record, ProgressEvent)
    assert isinstance(record.progress.samples_per_second, float)


@pytest.mark.parametrize(
    "line",
    [
        "Loading checkpoint shards: 100%",
        "[1, 2]",
        '{"message": "a library printing JSON"}',
        '{"event": "heartbeat", "rank": 1}',  # a kind from a newer version
    ],
)
def test_a_line_that_is_no_record_is_told_apart(line):
    with pytest.raises(NotAProgressLine, match=r"^progress line: "):
        decode(line)


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ('{"event": "stage", "description": "x", "elapsed": 1}', "stage lacks 'step'"),
        (
            '{"event": "stage", "step": "weights", "description": "x", "done": "3", "elapsed": 1}',
            "stage field 'done' is '3', not int | None",
        ),
        ('{"event": "stage", "step": "weights", "description": "x"}', "'elapsed' is None"),
        ('{"event": "plan", "runs": {"a": 1}}', "'plan' needs a list 'runs'"),
        ('{"event": "plan", "runs": [{"run_id": "a"}]}', "plan run lacks 'dataset'"),
        ('{"event": "progress", "run_id": "a"}', "progress lacks 'dataset'"),
        (
            json.dumps({**json.loads(encode(RECORDS[-1])), "done": True}),
            "progress field 'done' is True, not int",
        ),
    ],
)
def test_a_malformed_record_says_what_is_wrong(line, said):
    with pytest.raises(ProgressLineError, match=r"^progress line: ") as raised:
        decode(line)
    assert not isinstance(raised.value, NotAProgressLine)
    assert said in str(raised.value)
