"""Connections and restarts, as a fleet of servers behind one address sees them: a draining
server tells its clients to go elsewhere (GOAWAY) and serves the calls it has taken, so that
restarting one replica fails no call another can take (with --drain_delay_s and clients that
follow health: none at all; without: at most the few calls that cross gRPC's GOAWAY, which end
CANCELLED); connections are aged (--max_connection_age_s) and idle ones closed, dead peers found
by keepalive pings, and clients that ping too often refused, as the flags say. The
connection-level checks speak HTTP/2 by hand (raw_http2.py) to see the server's GOAWAY and PING
frames."""
import collections
import json
import signal
import subprocess
import threading
import time

import grpc
import pytest
from raw_http2 import ENHANCE_YOUR_CALM, RawHttp2
from server_harness import Server, metric_value, run_to_exit, stubs


def heavy_request(pb2):
    # Long enough inputs that a batch takes a while on the tiny model: a drain has calls to wait for.
    text = "the quick brown fox jumps over the lazy dog " * 20
    return pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a=text))] * 8,
                            seq_length=256)


def light_request(pb2):
    return pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a="hello"))])


def call_in_a_loop(stub, request, stop, outcomes, lock):
    while not stop.is_set():
        try:
            stub.Embed(request, timeout=60)
            code = "OK"
        except grpc.RpcError as e:
            code = f"{e.code().name}: {e.details()}"
        with lock:
            outcomes[code] += 1


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def restart_one_of_two(a, b, channel_options, request, callers):
    """`callers` threads call Embed without pause over one channel to a and b; SIGTERM to a once
    some calls are answered; returns the outcomes once b alone has answered more."""
    _, pb2_grpc = stubs()
    channel = grpc.insecure_channel(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}",
                                    options=channel_options)
    stub = pb2_grpc.BertServiceStub(channel)
    outcomes, lock, stop = collections.Counter(), threading.Lock(), threading.Event()
    threads = [threading.Thread(target=call_in_a_loop, args=(stub, request, stop, outcomes, lock))
               for _ in range(callers)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: outcomes["OK"] >= 5, 120, "answers before the signal")
        if a.metrics_port is not None:  # the signal comes while a is answering calls
            wait_for(lambda: (metric_value(a.metrics_text(), "bert_requests_in_flight") or 0) >= 2,
                     120, "calls in flight on the server to restart")
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(timeout=120) == 0, a.log()
        with lock:
            at_exit = outcomes["OK"]
        wait_for(lambda: outcomes["OK"] >= at_exit + 5, 120, "answers after the exit")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        channel.close()
    return outcomes


def test_a_restarted_server_sends_its_clients_elsewhere():
    """Eight callers on one round-robin channel over two servers; one server gets SIGTERM while
    calls are running on it. Its clients are told to go elsewhere (GOAWAY) and the calls it has
    taken are answered. Only a call that crosses the GOAWAY may fail, CANCELLED by gRPC before
    the service sees it (gRPC C++'s shutdown has no grace period), which these slow calls
    rarely do. (Before the drain sent GOAWAY, every call that reached the draining server got
    UNAVAILABLE: bench/restart_under_load.py --heavy --callers 8, bench/RESULTS_server.md.)"""
    pb2, _ = stubs()
    with Server(metrics=True) as a, Server() as b:
        outcomes = restart_one_of_two(a, b, [("grpc.lb_policy_name", "round_robin")],
                                      heavy_request(pb2), callers=8)
        failed = {code: n for code, n in outcomes.items() if code != "OK"}
        assert all(code.startswith("CANCELLED") for code in failed), outcomes
        # Each caller has one call in flight: at most one of its calls can cross the GOAWAY.
        assert sum(failed.values()) <= 8, outcomes
        # The signal came while calls were being answered by a.
        assert "msg=draining" in a.log() and "in_flight=0" not in a.log(), a.log()[-3000:]
        assert b.health() == "SERVING"


def test_with_a_drain_delay_clients_that_follow_health_lose_no_call():
    """The same with --drain_delay_s and clients that check health (gRPC's client-side health
    checking, as a load balancer would): during the delay the channel sends its calls to b
    while a still answers those it has, so the GOAWAY finds no call on its way. Sixteen
    callers of a cheap call keep the window busy; no call may fail."""
    pb2, _ = stubs()
    config = json.dumps({"loadBalancingConfig": [{"round_robin": {}}],
                         "healthCheckConfig": {"serviceName": ""}})
    with Server(extra=["--drain_delay_s=2"]) as a, Server() as b:
        outcomes = restart_one_of_two(a, b, [("grpc.service_config", config)],
                                      light_request(pb2), callers=16)
        assert set(outcomes) == {"OK"}, outcomes
        assert "draining after the delay" in a.log(), a.log()[-3000:]


