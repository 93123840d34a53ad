"""A request's setting values as a whole: checked together, split between the two records, and
the max memory text read as ``from_pretrained`` takes it.

The record (:mod:`~layerscope.analysis.base.settings`) says what each option is and
:class:`~layerscope.analysis.base.setting_schema.Setting` checks one value; a front end hands the
runner all the values it collected. What only holds between settings (a sample seed needs a
limit), which record each value goes to, and the values that must be turned into what a library
takes are about those collected values, not about any one option, and live here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from layerscope.analysis.base.errors import mention
from layerscope.analysis.base.setting_schema import SettingError
from layerscope.analysis.base.settings import DEFAULTS, setting

__all__ = ["check_values", "parse_max_memory", "split_by_target"]


def check_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting's value: ``values`` checked, the rest from the defaults.

    Raises SettingError for a value a setting does not accept, and KeyError for a name that is
    not a setting (a programming error, not a user's).
    """
    unknown = [name for name in values if name not in DEFAULTS]
    if unknown:
        raise KeyError(f"not a setting: {', '.join(unknown)}")
    checked = {name: setting(name).check(value) for name, value in values.items()}
    merged = {**DEFAULTS, **checked}
    if merged["sample_seed"] is not None and merged["limit"] is None:
        raise SettingError(setting("sample_seed"), f"needs {mention('limit')}")
    return merged


def split_by_target(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``values`` as (ComputeSettings fields, RunRequest fields)."""
    compute = {k: v for k, v in values.items() if setting(k).target == "compute"}
    request = {k: v for k, v in values.items() if setting(k).target == "request"}
    return compute, request


def parse_max_memory(text: str | None) -> dict[int | str, int | str] | None:
    """The max memory setting as ``from_pretrained`` takes it: ``{0: "20GiB", "cpu": "64GiB"}``.

    Raises SettingError (one line naming the setting) for text that is not DEVICE=SIZE pairs.
    """
    if text is None or not text.strip():
        return None
    item = setting("max_memory")
    item.check(text)
    parsed: dict[int | str, int | str] = {}
    for pair in text.split(","):
        if not pair.strip():
            continue
        device, _, size = (part.strip() for part in pair.partition("="))
        key: int | str = int(device) if device.isdigit() else device
        if key in parsed:
            raise SettingError(item, f"device {device} is given twice in {text!r}")
        size = size.replace(" ", "")
        parsed[key] = int(size) if size.isdigit() else size  # bytes, or "20GiB" for accelerate
    return parsed
