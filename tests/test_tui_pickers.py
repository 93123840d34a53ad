"""Picking a model and a dataset: lists, inline validation as you type, modes, preselection.

All of this reads files only, so the tests build small model folders, a fake Hugging Face cache
and dataset files in tmp_path; nothing is loaded and torch is not needed.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from textual.worker import WorkerCancelled

from layerscope.app.tui.app import LayerscopeApp
from layerscope.app.tui.widgets.runs.runs_browser import type_sort_key
from layerscope.app.tui.widgets.setup.dataset_picker import DatasetPicker, run_count
from layerscope.app.tui.widgets.setup.model_picker import ModelPicker, human_size

SIZE = (100, 32)


def model_folder(path: Path, *, chat: bool, architectures: list[str] | None = None) -> Path:
    path.mkdir(parents=True)
    config = {
        "architectures": architectures or ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": 28,
    }
    (path / "config.json").write_text(json.dumps(config))
    tokenizer = {"chat_template": "{{ messages }}"} if chat else {}
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    (path / "model.safetensors").write_bytes(b"\0" * 3_100_000)
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAYERSCOPE_DB", str(tmp_path / "results.duckdb"))
    monkeypatch.setenv("LAYERSCOPE_STATE", str(tmp_path / "state.json"))
    hub = tmp_path / "hf"
    snapshot = hub / "models--acme--Qwen-Mini" / "snapshots" / "abc123"
    model_folder(snapshot, chat=True)
    (hub / "models--acme--Qwen-Mini" / "refs").mkdir()
    (hub / "models--acme--Qwen-Mini" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    return tmp_path


async def settle(app: LayerscopeApp, pilot) -> None:
    for _ in range(3):
        for worker in list(app.workers):
            with contextlib.suppress(WorkerCancelled):
                await worker.wait()
        await pilot.pause()


async def type_into(app: LayerscopeApp, pilot, selector: str, text: str) -> None:
    field = app.query_one(selector)
    field.focus()
    await pilot.press("ctrl+a", "ctrl+k")
    field.insert_text_at_cursor(text)  # what pasting a path does
    await settle(app, pilot)


def check_line(app: LayerscopeApp, selector: str) -> str:
    return str(app.query_one(selector).render())


async def test_model_list_has_the_builtin_the_hf_cache_and_recent_models(env: Path):
    recent = model_folder(env / "recent-model", chat=False)
    (env / "state.json").write_text(json.dumps({"recent_models": [str(recent)]}))
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        picker = app.query_one(ModelPicker)
        entries = dict(picker._entries)
        assert next(iter(entries)) == "tiny" and entries["tiny"].startswith("built-in")
        assert entries[str(recent)] == "recent"
        assert entries["acme/Qwen-Mini"] == "HF cache, llama, 28 layers, 3.1 MB"
        # Moving the cursor onto a model checks it and says so inline.
        options = app.query_one("#model-list")
        options.focus()
        options.highlighted = list(entries).index("acme/Qwen-Mini")
        await settle(app, pilot)
        assert picker.spec == "acme/Qwen-Mini" and picker.ok
        assert "28 layers" in check_line(app, "#model-check")
        assert not app.query_one("#mode-instruct").disabled


async def test_the_path_field_says_what_is_wrong_as_you_type(env: Path):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        a_file = env / "weights.bin"
        a_file.write_bytes(b"x")
        await type_into(app, pilot, "#model-path", str(a_file))
        assert "is a file, not a model folder" in check_line(app, "#model-check")
        (env / "empty").mkdir()
        await type_into(app, pilot, "#model-path", str(env / "empty"))
        assert "no config.json" in check_line(app, "#model-check")
        model_folder(env / "bert", chat=False, architectures=["BertForMaskedLM"])
        await type_into(app, pilot, "#model-path", str(env / "bert"))
        assert "not a causal LM (BertForMaskedLM)" in check_line(app, "#model-check")
        await type_into(app, pilot, "#model-path", str(env / "nowhere"))
        assert "no such folder" in check_line(app, "#model-check")
        assert app.query_one(ModelPicker).spec != str(env / "nowhere")
        # A valid folder becomes the chosen model; without a chat template, no instruct mode.
        good = model_folder(env / "base-only", chat=False)
        await type_into(app, pilot, "#model-path", str(good))
        picker = app.query_one(ModelPicker)
        assert picker.spec == str(good) and picker.ok
        assert app.query_one("#mode-instruct").disabled
        assert picker.mode == "base"


async def test_instruct_mode_falls_back_to_base_for_a_model_without_chat_template(env: Path):
    chat = model_folder(env / "chat", chat=True)
    plain = model_folder(env / "plain", chat=False)
    app = LayerscopeApp(model=str(chat), poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        picker = app.query_one(ModelPicker)
        assert picker.spec == str(chat)
        app.query_one("#mode-instruct").value = True
        await settle(app, pilot)
        assert picker.mode == "instruct"
        await type_into(app, pilot, "#model-path", str(plain))
        assert picker.mode == "base" and app.query_one("#mode-instruct").disabled


async def test_dataset_path_field_validates_files_folders_and_manifests(env: Path):
    data = env / "mydata.json"
    data.write_text(json.dumps([{"instruction": "Q?", "output": "A."}] * 5))
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        picker = app.query_one(DatasetPicker)
        assert picker.dataset == "math"
        assert [s.response_type for s in picker.sources][:2] == ["none_cot", "none_cot_irrelevant"]
        prompt = str(app.query_one("#type-list").get_option("type-none_cot").prompt)
        assert "40" in prompt  # sample count
        await type_into(app, pilot, "#dataset-path", str(env / "missing.json"))
        assert "no such file or folder" in check_line(app, "#dataset-check")
        broken = env / "broken.json"
        broken.write_text('[{"instruction": "Q?"}]')
        await type_into(app, pilot, "#dataset-path", str(broken))
        assert str(broken) in check_line(app, "#dataset-check")
        assert picker.dataset == "math"  # a bad path does not replace the dataset
        await type_into(app, pilot, "#dataset-path", str(data))
        assert picker.dataset == str(data)
        assert [s.response_type for s in picker.sources] == ["mydata"]
        assert app.query_one("#type-list").selected == ["mydata"]
        assert "1 response types, 5 samples" in check_line(app, "#dataset-check")
        assert "checked 1: mydata (5 samples)" in check_line(app, "#type-summary")
        # The samples setting decides how many run, and the summary follows it.
        await type_into(app, pilot, "#setting-samples", "2")
        assert "checked 1: mydata (1 type × 2 = 2 samples of 5)" in check_line(app, "#type-summary")
        await type_into(app, pilot, "#setting-samples", "")
        assert "checked 1: mydata (5 samples)" in check_line(app, "#type-summary")


async def test_command_line_choices_are_preselected(env: Path):
    chat = model_folder(env / "chat", chat=True)
    app = LayerscopeApp(model=str(chat), dataset="knowledge", poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.query_one(ModelPicker).spec == str(chat)
        assert app.query_one("#model-path").value == str(chat)
        picker = app.query_one(DatasetPicker)
        assert picker.dataset == "knowledge"
        assert app.query_one("#type-list").selected  # something checked to run at once


async def test_the_command_palette_lists_the_actions(env: Path):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for wanted in ("Run", "Cancel run", "Export", "Help", "Go to Chart", "Chart: log scale"):
            assert wanted in titles
        assert "Chart statistic: effective_rank" in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert type(app.screen).__name__ == "CommandPalette"


async def test_no_color_tells_runs_apart_by_marker(env: Path, monkeypatch: pytest.MonkeyPatch):
    from tui_synthetic import fill_cache

    from layerscope.app.tui.widgets.chart.layer_chart import LayerChart

    ids = fill_cache(env / "results.duckdb")
    monkeypatch.setenv("NO_COLOR", "1")
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.set_comparison([ids["none_cot"], ids["detailed_cot"]])
        await pilot.press("3")
        await settle(app, pilot)
        chart = app.query_one(LayerChart)
        assert len({s.marker for s in chart.series}) == 2
        legend = chart.header(100).plain
        assert "•• detailed_cot" in legend


def test_small_helpers():
    assert human_size(3_100_000) == "3.1 MB" and human_size(0) == ""
    assert run_count([40, 40, 40], 8) == "3 types × 8 = 24 samples of 120"
    assert run_count([40, 5], 8) == "13 samples of 45, at most 8 per type"
    assert run_count([40, 5], None) == "45 samples" and run_count([4, 5], 8) == "9 samples"
    ordered = sorted(
        ["detailed_cot", "none_cot_irrelevant", "zeta", "none_cot", "simplified_cot"],
        key=type_sort_key,
    )
    assert ordered == ["none_cot", "none_cot_irrelevant", "simplified_cot", "detailed_cot", "zeta"]


async def test_a_path_that_is_no_dataset_lists_no_types_and_a_fixed_one_gets_them_back(env: Path):
    """The type list never shows another dataset's types under a field that shows an error;
    the checks the user made come back when the typo is fixed."""
    folder = env / "paper"
    folder.mkdir()
    for name in ("none_cot", "detailed_cot", "simplified_cot"):
        (folder / f"{name}.json").write_text(json.dumps([{"instruction": "Q?", "output": "A."}]))
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await type_into(app, pilot, "#dataset-path", str(folder))
        types = app.query_one("#type-list")
        assert types.option_count == 3
        types.deselect_all()
        types.select("simplified_cot")
        await settle(app, pilot)
        await type_into(app, pilot, "#dataset-path", str(folder) + "x")
        assert "no such file or folder" in check_line(app, "#dataset-check")
        assert types.option_count == 0
        assert "checked" not in check_line(app, "#type-summary")
        await type_into(app, pilot, "#dataset-path", str(folder))
        assert types.option_count == 3
        assert types.selected == ["simplified_cot"]


def two_datasets_folder(root: Path) -> Path:
    """A folder in the paper's layout holding two datasets (as the paper's cot_500 holds gsm8k
    and creak), each with the same response types."""
    folder = root / "cot_500"
    folder.mkdir()
    for dataset, count in (("gsm8k_train", 3), ("creak_train", 2)):
        for suffix in ("no_cot", "with_cot"):
            records = [{"instruction": f"{dataset} Q{i}?", "output": "A."} for i in range(count)]
            (folder / f"{dataset}_{suffix}.json").write_text(json.dumps(records))
    return folder


async def test_a_folder_of_several_datasets_lists_each_as_dataset_slash_type(env: Path):
    """Once a DuplicateID crash at start (each dataset has a none_cot), and a crash at every
    start after, since the folder was remembered: every type is listed once per dataset."""
    folder = two_datasets_folder(env)
    app = LayerscopeApp(dataset=str(folder), poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        picker = app.query_one(DatasetPicker)
        assert picker.dataset == str(folder)
        listed = app.query_one("#type-list")
        names = [listed.get_option_at_index(i).value for i in range(listed.option_count)]
        assert names == [
            "creak_train/none_cot",
            "creak_train/simplified_cot",
            "gsm8k_train/none_cot",
            "gsm8k_train/simplified_cot",
        ]
        # the paper's types of the first dataset are checked; each name counts its own file
        assert picker.types == ["creak_train/none_cot", "creak_train/simplified_cot"]
        assert "checked 2: creak_train/none_cot, creak_train/simplified_cot (4 samples)" in (
            check_line(app, "#type-summary")
        )
        prompt = str(app.query_one("#type-list").get_option(_gsm8k_option_id()).prompt)
        assert "3" in prompt


def _gsm8k_option_id() -> str:
    from layerscope.app.tui.widgets.setup.dataset_picker import _option_id

    return _option_id("gsm8k_train/none_cot")


async def test_a_settings_field_never_turns_typed_text_into_a_number(env: Path):
    """A path typed while the seed field had focus silently became 5008 (an integer input drops
    what is not a digit). The text stays as typed, the field is marked invalid and says why
    once, and Run (ctrl+r, from the field itself) refuses, naming the field."""
    from textual.widgets import Input

    from layerscope.analysis.base.settings import setting
    from layerscope.app.settings_presentation import form_id

    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        selector = f"#{form_id(setting('init_seed'))}"
        await type_into(app, pilot, selector, "/data/run5008")
        field = app.query_one(selector, Input)
        assert field.value == "/data/run5008"
        assert field.has_class("-invalid")
        said = [str(n.message) for n in app._notifications]
        assert len([m for m in said if "seed" in m]) == 1, said
        # in a text field r is a letter; ctrl+r runs from there
        assert app.focused is field
        before = len(app._notifications)
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert not app.run_controller.computing
        refused = [str(n.message) for n in list(app._notifications)[before:]]
        assert any("seed" in message for message in refused), refused
        # a number again: valid, and nothing more is said
        await type_into(app, pilot, selector, "7")
        assert field.value == "7" and not field.has_class("-invalid")


async def test_tab_goes_from_the_model_to_the_dataset_then_the_settings(env: Path):
    """Tab reached the dataset field after 15 presses (every settings field came first)."""
    parts = ("model-picker", "dataset-picker", "settings-form", "run-button")

    def part(widget) -> str | None:
        return next((a.id for a in widget.ancestors_with_self if a.id in parts), None)

    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.query_one("#model-list").focus()
        visited = []
        for _ in range(25):
            await pilot.press("tab")
            assert app.focused is not None
            visited.append(app.focused)
            if app.focused.id == "run-button":
                break
        ids = [widget.id for widget in visited]
        assert "dataset-list" in ids[:3], ids  # after the model's path field and its mode
        # each part whole, in this order: model, dataset (and its types), settings, Run
        assert list(dict.fromkeys(part(w) for w in visited)) == list(parts), ids
        await pilot.press("shift+tab")
        assert app.focused is not None and part(app.focused) == "settings-form"
