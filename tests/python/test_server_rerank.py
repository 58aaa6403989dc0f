"""Rerank, a cross-encoder reranker's call, end to end against the golden tiny model made a
one-label BertForSequenceClassification checkpoint (server_harness.classifier_model). A text's
score is the model's activation of the classifier applied to the pooled output of its
(query, text) pair, packed as Hugging Face tokenizers pack it (longest_first at the
classifier's length): checked here against the classifier applied by hand to Embed's pooled
output, whose values test_server_heads checks against Hugging Face's, and against the
`tokenizers` package's packing."""
import json
import random
import subprocess
import time

import grpc
import numpy as np
import pytest
from repo_paths import bin_path
from server_harness import (TINY_MODEL, TINY_VOCAB, Server, classifier_model,  # noqa
                            classifier_weights, decode, hf_pair_tokenizer, metric_value, stubs)

MAX_LENGTH = 64  # the classifier's (tokenizer_config.json's model_max_length)
QUERY = "what is the capital of france"
TEXTS = [
    "paris is the capital and most populous city of france",
    "berlin is the capital of germany",
    "",
    "the capital of france is paris and it is a big city " * 12,  # past MAX_LENGTH
    "france",
    "what is the capital of france",
]


def one_label_model(path, activation=None):
    extra = {"sbert_ce_default_activation_function": activation} if activation else {}
    model = classifier_model(path, labels=("LABEL_0",), problem_type=None, extra_config=extra)
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": MAX_LENGTH}))
    return model


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = one_label_model(tmp_path_factory.mktemp("rerank") / "ce")
    with Server(model_dir=model, vocab=TINY_VOCAB, extra=["--max_batch_tokens=2048"],
                metrics=True) as s:
        yield s


def by_hand(server, texts, seq_length=MAX_LENGTH, truncation=None):
    """Each (QUERY, text) pair's logit from Embed's pooled output and the classifier's weights,
    and Embed's results."""
    pb2, _ = stubs()
    resp = server.stub().Embed(pb2.EmbedRequest(
        inputs=[pb2.Input(text=pb2.TextInput(text_a=QUERY, text_b=t)) for t in texts],
        heads=[pb2.HEAD_POOLED], seq_length=seq_length,
        truncation=truncation or pb2.TRUNCATION_LONGEST_FIRST), timeout=30)
    weight, bias = classifier_weights(1)
    logits = np.array([weight[0].astype(np.float64) @ decode(r.pooled_output) + bias[0]
                       for r in resp.results])
    return logits, resp.results


def test_texts_come_back_best_first_scored_as_a_cross_encoder(server):
    pb2, _ = stubs()
    resp = server.stub().Rerank(pb2.RerankRequest(query=QUERY, texts=TEXTS, request_id="r-1"),
                                timeout=30)
    assert resp.request_id == "r-1"
    assert resp.score_function == "sigmoid"  # one label, no activation named: CrossEncoder's
    logits, embedded = by_hand(server, TEXTS)
    want = 1 / (1 + np.exp(-logits))
    # Distinct enough that the order is the scores' and not rounding's.
    assert np.min(np.diff(np.sort(want))) > 1e-5
    assert [r.index for r in resp.ranked] == list(np.argsort(-want, kind="stable"))
    hf = hf_pair_tokenizer(MAX_LENGTH)
    whole = hf_pair_tokenizer(100000)
    for r in resp.ranked:
        np.testing.assert_allclose(r.score, want[r.index], rtol=1e-5)
        assert r.text == ""  # not asked for
        assert r.num_tokens == embedded[r.index].num_tokens
        assert r.num_tokens == len(hf.encode(QUERY, TEXTS[r.index]).ids)
        assert r.truncated == (len(whole.encode(QUERY, TEXTS[r.index]).ids) > MAX_LENGTH)
    assert resp.ranked[[r.index for r in resp.ranked].index(3)].truncated
    assert resp.timing.total_us > 0 and resp.timing.inference_us > 0


