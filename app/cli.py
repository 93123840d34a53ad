"""The ``layerscope`` command line: headless computing and browsing of the results cache.

Why headless: the computations run for hours on GPU servers, in tmux, over SSH; users start
them with ``layerscope compute``, look at results with ``runs``/``show`` from another terminal
while they run, and move numbers around with ``export``/``import``. ``layerscope`` alone opens
the Textual explorer.

Conventions every command keeps: ``--help``; ``--db`` (also before the command); progress bars
on stderr for long work (stdout stays clean for scripts: run ids, tables, JSON); exit status 0
on success, 1 for a runtime error, 2 for a usage error, 130 when interrupted; and every error
is one line ``layerscope: error: ...`` on stderr, never a traceback (set ``LAYERSCOPE_DEBUG=1``
to get one). Browsing commands (runs, show, export, import) never import torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from layerscope.analysis.cache import CacheError, ResultsCache, RunInfo
from layerscope.analysis.compare import (
    Comparison,
    compare_runs,
    layer_splits,
    relative_difference,
    resolve_metric,
)
from layerscope.analysis.records import (
    ATTENTION_PROJECTIONS,
    DEFAULT_SYSTEM_PROMPT,
    MLP_PROJECTIONS,
    ComputeSettings,
)

PROG = "layerscope"
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DTYPES = ("auto", "float32", "float64", "bfloat16", "float16")
EXPORT_FORMATS = ("parquet", "csv", "paper-jsonl")
CHECK_TYPES = ("none_cot", "detailed_cot", "none_cot_irrelevant", "detailed_cot_irrelevant")


class UsageError(Exception):
    """A command line that cannot be run as given (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line and exit status 2 (see ``main``)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


# ---- argument types ---------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _token_range(text: str) -> tuple[int, int]:
    try:
        low_text, high_text = text.split("-", 1) if "-" in text else (text, text)
        low = int(low_text) if low_text else 0
        high = int(high_text) if high_text else 2**31 - 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH token counts, got {text!r}") from None
    if low > high:
        raise argparse.ArgumentTypeError(f"empty token range {text!r}")
    return low, high


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    return names or None


def _projections(text: str | None) -> list[str] | None:
    names = _names(text)
    if names is None:
        return None
    known = ATTENTION_PROJECTIONS + MLP_PROJECTIONS
    for name in names:
        if name not in known:
            raise UsageError(f"--proj: unknown projection {name!r} (choose from {','.join(known)})")
    return names


# ---- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    db_help = "results cache file (default: $LAYERSCOPE_DB or ~/.cache/layerscope/results.duckdb)"
    parser = _Parser(
        prog=PROG,
        description="Layer-wise gradient statistics of causal LMs: compute, cache, compare. "
        "Without a command, opens the interactive explorer.",
    )
    parser.add_argument("--model", help="explorer: preselect this model")
    parser.add_argument("--dataset", help="explorer: preselect this dataset")
    parser.add_argument("--db", help=db_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        # SUPPRESS: a --db given before the command is not overwritten by this default
        sub.add_argument("--db", default=argparse.SUPPRESS, help=db_help)
        return sub

    compute = command("compute", "compute what is missing and print the run ids")
    compute.add_argument("--model", required=True, help="tiny, a local folder or a cached hub id")
    compute.add_argument(
        "--dataset",
        required=True,
        help="a data file, a folder in the paper's layout, a .toml manifest, or math/knowledge",
    )
    _add_compute_options(compute)
    compute.add_argument(
        "--types", help="comma-separated response types (default: all in the dataset)"
    )
    compute.add_argument(
        "--limit", type=_positive_int, help="only the first N samples of each type"
    )
    compute.add_argument(
        "--sample-seed",
        type=int,
        help="with --limit: draw the N samples at random with this seed instead",
    )
    compute.add_argument("--quiet", action="store_true", help="no progress bars")

    runs = command("runs", "list the runs in the cache")
    runs.add_argument("--json", action="store_true", help="a JSON array instead of a table")

    show = command("show", "layer-wise curves of runs, their MAD and relative differences")
    show.add_argument("runs", nargs="+", metavar="RUN", help="run ids or unique id prefixes")
    show.add_argument(
        "--metric",
        default="nuclear",
        help="nuclear, sigma1_ratio, frobenius, effective_rank, stable_rank, sigma_max, "
        "sigma_min, mean, max, min, nuclear_per_loss or loss (default: nuclear)",
    )
    show.add_argument("--proj", help="comma-separated projections (default: all measured)")
    show.add_argument(
        "--tokens",
        type=_token_range,
        metavar="LOW-HIGH",
        help="length control: only samples with LOW..HIGH response tokens",
    )
    show.add_argument("--json", action="store_true", help="curves and tables as JSON")
    _add_chart_options(show)

    export = command("export", "write a run as Parquet, CSV or the paper's JSON lines")
    export.add_argument("run", metavar="RUN")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export.add_argument("--output", required=True, type=Path, metavar="PATH")

    import_ = command("import", "read the paper's per-sample JSON lines into the cache as a run")
    import_.add_argument("file", type=Path, metavar="FILE.jsonl")
    import_.add_argument("--model", required=True, help="name to file the run under")
    import_.add_argument("--dataset", required=True, help="dataset name to file the run under")
    import_.add_argument("--type", required=True, dest="response_type", help="response type")
    import_.add_argument("--mode", choices=("base", "instruct"), default="base")

    describe = command("describe", "list the matrices that would be measured, without computing")
    describe.add_argument("--model", required=True)
    describe.add_argument("--modules", choices=("attn", "mlp", "all"), default="attn")
    describe.add_argument("--trust-remote-code", action="store_true")
    describe.add_argument("--json", action="store_true")

    check = command(
        "check",
        "a quick profile of a model on the bundled math samples: fast vs slow thinking, "
        "correct vs irrelevant",
    )
    check.add_argument("model", metavar="MODEL")
    check.add_argument("--dataset", default="math", help="dataset to profile (default: math)")
    check.add_argument("--limit", type=_positive_int, default=8, help="samples per type (8)")
    check.add_argument("--metric", default="nuclear", help="statistic to chart (nuclear)")
    check.add_argument("--proj", help="projections to chart (default: q,k,v,o)")
    _add_compute_options(check, modules=False)
    check.add_argument("--quiet", action="store_true", help="no progress bars")
    check.add_argument("--json", action="store_true")
    _add_chart_options(check)
    return parser


def _add_compute_options(parser: argparse.ArgumentParser, modules: bool = True) -> None:
    parser.add_argument("--mode", choices=("base", "instruct"), default="base")
    parser.add_argument(
        "--system-prompt", default=DEFAULT_SYSTEM_PROMPT, help="instruct mode's system prompt"
    )
    parser.add_argument("--max-length", type=_positive_int, default=1024, help="tokens (1024)")
    parser.add_argument("--batch-size", type=_positive_int, default=4, help="samples (4)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    if modules:
        parser.add_argument("--modules", choices=("attn", "mlp", "all"), default="attn")
        parser.add_argument("--method", choices=("fast", "reference"), default="fast")
        parser.add_argument(
            "--spectra", action="store_true", help="keep every singular value (bigger cache)"
        )
        parser.add_argument("--no-cosines", action="store_true", help="skip gradient cosines")
        parser.add_argument(
            "--no-entry-statistics", action="store_true", help="skip mean/max/min entries"
        )
    parser.add_argument("--trust-remote-code", action="store_true")


def _add_chart_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=_positive_int, help="chart width (terminal width)")
    parser.add_argument("--height", type=_positive_int, default=18, help="chart height (18)")


# ---- output helpers ---------------------------------------------------------------------------


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is read by people too: do not squeeze tables into 80 columns.
    width = None if stream.isatty() else max(120, shutil.get_terminal_size((120, 24)).columns)
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"


def _finite(value: float) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _db(args: argparse.Namespace) -> str | None:
    return getattr(args, "db", None)


def _labels(infos: Sequence[RunInfo]) -> dict[str, str]:
    from layerscope.app.tui.labels import run_labels

    return run_labels(infos)


def _chart_width(args: argparse.Namespace) -> int:
    return args.width or max(60, min(shutil.get_terminal_size((100, 24)).columns, 160))


# ---- compute ----------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> ComputeSettings:
    return ComputeSettings(
        mode=args.mode,
        system_prompt=args.system_prompt,
        max_length=args.max_length,
        modules=getattr(args, "modules", "attn"),
        method=getattr(args, "method", "fast"),
        spectra=getattr(args, "spectra", False),
        entry_statistics=not getattr(args, "no_entry_statistics", False),
        cosines=not getattr(args, "no_cosines", False),
        batch_size=args.batch_size,
    )


def _quiet_loading(quiet: bool) -> None:
    """--quiet also silences the loader's own progress bar ("Loading weights")."""
    if not quiet:
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when transformers is imported
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def _metric(name: str) -> str:
    try:
        return resolve_metric(name)
    except ValueError as error:
        raise UsageError(f"--metric: {error}") from None


def _check_instruct(model: str, mode: str) -> None:
    if mode != "instruct":
        return
    from layerscope.analysis.models import has_chat_template

    if not has_chat_template(model):
        raise UsageError(f"--mode instruct: model {model!r} has no chat template")


class _Cancellation:
    """First Ctrl-C (or SIGTERM) asks the runner to stop after the current batch; a second
    Ctrl-C interrupts at once. Either way the stored batches stay and a rerun resumes."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()
        print(
            f"{PROG}: stopping after the current batch (Ctrl-C again to stop now)",
            file=sys.stderr,
        )

    def __enter__(self) -> _Cancellation:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _execute(request: Any, db: str | None, quiet: bool) -> tuple[list[Any], bool]:
    """Run a request with progress bars; returns the final progress per run and whether it
    was cancelled."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from layerscope.analysis.runner import execute

    finals: dict[str, Any] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[loss]}"),
    )
    with (
        _Cancellation() as cancellation,
        Progress(*columns, console=_console(stderr=True), disable=quiet) as progress,
    ):
        tasks: dict[str, Any] = {}
        for update in execute(request, db_path=db, cancel=cancellation.event):
            if update.run_id not in tasks:
                tasks[update.run_id] = progress.add_task(
                    f"{update.dataset}/{update.response_type}",
                    total=update.total,
                    rate="",
                    loss="",
                )
            rate = f"{update.samples_per_second:.2f} samples/s" if update.samples_per_second else ""
            loss = f"loss {update.mean_loss:.3f}" if update.mean_loss is not None else ""
            progress.update(
                tasks[update.run_id],
                completed=update.done,
                total=update.total,
                rate=rate,
                loss=loss,
            )
            if update.message and update.status == "running":
                progress.console.print(f"{update.dataset}/{update.response_type}: {update.message}")
            finals[update.run_id] = update
        cancelled = cancellation.event.is_set()
    return list(finals.values()), cancelled


