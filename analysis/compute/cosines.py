"""Cosine similarities between gradients, exact over millions of entries.

Why its own module: the layer-by-layer and q-o / k-v cosines compare whole gradient matrices
(tens of millions of entries for a 7B model); summing their products in float32 loses digits,
and converting whole gradients to float64 doubles their memory. :func:`gram` takes the middle
way (chunked products, float64 accumulation) and is the one place that trade-off is made.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING

from layerscope.analysis.compute.routes import SHARED_INPUTS
from layerscope.analysis.compute.spectral import working_dtype

if TYPE_CHECKING:
    import torch

    from layerscope.analysis.base.records import TargetInfo

__all__ = [
    "GRAM_CHUNK",
    "PAIRS",
    "SampleCosines",
    "cosine",
    "cosine_matrix",
    "factor_inner_product",
    "gram",
    "paired_cosines",
]


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


# Entries of the T-by-T products formed at once by the factor route (per chunk of earlier
# layers): bounds its memory at any T (no layers x T x T tensor).
FACTOR_CHUNK_ENTRIES = 1 << 24
# Entries of the kept gradients multiplied at once by the formed route's Gram (each chunk's
# products in the gradients' dtype, summed in float64).
FORMED_CHUNK_COLUMNS = 1 << 12

Key = tuple[str, int]  # (projection, layer)


class SampleCosines:
    """One sample's gradient inner products, each projection by its route, summed in float64.

    The layer-by-layer cosines of a projection need ``<G_i, G_j>`` for every pair of its layers,
    and the q-o / k-v cosines ``<G_a, G_b>`` at each layer. Two exact routes
    (:mod:`~layerscope.analysis.compute.routes` picks one per projection):

    - ``factors``: ``<G_i, G_j> = sum((D_i D_j^T) * (X_i X_j^T))``. Each projection keeps its
      ``D``s and each input group (q, k and v read one input) its ``X``s; when every member of a
      group has arrived at a layer, its products with all earlier layers are a few large matrix
      products per chunk of layers, ``X_i X_j^T`` computed once for the whole group.
    - ``formed``: each ``G`` written once into a buffer of the projection's layers (the engine
      forms it there, and max/min and the spectrum reuse it); one chunked float64 Gram at the end.

    Layers arrive in any order (the backward goes from the last layer to the first).
    """

    def __init__(self, infos: Sequence[TargetInfo]) -> None:
        self.layers: dict[str, list[int]] = {}
        self.shapes: dict[Key, tuple[int, int]] = {}
        for info in infos:
            self.layers.setdefault(info.projection, []).append(info.layer)
            self.shapes[(info.projection, info.layer)] = (info.rows, info.cols)
        self.products: dict[tuple[Key, Key], torch.Tensor] = {}
        # formed: one buffer of L gradients per projection, slot by layer
        self._kept: dict[str, torch.Tensor] = {}
        self._kept_slot: dict[Key, int] = {}
        # factors: per projection its D's; per input group its X's (slots in arrival order)
        self._output_factors: dict[str, list[torch.Tensor]] = {}
        self._output_slot: dict[Key, int] = {}
        self._input_factors: dict[Hashable, list[torch.Tensor]] = {}
        self._input_slot: dict[Key, tuple[Hashable, int]] = {}
        self._waiting: dict[Hashable, list[Key]] = {}  # members of a group awaiting products
        self._group_of_input: dict[Hashable, Hashable] = {}
        # results (finish): per projection its L x L inner products; q-o / k-v products
        self._grams: dict[str, torch.Tensor] = {}
        self._pair_values: dict[tuple[Key, Key], float] = {}

    # -- formed route ------------------------------------------------------------------
    def gradient_slot(self, info: TargetInfo, like: torch.Tensor) -> torch.Tensor:
        """Where the engine writes ``G`` (rows x cols) of this matrix for the formed route."""
        import torch

        projection = info.projection
        buffer = self._kept.get(projection)
        if buffer is None:
            count = len(self.layers[projection])
            buffer = torch.empty(
                (count, info.rows * info.cols), dtype=like.dtype, device=like.device
            )
            self._kept[projection] = buffer
        slot = len([k for k in self._kept_slot if k[0] == projection])
        self._kept_slot[(projection, info.layer)] = slot
        return buffer[slot].view(info.rows, info.cols)

    # -- factor route ------------------------------------------------------------------
    def add_factors(
        self,
        info: TargetInfo,
        output_grads: torch.Tensor,
        inputs: torch.Tensor,
        input_key: Hashable,
    ) -> None:
        """Keep ``D`` (T x rows) and ``X`` (T x cols) of a matrix on the factor route.

        ``input_key`` names its input: matrices with the same key share X (q, k and v of a
        layer). Products are formed in :meth:`input_done`, once the group is complete.
        """
        key = (info.projection, info.layer)
        outputs = self._output_factors.setdefault(info.projection, [])
        self._output_slot[key] = len(outputs)
        outputs.append(output_grads)
        group = self._group_of_input.get(input_key)
        if group is None:
            group = self._group_name(info.projection)
            self._group_of_input[input_key] = group
            self._input_factors.setdefault(group, []).append(inputs)
        self._input_slot[key] = (group, len(self._input_factors[group]) - 1)
        self._waiting.setdefault(input_key, []).append(key)

    def _group_name(self, projection: str) -> Hashable:
        for group in SHARED_INPUTS:
            if projection in group:
                return group
        return (projection,)

    def input_done(self, input_key: Hashable) -> None:
        """Every matrix reading ``input_key`` has arrived: form their products with all the
        earlier layers of their projections (and themselves)."""
        members = self._waiting.pop(input_key, [])
        self._group_of_input.pop(input_key, None)
        by_prior: dict[tuple[Hashable, tuple[int, ...]], list[Key]] = {}
        for key in members:
            projection = key[0]
            group = self._input_slot[key][0]
            prior = tuple(
                self._input_slot[(projection, layer)][1]
                for layer in self._arrived_factors(projection)
            )
            by_prior.setdefault((group, prior), []).append(key)
        for (group, prior), keys in by_prior.items():
            self._layer_products(group, prior, keys)

    def _arrived_factors(self, projection: str) -> list[int]:
        """Layers of ``projection`` whose factors are kept, in slot order."""
        slots = [(slot, key[1]) for key, slot in self._output_slot.items() if key[0] == projection]
        return [layer for _slot, layer in sorted(slots)]

    def _layer_products(self, group: Hashable, prior: tuple[int, ...], keys: list[Key]) -> None:
        """``<G_new, G_j>`` for each new matrix in ``keys`` and each layer j of its projection
        kept so far (the new one included), per chunk of layers: one product of the stacked
        X's with the new X for the group, one of the stacked D's with the new D per member."""
        import torch

        inputs = self._input_factors[group]
        new_input = inputs[self._input_slot[keys[0]][1]]
        positions = new_input.shape[0]
        dtype = working_dtype(new_input.dtype)
        device = new_input.device
        new_x = new_input.to(dtype)
        per_chunk = max(1, FACTOR_CHUNK_ENTRIES // max(positions * positions, 1))
        for begin in range(0, len(prior), per_chunk):
            chunk = prior[begin : begin + per_chunk]
            stacked_x = torch.cat([inputs[slot].to(device, dtype) for slot in chunk])
            input_products = (stacked_x @ new_x.T).double().view(len(chunk), positions, -1)
            del stacked_x
            for key in keys:
                projection = key[0]
                outputs = self._output_factors[projection]
                new_d = outputs[self._output_slot[key]].to(dtype)
                layers = self._arrived_factors(projection)[begin : begin + len(chunk)]
                stacked_d = torch.cat(
                    [
                        outputs[self._output_slot[(projection, layer)]].to(device, dtype)
                        for layer in layers
                    ]
                )
                output_products = (stacked_d @ new_d.T).double().view(len(chunk), positions, -1)
                values = (output_products * input_products).sum(dim=(1, 2))
                for position, layer in enumerate(layers):
                    self.products[(key, (projection, layer))] = values[position]
        self._pair_products(keys)

    def _pair_products(self, keys: list[Key]) -> None:
        """q-o and k-v products at the new matrices' layer, where both are on this route."""
        for key in keys:
            projection, layer = key
            partner = (_PARTNERS.get(projection, ""), layer)
            if partner not in self._output_slot or self.shapes.get(partner) != self.shapes[key]:
                continue
            if (key, partner) in self.products or (partner, key) in self.products:
                continue
            self.products[(key, partner)] = factor_inner_product(
                *self._factors(key), *self._factors(partner)
            )

    def _factors(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        group, slot = self._input_slot[key]
        return (
            self._output_factors[key[0]][self._output_slot[key]],
            self._input_factors[group][slot],
        )

    # -- results -----------------------------------------------------------------------
    def finish(self) -> None:
        """Every projection's matrix of inner products (the formed route's Gram, the factor
        route's products gathered), and the q-o / k-v products whose members took different
        routes; the kept gradients and factors are dropped."""
        import torch

        for projection, buffer in self._kept.items():
            count = buffer.shape[0]
            total = torch.zeros((count, count), dtype=torch.float64, device=buffer.device)
            # Products of short chunks in the buffer's dtype, summed in float64: as accurate as
            # a float64 product here (cosines within 2e-9), without a float64 copy of the buffer.
            for begin in range(0, buffer.shape[1], FORMED_CHUNK_COLUMNS):
                block = buffer[:, begin : begin + FORMED_CHUNK_COLUMNS]
                total += (block @ block.T).double()
            order = [self._kept_slot[(projection, layer)] for layer in self.layers[projection]]
            self._grams[projection] = total[order][:, order].cpu()
        for projection, layers in self.layers.items():
            if projection not in self._grams:
                self._grams[projection] = self._gathered(projection, layers)
        for a, b in PAIRS:
            for layer in self.layers.get(a, []):
                one, other = (a, layer), (b, layer)
                if other not in self.shapes or self.shapes[one] != self.shapes[other]:
                    continue
                value = self.products.get((one, other), self.products.get((other, one)))
                if value is None:
                    value = self._mixed_product(one, other)
                self._pair_values[(one, other)] = float(value)
        self._kept.clear()
        self._output_factors.clear()
        self._input_factors.clear()
        self.products.clear()

    def _gathered(self, projection: str, layers: list[int]) -> torch.Tensor:
        """The factor route's products of one projection as a matrix in layer order."""
        import torch

        index = {layer: i for i, layer in enumerate(layers)}
        places, values = [], []
        for (a, b), value in self.products.items():
            if a[0] == projection and b[0] == projection:
                places.append((index[a[1]], index[b[1]]))
                values.append(value.detach().to("cpu", torch.float64))
        total = torch.full((len(layers), len(layers)), math.nan, dtype=torch.float64)
        if values:
            stacked = torch.stack(values)
            rows = torch.tensor([i for i, _ in places])
            cols = torch.tensor([j for _, j in places])
            total[rows, cols] = stacked
            total[cols, rows] = stacked
        return total

    def _gradient(self, key: Key) -> torch.Tensor:
        """``G`` of a matrix, from the formed buffer or from its factors, flattened."""
        if key in self._kept_slot:
            return self._kept[key[0]][self._kept_slot[key]]
        output_grads, inputs = self._factors(key)
        dtype = working_dtype(inputs.dtype)
        return (output_grads.to(dtype).T @ inputs.to(dtype)).reshape(-1)

    def _mixed_product(self, one: Key, other: Key) -> torch.Tensor:
        import torch

        first = self._gradient(one)
        second = self._gradient(other).to(first.device)
        return torch.mul(first, second).sum(dtype=torch.float64)  # summed in float64

    def layer_cosines(self) -> dict[str, list[list[float]]]:
        """Per projection, the cosine of every pair of its layers (NaN where one is zero)."""
        import torch

        cosines = {}
        for projection, total in self._grams.items():
            norms = total.diagonal().clamp_min(0).sqrt()
            outer = norms[:, None] * norms[None, :]
            matrix = torch.where(outer > 0, total / outer, torch.full_like(total, math.nan))
            cosines[projection] = matrix.tolist()
        return cosines

    def pair_cosines(self) -> dict[str, list[float]]:
        def cosine_of(one: Key, other: Key) -> float:
            norm = math.sqrt(self._norm_squared(*one) * self._norm_squared(*other))
            return self._pair_values[(one, other)] / norm if norm > 0 else math.nan

        return paired_cosines(self.layers, self.shapes, cosine_of)

    def _norm_squared(self, projection: str, layer: int) -> float:
        i = self.layers[projection].index(layer)
        return max(float(self._grams[projection][i, i]), 0.0)


PAIRS = (("q", "o"), ("k", "v"))
_PARTNERS = {b: a for a, b in PAIRS} | {a: b for a, b in PAIRS}


def paired_cosines(
    layers: Mapping[str, Sequence[int]],
    shapes: Mapping[Key, object],
    cosine_of: Callable[[Key, Key], float],
) -> dict[str, list[float]]:
    """The q-o and k-v cosines layer by layer (``"q-o": [...]``), for the pairs whose two
    matrices exist at every layer with one shape (``shapes`` per (projection, layer))."""
    pairs: dict[str, list[float]] = {}
    for a, b in PAIRS:
        present = [i for i in layers.get(a, []) if (b, i) in shapes]
        values = []
        for i in present:
            if shapes[(a, i)] != shapes[(b, i)]:
                break
            values.append(cosine_of((a, i), (b, i)))
        if values and len(values) == len(present):
            pairs[f"{a}-{b}"] = values
    return pairs


def factor_inner_product(
    d1: torch.Tensor, x1: torch.Tensor, d2: torch.Tensor, x2: torch.Tensor
) -> torch.Tensor:
    """``<d1^T x1, d2^T x2>`` from T-by-T products, summed in float64 (a 0-d tensor)."""
    dtype = working_dtype(d1.dtype)
    device = d1.device
    d2, x2 = d2.to(device), x2.to(device)  # modules of one model may live on several devices
    outputs = d1.to(dtype) @ d2.to(dtype).T
    inputs = x1.to(dtype) @ x2.to(dtype).T
    return (outputs.double() * inputs.double()).sum()
