"""Foundation and operations: start a real server on 127.0.0.1 (ephemeral port), health
SERVING, GetModelInfo, Tokenize, clean stop; health transitions; the startup log."""
import os
import shutil
import signal
import subprocess
import sys

import grpc
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from server_harness import (MINILM, TINY_MODEL, TINY_VOCAB, Server, cpu_flags, decode,  # noqa: E402
                            rel_err, run_to_exit, server_binary, stubs, with_address)


def test_server_starts_serves_model_info_and_stops_cleanly():
    pb2, _ = stubs()
    server = Server()
    try:
        assert server.health() == "SERVING"
        assert server.health("bert.v1.BertService") == "SERVING"
        info = server.stub().GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
        assert info.model_name == "tiny-l4-h128"
        assert info.config.num_layers == 4
        assert info.config.hidden_size == 128
        assert info.config.num_attention_heads == 2
        assert info.config.intermediate_size == 512
        assert info.config.vocab_size == 1024
        assert info.config.max_position_embeddings == 512
        assert info.config.type_vocab_size == 2
        assert info.config.hidden_act == "gelu"
        assert info.config.has_pooler
        assert info.config.lowercase
        assert info.backend == "cpu"
        assert info.device
        assert info.compute_dtype == pb2.DATA_TYPE_FLOAT32
        assert info.limits.max_batch_tokens == 2048
        assert info.limits.max_seq_length == 512
        assert info.limits.default_seq_length == 128
        assert info.limits.max_inputs_per_request == 256
        assert info.limits.max_concurrent_requests == 64
        assert info.limits.max_message_bytes == 64 << 20
        assert info.server_version
    finally:
        rc = server.stop(signal.SIGTERM)
    assert rc == 0, server.log()
    assert "msg=stopped" in server.log()


# OpenBLAS's names of its cores without AVX2 (kernels/cpu/blas_core.cc).
CORES_WITHOUT_AVX2 = {
    "unknown", "katmai", "coppermine", "northwood", "prescott", "banias", "atom", "core2",
    "penryn", "dunnington", "nehalem", "athlon", "opteron", "opteron_sse3", "barcelona", "nano",
    "sandybridge", "bobcat", "bulldozer", "piledriver", "steamroller"}


def _env_without(*names):
    return {k: v for k, v in os.environ.items() if k not in names}


def test_cpu_backend_runs_openblas_kernels_that_use_the_cpus_vector_units():
    """The CPU engine's device names the OpenBLAS core it runs. Where the CPU has AVX2 and FMA
    that core uses them, also where the library itself would fall back to SSE3 kernels (a
    CPU newer than it: bert_server then starts again with OPENBLAS_CORETYPE set, and logs
    it). Not in an environment where the caller set OPENBLAS_CORETYPE."""
    pb2, _ = stubs()
    server = Server(env=_env_without("OPENBLAS_CORETYPE", "BERT_BLAS_CORE_REPLACED"))
    try:
        info = server.stub().GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
        assert "OpenBLAS " in info.device, info.device
        core = info.device.rsplit("OpenBLAS ", 1)[1].rstrip(")")
        if {"avx2", "fma"} <= cpu_flags():
            assert core.lower() not in CORES_WITHOUT_AVX2, info.device
        if "library_choice=" in server.log():
            assert f"core={core}" in server.log(), server.log()
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.log()


def test_a_users_openblas_coretype_is_kept():
    """OPENBLAS_CORETYPE set by the user wins, even a weak choice (the SSE3 kernels run on any
    x86-64): the server runs it and replaces nothing."""
    pb2, _ = stubs()
    env = {**_env_without("BERT_BLAS_CORE_REPLACED"), "OPENBLAS_CORETYPE": "Prescott"}
    server = Server(env=env)
    try:
        info = server.stub().GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
        assert info.device.endswith("OpenBLAS Prescott)"), info.device
        assert "library_choice=" not in server.log() and "OPENBLAS_CORETYPE" not in server.log()
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.log()