def cmd_compute(args: argparse.Namespace) -> int:
    from layerscope.analysis.runner import RunRequest

    _quiet_loading(args.quiet)
    _check_instruct(args.model, args.mode)
    if args.sample_seed is not None and args.limit is None:
        raise UsageError("--sample-seed needs --limit")
    request = RunRequest(
        model=args.model,
        dataset=args.dataset,
        types=_names(args.types),
        settings=_settings(args),
        limit=args.limit,
        sample_seed=args.sample_seed,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
    )
    finals, cancelled = _execute(request, _db(args), args.quiet)
    err = _console(stderr=True)
    for final in finals:
        print(final.run_id)
        extra = []
        if final.skipped:
            extra.append(f"{final.skipped} skipped")
        if final.failed:
            extra.append(f"{final.failed} failed")
        suffix = f" ({', '.join(extra)})" if extra else ""
        err.print(
            f"{final.run_id[:12]}  {final.dataset}/{final.response_type}  {final.status}  "
            f"{final.done}/{final.total}{suffix}"
        )
    if cancelled:
        err.print("cancelled: finished batches are stored; run the same command to resume")
        return EXIT_INTERRUPTED
    return 0


# ---- runs -------------------------------------------------------------------------------------


def _run_record(info: RunInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "model": info.model,
        "dataset": info.dataset,
        "type": info.response_type,
        "mode": info.mode,
        "status": info.status,
        "samples": info.samples_done,
        "samples_total": info.samples_total,
        "skipped": info.samples_skipped,
        "failed": info.samples_failed,
        "layers": info.layers,
        "projections": list(info.projections),
        "started_at": info.started_at.isoformat() if info.started_at else None,
        "finished_at": info.finished_at.isoformat() if info.finished_at else None,
        "settings": info.settings,
        "provenance": info.provenance,
    }


