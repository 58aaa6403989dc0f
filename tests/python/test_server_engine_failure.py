"""A device fault that leaves the engine unusable for good (a lost GPU context; injected here
on the CPU backend with --debug_engine_fault_word_id): the call whose batch met it gets
INTERNAL, the server turns NOT_SERVING at once, the calls in flight or arriving then get a
clear error (none waits), and the server drains and exits with status 1, so that a supervisor
restarts it. A batch that hangs (a hung GPU), served or in the warm-up, and an engine load that
hangs are stopped by the engine watchdog, also with status 1. A fallback from a default path is
counted in /metrics and logged. A server without the fault keeps serving and exits 0."""
import os
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(__file__))
from server_harness import Server, metric_value, stubs  # noqa: E402

TRIGGER = 1000  # in the tiny model's 1,024-id vocab (the fault is armed after the warm-up)


def request(pb2, ids):
    return pb2.EmbedRequest(inputs=[pb2.Input(tokens=pb2.TokenInput(input_word_ids=ids))],
                            heads=[pb2.HEAD_POOLED])


def test_a_broken_engine_stops_the_server_with_status_1():
    pb2, _ = stubs()
    server = Server(extra=[f"--debug_engine_fault_word_id={TRIGGER}"])
    try:
        stub = server.stub()
        assert len(stub.Embed(request(pb2, [101, 7, 102]), timeout=30).results) == 1
        health_seen = []
        watcher = threading.Thread(target=server.watch_health,
                                   args=(health_seen, "bert.v1.BertService"))
        watcher.start()

        # Calls kept in flight from other threads while the engine breaks.
        codes, stop = [], threading.Event()
        lock = threading.Lock()

        def caller():
            channel = server.channel()
            own = server.stub(channel)
            while not stop.is_set():
                try:
                    own.Embed(request(pb2, [101, 8, 9, 102]), timeout=20)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as e:
                    code = e.code()
                with lock:
                    codes.append(code)
                if code != grpc.StatusCode.OK:
                    break
            channel.close()

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.time() + 30
        while not health_seen and time.time() < deadline:  # the watch has its first answer
            time.sleep(0.01)
        time.sleep(0.2)
        try:
            stub.Embed(request(pb2, [101, TRIGGER, 102]), timeout=30)
            raise AssertionError("the call that broke the engine succeeded")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INTERNAL, e
            assert "injected engine fault" in e.details()

        assert server.proc.wait(timeout=60) == 1, server.log()
        watcher.join(timeout=30)
        # The health service itself said NOT_SERVING before the server went away.
        assert health_seen[:1] == ["SERVING"] and "NOT_SERVING" in health_seen, health_seen
        stop.set()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a call still waits after the server exited"
        # Every call that did not succeed ended with a clear status: the engine's error,
        # UNAVAILABLE while draining, or no server any more; or CANCELLED, for a call that
        # raced the server's exit and was still unanswered when its grace after the drain ran
        # out. Each caller stops at its first such status, so any of the four may race the
        # exit: CI saw one CANCELLED on a heavily loaded machine when that grace was 200 ms,
        # and two (at 1 s) in a sanitized run that took twice its usual time; neither came
        # back in 14 runs here, 6 of them with four busy loops on the two cores.
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.INTERNAL,
                              grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, codes
        assert codes.count(grpc.StatusCode.OK) > 0, codes
        log = server.log()
        assert 'msg="engine failed; stopping"' in log, log
        assert 'msg="engine batch failed" error="INTERNAL: injected engine fault' in log, log
        assert "msg=draining signal=none engine_failed=true" in log, log
        assert "msg=stopped" in log, log
    finally:
        server.kill()


def test_a_hung_engine_is_stopped_by_the_watchdog():
    """A batch that never ends (a hung GPU) fails nothing, so only the watchdog notices: after
    --engine_watchdog_s the server exits 1 and the waiting call ends (the connection goes)."""
    pb2, _ = stubs()
    server = Server(extra=[f"--debug_engine_fault_word_id={TRIGGER}", "--debug_engine_fault=hang",
                           "--engine_watchdog_s=2"])
    try:
        stub = server.stub()
        assert len(stub.Embed(request(pb2, [101, 7, 102]), timeout=30).results) == 1
        started = time.time()
        try:
            stub.Embed(request(pb2, [101, TRIGGER, 102]), timeout=60)
            raise AssertionError("the call of the hung batch was answered")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        assert server.proc.wait(timeout=30) == 1, server.log()
        waited = time.time() - started
        assert 2 <= waited < 15, waited
        assert 'msg="engine batch stuck; exiting"' in server.log(), server.log()
    finally:
        server.kill()


