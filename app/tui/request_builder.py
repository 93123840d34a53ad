"""From the Setup tab's picks to a run request, and to the picks remembered for next time.

Why one function: what a run request is made of (and what is remembered of it) is one rule,
used by both the plan (the cached-status column) and the run. It is deliberately the only place
that knows how the Setup tab's fields map onto `RunRequest` and `LastPicks`, so that it can be
replaced as one piece when settings get their own record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerscope.analysis.errors import one_line
from layerscope.app.tui.state import LastPicks

if TYPE_CHECKING:
    from layerscope.analysis.runner import RunRequest
    from layerscope.app.tui.widgets.setup_view import Picks


def build_request(picks: Picks, *, require_types: bool = True) -> tuple[RunRequest, LastPicks]:
    """The RunRequest for these picks and the LastPicks to remember; ValueError for the user."""
    from layerscope.analysis.records import ComputeSettings

    try:
        from layerscope.analysis.runner import RunRequest
    except ImportError as error:
        raise ValueError(f"computing is not available: {one_line(error)}") from None
    if not picks.model_ok:
        raise ValueError(f"model {picks.model!r} is not usable (see the Setup tab)")
    if not picks.dataset_ok:
        raise ValueError(f"dataset {picks.dataset!r} is not readable (see the Setup tab)")
    types = picks.types
    if require_types and not types:
        raise ValueError("check at least one response type (space in the list)")
    values = picks.values
    settings = ComputeSettings(
        mode=picks.mode,  # type: ignore[arg-type]
        max_length=values.max_length,
        modules=values.modules,  # type: ignore[arg-type]
        batch_size=values.batch_size,
    )
    request = RunRequest(
        model=picks.model,
        dataset=picks.dataset,
        types=types or None,
        settings=settings,
        limit=values.samples,
        sample_seed=values.sample_seed,
        dtype=values.dtype,
        device=values.device,
    )
    remembered = LastPicks(
        model=picks.model,
        mode=picks.mode,
        dataset=picks.dataset,
        types=picks.types,
        samples=values.samples,
        sample_seed=values.sample_seed,
        max_length=values.max_length,
        batch_size=values.batch_size,
        dtype=values.dtype,
        device=values.device,
        modules=values.modules,
    )
    return request, remembered