def cmd_runs(args: argparse.Namespace) -> int:
    cache = ResultsCache(_db(args))
    infos = cache.runs()
    if args.json:
        print(json.dumps([_run_record(info) for info in infos], indent=2, default=str))
        return 0
    if not infos:
        print(f"no runs in {cache.path}", file=sys.stderr)
        return 0
    from rich.table import Table

    from layerscope.app.tui.labels import short_model

    table = Table(title=f"runs in {cache.path}", title_justify="left")
    for name in (
        "id",
        "model",
        "dataset",
        "type",
        "mode",
        "status",
        "samples",
        "layers",
        "started",
    ):
        table.add_column(name, justify="right" if name in ("samples", "layers") else "left")
    for info in infos:
        samples = f"{info.samples_done}/{info.samples_total}"
        if info.samples_skipped:
            samples += f" ({info.samples_skipped} skipped)"
        if info.samples_failed:
            samples += f" ({info.samples_failed} failed)"
        started = info.started_at.strftime("%Y-%m-%d %H:%M") if info.started_at else ""
        table.add_row(
            info.short_id,
            short_model(info.model),
            info.dataset,
            info.response_type,
            info.mode,
            info.status,
            samples,
            str(info.layers),
            started,
        )
    _console().print(table)
    return 0


# ---- show / check -----------------------------------------------------------------------------


