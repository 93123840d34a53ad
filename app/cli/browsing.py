"""``runs``, ``show``, ``export``, ``import`` and ``describe``: reading the cache from a shell.

Why they never import torch: users look at results from a second terminal while a computation
runs, often on a login node without a GPU. Every number shown comes from ``analysis/``
(:func:`~layerscope.analysis.results.compare.compare_runs` for curves, MAD and relative differences);
this module picks what to ask for and hands it to :mod:`~layerscope.app.cli.output`. ``show``
also says whether each run differs from the first, layer by layer (the tests of
:mod:`~layerscope.analysis.curves.significance`, chosen and run by ``compare_runs``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from layerscope.analysis.base.outputs import OutputError, OutputExistsError, is_stdout
from layerscope.analysis.cache import CacheError, ResultsCache
from layerscope.app.cli import charting, output
from layerscope.app.cli.arguments import UsageError, projections

if TYPE_CHECKING:
    from rich.console import Console

    from layerscope.analysis.base.records import RunInfo
    from layerscope.analysis.interchange.paper_ingest import PaperImport
    from layerscope.analysis.results.compare import Comparison


def metric_name(name: str) -> str:
    from layerscope.analysis.results.compare import resolve_metric

    try:
        return resolve_metric(name)
    except ValueError as error:
        raise UsageError(f"--metric: {error}") from None


def cmd_runs(args: argparse.Namespace) -> int:
    cache = ResultsCache(args.db)
    infos = cache.runs()
    if args.json:
        print(json.dumps([output.run_record(info) for info in infos], indent=2, default=str))
        return 0
    if not infos:
        print(f"no runs in {cache.path}", file=sys.stderr)
        return 0
    console = output.console()
    console.print(output.runs_table(infos, f"runs in {cache.path}", console.width), crop=False)
    return 0


def no_samples_message(
    cache: ResultsCache, infos: Sequence[RunInfo], tokens: tuple[int, int] | None
) -> str:
    """Why there is nothing to show, in one line."""
    ids = ", ".join(i.short_id for i in infos)
    if tokens:
        return f"no samples with {tokens[0]}-{tokens[1]} response tokens in run(s) {ids}"
    skipped = [i for i in infos if i.samples_skipped or i.samples_failed]
    if skipped:
        first = cache.skipped(skipped[0].id)
        reason = f": {first[0].reason}" if first else ""
        total = sum(i.samples_skipped + i.samples_failed for i in infos)
        return f"no measured samples in run(s) {ids}; {total} were skipped or failed{reason}"
    return f"no measured samples in run(s) {ids}"


def check_projections(infos: Sequence[RunInfo], chosen: Sequence[str] | None) -> None:
    """Refuse a --proj a run did not measure, saying what it did measure."""
    for info in infos:
        missing = [p for p in chosen or () if p not in info.projections]
        if missing:
            modules = info.settings.get("modules")
            how = f" (computed with --modules {modules})" if modules else ""
            raise UsageError(
                f"--proj {','.join(chosen or ())}: run {info.short_id} has no "
                f"{', '.join(missing)} matrices{how}; it has {','.join(info.projections)}"
            )


def compared(
    cache: ResultsCache,
    infos: Sequence[RunInfo],
    args: argparse.Namespace,
    pairs: Sequence[tuple[str, str]],
) -> tuple[str, Comparison, dict[str, str]]:
    """The statistic ``--metric`` names, the runs' comparison of it over the ``--proj``
    projections (within ``--tokens``, where the command has it) and the runs' labels."""
    from layerscope.analysis.results.compare import compare_runs
    from layerscope.app.labels import run_labels

    metric = metric_name(args.metric)
    chosen = projections(args.proj)
    check_projections(infos, chosen)
    tokens = getattr(args, "tokens", None)
    comparison = compare_runs(cache, [i.id for i in infos], metric, chosen, tokens, pairs)
    return metric, comparison, run_labels(infos)


def report(
    cache: ResultsCache,
    infos: Sequence[RunInfo],
    args: argparse.Namespace,
    pairs: Sequence[tuple[str, str]],
    title: str,
) -> int:
    """Charts, MAD and relative differences of runs (``show``; ``check``'s JSON and loss)."""
    metric, comparison, labels = compared(cache, infos, args, pairs)
    tokens = getattr(args, "tokens", None)
    if args.json:
        record = output.comparison_record(comparison, infos, labels)
        print(json.dumps(record, indent=2, default=str))
        return 0
    if not comparison.curves:
        raise CacheError(no_samples_message(cache, infos, tokens))
    console = output.console()
    if metric == "loss":
        console.print(output.loss_table(comparison, labels, console.width), crop=False)
        _print_significance(console, comparison, labels)
        return 0
    heading = title + (f" (samples with {tokens[0]}-{tokens[1]} response tokens)" if tokens else "")
    counts = {i.id: i.layers for i in infos} if getattr(args, "depth", "") == "normalised" else None
    log_y = getattr(args, "log_y", False)  # check has no --log-y
    problem = charting.log_axis_problem(comparison.curves, labels, metric) if log_y else None
    if problem:
        raise UsageError(problem)
    charts = charting.charts(
        comparison, labels, heading, args.width, args.height, layer_counts=counts, log_y=log_y
    )
    for chart in charts:
        print(chart)
        print()
    console.print(output.mad_table(comparison, labels, console.width), crop=False)
    if comparison.relative:
        console.print(output.relative_table(comparison, labels, console.width), crop=False)
    _print_significance(console, comparison, labels)
    return 0


