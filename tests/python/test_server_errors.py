"""Every invalid input gets INVALID_ARGUMENT naming the field; oversized messages;
bearer token; TLS."""
import os
import shutil
import subprocess
import sys
import time

import grpc
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from repo_paths import bin_path  # noqa: E402
from server_harness import (TINY_MODEL, TINY_VOCAB, Server, decode, server_binary,  # noqa: E402
                            stubs)


@pytest.fixture(scope="module")
def server():
    s = Server(extra=["--max_inputs_per_request=4", "--max_message_bytes=65536"])
    yield s
    s.kill()


def text(pb2, a, b=None):
    t = pb2.TextInput(text_a=a)
    if b is not None:
        t.text_b = b
    return pb2.Input(text=t)


def tokens(pb2, ids, types=()):
    return pb2.Input(tokens=pb2.TokenInput(input_word_ids=ids, input_type_ids=list(types)))


def invalid_requests(pb2):
    ok = text(pb2, "hello")
    return [
        ("empty request", pb2.EmbedRequest(), "inputs: empty"),
        ("too many inputs", pb2.EmbedRequest(inputs=[ok] * 5), "5 inputs exceed the limit of 4"),
        ("input with nothing set", pb2.EmbedRequest(inputs=[ok, pb2.Input()]), "inputs[1]"),
        ("text too long under REJECT",
         pb2.EmbedRequest(inputs=[ok, text(pb2, "hello " * 40)], seq_length=16,
                          truncation=pb2.TRUNCATION_REJECT), "inputs[1]"),
        ("pair too long under REJECT",
         pb2.EmbedRequest(inputs=[text(pb2, "hello " * 10, "world " * 10)], seq_length=16,
                          truncation=pb2.TRUNCATION_REJECT), "inputs[0]"),
        ("tokens too long under REJECT",
         pb2.EmbedRequest(inputs=[tokens(pb2, [101] + [5] * 20 + [102])], seq_length=8,
                          truncation=pb2.TRUNCATION_REJECT), "inputs[0].tokens.input_word_ids"),
        ("seq_length 1", pb2.EmbedRequest(inputs=[ok], seq_length=1), "seq_length: 1"),
        ("seq_length past max positions", pb2.EmbedRequest(inputs=[ok], seq_length=513),
         "seq_length: 513 is outside [2, 512]"),
        ("word id past vocab", pb2.EmbedRequest(inputs=[ok, tokens(pb2, [101, 1024, 102])]),
         "inputs[1].tokens.input_word_ids[1]: 1024"),
        ("negative word id", pb2.EmbedRequest(inputs=[tokens(pb2, [101, -5, 102])]),
         "inputs[0].tokens.input_word_ids[1]: -5"),
        ("type id past type vocab", pb2.EmbedRequest(inputs=[tokens(pb2, [101, 7, 102], [0, 2, 0])]),
         "inputs[0].tokens.input_type_ids[1]: 2"),
        ("type ids length", pb2.EmbedRequest(inputs=[tokens(pb2, [101, 7, 102], [0, 0])]),
         "inputs[0].tokens.input_type_ids"),
        ("empty token input", pb2.EmbedRequest(inputs=[tokens(pb2, [])]),
         "inputs[0].tokens.input_word_ids: empty"),
        ("layer past the end", pb2.EmbedRequest(inputs=[ok], heads=[pb2.HEAD_ENCODER_OUTPUTS],
                                                layers=[0, 4]), "layers[1]: 4"),
        ("layer before the start", pb2.EmbedRequest(inputs=[ok], heads=[pb2.HEAD_ENCODER_OUTPUTS],
                                                    layers=[-5]), "layers[0]: -5"),
        ("unspecified head", pb2.EmbedRequest(inputs=[ok], heads=[pb2.HEAD_UNSPECIFIED]),
         "heads[0]"),
        ("unknown head", pb2.EmbedRequest(inputs=[ok], heads=[pb2.HEAD_POOLED, 17]), "heads[1]"),
        ("unknown padding", pb2.EmbedRequest(inputs=[ok], padding=9), "padding"),
        ("unknown dtype", pb2.EmbedRequest(inputs=[ok], output_dtype=9), "output_dtype"),
        ("unknown truncation", pb2.EmbedRequest(inputs=[ok], truncation=9), "truncation"),
        ("response over the message limit",
         pb2.EmbedRequest(inputs=[ok], seq_length=128, heads=[pb2.HEAD_ENCODER_OUTPUTS]),
         "message limit"),
    ]


