"""Cosine similarities between gradients, exact over millions of entries.

Why its own module: the layer-by-layer and q-o / k-v cosines compare whole gradient matrices
(tens of millions of entries for a 7B model); summing their products in float32 loses digits,
and converting whole gradients to float64 doubles their memory. :func:`gram` takes the middle
way (chunked products, float64 accumulation) and is the one place that trade-off is made.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["GRAM_CHUNK", "cosine", "cosine_matrix", "gram"]


GRAM_CHUNK = 1 << 20


def gram(vectors: list[torch.Tensor]) -> list[list[float]]:
    """Inner products of every pair, as one matrix product per chunk of entries.

    Each chunk's products are formed in the vectors' dtype (a short sum, exact enough) and the
    chunks are accumulated in float64: float32 sums over millions of entries lose digits, and
    converting whole gradients to float64 would double their memory.
    """
    import torch

    count = len(vectors)
    total = torch.zeros((count, count), dtype=torch.float64, device=vectors[0].device)
    for begin in range(0, vectors[0].numel(), GRAM_CHUNK):
        block = torch.stack([v[begin : begin + GRAM_CHUNK] for v in vectors])
        total += (block @ block.T).double()
    return total.cpu().tolist()


def cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    return cosine_matrix([x, y])[0][1]


def cosine_matrix(vectors: list[torch.Tensor]) -> list[list[float]]:
    """Cosine similarity of every pair of vectors (NaN where one is zero)."""
    products = gram(vectors)
    norms = [math.sqrt(products[i][i]) for i in range(len(vectors))]
    return [
        [
            products[i][j] / (norms[i] * norms[j]) if norms[i] * norms[j] > 0 else math.nan
            for j in range(len(vectors))
        ]
        for i in range(len(vectors))
    ]
