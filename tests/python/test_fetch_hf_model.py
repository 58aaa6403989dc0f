"""tools/fetch_hf_model.py against a local HTTP server on 127.0.0.1 with the Hub's layout
({repo}/resolve/{revision}/{file}), serving the tiny golden model."""
import http.server
import os
import shutil
import subprocess
import sys
import threading

import pytest
from repo_paths import REPO, bin_path

sys.path.insert(0, os.path.dirname(__file__))
from server_harness import TINY_VOCAB, Server, stubs  # noqa: E402

GOLDEN = REPO / "tests" / "golden" / "tiny-l4-h128"
SCRIPT = REPO / "tools" / "fetch_hf_model.py"


class Hub:
    """Serves a directory tree; records each request's Authorization header."""

    def __init__(self, root):
        self.root = root
        self.auth = []
        hub = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(hub.root), **kwargs)

            def do_GET(self):
                hub.auth.append(self.headers.get("Authorization"))
                if (hub.root / ".require_token").exists() and \
                        self.headers.get("Authorization") != "Bearer sekrit":
                    self.send_error(401, "Unauthorized")
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(tmp_path):
    root = tmp_path / "hub"
    files = root / "org" / "tiny-bert" / "resolve" / "main"
    files.mkdir(parents=True)
    shutil.copy(GOLDEN / "config.json", files / "config.json")
    shutil.copy(GOLDEN / "model.safetensors", files / "model.safetensors")
    (files / "vocab.txt").write_text("".join(f"tok{i}\n" for i in range(1024)))
    server = Hub(root)
    yield server, files
    server.close()


def run(args, env_extra=None):
    env = dict(os.environ)
    env.pop("HF_TOKEN", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(SCRIPT)] + args, capture_output=True, text=True,
                          env=env, timeout=120)


def test_fetches_and_verifies(hub, tmp_path):
    server, files = hub
    out = tmp_path / "model"
    result = run(["--repo", "org/tiny-bert", "--endpoint", server.endpoint, "--out", str(out)])
    assert result.returncode == 0, result.stderr
    for name in ("config.json", "vocab.txt", "model.safetensors"):
        assert (out / name).read_bytes() == (files / name).read_bytes()
    # The optional files were asked for and are absent (404).
    assert server.auth == [None] * 7
    assert not (out / "modules.json").exists()
    assert not any(p.name.startswith(".fetch-") for p in out.iterdir())
    # The fetched directory loads and runs.
    encoded = subprocess.run([bin_path("tools", "bert_encode"), f"--model_dir={out}",
                              f"--inputs={GOLDEN / 'expected.safetensors'}",
                              f"--output={tmp_path / 'out.safetensors'}", "--backend=cpu"],
                             capture_output=True, text=True, timeout=120)
    assert encoded.returncode == 0, encoded.stderr


def test_sends_hf_token(hub, tmp_path):
    server, _ = hub
    (server.root / ".require_token").touch()
    out = tmp_path / "model"
    denied = run(["--repo", "org/tiny-bert", "--endpoint", server.endpoint, "--out", str(out)])
    assert denied.returncode != 0
    assert "401" in denied.stderr and "HF_TOKEN" in denied.stderr
    ok = run(["--repo", "org/tiny-bert", "--endpoint", server.endpoint, "--out", str(out)],
             {"HF_TOKEN": "sekrit"})
    assert ok.returncode == 0, ok.stderr
    assert server.auth[-7:] == ["Bearer sekrit"] * 7


def test_missing_file_or_revision(hub, tmp_path):
    server, files = hub
    out = tmp_path / "model"
    result = run(["--repo", "org/tiny-bert", "--revision", "v2", "--endpoint", server.endpoint,
                  "--out", str(out)])
    assert result.returncode != 0
    assert "404" in result.stderr and "config.json" in result.stderr
    (files / "vocab.txt").unlink()
    result = run(["--repo", "org/tiny-bert", "--endpoint", server.endpoint, "--out", str(out)])
    assert result.returncode != 0
    assert "vocab.txt" in result.stderr
    assert not (out / "config.json").exists()  # nothing half-installed


