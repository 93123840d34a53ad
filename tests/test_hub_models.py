"""Hub models: downloaded when not cached (with progress), offline, revisions, wrong ids.

No hub is reachable here, so a stand-in serves the few routes huggingface_hub's
``snapshot_download`` uses (model info, the file tree, each file with its commit and ETag,
byte ranges for resuming) on 127.0.0.1; huggingface_hub is pointed at it the way
``HF_ENDPOINT`` would. The stand-in records every request, so the tests also show what must
not touch the network (checking a model as the user types, a cached model, offline runs).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from modelkit import make_model, make_tokenizer

from layerscope.analysis.base.records import LoadStage
from layerscope.analysis.models.identity import model_identity
from layerscope.analysis.models.inspection import inspect_model_path, list_cached_models
from layerscope.analysis.models.loading import describe_targets, load_model
from layerscope.analysis.models.sources import NOT_CACHED, ModelLoadError
from layerscope.analysis.runs.planning import RunRequest, plan
from layerscope.analysis.runs.runner import execute
from layerscope.app.settings_presentation import option_name

MAIN = "1" * 40
TAGGED = "2" * 40


class FakeHub:
    """Repositories by id: ``{"refs": {"main": commit, ...}, "commits": {commit: files}}``."""

    def __init__(self, repos: dict[str, dict[str, Any]]) -> None:
        self.repos = repos
        self.requests: list[str] = []
        self.cuts: dict[str, int] = {}  # file name -> how many more GETs to break off midway
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def model_requests(self) -> list[str]:
        return [r for r in self.requests if "/models/" in r or "/resolve/" in r]

    @staticmethod
    def _reply(handler: Any, status: int, payload: Any, error: str = "") -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        if error:
            handler.send_header("X-Error-Code", error)
            handler.send_header("X-Error-Message", error)
        handler.end_headers()
        handler.wfile.write(data)

    def answer(self, handler: Any, body: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append(f"{handler.command} {path}")
        info = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
        tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        match = info or tree or resolve
        if match is None:
            return self._reply(handler, 404, {"error": "no such route"})
        repo = self.repos.get(match.group(1))
        if repo is None:
            return self._reply(handler, 401, {"error": "Repository not found"}, "RepoNotFound")
        revision = match.group(2)
        commit = repo["refs"].get(revision, revision if revision in repo["commits"] else None)
        if commit is None:
            return self._reply(handler, 404, {"error": "Invalid rev id"}, "RevisionNotFound")
        files: dict[str, bytes] = repo["commits"][commit]
        if info:
            siblings = [{"rfilename": name} for name in files]
            return self._reply(
                handler, 200, {"id": match.group(1), "sha": commit, "siblings": siblings}
            )
        if tree:
            entries = [
                {"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                for n, b in files.items()
            ]
            return self._reply(handler, 200, entries)
        name = match.group(3)
        if name not in files:
            return self._reply(handler, 404, {"error": "Entry not found"}, "EntryNotFound")
        self._send_file(handler, commit, name, files[name], body)

    def _send_file(self, handler: Any, commit: str, name: str, data: bytes, body: bool) -> None:
        asked = handler.headers.get("Range")
        start = int(re.match(r"bytes=(\d+)-", asked).group(1)) if asked else 0
        part = data[start:]
        handler.send_response(206 if asked else 200)
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        handler.send_header("Content-Length", str(len(part)))
        if asked:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if not body:
            return
        if self.cuts.get(name):
            self.cuts[name] -= 1
            handler.wfile.write(part[: len(part) // 3])  # then the connection drops
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        handler.wfile.write(part)


def _model_files(tmp: Path, seed: int) -> dict[str, bytes]:
    folder = tmp / f"model-{seed}"
    make_model("llama", seed=seed).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("hub-files")
    return {
        "org/llama": {
            "refs": {"main": MAIN, "v1": TAGGED},
            "commits": {MAIN: _model_files(tmp, 0), TAGGED: _model_files(tmp, 1)},
        }
    }


@pytest.fixture
def hub(repos, tmp_path, monkeypatch) -> Iterator[FakeHub]:
    """The stand-in, an empty local cache, downloads on, and a results cache of this test."""
    from huggingface_hub import constants

    stand_in = FakeHub(repos)
    stand_in.thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", stand_in.endpoint)  # what HF_ENDPOINT sets
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        stand_in.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("LAYERSCOPE_DB", str(tmp_path / "results.duckdb"))
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


def test_uncached_hub_id_is_checked_without_the_network_then_downloaded(hub):
    check = inspect_model_path("org/llama")
    assert check.ok and check.download and check.message == NOT_CACHED
    with pytest.raises(ModelLoadError, match=f"'org/llama': {NOT_CACHED}"):
        model_identity("org/llama")  # keying needs the files: the plan says it will download
    assert hub.model_requests() == []
    stages: list[LoadStage] = []
    loaded = load_model("org/llama", dtype="float64", on_stage=stages.append)
    assert loaded.identity["revision"] == MAIN  # the key holds the resolved commit
    assert loaded.name == "org/llama" and loaded.num_layers == 3
    downloads = [s for s in stages if s.step == "download"]
    assert downloads[0].description == "downloading org/llama from the Hugging Face hub"
    assert len(downloads) > 1, "huggingface_hub's progress bars reach the stage hook"
    assert stages.index(downloads[-1]) < [s.step for s in stages].index("tokenizer")
    # Now cached: found, listed and loaded again without a single request.
    hub.requests.clear()
    assert inspect_model_path("org/llama").model_type == "llama"
    assert [m.name for m in list_cached_models()] == ["org/llama"]
    assert load_model("org/llama").identity == loaded.identity
    assert hub.model_requests() == []


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_offline_gives_one_line_saying_how_to_get_the_model(hub, monkeypatch, how):
    offline = how == "flag"
    if not offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check = inspect_model_path("org/llama", offline=offline)
    assert not check.ok and not check.download
    with pytest.raises(ModelLoadError) as raised:
        load_model("org/llama", offline=offline)
    message = str(raised.value)
    assert message == check.message and "\n" not in message
    assert "not in the local Hugging Face cache" in message
    line = raised.value.describe(option_name)
    assert "`hf download org/llama`" in line and "--offline or HF_HUB_OFFLINE=1" in line
    assert hub.model_requests() == []


def test_a_wrong_id_or_revision_is_one_line(hub):
    with pytest.raises(ModelLoadError, match=r"^model 'org/nothing': no such model on the hub"):
        load_model("org/nothing")
    with pytest.raises(ModelLoadError, match=r"^model 'org/llama': the hub has no revision 'v9'"):
        load_model("org/llama", revision="v9")
    assert inspect_model_path("org/nothing").download  # typing it never asks the hub


def test_an_interrupted_download_fails_in_one_line_and_resumes_next_time(hub):
    hub.cuts["model.safetensors"] = 10  # more than huggingface_hub's own retries
    with pytest.raises(ModelLoadError) as raised:
        load_model("org/llama")
    message = str(raised.value)
    assert message.startswith("model 'org/llama': the download failed (")
    assert "run again to resume it" in message and "\n" not in message
    # The snapshot holds the finished files but no weights: not mistaken for a cached model.
    snapshot = Path(hub_cache_dir()) / "models--org--llama" / "snapshots" / MAIN
    assert (snapshot / "config.json").is_file() and not (snapshot / "model.safetensors").exists()
    assert inspect_model_path("org/llama").download
    hub.cuts.clear()
    assert load_model("org/llama").identity["revision"] == MAIN


def test_revision_selects_a_tag_keys_its_commit_and_works_offline_once_cached(hub):
    tagged = load_model("org/llama", revision="v1")
    assert tagged.identity["revision"] == TAGGED
    hub.requests.clear()
    # Offline: the cached snapshot of that revision; main was never fetched.
    assert model_identity("org/llama", "v1", offline=True) == tagged.identity
    assert not inspect_model_path("org/llama", offline=True).ok
    main = load_model("org/llama")
    assert main.identity["revision"] == MAIN
    assert main.identity["weights_fingerprint"] != tagged.identity["weights_fingerprint"]
    with pytest.raises(ModelLoadError, match="revision v1: model 'tiny' is a local folder"):
        inspect_model_path("tiny", revision="v1").ok or load_model("tiny", revision="v1")


def test_a_run_downloads_then_keys_by_commit(hub, tmp_path):
    values = {"limit": 1, "device": "cpu", "dtype": "float64", "batch_size": 1}
    request = RunRequest.from_settings("org/llama", "math", ["none_cot"], values)
    db = tmp_path / "runs.duckdb"
    with pytest.raises(ModelLoadError, match=NOT_CACHED):
        plan(request, db)  # the explorer's plan line, before the run starts
    stages: list[LoadStage] = []
    progress = list(execute(request, db, on_stage=stages.append))
    assert progress[-1].status == "complete"
    assert stages[0].step == "download"
    (planned,) = plan(request, db)
    assert planned.run_id == progress[-1].run_id and planned.missing == 0
    tagged = RunRequest.from_settings(
        "org/llama", "math", ["none_cot"], {**values, "revision": "v1"}
    )
    hub.requests.clear()
    offline = RunRequest.from_settings(
        "org/llama", "math", ["none_cot"], {**values, "revision": "v1", "offline": True}
    )
    with pytest.raises(ModelLoadError, match="hf download org/llama --revision v1"):
        plan(offline, db)
    assert hub.model_requests() == []
    list(execute(tagged, db))
    (other,) = plan(tagged, db)
    assert other.run_id != planned.run_id  # another commit, another run


def test_describe_fetches_only_the_config(hub):
    targets = describe_targets("org/llama")
    assert [t.projection for t in targets[:4]] == ["q", "k", "v", "o"]
    fetched = {r.rsplit("/", 1)[-1] for r in hub.model_requests() if "/resolve/" in r}
    assert fetched == {"config.json"}
    assert inspect_model_path("org/llama").download  # a config alone is not a cached model


def hub_cache_dir() -> str:
    from layerscope.analysis.models.sources import huggingface_cache_dir

    return str(huggingface_cache_dir())


async def test_the_explorer_model_field_accepts_an_uncached_hub_id_without_asking_the_hub(
    hub, monkeypatch, tmp_path
):
    from test_tui_pickers import check_line, settle, type_into

    from layerscope.app.tui.app import LayerscopeApp
    from layerscope.app.tui.widgets.setup.model_picker import ModelPicker
    from layerscope.app.tui.widgets.setup.settings_form import SettingsForm

    monkeypatch.setenv("LAYERSCOPE_STATE", str(tmp_path / "state.json"))
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await type_into(app, pilot, "#model-path", "org/llama")
        assert NOT_CACHED in check_line(app, "#model-check")
        picker = app.query_one(ModelPicker)
        assert picker.ok and picker.spec == "org/llama" and picker.problem is None
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        await type_into(app, pilot, "#model-path", "org/llama2")
        assert "downloads are off" in check_line(app, "#model-check")
        assert picker.problem is not None
        # The Setup form offers the device map and the memory limits, checked as typed.
        form = app.query_one(SettingsForm)
        assert form.read()["device_map"] == "none" and form.read()["max_memory"] is None
        app.query_one("#setting-max-memory").value = "0:20GiB"
        with pytest.raises(ValueError, match=r"^max memory: expected DEVICE=SIZE"):
            form.read()
    assert hub.model_requests() == []