def test_top_n_raw_scores_texts_and_packing_options(server):
    pb2, _ = stubs()
    stub = server.stub()
    logits, _ = by_hand(server, TEXTS)
    resp = stub.Rerank(pb2.RerankRequest(query=QUERY, texts=TEXTS, top_n=2, raw_scores=True,
                                         return_text=True), timeout=30)
    assert resp.score_function == "none"
    best = list(np.argsort(-logits, kind="stable")[:2])
    assert [r.index for r in resp.ranked] == best
    for r in resp.ranked:
        np.testing.assert_allclose(r.score, logits[r.index], rtol=1e-5, atol=1e-6)
        assert r.text == TEXTS[r.index]
    # top_n past the texts: all of them.
    assert len(stub.Rerank(pb2.RerankRequest(query=QUERY, texts=TEXTS, top_n=100),
                           timeout=30).ranked) == len(TEXTS)
    # A length and a truncation of the caller's: the pairs packed as Embed packs them.
    resp = stub.Rerank(pb2.RerankRequest(query=QUERY, texts=TEXTS, seq_length=16,
                                         truncation=pb2.TRUNCATION_TRUNCATE, raw_scores=True),
                       timeout=30)
    logits16, embedded = by_hand(server, TEXTS, 16, pb2.TRUNCATION_TRUNCATE)
    for r in resp.ranked:
        np.testing.assert_allclose(r.score, logits16[r.index], rtol=1e-5, atol=1e-6)
        assert r.num_tokens == embedded[r.index].num_tokens <= 16
    with pytest.raises(grpc.RpcError) as e:
        stub.Rerank(pb2.RerankRequest(query=QUERY, texts=TEXTS, truncation=pb2.TRUNCATION_REJECT),
                    timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[3]" in e.value.details()  # texts[3], as the proto says


def test_bad_requests_are_refused_with_the_reason(server):
    pb2, _ = stubs()
    stub = server.stub()

    def refused(request):
        with pytest.raises(grpc.RpcError) as e:
            stub.Rerank(request, timeout=30)
        return e.value.code(), e.value.details()

    assert refused(pb2.RerankRequest(query=QUERY)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "texts: at least one text to rank is needed")
    code, details = refused(pb2.RerankRequest(query=QUERY, texts=["x"] * 257))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "texts: 257 texts exceed the limit of 256"
    code, details = refused(pb2.RerankRequest(query=QUERY, texts=["x"], truncation=9))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "truncation" in details
    code, details = refused(pb2.RerankRequest(query=QUERY, texts=["x"], seq_length=1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "seq_length" in details
    # A query that, paired with every text, would be over the 16 MiB request limit: refused
    # before any of it is tokenized, though the request itself is 100 KB.
    code, details = refused(pb2.RerankRequest(query="word " * 20000, texts=["x"] * 200))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "over the server's 16777216-byte request limit" in details
    # Invalid UTF-8 in a text, sent by hand (protobuf's Python runtime refuses to): field 2.
    raw = b"\x0a\x01q" + b"\x12\x02ok" + b"\x12\x03a\xffb"
    with server.channel() as ch:
        call = ch.unary_unary("/bert.v1.BertService/Rerank", request_serializer=lambda b: b,
                              response_deserializer=pb2.RerankResponse.FromString)
        with pytest.raises(grpc.RpcError) as e:
            call(raw, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "texts[1]: invalid UTF-8"
    # The server goes on serving, and counted each call.
    assert len(stub.Rerank(pb2.RerankRequest(query=QUERY, texts=["x"]), timeout=30).ranked) == 1
    text = server.metrics_text()
    assert metric_value(text, "bert_requests_total",
                        {"method": "Rerank", "code": "INVALID_ARGUMENT"}) >= 6
    assert metric_value(text, "bert_requests_total", {"method": "Rerank", "code": "OK"}) >= 1


def test_the_answer_is_sized_as_a_ranking(tmp_path):
    """Under a small message limit: many texts with top_n=1 fit (the answer is one ranked
    text, not a logits tensor per text); an answer whose texts could not fit is refused before
    any work, naming what to change."""
    pb2, _ = stubs()
    model = one_label_model(tmp_path / "ce")
    with Server(model_dir=model, vocab=TINY_VOCAB,
                extra=["--max_batch_tokens=2048", "--max_message_bytes=4096"]) as s:
        stub = s.stub()
        # 60 logits tensors with their framing would pass 4 KB; 60 ranked texts do not.
        texts = [f"text number {i}" for i in range(60)]
        resp = stub.Rerank(pb2.RerankRequest(query=QUERY, texts=texts), timeout=30)
        assert sorted(r.index for r in resp.ranked) == list(range(60))
        # 3.8 KB of texts fit in a request; all of them echoed in a ranking would not.
        long_texts = [f"{i:03d} " + "paris " * 5 + "france" for i in range(90)]  # 40 bytes
        resp = stub.Rerank(pb2.RerankRequest(query="q", texts=long_texts, top_n=2,
                                             return_text=True), timeout=30)
        assert [r.text for r in resp.ranked] == [long_texts[r.index] for r in resp.ranked]
        with pytest.raises(grpc.RpcError) as e:
            stub.Rerank(pb2.RerankRequest(query="q", texts=long_texts, return_text=True),
                        timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "over the server's 4096-byte message limit" in e.value.details()
        assert "top_n" in e.value.details()


def test_deadlines_and_cancellations_leave_nothing_held(server):
    """Calls that run out of time or are cancelled while queued or computed: each ends with
    its status, and the permits and answer bytes all come back."""
    pb2, _ = stubs()
    texts = [t + f" {i}" for i in range(40) for t in TEXTS[:1]]
    request = pb2.RerankRequest(query=QUERY, texts=texts)
    timeouts = [0.002, 0.02, 0.2, 30]
    with server.channel() as channel:
        stub = server.stub(channel)
        futures = [stub.Rerank.future(request, timeout=timeouts[i % 4]) for i in range(48)]
        cancelled = {i for i in range(1, 48, 6) if futures[i].cancel()}
        codes = []
        for f in futures:
            try:
                f.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.FutureCancelledError:
                codes.append(grpc.StatusCode.CANCELLED)
            except grpc.RpcError as e:
                codes.append(e.code())
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED,
                          grpc.StatusCode.CANCELLED}, codes
    assert {i for i, c in enumerate(codes) if c == grpc.StatusCode.CANCELLED} == cancelled
    # However busy the machine, the calls given 30 s and not cancelled are answered.
    assert all(codes[i] == grpc.StatusCode.OK for i in range(3, 48, 4) if i not in cancelled)
    deadline = time.time() + 10
    while time.time() < deadline:
        text = server.metrics_text()
        held = (metric_value(text, "bert_requests_in_flight"),
                metric_value(text, "bert_answer_memory_bytes"))
        if held == (0, 0):
            break
        time.sleep(0.05)
    assert held == (0, 0), held


def test_a_call_cancelled_while_queued_is_dropped_and_counted(tmp_path):
    """Batches held 1 s (no adaptive delay, small calls): calls cancelled once the server holds
    all of them are still queued. They end CANCELLED, the server counts them under Rerank and
    runs none of their pairs, the others are answered, and nothing stays held."""
    pb2, _ = stubs()
    model = one_label_model(tmp_path / "ce")
    with Server(model_dir=model, vocab=TINY_VOCAB, metrics=True,
                extra=["--max_batch_tokens=2048", "--max_batch_delay_us=1000000",
                       "--adaptive_batch_delay=false"]) as s:

        def counts():
            text = s.metrics_text()
            return (metric_value(text, "bert_calls_cancelled_total", {"method": "Rerank"}),
                    metric_value(text, "bert_requests_in_flight"),
                    metric_value(text, "bert_answer_memory_bytes"),
                    metric_value(text, "bert_tokens_processed_total"))

        def wait_for(done):
            deadline = time.time() + 10
            while not done(counts()) and time.time() < deadline:
                time.sleep(0.01)
            return counts()

        with s.channel() as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            stub = s.stub(channel)
            futures = [stub.Rerank.future(pb2.RerankRequest(query=QUERY, texts=[f"text {i}"]),
                                          timeout=30) for i in range(8)]
            held = wait_for(lambda c: c[1] == 8)  # all admitted and queued, none run
            assert held[1] == 8 and not held[3], held
            assert all(f.cancel() for f in futures[::2])
            answered = [f.result() for f in futures[1::2]]
            assert all(len(a.ranked) == 1 for a in answered)
            for f in futures[::2]:
                with pytest.raises(grpc.FutureCancelledError):
                    f.result()
        # Only the answered calls' pairs reached the engine.
        tokens = sum(a.ranked[0].num_tokens for a in answered)
        assert wait_for(lambda c: c == (4, 0, 0, tokens)) == (4, 0, 0, tokens)


def test_models_without_a_one_label_classifier_refuse_it(tmp_path):
    pb2, _ = stubs()
    three = classifier_model(tmp_path / "three")
    for model, words in ((three, "this model's has 3"), (TINY_MODEL, "this one has none")):
        with Server(model_dir=model, vocab=TINY_VOCAB, extra=["--max_batch_tokens=2048"]) as s:
            with pytest.raises(grpc.RpcError) as e:
                s.stub().Rerank(pb2.RerankRequest(query=QUERY, texts=TEXTS), timeout=30)
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert words in e.value.details()


@pytest.mark.parametrize("key,activation,function", [
    ("sbert_ce_default_activation_function", "torch.nn.modules.linear.Identity", "none"),
    ("sentence_transformers", "torch.nn.modules.activation.Sigmoid", "sigmoid"),
    ("sentence_transformers", "torch.nn.modules.activation.Tanh", "none"),
])
def test_the_activation_the_model_names(tmp_path, key, activation, function):
    """The ms-marco cross-encoders name Identity (in sentence-transformers' older key):
    CrossEncoder.rank scores by the logit. The newer key names Sigmoid; an activation this
    server does not apply (Tanh) leaves the logit, and the answer says so."""
    pb2, _ = stubs()
    model = classifier_model(tmp_path / "ce", labels=("LABEL_0",), problem_type=None,
                             extra_config={key: activation if key.startswith("sbert")
                                           else {"activation_fn": activation}})
    with Server(model_dir=model, vocab=TINY_VOCAB, extra=["--max_batch_tokens=2048"]) as s:
        resp = s.stub().Rerank(pb2.RerankRequest(query=QUERY, texts=TEXTS), timeout=30)
        assert resp.score_function == function
        logits, _ = by_hand(s, TEXTS, seq_length=512)  # no tokenizer_config.json: the positions
        want = 1 / (1 + np.exp(-logits)) if function == "sigmoid" else logits
        assert [r.index for r in resp.ranked] == list(np.argsort(-want, kind="stable"))
        for r in resp.ranked:
            np.testing.assert_allclose(r.score, want[r.index], rtol=1e-5, atol=1e-6)


def test_the_client_ranks_texts(server):
    pb2, _ = stubs()
    client = [bin_path("client", "bert_client"), f"--server={server.address}"]
    want = server.stub().Rerank(pb2.RerankRequest(query=QUERY, texts=TEXTS), timeout=30)
    r = subprocess.run(client + ["rerank", QUERY, *TEXTS], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"Ranked {len(TEXTS)} of {len(TEXTS)} texts (scores: sigmoid)"
    for rank, (line, ranked) in enumerate(zip(lines[1:], want.ranked, strict=True)):
        mark = " (truncated)" if ranked.truncated else ""
        assert line == (f"{rank + 1:3d}. [{ranked.index}] {ranked.score:.6g}{mark}  "
                        f"{TEXTS[ranked.index]}")
    # Texts as JSON lines on stdin, --top_n, --json.
    r = subprocess.run(client + ["rerank", "--json", "--top_n=2", QUERY],
                       input="\n".join(json.dumps(t) for t in TEXTS), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["index"] for row in rows] == [x.index for x in want.ranked[:2]]
    for row, ranked in zip(rows, want.ranked, strict=False):
        assert row["text"] == TEXTS[ranked.index]
        assert row["num_tokens"] == ranked.num_tokens and row["truncated"] == ranked.truncated
        np.testing.assert_allclose(row["score"], ranked.score, rtol=1e-6)
    r = subprocess.run(client + ["rerank"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "query" in r.stderr
    r = subprocess.run(client + ["rerank", QUERY], input="", capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "no texts" in r.stderr
    # A text with a line break stays on its line in the summary.
    r = subprocess.run(client + ["rerank", QUERY, "two\nlines"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.splitlines()[1].endswith("two\\nlines")
    # The server's refusal comes back as exit status 1 with its message.
    r = subprocess.run(client + ["rerank", "--truncation=reject", QUERY, TEXTS[3]],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr


def test_the_client_ranks_more_texts_than_one_request_takes(tmp_path):
    """bert_client rerank sends the texts in calls of the server's size and merges the
    rankings: the same ranking, scores and top_n as one call where the server takes them all."""
    pb2, _ = stubs()
    texts = TEXTS + [f"{t} again" for t in TEXTS] + ["paris"]
    model = one_label_model(tmp_path / "ce")
    with Server(model_dir=model, vocab=TINY_VOCAB) as whole, \
            Server(model_dir=model, vocab=TINY_VOCAB,
                   extra=["--max_inputs_per_request=4"]) as limited:
        want = whole.stub().Rerank(pb2.RerankRequest(query=QUERY, texts=texts), timeout=30)
        for top_n in (0, 3):
            r = subprocess.run([bin_path("client", "bert_client"), f"--server={limited.address}",
                                "rerank", "--json", f"--top_n={top_n}", QUERY, *texts],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            rows = [json.loads(line) for line in r.stdout.splitlines()]
            ranked = want.ranked[:top_n] if top_n else want.ranked
            assert [row["index"] for row in rows] == [x.index for x in ranked]
            np.testing.assert_allclose([row["score"] for row in rows],
                                       [x.score for x in ranked], rtol=1e-6)
        r = subprocess.run([bin_path("client", "bert_client"), f"--server={limited.address}",
                            "rerank", "--raw_scores", QUERY, *texts[:2]],
                           capture_output=True, text=True, timeout=60)
        assert r.stdout.splitlines()[0] == "Ranked 2 of 2 texts (scores: the classifier's logits)"


WORDS = ["paris", "capital", "france", "the", "caf\u00e9", "\u65e5\u672c", "berlin", "##x",
         "[SEP]", "a" * 50, "?", "IS", "\u00c9t\u00e9"]


def test_random_requests_are_answered_as_the_embed_they_stand_for(server):
    """Seeded random queries, texts and options: each Rerank answer (or error, code and message)
    is that of the Embed request of its pairs, ranked and scored."""
    pb2, _ = stubs()
    stub = server.stub()
    rng = random.Random(20261128)

    def text():
        return " ".join(rng.choice(WORDS) for _ in range(rng.choice([0, 1, 3, 10, 80])))

    def call(method, request):
        try:
            return grpc.StatusCode.OK, method(request, timeout=30)
        except grpc.RpcError as e:
            return e.code(), e.details()

    outcomes = set()
    for _ in range(80):
        texts = [text() for _ in range(rng.randint(1, 12))]
        if rng.random() < 0.2:
            texts.append(texts[0])  # the same pair twice: equal scores, kept in text order
        request = pb2.RerankRequest(
            query=text(), texts=texts, seq_length=rng.choice([0, 0, 2, 3, 8, 33, 64, 512, 513]),
            truncation=rng.choice([0, 1, 2, 3]), top_n=rng.choice([0, 0, 1, 5, 100]),
            raw_scores=rng.random() < 0.5, return_text=rng.random() < 0.3)
        code, answer = call(stub.Rerank, request)
        ecode, embedded = call(stub.Embed, pb2.EmbedRequest(
            inputs=[pb2.Input(text=pb2.TextInput(text_a=request.query, text_b=t)) for t in texts],
            heads=[pb2.HEAD_LOGITS], seq_length=request.seq_length or MAX_LENGTH,
            truncation=request.truncation or pb2.TRUNCATION_LONGEST_FIRST))
        outcomes.add(code)
        assert code == ecode, (request, answer, embedded)
        if code != grpc.StatusCode.OK:
            assert answer == embedded
            continue
        logits = np.array([decode(r.logits)[0] for r in embedded.results], dtype=np.float64)
        want = (logits if request.raw_scores else 1 / (1 + np.exp(-logits))).astype(np.float32)
        order = list(np.argsort(-want, kind="stable"))[:request.top_n or len(texts)]
        assert [r.index for r in answer.ranked] == order, request
        for r in answer.ranked:
            np.testing.assert_allclose(r.score, want[r.index], rtol=1e-6, atol=1e-7)
            assert r.text == (texts[r.index] if request.return_text else "")
            assert r.num_tokens == embedded.results[r.index].num_tokens
            assert r.truncated == embedded.results[r.index].truncated
    assert outcomes == {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}


def test_mangled_request_bytes_get_invalid_argument(server):
    """Serialized requests with random bytes changed, cut or inserted: INVALID_ARGUMENT where
    they do not parse as a RerankRequest (or ask for what Embed refuses), an answer where they
    do; the server serves on."""
    pb2, _ = stubs()
    rng = random.Random(7)
    valid = pb2.RerankRequest(query=QUERY, texts=TEXTS[:3], top_n=2,
                              request_id="id").SerializeToString()
    with server.channel() as ch:
        call = ch.unary_unary("/bert.v1.BertService/Rerank", request_serializer=lambda b: b,
                              response_deserializer=pb2.RerankResponse.FromString)
        for _ in range(200):
            data = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(data))
                what = rng.random()
                if what < 0.5:
                    data[at] = rng.randrange(256)
                elif what < 0.75:
                    data.insert(at, rng.randrange(256))
                else:
                    del data[at:at + rng.randint(1, 8)]
            try:
                parsed = pb2.RerankRequest.FromString(bytes(data))
            except Exception:  # noqa: BLE001 (DecodeError, or a UTF-8 error)
                parsed = None
            try:
                answer = call(bytes(data), timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
                assert e.details()
            if parsed is None:
                assert code == grpc.StatusCode.INVALID_ARGUMENT, bytes(data)
            else:
                assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), bytes(data)
                if code == grpc.StatusCode.OK:
                    assert sorted(r.index for r in answer.ranked) == sorted(
                        {r.index for r in answer.ranked})
                    assert all(r.index < len(parsed.texts) for r in answer.ranked)
    assert server.proc.poll() is None and server.health() == "SERVING"
