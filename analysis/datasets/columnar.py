"""Reading the columnar formats researchers keep datasets in: Parquet and Arrow files, and the
folders Hugging Face ``datasets`` writes with ``save_to_disk``.

Why through the ``datasets`` library (an optional extra, ``layerscope[datasets]``): it is what
wrote these folders, it knows their layout (``state.json`` naming the Arrow shards in order,
``dataset_dict.json`` naming the splits) and memory-maps the shards instead of reading them;
parsing Arrow by hand would follow its format changes a release behind. Parquet is read with
pyarrow (which ``datasets`` itself uses) a row group at a time, so that a large file never has
all its rows as Python objects at once; ``datasets.Dataset.from_parquet`` would first copy the
file into a cache folder of its own.

Why rows become plain records: validation, chat records and numeric quality fields then work
exactly as for JSON lines (:mod:`~layerscope.analysis.datasets.reading`), and errors name the
file and the 1-based record, as there.

Discovery sees a saved dataset folder as one data source, like a file: its content hash and its
change stamp are taken over its Arrow shards, in the order ``state.json`` lists them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from layerscope.analysis.datasets.sources import DatasetError

COLUMNAR_SUFFIXES = (".parquet", ".arrow")
DATASETS_EXTRA = "pip install 'layerscope[datasets]'"
# Rows turned into Python records at a time.
ROWS_PER_BATCH = 1024

__all__ = [
    "COLUMNAR_SUFFIXES",
    "columnar_records",
    "content_sha256",
    "content_stamp",
    "is_columnar",
    "is_saved_dataset",
    "saved_splits",
]


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` (one split)."""
    return path.is_dir() and (path / "state.json").is_file()


def saved_splits(path: Path) -> list[Path]:
    """The split folders of a ``DatasetDict.save_to_disk`` folder, in its own order; [] for any
    other path."""
    listing = path / "dataset_dict.json"
    if not path.is_dir() or not listing.is_file():
        return []
    try:
        splits = json.loads(listing.read_text(encoding="utf-8")).get("splits")
    except (OSError, ValueError, AttributeError) as error:
        raise DatasetError(listing, f"not a datasets split listing: {error}") from None
    if not isinstance(splits, list) or not all(isinstance(name, str) for name in splits):
        raise DatasetError(listing, "not a datasets split listing: 'splits' is not a name list")
    return [path / name for name in splits if is_saved_dataset(path / name)]


def is_columnar(path: Path) -> bool:
    """Whether ``path`` is read by this module (a Parquet or Arrow file, a saved dataset)."""
    if path.is_dir():
        return is_saved_dataset(path)
    return path.suffix.lower() in COLUMNAR_SUFFIXES


def columnar_records(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file, an Arrow file or a saved dataset folder, as records."""
    if path.suffix.lower() == ".parquet" and not path.is_dir():
        yield from _parquet_records(path)
        return
    dataset = _open_dataset(path)
    for start in range(0, len(dataset), ROWS_PER_BATCH):
        columns = dataset[start : start + ROWS_PER_BATCH]
        names = list(columns)
        for row in zip(*(columns[name] for name in names), strict=True):
            yield dict(zip(names, row, strict=True))


def _datasets_library() -> Any:
    try:
        import datasets  # 0.6 s to import: only for these formats
    except ImportError:
        raise DatasetError(
            "datasets", f"reading Parquet, Arrow and saved datasets needs it: {DATASETS_EXTRA}"
        ) from None
    datasets.disable_progress_bars()
    return datasets


def _open_dataset(path: Path) -> Any:
    datasets = _datasets_library()
    try:
        if path.is_dir():
            dataset = datasets.Dataset.load_from_disk(str(path))
        else:
            dataset = datasets.Dataset.from_file(str(path))
    except FileNotFoundError:
        raise DatasetError(path, "no such file") from None
    except Exception as error:  # pyarrow and datasets raise many types for a damaged file
        kind = "a saved dataset folder" if path.is_dir() else "an Arrow file"
        raise DatasetError(path, f"cannot read it as {kind}: {_first_line(error)}") from None
    return dataset.with_format(None)  # plain Python values, whatever format it was saved with


def _parquet_records(path: Path) -> Iterator[dict[str, Any]]:
    _datasets_library()  # the extra that brings pyarrow, and its message when missing
    import pyarrow.parquet

    try:
        parquet = pyarrow.parquet.ParquetFile(str(path))
    except FileNotFoundError:
        raise DatasetError(path, "no such file") from None
    except Exception as error:
        raise DatasetError(path, f"cannot read it as Parquet: {_first_line(error)}") from None
    with parquet:
        yield from (
            record
            for batch in parquet.iter_batches(batch_size=ROWS_PER_BATCH)
            for record in batch.to_pylist()
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _shards(path: Path) -> list[Path]:
    """The Arrow shards of a saved dataset folder, in the order ``state.json`` lists them."""
    state_file = path / "state.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DatasetError(state_file, f"not a datasets state file: {error}") from None
    return [path / name for name in names]


def content_stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when the data at ``path`` changes: (name, mtime, size) of the file, or of
    each shard of a saved dataset folder."""
    files = _shards(path) if path.is_dir() else [path]
    stamp = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            raise DatasetError(file, "no such file") from None
        stamp.append((file.name, stat.st_mtime_ns, stat.st_size))
    return tuple(stamp)


def content_sha256(path: Path) -> str:
    """Hex SHA-256 of a saved dataset's shards (names and bytes, in order): the same data saved
    in two places shares its cached runs, as a copied file does."""
    digest = hashlib.sha256()
    for shard in _shards(path):
        digest.update(shard.name.encode() + b"\x00")
        try:
            with shard.open("rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as error:
            raise DatasetError(shard, f"cannot read file: {error.strerror or error}") from None
    return digest.hexdigest()
