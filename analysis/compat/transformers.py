"""transformers' internals: what gradient checkpointing sets on a model, and which modules of a
model must stay whole on one device.

Why each is needed: ``--checkpointing`` turns a model's gradient checkpointing on for one batch
and must leave the model exactly as it was (a model the caller passed in keeps its own
setting); transformers has no way back to the state before enabling, so the instance
attributes enabling sets (the flag, the checkpointing function, the input embeddings'
require-grad hooks) are saved and restored by name. And spreading a freshly initialised model
over devices (``--init random`` with a device map) goes through accelerate, which must be told
the modules it may not split (a decoder layer, whose residual connection needs its parts
together); ``from_pretrained`` reads them from the model class's private ``_no_split_modules``,
with no public accessor.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CHECKPOINTING_ATTRIBUTES",
    "LIBRARY",
    "checkpointing_state",
    "missing_internals",
    "no_split_modules",
    "restore_checkpointing_state",
]

LIBRARY = "transformers"

# What enabling gradient checkpointing sets on a model's modules (tests/test_compat.py checks
# that it sets nothing else).
CHECKPOINTING_ATTRIBUTES = (
    "gradient_checkpointing",
    "_gradient_checkpointing_func",
    "_require_grads_hooks",  # handles of hooks on the input embeddings, each to be removed
    "_require_grads_hook",
)
_HOOK_HANDLES = "_require_grads_hooks"
_MISSING = object()


def checkpointing_state(module: Any) -> dict[str, Any]:
    """What of :data:`CHECKPOINTING_ATTRIBUTES` ``module`` holds now (to restore it later)."""
    return {name: module.__dict__.get(name, _MISSING) for name in CHECKPOINTING_ATTRIBUTES}


def restore_checkpointing_state(module: Any, state: dict[str, Any]) -> None:
    """Put ``module``'s checkpointing attributes back as :func:`checkpointing_state` found them,
    removing the hooks enabling added."""
    for name, value in state.items():
        if name == _HOOK_HANDLES:
            for hook in module.__dict__.get(name, None) or []:
                if value is _MISSING or hook not in value:
                    hook.remove()  # added by enabling
        if value is _MISSING:
            module.__dict__.pop(name, None)
        else:
            module.__dict__[name] = value


def no_split_modules(model: Any) -> list[str]:
    """The class names of ``model``'s modules that must stay on one device ([] if none)."""
    return list(getattr(model, "_no_split_modules", None) or [])


def missing_internals() -> list[str]:
    """What the installed transformers lacks of what this module uses (what enabling
    checkpointing sets is checked on a model, in tests/test_compat.py)."""
    from transformers import PreTrainedModel

    if not hasattr(PreTrainedModel, "_no_split_modules"):
        return ["transformers.PreTrainedModel._no_split_modules"]
    return []
