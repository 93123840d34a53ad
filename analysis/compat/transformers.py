"""transformers' internals: which modules of a model must stay whole on one device.

Why: spreading a freshly initialised model over devices (``--init random`` with a device map)
goes through accelerate, which must be told the modules it may not split (a decoder layer, whose
residual connection needs its parts together); ``from_pretrained`` reads that list from the
model class's private ``_no_split_modules``, and there is no public accessor.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LIBRARY", "missing_internals", "no_split_modules"]

LIBRARY = "transformers"


def no_split_modules(model: Any) -> list[str]:
    """The class names of ``model``'s modules that must stay on one device ([] if none)."""
    return list(getattr(model, "_no_split_modules", None) or [])


def missing_internals() -> list[str]:
    """What the installed transformers lacks of what this module uses."""
    from transformers import PreTrainedModel

    if not hasattr(PreTrainedModel, "_no_split_modules"):
        return ["transformers.PreTrainedModel._no_split_modules"]
    return []