def test_cpu_gemm_chooses_the_linear_kernel_and_the_old_few_rows_flag_still_starts():
    """--cpu_gemm chooses the Linear layers' GEMM (the device names it; with a packed one the
    model's Linear weights are freed), and each answers like the default to float rounding;
    --cpu_few_rows_max, gone, is accepted with a warning so that older command lines still
    start."""
    pb2, _ = stubs()
    request = pb2.EmbedRequest(
        inputs=[pb2.Input(text=pb2.TextInput(text_a="the quick brown fox jumps"))])
    results = {}
    devices = {"portable": "portable packed GEMM", "openblas": "OpenBLAS GEMM"}
    for gemm in ("auto", "portable", "openblas"):
        with Server(extra=[f"--cpu_gemm={gemm}", "--cpu_few_rows_max=32"]) as server:
            info = server.stub().GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
            assert devices.get(gemm, "GEMM") in info.device, info.device
            # A packed GEMM runs its own copies: the model's Linear weights are freed.
            freed = "freed the model's Linear weights" in server.log()
            assert freed == ("packed GEMM" in info.device), server.log()
            assert "--cpu_few_rows_max is deprecated" in server.log(), server.log()
            assert "cpu_gemm=" + gemm in server.log(), server.log()
            response = server.stub().Embed(request, timeout=30)
            results[gemm] = decode(response.results[0].default_output)
    assert rel_err(results["portable"], results["auto"]) < 1e-6
    assert rel_err(results["openblas"], results["auto"]) < 1e-6


def test_an_unknown_cpu_gemm_stops_startup_with_any_backend():
    for backend in ("cpu", "cuda"):
        with pytest.raises(RuntimeError) as e:
            Server(extra=[f"--backend={backend}", "--cpu_gemm=sse9"])
        message = str(e.value)
        assert "bert_server exited 1" in message, message
        assert "unknown GEMM" in message and "sse9" in message, message


def test_sigint_also_stops_cleanly():
    server = Server()
    try:
        assert server.health() == "SERVING"
    finally:
        rc = server.stop(signal.SIGINT)
    assert rc == 0


def test_startup_logs_effective_config_and_structured_lines():
    server = Server(extra=["--max_batch_delay_us=1234", "--tokenization_workers=3"])
    try:
        log = server.log()
    finally:
        server.kill()
    config_line = next(l for l in log.splitlines() if 'msg="effective config"' in l)
    for field in ["model_dir=", "max_batch_delay_us=1234", "tokenization_workers=3",
                  "backend=cpu", "max_batch_tokens=2048", "address=127.0.0.1:0"]:
        assert field in config_line, config_line
    for line in log.splitlines():
        assert line.startswith("ts=") and " level=" in line and " msg=" in line, line


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_tokenization_workers_default_to_the_usable_cpus():
    # Pinned to one CPU: one worker, whatever the machine has.
    server = Server(wrapper=["taskset", "-c", str(min(os.sched_getaffinity(0)))])
    try:
        log = server.log()
    finally:
        server.kill()
    config_line = next(l for l in log.splitlines() if 'msg="effective config"' in l)
    assert "tokenization_workers=1 " in config_line + " ", config_line