def test_with_the_bundled_service_config_a_restart_fails_no_call():
    """client/service_config.json (round robin, health checking, retries of UNAVAILABLE and
    CANCELLED: every method is idempotent) and no drain delay: a call that crosses the GOAWAY
    is tried again on the other server. Sixteen callers of a cheap call; no call may fail."""
    from repo_paths import REPO
    pb2, _ = stubs()
    config = (REPO / "client" / "service_config.json").read_text()
    with Server() as a, Server() as b:
        outcomes = restart_one_of_two(a, b, [("grpc.service_config", config)],
                                      light_request(pb2), callers=16)
        assert set(outcomes) == {"OK"}, outcomes


def test_drain_delay_keeps_serving_with_health_not_serving():
    pb2, _ = stubs()
    request = light_request(pb2)
    with Server(extra=["--drain_delay_s=3"], metrics=True) as s:
        stub = s.stub()
        assert s.probe("/readyz") == (200, "SERVING\n")
        signalled = time.monotonic()
        s.enter_drain_delay()
        # Load balancers see NOT_SERVING (gRPC health, and HTTP's /readyz for those that speak
        # only HTTP); callers are still answered, on old and new connections.
        assert s.health() == "NOT_SERVING"
        assert s.probe("/readyz") == (503, "NOT_SERVING\n")
        assert s.probe("/livez") == (200, "OK\n")
        assert len(stub.Embed(request, timeout=30).results) == 1
        assert len(s.stub().Embed(request, timeout=30).results) == 1
        assert "msg=draining" not in s.log(), "the checks above ran past the delay"
        assert s.proc.wait(timeout=30) == 0, s.log()
        assert time.monotonic() - signalled >= 3
        assert "msg=stopped" in s.log()


def test_a_second_signal_ends_the_drain_delay():
    with Server(extra=["--drain_delay_s=600"]) as s:
        s.enter_drain_delay()
        assert s.health() == "NOT_SERVING"
        s.proc.send_signal(signal.SIGINT)
        assert s.proc.wait(timeout=30) == 0, s.log()
        assert "msg=stopped" in s.log()


def test_stream_messages_during_the_drain_are_refused_and_the_server_still_stops():
    """An open EmbedStream could keep a drain going for as long as its client likes: its
    messages after the signal are answered UNAVAILABLE (the client should open its next stream
    elsewhere), and the stream is ended a second after the rest is done."""
    pb2, _ = stubs()
    with Server() as s:
        requests = []
        cv = threading.Condition()

        def messages():
            sent = 0
            while True:
                with cv:
                    cv.wait_for(lambda: len(requests) > sent)
                    item = requests[sent]
                sent += 1
                if item is None:
                    return
                yield item

        def send(request):
            with cv:
                requests.append(request)
                cv.notify_all()

        responses = s.stub().EmbedStream(messages(), timeout=60)
        send(pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a="before"))],
                              request_id="before"))
        first = next(responses)
        assert first.request_id == "before" and not first.HasField("error")
        s.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        wait_for(lambda: "msg=draining" in s.log(), 30, "the drain")
        send(pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a="after"))],
                              request_id="after"))
        second = next(responses)
        assert second.request_id == "after"
        assert second.error.code == grpc.StatusCode.UNAVAILABLE.value[0], second
        assert "open the next stream" in second.error.message
        with pytest.raises(grpc.RpcError):
            next(responses)  # ended by the drain, a second after the rest was done
        ended = time.monotonic()
        send(None)
        assert s.proc.wait(timeout=30) == 0, s.log()
        assert ended - signalled < 10
        assert "msg=stopped" in s.log(), s.log()[-3000:]  # not the bounded exit


def wait_closed(connection, timeout):
    assert connection.closed.wait(timeout), "the server did not close the connection"


def test_max_connection_age_sends_goaway_and_lets_calls_in_progress_finish():
    with Server(extra=["--max_connection_age_s=1"]) as s:
        idle = RawHttp2("127.0.0.1", s.port)
        streaming = RawHttp2("127.0.0.1", s.port)
        stream = streaming.open_stream("/bert.v1.BertService/EmbedStream")
        wait_closed(idle, 10)  # nothing in progress: closed at the GOAWAY
        assert idle.goaways and 0.85 <= idle.goaways[0].at - idle.connected_at < 5
        time.sleep(1.5)
        # The stream in progress goes on (no grace limit): told to go, not cut.
        assert streaming.goaways and streaming.goaways[-1].last_stream == stream
        assert not streaming.closed.is_set()
        streaming.close()


def test_max_connection_age_grace_closes_what_is_still_in_progress():
    with Server(extra=["--max_connection_age_s=1", "--max_connection_age_grace_s=1"]) as s:
        streaming = RawHttp2("127.0.0.1", s.port)
        streaming.open_stream("/bert.v1.BertService/EmbedStream")
        wait_closed(streaming, 10)
        assert streaming.goaways
        assert streaming.closed_at - streaming.goaways[0].at >= 0.9


def client_ports(server_port):
    """The client ports of the TCP connections open to `server_port` on this host, read from
    the server's side of each in /proc/net (gRPC's sockets are IPv6 ones, with IPv4 addresses
    mapped into them)."""
    ports = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            next(f)
            for line in f:
                local, remote, state = line.split()[1:4]
                if state == "01" and int(local.split(":")[1], 16) == server_port:  # ESTABLISHED
                    ports.add(int(remote.split(":")[1], 16))
    return ports


