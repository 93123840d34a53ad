"""Catalogue cases: import."""

from __future__ import annotations

from bad_inputs import Case

CASES: list[Case] = []
