"""Length-bucketed batches under a token budget: every sample once, the budget kept, and the
same per-sample numbers as one sample at a time; the default budget from free memory."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from modelkit import config_for, make_model, make_tokenizer
from test_engine import assert_results_close
from test_runner import request_for, write_dataset

from layerscope.analysis.base.records import ComputeSettings, Sample
from layerscope.analysis.compute import batching, engine
from layerscope.analysis.compute.batching import (
    CPU_TOKENS_PER_BATCH,
    MAX_TOKENS_PER_BATCH,
    MIN_TOKENS_PER_BATCH,
    bytes_per_token,
    default_tokens_per_batch,
    plan_batches,
)
from layerscope.analysis.compute.engine import compute_statistics
from layerscope.analysis.compute.text import encode_sample
from layerscope.analysis.models.loading import loaded_from_objects

# One-line answers beside long chains of thought, interleaved as a dataset mixes them.
MIXED = [
    Sample(
        i,
        f"What is {i} + {i + 1}?",
        (f"Step: {i} plus {i + 1} gives {2 * i + 1}. " * (12 if i % 3 == 0 else 1))
        + f"The answer is {2 * i + 1}.",
    )
    for i in range(9)
]


def test_samples_of_similar_length_share_a_batch_within_the_budget():
    lengths = [900, 40, 35, 880, 50, 30, 910, 45]
    batches = plan_batches(lengths, tokens_per_batch=2000, max_rows=8)
    assert batches == [[0, 3], [1, 2, 4, 5, 7], [6]]
    for batch in batches:
        assert max(lengths[i] for i in batch) * len(batch) <= 2000
    # In file order the same rows would pad the short answers to the long ones.
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded < max(lengths) * len(lengths) / 2


def test_rows_are_capped_and_a_long_sample_gets_a_batch_of_its_own():
    assert plan_batches([10] * 5, tokens_per_batch=1000, max_rows=2) == [[0, 1], [2, 3], [4]]
    assert plan_batches([5000, 10], tokens_per_batch=100) == [[0], [1]]
    assert plan_batches([], tokens_per_batch=100) == []
    with pytest.raises(ValueError, match="tokens per batch"):
        plan_batches([1], tokens_per_batch=0)


@given(
    st.lists(st.integers(min_value=1, max_value=2000), max_size=60),
    st.integers(min_value=1, max_value=8000),
    st.integers(min_value=1, max_value=16),
)
def test_every_sample_once_budget_kept_and_order_follows_the_file(lengths, budget, rows):
    batches = plan_batches(lengths, budget, rows)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(batch == sorted(batch) and 1 <= len(batch) <= rows for batch in batches)
    assert [b[0] for b in batches] == sorted(b[0] for b in batches)
    for batch in batches:
        if len(batch) > 1:
            assert max(lengths[i] for i in batch) * len(batch) <= budget
    if rows == 1:
        assert flat == list(range(len(lengths)))


def test_default_budget_on_a_cpu_is_fixed_and_on_cuda_follows_free_memory():
    config = config_for("llama")
    assert default_tokens_per_batch(torch.device("cpu"), config, 4) == CPU_TOKENS_PER_BATCH
    cuda = torch.device("cuda:0")
    per_token = bytes_per_token(config, 2)
    free = 10_000 * per_token
    asked = []

    def available(device):
        asked.append(device)
        return free

    budget = default_tokens_per_batch(cuda, config, 2, available)
    assert asked == [cuda]
    assert budget == 5_000  # half the free memory, over the estimate per token
    assert default_tokens_per_batch(cuda, config, 2, lambda d: 0) == MIN_TOKENS_PER_BATCH
    huge = default_tokens_per_batch(cuda, config, 2, lambda d: 1 << 60)
    assert huge == MAX_TOKENS_PER_BATCH


def test_the_per_token_estimate_grows_with_the_model_and_its_dtype():
    small = config_for("llama")
    llama_7b = type(small)(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, vocab_size=32000
    )
    assert bytes_per_token(small, 4) == 2 * bytes_per_token(small, 2) - 400 * 8
    # About 7.7 MB per token for a 7B model in bfloat16: 8k tokens in 62 GB.
    assert 7e6 < bytes_per_token(llama_7b, 2) < 8.5e6
    gpt2 = config_for("gpt2")  # n_embd / n_layer, no intermediate size: 4 x hidden
    assert bytes_per_token(gpt2, 4) == 2 * (12 * 32 + 6 * 128) * 4 + 400 * 12


def test_bucketed_batches_give_the_numbers_of_batch_size_one_in_float32():
    loaded = loaded_from_objects(make_model("llama", torch.float32), make_tokenizer())
    lengths = [encode_sample(s, loaded.tokenizer, ComputeSettings()).length for s in MIXED]
    budget = 3 * max(lengths)  # several passes, short ones several to a pass
    bucketed_settings = ComputeSettings(modules="all", batch_size=8, tokens_per_batch=budget)
    batches = list(compute_statistics(loaded, MIXED, bucketed_settings))
    assert len(batches) > 1 and any(len(b.results) > 2 for b in batches)
    assert [b.done for b in batches] == sorted(b.done for b in batches)
    assert batches[-1].done == batches[-1].total == len(MIXED)
    for batch in batches:  # the budget holds for every pass of more than one sample
        rows = [lengths[r.index] for r in batch.results]
        assert len(rows) == 1 or max(rows) * len(rows) <= budget
    bucketed = sorted((r for b in batches for r in b.results), key=lambda r: r.index)
    single = [
        r
        for b in compute_statistics(loaded, MIXED, ComputeSettings(modules="all", batch_size=1))
        for r in b.results
    ]
    assert [r.index for r in bucketed] == [s.index for s in MIXED]
    assert_results_close(bucketed, single, 1e-4)


def test_passes_group_by_length_not_file_order(monkeypatch):
    loaded = loaded_from_objects(make_model("llama", torch.float32), make_tokenizer())
    passes: list[list[int]] = []
    real = engine._fast_batch

    def recording(loaded, targets, encoded, settings, timer):
        passes.append([e.length for e in encoded])
        return real(loaded, targets, encoded, settings, timer)

    monkeypatch.setattr(engine, "_fast_batch", recording)
    settings = ComputeSettings(batch_size=3, tokens_per_batch=10_000, cosines=False)
    list(compute_statistics(loaded, MIXED, settings))
    lengths = [encode_sample(s, loaded.tokenizer, settings).length for s in MIXED]
    long_ones = {length for length in lengths if length > 100}
    assert len(long_ones) == 3  # samples 0, 3, 6
    assert sorted(length for batch in passes for length in batch) == sorted(lengths)
    assert any(set(batch) <= long_ones for batch in passes)  # the long ones padded together
    padded = sum(max(batch) * len(batch) for batch in passes)
    in_file_order = sum(max(lengths[i : i + 3]) * 3 for i in range(0, 9, 3))
    assert padded < 0.6 * in_file_order


def test_unencodable_samples_come_with_the_first_batch_and_count_once():
    loaded = loaded_from_objects(make_model("llama", torch.float32), make_tokenizer())
    samples = [Sample(0, "Q?", "   "), *MIXED[1:3], Sample(5, "Q?", "")]
    batches = list(compute_statistics(loaded, samples, ComputeSettings(batch_size=1)))
    assert [s.index for s in batches[0].skipped] == [0, 5]
    assert [b.done for b in batches] == [3, 4]
    only_skipped = list(compute_statistics(loaded, samples[:1], ComputeSettings()))
    assert [(len(b.results), len(b.skipped), b.done) for b in only_skipped] == [(0, 1, 1)]


def test_memory_in_use_on_a_cpu_is_the_process_resident_set():
    memory = batching.memory_in_use(torch.device("cpu"))
    assert memory is not None and memory.kind == "rss"
    assert 10 * 2**20 < memory.current <= memory.peak
    assert batching.memory_in_use(torch.device("meta")) is None


def test_runner_progress_tells_tokens_per_second_and_memory(tmp_path):
    from layerscope.analysis.runs.runner import execute
    from layerscope.app.cli.progress_bars import memory_text, throughput
    from layerscope.app.tui.widgets.frame.progress_row import progress_details

    model_folder = tmp_path / "small-llama"
    make_model("llama").save_pretrained(model_folder)
    make_tokenizer().save_pretrained(model_folder)
    request = request_for(model_folder, write_dataset(tmp_path / "data", 7))
    request.settings = replace(request.settings, tokens_per_batch=64)
    updates = list(execute(request, tmp_path / "c.duckdb"))
    computed = [u for u in updates if u.status == "running" and u.done]
    assert computed and updates[-1].status == "complete"
    last = computed[-1]
    # Each sample is "What is i + (i+1)?" with its answer: about 10 to 16 tokens.
    assert 8 * last.samples_per_second < last.tokens_per_second < 20 * last.samples_per_second
    assert last.memory_kind == "rss" and 0 < last.memory_bytes <= last.memory_peak_bytes
    assert re.fullmatch(r"\d+\.\d\d/s \S+ tok/s", throughput(last)), throughput(last)
    assert memory_text(last).startswith("rss ") and memory_text(last).endswith("G")
    line = progress_details(last)
    assert "tok/s · ETA" in line and " · rss " in line
    assert line.index("ETA") < 40  # what matters stays inside an 80-column row's details
