"""Turning a sample into tokens and finding where its response starts, as the paper does.

The statistics are of the loss on response tokens only, so the boundary between prompt and
response decides what is measured. The paper's scripts find it by tokenizing the whole text and
counting the tokens of the text before the response; we do the same so that numbers are
comparable with the paper's released files, even where a BPE merge straddles the boundary.

Base mode: ``prompt + "\n" + response`` (prompt = instruction, plus ``"\n" + input``).
Instruct mode: the tokenizer's chat template with a system message (dropped when the template
rejects a system role) and the generation prompt, then the response; a chat record's turns go
through the template as they are (its own system turn replaces the setting's). Special tokens:
base mode lets the tokenizer add them (BOS) as the paper's scripts do; instruct mode does not,
since the chat template writes its own.

Why texts are cut by characters before they are tokenized: only the first ``max_length`` tokens
are measured, but tokenizing a 20 MB record whole takes gigabytes (a fast tokenizer keeps ids,
offsets and masks for every token). A text is cut to :data:`CHARACTERS_PER_TOKEN` characters per
token needed and tokenized; a cut changes only the tokens at its end (the word it splits), so
when the cut text still gives :data:`CUT_MARGIN_TOKENS` more tokens than needed, its first ones
are those of the whole text. Where it gives fewer (tokens longer than the factor), the cut grows
until it does or the whole text is taken. A text shorter than the first cut (every sample of a
normal length) is tokenized whole, exactly as before.
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
    turns = [{"role": role, "content": text} for role, text in sample.turns]
    if not turns:
        turns = [{"role": "user", "content": sample.prompt}]
    system = [{"role": "system", "content": settings.system_prompt}]
    if not settings.system_prompt or turns[0]["role"] == "system":
        system = []  # a chat record's own system turn stands
    try:
        text = tokenizer.apply_chat_template(
            system + turns, tokenize=False, add_generation_prompt=True
        )
    except Exception as error:  # templates raise their own error types for a system role
        if not system:
            if sample.turns:  # a conversation this template cannot write (its roles, order)
                raise SampleSkipped(f"the chat template refused the turns: {error}") from None
            raise
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return str(text)


# Characters of text tokenized, at first, per token needed. Tokens average three to five
# characters in natural text and code; 32 leaves room for long runs of spaces or digits.
CHARACTERS_PER_TOKEN = 32
# Tokens beyond those needed that a cut text must give for its first ones to be trusted: a cut
# changes only the tokens of the word it splits (and a special token a tokenizer appends).
CUT_MARGIN_TOKENS = 16


def first_tokens(
    tokenizer: Any, text: str, needed: int, *, add_special_tokens: bool
) -> tuple[list[int], bool]:
    """The token ids of ``text`` without tokenizing more of it than the first ``needed`` ids
    require: (all its ids, True), or (at least its first ``needed`` ids, False) when the text
    was cut (see the module documentation)."""
    limit = max(needed, 1) * CHARACTERS_PER_TOKEN
    while True:
        if len(text) <= limit:
            ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
            return list(ids), True
        ids = tokenizer(text[:limit], add_special_tokens=add_special_tokens)["input_ids"]
        if len(ids) >= needed + CUT_MARGIN_TOKENS:
            return list(ids[:needed]), False
        limit *= 4


def encode_sample(sample: Sample, tokenizer: Any, settings: ComputeSettings) -> EncodedSample:
    """Tokenize prompt + response and locate the response, or raise SampleSkipped.

    The response starts after the tokens of the prompt text on its own; only the first
    max_length tokens are kept, and no more of a long text is tokenized than they need.
    """
    if not sample.output.strip():
        raise SampleSkipped("empty response")
    prefix = prompt_text(sample, tokenizer, settings)
    add_special = settings.mode == "base"
    limit = settings.max_length
    prompt, whole_prompt = first_tokens(tokenizer, prefix, limit, add_special_tokens=add_special)
    if not whole_prompt:  # the prompt alone fills max_length: no response token is left
        raise SampleSkipped(
            f"no response token left after truncation to max_length={limit} "
            f"(prompt is over {limit} tokens)"
        )
    start = len(prompt)
    ids, _whole = first_tokens(
        tokenizer, prefix + sample.output, limit, add_special_tokens=add_special
    )
    encoded = EncodedSample(sample.index, ids[:limit], start)
    if encoded.response_tokens <= 0:
        raise SampleSkipped(
            f"no response token left after truncation to max_length={limit} "
            f"(prompt is {start} tokens)"
        )
    return encoded