def _print_significance(console: Console, comparison: Comparison, labels: dict[str, str]) -> None:
    """Whether each compared run differs from its baseline: the table, then how it was tested."""
    if not comparison.significance:
        return
    console.print(output.significance_table(comparison, labels, console.width), crop=False)
    for line in output.significance_notes(comparison, labels):
        text = output.paragraph(line, console.width)  # labels whole, never markup
        console.print(text, overflow="ignore", crop=False, markup=False)


def show_spectra(cache: ResultsCache, infos: Sequence[RunInfo], args: argparse.Namespace) -> int:
    """``show --spectra``: per run and projection, the mean singular value by rank of (at most
    eight of) the chosen layers, log-log; ``--json``: every chosen layer's numbers."""
    from layerscope.analysis.results.spectra import no_spectra_message, run_spectra, spread_layers
    from layerscope.app.labels import run_labels

    chosen = projections(args.proj)
    check_projections(infos, chosen)
    labels = run_labels(infos)
    found = []
    for info in infos:
        for projection in chosen or info.projections:
            spectra = run_spectra(cache, info.id, projection, args.layers)
            if not spectra and projection == (chosen or info.projections)[0]:
                if args.layers and run_spectra(cache, info.id, projection):
                    low, high = args.layers
                    raise UsageError(
                        f"--layers {low}-{high}: run {info.short_id} has layers 0-{info.layers - 1}"
                    )
                raise CacheError(no_spectra_message(info))
            found.append((info, projection, spectra))
    if args.json:
        record = [
            {"run": info.id, "label": labels.get(info.id, info.short_id), **s.record()}
            for info, _projection, spectra in found
            for s in spectra
        ]
        print(json.dumps({"spectra": record}, indent=2))
        return 0
    for info, projection, spectra in found:
        drawn = [s for s in spectra if s.layer in set(spread_layers([x.layer for x in spectra]))]
        thinned = "" if len(drawn) == len(spectra) else f", {len(drawn)} of {len(spectra)} layers"
        samples = max((max(s.samples, default=0) for s in drawn), default=0)
        title = (
            f"{labels.get(info.id, info.short_id)} · {projection} · mean σ by rank"
            f" ({samples} samples{thinned})"
        )
        print(charting.spectrum_chart(drawn, title, args.width, args.height))
        print()
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    metric = metric_name(args.metric)  # usage errors before the cache is opened
    projections(args.proj)
    if args.layers and not args.spectra:
        raise UsageError("--layers: only with --spectra (curves always show every layer)")
    if args.log_y and metric == "loss" and not args.json:
        raise UsageError("--log-y: --metric loss is a table, not a chart")
    cache = ResultsCache(args.db)
    infos = [cache.run(run) for run in args.runs]
    if args.spectra:
        return show_spectra(cache, infos, args)
    first = infos[0].id
    pairs = [(first, info.id) for info in infos[1:]]
    return report(cache, infos, args, pairs, metric)


def cmd_export(args: argparse.Namespace) -> int:
    to_stdout = is_stdout(args.output)
    if to_stdout and args.format == "parquet":
        raise UsageError("--output -: Parquet is a binary file format; give a file name")
    if args.format == "paper-jsonl" and len(args.runs) > 1:
        raise UsageError(
            "--format paper-jsonl: one run per file (the paper's format has no run column); "
            "parquet and csv take several"
        )
    destination = args.output if to_stdout else args.output.expanduser()
    if not to_stdout and destination.is_dir():
        raise UsageError(f"--output {destination} is a folder; give a file name")
    cache = ResultsCache(args.db)
    infos: list[RunInfo] = []
    for run in args.runs:  # a run named twice (by two prefixes) is written once
        info = cache.run(run)
        if all(info.id != kept.id for kept in infos):
            infos.append(info)
    try:
        if args.format == "paper-jsonl":
            from layerscope.analysis.interchange.paper_export import write_paper_jsonl

            written = write_paper_jsonl(cache, infos[0].id, destination, force=args.force)
            what = f"{written} samples"
        else:
            ids = [info.id for info in infos]
            written = cache.export_table(ids, destination, args.format, force=args.force)
            what = f"{written} rows"
    except OutputExistsError as error:
        raise OutputError(f"--output {error}; use --force to replace it, or another name") from None
    except OutputError as error:
        raise OutputError(f"--output {error}") from None
    where = "standard output" if to_stdout else destination
    runs = f"run {infos[0].short_id}" if len(infos) == 1 else f"{len(infos)} runs"
    print(f"wrote {what} of {runs} to {where}", file=sys.stderr)
    return 0


