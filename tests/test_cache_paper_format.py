"""The paper's per-sample JSON-lines format: import, export and their round trip."""

from __future__ import annotations

import json
import math

import pytest
from cache_helpers import fill_run, paper_matrices

from layerscope.analysis.base.records import MATRIX_STATISTICS
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.interchange.paper_export import write_paper_jsonl
from layerscope.analysis.interchange.paper_ingest import import_paper_jsonl
from layerscope.analysis.interchange.paper_schema import PaperFormatError, parse_parameter_name


@pytest.fixture
def cache(tmp_path):
    return ResultsCache(tmp_path / "c.duckdb", lock_timeout=5)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model.layers.0.self_attn.q_proj.weight", (0, "q")),
        ("model.layers.27.self_attn.o_proj.weight", (27, "o")),
        ("model.layers.3.mlp.down_proj.weight", (3, "down")),
        ("transformer.h.5.attn.c_proj.weight", (5, "o")),
        ("transformer.h.5.mlp.c_proj.weight", (5, "down")),
        ("transformer.h.2.attn.c_attn.weight[k]", (2, "k")),
        ("gpt_neox.layers.1.attention.dense.weight", (1, "o")),
        ("model.decoder.layers.4.attn.v_proj.weight", (4, "v")),
        ("model.embed_tokens.weight", None),
        ("model.layers.0.input_layernorm.weight", None),
        ("lm_head.weight", None),
    ],
)
def test_parameter_names(name, expected):
    assert parse_parameter_name(name) == expected


def paper_line(loss, layers=2, spectrum=False, **extra):
    record = {"instruction": "Q?", "output": "A.", "loss": loss, **extra}
    record.update(paper_matrices(layers, 0.0, [4.0, 3.0, 0.0] if spectrum else None))
    return json.dumps(record)


def test_import_maps_the_papers_names_and_derives_what_it_can(cache, tmp_path):
    path = tmp_path / "paper.jsonl"
    path.write_text(paper_line(2.0, spectrum=True) + "\n\n" + paper_line(4.0, spectrum=True) + "\n")
    info = import_paper_jsonl(
        cache, path, model="llama3_8b", dataset="gsm8k", response_type="detailed_cot"
    ).info
    assert (info.status, info.samples_done, info.layers) == ("complete", 2, 2)
    assert info.settings["source"] == "import"
    [targets_q] = [t for t in cache.targets(info.id) if (t.layer, t.projection) == (1, "q")]
    assert targets_q.parameter == "model.layers.1.self_attn.q_proj.weight"
    values = {m: cache.curves([info.id], m, ["k"])[0].mean for m in MATRIX_STATISTICS}
    assert values["nuclear_norm"] == [7.0, 8.0]
    assert values["sigma_max"] == [4.0, 4.0]
    assert values["mean"] == [pytest.approx(0.01)] * 2
    assert values["sigma1_ratio"] == pytest.approx([4 / 7, 4 / 8])
    # nuclear_per_loss: mean over samples of S_sum / loss
    assert values["nuclear_per_loss"] == pytest.approx([(7 / 2 + 7 / 4) / 2, (8 / 2 + 8 / 4) / 2])
    assert values["stable_rank"] == pytest.approx([25 / 16] * 2)
    p = [4 / 7, 3 / 7]
    assert values["effective_rank"][0] == pytest.approx(math.exp(-sum(x * math.log(x) for x in p)))
    [sample] = cache.samples(info.id, sort_by="loss", limit=1)
    assert (sample.loss, sample.response_tokens, sample.instruction) == (4.0, -1, "Q?")
    assert cache.sample_spectra(info.id, 0, "q")[0] == [4.0, 3.0, 0.0]
    # no token counts: length control leaves imported samples out
    assert cache.curves([info.id], "nuclear_norm", ["q"], response_tokens=(0, 10**6)) == []
    # importing the same file again adds nothing
    again = import_paper_jsonl(
        cache, path, model="llama3_8b", dataset="gsm8k", response_type="detailed_cot"
    ).info
    assert again.id == info.id and again.samples_done == 2 and len(cache.runs()) == 1


def test_without_spectra_effective_rank_stays_empty(cache, tmp_path):
    path = tmp_path / "paper.jsonl"
    path.write_text(paper_line(1.0) + "\n")
    info = import_paper_jsonl(cache, path, model="m", dataset="d", response_type="t").info
    [q] = cache.curves([info.id], "effective_rank", ["q"])
    assert q.count == [0, 0] and all(math.isnan(v) for v in q.mean)


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ("{not json", "2: not valid JSON"),
        ('{"instruction": "x", "output": "y"}', '2: no "loss"'),
        ('{"loss": "high"}', "2: loss must be a number"),
        ('{"loss": 1.0, "model.embed_tokens.weight": {}}', "2: no gradient statistics"),
        (
            '{"loss": 1.0, "model.layers.0.self_attn.q_proj.weight": {"S_max": 1}}',
            "2: model.layers.0.self_attn.q_proj.weight has no S_sum",
        ),
        (paper_line(1.0, layers=1), "2: measures 4 matrices, the first line 8"),
        ("[1, 2]", "2: expected a JSON object"),
    ],
)
def test_malformed_lines_name_file_and_line_and_store_nothing(
    cache, tmp_path, second_line, message
):
    path = tmp_path / "bad.jsonl"
    path.write_text(paper_line(1.0) + "\n" + second_line + "\n")
    with pytest.raises(PaperFormatError) as caught:
        import_paper_jsonl(cache, path, model="m", dataset="d", response_type="t")
    assert str(caught.value).startswith(f"{path}:")
    assert message in str(caught.value)
    assert cache.runs() == []


def test_empty_and_missing_files(cache, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(PaperFormatError, match="no samples"):
        import_paper_jsonl(cache, empty, model="m", dataset="d", response_type="t")
    with pytest.raises(PaperFormatError, match="no such file"):
        import_paper_jsonl(
            cache, tmp_path / "nope.jsonl", model="m", dataset="d", response_type="t"
        )


def test_import_of_an_export_gives_identical_curves(cache, tmp_path):
    original = fill_run(cache, "orig", 6, layers=3, spectra=True)
    path = tmp_path / "export.jsonl"
    assert write_paper_jsonl(cache, original, path) == 6
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first["model.layers.0.self_attn.q_proj.weight"]) == {
        "M_mean", "M_max", "M_min", "frobenius_norm", "S_sum", "S_max", "S_min", "S_list"
    }  # fmt: skip
    assert first["layerscope"] == {"index": 0, "prompt_tokens": 10, "response_tokens": 20}
    copy = import_paper_jsonl(
        cache, path, model="synthetic", dataset="math", response_type="none_cot"
    ).info.id
    assert copy != original
    exact = ("mean", "max", "min", "frobenius_norm", "nuclear_norm", "sigma_max", "sigma_min")
    for metric in (*MATRIX_STATISTICS, "loss"):
        for response_tokens in (None, (21, 24)):
            a = cache.curves([original], metric, response_tokens=response_tokens)
            b = cache.curves([copy], metric, response_tokens=response_tokens)
            assert len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                assert (x.projection, x.layers, x.count) == (y.projection, y.layers, y.count)
                rel = 1e-12 if metric in exact or metric == "loss" else 1e-6
                assert x.mean == pytest.approx(y.mean, rel=rel), metric
    assert cache.sample_spectra(copy, 2, "o") == cache.sample_spectra(original, 2, "o")
    assert [s.instruction for s in cache.samples(copy)] == [
        s.instruction for s in cache.samples(original)
    ]