class ConnectionsSeen:
    """Every client port seen connected to a server port while the `with` block runs."""

    def __init__(self, server_port):
        self.port, self.ports, self._stop = server_port, set(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self._stop.is_set():
            self.ports |= client_ports(self.port)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_calls_across_connection_ages_all_succeed():
    """A client calling without pause through several GOAWAYs: gRPC opens the next connection
    and retries what the old one had not started; nothing fails."""
    pb2, _ = stubs()
    with Server(extra=["--max_connection_age_s=1"]) as s:
        stub = s.stub()
        outcomes, lock, stop = collections.Counter(), threading.Lock(), threading.Event()
        callers = [threading.Thread(target=call_in_a_loop,
                                    args=(stub, light_request(pb2), stop, outcomes, lock))
                   for _ in range(4)]
        with ConnectionsSeen(s.port) as seen:
            for t in callers:
                t.start()
            time.sleep(3.5)
            stop.set()
            for t in callers:
                t.join(timeout=60)
        assert set(outcomes) == {"OK"} and outcomes["OK"] > 20, outcomes
        assert len(seen.ports) >= 3, seen.ports  # the first connection and at least two more


@pytest.mark.parametrize("api", ["unary", "stream"])
def test_the_load_tester_sees_no_error_across_connection_ages(api, tmp_path):
    """bert_load's unary calls move to new connections without an error; its streams (one per
    channel for the whole run) are calls in progress and stay on theirs."""
    from repo_paths import bin_path
    with Server(extra=["--max_connection_age_s=1"]) as s:
        report = tmp_path / "report.json"
        with ConnectionsSeen(s.port) as seen:
            r = subprocess.run([bin_path("client", "bert_load"), f"--server={s.address}",
                                "--concurrency=8", "--channels=4", "--duration_s=3",
                                "--warmup_s=0.5", f"--api={api}", f"--json_out={report}"],
                               capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        step = json.loads(report.read_text())["steps"][0]
        # Calls throughout the 3 s (three connection ages); how many depends on the machine
        # (over 100 on an idle 2-core one, 75 with another build running beside it).
        assert not step["errors"] and step["ok"] >= 20, step
        if api == "unary":
            assert len(seen.ports) >= 8, seen.ports  # each of the 4 channels reconnected


def test_max_connection_idle_closes_a_connection_without_calls():
    with Server(extra=["--max_connection_idle_s=1"]) as s:
        idle = RawHttp2("127.0.0.1", s.port)
        wait_closed(idle, 10)
        assert idle.goaways and idle.closed_at - idle.connected_at >= 0.9


def test_keepalive_closes_the_connection_of_a_peer_that_does_not_answer():
    with Server(extra=["--keepalive_time_s=1", "--keepalive_timeout_s=1"]) as s:
        silent = RawHttp2("127.0.0.1", s.port, answer_pings=False)
        silent.open_stream("/bert.v1.BertService/EmbedStream")
        alive = RawHttp2("127.0.0.1", s.port)
        alive.open_stream("/bert.v1.BertService/EmbedStream")
        wait_closed(silent, 10)
        assert silent.pings and silent.closed_at - silent.pings[0] >= 0.9
        time.sleep(1.5)
        assert len(alive.pings) >= 2 and not alive.closed.is_set()
        alive.close()


def ping_often(connection, times=10):
    for _ in range(times):
        try:
            connection.send_ping()
        except OSError:
            return
        time.sleep(0.05)


def test_a_client_that_pings_too_often_is_refused_unless_the_flags_allow_it():
    with Server() as s:  # gRPC's policy: at most one ping per 5 minutes without data
        eager = RawHttp2("127.0.0.1", s.port)
        ping_often(eager)
        wait_closed(eager, 10)
        assert [g.error_code for g in eager.goaways] == [ENHANCE_YOUR_CALM]
        assert eager.goaways[0].debug == b"too_many_pings"
    with Server(extra=["--keepalive_min_client_ping_interval_s=0",
                       "--keepalive_permit_without_calls"]) as s:
        eager = RawHttp2("127.0.0.1", s.port)
        ping_often(eager)
        time.sleep(0.5)
        assert not eager.goaways and not eager.closed.is_set()
        eager.close()


@pytest.mark.parametrize("flag", ["--drain_delay_s=-1", "--drain_timeout_s=-1",
                                  "--max_connection_age_s=-1", "--max_connection_idle_s=-5",
                                  "--max_connection_age_grace_s=2147484",
                                  "--keepalive_time_s=0", "--keepalive_timeout_s=0",
                                  "--keepalive_min_client_ping_interval_s=-1"])
def test_an_out_of_range_connection_flag_stops_startup_with_status_2(flag):
    r = run_to_exit(flag)
    assert r.returncode == 2, (flag, r.returncode, r.stderr[-2000:])
    assert "out of range" in r.stderr
