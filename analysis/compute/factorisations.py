"""Where and how the small factorisations of the fast method run: the one choice point.

Why its own module: the spectrum of each gradient ``G = D^T X`` costs two thin QRs and a T-by-T
``svdvals`` (see :mod:`~layerscope.analysis.compute.spectral`). On a CPU, one LAPACK call per matrix is
fine. On a GPU each small QR or SVD is a few dozen kernel launches and cuSOLVER's SVD is slow
below about a thousand rows, so one call per matrix is latency-bound. The engine therefore asks
a :class:`Factorisation` for the singular values of all the matrices a module's backward gives
(one per sample of the batch) and the factorisation decides how:

``per-matrix``   one QR/QR/svdvals per matrix on the tensors' own device (the method as it was);
``batched``      the samples' factors zero-padded to one length and factorised in one batched
                 call per module on the tensors' own device (zero columns leave R's leading
                 block as it is and add exact zero singular values, which are dropped);
``cpu-threads``  the batched QRs on the tensors' device, the T-by-T cores handed to CPU threads
                 for ``svdvals`` while the backward pass goes on (overlap).

None of them changes the numbers beyond rounding (tests hold them to 1e-10 in float64), so the
setting is not keyed. Results come back as :class:`Pending` handles, resolved on the CPU when
the batch ends.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from layerscope.analysis.base.choices import FACTORISATIONS as FACTORISATION_CHOICES
from layerscope.analysis.compute.spectral import (
    input_r_factor,
    singular_values_from_factors,
    singular_values_of_matrix,
)

if TYPE_CHECKING:
    import torch

__all__ = ["FACTORISATIONS", "Factorisation", "Pending"]

FACTORISATIONS = FACTORISATION_CHOICES
CPU_THREADS = 2  # svdvals of T-by-T cores; torch releases the GIL inside them


class Pending:
    """Singular values that are computed now or by a CPU thread; ``result`` gives them on the CPU."""

    def __init__(self, values: torch.Tensor | None = None, future: Future | None = None) -> None:
        self._values = values
        self._future = future
        self._row: int | None = None
        self._length: int | None = None

    @classmethod
    def slice_of(cls, future: Future, row: int, length: int) -> Pending:
        pending = cls(future=future)
        pending._row, pending._length = row, length
        return pending

    def result(self) -> torch.Tensor:
        if self._values is None:
            assert self._future is not None
            values = self._future.result()
            if self._row is not None:
                values = values[self._row, : self._length]
            self._values = values
        return self._values.detach().to("cpu")


class Factorisation:
    """Singular values of ``D_r^T X_r`` for the rows of one module's batch, by one method.

    ``input_key`` names the inputs (q, k and v share theirs): the R factors of inputs are kept
    under it until :meth:`forget` so that the modules sharing an input factorise it once.
    """

    def __init__(self, name: str) -> None:
        if name not in FACTORISATIONS:
            raise ValueError(
                f"factorisation: choose one of {', '.join(FACTORISATIONS)}, not {name!r}"
            )
        self.name = name
        self._input_factors: dict[Hashable, torch.Tensor] = {}
        self._pool: ThreadPoolExecutor | None = None

    def singular_values(
        self,
        output_grads: Sequence[torch.Tensor],
        inputs: Sequence[torch.Tensor],
        input_key: Hashable,
        matrices: Sequence[torch.Tensor | None] | None = None,
        use_factors: Sequence[bool] | None = None,
    ) -> list[Pending]:
        """One :class:`Pending` per row: ``output_grads[r]`` is T_r x rows, ``inputs[r]`` T_r x cols.

        ``matrices[r]`` may pass an already formed ``D_r^T X_r``. ``use_factors[r]`` says
        whether row r takes the T-by-T factor route (the cost model's choice; default: wherever
        T_r < max(rows, cols)) or ``svdvals`` of the formed matrix. Rows with T_r below both
        sides take the T-by-T core (batched where the factorisation batches); rows with T_r
        between them factor only the longer side (see ``singular_values_from_factors``).
        """
        count = len(output_grads)
        matrices = matrices if matrices is not None else [None] * count
        rows = output_grads[0].shape[1]
        cols = inputs[0].shape[1]
        wanted = [use_factors is None or use_factors[r] for r in range(count)]
        lengths = [output_grads[r].shape[0] for r in range(count)]
        # T below both sides: the T-by-T core (batched where asked); below one side: one R
        small = [r for r in range(count) if lengths[r] < min(rows, cols) and wanted[r]]
        factored = [r for r in range(count) if lengths[r] < max(rows, cols) and wanted[r]]
        results: list[Pending | None] = [None] * count
        if self.name != "per-matrix" and small:
            for row, pending in zip(
                small,
                self._batched([output_grads[r] for r in small], inputs, small, input_key),
                strict=True,
            ):
                results[row] = pending
        for row in range(count):
            if results[row] is None:
                if row in factored:
                    factor = None
                    if lengths[row] < cols:
                        factor = self._input_factor((input_key, row), inputs[row])
                    values = singular_values_from_factors(
                        output_grads[row], inputs[row], matrices[row], factor
                    )
                else:
                    values = singular_values_of_matrix(
                        output_grads[row], inputs[row], matrices[row]
                    )
                results[row] = Pending(values)
        return [p for p in results if p is not None]

    def forget(self, input_key: Hashable) -> None:
        """Drop the input factors kept under ``input_key`` (its last module has been measured)."""
        for key in [k for k in self._input_factors if k == input_key or _first(k) == input_key]:
            del self._input_factors[key]

    def close(self) -> None:
        self._input_factors.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _input_factor(self, key: Hashable, inputs: torch.Tensor) -> torch.Tensor:
        factor = self._input_factors.get(key)
        if factor is None:
            factor = input_r_factor(inputs)
            self._input_factors[key] = factor
        return factor

    def _batched(
        self,
        output_grads: list[torch.Tensor],
        inputs: Sequence[torch.Tensor],
        rows_of_batch: list[int],
        input_key: Hashable,
    ) -> list[Pending]:
        import torch

        lengths = [g.shape[0] for g in output_grads]
        longest = max(lengths)
        key = (input_key, "batched", tuple(rows_of_batch), longest)
        input_factors = self._input_factors.get(key)
        if input_factors is None:
            padded_inputs = _padded_transposes([inputs[r] for r in rows_of_batch], longest)
            input_factors = torch.linalg.qr(padded_inputs, mode="r").R  # B x P x P
            self._input_factors[key] = input_factors
        output_factors = torch.linalg.qr(_padded_transposes(output_grads, longest), mode="r").R
        cores = output_factors @ input_factors.transpose(-1, -2)
        if self.name == "cpu-threads":
            if self._pool is None:
                self._pool = ThreadPoolExecutor(CPU_THREADS, thread_name_prefix="svdvals")
            future = self._pool.submit(torch.linalg.svdvals, cores.to("cpu"))
            return [Pending.slice_of(future, i, n) for i, n in enumerate(lengths)]
        values = torch.linalg.svdvals(cores)
        return [Pending(values[i, :n]) for i, n in enumerate(lengths)]


def _first(key: Hashable) -> Hashable:
    return key[0] if isinstance(key, tuple) and key else None


def _padded_transposes(factors: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    """``factors[r]^T`` (width x T_r) stacked and zero-padded to ``length`` columns."""
    import torch

    width = factors[0].shape[1]
    stacked = torch.zeros(
        (len(factors), width, length), dtype=factors[0].dtype, device=factors[0].device
    )
    for i, factor in enumerate(factors):
        stacked[i, :, : factor.shape[0]] = factor.T
    return stacked
