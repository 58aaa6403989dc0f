"""bert_server against clients that try to make it hold memory: a client that never reads
its answers, requests whose repeated fields would multiply when parsed, and answers over the
message limit. Each test starts its own server (CPU backend, tiny golden model)."""
import os
import sys
import time

import grpc
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from raw_http2 import RawHttp2  # noqa: E402
from server_harness import Server, metric_value, stubs  # noqa: E402


def wait_for(predicate, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def peak_rss_mb(server):
    """The server process's peak resident memory so far (VmHWM), in MiB."""
    with open(f"/proc/{server.proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def embed_ok(server, pb2):
    return pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a="hello world"))],
                            heads=[pb2.HEAD_POOLED])


@pytest.mark.parametrize("method", ["Embed", "EmbedStream"])
def test_answers_the_client_does_not_read_keep_their_admission(method):
    """An answer being sent gives its request's place to the next request, up to as many
    answers being sent as the server admits; past that, unread answers keep their places."""
    pb2, _ = stubs()
    big = pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a="hello"))],
                           heads=[pb2.HEAD_SEQUENCE], seq_length=128).SerializeToString()
    # A send timeout far beyond the test: here only the reader's going frees the places.
    with Server(extra=["--max_concurrent_requests=2", "--send_timeout_s=300"],
                metrics=True) as s:
        def counted(name, labels=None):
            return metric_value(s.metrics_text(), name, labels) or 0

        reader = RawHttp2("127.0.0.1", s.port, initial_window=0)  # lets nothing through

        def two_unread():
            if method == "Embed":
                for _ in range(2):
                    reader.open_call("/bert.v1.BertService/Embed", big)
            else:
                reader.open_call("/bert.v1.BertService/EmbedStream", [big, big])

        stub = s.stub()
        two_unread()
        # Both are computed (recorded OK) but cannot be sent: they are held, as the two
        # answers being sent, and have given their places to the next requests.
        assert wait_for(lambda: counted("bert_requests_total",
                                        {"method": method, "code": "OK"}) == 2)
        time.sleep(0.3)
        assert counted("bert_requests_in_flight") == 2
        assert len(stub.Embed(embed_ok(s, pb2), timeout=10).results) == 1
        # (Its place comes back when the call is done, which can be just after we have it.)
        assert wait_for(lambda: counted("bert_requests_in_flight") == 2)
        # Two more: no room among the answers being sent, so they keep their places, and
        # every other client is refused.
        two_unread()
        ours = 1 if method == "Embed" else 0  # the call above, if counted with the reader's
        assert wait_for(lambda: counted("bert_requests_total",
                                        {"method": method, "code": "OK"}) == 4 + ours)
        time.sleep(0.3)
        assert counted("bert_requests_in_flight") == 4
        with pytest.raises(grpc.RpcError) as refused:
            stub.Embed(embed_ok(s, pb2), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The reader goes: its calls end, their places are free again, and the metrics say
        # that the answers recorded OK did not reach it.
        assert counted("bert_calls_cancelled_total", {"method": method}) == 0
        reader.close()
        assert wait_for(lambda: counted("bert_requests_in_flight") == 0)
        assert wait_for(lambda: counted("bert_calls_cancelled_total", {"method": method}) ==
                        (4 if method == "Embed" else 2))
        assert len(stub.Embed(embed_ok(s, pb2), timeout=10).results) == 1


def test_unread_tokenize_answers_keep_their_places():
    """Tokenize answers are outside the answers' byte budget, so they do not give their places
    to the next requests while they are sent: two unread ones fill a limit of two."""
    pb2, _ = stubs()
    wire = pb2.TokenizeRequest(inputs=[pb2.TextInput(text_a="hello world")] * 8,
                               seq_length=128).SerializeToString()
    with Server(extra=["--max_concurrent_requests=2", "--send_timeout_s=300"],
                metrics=True) as s:
        def counted(name, labels=None):
            return metric_value(s.metrics_text(), name, labels) or 0

        reader = RawHttp2("127.0.0.1", s.port, initial_window=0)  # lets nothing through
        for _ in range(2):
            reader.open_call("/bert.v1.BertService/Tokenize", wire)
        assert wait_for(lambda: counted("bert_requests_total",
                                        {"method": "Tokenize", "code": "OK"}) == 2)
        time.sleep(0.3)
        assert counted("bert_requests_in_flight") == 2
        with pytest.raises(grpc.RpcError) as refused:
            s.stub().Embed(embed_ok(s, pb2), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reader.close()
        assert wait_for(lambda: counted("bert_requests_in_flight") == 0)


@pytest.mark.parametrize("method, field, count, message", [
    ("Embed", 0x0a, 300, "inputs: 300 inputs exceed the limit of 256"),
    ("Tokenize", 0x0a, 300, "inputs: 300 inputs exceed the limit of 256"),
    ("Decode", 0x0a, 300, "inputs: 300 inputs exceed the limit of 256"),
    ("Embed", 0x20, 9, "layers: 9 entries exceed the limit of 8"),
    ("Embed", 0x18, 9, "heads: 9 entries exceed the limit of 8"),
])
def test_repeated_fields_over_the_limits_are_refused_as_sent(method, field, count, message):
    # Written as a hostile client would: empty inputs (two bytes each on the wire), or
    # unpacked varints; the tiny model has 4 layers.
    pb2, _ = stubs()
    entry = bytes([field, 0x00]) if field == 0x0a else bytes([field, 0x01])
    wire = entry * count
    if field != 0x0a:  # one text input, then the repeated field
        one_input = pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a="a"))])
        wire = one_input.SerializeToString() + wire
    with Server() as s:
        channel = s.channel()
        call = channel.unary_unary(f"/bert.v1.BertService/{method}")
        with pytest.raises(grpc.RpcError) as e:
            call(wire, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details() == message


def test_two_million_empty_inputs_do_not_take_the_server_s_memory():
    # 4 MB on the wire; parsed, each empty Input would be a message object (hundreds of
    # bytes): refused before parsing, the server's memory stays where it was.
    wire = b"\x0a\x00" * 2_000_000
    with Server() as s:
        before = peak_rss_mb(s)
        for method in ("Tokenize", "Decode"):
            call = s.channel().unary_unary(f"/bert.v1.BertService/{method}")
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as e:
                    call(wire, timeout=30)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Peak resident memory grew by the messages themselves at most, not by parsed objects
        # (parsing one would have added several hundred MB).
        assert peak_rss_mb(s) - before < 100, (before, peak_rss_mb(s))


def test_sixteen_million_ids_are_refused_before_they_are_parsed():
    # Under the 16 MiB request limit, one byte per id; parsed and copied, 128 MB: refused as
    # sent (at most max_inputs_per_request x max_seq_length ids), the memory stays.
    pb2, _ = stubs()
    wire = pb2.DecodeRequest(inputs=[pb2.TokenIds(ids=[0] * 16_000_000)]).SerializeToString()
    with Server() as s:
        before = peak_rss_mb(s)
        with pytest.raises(grpc.RpcError) as e:
            s.channel().unary_unary("/bert.v1.BertService/Decode")(wire, timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details() == \
            "inputs: 16000000 ids exceed the limit of 131072 in one request"
        assert peak_rss_mb(s) - before < 60, (before, peak_rss_mb(s))


def _varint(n):
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def _field(number, payload):
    """`payload` as the length-delimited field `number`."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


UNKNOWN = b"\x78\x00" * 7_000_000  # field 15, which no request message has: 14 MB


@pytest.mark.parametrize("method, wire", [
    # EmbedRequest.inputs[0]: in its Input, in the Input's TextInput, in its TokenInput.
    ("Embed", _field(1, _field(1, _field(1, b"hi")) + UNKNOWN)),
    ("Embed", _field(1, _field(1, _field(1, b"hi") + UNKNOWN))),
    ("Embed", _field(1, _field(2, _field(1, b"\x65\x66") + UNKNOWN))),
    # TokenizeRequest.inputs[0], a TextInput.
    ("Tokenize", _field(1, _field(1, b"hi") + UNKNOWN)),
], ids=["embed-input", "embed-text", "embed-tokens", "tokenize-text"])
def test_unknown_fields_nested_in_inputs_are_refused_before_parsing(method, wire):
    # Parsed, the parser would keep each as an unknown field, at 16 bytes or more each (the
    # scan once counted the top level only).
    with Server() as s:
        before = peak_rss_mb(s)
        with pytest.raises(grpc.RpcError) as e:
            s.channel().unary_unary(f"/bert.v1.BertService/{method}")(wire, timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details().startswith("the request has 7000000 unknown fields")
        assert peak_rss_mb(s) - before < 60, (before, peak_rss_mb(s))


def test_token_inputs_longer_than_any_request_are_refused_before_parsing():
    # 14 million ids in one token input (one byte each on the wire; 4 bytes each parsed, and
    # copied again before truncation): refused before parsing.
    pb2, _ = stubs()
    tokens = pb2.TokenInput(input_word_ids=[1] * 14_000_000)
    wire = pb2.EmbedRequest(inputs=[pb2.Input(tokens=tokens)]).SerializeToString()
    with Server() as s:
        info = s.stub().GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
        limit = info.limits.max_inputs_per_request * info.limits.max_seq_length
        before = peak_rss_mb(s)
        with pytest.raises(grpc.RpcError) as e:
            s.channel().unary_unary("/bert.v1.BertService/Embed")(wire, timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details() == \
            f"inputs: 14000000 input_word_ids exceed the limit of {limit} in one request"
        assert peak_rss_mb(s) - before < 60, (before, peak_rss_mb(s))
        # As many as the longest request computes are still taken (and truncated).
        tokens = pb2.TokenInput(input_word_ids=[1] * limit)
        answer = s.stub().Embed(pb2.EmbedRequest(inputs=[pb2.Input(tokens=tokens)],
                                                 heads=[pb2.HEAD_POOLED]), timeout=60)
        assert answer.results[0].truncated


@pytest.mark.parametrize("method", ["Embed", "Tokenize", "Decode"])
def test_what_the_count_cannot_read_is_refused_not_skipped(method):
    # A group field (which protobuf's parser skips, with everything after it) before a
    # million empty inputs: refused as it is sent, not parsed.
    wire = b"\x7b\x7c" + b"\x0a\x00" * 1_000_000
    with Server() as s:
        before = peak_rss_mb(s)
        with pytest.raises(grpc.RpcError) as e:
            s.channel().unary_unary(f"/bert.v1.BertService/{method}")(wire, timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details() == "the request is not a valid protobuf message"
        # Parsed, it took ~190 MB more.
        assert peak_rss_mb(s) - before < 50, (before, peak_rss_mb(s))


@pytest.mark.parametrize("method", ["Embed", "EmbedStream"])
def test_answers_nobody_reads_are_bounded_in_bytes(method):
    """Within the concurrency limits, a client that reads nothing could still make the server
    hold 2 x (limit) x (largest answer); the byte budget refuses the answer that would pass
    it."""
    pb2, _ = stubs()
    budget = 1 << 20
    with Server(extra=[f"--max_answer_memory_mb={budget >> 20}", f"--max_message_bytes={budget}",
                       "--send_timeout_s=300"], metrics=True) as s:
        stub = s.stub()
        info = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
        assert info.limits.max_answer_memory_bytes == budget
        hidden = info.config.hidden_size

        # The server's estimate: 128 padded float32 rows per input, 1,024 bytes of framing
        # per answer and 176 per input. Three answers fit in the budget, a fourth does not.
        def answer_bytes(n):
            return 1024 + n * (128 * hidden * 4 + 176)

        n = 1
        while answer_bytes(n) <= budget // 4:
            n += 1
        assert 3 * answer_bytes(n) <= budget, (n, hidden)
        big = pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a="hello"))] * n,
                               heads=[pb2.HEAD_SEQUENCE], seq_length=128)

        def held():
            return metric_value(s.metrics_text(), "bert_answer_memory_bytes") or 0

        reader = RawHttp2("127.0.0.1", s.port, initial_window=0)  # lets nothing through
        wire = big.SerializeToString()
        if method == "Embed":
            for _ in range(3):
                reader.open_call("/bert.v1.BertService/Embed", wire)
        else:
            reader.open_call("/bert.v1.BertService/EmbedStream", [wire] * 3)
        assert wait_for(lambda: held() == 3 * answer_bytes(n)), held()
        with pytest.raises(grpc.RpcError) as refused:
            stub.Embed(big, timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "answers being computed or sent" in refused.value.details()
        # Small answers still fit; the unread ones are still held (the small one's bytes
        # come back when its call is done, which can be just after the client has it).
        assert len(stub.Embed(embed_ok(s, pb2), timeout=10).results) == 1
        assert wait_for(lambda: held() == 3 * answer_bytes(n)), held()
        # The reader goes: its answers are dropped and the budget is free again.
        reader.close()
        assert wait_for(lambda: held() == 0), held()
        assert len(stub.Embed(big, timeout=10).results) == n


def test_unread_decode_answers_are_bounded_in_bytes():
    """Decode answers count in the same byte budget, from before their texts are built until
    they are sent: one unread answer of half a megabyte leaves no room for another in 1 MiB."""
    pb2, _ = stubs()
    # [unused0]..[unused98]: 10 tokens of 9 bytes and 89 of 10, each counted with one more.
    # One byte per id on the wire: the request (50 KB) fits the connection's first window.
    ids = list(range(1, 100)) * 500
    bound = 500 * (10 * 10 + 89 * 11) + 6
    wire = pb2.DecodeRequest(inputs=[pb2.TokenIds(ids=ids)]).SerializeToString()
    assert len(wire) < 60_000 and 2 * bound > (1 << 20)
    with Server(extra=["--max_answer_memory_mb=1", f"--max_message_bytes={1 << 20}",
                       "--send_timeout_s=300"], metrics=True) as s:
        def held():
            return metric_value(s.metrics_text(), "bert_answer_memory_bytes") or 0

        reader = RawHttp2("127.0.0.1", s.port, initial_window=0)  # lets nothing through
        reader.open_call("/bert.v1.BertService/Decode", wire)
        assert wait_for(lambda: held() == bound), held()
        with pytest.raises(grpc.RpcError) as refused:
            s.stub().Decode(pb2.DecodeRequest.FromString(wire), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "answers being computed or sent" in refused.value.details()
        reader.close()
        assert wait_for(lambda: held() == 0), held()
        text = s.stub().Decode(pb2.DecodeRequest.FromString(wire), timeout=10).texts[0]
        assert len(text) == bound - 6 - 1  # [unused] tokens: no clean-up, no space first
        assert wait_for(lambda: held() == 0), held()


def test_an_answer_memory_budget_below_the_message_limit_is_refused_at_startup():
    with pytest.raises(RuntimeError) as e:
        with Server(extra=["--max_answer_memory_mb=1", f"--max_message_bytes={2 << 20}"]):
            pass
    assert "--max_answer_memory_mb must be 0 (unlimited) or hold the largest answer" in str(e.value)


@pytest.mark.parametrize("method", ["Embed", "EmbedStream"])
def test_an_answer_nobody_takes_is_cancelled_after_the_send_timeout(method):
    pb2, _ = stubs()
    big = pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a="hello"))],
                           heads=[pb2.HEAD_SEQUENCE], seq_length=128).SerializeToString()
    with Server(extra=["--max_concurrent_requests=2", "--send_timeout_s=1"], metrics=True) as s:
        def in_flight():
            return metric_value(s.metrics_text(), "bert_requests_in_flight") or 0

        reader = RawHttp2("127.0.0.1", s.port, initial_window=0)  # stays open, reads nothing
        if method == "Embed":
            for _ in range(2):
                reader.open_call("/bert.v1.BertService/Embed", big)
        else:
            reader.open_call("/bert.v1.BertService/EmbedStream", [big, big])
        assert wait_for(lambda: metric_value(s.metrics_text(), "bert_requests_total",
                                             {"method": method, "code": "OK"}) == 2)
        # A second or so later the server gives up on them: their places are free again,
        # although the client is still connected, and the metrics say why.
        assert wait_for(lambda: in_flight() == 0, timeout=10)
        abandoned = metric_value(s.metrics_text(), "bert_answers_abandoned_total")
        assert abandoned == (2 if method == "Embed" else 1), abandoned  # a stream counts once
        cancelled = metric_value(s.metrics_text(), "bert_calls_cancelled_total",
                                 {"method": method})
        assert cancelled == abandoned, cancelled
        assert len(s.stub().Embed(embed_ok(s, pb2), timeout=10).results) == 1
        reader.close()


def test_a_drain_does_not_wait_for_answers_nobody_takes():
    pb2, _ = stubs()
    big = pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a="hello"))],
                           heads=[pb2.HEAD_SEQUENCE], seq_length=128).SerializeToString()
    with Server(extra=["--send_timeout_s=2", "--drain_timeout_s=20"], metrics=True) as s:
        reader = RawHttp2("127.0.0.1", s.port, initial_window=0)
        reader.open_call("/bert.v1.BertService/Embed", big)
        assert wait_for(lambda: metric_value(s.metrics_text(), "bert_requests_total",
                                             {"method": "Embed", "code": "OK"}) == 1)
        started = time.time()
        assert s.stop() == 0
        took = time.time() - started
        reader.close()
        # The drain ends once the send timeout has freed the answer's place, and the server
        # stops in order (not the bounded exit of a drain that timed out).
        assert took < 10, took
        log = s.log()
        assert "msg=stopped" in log and "requests still in flight" not in log, log[-2000:]


def test_an_answer_over_the_message_limit_is_refused_not_cut():
    pb2, _ = stubs()
    # 2 inputs x 8 layer tensors of 64 rows x 128 x 4 bytes = 512 KiB of tensors: over a
    # 300 KiB limit. The early estimate (before inference) refuses it; the check of the
    # answer's real size behind it cannot be reached this way (the estimate is generous), and
    # is tested on its own (server/grpc/bert_service_test.cc).
    request = pb2.EmbedRequest(
        inputs=[pb2.Input(text=pb2.TextInput(text_a="hello")) for _ in range(2)],
        heads=[pb2.HEAD_ENCODER_OUTPUTS], layers=[0, 1, 2, 3, -1, -2, -3, -4], seq_length=64)
    with Server(extra=[f"--max_message_bytes={300 * 1024}"]) as s:
        with pytest.raises(grpc.RpcError) as e:
            s.stub().Embed(request, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "message limit" in e.value.details()


def test_requests_are_limited_apart_from_responses():
    pb2, _ = stubs()
    with Server(extra=["--max_request_bytes=4096"]) as s:
        stub = s.stub()
        limits = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10).limits
        assert limits.max_request_bytes == 4096
        assert limits.max_message_bytes == 64 << 20
        long_text = pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a="a " * 2500))])
        with pytest.raises(grpc.RpcError) as e:
            stub.Embed(long_text, timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # An answer far larger than 4 KiB still goes out.
        big_answer = pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a="hello"))],
                                      heads=[pb2.HEAD_ENCODER_OUTPUTS], seq_length=128)
        response = stub.Embed(big_answer, timeout=10)
        assert response.ByteSize() > 50 * 4096  # 4 layers x 128 x 128 floats


def test_slow_metrics_clients_do_not_keep_the_scrapes_out():
    import http.client
    import socket
    import threading
    with Server(metrics=True) as s:
        stop = threading.Event()

        def drip(sock):  # one byte of a request head every 0.3 s, never the end of it
            try:
                while not stop.is_set():
                    sock.sendall(b"G")
                    time.sleep(0.3)
            except OSError:
                pass

        # From one address: 8 are served at once (and held until their heads are overdue),
        # the others closed at once.
        slow = [socket.create_connection(("127.0.0.1", s.metrics_port), timeout=10)
                for _ in range(10)]
        drippers = [threading.Thread(target=drip, args=(c,), daemon=True) for c in slow]
        for d in drippers:
            d.start()
        time.sleep(0.2)
        for _ in range(3):  # a scraper from another address
            started = time.time()
            page = http.client.HTTPConnection("127.0.0.1", s.metrics_port, timeout=5,
                                              source_address=("127.0.0.2", 0))
            page.request("GET", "/metrics")
            answer = page.getresponse()
            assert answer.status == 200 and b"bert_requests_in_flight" in answer.read()
            page.close()
            assert time.time() - started < 1.0
        # A dripping client is answered 408 and cut off once its head is overdue (2 s from
        # its connection).
        slow[0].settimeout(10)
        started = time.time()
        try:
            assert slow[0].recv(1024).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        except ConnectionResetError:
            pass  # closed, and a byte dripped after it was answered with a reset
        assert time.time() - started < 5
        stop.set()
        for d in drippers:
            d.join()


@pytest.mark.skipif("ASAN_OPTIONS" in os.environ,
                    reason="ASan's allocator maps memory as it goes (and its shadow takes "
                           "terabytes): an address-space limit is not one on thread stacks alone")
def test_the_metrics_listener_outlives_a_failed_thread_start():
    """Each /metrics connection is served on a thread of its own; where none can be started
    (the address space at its limit, as under a container's memory limit) the connection is
    closed and the server goes on (an uncaught std::system_error aborted it)."""
    import resource
    import socket

    def scrape():
        with socket.create_connection(("127.0.0.1", s.metrics_port), timeout=10) as c:
            c.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            try:
                return c.recv(64)
            except ConnectionResetError:
                return b""

    with Server(metrics=True) as s:
        with open(f"/proc/{s.proc.pid}/status") as f:
            mapped = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
        limit = resource.prlimit(s.proc.pid, resource.RLIMIT_AS)
        # 1 MiB more than it has mapped: no room for a thread's stack.
        resource.prlimit(s.proc.pid, resource.RLIMIT_AS, (mapped + (1 << 20), limit[1]))
        try:
            for _ in range(3):
                assert not scrape().startswith(b"HTTP/1.1 200")
                assert s.proc.poll() is None
        finally:
            resource.prlimit(s.proc.pid, resource.RLIMIT_AS, limit)
        assert wait_for(lambda: scrape().startswith(b"HTTP/1.1 200 OK"), timeout=10)
        assert s.proc.poll() is None
