"""`verifily push` and `output.push_to_hub`, through huggingface_hub's real upload code up to the
HTTP boundary: a local fake of the Hub's API (repo create, README metadata check, preupload,
branch, commit) answers on 127.0.0.1 and huggingface_hub reaches it through ``HF_ENDPOINT``."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
import socket
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from verifily_core.testing import make_sft_rows, train_run, write_jsonl

pytestmark = pytest.mark.slow

TOKEN = "hf_FakePushTokenForTests0123456789"
REPO_PATH = re.compile(r"^/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)$")


class FakeHub:
    """What the fake Hub was asked and holds: every request, repos (visibility, branches, files)
    and commits. ``fail`` set to an HTTP status makes it answer every request with that status."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.repos: dict[str, dict] = {}
        self.commits: list[dict] = []
        self.fail: int | None = None
        self.url = ""

    def reset(self) -> None:
        self.requests.clear()
        self.repos.clear()
        self.commits.clear()
        self.fail = None

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        if self.fail is not None:
            return self.fail, {"error": f"fake hub answers {self.fail}"}
        if method == "POST" and path == "/api/repos/create":
            doc = json.loads(body)
            repo = f"{doc['organization']}/{doc['name']}" if doc.get("organization") else doc["name"]
            if repo in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo}"}
            self.repos[repo] = {"visibility": doc.get("visibility"), "type": doc.get("type"),
                                "branches": {"main"}, "files": {}}
            return 200, {"url": f"{self.url}/{repo}"}
        if method == "POST" and path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        m = REPO_PATH.match(path)
        if method == "POST" and m and m.group(1) in self.repos:
            repo, op, revision = m.group(1), m.group(2), unquote(m.group(3))
            if op == "preupload":
                files = json.loads(body)["files"]
                return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                       for f in files]}
            if op == "branch":
                self.repos[repo]["branches"].add(revision)
                return 200, {}
            if revision not in self.repos[repo]["branches"]:
                return 404, {"error": f"Invalid rev id: {revision}"}
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            files = {line["value"]["path"]: base64.b64decode(line["value"]["content"])
                     for line in lines if line["key"] == "file"}
            assert all(line["key"] in ("header", "file") for line in lines), lines  # everything inline
            oid = hashlib.sha1(body).hexdigest()
            self.repos[repo]["files"].update(files)
            self.commits.append({"repo": repo, "revision": revision, "summary": header["summary"],
                                 "description": header["description"], "files": files, "oid": oid})
            return 200, {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
        return 404, {"error": f"fake hub: no route for {method} {path}"}


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = urlsplit(self.path).path
            hub.requests.append({"method": self.command, "path": path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            status, doc = hub.answer(self.command, path, body)
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def fake_hub():
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hub
    server.shutdown()
    server.server_close()


def _online(mp: pytest.MonkeyPatch, hub: FakeHub, tmp: Path) -> None:
    """Point huggingface_hub at the fake Hub, online, with the token in $HF_TOKEN and a private temp dir."""
    import huggingface_hub.constants

    mp.setenv("HF_ENDPOINT", hub.url)
    mp.setenv("HF_TOKEN", TOKEN)
    mp.setenv("NO_PROXY", "127.0.0.1")
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    tmp.mkdir(parents=True, exist_ok=True)
    mp.setattr(tempfile, "tempdir", str(tmp))


@pytest.fixture
def hub(fake_hub, monkeypatch, tmp_path):
    """The fake Hub, emptied, with huggingface_hub online and pointed at it."""
    fake_hub.reset()
    _online(monkeypatch, fake_hub, tmp_path / "tmp")
    yield fake_hub
    fake_hub.reset()


def _config(root: Path, model: Path, **output) -> dict:
    data = write_jsonl(root / "train.jsonl", make_sft_rows(16, seed=1))
    return {"task": "sft", "base_model": str(model), "data_paths": {"train": str(data)},
            "training": {"max_steps": 2, "batch_size": 8, "max_seq_length": 48},
            "lora": {"r": 4, "alpha": 8}, "eval": {"enabled": False},
            "output": {"dir": str(root / "runs"), **output}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, verifily_tiny_llama_dir, fake_hub):
    """One run trained with ``output.push_to_hub`` to the fake Hub: ``(run dir, what the Hub
    received, its folder, the base model)``; the other tests push this run again."""
    root = tmp_path_factory.mktemp("push")
    fake_hub.reset()
    with pytest.MonkeyPatch.context() as mp:
        _online(mp, fake_hub, root / "tmp")
        cfg = _config(root, verifily_tiny_llama_dir, push_to_hub=True, hub_repo="me/trained")
        run = train_run(cfg, root)
    received = {"repos": json.loads(json.dumps({k: {**v, "branches": sorted(v["branches"]), "files": sorted(v["files"])}
                                                for k, v in fake_hub.repos.items()})),
                "commits": list(fake_hub.commits), "requests": list(fake_hub.requests)}
    fake_hub.reset()
    return run, received, root, verifily_tiny_llama_dir


def _invoke(*args):
    from verifily_core.testing.pytest_plugin import invoke_verifily

    return invoke_verifily(*args)


def _files_holding(folder: Path, needle: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_push_uploads_the_export_folder_privately_as_one_commit(trained, hub, tmp_path):
    run = trained[0]
    res = _invoke("push", "--run", run, "--repo", "me/model")
    assert res.exit_code == 0, res.output
    meta = json.loads((run / "run_meta.json").read_text())

    assert hub.repos["me/model"]["visibility"] == "private" and hub.repos["me/model"]["type"] == "model"
    (commit,) = hub.commits
    assert commit["repo"] == "me/model" and commit["revision"] == "main"
    assert meta["run_id"] in commit["summary"] and meta["hashes"]["reproducibility_hash"] in commit["summary"]

    exported = tmp_path / "exported"
    assert _invoke("export", "--run", run, "--output", exported).exit_code == 0
    local = {p.relative_to(exported).as_posix(): p.read_bytes() for p in exported.rglob("*") if p.is_file()}
    assert sorted(commit["files"]) == sorted(local) and commit["files"] == local
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "verifily_export.json"} <= set(local)
    assert commit["files"]["README.md"] == (run / "adapter" / "README.md").read_bytes()

    assert {r["headers"].get("authorization") for r in hub.requests} == {f"Bearer {TOKEN}"}
    assert not any(TOKEN.encode() in r["body"] for r in hub.requests)
    assert not any(TOKEN.encode() in content for content in commit["files"].values())
    assert _files_holding(run, TOKEN.encode()) == [] and _files_holding(tmp_path, TOKEN.encode()) == []
    assert list((tmp_path / "tmp").iterdir()) == []  # the export folder is gone
    assert f"{hub.url}/me/model" in res.stdout and commit["oid"] in res.stdout and TOKEN not in res.output

    again = _invoke("push", "--run", run, "--repo", "me/model", "--public")  # the repo exists: a second commit
    assert again.exit_code == 0, again.output
    assert hub.repos["me/model"]["visibility"] == "private" and len(hub.commits) == 2


def test_public_push_to_a_branch_with_the_saved_login(trained, hub, tmp_path, monkeypatch):
    """Without --hf-token or $HF_TOKEN the saved login is used; --public and --revision reach the Hub."""
    import huggingface_hub.constants

    run = trained[0]
    monkeypatch.delenv("HF_TOKEN")
    saved = tmp_path / "login" / "token"
    saved.parent.mkdir()
    saved.write_text("hf_SavedLoginToken0123456789")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(saved))
    res = _invoke("push", "--run", run, "--repo", "me/public", "--public", "--revision", "dev", "--format", "json")
    assert res.exit_code == 0, res.output
    assert hub.repos["me/public"]["visibility"] == "public" and hub.repos["me/public"]["branches"] == {"main", "dev"}
    assert [c["revision"] for c in hub.commits] == ["dev"]
    assert {r["headers"].get("authorization") for r in hub.requests} == {"Bearer hf_SavedLoginToken0123456789"}
    doc = json.loads(res.stdout)
    assert doc["repo_id"] == "me/public" and doc["revision"] == "dev" and doc["commit"] == hub.commits[0]["oid"]


def test_a_merged_push_uploads_the_standalone_model(trained, hub):
    res = _invoke("push", "--run", trained[0], "--repo", "me/merged", "--merge", "--dtype", "bfloat16")
    assert res.exit_code == 0, res.output
    (commit,) = hub.commits
    assert "model.safetensors" in commit["files"] and "adapter_model.safetensors" not in commit["files"]
    assert json.loads(commit["files"]["verifily_export.json"])["dtype"] == "bfloat16"
    assert "library_name: transformers" in commit["files"]["README.md"].decode()


def test_no_token_is_one_line_naming_the_login(trained, hub, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    res = _invoke("push", "--run", trained[0], "--repo", "me/model")
    assert res.exit_code == 1
    (line,) = res.stderr.strip().splitlines()
    assert "no Hugging Face token" in line and "hf auth login" in line and "HF_TOKEN" in line
    assert hub.requests == []


def test_offline_mode_refuses_before_any_request(trained, hub, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    res = _invoke("push", "--run", trained[0], "--repo", "me/model")
    assert res.exit_code == 1
    (line,) = res.stderr.strip().splitlines()
    assert "needs the network" in line and "offline mode is on" in line
    assert hub.requests == []


@pytest.mark.parametrize("status, advice", [(401, "not accepted"), (403, "write access"), (500, "retry later")])
def test_an_http_error_is_one_line_naming_the_repo_and_status(trained, hub, tmp_path, status, advice):
    hub.fail = status
    res = _invoke("push", "--run", trained[0], "--repo", "me/model")
    assert res.exit_code == 1
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("Error: push to me/model failed") and f"HTTP {status}" in line and advice in line
    assert "Traceback" not in res.output and TOKEN not in res.output
    assert list((tmp_path / "tmp").iterdir()) == []
    loud = _invoke("push", "--run", trained[0], "--repo", "me/model", "--verbose")
    assert loud.exit_code == 1 and "Traceback" in loud.stderr


def test_an_unreachable_hub_is_one_line(trained, hub, monkeypatch, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    res = _invoke("push", "--run", trained[0], "--repo", "me/model")
    assert res.exit_code == 1
    (line,) = res.stderr.strip().splitlines()
    assert "push to me/model failed: cannot reach" in line and f"127.0.0.1:{port}" in line
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_bad_repo_id_is_refused_before_any_request(trained, hub):
    res = _invoke("push", "--run", trained[0], "--repo", "me/two/slashes")
    assert res.exit_code == 1 and "no Hub repo id" in res.stderr and hub.requests == []


def test_push_to_hub_without_hub_repo_fails_the_dry_run(tmp_path):
    import yaml

    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"task": "sft", "base_model": "org/model", "data_paths": {"train": "t.jsonl"},
                                   "output": {"push_to_hub": True}}))
    for extra in ([], ["--no-data-check"]):
        res = _invoke("train", "--config", cfg, "--dry-run", *extra)
        assert res.exit_code == 1 and "$.output.hub_repo: required when output.push_to_hub is true" in res.stderr


def test_a_dry_run_with_push_to_hub_needs_a_token(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import yaml

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"task": "sft", "base_model": "org/model", "data_paths": {"train": "t.jsonl"},
                                   "output": {"push_to_hub": True, "hub_repo": "me/model"}}))
    res = _invoke("train", "--config", cfg, "--dry-run", "--no-data-check")
    assert res.exit_code == 1 and "no Hugging Face token" in res.stderr
    res = _invoke("--hf-token", TOKEN, "train", "--config", cfg, "--dry-run", "--no-data-check")
    assert res.exit_code == 0, res.output
    assert "Push:         me/model (private when created), after training" in res.stdout


