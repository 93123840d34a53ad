"""The fast method's statistics, measured inside the backward pass module by module.

Why its own module: this is where the memory and time of the fast method go. Each module's
``X`` and ``D`` are measured on their own device the moment the streaming capture hands them
over and dropped at once; what a projection's factors share (the R factor of an input read by
q, k and v, the cosine work on it) lives until the last module reading that input is done.
Every statistic follows the route the cost model chose for it; the results are gathered only
at the batch's end. It is the default; the batch-end path (``--no-streaming``, in
:mod:`~layerscope.analysis.compute.reference`) is what it is tested against.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from layerscope.analysis.base.records import ComputeSettings, MatrixStatistics, SampleResult
from layerscope.analysis.compute.cosines import SampleCosines
from layerscope.analysis.compute.factorisations import Factorisation, Pending
from layerscope.analysis.compute.numerics import denormals_flushed
from layerscope.analysis.compute.spectral import (
    entry_statistics_in_blocks,
    full_spectrum,
    summarize_spectrum,
    working_dtype,
)

if TYPE_CHECKING:
    import torch

    from layerscope.analysis.compute.routes import SamplePlan
    from layerscope.analysis.compute.text import EncodedSample
    from layerscope.analysis.models.targets import Target


class StreamingStatistics:
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
