"""The hooks that capture each target module's input ``X`` and output gradient ``D``.

Why its own module: which tensors the statistics see, and for how long they are held, is
decided here and nowhere else. The weights are frozen, so a hook on the input embeddings makes
their output the leaf gradients flow from; a forward hook on each target module keeps its input
and hooks its output for the gradient. Under gradient checkpointing a module runs twice and the
hooks must pair its first pass's gradient with the recompute's input, exactly once. Two ways:
:class:`Capture` keeps everything until the backward ends (the batch-end path), and
:class:`StreamingCapture` hands each module on to a :class:`GradientSink` as soon as both halves
have arrived, so nothing of a module outlives its own backward step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from layerscope.analysis.compute.model_state import recomputed_modules

if TYPE_CHECKING:
    import torch

    from layerscope.analysis.models.targets import Target


class GradientSink(Protocol):
    """What the streaming capture hands each module's tensors to, as the backward reaches it."""

    def module_arrived(
        self,
        module_key: int,
        inputs: torch.Tensor,
        output_grads: torch.Tensor,
        input_key: tuple[int, tuple[int, ...]],
    ) -> None:
        """A module's input and output gradient, both there (``module_key`` is its id;
        ``input_key`` names the input tensor, shared by the modules that read it)."""

    def input_done(self, input_key: tuple[int, tuple[int, ...]]) -> None:
        """Every module reading this input has arrived."""


class Capture:
    """Forward hooks that keep each target module's input and output gradient.

    Under checkpointing a module inside a checkpointed layer runs twice: its first pass (whose
    output receives the gradient) and a recompute in the backward. The gradient hook goes on
    the first pass's output only; the input is kept from the recompute (holding the first
    pass's would undo checkpointing's saving), and once per module.
    """

    def __init__(self, model: Any, targets: Sequence[Target]) -> None:
        self.inputs: dict[int, torch.Tensor] = {}
        self.output_grads: dict[int, torch.Tensor] = {}
        self.handles: list[Any] = []
        self.recomputed = recomputed_modules(model, targets)
        self.hooked: set[int] = set()  # modules whose first pass has run
        modules = {id(t.module): t.module for t in targets}
        for module in modules.values():
            self.handles.append(module.register_forward_hook(self._forward_hook))
        # Weights are frozen, so make the embeddings' output the leaf that gradients flow from.
        embeddings = model.get_input_embeddings()
        self.handles.append(embeddings.register_forward_hook(_require_grad_hook))

    def _forward_hook(self, module: Any, args: tuple[Any, ...], output: torch.Tensor) -> None:
        key = id(module)
        if key in self.hooked:  # a recompute: the first one to bring the input keeps it
            if key not in self.inputs:
                self.inputs[key] = args[0].detach()
            return
        self.hooked.add(key)
        if key not in self.recomputed:
            self.inputs[key] = args[0].detach()

        def keep_gradient(gradient: torch.Tensor) -> None:
            self.output_grads[key] = gradient.detach()

        output.register_hook(keep_gradient)

    def check_complete(self) -> None:
        """Every module's input and output gradient arrived (a bug otherwise, not the data's)."""
        missing = self.hooked - (self.inputs.keys() & self.output_grads.keys())
        if missing:
            raise RuntimeError(f"{len(missing)} modules' inputs or gradients never arrived")

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.inputs.clear()
        self.output_grads.clear()


def _require_grad_hook(module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    return output.detach().requires_grad_(True)


class StreamingCapture:
    """Hooks that hand each target module's input and output gradient on as the backward pass
    reaches the module, then drop them: nothing of a module outlives its own backward step.

    Under checkpointing a module inside a checkpointed layer runs twice: its first pass in the
    forward, whose output is the one that receives the gradient (the only one hooked), and a
    recompute just before the layer's backward, which brings the input (the first pass's is
    not kept: holding it would undo checkpointing's saving). The two halves meet in either
    order (a layer's last module gets its gradient before the recompute, the others after);
    the module is measured when the second arrives, and exactly once.
    """

    def __init__(self, model: Any, targets: Sequence[Target], sink: GradientSink) -> None:
        self.sink = sink
        self.inputs: dict[int, torch.Tensor] = {}
        self.input_keys: dict[int, tuple[int, tuple[int, ...]]] = {}
        self.sharing: dict[tuple[int, tuple[int, ...]], int] = {}  # q, k and v share an input
        self.recomputed = recomputed_modules(model, targets)
        self.hooked: set[int] = set()  # modules whose first pass has run
        self.waiting: dict[int, torch.Tensor] = {}  # gradients that came before the recompute
        self.measured: set[int] = set()
        self.handles: list[Any] = []
        modules = {id(t.module): t.module for t in targets}
        for module in modules.values():
            self.handles.append(module.register_forward_hook(self._forward_hook))
        embeddings = model.get_input_embeddings()
        self.handles.append(embeddings.register_forward_hook(_require_grad_hook))

    def _forward_hook(self, module: Any, args: tuple[Any, ...], output: torch.Tensor) -> None:
        key = id(module)
        if key not in self.hooked:  # the first pass: its output receives the gradient
            self.hooked.add(key)
            output.register_hook(lambda gradient: self._gradient_arrived(key, gradient))
            if key in self.recomputed:
                return  # the input comes with the recompute
        elif key in self.measured:
            return  # recomputed after its measurement (with the first pass's equal input)
        self._keep_input(key, args[0].detach())
        if key in self.waiting:
            self._arrived(key, self.waiting.pop(key))

    def _keep_input(self, key: int, captured: torch.Tensor) -> None:
        if key in self.inputs:  # recomputed while the first pass's is held: keep one
            del self.inputs[key]
            self._unshare(self.input_keys.pop(key))
        self.inputs[key] = captured
        input_key = (captured.data_ptr(), tuple(captured.shape))
        self.input_keys[key] = input_key
        self.sharing[input_key] = self.sharing.get(input_key, 0) + 1

    def _gradient_arrived(self, key: int, gradient: torch.Tensor) -> None:
        if key in self.inputs:
            self._arrived(key, gradient.detach())
        else:
            self.waiting[key] = gradient.detach()

    def _arrived(self, key: int, gradient: torch.Tensor) -> None:
        inputs = self.inputs.pop(key)
        input_key = self.input_keys.pop(key)
        self.sink.module_arrived(key, inputs, gradient, input_key)
        del inputs
        self.measured.add(key)
        self._unshare(input_key)

    def _unshare(self, input_key: tuple[int, tuple[int, ...]]) -> None:
        self.sharing[input_key] -= 1
        if self.sharing[input_key] == 0:
            del self.sharing[input_key]
            self.sink.input_done(input_key)

    def check_complete(self) -> None:
        """Every module was measured (a bug otherwise, not the data's)."""
        if self.measured != self.hooked:
            missing = len(self.hooked - self.measured)
            raise RuntimeError(f"{missing} modules' inputs or gradients never met")

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.inputs.clear()
        self.waiting.clear()
