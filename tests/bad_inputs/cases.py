"""Every case of the catalogue, joined from the area modules (one table, one test)."""

from __future__ import annotations

from bad_inputs import Case
from bad_inputs.cache_cases import CASES as CACHE
from bad_inputs.dataset_cases import CASES as DATASETS
from bad_inputs.export_cases import CASES as EXPORT
from bad_inputs.handled_cases import CASES as HANDLED
from bad_inputs.import_cases import CASES as IMPORT
from bad_inputs.option_cases import CASES as OPTIONS
from bad_inputs.publishing_cases import CASES as PUBLISHING

CASES: list[Case] = [*HANDLED, *DATASETS, *EXPORT, *IMPORT, *CACHE, *OPTIONS, *PUBLISHING]
