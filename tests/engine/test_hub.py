"""engine.hub: `--model` as a local directory or a Hugging Face Hub id, resolved through huggingface_hub's cache.

No test reaches the network: every one runs with huggingface_hub offline (HF_HUB_OFFLINE) and its endpoint on
a closed local port, with the cache in a temporary HF_HOME, and fails if it looks up any host but this one; the
tests of the Hub's answers and of downloads talk to a stand-in Hub served from this process on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from wgrpo.engine.errors import InputError
from wgrpo.engine.hub import INSTALL_HINT, resolve_model_path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
CLOSED_PORT = "http://127.0.0.1:9"  # the discard port: nothing listens, a request fails at once
MODEL_FILES = {"config.json": b'{"model_type": "qwen2"}', "model.safetensors": b"weights"}
ADAPTER_FILES = {"adapter_config.json": b'{"peft_type": "LORA"}', "adapter_model.safetensors": b"lora"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Name lookups of any host but this one fail, and a test that tried one fails."""
    tried, lookup = [], socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1"):
            tried.append(host)
            raise socket.gaierror(socket.EAI_NONAME, f"no network in tests: {host}")
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    yield
    assert not tried, f"the test tried to reach {sorted(set(tried))}"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """huggingface_hub's cache directory, empty, in a temporary HF_HOME; the Hub offline and out of reach."""
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        from huggingface_hub import constants
    except ImportError:
        return home / "hub"
    # huggingface_hub read the environment when it was first imported: what it consults later are these
    for name, value in (("HF_HOME", str(home)), ("HF_HUB_CACHE", str(home / "hub")), ("HF_HUB_OFFLINE", True),
                        *endpoint(CLOSED_PORT), ("HF_TOKEN_PATH", str(home / "token")),
                        ("HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))):
        monkeypatch.setattr(constants, name, value)
    return home / "hub"


def endpoint(url: str) -> list[tuple[str, str]]:
    """The constants through which huggingface_hub finds the Hub (HF_ENDPOINT, read when it was imported)."""
    return [("ENDPOINT", url), ("HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")]


def write_snapshot(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT,
                   ref: str | None = "main") -> Path:
    """Files in huggingface_hub's cache layout: blobs named by content, snapshots/<commit>/ of links to them,
    refs/<ref> holding the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def one_line_error(name, **kwargs) -> str:
    with pytest.raises(InputError) as caught:
        resolve_model_path(name, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# ---- the network guard ----------------------------------------------------------------------------------------

def test_huggingface_hub_is_offline_in_every_test():
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.errors import OfflineModeIsEnabled

    with pytest.raises(OfflineModeIsEnabled):
        hub.HfApi().model_info("gpt2")


# ---- cached ids ------------------------------------------------------------------------------------------------

def test_a_cached_id_resolves_to_its_snapshot(cache, capsys):
    snapshot = write_snapshot(cache, "org/name", MODEL_FILES)
    resolved = resolve_model_path("org/name")
    assert resolved == snapshot
    assert (resolved / "config.json").read_bytes() == MODEL_FILES["config.json"]
    logged = capsys.readouterr().err.strip().splitlines()
    assert logged == [f"wgrpo: model org/name from {snapshot}"]


def test_a_bare_name_is_a_local_path(cache, tmp_path, monkeypatch):
    write_snapshot(cache, "gpt2", MODEL_FILES)  # never looked up: a mistyped directory must not go to the Hub
    monkeypatch.chdir(tmp_path)
    assert one_line_error("gpt2").startswith("gpt2: no such directory")


def test_a_revision_picks_its_snapshot(cache):
    main = write_snapshot(cache, "org/name", MODEL_FILES)
    tagged = write_snapshot(cache, "org/name", {**MODEL_FILES, "config.json": b"{}"}, commit=OTHER_COMMIT, ref="v1")
    assert resolve_model_path("org/name") == main
    assert resolve_model_path("org/name@v1") == tagged
    assert resolve_model_path("org/name", revision="v1") == tagged
    assert resolve_model_path(f"org/name@{OTHER_COMMIT}") == tagged  # a commit needs no ref
    assert resolve_model_path("org/name@v1", revision="v1") == tagged


def test_two_different_revisions_are_refused(cache):
    write_snapshot(cache, "org/name", MODEL_FILES)
    message = one_line_error("org/name@v1", revision="v2")
    assert "'v1'" in message and "'v2'" in message


def test_sharded_weights_resolve(cache):
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    files = {"config.json": b"{}", "model.safetensors.index.json": json.dumps(index).encode(),
             "model-00001-of-00002.safetensors": b"1", "model-00002-of-00002.safetensors": b"2"}
    snapshot = write_snapshot(cache, "org/sharded", files)
    assert resolve_model_path("org/sharded") == snapshot


def test_a_snapshot_without_safetensors_weights_is_refused(cache):
    write_snapshot(cache, "org/pickled", {"config.json": b"{}", "pytorch_model.bin": b"pickle"})
    message = one_line_error("org/pickled")
    assert "model.safetensors" in message and "pytorch_model.bin is not read" in message


def test_a_snapshot_without_config_is_refused(cache):
    snapshot = write_snapshot(cache, "org/gguf", {"model.gguf": b"gguf"})
    message = one_line_error("org/gguf")
    assert f"{snapshot} has neither config.json nor adapter_config.json" in message
    assert "hf download org/gguf" in message


# ---- cached adapters -------------------------------------------------------------------------------------------

def test_a_cached_adapter_resolves_to_its_snapshot(cache, capsys):
    snapshot = write_snapshot(cache, "org/my-lora", {**ADAPTER_FILES, "tokenizer.json": b"{}"})
    assert resolve_model_path("org/my-lora") == snapshot
    assert capsys.readouterr().err.strip().splitlines() == [f"wgrpo: adapter org/my-lora from {snapshot}"]


def test_an_adapter_without_safetensors_weights_is_refused(cache):
    write_snapshot(cache, "org/pickled-lora", {"adapter_config.json": b"{}", "adapter_model.bin": b"pickle"})
    message = one_line_error("org/pickled-lora")
    assert "has no adapter_model.safetensors" in message and "adapter_model.bin is not read" in message


def test_a_repo_with_both_configs_is_an_adapter(cache):
    """As load_pretrained reads such a directory: the adapter, on the base its adapter_config.json names."""
    write_snapshot(cache, "org/both", {"config.json": b"{}", "adapter_config.json": b"{}", "model.safetensors": b"w"})
    message = one_line_error("org/both")
    assert "has no adapter_model.safetensors" in message


# ---- what is not cached, offline -------------------------------------------------------------------------------

def test_a_missing_id_offline_names_the_cache_and_the_cures(cache):
    message = one_line_error("org/missing")
    assert str(cache) in message
    assert "not in the Hugging Face cache" in message and "HF_HUB_OFFLINE" in message
    assert "`hf download org/missing`" in message and "pass its path" in message


def test_a_missing_revision_offline_names_it(cache):
    write_snapshot(cache, "org/name", MODEL_FILES)
    message = one_line_error("org/name@v9")
    assert message.startswith("org/name@v9: ") and "`hf download org/name --revision v9`" in message


def test_the_environment_chooses_the_cache(tmp_path):
    """In a fresh process, HF_HOME and HF_HUB_OFFLINE reach huggingface_hub by themselves."""
    home = tmp_path / "elsewhere"
    snapshot = write_snapshot(home / "hub", "org/name", MODEL_FILES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1")
    code = ("import sys\nfrom wgrpo.engine.hub import resolve_model_path\n"
            "for name in sys.argv[1:]:\n"
            "    try:\n        print(resolve_model_path(name))\n"
            "    except ValueError as error:\n        print(error)\n")
    done = subprocess.run([sys.executable, "-c", code, "org/name", "org/missing"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found, missing = done.stdout.splitlines()
    assert Path(found) == snapshot
    assert f"cache {home / 'hub'} (offline mode" in missing
    assert f"wgrpo: model org/name from {snapshot}" in done.stderr


# ---- local paths -----------------------------------------------------------------------------------------------

def test_a_local_directory_wins_over_a_cached_id(cache, tmp_path, monkeypatch, capsys):
    write_snapshot(cache, "org/name", MODEL_FILES)
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "org" / "name" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("org/name") == Path("org/name")
    assert resolve_model_path(tmp_path / "org" / "name") == tmp_path / "org" / "name"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", ["./foo", "../foo", "~/no-such-model", "a/b/c", "foo--bar", "x/.hidden"])
def test_a_missing_local_path_is_named(cache, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    message = one_line_error(name)
    assert message.startswith(f"{name}: no such directory"), message
    assert "cache" not in message


def test_a_missing_absolute_path_is_named(tmp_path):
    missing = tmp_path / "foo"
    assert one_line_error(str(missing)).startswith(f"{missing}: no such directory")


def test_a_path_object_is_never_an_id(cache, tmp_path, monkeypatch):
    write_snapshot(cache, "org/name", MODEL_FILES)
    monkeypatch.chdir(tmp_path)
    assert one_line_error(Path("org/name")).startswith("org/name: no such directory")


def test_a_local_adapter_directory_resolves(tmp_path):
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    assert resolve_model_path(tmp_path / "lora") == tmp_path / "lora"


@pytest.mark.parametrize("files", [[], ["model.safetensors", "tokenizer.json", "adapter_model.safetensors"]])
def test_a_directory_without_either_config_is_named(tmp_path, monkeypatch, files):
    (tmp_path / "ckpt").mkdir()
    for name in files:
        (tmp_path / "ckpt" / name).write_text("")
    monkeypatch.chdir(tmp_path)
    assert one_line_error("ckpt").startswith("ckpt: a directory with neither config.json nor adapter_config.json: "
                                             "expected a checkpoint directory")


def test_a_file_is_not_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("gpt2").write_text("")
    assert one_line_error("gpt2").startswith("gpt2: a file")


def test_an_empty_name_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Path("") is ".", a directory: it must not pass for a checkpoint
    assert one_line_error("").startswith("empty model name")


def test_a_local_directory_takes_no_revision(tmp_path):
    assert "revision 'v1'" in one_line_error(str(tmp_path), revision="v1")


# ---- huggingface_hub missing -----------------------------------------------------------------------------------

def test_without_huggingface_hub_an_id_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` raises ImportError
    message = one_line_error("org/name")
    assert INSTALL_HINT == "pip install 'wgrpo[hub]'" and INSTALL_HINT in message and "local" in message
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_path(str(tmp_path)) == tmp_path  # local directories need nothing


def test_importing_the_module_imports_no_huggingface_hub():
    code = "import sys, wgrpo.engine.hub\nassert 'huggingface_hub' not in sys.modules, 'imported eagerly'\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/", timeout=120)


# ---- the Hub's answers, from a stand-in Hub on 127.0.0.1 -------------------------------------------------------

class StandInHub(http.server.ThreadingHTTPServer):
    """Answers every request with `status` and `headers` or, with `repos` ({repo_id: {file name: bytes}}) set,
    serves those repos the way the Hub's API does. `requests` records (method, path) of each request."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _StandInHandler)
        self.status, self.headers, self.repos, self.requests = 500, {}, {}, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, method: str, path: str) -> tuple[int, dict, bytes]:
        self.requests.append((method, path))
        if not self.repos:
            return self.status, self.headers, b""
        path = unquote(urlsplit(path).path)
        for repo_id, files in self.repos.items():
            if path.startswith(f"/api/models/{repo_id}/revision/"):  # repo_info
                return 200, JSON, json.dumps({"id": repo_id, "sha": COMMIT}).encode()
            if path.startswith(f"/api/models/{repo_id}/tree/"):  # the recursive listing, one page
                tree = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                        for name, data in files.items()]
                return 200, JSON, json.dumps(tree).encode()
            name = path.removeprefix(f"/{repo_id}/resolve/{COMMIT}/")
            if name in files:
                return 200, {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(files[name]).hexdigest()}"'}, files[name]
        return 404, {"X-Error-Code": "RepoNotFound"}, b""


