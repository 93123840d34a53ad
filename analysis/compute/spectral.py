"""Statistics of a gradient matrix from its singular values, computed exactly without a full SVD.

A sample's gradient with respect to a linear weight is ``G = D^T X``: ``X`` holds the layer's
inputs at the sample's T positions and ``D`` the loss gradients at its outputs. Its rank is at
most T, and when T is below min(rows, cols) its non-zero singular values are those of a T-by-T
matrix: with QR factors ``X^T = Q_x R_x`` and ``D^T = Q_d R_d``, ``G = Q_d (R_d R_x^T) Q_x^T``
and the orthonormal ``Q``s do not change singular values. So the spectrum costs two thin QRs
(``mode="r"``: the Qs are never formed) and one small ``svdvals`` instead of a full SVD of a
4096-by-4096 matrix, and it is exact: no Gram matrix is formed, so small singular values keep
their digits. When T is at least min(rows, cols) there is nothing to gain and ``svdvals(G)`` is
used. The remaining singular values of the full spectrum are exactly zero.

The reference path (``reference_statistics``) takes the full SVD of the full matrix, as the
paper's scripts do; tests hold the two to 1e-6 in float64.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from layerscope.analysis.base.records import MatrixStatistics

if TYPE_CHECKING:
    import torch


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics are computed in float32 or wider: bf16/fp16 have no SVD or QR."""
    import torch

    return torch.float64 if dtype == torch.float64 else torch.float32


def singular_values_from_factors(
    output_grads: torch.Tensor,
    inputs: torch.Tensor,
    matrix: torch.Tensor | None = None,
    input_factor: torch.Tensor | None = None,
) -> torch.Tensor:
    """Singular values of ``output_grads^T @ inputs``, descending.

    ``output_grads`` is T x rows, ``inputs`` is T x cols. Each side longer than T is replaced by
    the T-by-T R of its thin QR (``D^T = Q_d R_d``, ``X^T = Q_x R_x``; the orthonormal Qs do not
    change singular values), so the SVD is of a min(T, rows) x min(T, cols) core: T x T when T
    is below both, and rows x T when only the inputs are wider (k and v of a GQA model at
    medium lengths). Returns min(T, rows, cols) values; the other singular values of the
    rows x cols matrix are exactly zero. ``matrix`` may pass an already computed
    ``output_grads^T @ inputs`` (used when T is at least both sides), and ``input_factor`` the
    R of ``inputs^T`` (q, k and v share their inputs, so it is reused).
    """
    import torch

    positions, rows = output_grads.shape
    cols = inputs.shape[1]
    if positions >= max(rows, cols):
        return singular_values_of_matrix(output_grads, inputs, matrix)
    left = torch.linalg.qr(output_grads.T, mode="r").R if positions < rows else output_grads.T
    if positions < cols:
        right = input_factor if input_factor is not None else input_r_factor(inputs)
    else:
        right = inputs.T
    return torch.linalg.svdvals(left @ right.T)


def singular_values_of_matrix(
    output_grads: torch.Tensor, inputs: torch.Tensor, matrix: torch.Tensor | None = None
) -> torch.Tensor:
    """Singular values of ``output_grads^T @ inputs`` by ``svdvals`` of the formed matrix
    (``matrix`` when already formed); min(rows, cols) values, descending."""
    import torch

    if matrix is None:
        matrix = output_grads.T @ inputs
    return torch.linalg.svdvals(matrix)


def input_r_factor(inputs: torch.Tensor) -> torch.Tensor:
    """R of the thin QR of ``inputs^T`` (T x T when T <= cols); the Q is never formed."""
    import torch

    return torch.linalg.qr(inputs.T, mode="r").R


