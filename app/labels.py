"""Short, distinguishing names for runs in legends and tables.

A legend that repeats "tiny / math / base" on every line hides what differs. Labels keep only
the parts that tell the overlaid runs apart (model, dataset, response type, mode), falling back
to the run id prefix when two runs differ only in settings. Legends add each run's sample
count (:func:`counted_labels`), which tables give in a column of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerscope.analysis.base.records import LayerCurve

ID_PREFIX = 8


def short_model(model: str) -> str:
    """`tiny`, a hub id's last part, or a folder's name."""
    if not model:
        return "?"
    if "/" in model and not model.startswith(("/", ".", "~")) and model.count("/") == 1:
        return model.split("/")[-1]
    return PurePath(model).name or model


def initialisation(run: Any) -> str:
    """``random init, seed S`` for a run of freshly initialised weights; "" for trained weights."""
    settings = getattr(run, "settings", None) or {}
    if settings.get("init") != "random":
        return ""
    return f"random init, seed {settings.get('init_seed', 0)}"


def _parts(run: Any) -> list[str]:
    init = initialisation(run) or "trained"
    return [short_model(run.model), run.dataset, run.response_type, run.mode, init]


def run_labels(runs: Sequence[Any]) -> dict[str, str]:
    """run id -> the shortest label that tells these runs apart."""
    if not runs:
        return {}
    all_parts = [_parts(run) for run in runs]
    if len(runs) == 1:
        kept = [2, 3] if all_parts[0][3] != "base" else [2]
        if all_parts[0][4] != "trained":
            kept.append(4)
    else:
        kept = [
            position for position in range(5) if len({parts[position] for parts in all_parts}) > 1
        ] or [2]
    labels = {
        run.id: " ".join(parts[p] for p in kept) for run, parts in zip(runs, all_parts, strict=True)
    }
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {
        run_id: f"{label} #{run_id[:ID_PREFIX]}" if counts[label] > 1 else label
        for run_id, label in labels.items()
    }


def full_label(run: Any) -> str:
    """Everything that names a run: model / dataset / type (mode), and a random init."""
    init = initialisation(run)
    mode = f"{run.mode}, {init}" if init else run.mode
    return f"{short_model(run.model)} / {run.dataset} / {run.response_type} ({mode})"


def _seconds_between(started: Any, finished: Any) -> float | None:
    if not started or not finished:
        return None
    if isinstance(started, str):
        try:
            started, finished = (datetime.fromisoformat(t) for t in (started, finished))
        except ValueError:
            return None
    return max(0.0, (finished - started).total_seconds())


def computing_seconds(run: Any) -> float | None:
    """Seconds spent computing a run: its sessions' durations added up (a resumed run counts
    only the time it computed, not the days between), else its start to its finish."""
    provenance = getattr(run, "provenance", None) or {}
    sessions = provenance.get("sessions") or []
    spans = [_seconds_between(s.get("started_at"), s.get("finished_at")) for s in sessions]
    if spans and all(span is not None for span in spans):
        return sum(span for span in spans if span is not None)
    return _seconds_between(getattr(run, "started_at", None), getattr(run, "finished_at", None))


def duration(seconds: float) -> str:
    """`4.2 s`, `3m07s`, `2h05m`: short enough for a table cell."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s"


def run_settings(run: Any) -> str:
    """How a run was computed, in one line: dtype, limit, max length, modules, device, time.

    Two runs of the same model, data and type differ only here, so the Runs tab and the chart's
    legend show it on request; parts a run (an imported one, say) does not record are left out.
    """
    settings = getattr(run, "settings", None) or {}
    provenance = getattr(run, "provenance", None) or {}
    parts = []
    if settings.get("dtype"):
        parts.append(str(settings["dtype"]))
    limit = provenance.get("limit")
    parts.append(f"limit {limit}" if limit is not None else "all samples")
    if settings.get("max_length"):
        parts.append(f"max length {settings['max_length']}")
    if settings.get("modules"):
        parts.append(f"modules {settings['modules']}")
    if initialisation(run):
        parts.append(initialisation(run))
    if provenance.get("device"):
        parts.append(str(provenance.get("gpu") or provenance["device"]))
    seconds = computing_seconds(run)
    if seconds is not None:
        parts.append(f"computed in {duration(seconds)}")
    return ", ".join(parts)


def sample_count(curves: Iterable[LayerCurve]) -> str:
    """``n=6``: how many samples a run's curves stand on (the most at any layer, as the MAD
    table's ``samples``); ``n=5-6`` when its curves differ, a projection having lost samples to
    non-finite values. Legends say it because a mean over 6 samples and one over 600 look
    the same as lines."""
    counts = sorted({max(curve.count, default=0) for curve in curves})
    if not counts:
        return "n=0"
    return f"n={counts[0]}" if len(counts) == 1 else f"n={counts[0]}-{counts[-1]}"


def counted_labels(labels: Mapping[str, str], curves: Sequence[LayerCurve]) -> dict[str, str]:
    """Each run of ``curves`` -> its label (or id prefix) followed by its sample count,
    ``base none_cot (n=6)``, for a legend."""
    by_run: dict[str, list[LayerCurve]] = {}
    for curve in curves:
        by_run.setdefault(curve.run_id, []).append(curve)
    return {
        run_id: f"{labels.get(run_id, run_id[:ID_PREFIX])} ({sample_count(own)})"
        for run_id, own in by_run.items()
    }