JSON = {"Content-Type": "application/json"}


class _StandInHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status, headers, body = self.server.answer(self.command, self.path)
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in_hub(monkeypatch):
    """huggingface_hub online, but its endpoint is the stand-in Hub."""
    from huggingface_hub import constants

    server = StandInHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name, value in endpoint(server.url):
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status,headers,expected", [
    (404, {"X-Error-Code": "RepoNotFound"}, "org/name: no such model on the Hugging Face Hub, or a private one"),
    (401, {}, "org/name: the Hugging Face Hub refused the request (401 Unauthorized): log in"),
    (403, {"X-Error-Code": "GatedRepo"}, "org/name: a gated model on the Hugging Face Hub: ask for access at "
                                         "https://huggingface.co/org/name"),
    (403, {"X-Error-Message": "Access to this resource is disabled."}, "org/name: this Hugging Face Hub model "
                                                                       "has been disabled"),
])
def test_the_hubs_refusals_are_one_line(stand_in_hub, status, headers, expected):
    stand_in_hub.status, stand_in_hub.headers = status, headers
    assert one_line_error("org/name").startswith(expected)
    assert stand_in_hub.requests, "the stand-in Hub was not asked"


def test_a_revision_the_hub_does_not_have(stand_in_hub):
    stand_in_hub.status, stand_in_hub.headers = 404, {"X-Error-Code": "RevisionNotFound"}
    assert one_line_error("org/name@v9") == "org/name@v9: the Hugging Face Hub model org/name has no revision 'v9'"