def summarize_spectrum(
    singular_values: torch.Tensor, rows: int, cols: int, loss: float
) -> dict[str, float]:
    """Spectral statistics from (a prefix of) the singular values; the rest are zeros."""
    import torch

    s = singular_values.detach().to("cpu", torch.float64).clamp_min(0)
    full_length = min(rows, cols)
    nuclear = float(s.sum())
    sigma_max = float(s.max()) if s.numel() else 0.0
    sigma_min = float(s.min()) if s.numel() >= full_length else 0.0
    frobenius = math.sqrt(float((s * s).sum()))
    if nuclear > 0:
        p = s[s > 0] / nuclear
        effective_rank = math.exp(float(-(p * p.log()).sum()))
        sigma1_ratio = sigma_max / nuclear
        stable_rank = frobenius**2 / sigma_max**2
    else:
        effective_rank = sigma1_ratio = stable_rank = math.nan
    return {
        "frobenius_norm": frobenius,
        "nuclear_norm": nuclear,
        "sigma_max": sigma_max,
        "sigma_min": sigma_min,
        "sigma1_ratio": sigma1_ratio,
        "nuclear_per_loss": nuclear / loss if loss else math.nan,
        "effective_rank": effective_rank,
        "stable_rank": stable_rank,
    }


def full_spectrum(singular_values: torch.Tensor, rows: int, cols: int) -> list[float]:
    """All min(rows, cols) singular values, descending, zeros included."""
    values = [float(v) for v in singular_values.detach().to("cpu").double()]
    return values + [0.0] * (min(rows, cols) - len(values))


def factor_entry_statistics(
    output_grads: torch.Tensor, inputs: torch.Tensor, matrix: torch.Tensor
) -> dict[str, float]:
    """Mean, max and min entry of ``matrix = output_grads^T @ inputs``.

    The mean comes from the factors in float64 (sum of G = sum_t (sum D_t)(sum X_t)), which is
    cheaper and more accurate than a float32 sum over millions of entries.
    """
    import torch

    rows, cols = matrix.shape
    total = torch.dot(
        output_grads.double().sum(dim=1), inputs.double().sum(dim=1)
    )  # sum over positions
    smallest, largest = torch.aminmax(matrix)
    return {"mean": float(total) / (rows * cols), "max": float(largest), "min": float(smallest)}


BLOCK_ENTRIES = 1 << 22  # entries of the gradient formed at once for its max and min


def entry_statistics_in_blocks(
    output_grads: torch.Tensor, inputs: torch.Tensor, matrix: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum, max and min of the entries of ``output_grads^T @ inputs``, as 0-d tensors.

    The sum comes from the factors in float64 (as in ``factor_entry_statistics``). Max and min
    have no shortcut through the factors, so the matrix is formed, but a block of rows at a
    time (at most ``BLOCK_ENTRIES`` entries): the whole gradient is never held. Tensors, not
    floats, so that a GPU is not made to wait here; ``matrix`` is used when already formed.
    """
    import torch

    total = torch.dot(output_grads.double().sum(dim=1), inputs.double().sum(dim=1))
    if matrix is not None:
        smallest, largest = torch.aminmax(matrix)
        return total, largest, smallest
    rows, cols = output_grads.shape[1], inputs.shape[1]
    step = max(1, BLOCK_ENTRIES // max(cols, 1))
    highs, lows = [], []
    for begin in range(0, rows, step):
        block = output_grads[:, begin : begin + step].T @ inputs
        low, high = torch.aminmax(block)
        highs.append(high)
        lows.append(low)
    return total, torch.stack(highs).max(), torch.stack(lows).min()


def reference_statistics(
    gradient: torch.Tensor,
    layer: int,
    projection: str,
    loss: float,
    entry_statistics: bool = True,
    keep_spectrum: bool = False,
) -> MatrixStatistics:
    """Statistics of a full gradient matrix by full SVD, as the paper's scripts compute them."""
    import torch

    matrix = gradient.to(working_dtype(gradient.dtype))
    rows, cols = matrix.shape
    singular_values = torch.linalg.svd(matrix, full_matrices=False).S
    values = summarize_spectrum(singular_values, rows, cols, loss)
    values["sigma_min"] = float(singular_values.min())
    # Frobenius straight from the entries, squares accumulated in float64.
    values["frobenius_norm"] = math.sqrt(float(matrix.double().square().sum()))
    if entry_statistics:
        values["mean"] = float(matrix.double().mean())
        values["max"] = float(matrix.max())
        values["min"] = float(matrix.min())
    spectrum = full_spectrum(singular_values, rows, cols) if keep_spectrum else None
    return MatrixStatistics(layer, projection, values, spectrum)
