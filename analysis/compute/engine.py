"""The computation: per-sample gradient statistics for every target matrix, batch by batch.

The fast method never forms a weight gradient through autograd. One forward and one backward
of a right-padded batch (the batch loss is the sum of the per-sample mean losses, so each
sample's output gradients are exactly its own) give, per target module, the inputs ``X`` and
the output gradients ``D`` of every sample, captured by hooks. With all weights frozen the
backward pass computes activation gradients only. A sample's weight gradient is ``D^T X``, and
everything reported about it comes from those factors (see ``spectral``): a T-by-T SVD instead
of a full one, Gram-free and exact.

The reference method is the paper's procedure and the tests' oracle: one sample at a time, the
full weight gradient from ``loss.backward()``, ``torch.linalg.svd``.

``compute_statistics`` is a plain generator: it yields a ``BatchResult`` per batch, checks a
``threading.Event`` between batches, and knows nothing of threads, caches or UIs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from layerscope.analysis.base.errors import mention
from layerscope.analysis.base.records import (
    BatchResult,
    ComputeSettings,
    MatrixStatistics,
    Sample,
    SampleResult,
    SkippedSample,
)
from layerscope.analysis.base.setting_schema import SettingError
from layerscope.analysis.base.settings import setting
from layerscope.analysis.compat.transformers import (
    checkpointing_state,
    restore_checkpointing_state,
)
from layerscope.analysis.compute.batching import (
    default_tokens_per_batch,
    formed_gradients_budget,
    plan_batches,
)
from layerscope.analysis.compute.cosines import SampleCosines, cosine, cosine_matrix, paired_cosines
from layerscope.analysis.compute.factorisations import Factorisation, Pending
from layerscope.analysis.compute.numerics import (
    PhaseTimer,
    denormals_flushed,
)
from layerscope.analysis.compute.numerics import (
    flush_subnormals_for_this_process as flush_subnormals_for_this_process,
)
from layerscope.analysis.compute.routes import SamplePlan, plan_batch, shapes_of, weights_for
from layerscope.analysis.compute.spectral import (
    entry_statistics_in_blocks,
    factor_entry_statistics,
    full_spectrum,
    input_r_factor,
    reference_statistics,
    singular_values_from_factors,
    summarize_spectrum,
    working_dtype,
)
from layerscope.analysis.compute.text import EncodedSample, SampleSkipped, encode_sample

if TYPE_CHECKING:
    import torch

    from layerscope.analysis.models.loading import LoadedModel
    from layerscope.analysis.models.targets import Target


def compute_statistics(
    loaded: LoadedModel,
    samples: Sequence[Sample],
    settings: ComputeSettings,
    cancel: threading.Event | None = None,
) -> Iterator[BatchResult]:
    """Yield the statistics of ``samples`` batch by batch; stops early when ``cancel`` is set.

    The fast method groups samples of similar length into passes of at most
    ``settings.tokens_per_batch`` padded tokens (default: from the device's free memory, see
    :mod:`~layerscope.analysis.compute.batching`) and ``settings.batch_size`` rows; the reference method
    takes one sample at a time. One BatchResult per pass, each sample in exactly one, results
    in index order within a batch; samples that cannot be encoded come with the first.
    """
    targets = loaded.target_modules(settings.modules)
    if settings.checkpointing:
        _check_checkpointing(loaded.model)
    total = len(samples)
    done = 0
    encoded: list[EncodedSample] = []
    skipped: list[SkippedSample] = []
    for sample in samples:
        try:
            encoded.append(encode_sample(sample, loaded.tokenizer, settings))
        except SampleSkipped as reason:
            skipped.append(SkippedSample(sample.index, str(reason)))
    batches = _plan(loaded, encoded, settings)
    if not batches and skipped:
        batches = [[]]
    with _frozen_weights(loaded.model, frozen=settings.method == "fast"):
        for positions in batches:
            if cancel is not None and cancel.is_set():
                return
            began = time.perf_counter()
            batch = [encoded[i] for i in positions]
            done += len(batch) + len(skipped)
            results: list[SampleResult] = []
            timer = PhaseTimer(cuda=loaded.device.type == "cuda")
            if batch:
                if settings.method == "reference":
                    for one in batch:
                        results.append(_reference_sample(loaded, targets, one, settings, timer))
                else:
                    batch_results, oom = _fast_batch_splitting(
                        loaded, targets, batch, settings, timer
                    )
                    results.extend(sorted(batch_results, key=lambda r: r.index))
                    skipped.extend(oom)
            yield BatchResult(
                results,
                skipped,
                done,
                total,
                time.perf_counter() - began,
                timer.seconds["forward_backward"],
                timer.seconds["statistics"],
            )
            skipped = []


def _plan(
    loaded: LoadedModel, encoded: Sequence[EncodedSample], settings: ComputeSettings
) -> list[list[int]]:
    """Positions into ``encoded`` per pass (see ``compute_statistics``)."""
    if settings.method == "reference":
        return [[i] for i in range(len(encoded))]
    budget = settings.tokens_per_batch
    if budget is None:
        budget = default_tokens_per_batch(
            loaded.device, getattr(loaded.model, "config", None), _element_bytes(loaded)
        )
    lengths = [e.length for e in encoded]
    return plan_batches(lengths, budget, max(1, settings.batch_size))


def _element_bytes(loaded: LoadedModel) -> int:
    itemsize = getattr(loaded.dtype, "itemsize", None)
    return itemsize if isinstance(itemsize, int) and itemsize > 0 else 4


def _check_checkpointing(model: Any) -> None:
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
def _checkpointing(model: Any, enabled: bool) -> Iterator[None]:
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
    _check_checkpointing(model)
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


def _recomputed_modules(model: Any, targets: Sequence[Target]) -> frozenset[int]:
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


@contextmanager
def _frozen_weights(model: Any, frozen: bool) -> Iterator[None]:
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


def _response_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, encoded: EncodedSample
) -> torch.Tensor:
    """Mean cross-entropy over the response tokens of one sample, in float32 or wider."""
    import torch

    first = max(encoded.response_start, 1)
    predicted = logits[first - 1 : encoded.length - 1]
    predicted = predicted.to(working_dtype(predicted.dtype))
    return torch.nn.functional.cross_entropy(predicted, input_ids[first : encoded.length])


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return type(error).__name__ == "OutOfMemoryError" or (
        "out of memory" in text or "can't allocate memory" in text
    )


def _fast_batch_splitting(
    loaded: LoadedModel,
    targets: Sequence[Target],
    encoded: list[EncodedSample],
    settings: ComputeSettings,
    timer: PhaseTimer,
) -> tuple[list[SampleResult], list[SkippedSample]]:
    """Run a batch; on out-of-memory split it in halves and retry, down to single samples."""
    try:
        return _fast_batch(loaded, targets, encoded, settings, timer), []
    except (RuntimeError, MemoryError) as error:
        if not _is_out_of_memory(error):
            raise
    _release_memory(loaded)
    if len(encoded) == 1:
        sample = encoded[0]
        reason = f"out of memory on {loaded.device} at {sample.length} tokens"
        return [], [SkippedSample(sample.index, reason, retryable=True)]
    half = len(encoded) // 2
    first, first_skipped = _fast_batch_splitting(loaded, targets, encoded[:half], settings, timer)
    second, second_skipped = _fast_batch_splitting(loaded, targets, encoded[half:], settings, timer)
    return first + second, first_skipped + second_skipped


def _release_memory(loaded: LoadedModel) -> None:
    import gc

    import torch

    gc.collect()
    if loaded.device.type == "cuda":
        torch.cuda.empty_cache()


def _padded_batch(
    loaded: LoadedModel, encoded: list[EncodedSample]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask (positions are 0..T-1 whatever the mask, so pad right)."""
    import torch

    longest = max(e.length for e in encoded)
    pad = loaded.tokenizer.pad_token_id or 0
    input_ids = torch.full((len(encoded), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), longest), dtype=torch.long)
    for row, sample in enumerate(encoded):
        input_ids[row, : sample.length] = torch.tensor(sample.input_ids)
        mask[row, : sample.length] = 1
    return input_ids.to(loaded.device), mask.to(loaded.device)


