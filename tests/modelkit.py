"""Small random-weight models of several architectures and a byte-level tokenizer for tests.

No model hub is reachable, so tests build what they need from configs; the tokenizer is a
byte-level BPE trained in milliseconds on a few sentences, with a chat template.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

TRAINING_TEXT = [
    "Tom has 3 apples and buys 4 more. How many apples does he have now?",
    "Step 1: Tom starts with 3 apples. Step 2: he buys 4. 3 + 4 = 7. The answer is 7.",
    "The river Alder flows through the town of Marrow and into the northern sea.",
    "A train travels 60 km in 2 hours; its speed is 30 km per hour.",
]


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TRAINING_TEXT * 4, trainer)
    return tokenizer.to_str()


def make_tokenizer(bos: bool = True) -> Any:
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_tokenizer_json())
    if bos:
        bos_id = backend.token_to_id("<s>")
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


VOCAB = 400


def config_for(architecture: str) -> Any:
    """A small config of each architecture the engine must handle."""
    from transformers import (
        Gemma2Config,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        Phi3Config,
        Qwen2Config,
    )

    common: dict[str, Any] = {"vocab_size": VOCAB}
    if architecture == "llama":
        return LlamaConfig(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **common,
        )
    if architecture == "qwen2":
        return Qwen2Config(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **common,
        )
    if architecture == "gemma2":
        return Gemma2Config(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=256,
            sliding_window=64,
            **common,
        )
    if architecture == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **common)
    if architecture == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
            **common,
        )
    if architecture == "phi3":
        return Phi3Config(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            pad_token_id=2,
            **common,
        )
    raise ValueError(architecture)


ARCHITECTURES = ("llama", "qwen2", "gemma2", "gpt2", "gpt_neox", "phi3")


def make_model(architecture: str, dtype: Any = None, seed: int = 0) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config_for(architecture))
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()
