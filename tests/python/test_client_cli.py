"""bert_client, the bundled command-line client: its checks of flags and input before any
call, its exit codes, and its summary of ragged (trimmed) outputs, against a real bert_server
(CPU backend, tiny golden model)."""
import json
import os
import socket
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from repo_paths import bin_path  # noqa: E402
from server_harness import Server, stubs  # noqa: E402


def bert_client(*args, stdin="", timeout=60):
    return subprocess.run([bin_path("client", "bert_client"), *args], capture_output=True,
                          text=True, input=stdin, timeout=timeout)


@pytest.mark.parametrize("args, stdin, message", [
    (["tokenize", "--truncation=rejectt", "hello"], "", "truncation: truncate, longest_first or reject"),
    (["tokenize", "--seq_length=-1", "hello"], "", "seq_length must be >= 0"),
    (["embed", "--truncation=drop", "hello"], "", "truncation: truncate, longest_first or reject"),
    (["embed"], '{"text_a": "x",}\n', "stdin line 1: not valid JSON (each line one input: "),
    (["embed"], 'plain text\n', '"a text" in quotes'),
    (["embed"], '', "embed: no inputs"),
    (["tokenize"], '', "tokenize: no texts"),
    (["embed"], '[1, 2]\n', "stdin line 1: expected a JSON string or an object"),
])
def test_bad_flags_and_input_exit_2_before_any_call(args, stdin, message):
    # No server listens on port 1: these must fail before trying to reach one.
    r = bert_client("--server=127.0.0.1:1", *args, stdin=stdin)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr


def test_help_lists_the_connection_flags():
    r = bert_client("--help")
    for flag in ("--server", "--tls", "--ca", "--token", "--token_file", "--heads"):
        assert flag in r.stdout + r.stderr, flag


def test_unreachable_server_exits_1():
    r = bert_client("--server=127.0.0.1:1", "--timeout_ms=5000", "info")
    assert r.returncode == 1
    assert "error: UNAVAILABLE" in r.stderr
    assert "(no server answers there: is it running, and is --server its HOST:PORT?)" in r.stderr


def test_the_usual_wrong_addresses_are_named():
    r = bert_client("--server=http://127.0.0.1:50051", "health")
    assert r.returncode == 2
    assert "give HOST:PORT (or unix:PATH), not a URL" in r.stderr
    with Server(metrics=True) as s:
        r = bert_client(f"--server=127.0.0.1:{s.metrics_port}", "--timeout_ms=5000", "info")
        assert r.returncode == 1
        assert "(that address answers HTTP/1, not gRPC: the metrics port?)" in r.stderr, r.stderr


def test_a_proxy_in_the_environment_is_not_used_for_this_hosts_server():
    """A container runtime may set http_proxy for every process: the client (and the image's
    HEALTHCHECK, which runs it) still reaches a server on the loopback directly."""
    env = dict(os.environ, http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               grpc_proxy="http://127.0.0.1:9", no_proxy="")
    with Server() as s:
        for target in (s.address, f"localhost:{s.port}"):
            r = subprocess.run([bin_path("client", "bert_client"), f"--server={target}",
                                "health"], capture_output=True, text=True, timeout=60, env=env)
            assert r.returncode == 0 and r.stdout.strip() == "SERVING", (target, r.stderr)


def test_ragged_rows_are_shown_as_such():
    with Server() as s:
        r = bert_client(f"--server={s.address}", "health")
        assert r.returncode == 0 and r.stdout.strip() == "SERVING"
        # Trimmed padding: the two inputs have 3 and 6 rows, so the row dimension has no size.
        r = bert_client(f"--server={s.address}", "--heads=sequence,pooled", "--padding=trim",
                        "embed", "a", "a b c d")
        assert r.returncode == 0, r.stderr
        assert "Sequence Outputs Shape:ragged (2, None, 128)" in r.stdout
        assert "Pooled Outputs Shape:(2, 128)" in r.stdout
        # Padded to seq_length, the shape is regular.
        r = bert_client(f"--server={s.address}", "--heads=sequence", "--seq_length=16", "embed",
                        "a", "a b c d")
        assert "Sequence Outputs Shape:(2, 16, 128)" in r.stdout