class _Capture:
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
        self.recomputed = _recomputed_modules(model, targets)
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


def _fast_batch(
    loaded: LoadedModel,
    targets: Sequence[Target],
    encoded: list[EncodedSample],
    settings: ComputeSettings,
    timer: PhaseTimer,
) -> list[SampleResult]:
    """One forward and backward of a batch; statistics as the backward reaches each module."""
    if not settings.streaming:
        return _fast_batch_at_end(loaded, targets, encoded, settings, timer)

    input_ids, mask = _padded_batch(loaded, encoded)
    plans = plan_routes(loaded, targets, [e.length - 1 for e in encoded], settings)
    statistics = _StreamingStatistics(targets, encoded, settings, plans)
    with _checkpointing(loaded.model, settings.checkpointing):
        capture = _StreamingCapture(loaded.model, targets, statistics)
        try:
            with timer.phase("forward_backward"):
                losses = _forward_backward(loaded, encoded, input_ids, mask)
            capture.check_complete()
            with timer.phase("statistics"), denormals_flushed():
                results = statistics.results([loss.item() for loss in losses])
            # The work done inside the backward's hooks is statistics, not forward+backward.
            timer.seconds["forward_backward"] -= statistics.hook_seconds
            timer.seconds["statistics"] += statistics.hook_seconds
            return results
        finally:
            capture.close()
            statistics.close()


