"""The grammar of the commands that pick samples out of a run (``select``, ``correlations``).

Why apart from :mod:`.grammar`: one parser module for every command outgrew a readable size;
these two share nothing with the computing commands' options.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from layerscope.app.cli.arguments import layer_range, output_path, positive_int

__all__ = ["add_selection_commands"]


def add_selection_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add ``select`` and ``correlations`` with ``command(name, help)`` (the parser's own
    factory, which adds ``--db``)."""
    select = command(
        "select",
        "write the samples with the highest or lowest statistic back as a dataset file",
    )
    select.add_argument("run", metavar="RUN", help="a run id or unique id prefix")
    select.add_argument(
        "--by",
        required=True,
        metavar="STAT",
        help="statistic to rank by (nuclear, effective_rank, ..., loss or response_tokens)",
    )
    select.add_argument("--proj", help="one projection (default: the mean over all measured)")
    select.add_argument(
        "--layers", type=layer_range, metavar="A-B", help="0-based layers A..B (default: all)"
    )
    ends = select.add_mutually_exclusive_group(required=True)
    ends.add_argument("--top", type=positive_int, metavar="K", help="the K highest samples")
    ends.add_argument("--bottom", type=positive_int, metavar="K", help="the K lowest samples")
    select.add_argument(
        "--output",
        required=True,
        type=output_path,
        metavar="FILE.json",
        help="file to write (JSON array; JSON lines when it ends in .jsonl), or -",
    )
    select.add_argument(
        "--force", action="store_true", help="replace the file at FILE if there is one"
    )
    select.epilog = (
        "The records are written as the run's data file has them, every field kept, most "
        "extreme first, so that `compute --dataset FILE.json` measures them again. The data "
        "file must be unchanged since the run (its SHA-256 is checked)."
    )

    corr = command(
        "correlations",
        "Spearman correlations of a run's per-sample statistic with the other projections, "
        "the loss, the response length and the records' own numeric fields",
    )
    corr.add_argument("run", metavar="RUN", help="a run id or unique id prefix")
    corr.add_argument(
        "--metric",
        default="nuclear",
        help="comma-separated statistics (default: nuclear), e.g. nuclear,effective_rank",
    )
    corr.add_argument(
        "--layers", type=layer_range, metavar="A-B", help="0-based layers A..B (default: all)"
    )
    corr.add_argument(
        "--with",
        dest="against",
        metavar="NAME",
        help="only pairs with this variable (loss, response_tokens, a field such as reward)",
    )
    corr.add_argument(
        "--scatter",
        metavar="NAME",
        help="also draw the (first) statistic, mean over projections, against NAME: a point "
        "per sample",
    )
    corr.add_argument("--json", action="store_true", help="every pair as JSON")
    corr.add_argument("--width", type=positive_int, help="chart width (terminal width)")
    corr.add_argument("--height", type=positive_int, default=18, help="chart height (18)")