def test_every_invalid_input_is_invalid_argument(server):
    pb2, _ = stubs()
    stub = server.stub()
    for name, req, needle in invalid_requests(pb2):
        with pytest.raises(grpc.RpcError) as e:
            stub.Embed(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert needle in e.value.details(), (name, e.value.details())
    # The server still serves afterwards.
    resp = stub.Embed(pb2.EmbedRequest(inputs=[text(pb2, "hello")]), timeout=10)
    assert len(resp.results) == 1


def test_invalid_utf8_is_invalid_argument(server):
    """Protobuf's Python runtime refuses invalid UTF-8 in string fields, so this request is
    serialized by hand: field 1 (inputs) { field 1 (text) { field 1 (text_a): b'\xff' } }."""
    pb2, _ = stubs()
    bad = b"ab\xffcd"
    text_input = b"\x0a" + bytes([len(bad)]) + bad
    inp = b"\x0a" + bytes([len(text_input)]) + text_input
    raw = b"\x0a" + bytes([len(inp)]) + inp
    with server.channel() as ch:
        call = ch.unary_unary("/bert.v1.BertService/Embed",
                              request_serializer=lambda b: b,
                              response_deserializer=pb2.EmbedResponse.FromString)
        with pytest.raises(grpc.RpcError) as e:
            call(raw, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "inputs[0].text.text_a: invalid UTF-8"
    # The same through Tokenize (TokenizeRequest.inputs are TextInputs).
    with server.channel() as ch:
        call = ch.unary_unary("/bert.v1.BertService/Tokenize",
                              request_serializer=lambda b: b,
                              response_deserializer=pb2.TokenizeResponse.FromString)
        with pytest.raises(grpc.RpcError) as e:
            call(b"\x0a" + bytes([len(text_input)]) + text_input, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "inputs[0].text_a: invalid UTF-8"


def test_oversized_message_is_refused(server):
    pb2, _ = stubs()
    req = pb2.EmbedRequest(inputs=[text(pb2, "x" * 70000)])
    with pytest.raises(grpc.RpcError) as e:
        server.stub().Embed(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_tokenize_invalid_inputs(server):
    pb2, _ = stubs()
    stub = server.stub()
    for req, needle in [(pb2.TokenizeRequest(), "inputs: empty"),
                        (pb2.TokenizeRequest(inputs=[pb2.TextInput(text_a="a")], seq_length=1),
                         "seq_length"),
                        (pb2.TokenizeRequest(inputs=[pb2.TextInput(text_a="a")], truncation=7),
                         "truncation")]:
        with pytest.raises(grpc.RpcError) as e:
            stub.Tokenize(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert needle in e.value.details()


def test_stream_bad_request_gets_error_and_stream_survives(server):
    pb2, _ = stubs()
    reqs = [pb2.EmbedRequest(inputs=[text(pb2, "hello")], request_id="a"),
            pb2.EmbedRequest(request_id="b"),  # empty: INVALID_ARGUMENT
            pb2.EmbedRequest(inputs=[tokens(pb2, [101, 5000, 102])], request_id="c"),
            pb2.EmbedRequest(inputs=[text(pb2, "world"), text(pb2, "good")], request_id="d")]
    out = list(server.stub().EmbedStream(iter(reqs), timeout=30))
    assert [r.request_id for r in out] == ["a", "b", "c", "d"]
    assert not out[0].HasField("error") and len(out[0].results) == 1
    assert out[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "inputs: empty" in out[1].error.message
    assert out[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "input_word_ids[1]" in out[2].error.message
    assert len(out[3].results) == 2 and not out[3].HasField("error")


def test_stream_survives_a_request_id_with_invalid_utf8(server):
    """A message whose request_id is invalid UTF-8 gets its error with an empty request_id:
    echoing those bytes made the response unparseable, so a typed client lost the whole
    stream (found by test_server_fuzz.py). Messages are sent as raw bytes."""
    pb2, _ = stubs()
    good = pb2.EmbedRequest(inputs=[text(pb2, "hello")], request_id="g").SerializeToString()
    bad_id = b"\x4a\x02a\xff"  # field 9 (request_id) = b"a\xff"
    with server.channel() as ch:
        call = ch.stream_stream("/bert.v1.BertService/EmbedStream",
                                request_serializer=lambda b: b,
                                response_deserializer=pb2.EmbedResponse.FromString)
        out = list(call(iter([good, bad_id, good]), timeout=30))
    assert [r.request_id for r in out] == ["g", "", "g"]
    assert out[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert out[1].error.message == "request_id: invalid UTF-8"
    assert len(out[2].results) == 1 and not out[2].HasField("error")


def test_request_id_counts_against_the_response_limit(server):
    """A request under --max_message_bytes whose request_id leaves no room for the answer is
    INVALID_ARGUMENT before inference, not an answer gRPC then fails to send
    (RESOURCE_EXHAUSTED on the client, OK in the server's metrics, and on EmbedStream the
    end of the stream). Found by test_server_fuzz.py. The server's limit is 65536 bytes."""
    pb2, _ = stubs()
    near_limit = pb2.EmbedRequest(inputs=[text(pb2, "hello")], request_id="x" * 65000)
    with pytest.raises(grpc.RpcError) as e:
        server.stub().Embed(near_limit, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ", 65000 of request_id)" in e.value.details()
    # On a stream the error echoes the id when the answer fits, else answers without it.
    fits = pb2.EmbedRequest(inputs=[text(pb2, "hello")], request_id="y" * 64000)
    at_limit = pb2.EmbedRequest(inputs=[text(pb2, "hello")], request_id="z" * 65500)
    good = pb2.EmbedRequest(inputs=[text(pb2, "hello")], request_id="g")
    out = list(server.stub().EmbedStream(iter([good, fits, at_limit, good]), timeout=30))
    assert [r.request_id for r in out] == ["g", fits.request_id, "", "g"]
    for r in out[1:3]:
        assert r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert " of request_id)" in r.error.message
    assert len(out[3].results) == 1


def test_bearer_token(tmp_path):
    pb2, _ = stubs()
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with Server(extra=[f"--auth_token_file={token_file}"]) as server:
        stub = server.stub()
        req = pb2.EmbedRequest(inputs=[text(pb2, "hello")])
        for metadata in [None, [("authorization", "Bearer wrong")],
                         [("authorization", "s3cret-token")]]:
            with pytest.raises(grpc.RpcError) as e:
                stub.Embed(req, timeout=10, metadata=metadata)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as e:
                stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10, metadata=metadata)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            for call, request in ((stub.Tokenize, pb2.TokenizeRequest(inputs=[req.inputs[0].text])),
                                  (stub.Decode, pb2.DecodeRequest(inputs=[pb2.TokenIds(ids=[5])])),
                                  (stub.Rerank, pb2.RerankRequest(query="q", texts=["t"]))):
                with pytest.raises(grpc.RpcError) as e:
                    call(request, timeout=10, metadata=metadata)
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        good = [("authorization", "Bearer s3cret-token")]
        assert len(stub.Tokenize(pb2.TokenizeRequest(inputs=[req.inputs[0].text]), timeout=10,
                                 metadata=good).encodings) == 1
        assert len(stub.Decode(pb2.DecodeRequest(inputs=[pb2.TokenIds(ids=[5])]), timeout=10,
                               metadata=good).texts) == 1
        with pytest.raises(grpc.RpcError) as e:  # admitted: this model has no classifier
            stub.Rerank(pb2.RerankRequest(query="q", texts=["t"]), timeout=10, metadata=good)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert len(stub.Embed(req, timeout=10, metadata=good).results) == 1
        assert stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10,
                                 metadata=good).model_name == "tiny-l4-h128"
        out = list(stub.EmbedStream(iter([req]), timeout=10, metadata=good))
        assert len(out) == 1
        with pytest.raises(grpc.RpcError) as e:
            list(stub.EmbedStream(iter([req]), timeout=10))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Health is exempt.
        assert server.health() == "SERVING"


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _signed_cert(tmp_path, name, ca=None, san=None):
    """A key and certificate for `name`: self-signed, or signed by `ca` ((cert, key) paths)."""
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    if ca is None:
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                 f"/CN={name}", *(["-addext", f"subjectAltName={san}"] if san else []),
                 "-keyout", str(key), "-out", str(cert))
        return cert, key
    csr = tmp_path / f"{name}.csr"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
             str(key), "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-days", "1", "-out", str(cert))
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_mutual_tls(tmp_path):
    """--tls_client_ca: only clients with a certificate that CA signed get through the
    handshake (health included); the bundled client presents one with --cert/--key."""
    pb2, pb2_grpc = stubs()
    server_cert, server_key = _signed_cert(tmp_path, "server",
                                           san="IP:127.0.0.1,DNS:localhost")
    client_ca = _signed_cert(tmp_path, "client-ca")
    client_cert, client_key = _signed_cert(tmp_path, "client", ca=client_ca)
    rogue_cert, rogue_key = _signed_cert(tmp_path, "rogue")  # signed by no one trusted
    with Server(extra=[f"--tls_cert={server_cert}", f"--tls_key={server_key}",
                       f"--tls_client_ca={client_ca[0]}"], wait_serving=False) as server:
        client = [bin_path("client", "bert_client"), f"--server={server.address}",
                  f"--ca={server_cert}", "--timeout_ms=5000"]
        with_cert = client + [f"--cert={client_cert}", f"--key={client_key}"]
        deadline = time.time() + 60
        while subprocess.run(with_cert + ["health"], capture_output=True).returncode != 0:
            assert time.time() < deadline, server.log()
            time.sleep(0.1)
        r = subprocess.run(with_cert + ["--heads=pooled", "embed", "hello"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and "Pooled Outputs Shape:(1, 128)" in r.stdout, r.stderr
        for refused in (client, client + [f"--cert={rogue_cert}", f"--key={rogue_key}"]):
            r = subprocess.run(refused + ["health"], capture_output=True, text=True, timeout=60)
            assert r.returncode == 1 and "UNAVAILABLE" in r.stderr, r.stderr
            assert "(the connection failed in or before its TLS handshake" in r.stderr, r.stderr
        # Plaintext to the TLS port: the same hint, not "no server answers there".
        r = subprocess.run([bin_path("client", "bert_client"), f"--server={server.address}",
                            "--timeout_ms=5000", "health"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1 and "TLS handshake" in r.stderr, r.stderr
        # gRPC's Python client alike: with the certificate served, without it refused.
        creds = grpc.ssl_channel_credentials(root_certificates=server_cert.read_bytes(),
                                             private_key=client_key.read_bytes(),
                                             certificate_chain=client_cert.read_bytes())
        with grpc.secure_channel(server.address, creds) as ch:
            resp = pb2_grpc.BertServiceStub(ch).Embed(
                pb2.EmbedRequest(inputs=[text(pb2, "hello")]), timeout=10)
            assert decode(resp.results[0].default_output).shape == (128,)
        creds = grpc.ssl_channel_credentials(root_certificates=server_cert.read_bytes())
        with grpc.secure_channel(server.address, creds) as ch:
            with pytest.raises(grpc.RpcError) as e:
                pb2_grpc.BertServiceStub(ch).GetModelInfo(pb2.GetModelInfoRequest(), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "tls=mutual" in server.log()
    # The client CA alone (no server certificate) is a mistake in the command line.
    r = subprocess.run([server_binary(), f"--model_dir={TINY_MODEL}", f"--vocab={TINY_VOCAB}",
                        "--address=127.0.0.1:0", f"--tls_client_ca={client_ca[0]}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--tls_client_ca (clients' certificates) needs --tls_cert" in \
        r.stderr, r.stderr[-2000:]
    r = subprocess.run(client + [f"--cert={client_cert}", "health"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "--cert and --key go together" in r.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_tls(tmp_path):
    pb2, pb2_grpc = stubs()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with Server(extra=[f"--tls_cert={cert}", f"--tls_key={key}"], wait_serving=False) as server:
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(server.address, creds) as ch:
            from grpc_health.v1 import health_pb2, health_pb2_grpc
            deadline = time.time() + 60
            while True:
                try:
                    st = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                              timeout=5).status
                    if st == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert time.time() < deadline, server.log()
                time.sleep(0.05)
            stub = pb2_grpc.BertServiceStub(ch)
            resp = stub.Embed(pb2.EmbedRequest(inputs=[text(pb2, "hello")]), timeout=10)
            assert decode(resp.results[0].default_output).shape == (128,)
        # A plaintext client cannot talk to the TLS port.
        with grpc.insecure_channel(server.address) as ch:
            with pytest.raises(grpc.RpcError) as e:
                pb2_grpc.BertServiceStub(ch).GetModelInfo(pb2.GetModelInfoRequest(), timeout=3)
            assert e.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED)