def _forward_backward(
    loaded: LoadedModel, encoded: list[EncodedSample], input_ids: torch.Tensor, mask: torch.Tensor
) -> list[torch.Tensor]:
    """One forward and backward of a padded batch; the loss is the sum of the samples' mean
    response losses, so each sample's output gradients are exactly its own. Returns the
    per-sample losses (0-d tensors)."""
    import torch

    with torch.enable_grad():
        model = loaded.model
        logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        losses = [_response_loss(logits[row], input_ids[row], e) for row, e in enumerate(encoded)]
        del logits
        torch.stack(losses).sum().backward()
    return losses


class _StreamingCapture:
    """Hooks that hand each target module's input and output gradient on as the backward pass
    reaches the module, then drop them: nothing of a module outlives its own backward step.

    Under checkpointing a module inside a checkpointed layer runs twice: its first pass in the
    forward, whose output is the one that receives the gradient (the only one hooked), and a
    recompute just before the layer's backward, which brings the input (the first pass's is
    not kept: holding it would undo checkpointing's saving). The two halves meet in either
    order (a layer's last module gets its gradient before the recompute, the others after);
    the module is measured when the second arrives, and exactly once.
    """

    def __init__(self, model: Any, targets: Sequence[Target], sink: _StreamingStatistics) -> None:
        self.sink = sink
        self.inputs: dict[int, torch.Tensor] = {}
        self.input_keys: dict[int, tuple[int, tuple[int, ...]]] = {}
        self.sharing: dict[tuple[int, tuple[int, ...]], int] = {}  # q, k and v share an input
        self.recomputed = _recomputed_modules(model, targets)
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


