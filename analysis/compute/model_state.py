"""What the computation changes on the model and restores: frozen weights, checkpointing.

Why its own module: these change the state of a model the caller owns (which parameters take
gradients, the checkpointing flags and functions, each module's train/eval mode), and each must
leave it as it found it, whatever the pass raised. Checkpointing is the delicate one:
transformers checkpoints a layer only in training mode, so a layer is put in training mode just
as far as checkpointing needs, a layer whose own forward reads the flag for anything else is
refused (the numbers would change), and the captures ask here which target modules run twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from layerscope.analysis.base.errors import mention
from layerscope.analysis.base.setting_schema import SettingError
from layerscope.analysis.base.settings import setting
from layerscope.analysis.compat.transformers import (
    checkpointing_state,
    restore_checkpointing_state,
)

if TYPE_CHECKING:
    from layerscope.analysis.models.targets import Target


@contextmanager
def frozen_weights(model: Any, frozen: bool) -> Iterator[None]:
    """Freeze (fast) or unfreeze (reference) every weight, restoring the old state after."""
    parameters = list(model.parameters())
    before = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(not frozen)
        p.grad = None
    try:
        yield
    finally:
        for p, flag in zip(parameters, before, strict=True):
            p.grad = None
            p.requires_grad_(flag)


def check_checkpointing(model: Any) -> None:
    """Refuse, in one line, a model that cannot recompute its layers."""
    if not getattr(model, "supports_gradient_checkpointing", False) or not hasattr(
        model, "gradient_checkpointing_enable"
    ):
        raise SettingError(
            setting("checkpointing"),
            f"{type(model).__name__} does not support gradient checkpointing (run without "
            f"{mention('checkpointing')})",
        )


@contextmanager
def checkpointing(model: Any, enabled: bool) -> Iterator[None]:
    """The model's gradient checkpointing on (non-reentrant) for one batch, then as it was.

    transformers checkpoints a layer only when the layer is in training mode, so exactly the
    modules whose checkpointing flag is set (the decoder layers) are put in training mode, not
    their children: attention, dropout and every other submodule stay in eval mode, and none of
    the flagged modules may read its training flag for anything else (a functional dropout in
    the layer's own forward), so the numbers are those of a plain run. ``early_stop=False``
    recomputes each layer whole, so every target module's forward runs again, just before the
    layer's backward: the captures take a checkpointed module's input from that recompute.
    Everything is restored afterwards: the flags, the checkpointing functions, the input
    embeddings' require-grad hooks that enabling adds, and every module's train/eval mode.
    """
    if not enabled:
        yield
        return
    check_checkpointing(model)
    modules = list(model.modules())
    modes = [m.training for m in modules]
    saved = [(m, checkpointing_state(m)) for m in modules]
    try:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:  # transformers 5: gradient_checkpointing_enable is deprecated
            enable(activation_checkpointing_kwargs=_CHECKPOINT_OPTIONS)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=_CHECKPOINT_OPTIONS)
        for module in modules:
            if getattr(module, "gradient_checkpointing", False) is True and _checks_training(
                module
            ):
                _refuse_training_reads(module)
                module.training = True  # not .train(): its children stay in eval mode
        yield
    finally:
        for module, state in saved:
            restore_checkpointing_state(module, state)
        for module, mode in zip(modules, modes, strict=True):
            module.training = mode


# use_reentrant=False: hooks see tensors of one autograd graph; early_stop=False: a layer's
# recompute runs to its end, so every target module inside it sees its input again.
_CHECKPOINT_OPTIONS = {"use_reentrant": False, "early_stop": False}


def _forward_source(module: Any) -> str:
    import inspect

    try:
        return inspect.getsource(inspect.unwrap(type(module).forward))
    except (OSError, TypeError):
        return ""


def _checks_training(module: Any) -> bool:
    """Whether transformers checkpoints this module only in training mode: a decoder layer
    (``GradientCheckpointingLayer``), or a model that checkpoints its layers in its own loop
    (``if self.gradient_checkpointing and self.training``); a base model whose forward never
    reads the flag is left in eval mode."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:
        return "self.training" in _forward_source(module)
    return isinstance(module, GradientCheckpointingLayer) or (
        "self.training" in _forward_source(module)
    )


def _refuse_training_reads(module: Any) -> None:
    """A checkpointed module is put in training mode; refuse one whose own forward reads the
    flag for anything but checkpointing (a dropout there would change the numbers)."""
    source = _forward_source(module).replace("gradient_checkpointing and self.training", "")
    if "self.training" in source:
        raise SettingError(
            setting("checkpointing"),
            f"{type(module).__name__}'s forward reads its training mode (a dropout would "
            f"change the numbers); run without {mention('checkpointing')}",
        )


def recomputed_modules(model: Any, targets: Sequence[Target]) -> frozenset[int]:
    """The target modules (by id) whose forward runs again in the backward pass: those inside
    a layer that transformers checkpoints now. A module that is recomputed without being
    known here (an older model's own checkpointing loop) is still measured once, with its
    first pass's input (equal to the recompute's)."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:
        return frozenset()
    inside: set[int] = set()
    for layer in model.modules():
        if (
            isinstance(layer, GradientCheckpointingLayer)
            and layer.gradient_checkpointing
            and layer.training
        ):
            inside.update(id(m) for m in layer.modules())
    return frozenset(id(t.module) for t in targets if id(t.module) in inside)
