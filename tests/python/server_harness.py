"""Helpers for the end-to-end server tests: Python stubs generated from the proto at test
time, a real bert_server process on 127.0.0.1 with an ephemeral port, safetensors reading
and tensor decoding. Every server started here is killed in teardown."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
from repo_paths import REPO as _REPO_PATH, bin_path
from safetensors_io import read_safetensors  # noqa: F401 (tests import it from here)

REPO = str(_REPO_PATH)  # a string: the paths below and importers use os.path
TINY_MODEL = os.path.join(REPO, "tests", "golden", "tiny-l4-h128")
TINY_VOCAB = os.path.join(REPO, "tests", "data", "tiny_vocab_1024.txt")
MINILM = os.path.join(REPO, "models", "all-MiniLM-L6-v2")

_STUBS = None


def stubs():
    """(bert_service_pb2, bert_service_pb2_grpc), generated once per session."""
    global _STUBS
    if _STUBS is None:
        from grpc_tools import protoc
        import grpc_tools
        out = tempfile.mkdtemp(prefix="bert_stubs_")
        include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        rc = protoc.main(["protoc", f"-I{REPO}", f"-I{include}", f"--python_out={out}",
                          f"--grpc_python_out={out}",
                          os.path.join(REPO, "proto", "bert", "v1", "bert_service.proto")])
        assert rc == 0, "protoc failed"
        sys.path.insert(0, out)
        from proto.bert.v1 import bert_service_pb2, bert_service_pb2_grpc  # noqa
        _STUBS = (bert_service_pb2, bert_service_pb2_grpc)
    return _STUBS


def server_binary():
    return bin_path("server", "bert_server")


# Relative tolerance of a decoded output tensor against float32 references, by DataType value
# (float32, float16, bfloat16).
DTYPE_TOL = {1: 1e-4, 2: 1e-2, 3: 3e-2}


def decode(tensor):
    """A bert.v1.Tensor as a float32 numpy array."""
    pb2, _ = stubs()
    shape = list(tensor.shape)
    if tensor.dtype == pb2.DATA_TYPE_FLOAT32:
        arr = np.frombuffer(tensor.data, dtype="<f4")
    elif tensor.dtype == pb2.DATA_TYPE_FLOAT16:
        arr = np.frombuffer(tensor.data, dtype="<f2").astype(np.float32)
    elif tensor.dtype == pb2.DATA_TYPE_BFLOAT16:
        u16 = np.frombuffer(tensor.data, dtype="<u2").astype(np.uint32)
        arr = (u16 << 16).view(np.float32)
    else:
        raise ValueError(f"dtype {tensor.dtype}")
    return arr.reshape(shape)


def cpu_flags():
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def run_to_exit(*flags, timeout=60):
    """bert_server on the tiny model with `flags`, expected to stop during startup: the
    CompletedProcess (stderr as text)."""
    return subprocess.run([server_binary(), f"--model_dir={TINY_MODEL}", f"--vocab={TINY_VOCAB}",
                           "--backend=cpu", "--address=127.0.0.1:0", *flags],
                          capture_output=True, text=True, timeout=timeout)


def with_address(args, address):
    """A server's command line (Server.args) with another --address."""
    return [f"--address={address}" if a.startswith("--address=") else a for a in args]