class _StreamingStatistics:
    """A batch's statistics, computed module by module as the output gradients arrive.

    Each matrix is measured on its tensors' own device, by the routes the cost model
    (:mod:`~layerscope.analysis.compute.routes`) chose for its projection at its sample's length:
    spectra by T-by-T factors (through the chosen
    :class:`~layerscope.analysis.compute.factorisations.Factorisation`) or by ``svdvals`` of the formed
    gradient; max and min from a formed gradient or from one formed in row blocks; cosines by
    factor products or from gradients kept formed (:class:`~layerscope.analysis.compute.cosines.
    SampleCosines`). Everything is gathered on the CPU by :meth:`results`.
    """

    def __init__(
        self,
        targets: Sequence[Target],
        encoded: list[EncodedSample],
        settings: ComputeSettings,
        plans: list[SamplePlan],
    ) -> None:
        self.targets = list(targets)
        self.encoded = encoded
        self.settings = settings
        self.positions = [e.length - 1 for e in encoded]  # the last position's D is zero
        self.plans = plans
        self.factorisation = Factorisation(settings.factorisation)
        self.of_module: dict[int, list[int]] = {}
        for index, target in enumerate(self.targets):
            self.of_module.setdefault(id(target.module), []).append(index)
        self.spectra: dict[tuple[int, int], Pending] = {}
        self.entries: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        infos = [t.info for t in self.targets]
        self.cosines = [SampleCosines(infos) for _ in encoded] if settings.cosines else None
        self.hook_seconds = 0.0

    def module_arrived(
        self,
        module_key: int,
        inputs: torch.Tensor,
        output_grads: torch.Tensor,
        input_key: tuple[int, tuple[int, ...]],
    ) -> None:
        import torch

        began = time.perf_counter()
        with torch.no_grad(), denormals_flushed():
            for index in self.of_module[module_key]:
                self._measure(index, inputs, output_grads, input_key)
            if output_grads.device.type == "cuda":
                torch.cuda.synchronize(output_grads.device)  # an honest phase split
        self.hook_seconds += time.perf_counter() - began

    def input_done(self, input_key: tuple[int, tuple[int, ...]]) -> None:
        """Every module reading this input has been measured: its shared work can be done and
        its shared factors dropped."""
        import torch

        began = time.perf_counter()
        with torch.no_grad(), denormals_flushed():
            self.factorisation.forget(input_key)
            for cosines in self.cosines or []:
                cosines.input_done(input_key)
        self.hook_seconds += time.perf_counter() - began

    def _measure(
        self,
        index: int,
        inputs: torch.Tensor,
        output_grads: torch.Tensor,
        input_key: tuple[int, tuple[int, ...]],
    ) -> None:
        import torch

        target = self.targets[index]
        info = target.info
        dtype = working_dtype(inputs.dtype)
        if target.output_features is not None:
            output_grads = output_grads.index_select(
                -1, target.output_features.to(output_grads.device)
            )
        routes = [plan[info.projection] for plan in self.plans]
        xs = [inputs[r, :p].to(dtype) for r, p in enumerate(self.positions)]
        ds = [output_grads[r, :p].to(dtype) for r, p in enumerate(self.positions)]
        matrices: list[torch.Tensor | None] = []
        for row, route in enumerate(routes):
            if self.cosines is not None and route.keeps_gradients:
                slot = self.cosines[row].gradient_slot(info, ds[row])
                torch.matmul(ds[row].T, xs[row], out=slot)  # formed where it is kept
                matrices.append(slot)
            elif route.forms_gradients:
                matrices.append(ds[row].T @ xs[row])
            else:
                matrices.append(None)
        pending = self.factorisation.singular_values(
            ds, xs, input_key, matrices, [route.spectrum == "factors" for route in routes]
        )
        for row, route in enumerate(routes):
            self.spectra[(row, index)] = pending[row]
            if self.settings.entry_statistics:
                self.entries[(row, index)] = entry_statistics_in_blocks(
                    ds[row], xs[row], matrices[row]
                )
            if self.cosines is not None and route.cosines == "factors":
                p = self.positions[row]
                self.cosines[row].add_factors(
                    info, output_grads[row, :p], inputs[row, :p], input_key
                )

    def results(self, losses: list[float]) -> list[SampleResult]:
        results = []
        for row, sample in enumerate(self.encoded):
            matrices = []
            for index, target in enumerate(self.targets):
                rows, cols = target.info.rows, target.info.cols
                singular_values = self.spectra[(row, index)].result()
                values = summarize_spectrum(singular_values, rows, cols, losses[row])
                if self.settings.entry_statistics:
                    total, largest, smallest = self.entries[(row, index)]
                    values["mean"] = float(total) / (rows * cols)
                    values["max"] = float(largest)
                    values["min"] = float(smallest)
                spectrum = (
                    full_spectrum(singular_values, rows, cols) if self.settings.spectra else None
                )
                matrices.append(
                    MatrixStatistics(target.info.layer, target.info.projection, values, spectrum)
                )
            cosines = self.cosines[row] if self.cosines is not None else None
            if cosines is not None:
                cosines.finish()
            results.append(
                SampleResult(
                    index=sample.index,
                    loss=losses[row],
                    prompt_tokens=sample.prompt_tokens,
                    response_tokens=sample.response_tokens,
                    matrices=matrices,
                    layer_cosines=cosines.layer_cosines() if cosines else {},
                    pair_cosines=cosines.pair_cosines() if cosines else {},
                )
            )
        return results

    def close(self) -> None:
        self.factorisation.close()
        self.spectra.clear()
        self.entries.clear()
        self.cosines = None