def test_health_not_serving_until_warm_then_serving():
    """Warm-up at a large token budget takes long enough to see NOT_SERVING first."""
    pb2, _ = stubs()
    if os.path.isdir(MINILM):
        server = Server(model_dir=MINILM, extra=["--max_batch_tokens=4096"], wait_serving=False,
                        metrics=True)
    else:
        server = Server(extra=["--max_batch_tokens=65536"], wait_serving=False, metrics=True)
    try:
        # The HTTP probes say the same as the gRPC health service (/readyz read first: it
        # must not see a SERVING that health, read after, has not reached).
        ready = server.probe("/readyz")
        first = server.health()
        assert first == "NOT_SERVING", server.log()
        assert ready == (503, "NOT_SERVING\n")
        assert server.probe("/livez") == (200, "OK\n")
        with pytest.raises(grpc.RpcError) as e:
            server.stub().GetModelInfo(pb2.GetModelInfoRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as e:
            server.stub().Decode(pb2.DecodeRequest(inputs=[pb2.TokenIds(ids=[101])]), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert e.value.details() == "the model is still loading"
        server.wait_serving()
        assert server.health() == "SERVING"
        assert server.probe("/readyz") == (200, "SERVING\n")
        assert "warm-up done" in server.log()
        # The log shows NOT_SERVING before warm-up and SERVING after it.
        log = server.log()
        assert log.index("health=NOT_SERVING") < log.index("warm-up done") < \
            log.index("health=SERVING")
    finally:
        assert server.stop() == 0


def test_bad_model_dir_exits_nonzero():
    with pytest.raises(RuntimeError) as e:
        Server(model_dir="/nonexistent/model", vocab=TINY_VOCAB)
    message = str(e.value)
    assert "bert_server exited 1" in message, message
    assert "startup failed" in message and "/nonexistent/model" in message, message


def test_a_batch_budget_beyond_the_memory_left_stops_startup_with_a_clear_error():
    # The CPU engine's activations for 2e9 rows of the tiny model are ~10 TB: refused before
    # anything is allocated (it used to end in std::bad_alloc, or in the OOM killer).
    with pytest.raises(RuntimeError) as e:
        Server(extra=["--max_batch_tokens=2000000000"])
    message = str(e.value)
    assert "bert_server exited 1" in message, message
    assert "startup failed" in message and "lower max_batch_tokens" in message, message


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or
                    not shutil.which("prlimit"),
                    reason="needs root, setpriv and prlimit to run the server under a thread "
                           "limit as another user (root is exempt from the limit)")
@pytest.mark.parametrize("threads", ["--cpu_threads=200", "--tokenization_workers=200"])
def test_threads_past_the_process_limit_stop_startup_with_a_clear_error(threads):
    """Run as nobody with at most 48 processes and threads: 200 threads cannot all start. Each
    pool joins the threads it started and the server exits 1 naming the flags (it used to
    abort in std::terminate)."""
    import tempfile
    from server_harness import server_binary
    place = tempfile.mkdtemp(prefix="bert_nobody_")  # where nobody may run it (bazel-bin is root's)
    try:
        os.chmod(place, 0o755)
        binary = shutil.copy(server_binary(), place)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "prlimit", "--nproc=48", binary, f"--model_dir={TINY_MODEL}",
                            f"--vocab={TINY_VOCAB}", "--backend=cpu", "--address=127.0.0.1:0",
                            "--cpu_threads=2", "--tokenization_workers=2", threads],
                           capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(place)
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    assert "cannot start the threads asked for" in r.stderr, r.stderr[-3000:]


@pytest.mark.parametrize("flag", ["--max_batch_delay_us=1000001", "--cpu_threads=1025",
                                  "--cpu_threads=-1", "--tokenization_workers=1025"])
def test_an_out_of_range_limit_flag_exits_2(flag):
    r = run_to_exit(flag)
    assert r.returncode == 2, (flag, r.returncode, r.stderr[-2000:])
    assert "out of range" in r.stderr


def test_an_out_of_range_cuda_flag_stops_startup_with_any_backend():
    # The CPU backend never uses it, but a value the CUDA engine would refuse is a mistake in
    # the command line: it should not wait for a machine with a GPU to show.
    with pytest.raises(RuntimeError) as e:
        Server(extra=["--backend=cpu", "--cuda_attention_tile=48"])
    message = str(e.value)
    assert "bert_server exited 1" in message, message
    assert "--cuda_attention_tile must be 0" in message, message


def test_a_second_server_on_a_port_in_use_refuses_to_start():
    # gRPC would share the port (SO_REUSEPORT) and split its traffic between both servers.
    with Server() as first:
        args = with_address(first.args, first.address)
        assert args != first.args
        second = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stderr[-2000:]
        assert 'msg="cannot listen"' in second.stderr, second.stderr[-2000:]
        # The log line gives the reason (gRPC's own goes to its debug output only).
        assert 'error="Address already in use (another process listens on this port)"' in \
            second.stderr, second.stderr[-2000:]
        assert first.health() == "SERVING"