def _curve_record(curve: Any) -> dict[str, Any]:
    return {
        "run_id": curve.run_id,
        "projection": curve.projection,
        "layers": curve.layers,
        "mean": [_finite(v) for v in curve.mean],
        "std": [_finite(v) for v in curve.std],
        "ci95": [_finite(v) for v in curve.ci95],
        "count": curve.count,
        "excluded_nonfinite": curve.excluded_nonfinite,
    }


def _mad_record(row: Any) -> dict[str, Any]:
    return {k: _finite(v) if isinstance(v, float) else v for k, v in asdict(row).items()}


def _comparison_record(
    comparison: Comparison, infos: Sequence[RunInfo], pairs: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "metric": comparison.metric,
        "response_tokens": comparison.response_tokens,
        "runs": [_run_record(info) for info in infos],
        "curves": [_curve_record(c) for c in comparison.curves],
        "mad": [_mad_record(row) for row in comparison.mad],
        "relative_differences": pairs,
    }


def _charts(
    comparison: Comparison, labels: dict[str, str], args: argparse.Namespace, title: str
) -> list[str]:
    from layerscope.app.charts import Series, render_curves

    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    by_projection: dict[str, list[Any]] = {}
    for curve in comparison.curves:
        by_projection.setdefault(curve.projection, []).append(curve)
    charts = []
    for projection, curves in by_projection.items():
        series = [Series(labels.get(c.run_id, c.run_id[:8]), c.layers, c.mean) for c in curves]
        charts.append(
            render_curves(
                series,
                title=f"{title} · {projection}",
                width=_chart_width(args),
                height=args.height,
                color=color,
            )
        )
    return charts


def _mad_table(comparison: Comparison, labels: dict[str, str]) -> Any:
    from rich.table import Table

    layers = max((len(c.layers) for c in comparison.curves), default=0)
    early, middle, late = layer_splits(layers)
    table = Table(
        title=f"MAD of {comparison.metric} between adjacent layers "
        f"(early {early.start}-{early.stop - 1}, middle {middle.start}-{middle.stop - 1}, "
        f"late {late.start}-{late.stop - 1})",
        title_justify="left",
    )
    for name in ("run", "proj", "all", "early", "middle", "late", "samples", "excluded"):
        table.add_column(name, justify="left" if name in ("run", "proj") else "right")
    counts = {(c.run_id, c.projection): c for c in comparison.curves}
    for row in comparison.mad:
        curve = counts[(row.run_id, row.projection)]
        table.add_row(
            labels.get(row.run_id, row.run_id[:8]),
            row.projection,
            _fmt(row.all),
            _fmt(row.early),
            _fmt(row.middle),
            _fmt(row.late),
            str(max(curve.count, default=0)),
            str(curve.excluded_nonfinite),
        )
    return table


