"""From the Setup tab's picks to a run request, and to the picks remembered for next time.

Why one function: what a run request is made of (and what is remembered of it) is one rule,
used by both the plan (the cached-status column) and the run. The settings themselves are the
settings record's: this module only checks that the picks are usable and names what is not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerscope.analysis.base.errors import one_line
from layerscope.app.settings_presentation import form_name
from layerscope.app.tui.state import LastPicks

if TYPE_CHECKING:
    from layerscope.analysis.runs.runner import RunRequest
    from layerscope.app.tui.widgets.setup.setup_view import Picks


def _naming(field: str, problem: str) -> str:
    """The field's problem, saying which field once ("model 'Z': ..." names it already)."""
    if field in problem.split(":")[0].split()[:2]:
        return problem
    return f"{field} field: {problem}"


def build_request(picks: Picks, *, require_types: bool = True) -> tuple[RunRequest, LastPicks]:
    """The RunRequest for these picks and the LastPicks to remember; ValueError for the user.

    The settings are the record's (:mod:`layerscope.analysis.base.settings`), checked by
    ``RunRequest.from_settings``; a rejected one is named as the form names it.
    """
    from layerscope.analysis.base.setting_schema import SettingError

    try:
        from layerscope.analysis.runs.runner import RunRequest
    except ImportError as error:
        raise ValueError(f"computing is not available: {one_line(error)}") from None
    if picks.model_problem is not None:
        raise ValueError(_naming("model", picks.model_problem))
    if picks.dataset_problem is not None:
        raise ValueError(_naming("dataset", picks.dataset_problem))
    if not picks.model_ok:
        raise ValueError(f"model {picks.model!r} is not usable (see the Setup tab)")
    if not picks.dataset_ok:
        raise ValueError(f"dataset {picks.dataset!r} is not readable (see the Setup tab)")
    if require_types and not picks.types:
        raise ValueError("check at least one response type (space in the list)")
    try:
        request = RunRequest.from_settings(picks.model, picks.dataset, picks.types, picks.values)
    except SettingError as error:
        raise ValueError(error.describe(form_name)) from None
    remembered = LastPicks(picks.model, picks.dataset, picks.types, dict(picks.values))
    return request, remembered
