"""The command line's grammar: every command, its options and their help, as one parser.

Why apart from :mod:`.arguments`: this is the one place that knows every command's options; the
command modules import what an argument means (:mod:`.arguments`) and never this, so that no
command depends on another's options. ``main`` builds the parser once per call; the torchrun
launcher builds it again to parse the ranks' command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from layerscope.analysis.base.settings import setting
from layerscope.app.cli.arguments import (
    PROG,
    UsageError,
    add_setting,
    add_settings,
    duration,
    layer_range,
    output_path,
    positive_int,
    run_name,
    token_range,
    type_list,
)
from layerscope.app.cli.grammar_selection import add_selection_commands

EXPORT_FORMATS = ("parquet", "csv", "paper-jsonl")
PROGRESS_FORMATS = ("bars", "jsonl")
MERGE_RTOL = 1e-5  # layerscope.analysis.cache.merging.DEFAULT_RTOL
TABLE_FORMATS = ("markdown", "latex", "csv")  # layerscope.analysis.results.tables.TABLE_FORMATS
DEPTH_CHOICES = ("layer", "normalised")  # layerscope.analysis.results.compare.DEPTHS
METRIC_HELP = (
    "nuclear, sigma1_ratio, frobenius, effective_rank, stable_rank, sigma_max, "
    "sigma_min, mean, max, min, nuclear_per_loss or loss (default: nuclear)"
)
DEPTH_HELP = (
    "x axis: layer index, or normalised depth layer / (layers - 1) in 0..1, so that models "
    "of different depths overlay (default: layer)"
)
LOG_Y_HELP = (
    "a logarithmic y axis (for curves that span decades); a statistic with a mean <= 0 "
    "somewhere (mean, min, ...) is refused with one line saying where, as a log axis cannot "
    "show it"
)
DB_HELP = "results cache file (default: $LAYERSCOPE_DB or ~/.cache/layerscope/results.duckdb)"


# Where each computing command's output goes (its --help epilog; the README says the same).
COMPUTE_OUTPUT = (
    "Output: when standard output is a terminal, it shows one summary line per run, starting "
    "with the run's 12-character id (which show and export accept), then one line for the "
    "whole call (its time, and how much of it went to loading the model). When standard "
    "output is redirected (a pipe, a file, $(...)), it carries only the full run ids, one per "
    "line, and the summary goes to standard error. Standard error also shows the loading "
    "stages and the progress bars (in a log file: one line per stage, no bars)."
)
CHECK_OUTPUT = (
    "Output: standard output carries the profile on one screen (a chart of the statistic "
    "averaged over the projections, a table of each projection's mean and the layers where a "
    "type differs from its baseline), or JSON with --json; standard error what it will do, "
    "the loading stages, the progress bars and each round's time."
)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line and exit status 2 (see ``main``)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


# ---- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Layer-wise gradient statistics of causal LMs: compute, cache, compare. "
        "Without a command, opens the interactive explorer.",
    )
    parser.add_argument("--model", help="explorer: preselect this model")
    parser.add_argument("--dataset", help="explorer: preselect this dataset")
    parser.add_argument("--db", help=DB_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        # SUPPRESS: a --db given before the command is not overwritten by this default
        sub.add_argument("--db", default=argparse.SUPPRESS, help=DB_HELP)
        return sub

    compute = command("compute", "compute what is missing and print the run ids")
    compute.add_argument(
        "--model",
        required=True,
        help="tiny, a local folder or a hub id (downloaded when not cached, unless --offline)",
    )
    compute.add_argument(
        "--dataset",
        required=True,
        help="a data file (.json, .jsonl, .parquet, .arrow), a save_to_disk folder, a folder in "
        "the paper's layout, a .toml manifest, or math/knowledge",
    )
    compute.add_argument(
        "--types",
        type=type_list,
        help="comma-separated response types (default: all in the dataset); in a folder "
        "holding several datasets, DATASET/TYPE picks one dataset's (gsm8k_train/none_cot) "
        "and a bare type every dataset's",
    )
    add_settings(compute, "compute")
    compute.add_argument(
        "--quiet", action="store_true", help="no loading stages and no progress bars"
    )
    _add_scaling(compute)
    compute.add_argument(
        "--shard",
        metavar="I/N",
        help="compute only shard I (0-based) of N balanced shards of each run's samples, "
        "e.g. $SLURM_ARRAY_TASK_ID/8 in an array job; join the caches with `merge`",
    )
    compute.add_argument(
        "--progress-format",
        choices=PROGRESS_FORMATS,
        default="bars",
        help="bars: progress bars on stderr; jsonl: one JSON object per line on stdout per "
        "plan, loading stage and progress update, for a program to follow (default: bars)",
    )
    compute.add_argument(
        "--dry-run",
        action="store_true",
        help="compute and store nothing: print each run's samples to do, tokens and an "
        "estimate of time and peak memory from a few batches timed on the device (with "
        "--progress-format jsonl: the stages, then one 'estimate' line)",
    )
    compute.epilog = COMPUTE_OUTPUT

    merge = command(
        "merge",
        "merge cache files into one: runs matched by key, samples by index, none twice; "
        "a sample two caches hold with different values is reported, never chosen",
    )
    merge.add_argument("sources", nargs="+", type=Path, metavar="SRC.duckdb")
    merge.add_argument(
        "--into", required=True, type=Path, metavar="DST.duckdb", help="the cache merged into"
    )
    merge.add_argument(
        "--rtol",
        type=float,
        default=MERGE_RTOL,
        help="relative tolerance under which two stored values agree (default: 1e-5)",
    )
    merge.epilog = (
        "Each run is merged in one transaction: an interrupted merge leaves finished runs "
        "merged and the rest untouched, and running it again continues. Exit status 1 when "
        "any sample conflicts (one line each on stderr; the destination keeps its value)."
    )

    runs = command("runs", "list the runs in the cache")
    runs.add_argument("--json", action="store_true", help="a JSON array instead of a table")

    show = command("show", "layer-wise curves of runs, their MAD and relative differences")
    show.add_argument("runs", nargs="+", metavar="RUN", help="run ids or unique id prefixes")
    show.add_argument("--metric", default="nuclear", help=METRIC_HELP)
    show.add_argument("--proj", help="comma-separated projections (default: all measured)")
    _add_tokens(show)
    show.add_argument("--json", action="store_true", help="curves and tables as JSON")
    show.add_argument("--depth", choices=DEPTH_CHOICES, default="layer", help=DEPTH_HELP)
    show.add_argument(
        "--spectra",
        action="store_true",
        help="instead of curves: the mean singular value by rank per layer, log-log "
        "(runs computed with --spectra or imported with S_list)",
    )
    show.add_argument(
        "--layers",
        type=layer_range,
        metavar="A-B",
        help="with --spectra: 0-based layers A..B (default: all; 8 at most, evenly spread)",
    )
    show.add_argument(
        "--log-y",
        action="store_true",
        help=LOG_Y_HELP + " (--spectra is always log-log; --json and --metric loss have no axis)",
    )
    _add_chart_options(show)

    figure = command(
        "figure",
        "draw the paper's four-panel figure (q, k, v, o against layer, runs overlaid) "
        "as PNG, SVG or PDF (needs the figures extra: pip install 'layerscope[figures]')",
    )
    figure.add_argument("runs", nargs="+", metavar="RUN", help="run ids or unique id prefixes")
    figure.add_argument("--metric", default="nuclear", help=METRIC_HELP.replace(" or loss", ""))
    figure.add_argument(
        "--output",
        required=True,
        type=output_path,
        metavar="FILE",
        help="the figure file: its name's ending (.png, .svg, .pdf) chooses the format",
    )
    figure.add_argument(
        "--band", action="store_true", help="shade the 95%% confidence interval of each mean"
    )
    figure.add_argument("--depth", choices=DEPTH_CHOICES, default="layer", help=DEPTH_HELP)
    figure.add_argument("--log-y", action="store_true", help=LOG_Y_HELP)
    _add_tokens(figure)
    figure.add_argument("--title", default="", help="a title above the panels (default: none)")
    figure.add_argument(
        "--force", action="store_true", help="replace the file at FILE if there is one"
    )
    figure.epilog = (
        "An existing file is replaced only with --force; the cache and its write-ahead log "
        "never are. SVG keeps its text as text, PDF embeds TrueType fonts."
    )

    table = command(
        "table",
        "the paper's MAD table: rows model x mode, columns response types, cells the MAD "
        "over all, early, middle and late layers",
    )
    table.add_argument("runs", nargs="+", metavar="RUN", help="run ids or unique id prefixes")
    table.add_argument("--metric", default="nuclear", help=METRIC_HELP.replace(" or loss", ""))
    table.add_argument(
        "--proj", default="q", help="the projection whose curves the cells measure (default: q)"
    )
    table.add_argument(
        "--format", choices=TABLE_FORMATS, default="markdown", help="(default: markdown)"
    )
    _add_tokens(table)

    export = command(
        "export",
        "write runs as one Parquet or CSV table, or a run as the paper's JSON lines",
    )
    export.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run ids or unique id prefixes (paper-jsonl: one run)",
    )
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export.epilog = (
        "Parquet and CSV: one row per run, sample and matrix; every row starts with its run's "
        "run_id, model, dataset, response_type and mode, so several runs make one tidy table. "
        "With --output -, standard output carries only the data (CSV or JSON lines) and the "
        "summary line goes to stderr. An existing file is replaced only with --force (through a "
        "symbolic link: its target); the cache and its write-ahead log never are."
    )
    export.add_argument(
        "--output",
        required=True,
        type=output_path,
        metavar="PATH",
        help="file to write, or - for standard output (csv and paper-jsonl)",
    )
    export.add_argument(
        "--force", action="store_true", help="replace the file at PATH if there is one"
    )

    import_ = command("import", "read the paper's per-sample JSON lines into the cache as a run")
    import_.add_argument("file", type=Path, metavar="FILE.jsonl")
    import_.add_argument("--model", required=True, type=run_name, help="name to file the run under")
    import_.add_argument(
        "--dataset", required=True, type=run_name, help="dataset name to file the run under"
    )
    import_.add_argument(
        "--type", required=True, type=run_name, dest="response_type", help="response type"
    )
    add_setting(import_, setting("mode"), "compute")

    describe = command("describe", "list the matrices that would be measured, without computing")
    describe.add_argument("--model", required=True)
    add_setting(describe, setting("modules"), "compute")
    add_setting(describe, setting("trust_remote_code"), "compute")
    add_setting(describe, setting("revision"), "compute")
    add_setting(describe, setting("offline"), "compute")
    describe.add_argument(
        "--routes",
        metavar="LENGTHS",
        help="also say which exact route each statistic of each projection takes at these "
        "sample lengths (positions, e.g. 64,256,1024), and why (the cost model of compute)",
    )
    describe.add_argument("--json", action="store_true")

    doctor = command(
        "doctor",
        "check a cache file (its log, schema, runs, sums and rows) and say what to do; "
        "exit 1 when something needs action",
    )
    repairs = doctor.add_mutually_exclusive_group()
    repairs.add_argument(
        "--set-aside-wal",
        action="store_true",
        help="move a damaged write-ahead log aside (after copying the file beside itself)",
    )
    repairs.add_argument(
        "--repair",
        action="store_true",
        help="remove orphaned and duplicated rows, recompute the curve sums (after a copy)",
    )
    doctor.add_argument("--json", action="store_true", help="the report as one JSON object")

    check = command(
        "check",
        "a quick profile of a model on the bundled math samples: fast vs slow thinking, "
        "correct vs irrelevant",
    )
    check.add_argument("model", metavar="MODEL")
    check.add_argument("--dataset", default="math", help="dataset to profile (default: math)")
    check.add_argument("--metric", default="nuclear", help="statistic to chart (nuclear)")
    check.add_argument("--proj", help="projections to chart (default: q,k,v,o)")
    add_settings(check, "check")
    check.add_argument(
        "--quiet", action="store_true", help="no loading stages and no progress bars"
    )
    check.add_argument("--json", action="store_true", help="the profile as JSON")
    check.add_argument(
        "--budget",
        type=duration,
        metavar="TIME",
        help="time for the whole check, loading included, e.g. 90s, 2m, none (default: 2m on "
        "a CPU, none on a GPU): samples are taken in rounds of 2, 4, 8, ... per type, and a "
        "round begins only when the rate so far says it fits",
    )
    check.epilog = CHECK_OUTPUT
    _add_chart_options(check)

    devices = command(
        "devices",
        "list the devices --device takes, each GPU with its free memory (needs the optional "
        "nvidia-ml-py: pip install 'layerscope[gpu]')",
    )
    devices.add_argument("--json", action="store_true", help="the devices as a JSON array")

    add_selection_commands(command)
    return parser


# torchrun's own options, passed on by `compute --nproc-per-node N` (and not to the ranks).
LAUNCHER_OPTIONS = {
    "--nproc-per-node": "nproc_per_node",
    "--nnodes": "nnodes",
    "--node-rank": "node_rank",
    "--rdzv-backend": "rdzv_backend",
    "--rdzv-endpoint": "rdzv_endpoint",
    "--rdzv-id": "rdzv_id",
    "--master-addr": "master_addr",
    "--master-port": "master_port",
}


def _add_scaling(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "scaling out",
        "data-parallel ranks through torch.distributed.run (torchrun); "
        "see the README's 'Scaling out'",
    )
    group.add_argument(
        "--nproc-per-node",
        type=positive_int,
        metavar="N",
        help="start N ranks on this node (one per GPU, or CPU processes) via torchrun",
    )
    group.add_argument("--nnodes", metavar="N[:M]", help="torchrun: number of nodes")
    group.add_argument("--node-rank", type=int, metavar="R", help="torchrun: this node's rank")
    group.add_argument("--rdzv-backend", metavar="NAME", help="torchrun: rendezvous (c10d)")
    group.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="torchrun: rendezvous host")
    group.add_argument("--rdzv-id", metavar="ID", help="torchrun: the job's id")
    group.add_argument("--master-addr", metavar="HOST", help="torchrun: rank 0's host")
    group.add_argument("--master-port", type=int, metavar="PORT", help="torchrun: rank 0's port")
    group.add_argument(
        "--gpus-per-replica",
        type=positive_int,
        metavar="K",
        help="each rank's model spans K GPUs (local rank r uses GPUs r*K .. r*K+K-1)",
    )


def _add_tokens(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tokens",
        type=token_range,
        metavar="LOW-HIGH",
        help="length control: only samples with LOW..HIGH response tokens",
    )


def _add_chart_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=positive_int, help="chart width (terminal width)")
    parser.add_argument("--height", type=positive_int, default=18, help="chart height (18)")