def _rd_table(pairs: Sequence[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(
        title="relative difference: mean over layers of |a - b| / |a|", title_justify="left"
    )
    for name in ("a (baseline)", "b", "proj", "RD", "largest at layers"):
        table.add_column(name, justify="right" if name == "RD" else "left")
    for pair in pairs:
        top = ", ".join(f"{layer} ({_fmt(value, 3)})" for layer, value in pair["top_layers"])
        table.add_row(
            pair["a_label"], pair["b_label"], pair["projection"], _fmt(pair["value"]), top
        )
    return table


def _pairs(
    comparison: Comparison, labels: dict[str, str], pairs: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Relative differences of b against a for each (a, b) run pair and shared projection."""
    curves = {(c.run_id, c.projection): c for c in comparison.curves}
    rows = []
    for a, b in pairs:
        for (run_id, projection), curve_a in curves.items():
            curve_b = curves.get((b, projection))
            if run_id != a or curve_b is None or curve_a.layers != curve_b.layers:
                continue
            rd = relative_difference(curve_a, curve_b)
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "a_label": labels.get(a, a[:8]),
                    "b_label": labels.get(b, b[:8]),
                    "projection": projection,
                    "value": _finite(rd.value),
                    "top_layers": [[layer, _finite(value)] for layer, value in rd.top_layers],
                }
            )
    return rows


def _print_loss(comparison: Comparison, labels: dict[str, str]) -> None:
    from rich.table import Table

    table = Table(title="loss over samples", title_justify="left")
    for name in ("run", "mean", "std", "95% CI ±", "samples", "excluded"):
        table.add_column(name, justify="left" if name == "run" else "right")
    for curve in comparison.curves:
        table.add_row(
            labels.get(curve.run_id, curve.run_id[:8]),
            _fmt(curve.mean[0] if curve.mean else math.nan),
            _fmt(curve.std[0] if curve.std else math.nan),
            _fmt(curve.ci95[0] if curve.ci95 else math.nan),
            str(curve.count[0] if curve.count else 0),
            str(curve.excluded_nonfinite),
        )
    _console().print(table)


def _no_samples(
    cache: ResultsCache, infos: Sequence[RunInfo], tokens: tuple[int, int] | None
) -> str:
    """Why there is nothing to show, in one line."""
    names = ", ".join(i.short_id for i in infos)
    if tokens:
        return f"no samples with {tokens[0]}-{tokens[1]} response tokens in run(s) {names}"
    skipped = [i for i in infos if i.samples_skipped or i.samples_failed]
    if skipped:
        first = cache.skipped(skipped[0].id)
        reason = f": {first[0].reason}" if first else ""
        total = sum(i.samples_skipped + i.samples_failed for i in infos)
        return f"no measured samples in run(s) {names}; {total} were skipped or failed{reason}"
    return f"no measured samples in run(s) {names}"


def _report(
    cache: ResultsCache,
    infos: Sequence[RunInfo],
    args: argparse.Namespace,
    pairs: Sequence[tuple[str, str]],
    title: str,
) -> int:
    metric = _metric(args.metric)
    projections = _projections(args.proj)
    tokens = getattr(args, "tokens", None)
    comparison = compare_runs(cache, [i.id for i in infos], metric, projections, tokens)
    labels = _labels(infos)
    rd_rows = _pairs(comparison, labels, pairs)
    if args.json:
        record = _comparison_record(comparison, infos, rd_rows)
        print(json.dumps(record, indent=2, default=str))
        return 0
    if not comparison.curves:
        raise CacheError(_no_samples(cache, infos, tokens))
    console = _console()
    if metric == "loss":
        _print_loss(comparison, labels)
        return 0
    heading = title + (f" (samples with {tokens[0]}-{tokens[1]} response tokens)" if tokens else "")
    for chart in _charts(comparison, labels, args, heading):
        print(chart)
        print()
    console.print(_mad_table(comparison, labels))
    if rd_rows:
        console.print(_rd_table(rd_rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    metric = _metric(args.metric)  # usage errors before the cache is opened
    _projections(args.proj)
    cache = ResultsCache(_db(args))
    infos = [cache.run(run) for run in args.runs]
    first = infos[0].id
    pairs = [(first, info.id) for info in infos[1:]]
    return _report(cache, infos, args, pairs, metric)


def cmd_check(args: argparse.Namespace) -> int:
    from layerscope.analysis.runner import RunRequest, resolve_sources

    _quiet_loading(args.quiet)
    _metric(args.metric)
    _projections(args.proj)
    _check_instruct(args.model, args.mode)
    request = RunRequest(
        model=args.model,
        dataset=args.dataset,
        settings=_settings(args),
        limit=args.limit,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
    )
    available = [s.response_type for s in resolve_sources(request)]
    request.types = [t for t in CHECK_TYPES if t in available]
    if not request.types:
        raise UsageError(
            f"{args.dataset} has none of the response types check compares "
            f"({', '.join(CHECK_TYPES)})"
        )
    finals, cancelled = _execute(request, _db(args), args.quiet)
    if cancelled:
        print(f"{PROG}: cancelled; run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    cache = ResultsCache(_db(args))
    by_type = {final.response_type: final.run_id for final in finals}
    infos = [cache.run(by_type[t]) for t in request.types if t in by_type]
    pairs = [
        (by_type[a], by_type[b])
        for a, b in (
            ("none_cot", "detailed_cot"),
            ("none_cot", "none_cot_irrelevant"),
            ("detailed_cot", "detailed_cot_irrelevant"),
        )
        if a in by_type and b in by_type
    ]
    if not args.proj:
        args.proj = ",".join(p for p in ATTENTION_PROJECTIONS if p in infos[0].projections)
    from layerscope.app.tui.labels import short_model

    title = f"{_metric(args.metric)} by layer, {short_model(infos[0].model)}, ≤{args.limit}/type"
    return _report(cache, infos, args, pairs, title)


# ---- export / import / describe ---------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    cache = ResultsCache(_db(args))
    info = cache.run(args.run)
    output = args.output.expanduser()
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; give a file name")
    if args.format == "paper-jsonl":
        from layerscope.analysis.paper_format import write_paper_jsonl

        written = write_paper_jsonl(cache, info.id, output)
        what = f"{written} samples"
    else:
        written = cache.export_table(info.id, output, args.format)
        what = f"{written} rows"
    print(f"wrote {what} of run {info.short_id} to {output}", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from layerscope.analysis.paper_format import import_paper_jsonl

    cache = ResultsCache(_db(args))
    columns = (TextColumn(f"importing {args.file.name}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=_console(stderr=True), transient=True) as progress:
        task = progress.add_task("import", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        info = import_paper_jsonl(
            cache,
            args.file,
            model=args.model,
            dataset=args.dataset,
            response_type=args.response_type,
            mode=args.mode,
            progress=advance,
        )
    print(info.id)
    print(
        f"{info.short_id}  {info.model} / {info.dataset}/{info.response_type}: "
        f"{info.samples_done} samples, {info.layers} layers",
        file=sys.stderr,
    )
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from layerscope.analysis.models import describe_targets

    targets = describe_targets(args.model, args.modules, trust_remote_code=args.trust_remote_code)
    if args.json:
        print(json.dumps([asdict(t) for t in targets], indent=2))
        return 0
    from rich.table import Table

    layers = 1 + max((t.layer for t in targets), default=-1)
    table = Table(
        title=f"{args.model}: {len(targets)} matrices in {layers} layers ({args.modules})",
        title_justify="left",
    )
    for name in ("layer", "proj", "parameter", "shape"):
        table.add_column(name, justify="right" if name == "layer" else "left")
    for target in targets:
        table.add_row(
            str(target.layer), target.projection, target.parameter, f"{target.rows} x {target.cols}"
        )
    _console().print(table)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "compute": cmd_compute,
    "runs": cmd_runs,
    "show": cmd_show,
    "export": cmd_export,
    "import": cmd_import,
    "describe": cmd_describe,
    "check": cmd_check,
}


# ---- entry point ------------------------------------------------------------------------------


def _fail(message: str, status: int) -> int:
    lines = str(message).strip().splitlines()
    line = lines[0] if lines else "unknown error"
    print(f"{PROG}: error: {line}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (never raises, never prints a traceback
    unless LAYERSCOPE_DEBUG is set)."""
    debug = bool(os.environ.get("LAYERSCOPE_DEBUG"))
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            from layerscope.app.tui import run_tui

            run_tui(model=args.model, dataset=args.dataset, db=args.db)
            return 0
        return COMMANDS[args.command](args)
    except UsageError as error:
        return _fail(str(error), EXIT_USAGE)
    except KeyboardInterrupt:
        if debug:
            raise
        return _fail("interrupted; finished batches are stored, run again to resume", 130)
    except (CacheError, ValueError, RuntimeError, OSError) as error:
        # CacheError, RunnerError; DatasetError, ModelLoadError, PaperFormatError and
        # UnsupportedArchitectureError are ValueErrors; OSError: files the user named.
        if debug:
            raise
        if isinstance(error, OSError) and error.filename:
            return _fail(f"{error.filename}: {error.strerror or error}", EXIT_RUNTIME)
        return _fail(str(error), EXIT_RUNTIME)
    except Exception as error:
        if debug:
            raise
        return _fail(
            f"internal error: {type(error).__name__}: {error} "
            "(set LAYERSCOPE_DEBUG=1 for the traceback)",
            EXIT_RUNTIME,
        )
