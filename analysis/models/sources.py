"""Where a model spec points: the built-in ``tiny``, a local folder, or a hub id in the local
Hugging Face cache.

Everything that checks, lists or keys a model starts by resolving its spec to a folder, and
none of it may touch the network or import torch: the TUI validates a path as the user types,
and a cached run is found without loading weights. So resolving reads the cache's refs and
snapshots alone (at ``revision``, default ``main``); a hub id that is not there raises
:class:`ModelNotCached`, whose message says it will be downloaded when the run starts, or, when
downloads are off (``--offline`` or ``HF_HUB_OFFLINE=1``), how to get it. Fetching it is
:mod:`~layerscope.analysis.models.downloads`'s.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from layerscope.analysis.base.errors import LayerscopeError, mention

TINY = "tiny"
# The files that hold a model's weights: a snapshot is complete with them, the identity
# fingerprints them.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class ModelLoadError(LayerscopeError, ValueError):
    """A model could not be found, checked or loaded; the message is one line for the user."""


def tiny_model_path() -> Path:
    """The built-in model's folder (package data, so it survives a non-editable install)."""
    return Path(str(resources.files("layerscope.samples") / "tiny"))


def huggingface_cache_dir() -> Path:
    """The local Hugging Face hub cache, as huggingface_hub resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec points: its display name, folder and hub revision (if cached)."""

    name: str
    path: Path
    revision: str | None = None


NOT_CACHED = "not cached: will be downloaded when the run starts"


class ModelNotCached(ModelLoadError):
    """A hub id that is not in the local cache (at the asked revision): downloadable unless
    offline, and the message says which."""

    def __init__(self, model_id: str, revision: str | None, offline: bool) -> None:
        self.model_id = model_id
        self.revision = revision
        self.offline = offline
        at = f" at revision {revision!r}" if revision else ""
        if offline:
            get = f"hf download {model_id}" + (f" --revision {revision}" if revision else "")
            offline_setting = mention("offline")
            message = (
                f"model {model_id!r}{at} is not in the local Hugging Face cache "
                f"({huggingface_cache_dir()}) and downloads are off ({offline_setting} or "
                f"HF_HUB_OFFLINE=1); get it with `{get}`, or run without {offline_setting}"
            )
        else:
            message = f"model {model_id!r}{at}: {NOT_CACHED}"
        super().__init__(message)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_hub_id(spec: str) -> bool:
    """``org/name`` or ``name`` as the hub spells ids (not a path: no leading ./ ~ or /)."""
    return bool(_HUB_ID.fullmatch(spec)) and ".." not in spec and not spec.endswith(".")


def hub_offline(offline: bool = False) -> bool:
    """Whether downloads are off: ``--offline``, or ``HF_HUB_OFFLINE`` set as huggingface_hub
    reads it."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return offline or flag in ("1", "true", "yes", "on")


def snapshot_complete(folder: Path) -> bool:
    """A snapshot a run can use: its config and all its weights (an interrupted download
    leaves the files it finished linked in the snapshot, and must be resumed, not used)."""
    if not (folder / "config.json").is_file():
        return False
    for index in folder.glob("*.index.json"):
        try:
            with open(index, encoding="utf-8") as handle:
                shards = set(json.load(handle).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            return False
        if not all((folder / shard).is_file() for shard in shards):
            return False
    return any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir() if p.is_file())


def cached_snapshot(model_id: str, revision: str | None = None) -> tuple[Path, str] | None:
    """The complete cached snapshot of ``model_id`` at ``revision`` (a branch, tag or commit;
    default main) and its commit, from the cache's refs and snapshots alone."""
    repo = huggingface_cache_dir() / ("models--" + model_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    wanted = revision or "main"
    ref = repo / "refs" / wanted
    commit = ref.read_text().strip() if ref.is_file() else wanted
    if commit and "/" not in commit and snapshot_complete(snapshots / commit):
        return snapshots / commit, commit
    if revision is not None or (repo / "refs").is_dir():
        return None  # main (or the revision asked for) was never fetched
    # No refs at all (a cache copied by hand): the newest complete snapshot.
    candidates = sorted(
        (p for p in snapshots.iterdir() if snapshot_complete(p)),
        key=lambda p: p.stat().st_mtime,
    )
    if candidates:
        return candidates[-1], candidates[-1].name
    return None


def resolve_model_spec(
    spec: str, revision: str | None = None, offline: bool = False
) -> ModelSource:
    """Turn ``tiny``, a folder or a cached hub id into a folder; never downloads.

    A hub id that is not cached raises :class:`ModelNotCached` (its message depends on whether
    downloads are off); ``revision`` applies to hub ids only.
    """
    if spec == TINY or (path := Path(spec).expanduser()).exists():
        if revision:
            raise ModelLoadError(
                f"{mention('revision')} {revision}: model {spec!r} is a local folder, not a hub id"
            )
        if spec == TINY:
            return ModelSource(TINY, tiny_model_path())
        if not path.is_dir():
            raise ModelLoadError(f"model {spec!r} is a file, not a model folder")
        return ModelSource(str(path.resolve()), path.resolve())
    if spec and is_hub_id(spec):
        snapshot = cached_snapshot(spec, revision)
        if snapshot is not None:
            return ModelSource(spec, snapshot[0], snapshot[1])
        raise ModelNotCached(spec, revision, hub_offline(offline))
    raise ModelLoadError(
        f"model {spec!r}: no such folder, and not in the local Hugging Face cache "
        f"({huggingface_cache_dir()}); not a hub id either (org/name)"
    )
