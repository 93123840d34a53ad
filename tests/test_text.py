"""Encoding a sample: a huge record is cut by characters before it is tokenized, and every
sample still gets the tokens, the response boundary and the skip decision it got when its whole
text was tokenized."""

from __future__ import annotations

from typing import Any

import pytest
from modelkit import make_tokenizer

from layerscope.analysis.base.records import ComputeSettings, Sample
from layerscope.analysis.compute import text
from layerscope.analysis.compute.text import SampleSkipped, encode_sample, prompt_text

STEP = "Step: 12 plus 13 gives 25, so the answer is 25. "


class CountingTokenizer:
    """A tokenizer that notes how many characters each call was given."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.lengths: list[int] = []

    def __call__(self, text: str, **kwargs: Any) -> Any:
        self.lengths.append(len(text))
        return self.tokenizer(text, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def tokenized_whole(sample: Sample, tokenizer: Any, settings: ComputeSettings) -> Any:
    """What encoding was before the cut: (ids, response start), or the skip, from whole texts."""
    prefix = prompt_text(sample, tokenizer, settings)
    special = settings.mode == "base"
    whole = tokenizer(prefix + sample.output, add_special_tokens=special)["input_ids"]
    start = len(tokenizer(prefix, add_special_tokens=special)["input_ids"])
    ids = list(whole[: settings.max_length])
    return "skipped" if len(ids) - max(start, 1) <= 0 else (ids, start)


def encoded(sample: Sample, tokenizer: Any, settings: ComputeSettings) -> Any:
    try:
        result = encode_sample(sample, tokenizer, settings)
    except SampleSkipped:
        return "skipped"
    return result.input_ids, result.response_start


SAMPLES = [
    Sample(0, "What is 12 + 13?", "25"),
    Sample(1, "What is 12 + 13?", STEP * 40),
    Sample(2, STEP * 30, "The answer is 25."),
    Sample(3, "Add these.", STEP * 8, input="12 and 13"),
    Sample(4, "Q?", " " * 3000 + "12" * 500),
]


@pytest.mark.parametrize("mode", ["base", "instruct"])
@pytest.mark.parametrize("cut_factor", [None, 1])
def test_every_sample_encodes_as_when_its_whole_text_was_tokenized(
    mode: str, cut_factor: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if cut_factor is not None:  # one character per token: every cut is too short and grows
        monkeypatch.setattr(text, "CHARACTERS_PER_TOKEN", cut_factor)
    tokenizer = make_tokenizer()
    outcomes = set()
    for max_length in (8, 40, 64, 300, 2048):
        settings = ComputeSettings(mode=mode, max_length=max_length)  # type: ignore[arg-type]
        for sample in SAMPLES:
            expected = tokenized_whole(sample, tokenizer, settings)
            assert encoded(sample, tokenizer, settings) == expected, (sample.index, max_length)
            outcomes.add(expected == "skipped")
    assert outcomes == {True, False}  # both decisions were checked


def test_a_huge_response_is_truncated_without_tokenizing_it_whole() -> None:
    tokenizer = CountingTokenizer(make_tokenizer())
    settings = ComputeSettings(max_length=64)
    huge = Sample(0, "What is 12 + 13?", STEP * 400_000)  # 20 MB
    result = encode_sample(huge, tokenizer, settings)
    assert len(huge.output) > 19_000_000
    assert max(tokenizer.lengths) <= 64 * text.CHARACTERS_PER_TOKEN
    # The same tokens as the whole text gives (its first 20,000 characters stand for it here).
    smaller = Sample(0, huge.instruction, huge.output[:20_000])
    assert (result.input_ids, result.response_start) == tokenized_whole(
        smaller, tokenizer.tokenizer, settings
    )
    assert result.length == 64


def test_a_huge_prompt_is_skipped_without_tokenizing_it_whole() -> None:
    tokenizer = CountingTokenizer(make_tokenizer())
    settings = ComputeSettings(max_length=64)
    huge = Sample(0, STEP * 400_000, "25")
    with pytest.raises(SampleSkipped) as skipped:
        encode_sample(huge, tokenizer, settings)
    assert str(skipped.value) == (
        "no response token left after truncation to max_length=64 (prompt is over 64 tokens)"
    )
    assert max(tokenizer.lengths) <= 64 * text.CHARACTERS_PER_TOKEN