def test_an_unreachable_hub_names_the_cache(stand_in_hub, cache, monkeypatch):
    from huggingface_hub import constants

    for name, value in endpoint(CLOSED_PORT):
        monkeypatch.setattr(constants, name, value)
    message = one_line_error("org/missing")
    assert f"not in the Hugging Face cache {cache} (the Hugging Face Hub is unreachable)" in message


def test_a_failing_hub_falls_back_to_the_cache(stand_in_hub, cache):
    stand_in_hub.status = 403  # an error the Hub's client does not retry
    snapshot = write_snapshot(cache, "org/name", MODEL_FILES)
    assert resolve_model_path("org/name") == snapshot
    assert stand_in_hub.requests


def test_a_failing_hub_and_nothing_cached(stand_in_hub, cache):
    stand_in_hub.status = 403
    assert f"not in the Hugging Face cache {cache} (the Hugging Face Hub answered 403)" in one_line_error("org/name")


@pytest.mark.parametrize("weights", ["single", "sharded"])
def test_a_download_fetches_only_what_wgrpo_reads(stand_in_hub, cache, monkeypatch, weights):
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    wanted = {"config.json": b'{"a": 1}', "tokenizer.json": b'{"b": 2}', "generation_config.json": b'{"c": 3}'}
    wanted |= ({"model.safetensors": b"w"} if weights == "single" else
               {"model.safetensors.index.json": json.dumps(index).encode(),
                "model-00001-of-00002.safetensors": b"1", "model-00002-of-00002.safetensors": b"2"})
    unwanted = {"consolidated.safetensors": b"c", "adapter_model.safetensors": b"a", "pytorch_model.bin": b"p",
                "onnx/model.safetensors": b"o", "README.md": b"r", "vocab.json": b"{}"}
    stand_in_hub.repos = {"org/name": {**wanted, **unwanted}}
    snapshot = resolve_model_path("org/name")
    assert snapshot == cache / "models--org--name" / "snapshots" / COMMIT
    assert {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()} == set(wanted)
    assert all((snapshot / name).read_bytes() == data for name, data in wanted.items())
    fetched = {path.rsplit(f"/resolve/{COMMIT}/", 1)[1] for method, path in stand_in_hub.requests
               if method == "GET" and "/resolve/" in path}
    assert fetched == set(wanted)
    # then offline, the same id comes from the cache
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert resolve_model_path("org/name") == snapshot


