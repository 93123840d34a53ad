"""The run settings: every option a computation takes, said once.

Why one record: the same options reach the runner from the command line (``compute``,
``check``), from the explorer's settings form and from the explorer's remembered picks. When each
of those spelled out its own choices and defaults they drifted (the explorer once defaulted to a
different max length than the CLI). Here each setting
(:class:`~layerscope.analysis.base.setting_schema.Setting`) carries its name, its choices and
default, how a typed value is checked, its help text, whether it enters the run key, and where it
is offered; the CLI's arguments, the form's fields and the runner's request are all built from
:data:`SETTINGS`. Adding an option means one entry here (its fixed choices, if any, in
:mod:`~layerscope.analysis.base.choices`) plus, for the form, its widget.

How a front end shows a setting (its command-line option, its form field's id, label and
placeholder) is the front end's (``layerscope.app.settings_presentation``): help texts and
messages here mark the settings they name (:func:`~layerscope.analysis.base.errors.mention`), and each
front end spells them its own way.

This module sits at the bottom of the layers with :mod:`~layerscope.analysis.base.records`: plain
data, no torch, no UI.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from layerscope.analysis.base.choices import (
    DEFAULT_SYSTEM_PROMPT,
    DEVICE_MAPS,
    DTYPES,
    FACTORISATIONS,
    INITS,
    MAX_MEMORY_PATTERN,
    METHODS,
    MODES,
    MODULE_SETS,
    ROUTES,
)
from layerscope.analysis.base.errors import mention
from layerscope.analysis.base.setting_schema import Setting, Surface, Target

__all__ = [
    "DEFAULTS",
    "SETTINGS",
    "keyed_names",
    "offered",
    "profile_values",
    "setting",
]

_ALL: frozenset[Surface] = frozenset({"compute", "check", "form"})
_COMMANDS: frozenset[Surface] = frozenset({"compute", "check"})
_COMPUTE: frozenset[Surface] = frozenset({"compute"})
_COMPUTE_FORM: frozenset[Surface] = frozenset({"compute", "form"})

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "mode",
        "mode",
        "base: instruction and response as plain text; instruct: through the chat template",
        "choice",
        "base",
        "compute",
        _COMMANDS,  # the explorer chooses it beside the model (it depends on the model)
        choices=MODES,
        keyed=True,
    ),
    Setting(
        "system_prompt",
        "system prompt",
        "the system message in instruct mode",
        "text",
        DEFAULT_SYSTEM_PROMPT,
        "compute",
        _COMMANDS,
        keyed=True,  # in instruct mode only (ComputeSettings.key_fields)
    ),
    Setting(
        "limit",
        "samples",
        "samples per response type: the first N, or N drawn at random with the seed",
        "int",
        None,
        "request",
        _ALL,
        optional=True,
        minimum=1,
        quick_default=8,
    ),
    Setting(
        "sample_seed",
        "seed",
        "draw the samples at random with this seed instead of taking the first N",
        "int",
        None,
        "request",
        _COMPUTE_FORM,
        optional=True,
    ),
    Setting(
        "max_length",
        "max length",
        "tokens per sample (prompt and response); longer samples are truncated",
        "int",
        1024,  # as in the paper's scripts
        "compute",
        _ALL,
        minimum=1,
        keyed=True,
    ),
    Setting(
        "batch_size",
        "batch size",
        "samples per forward and backward pass (does not change the numbers)",
        "int",
        4,
        "compute",
        _ALL,
        minimum=1,
    ),
    # Throughput (issue 8): a token budget per pass; batches group samples of similar length.
    Setting(
        "tokens_per_batch",
        "tokens per batch",
        "padded tokens per forward and backward pass; samples of similar length share a pass "
        f"(default: from the device's free memory; on a CPU 4096); {mention('batch_size')} caps the rows "
        "(does not change the numbers)",
        "int",
        None,
        "compute",
        _COMMANDS,
        optional=True,
        minimum=1,
    ),
    # Threads (issue "Fast at real depth"): torch counts the cores it sees, not a cgroup quota or
    # other processes' load, and more threads than cores slow a pass many times. Every
    # computing process sets it (execution.prepare_cpu).
    Setting(
        "cpu_threads",
        "CPU threads",
        "torch's CPU threads; auto: the CPUs this process may run on (its affinity, its "
        "cgroup's CPU quota, OMP_NUM_THREADS when set), under torchrun each local rank's share "
        "(does not change the numbers)",
        "int",
        None,
        "request",
        _COMMANDS,  # like the token budget, the explorer's form leaves it on auto
        optional=True,
        minimum=1,
    ),
    Setting(
        "dtype",
        "dtype",
        "the model's dtype (auto: bfloat16 or float16 on CUDA, float32 elsewhere)",
        "choice",
        "auto",
        "request",
        _ALL,
        choices=DTYPES,
        keyed=True,  # resolved before keying (runner.resolve_dtype)
    ),
    Setting(
        "device",
        "device",
        "auto, cpu, cuda, cuda:1, mps, ...",
        "text",
        "auto",
        "request",
        _ALL,  # any torch device: no fixed choices; the explorer's form suggests some
        pattern=(
            r"auto|cpu|(cuda|mps|xpu|hpu|npu)(:\d+)?",
            "auto, cpu, mps, cuda or cuda:N (also xpu, hpu, npu)",
        ),
    ),
    Setting(
        "modules",
        "modules",
        "attn: q k v o; mlp: gate up down; all: both",
        "choice",
        "attn",
        "compute",
        _COMPUTE_FORM,
        choices=MODULE_SETS,
        keyed=True,
    ),
    Setting(
        "method",
        "method",
        "fast: exact statistics from low-rank factors; reference: full gradient and full SVD",
        "choice",
        "fast",
        "compute",
        _COMPUTE,
        choices=METHODS,
    ),
    Setting(
        "spectra",
        "spectra",
        "keep every singular value (bigger cache)",
        "flag",
        False,
        "compute",
        _COMPUTE_FORM,
        keyed=True,
    ),
    Setting(
        "entry_statistics",
        "entry statistics",
        f"mean/max/min of the gradient entries ({mention('entry_statistics')} skips them)",
        "flag",
        True,
        "compute",
        _COMPUTE,
        keyed=True,
        profile_value=False,
    ),
    Setting(
        "cosines",
        "cosines",
        f"layer-by-layer and q-o/k-v gradient cosines ({mention('cosines')} skips them)",
        "flag",
        True,
        "compute",
        _COMPUTE,
        keyed=True,
        profile_value=False,
    ),
    Setting(
        "init",
        "init",
        "trained: the model's own weights; random: the same architecture freshly initialised "
        "with the seed (a baseline)",
        "choice",
        "trained",
        "compute",
        _ALL,
        choices=INITS,
        keyed=True,  # with random only (ComputeSettings.key_fields)
    ),
    Setting(
        "init_seed",
        "init seed",
        f"the seed of a random initialisation ({mention('init')} random)",
        "int",
        0,
        "compute",
        _ALL,
        minimum=0,
        keyed=True,  # with random only
    ),
    # The engine's schedule, factorisations and checkpointing: how, not what, so none is keyed.
    Setting(
        "streaming",
        "streaming",
        f"measure each module as the backward pass reaches it ({mention('streaming')}: at the "
        "batch's end)",
        "flag",
        True,
        "compute",
        _COMMANDS,
    ),
    Setting(
        "factorisation",
        "factorisation",
        "the fast method's small QRs and SVDs: one per matrix, batched per module on its "
        "device, or batched with the SVDs on CPU threads",
        "choice",
        "per-matrix",
        "compute",
        _COMMANDS,
        choices=FACTORISATIONS,
    ),
    # Long samples (4k-16k token reasoning traces): trade time for activation memory.
    Setting(
        "checkpointing",
        "checkpointing",
        "recompute each layer's activations in the backward pass (less memory for long "
        "samples, about a third more time; does not change the numbers)",
        "flag",
        False,
        "compute",
        _COMMANDS,
    ),
    Setting(
        "routes",
        "routes",
        "how each statistic is computed, all exact: auto picks the cheapest route per "
        "projection and sample length (spectra and cosines from T-by-T factors, or from "
        "gradients formed once, within a quarter of free memory); factors or formed force one "
        "(does not change the numbers)",
        "choice",
        "auto",
        "compute",
        _COMMANDS,
        choices=ROUTES,
    ),
    Setting(
        "trust_remote_code",
        "trust remote code",
        "run the model repository's own Python code (only for models you trust)",
        "flag",
        False,
        "request",
        _COMMANDS,
    ),
    # -- large models and hub models: where the layers go and which hub snapshot is loaded --
    Setting(
        "device_map",
        "device map",
        "spread the layers over the GPUs, the CPU and disk (accelerate): none keeps the whole "
        f"model on {mention('device')}; auto/balanced/sequential as from_pretrained takes them",
        "choice",
        "none",
        "request",
        _ALL,
        choices=DEVICE_MAPS,  # not keyed: where a layer runs does not change the numbers
    ),
    Setting(
        "max_memory",
        "max memory",
        "with a device map, the most each device may hold, e.g. 0=20GiB,1=20GiB,cpu=64GiB",
        "text",
        None,
        "request",
        _ALL,
        optional=True,
        pattern=(MAX_MEMORY_PATTERN, "DEVICE=SIZE,... such as 0=20GiB,cpu=64GiB"),
    ),
    Setting(
        "revision",
        "revision",
        "the hub branch, tag or commit of a hub model; its resolved commit enters the run key",
        "text",
        None,
        "request",
        _COMMANDS,
        optional=True,
    ),
    Setting(
        "adapter",
        "adapter",
        "a PEFT/LoRA adapter folder (adapter_config.json), merged into the model's weights: "
        "the adapted model is measured, and the adapter's fingerprint enters the run key",
        "text",
        None,
        "request",
        _COMMANDS,
        optional=True,
    ),
    Setting(
        "offline",
        "offline",
        "never download: a hub model must already be in the local cache (also HF_HUB_OFFLINE=1)",
        "flag",
        False,
        "request",
        _COMMANDS,
    ),
    # -- the explorer's GPUs (issue 9): how many GPUs one request computes on. Not keyed (the
    # numbers are the same), offered by the form only where several GPUs are visible; more
    # than one runs `compute --nproc-per-node N` as a subprocess (the CLI's own option).
    Setting(
        "gpus",
        "GPUs",
        "how many of this machine's GPUs to compute on (more than one: a torchrun job)",
        "int",
        1,
        "request",
        frozenset({"form"}),
        minimum=1,
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}
DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}


def setting(name: str) -> Setting:
    """The setting called ``name`` (KeyError for a name that is not a setting)."""
    return _BY_NAME[name]


def profile_values() -> dict[str, Any]:
    """What ``check`` sets of the settings it does not offer (see ``Setting.profile_value``)."""
    return {
        s.name: s.profile_value
        for s in SETTINGS
        if s.profile_value is not None and "check" not in s.surfaces
    }


def offered(surface: Surface) -> tuple[Setting, ...]:
    """The settings a surface offers, in the record's order."""
    return tuple(s for s in SETTINGS if surface in s.surfaces)


def keyed_names(target: Target) -> Iterable[str]:
    """The settings of one record that enter the run key (see ``ComputeSettings.key_fields``)."""
    return (s.name for s in SETTINGS if s.keyed and s.target == target)