def test_a_warmup_that_hangs_is_stopped_by_the_watchdog():
    """A device that hangs before the server reports SERVING (in the warm-up) is watched too:
    health stays NOT_SERVING and the server exits 1 after --engine_startup_watchdog_s,
    instead of waiting for ever."""
    # The warm-up's batches hold word ids 0 up to the model's positions: 5 is among them.
    # --engine_watchdog_s (served batches) stays off, as on the CPU by default.
    server = Server(extra=["--debug_engine_fault_word_id=5", "--debug_engine_fault=hang_in_warmup",
                           "--engine_startup_watchdog_s=2"], wait_serving=False)
    try:
        started = time.time()
        try:
            assert server.health() == "NOT_SERVING"
        except grpc.RpcError:
            pass  # the watchdog was quicker than this check
        assert server.proc.wait(timeout=30) == 1, server.log()
        # The check's own start lags the hang's: 1.5, not the limit's 2 s, is the sure bound.
        assert 1.5 <= time.time() - started < 15
        log = server.log()
        assert 'msg="engine batch stuck; exiting" phase=warm-up' in log, log
        assert "warm-up done" not in log and "msg=serving" not in log, log
    finally:
        server.kill()


def test_a_load_that_hangs_is_stopped_by_the_watchdog():
    """The engine's creation is watched too (a GPU context that never comes up): the
    server exits 1 after --engine_startup_watchdog_s, health never having said SERVING."""
    server = Server(metrics=True, extra=["--debug_engine_fault_word_id=0",
                                         "--debug_engine_fault=hang_in_load",
                                         "--engine_startup_watchdog_s=2"], wait_serving=False)
    try:
        serving = metric_value(server.metrics_text(), "bert_serving")
        assert server.proc.wait(timeout=30) == 1, server.log()
        assert serving == 0
        log = server.log()
        assert 'msg="engine load stuck; exiting" phase=load' in log, log
        assert "model loaded" not in log, log
    finally:
        server.kill()


def test_fallbacks_are_counted_in_metrics_and_logged_with_the_flag_that_avoids_them():
    """A fallback from a default path (on the CUDA engine: a graph or a tuning it could not
    use; injected here) keeps the answers but costs speed: bert_engine_fallbacks_total{path}
    counts it, from 0 at startup, and the log names the flag that turns the path off."""
    pb2, _ = stubs()
    with Server(metrics=True, extra=[f"--debug_engine_fault_word_id={TRIGGER}",
                                     "--debug_engine_fault=fallback"]) as server:
        def fallbacks():
            return metric_value(server.metrics_text(), "bert_engine_fallbacks_total",
                                {"path": "debug_fault"})

        assert 'bert_engine_fallbacks_total{path="debug_fault"} 0' in server.metrics_text()
        stub = server.stub()
        assert len(stub.Embed(request(pb2, [101, 7, 102]), timeout=30).results) == 1
        assert fallbacks() == 0
        reply = stub.Embed(request(pb2, [101, TRIGGER, 102]), timeout=30)
        assert len(reply.results) == 1  # served
        assert fallbacks() == 1
        assert len(stub.Embed(request(pb2, [101, 8, 102]), timeout=30).results) == 1
        assert fallbacks() == 1
        assert len(stub.Embed(request(pb2, [101, TRIGGER, 9, 102]), timeout=30).results) == 1
        assert fallbacks() == 2
        assert server.health() == "SERVING"
        assert server.stop() == 0
        warnings = [line for line in server.log().splitlines()
                    if "engine fell back from a default path" in line]
        assert len(warnings) == 2, server.log()
        assert "path=debug_fault new=1 total=2" in warnings[1], warnings
        assert 'avoid="--debug_engine_fault_word_id=-1"' in warnings[1], warnings


def test_without_the_fault_the_same_calls_are_answered_and_sigterm_exits_0():
    pb2, _ = stubs()
    with Server(extra=[f"--debug_engine_fault_word_id={TRIGGER}", "--engine_watchdog_s=1"]) as server:
        stub = server.stub()
        for ids in ([101, 7, 102], [101, TRIGGER - 1, 102], [101, 8, 9, 102]):
            assert len(stub.Embed(request(pb2, ids), timeout=30).results) == 1
            time.sleep(0.6)  # the watchdog checks every 0.25 s: an idle engine is not stuck
        assert server.health() == "SERVING"
        assert server.stop() == 0
        assert "engine failed" not in server.log()
