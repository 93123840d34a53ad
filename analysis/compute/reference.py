"""The paths the fast one is checked against: the paper's procedure and the batch-end path.

Why its own module: both measure a sample's matrices one at a time once the backward has ended,
without the cost model's routes; they are simple on purpose, so the tests can trust them where
the streaming path (:mod:`~layerscope.analysis.compute.streaming`) is clever. The reference
method (``--method reference``) is the paper's procedure and the tests' oracle: one sample at
a time, every weight taking gradients, the full weight gradient from ``loss.backward()`` and
``torch.linalg.svd``. The batch-end path (``--no-streaming``) is the fast method without
streaming: every module's captured ``X`` and ``D`` are kept until the batch's backward ends,
then each sample is measured with the per-matrix factorisations, and full gradients for max,
min and cosines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from layerscope.analysis.base.records import ComputeSettings, MatrixStatistics, SampleResult
from layerscope.analysis.compute.capture import Capture
from layerscope.analysis.compute.cosines import cosine, cosine_matrix, paired_cosines
from layerscope.analysis.compute.model_state import checkpointing
from layerscope.analysis.compute.numerics import PhaseTimer, denormals_flushed
from layerscope.analysis.compute.passes import forward_backward, padded_batch, response_loss
from layerscope.analysis.compute.spectral import (
    factor_entry_statistics,
    full_spectrum,
    input_r_factor,
    reference_statistics,
    singular_values_from_factors,
    summarize_spectrum,
    working_dtype,
)

if TYPE_CHECKING:
    import torch

    from layerscope.analysis.compute.text import EncodedSample
    from layerscope.analysis.models.loading import LoadedModel
    from layerscope.analysis.models.targets import Target


def reference_sample(
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
        checkpointing(model, settings.checkpointing),
        timer.phase("forward_backward"),
        torch.enable_grad(),
    ):
        logits = model(input_ids=input_ids, use_cache=False).logits
        loss = response_loss(logits[0], input_ids[0], sample)
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
        # a weight's gradient (nn.Module types its attributes as Tensor | Module)
        gradient = cast("torch.Tensor", target.module.weight.grad)
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


def fast_batch_at_end(
    loaded: LoadedModel,
    targets: Sequence[Target],
    encoded: list[EncodedSample],
    settings: ComputeSettings,
    timer: PhaseTimer,
) -> list[SampleResult]:
    """The batch-end path: keep every module's factors until the backward ends, then measure
    each sample with the per-matrix factorisations and full gradients for max/min/cosines
    (``--no-streaming``; the streaming path is tested against it)."""

    input_ids, mask = padded_batch(loaded, encoded)
    with checkpointing(loaded.model, settings.checkpointing):
        capture = Capture(loaded.model, targets)
        try:
            with timer.phase("forward_backward"):
                losses = forward_backward(loaded, encoded, input_ids, mask)
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


def _factor_sample_statistics(
    capture: Capture,
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