@pytest.mark.parametrize("address, reason", [
    ("50051", "is not an address to listen on: give HOST:PORT"),
    ("127.0.0.1:70000", "is not an address to listen on: give HOST:PORT"),
    ("unix:/nonexistent-bert-dir/bert.sock",
     "the directory /nonexistent-bert-dir does not exist (create it first: mkdir -p "),
])
def test_an_address_that_cannot_work_stops_startup_with_the_reason(address, reason):
    r = subprocess.run([server_binary(), f"--model_dir={TINY_MODEL}", f"--vocab={TINY_VOCAB}",
                        "--backend=cpu", f"--address={address}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr[-2000:]
    assert 'msg="cannot listen"' in r.stderr and reason in r.stderr, r.stderr[-2000:]


def test_a_missing_model_directory_is_named_with_what_it_needs():
    r = subprocess.run([server_binary(), "--model_dir=no/such/model", "--address=127.0.0.1:0",
                        "--backend=cpu"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "the model directory no/such/model does not exist (relative to " in r.stderr
    assert "tools/fetch_default_model.sh" in r.stderr
    r = subprocess.run([server_binary(), "--address=127.0.0.1:0"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "e.g. --model_dir=models/all-MiniLM-L6-v2" in r.stderr


def test_tokenize_rpc():
    pb2, _ = stubs()
    with Server() as server:
        stub = server.stub()
        resp = stub.Tokenize(pb2.TokenizeRequest(
            inputs=[pb2.TextInput(text_a="hello world"),
                    pb2.TextInput(text_a="good morning", text_b="thank you")],
            seq_length=12), timeout=10)
        vocab = open(TINY_VOCAB).read().split("\n")
        e0, e1 = resp.encodings
        assert list(e0.tokens) == ["[CLS]", "hello", "world", "[SEP]"]
        assert list(e0.input_word_ids) == [vocab.index(t) for t in e0.tokens] + [0] * 8
        assert list(e0.input_mask) == [1] * 4 + [0] * 8
        assert list(e0.input_type_ids) == [0] * 12
        assert e0.num_tokens == 4 and not e0.truncated
        assert list(e1.tokens) == ["[CLS]", "good", "morning", "[SEP]", "thank", "you", "[SEP]"]
        assert list(e1.input_type_ids) == [0, 0, 0, 0, 1, 1, 1] + [0] * 5
        # Each real token's bytes in its own text; [CLS]/[SEP] 0, 0.
        assert list(zip(e0.token_starts, e0.token_ends)) == [(0, 0), (0, 5), (6, 11), (0, 0)]
        assert list(zip(e1.token_starts, e1.token_ends)) == [
            (0, 0), (0, 4), (5, 12), (0, 0), (0, 5), (6, 9), (0, 0)]
        # Truncation and REJECT.
        long_text = " ".join(["hello"] * 20)
        resp = stub.Tokenize(pb2.TokenizeRequest(inputs=[pb2.TextInput(text_a=long_text)],
                                                 seq_length=8), timeout=10)
        assert resp.encodings[0].truncated and resp.encodings[0].num_tokens == 8
        with pytest.raises(grpc.RpcError) as e:
            stub.Tokenize(pb2.TokenizeRequest(inputs=[pb2.TextInput(text_a=long_text)],
                                              seq_length=8,
                                              truncation=pb2.TRUNCATION_REJECT), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "inputs[0]" in e.value.details()


def test_a_tokenize_answer_over_the_message_limit_is_refused_with_its_size():
    pb2, _ = stubs()
    with Server(extra=["--max_message_bytes=4096"]) as server:
        stub = server.stub()
        small = stub.Tokenize(pb2.TokenizeRequest(inputs=[pb2.TextInput(text_a="hello world")],
                                                  seq_length=16), timeout=10)
        assert small.encodings[0].num_tokens == 4
        with pytest.raises(grpc.RpcError) as e:
            stub.Tokenize(pb2.TokenizeRequest(inputs=[pb2.TextInput(text_a="hello world")] * 16,
                                              seq_length=128), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "over the server's 4096-byte message limit" in e.value.details()
        assert server.health() == "SERVING"


def test_reflection_lists_the_services():
    """grpc.reflection.v1alpha list_services, spoken with raw bytes (no extra package):
    ServerReflectionRequest{list_services: ""} is field 7, an empty string."""
    with Server() as server:
        with server.channel() as ch:
            call = ch.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                request_serializer=lambda b: b, response_deserializer=lambda b: b)
            responses = list(call(iter([b"\x3a\x00"]), timeout=10))
    assert len(responses) == 1
    assert b"bert.v1.BertService" in responses[0]
    assert b"grpc.health.v1.Health" in responses[0]


def test_help_lists_the_server_flags():
    from server_harness import server_binary
    r = subprocess.run([server_binary(), "--help"], capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    for flag in ("--model_dir", "--backend", "--dtype", "--send_timeout_s",
                 "--max_request_bytes", "--cuda_graphs", "--drain_timeout_s"):
        assert flag in out, (flag, out[:2000])