def test_many_inputs_go_in_calls_of_the_servers_size():
    """More inputs than the server takes in one request (--max_inputs_per_request) are sent in
    calls of its size: the results come back in order, indexed across the calls, as each input
    alone gives them; a call the server refuses is named by its inputs."""
    pb2, _ = stubs()
    texts = [f"text number {i} " + "hello " * (i % 5) for i in range(11)]
    with Server(extra=["--max_inputs_per_request=4"]) as s:
        server = f"--server={s.address}"
        alone = [s.stub().Embed(pb2.EmbedRequest(
            inputs=[pb2.Input(text=pb2.TextInput(text_a=t))], heads=[pb2.HEAD_POOLED]),
            timeout=30).results[0] for t in texts]
        r = bert_client(server, "--json", "--heads=pooled", "embed",
                        stdin="".join(json.dumps(t) + "\n" for t in texts))
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert [row["index"] for row in rows] == list(range(len(texts)))
        for row, want in zip(rows, alone, strict=True):
            assert row["num_tokens"] == want.num_tokens
            np.testing.assert_allclose(row["pooled_output"]["values"],
                                       np.frombuffer(want.pooled_output.data, "<f4"), rtol=1e-6,
                                       atol=1e-7)
        r = bert_client(server, "--heads=pooled", "embed", *texts)
        assert r.returncode == 0, r.stderr
        assert "Pooled Outputs Shape:(11, 128)" in r.stdout
        assert f'  [10] "{texts[10]}"' in r.stdout

        r = bert_client(server, "--json", "tokenize", *texts[:9])
        assert r.returncode == 0, r.stderr
        encodings = [json.loads(line) for line in r.stdout.splitlines()]
        assert len(encodings) == 9
        for text, encoding in zip(texts, encodings, strict=False):
            want = s.stub().Tokenize(pb2.TokenizeRequest(inputs=[pb2.TextInput(text_a=text)]),
                                     timeout=30).encodings[0]
            assert encoding["tokens"] == list(want.tokens)
        r = bert_client(server, "decode", stdin="".join(line + "\n" for line in
                                                           r.stdout.splitlines()))
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [t.strip() for t in texts[:9]]

        # The fifth input is refused (an id outside the vocabulary): the first call's four
        # results are out, and the error names the second call's inputs.
        lines = [json.dumps(t) for t in texts[:4]] + ['{"input_word_ids": [2, 99999, 3]}',
                                                      json.dumps(texts[5])]
        r = bert_client(server, "--json", "--heads=pooled", "embed",
                        stdin="\n".join(lines) + "\n")
        assert r.returncode == 1
        assert len(r.stdout.splitlines()) == 4
        assert "INVALID_ARGUMENT" in r.stderr
        assert "(in the call with inputs 4 to 5 of 6)" in r.stderr, r.stderr


def test_inputs_are_split_by_the_servers_request_size_too():
    """Inputs that fit the server's input count but not its request size go in several calls."""
    pb2, _ = stubs()
    big = "hello world " * 5000  # 60,000 bytes
    with Server(extra=["--max_request_bytes=200000"]) as s:
        r = bert_client(f"--server={s.address}", "--json", "--heads=pooled", "embed",
                        big, big + "a", big + "b", big + "c", "small")
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert [row["index"] for row in rows] == [0, 1, 2, 3, 4]
        assert all(row["truncated"] for row in rows[:4]) and not rows[4]["truncated"]
        # As one request, the same inputs are refused.
        with pytest.raises(grpc.RpcError) as e:
            s.stub().Embed(pb2.EmbedRequest(inputs=[
                pb2.Input(text=pb2.TextInput(text_a=t)) for t in (big, big, big, big, "small")]),
                timeout=30)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_call_refused_as_too_big_is_sent_again_in_halves():
    """The server's message limit for one answer is not known ahead: a call refused for it is
    sent again as two halves, down to one input a call."""
    with Server(extra=["--max_message_bytes=300000"]) as s:
        texts = [f"text {i}" for i in range(10)]
        r = bert_client(f"--server={s.address}", "--json", "--heads=sequence", "--padding=pad",
                        "--seq_length=128", "embed", *texts)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert [row["index"] for row in rows] == list(range(10))
        assert all(row["sequence_output"]["shape"] == [128, 128] for row in rows)
        # One input whose answer alone is over the limit: refused with the server's reason.
        r = bert_client(f"--server={s.address}", "--heads=sequence,encoder_outputs",
                        "--seq_length=128", "embed", "one")
        assert r.returncode == 1 and "-byte message limit" in r.stderr, r.stderr


def test_a_server_that_never_answers_costs_one_deadline():
    """Asking for the server's limits first must not double the wait on a dead server."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections are queued, never answered
        port = silent.getsockname()[1]
        started = time.monotonic()
        r = bert_client(f"--server=127.0.0.1:{port}", "--timeout_ms=2000", "tokenize", "a", "b")
        took = time.monotonic() - started
    assert r.returncode == 1, r.stderr
    assert took < 3.5, took
