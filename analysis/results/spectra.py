"""The singular-value distribution of a run's gradients, layer by layer, to draw log-log.

What is drawn: for one projection and layer, the **mean over samples of the k-th largest
singular value, against k** (a rank-ordered "scree" curve, both axes log). Why this rather than
an empirical density of sigma^2 on log-spaced bins (WeightWatcher's histogram): a sample's
spectrum holds only min(T, rows, cols) values (T: its tokens), a few hundred at most, so a
histogram per layer is mostly bin noise and depends on the bins chosen; the rank curve needs no
choice, keeps every value, and on log-log axes shows the same thing (a power law is a straight
line, its slope the tail exponent; a heavy head bends up at the left). Means by rank are also
what a reader can recompute: sort each sample's values, average position by position. Samples
with fewer values (shorter responses) do not count at the ranks they lack, so each rank carries
its own sample count. Values stored as NaN or empty are left out before sorting.

The numbers come from the cache (:meth:`ResultsCache.spectrum_by_rank`, one SQL aggregate);
runs computed without ``--spectra`` (and imports without ``S_list``) have none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerscope.analysis.base.records import RunInfo
    from layerscope.analysis.cache import ResultsCache

# A chart stays legible with this many layers overlaid (one marker glyph each).
MOST_LAYERS_DRAWN = 8


@dataclass(frozen=True)
class LayerSpectrum:
    """One layer's mean spectrum: ``means[k - 1]`` is the mean of the k-th largest singular
    value over the ``samples[k - 1]`` samples that have one (ranks start at 1)."""

    layer: int
    projection: str
    means: list[float]
    samples: list[int]

    @property
    def ranks(self) -> list[int]:
        return list(range(1, len(self.means) + 1))

    def record(self) -> dict[str, Any]:
        """Plain JSON values (``show --spectra --json``)."""
        return {
            "layer": self.layer,
            "projection": self.projection,
            "rank": self.ranks,
            "mean": self.means,
            "samples": self.samples,
        }


def no_spectra_message(info: RunInfo) -> str:
    """Why a run has nothing to draw, and how to get it, in one line."""
    return (
        f"run {info.short_id} kept no singular-value spectra: compute it with "
        "`layerscope compute ... --spectra` (or import a file with S_list)"
    )


def spread_layers(layers: Sequence[int], most: int = MOST_LAYERS_DRAWN) -> list[int]:
    """At most ``most`` of ``layers`` (sorted), evenly spread, first and last kept."""
    chosen = sorted(set(layers))
    if len(chosen) <= most:
        return chosen
    if most == 1:
        return chosen[:1]
    step = (len(chosen) - 1) / (most - 1)
    return sorted({chosen[round(i * step)] for i in range(most)})


def run_spectra(
    cache: ResultsCache,
    run_id: str,
    projection: str,
    layers: tuple[int, int] | None = None,
) -> list[LayerSpectrum]:
    """The mean spectrum by rank of each layer of one projection (``layers``: inclusive range,
    default all), in layer order; empty when the run kept no spectra."""
    by_layer = cache.spectrum_by_rank(run_id, projection)
    return [
        LayerSpectrum(
            layer, projection, [mean for mean, _ in values], [count for _, count in values]
        )
        for layer, values in sorted(by_layer.items())
        if layers is None or layers[0] <= layer <= layers[1]
    ]