def test_an_adapter_download_fetches_only_the_adapter(stand_in_hub, cache):
    wanted = {**ADAPTER_FILES, "tokenizer.json": b'{"b": 2}', "tokenizer_config.json": b"{}"}
    unwanted = {"model.safetensors": b"w", "adapter_model.bin": b"p", "README.md": b"r",
                "checkpoint-100/adapter_model.safetensors": b"old"}
    stand_in_hub.repos = {"org/my-lora": {**wanted, **unwanted}}
    snapshot = resolve_model_path("org/my-lora")
    assert {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()} == set(wanted)
    fetched = {path.rsplit(f"/resolve/{COMMIT}/", 1)[1] for method, path in stand_in_hub.requests
               if method == "GET" and "/resolve/" in path}
    assert fetched == set(wanted)


@pytest.mark.parametrize("lost", ["tokenizer.json", "model.safetensors"])
def test_an_incomplete_snapshot_offline_says_so(stand_in_hub, cache, monkeypatch, lost):
    from huggingface_hub import constants

    stand_in_hub.repos = {"org/name": {**MODEL_FILES, "tokenizer.json": b"{}"}}
    snapshot = resolve_model_path("org/name")
    (snapshot / lost).unlink()  # as an interrupted download leaves it
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert one_line_error("org/name") == (f"org/name: the cached snapshot {snapshot} is incomplete (offline mode: "
                                          f"HF_HUB_OFFLINE); complete it with `hf download org/name` on a machine "
                                          f"with network")