def test_train_with_push_to_hub_pushes_the_sealed_run(trained):
    run, received, root, _ = trained
    meta = json.loads((run / "run_meta.json").read_text())
    assert meta["status"] == "completed"
    assert received["repos"]["me/trained"]["visibility"] == "private"
    (commit,) = received["commits"]
    assert meta["run_id"] in commit["summary"]
    assert commit["files"]["README.md"] == (run / "adapter" / "README.md").read_bytes()
    assert commit["files"]["adapter_model.safetensors"] == (run / "adapter" / "adapter_model.safetensors").read_bytes()
    assert {r["headers"].get("authorization") for r in received["requests"]} == {f"Bearer {TOKEN}"}
    assert _files_holding(root, TOKEN.encode()) == []
    assert not [p for p in (root / "tmp").iterdir() if p.name.startswith("verifily-push-")]
    assert _invoke("reproduce", "--run", run, "--verify-only").exit_code == 0


def test_a_failed_push_after_training_leaves_the_run_complete_and_names_the_retry(trained, hub, tmp_path):
    import yaml

    root = trained[2] / "failing"
    root.mkdir()
    cfg = _config(root, trained[3], push_to_hub=True, hub_repo="me/failing")
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    hub.fail = 500
    res = _invoke("train", "--config", root / "c.yaml")
    assert res.exit_code == 1, res.output
    (run,) = (root / "runs").iterdir()
    (line,) = res.stderr.strip().splitlines()[-1:]
    assert f"the run is complete at {run}" in line and "push to me/failing failed" in line and "HTTP 500" in line
    retry = line.split("retry with: ", 1)[1]
    assert retry == f"verifily push --run {shlex.quote(str(run))} --repo me/failing"
    assert "Run completed" in res.stdout and "Traceback" not in res.output
    assert json.loads((run / "run_meta.json").read_text())["status"] == "completed"
    assert _invoke("reproduce", "--run", run, "--verify-only").exit_code == 0
    assert list((tmp_path / "tmp").iterdir()) == []

    hub.fail = None
    res = _invoke(*shlex.split(retry)[1:])
    assert res.exit_code == 0, res.output
    assert [c["repo"] for c in hub.commits] == ["me/failing"]


def test_reproduce_never_pushes(trained, hub, tmp_path):
    run = trained[0]
    res = _invoke("reproduce", "--run", run, "--output-dir", tmp_path / "again")
    assert res.exit_code == 0, res.output
    assert hub.requests == []