class Server:
    """A bert_server child process. Use as a context manager or call stop()/kill()."""

    def __init__(self, model_dir=TINY_MODEL, vocab=None, extra=(), metrics=False,
                 wait_serving=True, timeout=120, wrapper=(), unix_socket=None, env=None):
        """`wrapper`: a command the server runs under (e.g. taskset). `unix_socket`: a path to
        serve on instead of a loopback TCP port (`address` is then "unix:PATH"). `env`: the
        server's environment (default: this process's)."""
        address = f"unix:{unix_socket}" if unix_socket else "127.0.0.1:0"
        args = [*wrapper, server_binary(), f"--model_dir={model_dir}", f"--address={address}",
                "--backend=cpu", "--cpu_threads=2", "--log_level=info",
                "--mutex_deadlock_detection"]
        if vocab is None and model_dir == TINY_MODEL:
            vocab = TINY_VOCAB
        if vocab:
            args.append(f"--vocab={vocab}")
        if metrics:
            args.append("--metrics_address=127.0.0.1:0")
        if model_dir == TINY_MODEL and not any(a.startswith("--max_batch_tokens") for a in extra):
            args.append("--max_batch_tokens=2048")
        args += list(extra)
        self.args = args
        self.log_lines = []
        self._log_lock = threading.Lock()
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, errors="replace", env=env)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        self.port = None
        self.metrics_port = None
        self.address = None
        deadline = time.time() + timeout
        while self.address is None or (metrics and self.metrics_port is None):
            if self.proc.poll() is not None:
                raise RuntimeError(f"bert_server exited {self.proc.returncode}:\n{self.log()}")
            if time.time() > deadline:
                self.kill()
                raise RuntimeError(f"bert_server did not start:\n{self.log()}")
            with self._log_lock:
                for line in self.log_lines:
                    m = re.search(r'msg=listening address=127\.0\.0\.1:(\d+)', line)
                    if m:
                        self.port = int(m.group(1))
                        self.address = f"127.0.0.1:{self.port}"
                    if unix_socket and "msg=listening " in line:
                        self.address = address  # the log quotes a path with spaces
                    m = re.search(r'msg="metrics listening" address=127\.0\.0\.1:(\d+)', line)
                    if m:
                        self.metrics_port = int(m.group(1))
            time.sleep(0.02)
        if wait_serving:
            self.wait_serving(timeout=max(1, deadline - time.time()))

    def _read_log(self):
        for line in self.proc.stderr:
            with self._log_lock:
                self.log_lines.append(line.rstrip("\n"))

    def log(self):
        with self._log_lock:
            return "\n".join(self.log_lines)

    def channel(self, **kwargs):
        return grpc.insecure_channel(self.address, **kwargs)

    def stub(self, channel=None):
        _, pb2_grpc = stubs()
        return pb2_grpc.BertServiceStub(channel or self.channel())

    def health(self, service=""):
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        with self.channel() as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def watch_health(self, seen, service="", timeout=60):
        """Appends each status of a grpc.health.v1 Watch stream on `service` to `seen` until
        the stream ends (the server went away, or `timeout`). Blocks: run it in a thread."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        channel = self.channel()
        try:
            for reply in health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout):
                seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
        except grpc.RpcError:
            pass  # the server went away
        finally:
            channel.close()

    def wait_serving(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bert_server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.health() == "SERVING":
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"bert_server never became SERVING:\n{self.log()}")

    def metrics_text(self):
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()

    def probe(self, path):
        """(status, body) of GET `path` (/livez, /readyz) on the metrics listener."""
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def enter_drain_delay(self, timeout=10):
        """Sends SIGTERM to a server started with --drain_delay_s and returns once it serves
        in the delay (health NOT_SERVING, calls still answered)."""
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + timeout
        while "draining after the delay" not in self.log():
            if time.time() > deadline:
                raise RuntimeError(f"bert_server did not enter its drain delay:\n{self.log()}")
            time.sleep(0.02)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Sends `sig` and returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        self._reader.join(timeout=5)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def metric_value(text, name, labels=None):
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)', line)
        if not m or m.group(1) != name:
            continue
        lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if labels and any(lab.get(k) != v for k, v in labels.items()):
            continue
        total += float(m.group(3))
        found = True
    return total if found else None


def sentence_transformers_model(path, pooling, prompts=None, default_prompt=None, max_seq=None,
                                similarity=None):
    """The tiny model with sentence-transformers' files: Transformer, Pooling, Normalize."""
    path.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(TINY_MODEL, name), path / name)
    (path / "modules.json").write_text(json.dumps([
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": pooling}))
    (path / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": prompts or {}, "default_prompt_name": default_prompt,
         "similarity_fn_name": similarity}))
    if max_seq:
        (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq}))
    return str(path)


def classifier_weights(num_labels, seed=7):
    """(weight [num_labels, 128], bias [num_labels]), float32, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.2, (num_labels, 128)).astype(np.float32),
            rng.normal(0, 0.5, num_labels).astype(np.float32))


def classifier_model(path, labels=("negative", "neutral", "positive"),
                     problem_type="single_label_classification", seed=7, extra_config=None,
                     architecture="BertForSequenceClassification"):
    """The tiny model as a BertForSequenceClassification checkpoint (the encoder under "bert.",
    `classifier.weight` [len(labels), 128] and `classifier.bias` beside it, config.json's
    id2label and problem_type, and `extra_config`'s keys; classifier_weights(len(labels), seed)).
    Returns the path."""
    from classifier_model import write_classifier_model  # tools/
    weight, bias = classifier_weights(len(labels), seed)
    return str(write_classifier_model(path, TINY_MODEL, weight, bias, labels, problem_type,
                                      extra_config, architecture))


def hf_pair_tokenizer(max_length):
    """Hugging Face tokenizers over the tiny vocabulary, truncating as its default
    (longest_first) to `max_length`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    with open(TINY_VOCAB, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.enable_truncation(max_length=max_length)
    return tok