# ---- a real checkpoint from the cache --------------------------------------------------------------------------

def test_a_cached_checkpoint_loads(cache, tmp_path, device):
    from tests.tiny_checkpoint import save_tiny_checkpoint
    from wgrpo.engine import load_pretrained

    checkpoint = save_tiny_checkpoint(tmp_path / "tiny", device)
    files = {p.name: p.read_bytes() for p in checkpoint.iterdir() if p.is_file()}
    snapshot = write_snapshot(cache, "org/tiny", files)
    shutil.rmtree(checkpoint)  # what loads comes from the cache
    resolved = resolve_model_path("org/tiny")
    assert resolved == snapshot
    model, tokenizer = load_pretrained(resolved, device)
    assert tokenizer is not None and model.config.hidden_size == 32
    assert tokenizer.get_vocab_size() == model.config.vocab_size


def test_a_cached_adapter_loads_on_its_cached_base(cache, tmp_path, device):
    """load_pretrained("org/my-lora"): the adapter from the cache, on the base its adapter_config.json names."""
    import numpy as np

    from tests.tiny_checkpoint import save_tiny_checkpoint
    from wgrpo.engine import LoraConfig, attach_lora, load_pretrained, save_adapter

    def cache_directory(directory: Path, repo_id: str) -> Path:
        files = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
        shutil.rmtree(directory)  # what loads comes from the cache
        return write_snapshot(cache, repo_id, files)

    base = cache_directory(save_tiny_checkpoint(tmp_path / "tiny", device), "org/tiny")
    model, _ = load_pretrained("org/tiny", device)
    adapters = attach_lora(model, LoraConfig(r=2, target_modules="q_proj,v_proj"))
    rng = np.random.default_rng(0)
    adapters.load_state_dict({k: rng.standard_normal(t.shape).astype(np.float32)
                              for k, t in adapters.named_parameters().items()})
    saved = adapters.state_dict()
    cache_directory(save_adapter(tmp_path / "lora", model), "org/my-lora")
    assert json.loads((cache / "models--org--my-lora" / "snapshots" / COMMIT / "adapter_config.json").read_text()
                      )["base_model_name_or_path"] == "org/tiny"

    loaded, tokenizer = load_pretrained("org/my-lora", device)
    assert loaded.name_or_path == "org/tiny" and tokenizer is not None
    assert loaded.adapters is not None and loaded.adapters.config.r == 2
    assert sorted(loaded.adapters.state_dict()) == sorted(saved)
    for name, array in loaded.adapters.state_dict().items():
        np.testing.assert_array_equal(array, saved[name])
    assert base.is_dir()
