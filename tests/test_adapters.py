"""`--adapter`: a PEFT/LoRA adapter, made here from a `from_config` model, measured as part of
the model. The adapted model's numbers are those of a model whose weights are the merged ones;
the adapter's fingerprint is part of the run key; a wrong adapter is one line naming the option."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

peft = pytest.importorskip("peft")
import torch  # noqa: E402
from modelkit import make_model, make_tokenizer  # noqa: E402
from test_runner import data_file, model_folder, request_for  # noqa: E402, F401 (fixtures)

from layerscope.analysis.base.records import ComputeSettings, Sample  # noqa: E402
from layerscope.analysis.cache import ResultsCache  # noqa: E402
from layerscope.analysis.compute import engine  # noqa: E402
from layerscope.analysis.models.loading import load_model  # noqa: E402
from layerscope.analysis.models.sources import ModelLoadError  # noqa: E402
from layerscope.analysis.runs.runner import execute  # noqa: E402
from layerscope.app import cli  # noqa: E402

SAMPLES = [
    Sample(index=i, instruction=f"What is {i} + {i}?", output=f"It is {2 * i}, as {i} + {i}.")
    for i in range(3)
]


def make_adapter(base_folder, folder, seed=1, target=("q_proj", "v_proj")):
    """A LoRA adapter with non-zero weights (peft's default B = 0 would change nothing)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_folder)
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=list(target), init_lora_weights=False
    )
    peft.get_peft_model(base, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter(model_folder, tmp_path_factory):  # noqa: F811
    return make_adapter(model_folder, tmp_path_factory.mktemp("adapters") / "lora-a")


def measured(loaded):
    settings = ComputeSettings(max_length=64, batch_size=3, cosines=False)
    (batch,) = engine.compute_statistics(loaded, SAMPLES, settings)
    return {
        (r.index, m.layer, m.projection): (m.values["nuclear_norm"], m.values["sigma_max"])
        for r in batch.results
        for m in r.matrices
    }


def test_the_adapted_model_is_measured_as_the_merged_weights(model_folder, adapter, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM

    merged_folder = tmp_path / "merged"
    base = AutoModelForCausalLM.from_pretrained(model_folder)
    peft.PeftModel.from_pretrained(base, adapter).merge_and_unload().save_pretrained(merged_folder)
    make_tokenizer().save_pretrained(merged_folder)

    adapted = load_model(str(model_folder), device="cpu", dtype="float32", adapter=str(adapter))
    assert adapted.name == f"{model_folder}+lora-a"  # a local model is named by its path
    assert adapted.identity["adapter"]["peft_type"] == "LORA"
    assert type(adapted.model.model.layers[0].self_attn.q_proj) is torch.nn.Linear  # merged
    merged = load_model(str(merged_folder), device="cpu", dtype="float32")
    plain = load_model(str(model_folder), device="cpu", dtype="float32")

    with_adapter, reference, without = measured(adapted), measured(merged), measured(plain)
    assert with_adapter.keys() == reference.keys()
    for key, (nuclear, top) in with_adapter.items():
        assert nuclear == pytest.approx(reference[key][0], rel=1e-5), key
        assert top == pytest.approx(reference[key][1], rel=1e-5), key
    changed = [
        key for key in with_adapter if with_adapter[key][0] != pytest.approx(without[key][0])
    ]
    assert changed  # the adapter changed the numbers (else this test could not fail)


def test_the_adapters_fingerprint_is_part_of_the_run_key(
    tmp_path,
    model_folder,  # noqa: F811
    data_file,  # noqa: F811
    adapter,
):
    db = tmp_path / "c.duckdb"
    request = request_for(model_folder, data_file, limit=2)
    list(execute(request, db))
    list(execute(replace(request, adapter=str(adapter)), db))
    runs = {info.model: info.id for info in ResultsCache(db).runs()}
    assert set(runs) == {str(model_folder), f"{model_folder}+lora-a"}

    copy = shutil.copytree(adapter, tmp_path / "elsewhere" / "lora-a")
    again = list(execute(replace(request, adapter=str(copy)), db))
    assert [u.status for u in again] == ["cached"]  # the same adapter in another place

    other = make_adapter(model_folder, tmp_path / "retrained" / "lora-a", seed=2)
    fresh = list(execute(replace(request, adapter=str(other)), db))
    assert fresh[-1].status == "complete"
    assert len(ResultsCache(db).runs()) == 3  # different weights, same name: another run


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda tmp, adapter: tmp / "missing", "no such folder"),
        (lambda tmp, adapter: (tmp / "empty").mkdir() or tmp / "empty",
         "no adapter_config.json in it"),
        (lambda tmp, adapter: shutil.copy(adapter / "adapter_config.json", tmp) and tmp,
         "no adapter weights"),
    ],
)  # fmt: skip
def test_a_wrong_adapter_path_is_one_line_naming_the_option(
    capsys,
    tmp_path,
    model_folder,  # noqa: F811
    data_file,  # noqa: F811
    adapter,
    make,
    fragment,
):
    path = make(tmp_path, adapter)
    argv = ["compute", "--model", model_folder, "--dataset", data_file, "--adapter", path,
            "--db", tmp_path / "c.duckdb", "--quiet"]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("layerscope: error: --adapter ") and fragment in line, line


def test_an_adapter_for_another_model_is_refused(tmp_path, model_folder, adapter):  # noqa: F811
    other = tmp_path / "wider"
    config = make_model("llama").config
    config.hidden_size, config.intermediate_size = 48, 96
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_config(config).save_pretrained(other)
    make_tokenizer().save_pretrained(other)
    with pytest.raises(ModelLoadError, match="does not load onto this model"):
        load_model(str(other), device="cpu", dtype="float32", adapter=str(adapter))
