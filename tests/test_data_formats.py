"""The data formats researchers have, beside JSON and JSON lines: Parquet and Arrow files, the
folders ``datasets`` writes with ``save_to_disk`` (one split, or a dataset dict), and chat
records (OpenAI ``messages``, ShareGPT ``conversations``). Each is built here in the test, read
as the same samples as its JSON lines twin, refused naming the file and record, and measured."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")
from modelkit import make_tokenizer  # noqa: E402

from layerscope.analysis.base.records import ComputeSettings  # noqa: E402
from layerscope.analysis.compute.text import encode_sample, prompt_text  # noqa: E402
from layerscope.analysis.datasets import (  # noqa: E402
    DatasetError,
    count_samples,
    discover_sources,
    file_sha256,
    read_records,
    read_samples,
)
from layerscope.app import cli  # noqa: E402

datasets.disable_progress_bars()

RECORDS = [
    {"instruction": f"What is {i} + {i}?", "input": "" if i % 2 else "show work",
     "output": f"{2 * i}", "reward": i / 4}
    for i in range(7)
]  # fmt: skip

CHATS = [
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Name {i} primes."},
            {"role": "assistant", "content": "Which ones?"},
            {"role": "user", "content": "Any."},
            {"role": "assistant", "content": ", ".join(["2", "3", "5", "7"][: i + 1])},
            {"role": "user", "content": "Thanks."},  # after the response: part of neither
        ],
        "score": float(i),
    }
    for i in range(4)
]
SHAREGPT = [
    {"conversations": [{"from": "human", "value": f"hi {i}"}, {"from": "gpt", "value": "hello"}]}
    for i in range(3)
]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def write_parquet(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(records).to_parquet(str(path))
    return path


def write_saved(path: Path, records: list[dict]) -> Path:
    datasets.Dataset.from_list(records).save_to_disk(str(path))
    return path


def write_arrow(path: Path, records: list[dict]) -> Path:
    """A lone Arrow file, as ``datasets`` writes its shards."""
    saved = write_saved(path.parent / (path.stem + "_saved"), records)
    shutil.copy(next(saved.glob("*.arrow")), path)
    shutil.rmtree(saved)
    return path


WRITERS = {
    "parquet": lambda folder, records: write_parquet(folder / "data.parquet", records),
    "arrow": lambda folder, records: write_arrow(folder / "data.arrow", records),
    "saved": lambda folder, records: write_saved(folder / "data", records),
}


def only_source(path: Path):
    (source,) = discover_sources(path)
    return source


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_each_format_reads_as_the_same_samples_as_json_lines(tmp_path, kind):
    twin = read_samples(only_source(write_jsonl(tmp_path / "j" / "data.jsonl", RECORDS)))
    path = WRITERS[kind](tmp_path / kind, RECORDS)
    source = only_source(path)
    assert (source.dataset, source.response_type) == (kind, "data")
    samples = read_samples(source)
    assert samples == twin
    assert [s.numeric_fields for s in samples] == [{"reward": r["reward"]} for r in RECORDS]
    assert count_samples(source) == len(RECORDS)
    assert read_records(source) == RECORDS  # what `select` writes back: every field kept


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_bad_record_is_refused_naming_the_file_and_record(tmp_path, kind):
    records = [dict(record) for record in RECORDS]
    records[4]["output"] = "   "
    path = WRITERS[kind](tmp_path / kind, records)
    with pytest.raises(DatasetError) as caught:
        read_samples(only_source(path))
    assert str(caught.value) == (
        f"{path}: record 5: empty output (field 'output'): there is no response to measure"
    )


def test_a_damaged_parquet_file_is_one_clear_error(tmp_path):
    path = tmp_path / "d" / "bad.parquet"
    path.parent.mkdir()
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match=r"bad\.parquet: cannot read it as Parquet"):
        read_samples(only_source(path))


def test_a_dataset_dict_offers_each_split_as_a_response_type(tmp_path):
    halves = {"none_cot": RECORDS[:3], "detailed_cot": RECORDS[3:]}
    folder = tmp_path / "gsm8k"
    datasets.DatasetDict(
        {name: datasets.Dataset.from_list(rows) for name, rows in halves.items()}
    ).save_to_disk(str(folder))
    sources = discover_sources(folder)
    assert [(s.dataset, s.response_type) for s in sources] == [
        ("gsm8k", "none_cot"),
        ("gsm8k", "detailed_cot"),
    ]
    for source in sources:
        outputs = [s.output for s in read_samples(source)]
        assert outputs == [r["output"] for r in halves[source.response_type]]


def test_saved_datasets_in_the_papers_layout_are_response_types(tmp_path):
    write_saved(tmp_path / "math" / "gsm8k_no_cot", RECORDS)
    write_saved(tmp_path / "math" / "gsm8k_with_cot", RECORDS)
    write_saved(tmp_path / "math_wrong_answer_shuffle" / "gsm8k_no_cot", RECORDS)
    names = [(s.dataset, s.response_type) for s in discover_sources(tmp_path / "math")]
    assert names == [
        ("gsm8k", "none_cot"),
        ("gsm8k", "none_cot_irrelevant"),
        ("gsm8k", "simplified_cot"),
    ]


def test_the_same_saved_data_in_two_places_has_one_hash_and_a_change_is_seen(tmp_path):
    first = write_saved(tmp_path / "a" / "data", RECORDS)
    second = shutil.copytree(first, tmp_path / "b" / "data")
    (second / "state.json").write_text(
        (second / "state.json").read_text().replace('"_fingerprint"', '"_fingerprint_was"')
    )  # its own bookkeeping differs; the data does not
    assert file_sha256(first) == file_sha256(second)
    assert count_samples(only_source(first)) == len(RECORDS)
    shutil.rmtree(first)
    write_saved(first, RECORDS[:2])
    assert file_sha256(first) != file_sha256(second)
    assert count_samples(only_source(first)) == 2  # not the count cached for the old data


@pytest.mark.parametrize("writer", [write_jsonl, write_parquet], ids=["jsonl", "parquet"])
def test_a_chat_records_response_is_its_last_assistant_turn(tmp_path, writer):
    name = "data.jsonl" if writer is write_jsonl else "data.parquet"
    path = writer(tmp_path / "chats" / name, CHATS)
    samples = read_samples(only_source(path))
    assert [s.output for s in samples] == ["2", "2, 3", "2, 3, 5", "2, 3, 5, 7"]
    first = samples[0]
    assert first.turns == (
        ("system", "Be brief."),
        ("user", "Name 0 primes."),
        ("assistant", "Which ones?"),
        ("user", "Any."),
    )
    assert first.prompt == "Be brief.\nName 0 primes.\nWhich ones?\nAny."
    assert [s.numeric_fields for s in samples] == [{"score": float(i)} for i in range(4)]


def test_sharegpt_speakers_are_the_templates_roles(tmp_path):
    samples = read_samples(only_source(write_jsonl(tmp_path / "c" / "data.jsonl", SHAREGPT)))
    assert [(s.turns, s.output) for s in samples] == [
        ((("user", f"hi {i}"),), "hello") for i in range(3)
    ]


def test_instruct_mode_writes_the_turns_through_the_chat_template():
    (sample,) = read_samples_of(CHATS[:1])
    tokenizer = make_tokenizer()
    settings = ComputeSettings(mode="instruct", system_prompt="ignored: the record has its own")
    turns = [{"role": role, "content": text} for role, text in sample.turns]
    expected = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    assert prompt_text(sample, tokenizer, settings) == expected
    encoded = encode_sample(sample, tokenizer, settings)
    whole = tokenizer(expected + sample.output, add_special_tokens=False)["input_ids"]
    assert encoded.input_ids == whole
    assert encoded.response_start == len(tokenizer(expected, add_special_tokens=False)["input_ids"])


def read_samples_of(records: list[dict]):
    with tempfile.TemporaryDirectory() as folder:
        return read_samples(only_source(write_jsonl(Path(folder) / "c" / "d.jsonl", records)))


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"messages": "hi"}, "field 'messages' must be a list of turns, found a string"),
        ({"messages": [{"role": "user", "content": "q"}]}, "no assistant turn in 'messages'"),
        ({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
         "turn 1 of 'messages': 'content' must be text (or a list of text parts), found nothing"),
        ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": " "}]},
         "empty output (turn 2 of 'conversations')"),
        ({"messages": [7, {"role": "assistant", "content": "a"}]},
         "turn 1 of 'messages': expected an object with a role and its text, found a number"),
        ({"question": "q", "answer": "a"}, "a chat record holds 'messages' or 'conversations'"),
    ],
)  # fmt: skip
def test_a_bad_chat_record_names_the_turn(tmp_path, record, problem):
    path = write_jsonl(tmp_path / "c" / "d.jsonl", [CHATS[0], record])
    with pytest.raises(DatasetError) as caught:
        read_samples(only_source(path))
    assert str(caught.value).startswith(f"{path}:2: "), caught.value
    assert problem in str(caught.value)


@pytest.mark.slow
def test_a_chat_parquet_dataset_is_measured_in_instruct_mode(tmp_path, capsys):
    path = write_parquet(tmp_path / "chats" / "data.parquet", CHATS)
    db = tmp_path / "c.duckdb"
    argv = ["compute", "--model", "tiny", "--dataset", str(path), "--mode", "instruct",
            "--max-length", "64", "--db", str(db), "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["runs", "--db", str(db), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert (run["dataset"], run["type"], run["mode"]) == ("chats", "data", "instruct")
    assert (run["samples"], run["skipped"], run["status"]) == (len(CHATS), 0, "complete")


def test_without_the_datasets_library_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    path = write_parquet(tmp_path / "d" / "data.parquet", RECORDS)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed
    with pytest.raises(DatasetError) as caught:
        read_samples(only_source(path))
    assert "pip install 'layerscope[datasets]'" in str(caught.value)
