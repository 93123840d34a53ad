"""Build the bundled tiny model (`samples/tiny/`): tokenizer, Llama config, a few minutes of training.

Why a trained model and not random weights: layerscope's statistics only mean something if the
model reacts to the text. A randomly initialised model has the same loss on a correct and an
irrelevant response, so every comparison the tool offers would be flat. This model is trained
on generated text of the same kinds as the bundled samples (math answered three ways, invented
knowledge answered briefly or at length), but drawn from other seeds, in both the base format
(prompt + "\\n" + response) and the chat template. It learns to restate the question's names
and numbers, so correct responses are clearly more likely than irrelevant ones, while staying
small enough (float32, under 8 MB) to ship inside the package and run in tests on a laptop.

The architecture is a real `LlamaForCausalLM` with grouped-query attention, so layerscope's code
paths for q/k/v/o shapes, GQA and chat templates are exercised exactly as on large models.

The tokenizer adds no BOS or EOS by itself (as Qwen's does not): `tokenizer(text)` returns the
text's tokens only, so a prompt tokenizes the same with or without `add_special_tokens`, and the
chat template (which writes the EOS after each assistant turn) never gets a doubled BOS.

Deterministic: fixed seeds, deterministic torch algorithms, a fixed number of CPU threads and
a fixed number of steps; on the same machine and library versions two runs write identical
files. Run `python samples/build_tiny_model.py` (about 4.5 minutes on 2 idle cores).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from layerscope.samples.generate_datasets import (
    KNOWLEDGE_COUNT,
    KNOWLEDGE_RESPONSE_TYPES,
    KNOWLEDGE_SEED,
    MATH_COUNT,
    MATH_RESPONSE_TYPES,
    MATH_SEED,
    knowledge_topics,
    math_problems,
)
from layerscope.samples.knowledge_text import INVENTED_NAME

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "tiny"

# Training text seeds: deliberately different from MATH_SEED / KNOWLEDGE_SEED of the samples.
TRAIN_MATH_SEED = 7_000_001
TRAIN_KNOWLEDGE_SEED = 7_000_002
FORMAT_SEED = 7_000_003
TORCH_SEED = 7_000_004
TRAIN_MATH_COUNT = 3000
TRAIN_KNOWLEDGE_COUNT = 3000

VOCAB_SIZE = 2048
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SYSTEM_PROMPTS = ("You are a helpful assistant.", "Answer the question.", "")

# Jinja chat template: "<|role|>\ncontent\n" per message, the end-of-sequence token after each
# assistant turn, and "<|assistant|>\n" as the generation prompt.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('Only system, user and assistant roles are supported, not ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{%- if message['role'] == 'assistant' -%}{{ eos_token }}{%- endif -%}"
    "{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)

HIDDEN_SIZE = 128
INTERMEDIATE_SIZE = 352
LAYERS = 4
ATTENTION_HEADS = 4
KEY_VALUE_HEADS = 2  # grouped-query attention: two query heads share each key/value head
MAX_POSITIONS = 2048
# Chosen by measuring the correct/irrelevant loss gap of the bundled samples: with these
# settings the model learns to copy numbers and names from the prompt at about step 900.
SEQUENCE_LENGTH = 384
BATCH_SIZE = 8
STEPS = 1350
PEAK_LR = 2e-3
WARMUP_STEPS = 40
WEIGHT_DECAY = 0.05


def training_pairs() -> list[tuple[str, str]]:
    """(prompt, response) pairs of every response type, none of them a bundled sample."""
    bundled_math = {p.question for p in math_problems(MATH_SEED, MATH_COUNT)}
    bundled_names = {t.name for t in knowledge_topics(KNOWLEDGE_SEED, KNOWLEDGE_COUNT)}
    pairs: list[tuple[str, str]] = []
    for problem in math_problems(TRAIN_MATH_SEED, TRAIN_MATH_COUNT):
        if problem.question not in bundled_math:
            pairs.extend((problem.question, problem.response(t)) for t in MATH_RESPONSE_TYPES)
    for topic in knowledge_topics(TRAIN_KNOWLEDGE_SEED, TRAIN_KNOWLEDGE_COUNT):
        if topic.name not in bundled_names:
            pairs.extend((topic.instruction, topic.response(t)) for t in KNOWLEDGE_RESPONSE_TYPES)
    return pairs


def chat_text(prompt: str, response: str, system: str) -> str:
    """What CHAT_TEMPLATE renders for one exchange (`build` checks it against the template)."""
    text = f"<|system|>\n{system}\n" if system else ""
    return f"{text}<|user|>\n{prompt}\n<|assistant|>\n{response}{EOS}\n"


def training_documents(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Every pair once in the base format and once through the chat template, shuffled."""
    rng = random.Random(FORMAT_SEED)
    documents = []
    for prompt, response in pairs:
        documents.append(f"{prompt}\n{response}{EOS}")
        documents.append(chat_text(prompt, response, rng.choice(SYSTEM_PROMPTS)))
    rng.shuffle(documents)
    return documents


