"""The bundled samples are reproducible, well formed, and the tiny model tells relevant from not.

Why these tests matter: every demo, tutorial and test of layerscope runs on the bundled tiny model
and datasets. If the generator stopped reproducing the committed files, nobody could check
them; if an "irrelevant" file kept a correct response, or the model scored correct and
irrelevant responses alike, the correct-vs-irrelevant comparison the tool exists for would be
flat and every downstream result meaningless.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import pytest

from layerscope.samples import generate_datasets as gen
from layerscope.samples.math_text import MATH_TEMPLATES

SAMPLES = files("layerscope.samples")
MAX_WEIGHTS_BYTES = 8 * 1024 * 1024

MATH_PAIRS = [f"math/{name}" for name in gen.MATH_FILES.values()]
KNOWLEDGE_PAIRS = [f"knowledge/{name}" for name in gen.KNOWLEDGE_FILES.values()]


@pytest.fixture(scope="module")
def samples_root() -> Iterator[Path]:
    with ExitStack() as stack:
        yield stack.enter_context(as_file(SAMPLES))


def _load(root: Path, relative: str) -> list[dict[str, str]]:
    return json.loads((root / "datasets" / relative).read_text(encoding="utf-8"))


def _irrelevant_path(relative: str) -> str:
    folder, name = relative.split("/")
    return f"{folder}{gen.SHUFFLED_SUFFIX}/{name}"


# ------------------------------------------------------------------------------------------
# (a) generators
# ------------------------------------------------------------------------------------------


def test_regenerating_reproduces_every_committed_file(tmp_path: Path, samples_root: Path) -> None:
    written = gen.write_bundled_datasets(tmp_path)
    bundled = samples_root / "datasets"
    committed = sorted(path.relative_to(bundled) for path in bundled.rglob("*.json"))
    assert sorted(path.relative_to(tmp_path) for path in written) == committed
    for relative in committed:
        assert (tmp_path / relative).read_bytes() == (bundled / relative).read_bytes(), relative


def test_generator_script_writes_the_same_files(tmp_path: Path, samples_root: Path) -> None:
    script = samples_root / "generate_datasets.py"
    command = [sys.executable, str(script), "--output", str(tmp_path)]
    subprocess.run(command, check=True, capture_output=True)
    relative = "math/math_with_cot_gpt4o.json"
    assert (tmp_path / relative).read_bytes() == (samples_root / "datasets" / relative).read_bytes()


@pytest.mark.parametrize("relative", MATH_PAIRS + KNOWLEDGE_PAIRS)
def test_irrelevant_file_is_a_derangement_of_the_correct_one(
    samples_root: Path, relative: str
) -> None:
    correct = _load(samples_root, relative)
    irrelevant = _load(samples_root, _irrelevant_path(relative))
    assert [r["instruction"] for r in irrelevant] == [r["instruction"] for r in correct]
    assert sorted(r["output"] for r in irrelevant) == sorted(r["output"] for r in correct)
    for own, shuffled in zip(correct, irrelevant, strict=True):
        assert shuffled["output"] != own["output"], own["instruction"]
    assert all(set(r) == {"instruction", "input", "output"} and r["input"] == "" for r in correct)


def test_bundled_sizes_and_file_format(samples_root: Path) -> None:
    assert len(_load(samples_root, MATH_PAIRS[0])) == gen.MATH_COUNT == 40
    assert len(_load(samples_root, KNOWLEDGE_PAIRS[0])) == gen.KNOWLEDGE_COUNT
    text = (samples_root / "datasets" / KNOWLEDGE_PAIRS[1]).read_text(encoding="utf-8")
    assert text.startswith('[\n {\n  "instruction": ') and text.endswith("}\n]\n")
    assert "–" in text  # en dashes of inventors' life dates stay readable (ensure_ascii=False)


def _check_arithmetic(text: str) -> int:
    """Evaluate every `expression = number` in a response; return how many were found."""
    plain = text.replace("\\times", "*").replace("\\div", "/")
    found = 0
    for match in re.finditer(r"(\(?\d[\d\s+\-*/()]*?) = (\d+)", plain):
        expression, result = match.group(1), int(match.group(2))
        assert eval(expression, {"__builtins__": {}}) == result, match.group(0)
        found += 1
    return found


@pytest.mark.parametrize("seed", [gen.MATH_SEED, 12345])
def test_math_responses_are_arithmetically_correct(seed: int) -> None:
    problems = gen.math_problems(seed, 60)
    assert {p.topic for p in problems} == set(MATH_TEMPLATES)
    for problem in problems:
        none, simplified, detailed = (problem.response(t) for t in gen.MATH_RESPONSE_TYPES)
        assert none == f"The answer is {problem.answer}."
        assert simplified.endswith(f"\nThe final answer is {problem.answer}")
        assert detailed.endswith(f"\n\nThe final answer is {problem.answer}")
        assert _check_arithmetic(simplified) >= 2
        assert _check_arithmetic(detailed) >= 3
        # The last computed value of the short rationale is the answer.
        assert re.findall(r"= (\d+)", simplified)[-1] == str(problem.answer)
        assert re.search(r"^1\. \*\*", detailed, re.M) and re.search(r"^2\. \*\*", detailed, re.M)
        assert len(detailed.split()) > 2 * len(simplified.split())


def test_knowledge_answers_have_the_promised_lengths() -> None:
    for topic in gen.knowledge_topics(gen.KNOWLEDGE_SEED, 60):
        assert topic.short.count(". ") == 0 and topic.short.endswith("."), topic.short
        assert 80 <= len(topic.long.split()) <= 120, topic.long
        assert topic.name in topic.instruction and topic.name in topic.long


def test_more_text_comes_from_other_seeds() -> None:
    assert gen.math_problems(7, 25) == gen.math_problems(7, 25)
    assert gen.knowledge_topics(7, 25) == gen.knowledge_topics(7, 25)
    bundled = {p.question for p in gen.math_problems(gen.MATH_SEED, gen.MATH_COUNT)}
    other = [p.question for p in gen.math_problems(gen.MATH_SEED + 1, 200)]
    assert len(set(other)) == 200 and not bundled & set(other)
    names = [t.name for t in gen.knowledge_topics(gen.KNOWLEDGE_SEED + 1, 100)]
    assert len(set(names)) == 100


# ------------------------------------------------------------------------------------------
# (b) the tiny model
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tiny:
    path: Path
    tokenizer: Any
    model: Any


@pytest.fixture(scope="module")
def tiny(samples_root: Path) -> Tiny:
    # Imported here so that the dataset tests above run without loading transformers.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = samples_root / "tiny"
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    return Tiny(path, AutoTokenizer.from_pretrained(path), model)


def test_tiny_model_is_a_small_llama_with_grouped_query_attention(tiny: Tiny) -> None:
    import torch

    path, model = tiny.path, tiny.model
    config = model.config
    assert config.model_type == "llama" and type(model).__name__ == "LlamaForCausalLM"
    assert config.num_key_value_heads < config.num_attention_heads
    assert config.max_position_embeddings >= 2048
    assert model.model.layers[0].self_attn.k_proj.weight.shape[0] < config.hidden_size
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert (path / "model.safetensors").stat().st_size <= MAX_WEIGHTS_BYTES
    assert not list(path.glob("*.py"))  # nothing that would need trust_remote_code
    # Torch-free readers (and transformers 4) find the chat template in tokenizer_config.json.
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert "<|assistant|>" in tokenizer_config["chat_template"]


def test_tiny_tokenizer_has_a_chat_template(tiny: Tiny) -> None:
    tokenizer = tiny.tokenizer
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "How old is Maya?"},
    ]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|system|>\nYou are a helpful assistant.\n<|user|>\nHow old is Maya?\n<|assistant|>\n"
    )
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": "The answer is 9."}], tokenize=False
    )
    assert full == prompt + "The answer is 9." + tokenizer.eos_token + "\n"
    for token in ("<|system|>", "<|user|>", "<|assistant|>"):
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.bos_token and tokenizer.eos_token and tokenizer.pad_token
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


# ------------------------------------------------------------------------------------------
# (c) the tiny model prefers correct responses
# ------------------------------------------------------------------------------------------


def _prompt_text(tokenizer: Any, instruction: str, chat: bool) -> str:
    if not chat:
        return instruction + "\n"  # the base format: prompt, newline, response
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": instruction},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _mean_response_loss(tiny: Tiny, records: list[dict[str, str]], chat: bool) -> float:
    """Mean over records of the mean next-token loss over the response tokens only."""
    import torch

    tokenizer, model = tiny.tokenizer, tiny.model
    losses = []
    with torch.no_grad():
        for record in records:
            prompt_text = _prompt_text(tokenizer, record["instruction"], chat)
            prompt = tokenizer(prompt_text)["input_ids"]
            full = tokenizer(prompt_text + record["output"])["input_ids"]
            assert full[: len(prompt)] == prompt  # the response starts on a token boundary
            ids = torch.tensor([full])
            labels = ids.clone()
            labels[0, : len(prompt)] = -100
            losses.append(model(input_ids=ids, labels=labels, use_cache=False).loss.item())
    return sum(losses) / len(losses)


# Measured when the model was built (base format; the chat format is within 0.01):
#   math_no_cot 0.83 vs 1.47 (ratio 0.57), math_with_cot 0.26 vs 1.40 (0.19),
#   math_with_cot_gpt4o 0.11 vs 0.28 (0.41), knowledge_short 0.82 vs 1.40 (0.58),
#   knowledge_long 0.40 vs 0.54 (0.73). An untrained or prompt-blind model gives ratios near 1.
MARGINS = {"math": 0.7, "knowledge": 0.85}


@pytest.fixture(scope="module")
def response_loss(tiny: Tiny, samples_root: Path) -> Any:
    """``_mean_response_loss`` of a samples file in a format, each computed once in this module
    (a forward pass per record): the fast-to-slow test reads the base-format math losses that
    the pair tests computed."""

    @functools.cache
    def loss(relative: str, chat: bool) -> float:
        return _mean_response_loss(tiny, _load(samples_root, relative), chat)

    return loss


@pytest.mark.parametrize("chat", [False, True], ids=["base", "chat"])
@pytest.mark.parametrize("relative", MATH_PAIRS + KNOWLEDGE_PAIRS)
def test_tiny_model_finds_correct_responses_more_likely(
    response_loss: Any, relative: str, chat: bool
) -> None:
    correct = response_loss(relative, chat)
    irrelevant = response_loss(_irrelevant_path(relative), chat)
    assert correct < MARGINS[relative.split("/")[0]] * irrelevant, (correct, irrelevant)


def test_tiny_model_loss_falls_from_fast_to_slow_thinking(response_loss: Any) -> None:
    # Per token, a rationale is easier to predict than a bare answer (as in the paper's data).
    none, simplified, detailed = (response_loss(relative, chat=False) for relative in MATH_PAIRS)
    assert none > simplified > detailed