@pytest.mark.parametrize("defect,message", [
    ("truncated", "offsets"),
    ("bad_config", "config.json"),
    ("short_vocab", "vocab_size"),
])
def test_rejects_broken_downloads(hub, tmp_path, defect, message):
    server, files = hub
    if defect == "truncated":
        data = (files / "model.safetensors").read_bytes()
        (files / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif defect == "bad_config":
        (files / "config.json").write_text("{\"hidden_size\": 128")
    else:
        (files / "vocab.txt").write_text("a\nb\n")
    out = tmp_path / "model"
    result = run(["--repo", "org/tiny-bert", "--endpoint", server.endpoint, "--out", str(out)])
    assert result.returncode != 0
    assert message in result.stderr
    assert not (out / "model.safetensors").exists()


MODULES = """[
 {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
 {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"""


def test_fetches_the_sentence_transformers_files(hub, tmp_path):
    server, files = hub
    (files / "modules.json").write_text(MODULES)
    (files / "1_Pooling").mkdir()
    (files / "1_Pooling" / "config.json").write_text(
        '{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}')
    (files / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    (files / "sentence_bert_config.json").write_text('{"max_seq_length": 64}')
    out = tmp_path / "model"
    result = run(["--repo", "org/tiny-bert", "--endpoint", server.endpoint, "--out", str(out)])
    assert result.returncode == 0, result.stderr
    for name in ("modules.json", "1_Pooling/config.json", "tokenizer_config.json",
                 "sentence_bert_config.json"):
        assert (out / name).read_bytes() == (files / name).read_bytes()
    # The server reads them: CLS pooling, no Normalize module.
    pb2, _ = stubs()
    with Server(model_dir=str(out), vocab=TINY_VOCAB,
                extra=["--max_batch_tokens=512"]) as server_process:
        info = server_process.stub().GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
    assert info.sentence_embedding.head == pb2.HEAD_CLS
    assert not info.sentence_embedding.normalize
    assert info.sentence_embedding.max_seq_length == 64


@pytest.mark.parametrize("defect,message", [
    ("modules", "modules.json: invalid JSON"),
    ("pooling_missing", "1_Pooling/config.json: HTTP 404"),
    ("pooling_path", "Pooling module path '../x'"),
    ("absolute_path", "Pooling module path '/"),
])
def test_rejects_broken_sentence_transformers_files(hub, tmp_path, defect, message):
    server, files = hub
    (files / "1_Pooling").mkdir()
    outside = tmp_path / "outside"
    if defect == "modules":
        (files / "modules.json").write_text("[{")
    elif defect == "pooling_missing":
        (files / "modules.json").write_text(MODULES)
    elif defect == "pooling_path":
        (files / "modules.json").write_text(MODULES.replace("1_Pooling", "../x"))
    else:
        # A repository naming an absolute directory: nothing may be written there.
        (files / "modules.json").write_text(MODULES.replace("1_Pooling", str(outside)))
        (files / str(outside).lstrip("/")).mkdir(parents=True)
        (files / str(outside).lstrip("/") / "config.json").write_text("{}")
    out = tmp_path / "model"
    result = run(["--repo", "org/tiny-bert", "--endpoint", server.endpoint, "--out", str(out)])
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert not (out / "model.safetensors").exists()
    assert not outside.exists()


def test_a_refetch_drops_optional_files_the_revision_lacks(hub, tmp_path):
    server, files = hub
    (files / "modules.json").write_text(MODULES)
    (files / "1_Pooling").mkdir()
    (files / "1_Pooling" / "config.json").write_text('{"pooling_mode": "cls"}')
    out = tmp_path / "model"
    args = ["--repo", "org/tiny-bert", "--endpoint", server.endpoint, "--out", str(out)]
    assert run(args).returncode == 0
    assert (out / "modules.json").exists()
    (files / "modules.json").unlink()
    result = run(args)
    assert result.returncode == 0, result.stderr
    assert not (out / "modules.json").exists()
