"""torch.distributed's internals: the default process group's key-value store.

Why: the ranks of a torchrun job beat a heartbeat into the store the job already has, so that
rank 0 tells a silent (killed, hung) rank from a slow one; torch offers that store only as the
private ``distributed_c10d._get_default_store``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LIBRARY", "default_store", "missing_internals"]

LIBRARY = "torch"

# (module, attribute) of each internal used here
USED = (("torch.distributed.distributed_c10d", "_get_default_store"),)


def default_store(dist: Any) -> Any:
    """The key-value store of the initialised default group (``dist``: ``torch.distributed``)."""
    return dist.distributed_c10d._get_default_store()


def missing_internals() -> list[str]:
    """What of :data:`USED` the installed torch lacks, as ``module.attribute``."""
    import importlib

    missing = []
    for module_name, attribute in USED:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            missing.append(module_name)
            continue
        if not callable(getattr(module, attribute, None)):
            missing.append(f"{module_name}.{attribute}")
    return missing