def plan_routes(
    loaded: LoadedModel,
    targets: Sequence[Target],
    positions: Sequence[int],
    settings: ComputeSettings,
) -> list[SamplePlan]:
    """The cost model's routes for a batch of samples with these measured positions."""
    shapes = shapes_of(
        ((t.info.projection, t.info.rows, t.info.cols) for t in targets), working_bytes_of(loaded)
    )
    budget = formed_gradients_budget(loaded.device) if settings.routes == "auto" else None
    return plan_batch(
        shapes,
        positions,
        cosines=settings.cosines,
        entry_statistics=settings.entry_statistics,
        forced=settings.routes,
        budget_bytes=budget,
        weights=weights_for(loaded.device.type),
    )


def working_bytes_of(loaded: LoadedModel) -> int:
    """Bytes per element of the statistics' working dtype (float64 models: 8, else 4)."""
    return 8 if _element_bytes(loaded) == 8 else 4


def _fast_batch_at_end(
    loaded: LoadedModel,
    targets: Sequence[Target],
    encoded: list[EncodedSample],
    settings: ComputeSettings,
    timer: PhaseTimer,
) -> list[SampleResult]:
    """The batch-end path: keep every module's factors until the backward ends, then measure
    each sample with the per-matrix factorisations and full gradients for max/min/cosines
    (``--no-streaming``; the streaming path is tested against it)."""

    input_ids, mask = _padded_batch(loaded, encoded)
    with _checkpointing(loaded.model, settings.checkpointing):
        capture = _Capture(loaded.model, targets)
        try:
            with timer.phase("forward_backward"):
                losses = _forward_backward(loaded, encoded, input_ids, mask)
            capture.check_complete()
            with timer.phase("statistics"), denormals_flushed():
                return [
                    _factor_sample_statistics(
                        capture, targets, row, sample, losses[row].item(), settings
                    )
                    for row, sample in enumerate(encoded)
                ]
        finally:
            capture.close()


class _GradientStore:
    """Gradients kept for one sample's cosines: flattened, per projection and layer."""

    def __init__(self) -> None:
        self.flat: dict[tuple[str, int], torch.Tensor] = {}
        self.layers: dict[str, list[int]] = {}

    def add(self, projection: str, layer: int, matrix: torch.Tensor) -> None:
        self.flat[(projection, layer)] = matrix.reshape(-1)
        self.layers.setdefault(projection, []).append(layer)

    def layer_cosines(self) -> dict[str, list[list[float]]]:
        return {p: cosine_matrix([self.flat[(p, i)] for i in ls]) for p, ls in self.layers.items()}

    def pair_cosines(self) -> dict[str, list[float]]:
        shapes = {key: tuple(flat.shape) for key, flat in self.flat.items()}
        return paired_cosines(
            self.layers, shapes, lambda one, other: cosine(self.flat[one], self.flat[other])
        )


