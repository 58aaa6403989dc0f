"""bert_server on a Unix domain socket (--address=unix:PATH), for callers on the same host:
the same answers as over TCP, the bundled client and load tester reach it, the log names
the socket, a socket file left by a killed server does not block the next one, a drained
server removes its socket, and a second server refuses a socket another one serves on."""
import json
import os
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from repo_paths import bin_path  # noqa: E402
from server_harness import Server, stubs, with_address  # noqa: E402

TEXTS = ["Please subscribe to this newsletter", "You are being offered this job role"]


def embed(server):
    pb2, _ = stubs()
    request = pb2.EmbedRequest(
        inputs=[pb2.Input(text=pb2.TextInput(text_a=t)) for t in TEXTS],
        heads=[pb2.HEAD_POOLED, pb2.HEAD_SEQUENCE])
    response = server.stub().Embed(request, timeout=30)
    response.ClearField("timing")
    for r in response.results:
        r.ClearField("timing")
    return response


@pytest.fixture(scope="module")
def socket_path(tmp_path_factory):
    return str(tmp_path_factory.mktemp("uds") / "bert.sock")


def test_same_answers_as_over_tcp_and_the_log_names_the_socket(socket_path):
    with Server() as tcp:
        expected = embed(tcp)
    with Server(unix_socket=socket_path) as uds:
        assert uds.address == f"unix:{socket_path}"
        assert f"msg=serving address=unix:{socket_path}" in uds.log()
        assert uds.health() == "SERVING"
        assert embed(uds) == expected


def test_bundled_client_and_load_tester_reach_it(socket_path, tmp_path):
    with Server(unix_socket=socket_path) as uds:
        r = subprocess.run([bin_path("client", "bert_client"), f"--server={uds.address}",
                            "embed", "--heads=pooled", TEXTS[0]],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Pooled Outputs Shape:(1, 128)" in r.stdout
        report = tmp_path / "load.json"
        r = subprocess.run([bin_path("client", "bert_load"), f"--server={uds.address}",
                            "--concurrency=2", "--duration_s=1", "--warmup_s=0.2",
                            "--lengths=fixed:8", f"--json_out={report}"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(report.read_text())["steps"][0]["ok"] > 0


def test_a_stale_socket_file_does_not_block_a_restart_and_a_drain_removes_it(socket_path):
    killed = Server(unix_socket=socket_path)
    killed.kill()  # SIGKILL: nothing cleans up
    assert os.path.exists(socket_path)
    with Server(unix_socket=socket_path) as again:
        assert again.health() == "SERVING"
        assert again.stop(signal.SIGTERM) == 0
    assert not os.path.exists(socket_path)


def test_a_second_server_does_not_take_over_a_live_socket(socket_path, tmp_path):
    with Server(unix_socket=socket_path) as first:
        second = subprocess.run(
            with_address(first.args, f"unix:{socket_path}"),
            capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stderr
        assert "another process is serving on this socket" in second.stderr
        assert first.health() == "SERVING"  # still reachable: the file was not replaced
    # Nor does it replace something that is not a socket.
    not_a_socket = tmp_path / "plain_file"
    not_a_socket.write_text("keep me")
    r = subprocess.run(with_address(first.args, f"unix:{not_a_socket}"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "exists and is not a socket" in r.stderr, r.stderr
    assert not_a_socket.read_text() == "keep me"


def test_a_path_with_a_space(tmp_path):
    path = tmp_path / "with space" / "bert.sock"
    path.parent.mkdir()
    with Server(unix_socket=str(path), timeout=60) as server:
        assert server.health() == "SERVING"
