"""Turning a file, a folder, a folder of folders or a manifest into sorted response-type sources.

Why by names only: the explorer lists datasets as the user types a path, so discovery must be
cheap; it never parses a data file (reading does, strictly). The paper's layout pairs each
folder with its `<folder>_wrong_answer_shuffle` sibling of irrelevant responses.
"""

from __future__ import annotations

from pathlib import Path

from layerscope.analysis.datasets.columnar import is_saved_dataset, saved_splits
from layerscope.analysis.datasets.manifests import sources_from_manifest
from layerscope.analysis.datasets.sources import (
    DATA_KINDS,
    DATA_SUFFIXES,
    IRRELEVANT_SUFFIX,
    MANIFEST_SUFFIX,
    MAX_FOLDER_DEPTH,
    PAPER_RESPONSE_TYPES,
    SHUFFLE_FOLDER_SUFFIX,
    SKIPPED_FOLDERS,
    TYPE_ORDER,
    DatasetError,
    FieldMap,
    Relevance,
    ResponseTypeSource,
)

# --------------------------------------------------------------------------------------------
# Discovery


def discover_sources(path: str | Path, fields: FieldMap | None = None) -> list[ResponseTypeSource]:
    """All response-type sources under `path`, sorted: dataset, then none_cot, simplified_cot,
    detailed_cot, other types, each correct source before its irrelevant counterpart.

    `path` is a data file (.json, .jsonl, .parquet, .arrow), a folder a ``datasets``
    ``save_to_disk`` wrote (one split, or each split of a dataset dict), a folder in the paper's
    layout, a folder of such folders or a .toml manifest. `fields` maps record keys; for a manifest it replaces the manifest's own
    [fields] table. Only names are looked at: files are not opened (except manifests).
    """
    root = Path(path).expanduser().absolute()
    if not root.exists():
        raise DatasetError(root, "no such file or folder")
    if root.is_file():
        suffix = root.suffix.lower()
        if suffix == MANIFEST_SUFFIX:
            sources = sources_from_manifest(root, fields)
        elif suffix in DATA_SUFFIXES:
            sources = [_file_source(root, fields or FieldMap())]
        else:
            raise DatasetError(
                root,
                f"unsupported file type {root.suffix or '(no extension)'!r} "
                f"(expected {DATA_KINDS} or a .toml manifest)",
            )
    elif is_saved_dataset(root):
        sources = [_file_source(root, fields or FieldMap())]
    elif root.is_dir():
        sources = _folder_sources(root, fields, depth=0)
        if not sources:
            raise DatasetError(
                root, f"no data files ({DATA_KINDS}; or .toml manifests) in this folder"
            )
    else:
        raise DatasetError(root, "not a regular file or folder")
    _check_unique(sources)
    return sorted(sources, key=_sort_key)


def _sort_key(source: ResponseTypeSource) -> tuple[str, int, str, int, str]:
    base = source.base_type
    return (
        source.dataset,
        TYPE_ORDER.get(base, len(TYPE_ORDER)),
        base,
        0 if source.relevance == "correct" else 1,
        str(source.path),
    )


def _check_unique(sources: list[ResponseTypeSource]) -> None:
    seen: dict[tuple[str, str], Path] = {}
    for source in sorted(sources, key=_sort_key):
        key = (source.dataset, source.response_type)
        if key in seen:
            raise DatasetError(
                source.path,
                f"dataset {source.dataset!r} response type {source.response_type!r} "
                f"is already given by {seen[key]}",
            )
        seen[key] = source.path


def _is_shuffle_folder(folder: Path) -> bool:
    return folder.name.endswith(SHUFFLE_FOLDER_SUFFIX) and folder.name != SHUFFLE_FOLDER_SUFFIX


def _correct_sibling(shuffle_folder: Path) -> Path:
    return shuffle_folder.with_name(shuffle_folder.name[: -len(SHUFFLE_FOLDER_SUFFIX)])


def _shuffle_sibling(folder: Path) -> Path:
    return folder.with_name(folder.name + SHUFFLE_FOLDER_SUFFIX)


def _paper_name(stem: str, folder_dataset: str) -> tuple[str, str]:
    """(dataset, response type) of a data file named `stem` in a folder named `folder_dataset`."""
    for suffix, response_type in PAPER_RESPONSE_TYPES:
        if stem.endswith(suffix):
            prefix = stem[: -len(suffix)]
            return (prefix or folder_dataset), response_type
    return folder_dataset, stem


