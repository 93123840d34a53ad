"""The run settings: how many samples (first N or a seeded random N), max length, batch size,
dtype, device and module set.

Each field is one compact line so the whole form fits an 80x24 terminal next to the pickers.
`read()` turns the fields into checked values and names the field that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Grid
from textual.widgets import Input, Label, Select

from layerscope.app.tui.messages import SettingsChanged

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16", "float64")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
MODULE_CHOICES = ("attn", "mlp", "all")


@dataclass(frozen=True)
class FormValues:
    samples: int | None  # None: all
    sample_seed: int | None  # None: the first N
    max_length: int
    batch_size: int
    dtype: str
    device: str
    modules: str


def _positive(text: str, field: str, allow_empty: bool = False) -> int | None:
    text = text.strip()
    if not text:
        if allow_empty:
            return None
        raise ValueError(f"{field}: enter a number")
    value = int(text)
    if value <= 0:
        raise ValueError(f"{field}: must be at least 1, got {value}")
    return value


class SettingsForm(Grid):
    """A two-column grid of labels and compact inputs."""

    def __init__(
        self,
        *,
        samples: int | None,
        sample_seed: int | None,
        max_length: int,
        batch_size: int,
        dtype: str,
        device: str,
        modules: str,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._initial = FormValues(
            samples, sample_seed, max_length, batch_size, dtype, device, modules
        )

    def compose(self) -> ComposeResult:
        initial = self._initial
        yield Label("samples")
        yield Input(
            "" if initial.samples is None else str(initial.samples),
            placeholder="all",
            type="integer",
            id="setting-samples",
            compact=True,
            tooltip="How many samples per response type (empty: all)",
        )
        yield Label("seed")
        yield Input(
            "" if initial.sample_seed is None else str(initial.sample_seed),
            placeholder="first N",
            type="integer",
            id="setting-seed",
            compact=True,
            tooltip="Random seed. Empty: the first N samples; a number: N drawn with this seed",
        )
        yield Label("max len")
        yield Input(str(initial.max_length), type="integer", id="setting-max-length", compact=True)
        yield Label("batch")
        yield Input(str(initial.batch_size), type="integer", id="setting-batch", compact=True)
        yield Label("dtype")
        yield Select(
            [(choice, choice) for choice in DTYPE_CHOICES],
            value=initial.dtype if initial.dtype in DTYPE_CHOICES else "auto",
            allow_blank=False,
            id="setting-dtype",
            compact=True,
        )
        yield Label("device")
        yield Select(
            [(choice, choice) for choice in DEVICE_CHOICES],
            value=initial.device if initial.device in DEVICE_CHOICES else "auto",
            allow_blank=False,
            id="setting-device",
            compact=True,
        )
        yield Label("modules")
        yield Select(
            [(choice, choice) for choice in MODULE_CHOICES],
            value=initial.modules if initial.modules in MODULE_CHOICES else "attn",
            allow_blank=False,
            id="setting-modules",
            compact=True,
            tooltip="attn: q k v o; mlp: gate up down; all: both",
        )

    def read(self) -> FormValues:
        """The checked values; ValueError names the field that is wrong."""
        samples = _positive(self.query_one("#setting-samples", Input).value, "samples", True)
        seed_text = self.query_one("#setting-seed", Input).value.strip()
        seed = int(seed_text) if seed_text else None
        max_length = _positive(self.query_one("#setting-max-length", Input).value, "max length")
        batch_size = _positive(self.query_one("#setting-batch", Input).value, "batch size")
        assert max_length is not None and batch_size is not None
        return FormValues(
            samples=samples,
            sample_seed=seed,
            max_length=max_length,
            batch_size=batch_size,
            dtype=str(self.query_one("#setting-dtype", Select).value),
            device=str(self.query_one("#setting-device", Select).value),
            modules=str(self.query_one("#setting-modules", Select).value),
        )

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(SettingsChanged())

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.post_message(SettingsChanged())
