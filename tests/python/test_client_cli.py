"""bert_client, the bundled command-line client: its checks of flags and input before any
call, its exit codes, and its summary of ragged (trimmed) outputs, against a real bert_server
(CPU backend, tiny golden model)."""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from repo_paths import bin_path  # noqa: E402
from server_harness import Server  # noqa: E402


def bert_client(*args, stdin="", timeout=60):
    return subprocess.run([bin_path("client", "bert_client"), *args], capture_output=True,
                          text=True, input=stdin, timeout=timeout)


@pytest.mark.parametrize("args, stdin, message", [
    (["tokenize", "--truncation=rejectt", "hello"], "", "truncation: truncate, longest_first or reject"),
    (["tokenize", "--seq_length=-1", "hello"], "", "seq_length must be >= 0"),
    (["embed", "--truncation=drop", "hello"], "", "truncation: truncate, longest_first or reject"),
    (["embed"], '{"text_a": "x",}\n', "stdin line 1: not valid JSON"),
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