def _lines_note(count: int, first: tuple[int, ...]) -> str:
    """``line 3`` or ``lines 3, 7 and 12 more``."""
    more = count - len(first)
    word = "line" if count == 1 else "lines"
    return f"{word} {', '.join(str(n) for n in first)}" + (f" and {more} more" if more else "")


def _empty_values_note(imported: PaperImport) -> str | None:
    """The summary's line about values stored as empty, or None when there were none."""
    if not imported.empty_values:
        return None
    return (
        f"{imported.empty_values} value{'s' if imported.empty_values != 1 else ''} stored as "
        "empty (not finite or beyond float32 range): "
        + _lines_note(imported.empty_lines, imported.first_empty_lines)
    )


def _unknown_entries_note(imported: PaperImport) -> str | None:
    """The summary's line about entries left out (keys the format does not know), or None."""
    count = imported.unknown_entries
    if not count:
        return None
    keys = ", ".join([*imported.unknown_keys, *(["..."] if imported.more_unknown_keys else [])])
    return (
        f"{count} entr{'y' if count == 1 else 'ies'} left out, the format does not know "
        f"{'its key' if count == 1 else 'their keys'} ({keys}): "
        + _lines_note(imported.unknown_lines, imported.first_unknown_lines)
    )


@contextlib.contextmanager
def _import_progress(name: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr while storing, only when stderr is a terminal (a log or a pipe
    gets the summary and nothing else, not even an empty line)."""
    console = output.console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn(f"importing {name}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("import", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield advance


def cmd_import(args: argparse.Namespace) -> int:
    from layerscope.analysis.interchange.paper_ingest import import_paper_jsonl

    cache = ResultsCache(args.db)
    # One transaction: an interrupt leaves no run (main says so), unlike a computation.
    with _import_progress(args.file.name) as advance:
        imported = import_paper_jsonl(
            cache,
            args.file,
            model=args.model,
            dataset=args.dataset,
            response_type=args.response_type,
            mode=args.mode,
            progress=advance,
        )
    info = imported.info
    print(info.id)
    print(
        f"{info.short_id}  {info.model} / {info.dataset}/{info.response_type}: "
        f"{info.samples_done} samples, {info.layers} layers",
        file=sys.stderr,
    )
    for note in (_empty_values_note(imported), _unknown_entries_note(imported)):
        if note:
            print(note, file=sys.stderr)
    return 0


@contextlib.contextmanager
def _stage(description: str) -> Iterator[None]:
    """Say at once what a wait of seconds is for: a passing line in a terminal (gone when the
    wait is over), one plain line on a redirected stderr."""
    console = output.console(stderr=True)
    if not console.is_terminal:
        console.print(f"{description}…")
        yield
        return
    with console.status(f"{description}…"):
        yield


def _route_lengths(text: str | None) -> list[int]:
    """``--routes 64,256,1024`` as lengths; a one-line error naming the option otherwise."""
    if text is None:
        return []
    try:
        lengths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        lengths = []
    if not lengths or min(lengths) < 1:
        raise UsageError(f"--routes: expected sample lengths such as 64,256,1024, not {text!r}")
    return lengths


def cmd_describe(args: argparse.Namespace) -> int:
    from layerscope.analysis.models.inspection import inspect_model_path
    from layerscope.analysis.models.loading import describe_targets

    lengths = _route_lengths(args.routes)  # before any wait

    check = inspect_model_path(args.model, args.revision, args.offline)
    if not check.ok:  # said before any wait
        raise check.refusal()
    # The layout comes from the model built on the meta device (exact for every architecture,
    # no weights read); the wait is importing torch and transformers.
    with _stage("reading the model's layout (importing torch and transformers)"):
        targets = describe_targets(
            args.model,
            args.modules,
            trust_remote_code=args.trust_remote_code,
            revision=args.revision,
            offline=args.offline,
        )

    if args.json:
        print(json.dumps([asdict(t) for t in targets], indent=2))
        return 0
    if lengths:
        from layerscope.analysis.compute.routes import explain, shapes_of

        shapes = shapes_of((t.projection, t.rows, t.cols) for t in targets)
        for line in explain(shapes, lengths):
            print(line)
        print(
            "(formed routes are also bounded by a quarter of the device's free memory per batch)",
            file=sys.stderr,
        )
        return 0
    layers = 1 + max((t.layer for t in targets), default=-1)
    columns = (
        output.Column("layer", justify="right", whole=True),
        output.Column("proj", whole=True),
        output.Column("parameter", whole=True),
        output.Column("shape", whole=True),
    )
    rows = [(str(t.layer), t.projection, t.parameter, f"{t.rows} x {t.cols}") for t in targets]
    title = f"{args.model}: {len(targets)} matrices in {layers} layers ({args.modules})"
    console = output.console()
    console.print(output.fitted_table(title, columns, rows, console.width), crop=False)
    return 0