def train_tokenizer(documents: Sequence[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE (digits split one by one, as Llama does) wrapped for transformers.

    The BPE is trained on the documents with the invented names removed. Otherwise it spends
    its spare merges on rare name fragments (" Talri" + "spire"), whose embeddings a few
    minutes of training never learn well enough to copy; split into frequent pieces
    (" T" "al" "ri" ...), names are copied from the question like numbers are, which is what
    makes a relevant response measurably more likely than an irrelevant one.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS, EOS, PAD, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = []
    for document in documents:
        for marker in (EOS, *ROLE_TOKENS):
            document = document.replace(marker, "")
        texts.append(INVENTED_NAME.sub("", document))
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=list(ROLE_TOKENS),
        model_max_length=MAX_POSITIONS,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def pack(documents: Sequence[list[int]], length: int, pad_id: int) -> torch.Tensor:
    """Whole documents packed greedily into rows that each start at a document start.

    Rows start at a document start because that is how layerscope feeds samples (one per row,
    from position 0); documents longer than a row are cut.
    """
    rows: list[list[int]] = []
    row: list[int] = []
    for tokens in documents:
        tokens = tokens[:length]
        if len(row) + len(tokens) > length:
            rows.append(row + [pad_id] * (length - len(row)))
            row = []
        row.extend(tokens)
    if row:
        rows.append(row + [pad_id] * (length - len(row)))
    return torch.tensor(rows, dtype=torch.long)


def batches(rows: torch.Tensor, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """`steps` batches drawn epoch by epoch in a seeded order."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(rows), generator=generator)
    position = 0
    for _ in range(steps):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(rows), generator=generator), 0
        yield rows[order[position : position + batch_size]]
        position += batch_size


def learning_rate(step: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < WARMUP_STEPS:
        return PEAK_LR * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
    return PEAK_LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    model: LlamaForCausalLM, rows: torch.Tensor, pad_id: int, steps: int, log_every: int
) -> None:
    """AdamW on the next-token loss of every non-padding token."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0}],
        lr=PEAK_LR,
        betas=(0.9, 0.95),
    )
    model.train()
    started, running = time.monotonic(), 0.0
    for step, batch in enumerate(batches(rows, BATCH_SIZE, steps, TORCH_SEED)):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps)
        labels = batch.masked_fill(batch == pad_id, -100)
        attention_mask = (batch != pad_id).long()
        loss = model(
            input_ids=batch, attention_mask=attention_mask, labels=labels, use_cache=False
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running += loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            count = (step % log_every) + 1
            print(
                f"step {step + 1:4d}/{steps}  loss {running / count:.3f}  "
                f"lr {learning_rate(step, steps):.2e}  {time.monotonic() - started:6.1f}s",
                flush=True,
            )
            running = 0.0
    model.eval()


def make_tokenizer_config_portable(path: Path) -> None:
    """Rewrite tokenizer_config.json so that transformers 4 loads it too, not only 5.

    transformers 5 names the class "TokenizersBackend", lists "extra_special_tokens" and keeps
    the chat template only in chat_template.jinja; transformers 4 knows the class as
    "PreTrainedTokenizerFast", reads "additional_special_tokens" and (before 4.50) finds the
    template only inside tokenizer_config.json. Both versions read the rewritten file alike.
    """
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["additional_special_tokens"] = config.pop("extra_special_tokens", list(ROLE_TOKENS))
    config["chat_template"] = CHAT_TEMPLATE
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build(output: Path, steps: int, threads: int, log_every: int) -> None:
    random.seed(TORCH_SEED)
    torch.manual_seed(TORCH_SEED)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)

    pairs = training_pairs()
    documents = training_documents(pairs)
    print(f"{len(pairs)} training pairs, {len(documents)} documents", flush=True)
    tokenizer = train_tokenizer(documents)
    example = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
    ]
    rendered = tokenizer.apply_chat_template(example, tokenize=False)
    if rendered != chat_text("Q", "A", "S"):
        raise RuntimeError(f"chat template renders {rendered!r}, training text assumes otherwise")

    encoded = tokenizer(documents, add_special_tokens=False)["input_ids"]
    rows = pack(encoded, SEQUENCE_LENGTH, tokenizer.pad_token_id)
    total_tokens = int((rows != tokenizer.pad_token_id).sum())
    print(
        f"vocabulary {len(tokenizer)}, {rows.shape[0]} rows of {SEQUENCE_LENGTH} tokens, "
        f"{total_tokens} tokens; {steps * BATCH_SIZE / rows.shape[0]:.2f} epochs",
        flush=True,
    )

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=LAYERS,
        num_attention_heads=ATTENTION_HEADS,
        num_key_value_heads=KEY_VALUE_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    model = LlamaForCausalLM(config)
    print(f"{sum(p.numel() for p in model.parameters())} parameters", flush=True)
    train(model, rows, tokenizer.pad_token_id, steps, log_every)

    output.mkdir(parents=True, exist_ok=True)
    for stale in output.iterdir():
        if stale.is_file():
            stale.unlink()
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    make_tokenizer_config_portable(output / "tokenizer_config.json")
    for path in sorted(output.iterdir()):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="model folder")
    parser.add_argument("--steps", type=int, default=STEPS, help="optimizer steps")
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads (change it and results change)"
    )
    parser.add_argument("--log-every", type=int, default=20, help="steps between loss lines")
    args = parser.parse_args(argv)
    build(args.output, args.steps, args.threads, args.log_every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