def _stem(path: Path) -> str:
    """A data source's name: a file's stem, a saved dataset folder's name."""
    return path.name if path.is_dir() else path.stem


def _folder_dataset_name(folder: Path) -> str:
    if _is_shuffle_folder(folder):
        return _correct_sibling(folder).name
    return folder.name


def _typed_source(
    dataset: str, response_type: str, path: Path, irrelevant: bool, fields: FieldMap
) -> ResponseTypeSource:
    irrelevant = irrelevant or response_type.endswith(IRRELEVANT_SUFFIX)
    if irrelevant and not response_type.endswith(IRRELEVANT_SUFFIX):
        response_type += IRRELEVANT_SUFFIX
    relevance: Relevance = "irrelevant" if irrelevant else "correct"
    return ResponseTypeSource(dataset, response_type, path, relevance, fields)


def _file_source(path: Path, fields: FieldMap) -> ResponseTypeSource:
    """A single data file (or saved dataset folder): dataset from its folder (or paper file
    name), type from its stem (or folder name)."""
    dataset, response_type = _paper_name(_stem(path), _folder_dataset_name(path.parent))
    return _typed_source(dataset, response_type, path, _is_shuffle_folder(path.parent), fields)


def _visible_children(folder: Path) -> list[Path]:
    try:
        children = sorted(folder.iterdir())
    except OSError as error:
        raise DatasetError(folder, f"cannot list folder: {error.strerror or error}") from None
    return [child for child in children if not child.name.startswith(".")]


def _data_files(folder: Path) -> list[Path]:
    """The folder's data files and saved datasets (the splits of a saved dataset dict are the
    data of the folder that holds them); none inside a saved dataset (its Arrow shards)."""
    if is_saved_dataset(folder):
        return []
    splits = saved_splits(folder)
    if splits:
        return splits
    return [
        child
        for child in _visible_children(folder)
        if (child.is_file() and child.suffix.lower() in DATA_SUFFIXES) or is_saved_dataset(child)
    ]


def _manifests(folder: Path) -> list[Path]:
    return [
        child
        for child in _visible_children(folder)
        if child.is_file() and child.suffix.lower() == MANIFEST_SUFFIX
    ]


def _holds_data(folder: Path) -> bool:
    return folder.is_dir() and bool(_data_files(folder) or _manifests(folder))


def _folder_sources(folder: Path, fields: FieldMap | None, depth: int) -> list[ResponseTypeSource]:
    if _is_shuffle_folder(folder):
        sibling = _correct_sibling(folder)
        if _holds_data(sibling):
            return _dataset_folder_sources(sibling, fields)
    if _holds_data(folder):
        return _dataset_folder_sources(folder, fields)
    if depth >= MAX_FOLDER_DEPTH:
        return []
    sources: list[ResponseTypeSource] = []
    for child in _visible_children(folder):
        if not child.is_dir() or child.name in SKIPPED_FOLDERS:
            continue
        if _is_shuffle_folder(child) and _holds_data(_correct_sibling(child)):
            continue  # attached to its correct sibling, which the loop visits
        sources.extend(_folder_sources(child, fields, depth + 1))
    return sources


def _dataset_folder_sources(folder: Path, fields: FieldMap | None) -> list[ResponseTypeSource]:
    """A folder in the paper's layout (plus its shuffle sibling), and any manifests in it."""
    sources: list[ResponseTypeSource] = []
    claimed: set[Path] = set()
    for manifest in _manifests(folder):
        manifest_sources = sources_from_manifest(manifest, fields)
        sources.extend(manifest_sources)
        claimed.update(source.path for source in manifest_sources)

    field_map = fields or FieldMap()
    dataset_name = folder.name
    if _is_shuffle_folder(folder):
        # Only reached when the correct sibling holds no data: irrelevant responses alone.
        dataset_name = _correct_sibling(folder).name
        for path in _data_files(folder):
            if path not in claimed:
                dataset, response_type = _paper_name(_stem(path), dataset_name)
                sources.append(_typed_source(dataset, response_type, path, True, field_map))
        return sources

    correct_files = [path for path in _data_files(folder) if path not in claimed]
    for path in correct_files:
        dataset, response_type = _paper_name(_stem(path), dataset_name)
        sources.append(_typed_source(dataset, response_type, path, False, field_map))

    shuffle = _shuffle_sibling(folder)
    if shuffle.is_dir():
        for path in _data_files(shuffle):
            if path in claimed:
                continue
            dataset, response_type = _paper_name(_stem(path), dataset_name)
            sources.append(_typed_source(dataset, response_type, path, True, field_map))
    return sources
