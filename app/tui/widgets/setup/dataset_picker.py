"""Pick the dataset and its response types.

The bundled samples, recently used datasets and a path field (a .json, .jsonl, .parquet or
.arrow file, a save_to_disk folder, a folder in the paper's layout, or a .toml manifest), validated as you type with the dataset reader's own
one-line errors. Response types are a multi-select list with their sample counts and, for the
chosen model and settings, whether they are already in the cache (complete or partial): a user
sees before pressing a key what will be computed and what is only read. Reading a dataset runs
in a thread worker that posts DatasetDiscovered to the picker, handled on the UI thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.widgets import Label, SelectionList, Static
from textual.widgets.selection_list import Selection

from layerscope.app.tui.messages import DatasetChosen, DatasetDiscovered
from layerscope.app.tui.widgets.setup.check_list import CheckList
from layerscope.app.tui.widgets.setup.list_or_path import ListOrPathPicker

if TYPE_CHECKING:
    from layerscope.analysis.datasets import ResponseTypeSource

# What a newcomer gets preselected: the paper's fast vs slow thinking comparison.
DEFAULT_TYPES = ("none_cot", "simplified_cot", "detailed_cot")


class DatasetPicker(ListOrPathPicker):
    """Posts DatasetChosen when what the field shows changes; `types` are the checked types."""

    KIND = "dataset"
    TITLE = "Dataset"
    PLACEHOLDER = "or type a file, paper-layout folder or manifest"
    NOTHING_CHOSEN = "no dataset chosen (pick one in the list or type a path)"

    def __init__(
        self,
        initial: str,
        types: Sequence[str] | None,
        recent: Sequence[str],
        *,
        limit: int | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(initial, id=id)
        self.dataset = initial
        # The samples setting (at most this many per type; None: all), so that the summary
        # says how many samples a run computes, not how many the checked types hold.
        self.limit = limit
        self.limit_known = True
        self.initial_types = list(types) if types else None
        self.recent = [item for item in recent if item]
        self.sources: list[ResponseTypeSource] = []
        self.counts: dict[str, int] = {}
        self.cached: dict[str, tuple[int, int, bool]] = {}  # type -> (cached, total, complete)
        # The types checked before the field showed something unusable, checked again when a
        # dataset that has them comes back (a typo fixed).
        self._kept_types: set[str] | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_choice()
        yield Label("Response types (space toggles)", classes="section-title")
        yield CheckList[str](id="type-list", compact=True)
        yield Static("", id="type-summary")

    def on_mount(self) -> None:
        from layerscope.analysis.datasets import BUNDLED_DATASETS

        entries = [(name, "bundled samples") for name in BUNDLED_DATASETS]
        for item in self.recent:
            if item not in BUNDLED_DATASETS:
                entries.append((item, "recent"))
        if self.dataset not in [spec for spec, _ in entries]:
            entries.append((self.dataset, "given"))
        self.choice_list.highlighted = self._list(entries).index(self.dataset)

    @property
    def types(self) -> list[str]:
        return list(self.query_one("#type-list", SelectionList).selected)

    def _list_chose(self, spec: str) -> None:
        if spec != self.dataset or not self.sources or self.problem is not None:
            self._check(spec, typed=False)

    def _chose_nothing(self) -> None:
        self._clear_types()
        self.post_message(DatasetChosen("", []))

    def _start_check(self, spec: str, typed: bool) -> None:
        self._read(spec, typed)

    @work(thread=True, exclusive=True, group="dataset-discover", exit_on_error=False)
    def _read(self, spec: str, typed: bool) -> None:
        from layerscope.analysis.datasets import (
            DatasetError,
            count_samples,
            discover_sources,
            resolve_dataset,
            type_names,
        )

        try:
            path = resolve_dataset(spec)
            if not path.exists():
                raise DatasetError(path, "no such file or folder")
            sources = discover_sources(path)
            counts = {
                name: count_samples(source)
                for name, source in zip(type_names(sources), sources, strict=True)
            }
        except (DatasetError, OSError, ValueError) as error:
            self.post_message(DatasetDiscovered(spec, typed, error=str(error)))
            return
        except Exception as error:  # whatever a strange file does, say it inline
            self.post_message(DatasetDiscovered(spec, typed, error=f"{spec}: {error!r}"))
            return
        self.post_message(DatasetDiscovered(spec, typed, sources, counts))

    def on_dataset_discovered(self, message: DatasetDiscovered) -> None:
        message.stop()
        if not self._is_current(message.spec, message.typed):
            pass  # the field was changed since: this answer is about text no longer shown
        elif message.error is not None:
            self._failed(message.spec, message.error, message.typed)
        else:
            self._found(message.spec, message.sources, message.counts, message.typed)
        self._settle(message.spec)

    def _failed(self, spec: str, message: str, typed: bool) -> None:
        self._refuse(message)
        if not typed:
            self.dataset = spec
        self._clear_types()
        self.post_message(DatasetChosen(spec, []))

    def _clear_types(self) -> None:
        """What the field shows has no types: none are listed (the old list's types would be
        read as this field's), but the checked ones are kept for when a dataset comes back."""
        if self.sources:
            self._kept_types = set(self.types)
        self.sources = []
        self.counts = {}
        self._fill_types()

    def _found(
        self, spec: str, sources: list[ResponseTypeSource], counts: dict[str, int], typed: bool
    ) -> None:
        if typed:
            self.choice_list.highlighted = None
        previous = set(self.types) if self.sources else self._kept_types
        self._kept_types = None
        self.problem = None
        self.dataset = spec
        self.sources = sources
        self.counts = counts
        names = sorted({source.dataset for source in sources})
        total = sum(counts.values())
        self.check_line.update(
            Text.assemble(
                ("✓ ", "bold green"),
                f"{', '.join(names)}: {len(sources)} response types, {total} samples",
            )
        )
        self._fill_types(previous)
        self.post_message(DatasetChosen(spec, sources))

    def _fill_types(self, previous: set[str] | None = None) -> None:
        selection = self.query_one("#type-list", SelectionList)
        selection.clear_options()
        available = self._names()
        if previous is not None:
            wanted = previous & set(available) or set(available[:1])
        elif self.initial_types is not None:
            wanted = set(self.initial_types) & set(available)
            self.initial_types = None
        else:  # the paper's types, of the first dataset where the folder holds several
            first = self.sources[0].dataset if self.sources else ""
            wanted = {
                name
                for name, source in zip(available, self.sources, strict=True)
                if source.response_type in DEFAULT_TYPES and source.dataset == first
            } or set(available[:1])
        for name in available:
            selection.add_option(
                Selection(self._type_prompt(name), name, name in wanted, id=_option_id(name))
            )
        self._summarise()

    def _names(self) -> list[str]:
        """The names the type list offers: a type, or ``dataset/type`` where the folder holds
        several datasets (each with its own ``none_cot``)."""
        from layerscope.analysis.datasets import type_names

        return type_names(self.sources)

    def _label(self, name: str) -> str:
        """``dataset/type`` of a listed name (what the cache status is keyed by)."""
        for listed, source in zip(self._names(), self.sources, strict=True):
            if listed == name:
                return source.label
        return name

    def _type_prompt(self, name: str) -> Text:
        count = self.counts.get(name, 0)
        prompt = Text.assemble(f"{name:<26}", (f"{count:>5}", "dim"))
        cached = self.cached.get(self._label(name))
        if cached is not None:
            done, total, complete = cached
            if complete:
                prompt.append("  cached", style="green")
            elif done:
                prompt.append(f"  partial {done}/{total}", style="yellow")
        return prompt

    def set_cached(self, cached: dict[str, tuple[int, int, bool]]) -> None:
        """Show which types are already cached for the current model and settings (``cached``
        is keyed by ``dataset/type``)."""
        self.cached = cached
        selection = self.query_one("#type-list", SelectionList)
        for name in self._names():
            try:
                selection.replace_option_prompt(_option_id(name), self._type_prompt(name))
            except Exception:  # the list was refilled meanwhile; the next plan fixes it
                continue
        self._summarise()

    @on(SelectionList.SelectedChanged, "#type-list")
    def _types_changed(self, event: SelectionList.SelectedChanged) -> None:
        event.stop()
        self._summarise()

    def set_limit(self, limit: int | None, *, known: bool = True) -> None:
        """The samples setting changed (`known` False: the field holds no valid number)."""
        self.limit, self.limit_known = limit, known
        if self.is_mounted:
            self._summarise()

    def _summarise(self) -> None:
        """Spell out what is checked and how much of it runs: the check marks need colour."""
        types = self.types
        summary = self.query_one("#type-summary", Static)
        if not self.sources:
            summary.update("")
        elif not types:
            summary.update("nothing checked")
        else:
            counts = [self.counts.get(t, 0) for t in types]
            checked = f"checked {len(types)}: {', '.join(types)}"
            running = run_count(counts, self.limit, self.limit_known)
            cached = self._cached_of(types)
            summary.update(f"{checked} ({running}{f'; {cached} cached' if cached else ''})")

    def _cached_of(self, types: list[str]) -> int:
        """How many of the samples a run of `types` computes are cached (0: none, or unknown).

        Counted only from a plan made with the current samples setting (its totals match).
        """
        cached = 0
        for name in types:
            done, total, _complete = self.cached.get(self._label(name), (0, 0, False))
            wanted = self.counts.get(name, 0)
            if self.limit is not None:
                wanted = min(wanted, self.limit)
            if total == wanted and self.limit_known:
                cached += done
        return cached


def _option_id(name: str) -> str:
    """A widget id for a listed type name (ids take letters, digits, ``_`` and ``-`` only)."""
    return "type-" + re.sub(r"[^A-Za-z0-9_-]", lambda m: f"-{ord(m.group()):x}-", name)


def run_count(counts: Sequence[int], limit: int | None, known: bool = True) -> str:
    """How many samples a run of types holding `counts` computes with at most `limit` each.

    '120 samples' (all of them), '3 types × 8 = 24 samples of 120', or '22 samples of 120, at
    most 8 per type' when some type holds fewer.
    """
    total = sum(counts)
    if not known:
        return f"of {total} samples; the samples setting is not a number"
    if limit is None or all(count <= limit for count in counts):
        return f"{total} samples"
    running = sum(min(count, limit) for count in counts)
    if all(count >= limit for count in counts):
        kinds = "type" if len(counts) == 1 else "types"
        return f"{len(counts)} {kinds} × {limit} = {running} samples of {total}"
    return f"{running} samples of {total}, at most {limit} per type"
