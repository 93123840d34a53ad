"""Turning a sample into tokens and finding where its response starts, as the paper does.

The statistics are of the loss on response tokens only, so the boundary between prompt and
response decides what is measured. The paper's scripts find it by tokenizing the whole text and
counting the tokens of the text before the response; we do the same so that numbers are
comparable with the paper's released files, even where a BPE merge straddles the boundary.

Base mode: ``prompt + "\n" + response`` (prompt = instruction, plus ``"\n" + input``).
Instruct mode: the tokenizer's chat template with a system message (dropped when the template
rejects a system role) and the generation prompt, then the response. Special tokens: base mode
lets the tokenizer add them (BOS) as the paper's scripts do; instruct mode does not, since the
chat template writes its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerscope.analysis.base.errors import LayerscopeError
from layerscope.analysis.base.records import ComputeSettings, Sample


@dataclass(frozen=True)
class EncodedSample:
    """Token ids of one sample, cut to max_length, with the response boundary."""

    index: int
    input_ids: list[int]
    response_start: int  # first response token position

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def prompt_tokens(self) -> int:
        return self.response_start

    @property
    def response_tokens(self) -> int:
        """Response tokens that enter the loss (a token at position 0 has no prediction)."""
        return self.length - max(self.response_start, 1)


class SampleSkipped(LayerscopeError, ValueError):
    """This sample cannot be measured; the message is the reason recorded in the cache."""


def prompt_text(sample: Sample, tokenizer: Any, settings: ComputeSettings) -> str:
    """The text that comes before the response."""
    if settings.mode == "base":
        return sample.prompt + "\n"
    if not getattr(tokenizer, "chat_template", None):
        raise SampleSkipped("instruct mode needs a chat template; this tokenizer has none")
    user = {"role": "user", "content": sample.prompt}
    messages = [{"role": "system", "content": settings.system_prompt}, user]
    if not settings.system_prompt:
        messages = [user]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # templates raise their own error types for a system role
        if len(messages) == 1:
            raise
        text = tokenizer.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    return str(text)


def encode_sample(sample: Sample, tokenizer: Any, settings: ComputeSettings) -> EncodedSample:
    """Tokenize prompt + response and locate the response, or raise SampleSkipped."""
    if not sample.output.strip():
        raise SampleSkipped("empty response")
    prefix = prompt_text(sample, tokenizer, settings)
    add_special = settings.mode == "base"
    whole = tokenizer(prefix + sample.output, add_special_tokens=add_special)["input_ids"]
    start = len(tokenizer(prefix, add_special_tokens=add_special)["input_ids"])
    ids = list(whole[: settings.max_length])
    encoded = EncodedSample(sample.index, ids, start)
    if encoded.response_tokens <= 0:
        raise SampleSkipped(
            f"no response token left after truncation to max_length={settings.max_length} "
            f"(prompt is {start} tokens)"
        )
    return encoded