def _sample_result(
    sample: EncodedSample,
    loss: float,
    matrices: list[MatrixStatistics],
    store: _GradientStore | None,
) -> SampleResult:
    return SampleResult(
        index=sample.index,
        loss=loss,
        prompt_tokens=sample.prompt_tokens,
        response_tokens=sample.response_tokens,
        matrices=matrices,
        layer_cosines=store.layer_cosines() if store else {},
        pair_cosines=store.pair_cosines() if store else {},
    )


def _factor_sample_statistics(
    capture: _Capture,
    targets: Sequence[Target],
    row: int,
    sample: EncodedSample,
    loss: float,
    settings: ComputeSettings,
) -> SampleResult:
    """One sample's statistics from the captured factors (the last position's D is zero)."""
    positions = sample.length - 1
    store = _GradientStore() if settings.cosines else None
    matrices: list[MatrixStatistics] = []
    input_factors: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}  # q, k, v share inputs
    for target in targets:
        key = id(target.module)
        captured = capture.inputs[key]
        dtype = working_dtype(captured.dtype)
        inputs = captured[row, :positions].to(dtype)
        output_grads = capture.output_grads[key][row, :positions]
        if target.output_features is not None:
            output_grads = output_grads.index_select(
                -1, target.output_features.to(output_grads.device)
            )
        output_grads = output_grads.to(dtype)
        rows, cols = target.info.rows, target.info.cols
        needs_matrix = (
            settings.entry_statistics or store is not None or positions >= min(rows, cols)
        )
        matrix = output_grads.T @ inputs if needs_matrix else None
        input_factor = None
        if positions < min(rows, cols):
            shared = (captured.data_ptr(), tuple(captured.shape))
            if shared not in input_factors:
                input_factors[shared] = input_r_factor(inputs)
            input_factor = input_factors[shared]
        singular_values = singular_values_from_factors(output_grads, inputs, matrix, input_factor)
        values = summarize_spectrum(singular_values, rows, cols, loss)
        if settings.entry_statistics and matrix is not None:
            values.update(factor_entry_statistics(output_grads, inputs, matrix))
        if store is not None and matrix is not None:
            store.add(target.info.projection, target.info.layer, matrix)
        spectrum = full_spectrum(singular_values, rows, cols) if settings.spectra else None
        matrices.append(
            MatrixStatistics(target.info.layer, target.info.projection, values, spectrum)
        )
    return _sample_result(sample, loss, matrices, store)


def _reference_sample(
    loaded: LoadedModel,
    targets: Sequence[Target],
    sample: EncodedSample,
    settings: ComputeSettings,
    timer: PhaseTimer,
) -> SampleResult:
    """The paper's procedure: full backward, full weight gradients, full SVD of each."""
    import torch

    model = loaded.model
    input_ids = torch.tensor([sample.input_ids], device=loaded.device)
    model.zero_grad(set_to_none=True)
    with (
        _checkpointing(model, settings.checkpointing),
        timer.phase("forward_backward"),
        torch.enable_grad(),
    ):
        logits = model(input_ids=input_ids, use_cache=False).logits
        loss = _response_loss(logits[0], input_ids[0], sample)
        del logits
        loss.backward()
    with timer.phase("statistics"), denormals_flushed():
        result = _reference_statistics(targets, sample, loss.item(), settings)
    model.zero_grad(set_to_none=True)
    return result


def _reference_statistics(
    targets: Sequence[Target], sample: EncodedSample, loss_value: float, settings: ComputeSettings
) -> SampleResult:
    store = _GradientStore() if settings.cosines else None
    matrices = []
    for target in targets:
        gradient = target.module.weight.grad
        if target.transposed:
            gradient = gradient.T
        if target.output_features is not None:
            gradient = gradient.index_select(0, target.output_features.to(gradient.device))
        gradient = gradient.to(working_dtype(gradient.dtype))
        matrices.append(
            reference_statistics(
                gradient,
                target.info.layer,
                target.info.projection,
                loss_value,
                settings.entry_statistics,
                settings.spectra,
            )
        )
        if store is not None:
            store.add(target.info.projection, target.info.layer, gradient.clone())
    return _sample_result(sample, loss_value, matrices, store)
