"""Dataset discovery and reading: every input format, field maps, errors a user can act on, and
the paper's own data layout (from ../shared/data/layer_gradient when it is present)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from layerscope.analysis.base.records import Sample
from layerscope.analysis.datasets import (
    BUNDLED_DATASETS,
    DatasetError,
    FieldMap,
    ResponseTypeSource,
    bundled_dataset_path,
    count_samples,
    discover_sources,
    file_sha256,
    read_samples,
    reading,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared/data/layer_gradient"

PAPER_TYPES = ("none_cot", "simplified_cot", "detailed_cot")
PAPER_FILES = {
    "_no_cot": "none_cot",
    "_with_cot": "simplified_cot",
    "_with_cot_gpt4o": "detailed_cot",
}


def records(count: int, tag: str = "") -> list[dict[str, str]]:
    return [
        {"instruction": f"question {i}{tag}", "input": "", "output": f"answer {i}{tag}"}
        for i in range(count)
    ]


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def only_source(path: Path, fields: FieldMap | None = None) -> ResponseTypeSource:
    sources = discover_sources(path, fields)
    assert len(sources) == 1
    return sources[0]


def summary(sources: list[ResponseTypeSource]) -> list[tuple[str, str, str, str]]:
    return [(s.dataset, s.response_type, s.relevance, s.path.parent.name) for s in sources]


def read_error(path: Path, fields: FieldMap | None = None) -> str:
    with pytest.raises(DatasetError) as caught:
        read_samples(only_source(path, fields))
    return str(caught.value)


def test_module_imports_without_torch() -> None:
    """The UI lists datasets before any model is loaded: no torch at import time."""
    code = "import sys, layerscope.analysis.datasets; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --------------------------------------------------------------------------------------------
# Reading files


def test_json_array_reads_every_record_in_order(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "data" / "answers.json",
        [
            {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
            {"instruction": "Translate:", "input": "bonjour", "output": " hello\n"},
            {"instruction": "No input key here.", "output": "ok"},
            {"instruction": "Null input.", "input": None, "output": "ok"},
        ],
    )
    samples = read_samples(only_source(path))
    assert samples == [
        Sample(0, "Add 2 and 3.", "5", ""),
        Sample(1, "Translate:", " hello\n", "bonjour"),
        Sample(2, "No input key here.", "ok", ""),
        Sample(3, "Null input.", "ok", ""),
    ]
    assert samples[1].prompt == "Translate:\nbonjour"  # the response is kept verbatim


def test_jsonl_ignores_blank_lines_and_numbers_samples_by_record(tmp_path: Path) -> None:
    path = tmp_path / "data" / "plain.jsonl"
    path.parent.mkdir()
    path.write_text(
        '{"instruction": "a", "output": "1"}\n\n   \n{"instruction": "b", "output": "2"}\r\n',
        encoding="utf-8",
    )
    assert read_samples(only_source(path)) == [Sample(0, "a", "1"), Sample(1, "b", "2")]


def test_json_file_holding_one_object_per_line_is_read_as_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data" / "export.json", records(3))
    assert [s.output for s in read_samples(only_source(path))] == [
        "answer 0",
        "answer 1",
        "answer 2",
    ]


def test_byte_order_mark_and_unicode_line_separators_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "data" / "bom.jsonl"
    path.parent.mkdir()
    row = json.dumps({"instruction": "x\u2028y", "output": "z"}, ensure_ascii=False)
    path.write_bytes(b"\xef\xbb\xbf" + row.encode("utf-8") + b"\n")
    assert read_samples(only_source(path)) == [Sample(0, "x\u2028y", "z")]


def test_field_map_reads_other_key_names(tmp_path: Path) -> None:
    rows = [{"question": "q1", "context": "c1", "answer": "a1", "id": 7}]
    fields = FieldMap(instruction="question", input="context", output="answer")
    for path in (
        write_json(tmp_path / "j" / "x.json", rows),
        write_jsonl(tmp_path / "l" / "x.jsonl", rows),
    ):
        source = only_source(path, fields)
        assert source.fields == fields
        # the record's other numbers travel with it
        assert read_samples(source) == [Sample(0, "q1", "a1", "c1", {"id": 7.0})]


def test_field_map_rejects_empty_and_repeated_names() -> None:
    with pytest.raises(ValueError, match="output field name"):
        FieldMap(output="")
    with pytest.raises(ValueError, match="must differ"):
        FieldMap(instruction="text", output="text")


# --------------------------------------------------------------------------------------------
# Errors in files: each names the file and the line or record


def test_invalid_json_array_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "data" / "broken.json"
    path.parent.mkdir()
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": ,}\n]\n')
    message = read_error(path)
    assert message.startswith(f"{path}:3: invalid JSON: Expecting value")


def test_invalid_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "data" / "broken.jsonl"
    path.parent.mkdir()
    path.write_text('{"instruction": "a", "output": "b"}\n\n{"instruction": "a", "output": }\n')
    assert read_error(path).startswith(f"{path}:3: invalid JSON:")


def test_top_level_object_is_not_an_array(tmp_path: Path) -> None:
    path = write_json(tmp_path / "data" / "object.json", {"data": records(2)})
    assert read_error(path) == f"{path}:1: expected a JSON array of records, found an object"


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data" / "rows.jsonl", [records(1)[0], ["a", "b"]])
    assert read_error(path) == f"{path}:2: expected a JSON object, found an array"


def test_array_record_that_is_not_an_object_names_record_and_line(tmp_path: Path) -> None:
    path = write_json(tmp_path / "data" / "rows.json", [*records(2), "just text"])
    # indent=4: each record of records() spans 5 lines after the opening "[" line.
    assert read_error(path) == (
        f"{path}: record 3: expected a JSON object, found a string (line 12)"
    )


def test_missing_field_names_the_field_and_the_field_map(tmp_path: Path) -> None:
    rows = [*records(3), {"instruction": "q", "response": "r"}]
    path = write_json(tmp_path / "data" / "rows.json", rows)
    message = read_error(path)
    assert message.startswith(f"{path}: record 4: missing output field 'output'")
    assert "field map: instruction='instruction', input='input', output='output'" in message
    assert "'response'" in message  # what the record does have

    mapped = FieldMap(instruction="question", output="answer")
    jsonl = write_jsonl(tmp_path / "other" / "rows.jsonl", [{"question": "q", "output": "o"}])
    message = read_error(jsonl, mapped)
    assert message.startswith(f"{jsonl}:1: missing output field 'answer'")
    assert "output='answer'" in message


def test_non_string_fields_are_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a" / "rows.jsonl", [{"instruction": 12, "output": "x"}])
    assert read_error(path) == (
        f"{path}:1: instruction field 'instruction' must be a string, found a number"
    )
    path = write_json(tmp_path / "b" / "rows.json", [{"instruction": "q", "output": None}])
    assert read_error(path).startswith(
        f"{path}: record 1: output field 'output' must be a string, found null"
    )
    path = write_jsonl(
        tmp_path / "c" / "rows.jsonl", [{"instruction": "q", "input": ["x"], "output": "o"}]
    )
    assert read_error(path) == f"{path}:1: input field 'input' must be a string, found an array"


def test_empty_output_is_rejected(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "data" / "rows.jsonl", [*records(1), {"instruction": "q", "output": "  \n"}]
    )
    assert read_error(path).startswith(f"{path}:2: empty output")


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.json", ""), ("blank.jsonl", "\n  \n"), ("array.json", "[ ]")],
)
def test_file_without_records_has_no_samples(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / "data" / name
    path.parent.mkdir()
    path.write_text(content)
    assert read_error(path).startswith(f"{path}: no samples")


def test_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data" / "latin1.jsonl"
    path.parent.mkdir()
    path.write_bytes(
        b'{"instruction": "a", "output": "b"}\n{"instruction": "caf\xe9", "output": "b"}\n'
    )
    assert read_error(path).startswith(f"{path}:2: not UTF-8 text")


def test_file_removed_after_discovery(tmp_path: Path) -> None:
    path = write_json(tmp_path / "data" / "gone.json", records(1))
    source = only_source(path)
    path.unlink()
    with pytest.raises(DatasetError, match="no such file"):
        read_samples(source)
    with pytest.raises(DatasetError, match="no such file"):
        count_samples(source)


def test_json_nested_too_deeply_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "deep.json"
    path.parent.mkdir()
    path.write_text("[" * 100_000)
    assert read_error(path) == f"{path}: invalid JSON: arrays or objects nested too deeply to read"
    lines = write_jsonl(tmp_path / "lines" / "deep.jsonl", records(1))
    lines.write_text(lines.read_text() + "[" * 100_000 + "\n")
    assert read_error(lines) == (
        f"{lines}:2: invalid JSON: arrays or objects nested too deeply to read"
    )


def test_integers_beyond_a_float_or_python_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "data" / "rows.jsonl"
    path.parent.mkdir()
    path.write_text(
        '{"instruction": "q", "output": "o", "id": 1}\n'
        f'{{"instruction": "q", "output": "o", "id": 1{"0" * 399}}}\n'
    )
    assert read_error(path) == (
        f"{path}:2: field 'id' is an integer of 400 digits, beyond the range of a number "
        "layerscope keeps (a float, about 1.8e308)"
    )
    limit = sys.get_int_max_str_digits()
    path.write_text(f'{{"instruction": "q", "output": "o", "meta": {{"ids": [1, {"9" * 5001}]}}}}')
    assert read_error(path) == (
        f"{path}:1: field 'meta.ids[1]' is an integer of 5001 digits; Python reads at most {limit}"
    )
    array = tmp_path / "array" / "rows.json"
    array.parent.mkdir()
    array.write_text(
        '[{"instruction": "q", "output": "o"},\n'
        f' {{"instruction": "q", "output": "o", "n": -{"9" * 5001}}}]'
    )
    assert read_error(array) == (
        f"{array}: record 2: field 'n' is an integer of 5001 digits; Python reads at most "
        f"{limit} (line 2)"
    )


def test_lone_surrogate_in_a_text_field_names_the_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "data" / "rows.jsonl"
    path.parent.mkdir()
    path.write_text(
        '{"instruction": "q", "output": "o"}\n{"instruction": "q", "output": "o\\udc00"}\n'
    )
    assert read_error(path) == (
        f"{path}:2: output field 'output' holds a lone surrogate \\udc00 at character 2, which "
        "is not Unicode text (no tokenizer reads it)"
    )


# --------------------------------------------------------------------------------------------
# Large files: JSON lines are streamed, a JSON array has a size limit


def test_json_lines_are_never_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = write_jsonl(tmp_path / "a" / "rows.jsonl", records(3))
    as_json = write_jsonl(tmp_path / "b" / "rows.json", records(2))  # one object per line
    monkeypatch.setattr(reading, "MAX_JSON_ARRAY_BYTES", 10)  # so the .json one streams too

    def whole(*args: object, **kwargs: object) -> None:
        raise AssertionError("a data file was read whole")

    monkeypatch.setattr(Path, "read_bytes", whole)
    monkeypatch.setattr(Path, "read_text", whole)
    assert [s.output for s in read_samples(only_source(lines))] == [
        "answer 0",
        "answer 1",
        "answer 2",
    ]
    assert count_samples(only_source(as_json)) == 2


def test_counting_json_lines_keeps_one_record_at_a_time(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data" / "rows.jsonl", records(20_000, " " + "x" * 150))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        assert count_samples(only_source(path)) == 20_000
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 3_000_000 and peak < size / 10


def test_json_array_above_the_limit_is_refused_naming_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_json(tmp_path / "data" / "rows.json", records(40))
    assert len(read_samples(only_source(path))) == 40
    monkeypatch.setattr(reading, "MAX_JSON_ARRAY_BYTES", 1024)
    message = read_error(path)
    assert message.startswith(f"{path}: a JSON array of 0 MiB is more than layerscope reads whole")
    assert "write it as JSON lines (.jsonl, one record per line)" in message
    with pytest.raises(DatasetError, match="JSON lines"):
        count_samples(only_source(path))
    bom = tmp_path / "bom" / "rows.json"
    bom.parent.mkdir()
    bom.write_bytes(b"\xef\xbb\xbf \n" + path.read_bytes())
    assert "write it as JSON lines" in read_error(bom)


# --------------------------------------------------------------------------------------------
# Discovering single files and paths that are not datasets


def test_single_file_takes_dataset_from_folder_and_type_from_stem(tmp_path: Path) -> None:
    source = only_source(write_json(tmp_path / "trivia" / "short_answers.json", records(1)))
    assert (source.dataset, source.response_type, source.relevance) == (
        "trivia",
        "short_answers",
        "correct",
    )
    assert source.path == tmp_path / "trivia" / "short_answers.json"
    assert source.fields == FieldMap()


@pytest.mark.parametrize(("suffix", "response_type"), PAPER_FILES.items())
def test_single_paper_file_takes_dataset_and_type_from_its_name(
    tmp_path: Path, suffix: str, response_type: str
) -> None:
    source = only_source(write_json(tmp_path / "cot_500" / f"gsm8k_train{suffix}.json", records(1)))
    assert (source.dataset, source.response_type, source.relevance) == (
        "gsm8k_train",
        response_type,
        "correct",
    )


def test_single_file_in_shuffle_folder_is_irrelevant(tmp_path: Path) -> None:
    shuffle = tmp_path / "cot_500_wrong_answer_shuffle"
    source = only_source(write_json(shuffle / "gsm8k_train_with_cot.json", records(1)))
    assert (source.dataset, source.response_type, source.relevance) == (
        "gsm8k_train",
        "simplified_cot_irrelevant",
        "irrelevant",
    )
    other = only_source(
        write_json(tmp_path / "wiki_wrong_answer_shuffle" / "tail.json", records(1))
    )
    assert (other.dataset, other.response_type, other.relevance) == (
        "wiki",
        "tail_irrelevant",
        "irrelevant",
    )


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "data.json"
    with pytest.raises(DatasetError) as caught:
        discover_sources(missing)
    assert str(caught.value) == f"{missing}: no such file or folder"


def test_unsupported_extension_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("instruction,output\n")
    with pytest.raises(DatasetError) as caught:
        discover_sources(path)
    assert str(caught.value).startswith(f"{path}: unsupported file type '.csv'")


def test_folder_without_data_files_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    (folder / "deeper").mkdir(parents=True)
    (folder / "readme.txt").write_text("nothing here")
    with pytest.raises(DatasetError) as caught:
        discover_sources(folder)
    assert str(caught.value).startswith(f"{folder}: no data files")


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_json(tmp_path / "set" / "a.json", records(2))
    monkeypatch.chdir(tmp_path)
    source = only_source(Path("set/a.json"))
    assert source.path == tmp_path / "set" / "a.json"
    assert source.path.is_absolute()


# --------------------------------------------------------------------------------------------
# The paper's folder layout


def make_paper_layout(root: Path) -> None:
    """cot/ with both paper datasets plus one other file; irrelevant copies in the shuffle folder.

    Files are written in reverse order so that discovery cannot rely on creation order."""
    names = [
        f"{data}{suffix}.json" for data in ("zeta", "alpha") for suffix in reversed(PAPER_FILES)
    ]
    for name in names:
        write_json(root / "cot_wrong_answer_shuffle" / name, records(2, " shuffled"))
        write_json(root / "cot" / name, records(2))
    write_json(root / "cot" / "extra_notes.json", records(2))
    write_json(root / "wiki" / "tail.json", records(3))
    write_json(root / "wiki" / "popular.json", records(4))
    write_json(root / "wiki_wrong_answer_shuffle" / "popular.json", records(4, " shuffled"))


def paper_types(dataset: str) -> list[tuple[str, str, str, str]]:
    return [
        (dataset, f"{kind}{suffix}", relevance, folder)
        for kind in PAPER_TYPES
        for suffix, relevance, folder in (
            ("", "correct", "cot"),
            ("_irrelevant", "irrelevant", "cot_wrong_answer_shuffle"),
        )
    ]


# Sorted by dataset name: the folder's own name ("cot") comes between the two paper datasets.
EXPECTED_COT = [
    *paper_types("alpha"),
    ("cot", "extra_notes", "correct", "cot"),
    *paper_types("zeta"),
]
EXPECTED_WIKI = [
    ("wiki", "popular", "correct", "wiki"),
    ("wiki", "popular_irrelevant", "irrelevant", "wiki_wrong_answer_shuffle"),
    ("wiki", "tail", "correct", "wiki"),
]


def test_paper_folder_pairs_each_type_with_its_irrelevant_counterpart(tmp_path: Path) -> None:
    make_paper_layout(tmp_path)
    sources = discover_sources(tmp_path / "cot")
    assert summary(sources) == EXPECTED_COT
    assert [s.path.name for s in sources[:2]] == ["alpha_no_cot.json", "alpha_no_cot.json"]
    assert [s.base_type for s in sources[:2]] == ["none_cot", "none_cot"]
    assert discover_sources(tmp_path / "wiki") == discover_sources(tmp_path / "wiki")
    assert summary(discover_sources(tmp_path / "wiki")) == EXPECTED_WIKI


def test_pointing_at_the_shuffle_folder_gives_the_whole_dataset(tmp_path: Path) -> None:
    make_paper_layout(tmp_path)
    assert discover_sources(tmp_path / "cot_wrong_answer_shuffle") == discover_sources(
        tmp_path / "cot"
    )


def test_shuffle_folder_without_its_sibling_gives_irrelevant_types_only(tmp_path: Path) -> None:
    write_json(tmp_path / "qa_wrong_answer_shuffle" / "qa_no_cot.json", records(1))
    write_json(tmp_path / "qa_wrong_answer_shuffle" / "long.json", records(1))
    assert summary(discover_sources(tmp_path / "qa_wrong_answer_shuffle")) == [
        ("qa", "none_cot_irrelevant", "irrelevant", "qa_wrong_answer_shuffle"),
        ("qa", "long_irrelevant", "irrelevant", "qa_wrong_answer_shuffle"),
    ]


def test_folder_of_folders_gives_every_dataset_once_in_order(tmp_path: Path) -> None:
    make_paper_layout(tmp_path / "layer_gradient")
    sources = discover_sources(tmp_path / "layer_gradient")
    # One sorted list across folders: datasets alpha, cot, wiki, zeta.
    assert summary(sources) == [
        *paper_types("alpha"),
        ("cot", "extra_notes", "correct", "cot"),
        *EXPECTED_WIKI,
        *paper_types("zeta"),
    ]
    # One level further up still finds them (a folder holding the layout folder).
    assert discover_sources(tmp_path) == sources
    assert len({s.path for s in sources}) == len(sources)


def test_two_files_of_the_same_type_are_an_error(tmp_path: Path) -> None:
    write_json(tmp_path / "set" / "answers.json", records(1))
    write_jsonl(tmp_path / "set" / "answers.jsonl", records(1))
    with pytest.raises(DatasetError, match="response type 'answers' is already given by"):
        discover_sources(tmp_path / "set")


def test_discovery_does_not_open_data_files(tmp_path: Path) -> None:
    """A UI lists a big folder by name; a broken file fails when read, not when listed."""
    path = tmp_path / "set" / "broken.json"
    path.parent.mkdir()
    path.write_text("{ not json")
    source = only_source(path)
    with pytest.raises(DatasetError, match="invalid JSON"):
        read_samples(source)


# --------------------------------------------------------------------------------------------
# TOML manifests

MANIFEST = """
name = "my_math"
description = "arithmetic, three ways"
[fields]
instruction = "question"
output = "answer"
[types.none_cot_irrelevant]
file = "answers_plain_shuffled.jsonl"
[types.detailed_cot]
file = "sub/long.json"
relevance = "correct"
[types.none_cot]
file = "answers_plain.jsonl"
"""


def write_manifest_dataset(folder: Path, manifest: str = MANIFEST) -> Path:
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(3)]
    write_jsonl(folder / "answers_plain.jsonl", rows)
    write_jsonl(folder / "answers_plain_shuffled.jsonl", rows[::-1])
    write_json(folder / "sub" / "long.json", rows[:2])
    path = folder / "my_math.toml"
    path.write_text(manifest, encoding="utf-8")
    return path


def test_manifest_lists_its_types_with_field_map_and_relative_files(tmp_path: Path) -> None:
    manifest = write_manifest_dataset(tmp_path / "mine")
    sources = discover_sources(manifest)
    fields = FieldMap(instruction="question", output="answer")
    assert sources == [
        ResponseTypeSource(
            "my_math", "none_cot", tmp_path / "mine/answers_plain.jsonl", "correct", fields
        ),
        ResponseTypeSource(
            "my_math",
            "none_cot_irrelevant",
            tmp_path / "mine/answers_plain_shuffled.jsonl",
            "irrelevant",
            fields,
        ),
        ResponseTypeSource(
            "my_math", "detailed_cot", tmp_path / "mine/sub/long.json", "correct", fields
        ),
    ]
    assert read_samples(sources[1])[0] == Sample(0, "q2", "a2")
    assert [count_samples(s) for s in sources] == [3, 3, 2]


def test_manifest_defaults_and_explicit_field_map(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d" / "plain.jsonl", records(2))
    manifest = tmp_path / "d" / "quick.toml"
    manifest.write_text(
        '[types.plain]\nfile = "plain.jsonl"\n[types.odd]\nfile = "plain.jsonl"\nrelevance = "irrelevant"\n'
    )
    sources = discover_sources(manifest)
    assert summary(sources) == [
        ("quick", "odd", "irrelevant", "d"),
        ("quick", "plain", "correct", "d"),
    ]
    assert all(s.fields == FieldMap() for s in sources)
    explicit = FieldMap(output="response")
    assert all(s.fields == explicit for s in discover_sources(manifest, explicit))


def test_per_type_fields_override_the_manifest_fields(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d" / "a.jsonl", [{"q": "x", "a": "y"}])
    manifest = tmp_path / "d" / "m.toml"
    manifest.write_text(
        '[fields]\ninstruction = "q"\noutput = "a"\n'
        '[types.plain]\nfile = "a.jsonl"\nfields = { output = "alt" }\n'
    )
    assert only_source(manifest).fields == FieldMap(instruction="q", output="alt")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("[fields]", "colour = 'red'\n[fields]"),
            "colour: unknown key (expected one of: name, description, fields, types)",
        ),
        (
            ('file = "sub/long.json"', 'file = "sub/long.json"\nweight = 2'),
            "types.detailed_cot.weight: unknown key",
        ),
        (
            ('instruction = "question"', 'instruction = "question"\nprompt = "p"'),
            "fields.prompt: unknown key",
        ),
        (
            ('relevance = "correct"', 'relevance = "wrong"'),
            "types.detailed_cot.relevance: must be 'correct' or 'irrelevant', not 'wrong'",
        ),
        (
            ('file = "sub/long.json"', 'file = "sub/missing.json"'),
            "types.detailed_cot.file: no such file 'sub/missing.json'",
        ),
        (
            ('file = "sub/long.json"', 'file = "sub/long.csv"'),
            "types.detailed_cot.file: 'sub/long.csv' is not data (.json, .jsonl, .parquet, .arrow or a save_to_disk folder)",
        ),
        (
            ('file = "sub/long.json"', "file = 3"),
            "types.detailed_cot.file: must be a non-empty string",
        ),
        (('file = "sub/long.json"\n', ""), "types.detailed_cot.file: missing"),
        (('name = "my_math"', "name = 5"), "name: must be a non-empty string"),
        (
            ('output = "answer"', 'output = "question"'),
            "fields: field map: field names must differ",
        ),
    ],
)
def test_manifest_errors_name_the_file_and_the_key(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    old, new = edit
    assert old in MANIFEST
    manifest = write_manifest_dataset(tmp_path / "mine", MANIFEST.replace(old, new, 1))
    with pytest.raises(DatasetError) as caught:
        discover_sources(manifest)
    assert str(caught.value).startswith(f"{manifest}: {expected}")


def test_manifest_without_types_is_an_error(tmp_path: Path) -> None:
    manifest = tmp_path / "empty.toml"
    manifest.write_text('name = "x"\n')
    with pytest.raises(DatasetError) as caught:
        discover_sources(manifest)
    assert str(caught.value).startswith(f"{manifest}: types: missing")


def test_invalid_toml_names_the_file_and_line(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.toml"
    manifest.write_text('name = "x"\n[types.a]\nfile = \n')
    with pytest.raises(DatasetError) as caught:
        discover_sources(manifest)
    assert str(caught.value).startswith(f"{manifest}:3: invalid TOML: Invalid value")


def test_folder_with_a_manifest_does_not_list_its_files_twice(tmp_path: Path) -> None:
    write_manifest_dataset(tmp_path / "mine")
    write_json(tmp_path / "mine" / "unlisted.json", records(1))
    assert summary(discover_sources(tmp_path / "mine")) == [
        ("mine", "unlisted", "correct", "mine"),
        ("my_math", "none_cot", "correct", "mine"),
        ("my_math", "none_cot_irrelevant", "irrelevant", "mine"),
        ("my_math", "detailed_cot", "correct", "sub"),
    ]


# --------------------------------------------------------------------------------------------
# Counting and hashing


def test_count_samples_matches_reading_and_notices_changes(tmp_path: Path) -> None:
    path = write_json(tmp_path / "set" / "a.json", records(5))
    source = only_source(path)
    assert count_samples(source) == 5 == len(read_samples(source))
    assert count_samples(source) == 5  # served from the cache
    write_json(path, records(7))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert count_samples(source) == 7
    write_json(path, [*records(2), {"instruction": "q"}])
    with pytest.raises(DatasetError, match="record 3: missing output field"):
        count_samples(source)


def test_count_samples_depends_on_the_field_map(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "set" / "a.jsonl", [{"instruction": "q", "output": "o"}])
    assert count_samples(only_source(path)) == 1
    with pytest.raises(DatasetError, match="missing output field 'answer'"):
        count_samples(only_source(path, FieldMap(output="answer")))


def test_file_sha256_is_the_content_hash(tmp_path: Path) -> None:
    path = write_json(tmp_path / "a.json", records(3))
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    copy = tmp_path / "b.json"
    copy.write_bytes(path.read_bytes())
    assert file_sha256(copy) == file_sha256(path)
    write_json(copy, records(4))
    assert file_sha256(copy) != file_sha256(path)
    with pytest.raises(DatasetError, match="cannot read file"):
        file_sha256(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------------
# Bundled datasets


def test_unknown_bundled_dataset_is_named() -> None:
    assert BUNDLED_DATASETS == ("math", "knowledge")
    with pytest.raises(
        DatasetError, match=r"^physics: unknown bundled dataset \(bundled: math, knowledge\)"
    ):
        bundled_dataset_path("physics")


@pytest.mark.parametrize("name", BUNDLED_DATASETS)
def test_bundled_dataset_reads_with_irrelevant_counterparts(name: str) -> None:
    try:
        folder = bundled_dataset_path(name)
    except DatasetError as error:
        pytest.skip(f"bundled dataset {name!r} not written yet: {error}")
    assert folder.name == name
    sources = discover_sources(folder)
    assert sources == discover_sources(folder)
    correct = [s for s in sources if s.relevance == "correct"]
    irrelevant = [s for s in sources if s.relevance == "irrelevant"]
    assert correct and irrelevant
    # Every response type ships with its irrelevant counterpart, listed right after it.
    assert [s.base_type for s in irrelevant] == [s.response_type for s in correct]
    assert [s.relevance for s in sources] == ["correct", "irrelevant"] * len(correct)
    by_type = {(s.dataset, s.response_type): s for s in sources}
    for source in irrelevant:
        counterpart = by_type[(source.dataset, source.base_type)]
        assert [s.instruction for s in read_samples(source)] == [
            s.instruction for s in read_samples(counterpart)
        ]
    for source in sources:
        assert count_samples(source) == len(read_samples(source)) > 0


# --------------------------------------------------------------------------------------------
# The paper's published data


def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"paper data not present at {SHARED_DATA}")
    return SHARED_DATA


def test_paper_data_root_gives_every_dataset_and_type() -> None:
    sources = discover_sources(shared_data())
    types: dict[str, list[str]] = {}
    for source in sources:
        types.setdefault(source.dataset, []).append(source.response_type)
    with_irrelevant = lambda names: [t for name in names for t in (name, f"{name}_irrelevant")]  # noqa: E731
    assert types == {
        "algebra": with_irrelevant(["simplified_cot", "detailed_cot"]),
        "creak_train": with_irrelevant(PAPER_TYPES),
        "gsm8k_train": with_irrelevant(PAPER_TYPES),
        "wiki_popularity": with_irrelevant(["long_tail_wikipedia", "popular_wikipedia_100"]),
    }
    for source in sources:
        expected_folder = source.path.parent.name.endswith("_wrong_answer_shuffle")
        assert (source.relevance == "irrelevant") == expected_folder
    # Every data file is listed exactly once.
    on_disk = sorted(SHARED_DATA.glob("*/*.json"))
    assert sorted(s.path for s in sources) == on_disk


def test_every_paper_file_reads_with_its_documented_size() -> None:
    for source in discover_sources(shared_data()):
        samples = read_samples(source)
        expected = 454 if source.path.name == "long_tail_wikipedia.json" else 500
        assert len(samples) == expected, source.path
        assert count_samples(source) == expected
        assert [s.index for s in samples] == list(range(expected))
        assert all(s.instruction and s.output.strip() for s in samples)


def test_paper_irrelevant_files_keep_the_questions_and_swap_the_answers() -> None:
    sources = discover_sources(shared_data())
    by_type = {(s.dataset, s.response_type): s for s in sources}
    pairs = 0
    for source in sources:
        if source.relevance != "irrelevant":
            continue
        correct = read_samples(by_type[(source.dataset, source.base_type)])
        irrelevant = read_samples(source)
        assert [(s.instruction, s.input) for s in irrelevant] == [
            (s.instruction, s.input) for s in correct
        ]
        if source.base_type != "none_cot":  # bare answers (e.g. true/false) may coincide
            same = sum(a.output == b.output for a, b in zip(correct, irrelevant, strict=True))
            assert same < len(correct) * 0.05, source.path
        pairs += 1
    assert pairs == 10


def test_paper_subfolders_and_single_files_agree_with_the_root() -> None:
    root = shared_data()
    everything = discover_sources(root)
    cot = discover_sources(root / "cot_500")
    assert cot == discover_sources(root / "cot_500_wrong_answer_shuffle")
    assert cot == [s for s in everything if s.path.parent.name.startswith("cot_500")]
    single = only_source(
        root / "lighteval_math_wrong_answer_shuffle" / "algebra_with_cot_gpt4o.json"
    )
    assert single in everything
    assert (single.dataset, single.response_type) == ("algebra", "detailed_cot_irrelevant")


def test_types_choose_one_dataset_of_a_folder_holding_several(tmp_path):
    """The paper's cot_500 folder holds gsm8k and creak: ``gsm8k_train/none_cot`` picks one
    dataset's file, a bare ``none_cot`` every dataset's, and the names offered say which."""
    from layerscope.analysis.datasets import type_names
    from layerscope.analysis.runs.planning import RunnerError, RunRequest, resolve_sources

    folder = tmp_path / "cot_500"
    folder.mkdir()
    for dataset in ("gsm8k_train", "creak_train"):
        for suffix in ("no_cot", "with_cot"):
            records = [{"instruction": "Q?", "output": "A."}]
            (folder / f"{dataset}_{suffix}.json").write_text(json.dumps(records))
    sources = discover_sources(folder)
    assert type_names(sources) == [
        "creak_train/none_cot",
        "creak_train/simplified_cot",
        "gsm8k_train/none_cot",
        "gsm8k_train/simplified_cot",
    ]
    one = resolve_sources(RunRequest("tiny", folder, ["gsm8k_train/none_cot"]))
    assert [s.label for s in one] == ["gsm8k_train/none_cot"]
    both = resolve_sources(RunRequest("tiny", folder, ["none_cot"]))
    assert [s.label for s in both] == ["creak_train/none_cot", "gsm8k_train/none_cot"]
    with pytest.raises(RunnerError, match=r"types: 'gsm8k/none_cot' is not in .*gsm8k_train/"):
        resolve_sources(RunRequest("tiny", folder, ["gsm8k/none_cot"]))
    single = discover_sources(folder / "gsm8k_train_no_cot.json")
    assert type_names(single) == [single[0].response_type]  # one dataset: plain names
