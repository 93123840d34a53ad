"""The values the run settings take: each choice setting's choices, the max memory grammar and
the default system prompt.

These are plain constants that reach past the settings record: the records' ``Literal`` types
must agree with them, the model loader checks a dtype against them and the engine names its
factorisations by them. Kept apart from the record, a module that needs a choice does not import
every option's schema with it.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "DEVICE_MAPS",
    "DTYPES",
    "FACTORISATIONS",
    "INITS",
    "MAX_MEMORY_PATTERN",
    "METHODS",
    "MODES",
    "MODULE_SETS",
    "ROUTES",
]

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
MODES = ("base", "instruct")
MODULE_SETS = ("attn", "mlp", "all")
METHODS = ("fast", "reference")
# How the fast method's small factorisations run (analysis/compute/factorisations.py; not keyed).
FACTORISATIONS = ("per-matrix", "batched", "cpu-threads")
# Which exact route each statistic takes (analysis/compute/routes.py; not keyed): auto asks the cost model.
ROUTES = ("auto", "factors", "formed")
# trained: the model's own weights (pretrained or fine-tuned); random: the same architecture
# freshly initialised under a seed (the follow-up paper's "scratch" baseline: what of a curve is architecture, not learning).
INITS = ("trained", "random")
# In the order a user picks from: auto first, the wide float types last.
DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
# How a large model's layers are spread (accelerate through from_pretrained); none: one device.
DEVICE_MAPS = ("none", "auto", "balanced", "sequential")
# max_memory: DEVICE=SIZE pairs, DEVICE a GPU index, cpu or mps, SIZE bytes or 20GiB/500MB.
_MEMORY_PAIR = r"\s*(\d+|cpu|mps)\s*=\s*\d+(\.\d+)?\s*([KMGT]i?B)?\s*"
MAX_MEMORY_PATTERN = rf"{_MEMORY_PAIR}(,{_MEMORY_PAIR})*,?\s*"
