"""Every head / option combination through a real server (CPU backend, tiny golden model)
against the Hugging Face reference values in tests/golden/tiny-l4-h128. The server's model is
that one as a BertForSequenceClassification checkpoint (a classifier added), whose logits'
reference is the classifier applied to the reference pooled output, as Hugging Face's
BertForSequenceClassification computes them."""
import itertools
import json
import os
import shutil
import subprocess
import sys

import grpc
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from server_harness import (DTYPE_TOL, TINY_MODEL, TINY_VOCAB, Server, classifier_model,  # noqa
                            classifier_weights, decode, hf_pair_tokenizer, read_safetensors,
                            rel_err, sentence_transformers_model, stubs)
from repo_paths import bin_path
from safetensors_io import write_safetensors

GOLDEN = read_safetensors(os.path.join(TINY_MODEL, "expected.safetensors"))
SEQ = GOLDEN["input_word_ids"].shape[1]
NUM_LAYERS = 4
LABELS = ("negative", "neutral", "positive")
CLASSIFIER_WEIGHT, CLASSIFIER_BIAS = classifier_weights(len(LABELS))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = classifier_model(tmp_path_factory.mktemp("heads") / "classifier", LABELS)
    s = Server(model_dir=model, vocab=TINY_VOCAB, extra=["--max_batch_tokens=2048"])
    yield s
    s.kill()


def expected_logits(i):
    pooled = GOLDEN["pooled_output"][i].astype(np.float64)
    return CLASSIFIER_WEIGHT.astype(np.float64) @ pooled + CLASSIFIER_BIAS


def token_inputs(pb2):
    inputs = []
    for ids, types, mask in zip(GOLDEN["input_word_ids"], GOLDEN["input_type_ids"],
                                GOLDEN["input_mask"]):
        n = int(mask.sum())
        inputs.append(pb2.Input(tokens=pb2.TokenInput(input_word_ids=ids[:n].tolist(),
                                                      input_type_ids=types[:n].tolist())))
    return inputs


def expected_mean(i):
    n = int(GOLDEN["input_mask"][i].sum())
    return GOLDEN["sequence_output"][i][:n].mean(axis=0)


def unit(v):
    return v / np.linalg.norm(v)


def check_result(pb2, result, i, heads, layers, padding, dtype, normalize):
    tol = DTYPE_TOL[dtype]
    n = int(GOLDEN["input_mask"][i].sum())
    rows = SEQ if padding != pb2.PADDING_TRIM else n
    assert result.num_tokens == n
    assert not result.truncated
    want = set(heads) if heads else {pb2.HEAD_DEFAULT}
    assert result.HasField("pooled_output") == (pb2.HEAD_POOLED in want)
    assert result.HasField("default_output") == (pb2.HEAD_DEFAULT in want)
    assert result.HasField("sequence_output") == (pb2.HEAD_SEQUENCE in want)
    assert result.HasField("mean_pooled_output") == (pb2.HEAD_MEAN_POOLED in want)
    assert result.HasField("cls_output") == (pb2.HEAD_CLS in want)
    assert result.HasField("logits") == (pb2.HEAD_LOGITS in want)
    assert (len(result.encoder_outputs) > 0) == (pb2.HEAD_ENCODER_OUTPUTS in want)
    pooled_ref = GOLDEN["pooled_output"][i]
    mean_ref = expected_mean(i)
    cls_ref = GOLDEN["sequence_output"][i][0]  # the last layer's [CLS] row
    if normalize:
        pooled_ref, mean_ref, cls_ref = unit(pooled_ref), unit(mean_ref), unit(cls_ref)
    for field, ref in [("pooled_output", pooled_ref), ("default_output", pooled_ref),
                       ("mean_pooled_output", mean_ref), ("cls_output", cls_ref)]:
        if result.HasField(field):
            t = getattr(result, field)
            assert t.dtype == dtype
            assert list(t.shape) == [128]
            assert rel_err(decode(t), ref) < tol, field
    if result.HasField("logits"):  # never normalised
        assert result.logits.dtype == dtype
        assert list(result.logits.shape) == [len(LABELS)]
        assert rel_err(decode(result.logits), expected_logits(i)) < tol
    if result.HasField("sequence_output"):
        t = result.sequence_output
        assert list(t.shape) == [rows, 128]
        assert t.dtype == dtype
        assert len(t.data) == rows * 128 * (4 if dtype == pb2.DATA_TYPE_FLOAT32 else 2)
        assert rel_err(decode(t), GOLDEN["sequence_output"][i][:rows]) < tol
    if pb2.HEAD_ENCODER_OUTPUTS in want:
        asked = layers if layers else list(range(NUM_LAYERS))
        resolved = [l % NUM_LAYERS for l in asked]
        assert [lo.layer for lo in result.encoder_outputs] == resolved
        for lo in result.encoder_outputs:
            assert list(lo.output.shape) == [rows, 128]
            ref = GOLDEN[f"encoder_outputs.{lo.layer}"][i][:rows]
            assert rel_err(decode(lo.output), ref) < tol, lo.layer


ALL_HEADS = ["HEAD_POOLED", "HEAD_SEQUENCE", "HEAD_ENCODER_OUTPUTS", "HEAD_DEFAULT",
             "HEAD_MEAN_POOLED", "HEAD_CLS", "HEAD_LOGITS"]


@pytest.mark.parametrize("padding", ["PADDING_UNSPECIFIED", "PADDING_PAD_TO_SEQ_LENGTH",
                                     "PADDING_TRIM"])
@pytest.mark.parametrize("dtype", ["DATA_TYPE_UNSPECIFIED", "DATA_TYPE_FLOAT32",
                                   "DATA_TYPE_FLOAT16", "DATA_TYPE_BFLOAT16"])
@pytest.mark.parametrize("normalize", [False, True])
def test_all_heads_every_padding_dtype_normalize(server, padding, dtype, normalize):
    pb2, _ = stubs()
    req = pb2.EmbedRequest(inputs=token_inputs(pb2), seq_length=SEQ,
                           heads=[getattr(pb2, h) for h in ALL_HEADS],
                           padding=getattr(pb2, padding),
                           output_dtype=getattr(pb2, dtype), normalize=normalize,
                           request_id="all-heads")
    resp = server.stub().Embed(req, timeout=30)
    assert resp.request_id == "all-heads"
    assert len(resp.results) == 6
    want_dtype = max(1, getattr(pb2, dtype))
    for i, result in enumerate(resp.results):
        check_result(pb2, result, i, req.heads, [], getattr(pb2, padding), want_dtype,
                     normalize)
        assert result.timing.total_us > 0
        assert result.timing.inference_us > 0
    assert resp.timing.total_us >= resp.timing.inference_us > 0


HEAD_SUBSETS = [()] + [c for r in (1, 2, 3) for c in itertools.combinations(ALL_HEADS, r)]


@pytest.mark.parametrize("heads", HEAD_SUBSETS, ids=lambda h: "+".join(h) or "empty")
def test_head_subsets_return_only_what_was_asked(server, heads):
    pb2, _ = stubs()
    head_values = [getattr(pb2, h) for h in heads]
    for padding in (pb2.PADDING_PAD_TO_SEQ_LENGTH, pb2.PADDING_TRIM):
        req = pb2.EmbedRequest(inputs=token_inputs(pb2)[2:5], seq_length=SEQ, heads=head_values,
                               padding=padding)
        resp = server.stub().Embed(req, timeout=30)
        for k, result in enumerate(resp.results):
            check_result(pb2, result, k + 2, head_values, [], padding, 1, False)


@pytest.mark.parametrize("layers", [[0], [3], [-1], [-4, 2], [2, 0, 2], [1, 3]])
def test_layer_selection(server, layers):
    pb2, _ = stubs()
    req = pb2.EmbedRequest(inputs=token_inputs(pb2), seq_length=SEQ,
                           heads=[pb2.HEAD_ENCODER_OUTPUTS], layers=layers,
                           padding=pb2.PADDING_TRIM)
    resp = server.stub().Embed(req, timeout=30)
    for i, result in enumerate(resp.results):
        check_result(pb2, result, i, req.heads, layers, pb2.PADDING_TRIM, 1, False)


@pytest.mark.parametrize("dtype", ["DATA_TYPE_FLOAT32", "DATA_TYPE_FLOAT16"])
def test_dimensions_keep_the_leading_values_of_the_vector_heads(server, dtype):
    """Matryoshka embeddings: the first `dimensions` values of Hugging Face's vectors, made unit
    length afterwards under `normalize`; the other heads whole; bert_client --dimensions."""
    pb2, _ = stubs()
    dtype = getattr(pb2, dtype)
    tol = DTYPE_TOL[dtype]
    heads = [pb2.HEAD_POOLED, pb2.HEAD_DEFAULT, pb2.HEAD_MEAN_POOLED, pb2.HEAD_CLS,
             pb2.HEAD_SEQUENCE, pb2.HEAD_LOGITS]
    for dims in (1, 16, 127, 128):
        for normalize in (False, True):
            resp = server.stub().Embed(pb2.EmbedRequest(
                inputs=token_inputs(pb2), seq_length=SEQ, heads=heads, dimensions=dims,
                normalize=normalize, output_dtype=dtype), timeout=30)
            for i, r in enumerate(resp.results):
                refs = {"pooled_output": GOLDEN["pooled_output"][i],
                        "default_output": GOLDEN["pooled_output"][i],
                        "mean_pooled_output": expected_mean(i),
                        "cls_output": GOLDEN["sequence_output"][i][0]}
                for field, ref in refs.items():
                    t = getattr(r, field)
                    assert list(t.shape) == [dims], field
                    want = unit(ref[:dims]) if normalize else ref[:dims]
                    assert rel_err(decode(t), want) < tol, (field, dims, normalize)
                assert list(r.sequence_output.shape) == [SEQ, 128]
                assert rel_err(decode(r.logits), expected_logits(i)) < tol  # the whole pooled
    stub = server.stub()
    for dims, heads, words in ((129, [pb2.HEAD_CLS], "outside [1, 128]"),
                               (8, [pb2.HEAD_SEQUENCE], "none is asked for")):
        with pytest.raises(grpc.RpcError) as e:
            stub.Embed(pb2.EmbedRequest(inputs=token_inputs(pb2)[:1], heads=heads,
                                        dimensions=dims), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details().startswith("dimensions: ") and words in e.value.details()
    r = subprocess.run([bin_path("client", "bert_client"), f"--server={server.address}",
                        "embed", "--json", "--heads=cls", "--dimensions=16", "--normalize",
                        "a short text"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["cls_output"]["shape"] == [16]
    assert abs(np.linalg.norm(row["cls_output"]["values"]) - 1) < 1e-5


def test_longer_seq_length_pads_more_rows(server):
    """seq_length 48 > the golden 32: the first 32 rows of padded rows still match the
    reference only for real tokens (positions differ past 32 are new rows)."""
    pb2, _ = stubs()
    req = pb2.EmbedRequest(inputs=token_inputs(pb2), seq_length=48,
                           heads=[pb2.HEAD_SEQUENCE, pb2.HEAD_POOLED])
    resp = server.stub().Embed(req, timeout=30)
    for i, result in enumerate(resp.results):
        n = int(GOLDEN["input_mask"][i].sum())
        seq = decode(result.sequence_output)
        assert seq.shape == (48, 128)
        assert rel_err(seq[:32], GOLDEN["sequence_output"][i]) < 1e-4
        assert rel_err(decode(result.pooled_output), GOLDEN["pooled_output"][i]) < 1e-4
        assert np.all(np.isfinite(seq))
        assert n <= 32


def test_token_inputs_truncate_to_seq_length(server):
    pb2, _ = stubs()
    ids = GOLDEN["input_word_ids"][0].tolist()  # 32 real tokens
    req = pb2.EmbedRequest(inputs=[pb2.Input(tokens=pb2.TokenInput(input_word_ids=ids))],
                           seq_length=16, heads=[pb2.HEAD_SEQUENCE], padding=pb2.PADDING_TRIM)
    r = server.stub().Embed(req, timeout=30).results[0]
    assert r.truncated and r.num_tokens == 16
    assert list(r.sequence_output.shape) == [16, 128]


def test_text_inputs_equal_their_token_inputs(server):
    """Embed(text) == Embed(the ids Tokenize returns for that text)."""
    pb2, _ = stubs()
    stub = server.stub()
    texts = [pb2.TextInput(text_a="hello world"),
             pb2.TextInput(text_a="Please subscribe to this newsletter",
                           text_b="you are being offered this job role")]
    tok = stub.Tokenize(pb2.TokenizeRequest(inputs=texts, seq_length=24), timeout=10)
    heads = [pb2.HEAD_POOLED, pb2.HEAD_SEQUENCE, pb2.HEAD_MEAN_POOLED]
    by_text = stub.Embed(pb2.EmbedRequest(inputs=[pb2.Input(text=t) for t in texts],
                                          seq_length=24, heads=heads), timeout=30)
    token_inputs_ = []
    for e in tok.encodings:
        n = e.num_tokens
        token_inputs_.append(pb2.Input(tokens=pb2.TokenInput(
            input_word_ids=e.input_word_ids[:n], input_type_ids=e.input_type_ids[:n])))
    by_ids = stub.Embed(pb2.EmbedRequest(inputs=token_inputs_, seq_length=24, heads=heads),
                        timeout=30)
    for a, b in zip(by_text.results, by_ids.results, strict=True):
        assert a.num_tokens == b.num_tokens
        for f in ("pooled_output", "sequence_output", "mean_pooled_output"):
            np.testing.assert_allclose(decode(getattr(a, f)), decode(getattr(b, f)),
                                       rtol=1e-5, atol=1e-5)


def test_cls_head_on_a_model_without_pooler(tmp_path):
    """A checkpoint saved without the pooler (as sentence-transformers exports often are):
    HEAD_CLS and HEAD_MEAN_POOLED serve, HEAD_DEFAULT / HEAD_POOLED are refused with a status
    that names the heads that work."""
    pb2, _ = stubs()
    weights = read_safetensors(os.path.join(TINY_MODEL, "model.safetensors"))
    kept = {k: v for k, v in weights.items() if "pooler" not in k}
    assert len(kept) < len(weights)
    shutil.copy(os.path.join(TINY_MODEL, "config.json"), tmp_path / "config.json")
    write_safetensors(tmp_path / "model.safetensors", kept)
    server = Server(model_dir=str(tmp_path), vocab=TINY_VOCAB, extra=["--max_batch_tokens=2048"])
    try:
        stub = server.stub()
        assert not stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10).config.has_pooler
        inputs = token_inputs(pb2)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Embed(pb2.EmbedRequest(inputs=inputs[:1], seq_length=SEQ), timeout=30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "HEAD_CLS" in refused.value.details()
        resp = stub.Embed(pb2.EmbedRequest(inputs=inputs, seq_length=SEQ, normalize=True,
                                           heads=[pb2.HEAD_CLS, pb2.HEAD_MEAN_POOLED]),
                          timeout=30)
        for i, result in enumerate(resp.results):
            check_result(pb2, result, i, [pb2.HEAD_CLS, pb2.HEAD_MEAN_POOLED], [],
                         pb2.PADDING_PAD_TO_SEQ_LENGTH, pb2.DATA_TYPE_FLOAT32, True)
    finally:
        server.kill()


def test_prompts_on_a_sentence_transformers_model(tmp_path):
    """prompt_name puts the model's prompt in front of text_a (as sentence-transformers'
    encode(prompt_name=...)); bert_client's --heads=embedding takes the model's CLS pooling,
    normalisation, max_seq_length and default prompt."""
    pb2, _ = stubs()
    prompts = {"query": "query: ", "passage": "passage: "}
    model = sentence_transformers_model(tmp_path / "st", "cls", prompts, "query", max_seq=24,
                                        similarity="dot")
    texts = ["hello world", "a somewhat longer text " * 5]
    with Server(model_dir=model, vocab=TINY_VOCAB) as server:
        stub = server.stub()
        e = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10).sentence_embedding
        assert (e.head, e.normalize, e.max_seq_length) == (pb2.HEAD_CLS, True, 24)
        assert dict(e.prompts) == prompts and e.default_prompt_name == "query"
        assert e.similarity_fn_name == "dot"

        def embed(inputs, **kw):
            return stub.Embed(pb2.EmbedRequest(inputs=inputs, heads=[pb2.HEAD_SEQUENCE],
                                               padding=pb2.PADDING_TRIM, **kw), timeout=30)

        def text(a, b=None):
            return pb2.Input(text=pb2.TextInput(text_a=a, text_b=b))

        # Tokenize shows the prompt's tokens in front.
        tok = stub.Tokenize(pb2.TokenizeRequest(inputs=[pb2.TextInput(text_a="hello world")],
                                                prompt_name="passage"), timeout=10)
        plain = stub.Tokenize(pb2.TokenizeRequest(inputs=[pb2.TextInput(
            text_a="passage: hello world")]), timeout=10)
        assert list(tok.encodings[0].tokens) == list(plain.encodings[0].tokens)
        # Its offsets count from the prompt's start, as the encoded text does.
        assert list(tok.encodings[0].token_starts) == list(plain.encodings[0].token_starts)
        assert list(tok.encodings[0].token_ends) == list(plain.encodings[0].token_ends)
        assert tok.encodings[0].token_ends[-2] == len("passage: hello world")
        embedded = stub.Embed(pb2.EmbedRequest(inputs=[text("hello world")], prompt_name="passage",
                                               heads=[pb2.HEAD_CLS], return_offsets=True),
                              timeout=10).results[0]
        assert list(embedded.token_starts) == list(tok.encodings[0].token_starts)
        assert list(embedded.token_ends) == list(tok.encodings[0].token_ends)
        with_prompt = embed([text(t) for t in texts] + [text("q", "p")], prompt_name="passage")
        written = embed([text("passage: " + t) for t in texts] + [text("passage: q", "p")])
        for a, b in zip(with_prompt.results, written.results, strict=True):
            assert a.num_tokens == b.num_tokens
            assert a.sequence_output.data == b.sequence_output.data
        # Unknown names and token inputs are refused, naming what is wrong.
        for kw, inputs, message in [
                ({"prompt_name": "Query"}, [text("x")], '"passage", "query"'),
                ({"prompt_name": "query"}, [pb2.Input(tokens=pb2.TokenInput(
                    input_word_ids=[101, 102]))], "inputs[0]: prompt_name applies to text")]:
            with pytest.raises(grpc.RpcError) as refused:
                embed(inputs, **kw)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in refused.value.details()
        # On a stream: an error for that message, and the stream goes on.
        answers = list(stub.EmbedStream(iter([
            pb2.EmbedRequest(inputs=[text("x")], prompt_name="nope", request_id="bad"),
            pb2.EmbedRequest(inputs=[text("x")], prompt_name="query", request_id="good")]),
            timeout=30))
        assert answers[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "nope" in answers[0].error.message
        assert answers[1].request_id == "good" and not answers[1].HasField("error")
        # bert_client: the model's embedding with its default prompt and length.
        client = [bin_path("client", "bert_client"), f"--server={server.address}", "embed",
                  "--json", "--padding=trim"]
        r = subprocess.run(client + ["--heads=embedding", *texts], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        direct = stub.Embed(pb2.EmbedRequest(
            inputs=[text(t) for t in texts], heads=[pb2.HEAD_CLS], normalize=True,
            seq_length=24, prompt_name="query", padding=pb2.PADDING_TRIM), timeout=30)
        for row, res in zip(rows, direct.results, strict=True):
            assert row["num_tokens"] == res.num_tokens
            np.testing.assert_allclose(row["cls_output"]["values"], decode(res.cls_output),
                                       rtol=1e-6)
        assert rows[1]["num_tokens"] == 24 and rows[1]["truncated"]
        # Token inputs take no prompt: the default is not sent for them.
        ids = {"input_word_ids": [2, 5, 3]}
        r = subprocess.run(client + ["--heads=embedding"], input=json.dumps(ids),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        by_ids = stub.Embed(pb2.EmbedRequest(
            inputs=[pb2.Input(tokens=pb2.TokenInput(input_word_ids=ids["input_word_ids"]))],
            heads=[pb2.HEAD_CLS], normalize=True, seq_length=24), timeout=30)
        np.testing.assert_allclose(json.loads(r.stdout)["cls_output"]["values"],
                                   decode(by_ids.results[0].cls_output), rtol=1e-6)
        # --prompt_name=none: no prompt; bert_load sends the default.
        r = subprocess.run(client + ["--heads=embedding", "--prompt_name=none", texts[0]],
                           capture_output=True, text=True, timeout=60)
        assert json.loads(r.stdout)["num_tokens"] == embed([text(texts[0])]).results[0].num_tokens
        assert json.loads(r.stdout)["num_tokens"] < direct.results[0].num_tokens
        report = tmp_path / "load.json"
        load = subprocess.run([bin_path("client", "bert_load"), f"--server={server.address}",
                               "--heads=embedding", "--concurrency=1", "--duration_s=0.3",
                               "--warmup_s=0", "--lengths=fixed:5", f"--json_out={report}"],
                              capture_output=True, text=True, timeout=60)
        assert load.returncode == 0, load.stdout + load.stderr
        workload = json.loads(report.read_text())["workload"]
        assert workload["prompt_name"] == "query" and workload["heads_sent"] == ["HEAD_CLS"]
        # A text that fits alone but not with the prompt, under TRUNCATION_REJECT.
        with pytest.raises(grpc.RpcError) as too_long:
            stub.Embed(pb2.EmbedRequest(inputs=[text("a b c d")], seq_length=6,
                                        prompt_name="query",
                                        truncation=pb2.TRUNCATION_REJECT), timeout=30)
        assert too_long.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert 'with the prompt "query: "' in too_long.value.details()
        info = json.loads(subprocess.run(client[:2] + ["info", "--json"], capture_output=True,
                                         text=True, timeout=60).stdout)
        assert info["sentence_embedding"]["prompts"] == prompts
        assert info["sentence_embedding"]["default_prompt_name"] == "query"
        assert info["sentence_embedding"]["similarity_fn_name"] == "dot"


def test_classifier_info_pairs_and_the_client(server, tmp_path):
    """GetModelInfo names the classifier's labels and problem type; sentence pairs (a
    cross-encoder's (query, passage)) get their logits; bert_client prints them; a model
    without a classifier refuses HEAD_LOGITS, naming what it lacks."""
    pb2, _ = stubs()
    stub = server.stub()
    info = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
    assert info.HasField("classifier")
    assert list(info.classifier.labels) == list(LABELS)
    assert info.classifier.problem_type == "single_label_classification"
    assert info.classifier.activation_function == ""
    assert info.classifier.max_seq_length == 512  # no tokenizer_config.json: the positions
    pairs = [("hello world", "good morning"), ("a query", "a passage about it")]
    inputs = [pb2.Input(text=pb2.TextInput(text_a=a, text_b=b)) for a, b in pairs]
    resp = stub.Embed(pb2.EmbedRequest(inputs=inputs, heads=[pb2.HEAD_LOGITS, pb2.HEAD_POOLED]),
                      timeout=30)
    for result in resp.results:
        want = CLASSIFIER_WEIGHT.astype(np.float64) @ decode(result.pooled_output) + CLASSIFIER_BIAS
        np.testing.assert_allclose(decode(result.logits), want, rtol=1e-5, atol=1e-6)
    client = [bin_path("client", "bert_client"), f"--server={server.address}"]
    r = subprocess.run(client + ["embed", "--json", "--pair", "--heads=logits",
                                 *[t for pair in pairs for t in pair]],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    for row, result in zip(rows, resp.results, strict=True):
        assert row["logits"]["shape"] == [len(LABELS)]
        np.testing.assert_allclose(row["logits"]["values"], decode(result.logits), rtol=1e-6)
    # The text summary: labels by logit, highest first, with softmax scores (single label).
    r = subprocess.run(client + ["embed", "--pair", "--heads=logits", "--show=3", *pairs[0]],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert ("Logits: 3 labels (problem_type single_label_classification, activation unset; "
            "scores: softmax)") in r.stdout
    logits = decode(resp.results[0].logits).astype(np.float64)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    want = "  ".join(f"{LABELS[k]} {logits[k]:.6g} ({probs[k]:.4f})"
                     for k in np.argsort(-logits, kind="stable"))
    assert f"[0] {want}\n" in r.stdout, r.stdout
    r = subprocess.run(client + ["info", "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(r.stdout)["classifier"] == {
        "labels": list(LABELS), "problem_type": "single_label_classification",
        "activation_function": "", "max_seq_length": 512, "per_token": False}
    with Server() as plain:
        assert not plain.stub().GetModelInfo(pb2.GetModelInfoRequest(),
                                             timeout=10).HasField("classifier")
        with pytest.raises(grpc.RpcError) as refused:
            plain.stub().Embed(pb2.EmbedRequest(inputs=inputs, heads=[pb2.HEAD_LOGITS]),
                               timeout=30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no sequence-classification head" in refused.value.details()
        r = subprocess.run([bin_path("client", "bert_client"), f"--server={plain.address}",
                            "info", "--json"], capture_output=True, text=True, timeout=60)
        assert "classifier" not in json.loads(r.stdout)


def test_long_pairs_are_scored_as_hugging_face_truncates_them(server):
    """TRUNCATION_LONGEST_FIRST packs a pair as Hugging Face tokenizers do; bert_client's
    --heads=logits asks for it and the classifier's max_seq_length by itself, so a long
    (query, passage) pair gets the logits of that packing."""
    pb2, _ = stubs()
    stub = server.stub()
    query = "what is the capital of france"
    passage = " ".join(["paris is the capital and most populous city of france"] * 30)
    pairs = [(query, passage), (passage, query), (passage, passage + " again"),
             (query * 3, query * 4)]
    whole = hf_pair_tokenizer(100000)
    for seq_length in (16, 33, 128):
        hf = hf_pair_tokenizer(seq_length)
        resp = stub.Tokenize(pb2.TokenizeRequest(
            inputs=[pb2.TextInput(text_a=a, text_b=b) for a, b in pairs],
            seq_length=seq_length, truncation=pb2.TRUNCATION_LONGEST_FIRST), timeout=30)
        for (a, b), enc in zip(pairs, resp.encodings, strict=True):
            want = hf.encode(a, b)
            n = enc.num_tokens
            assert list(enc.input_word_ids[:n]) == want.ids, (seq_length, a[:20], b[:20])
            assert list(enc.input_type_ids[:n]) == want.type_ids
            assert enc.truncated == (len(whole.encode(a, b).ids) > seq_length)
    # The client: longest_first at the classifier's 512 tokens unless told otherwise.
    client = [bin_path("client", "bert_client"), f"--server={server.address}", "embed",
              "--json", "--pair", "--heads=logits"]
    long_pair = (query, passage * 2)  # over 512 tokens together
    r = subprocess.run(client + list(long_pair), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["num_tokens"] == 512 and row["truncated"]
    direct = stub.Embed(pb2.EmbedRequest(
        inputs=[pb2.Input(text=pb2.TextInput(text_a=long_pair[0], text_b=long_pair[1]))],
        heads=[pb2.HEAD_LOGITS], seq_length=512, truncation=pb2.TRUNCATION_LONGEST_FIRST),
        timeout=30)
    np.testing.assert_allclose(row["logits"]["values"], decode(direct.results[0].logits),
                               rtol=1e-6)
    r = subprocess.run(client + ["--seq_length=64", "--truncation=truncate", *long_pair],
                       capture_output=True, text=True, timeout=60)
    assert json.loads(r.stdout)["num_tokens"] == 64


def test_a_cross_encoder_that_names_the_identity_gets_raw_scores(tmp_path):
    """One label and sentence-transformers' "sbert_ce_default_activation_function": Identity
    (as cross-encoder/ms-marco-* name it): GetModelInfo says so, and bert_client shows no
    sigmoid (CrossEncoder.predict returns the raw logit); tokenizer_config.json's
    model_max_length is the classifier's max_seq_length."""
    pb2, _ = stubs()
    model = classifier_model(tmp_path / "ce", labels=("LABEL_0",), problem_type=None,
                             extra_config={"sbert_ce_default_activation_function":
                                           "torch.nn.modules.linear.Identity"})
    (tmp_path / "ce" / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "model_max_length": 256}))
    with Server(model_dir=model, vocab=TINY_VOCAB, extra=["--max_batch_tokens=2048"]) as server:
        info = server.stub().GetModelInfo(pb2.GetModelInfoRequest(), timeout=10).classifier
        assert info.activation_function == "torch.nn.modules.linear.Identity"
        assert info.max_seq_length == 256 and info.problem_type == ""
        r = subprocess.run([bin_path("client", "bert_client"), f"--server={server.address}",
                            "embed", "--pair", "--heads=logits", "a query", "a passage"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert ("Logits: 1 labels (problem_type unset, activation "
                "torch.nn.modules.linear.Identity; scores: none)") in r.stdout
        line = next(l for l in r.stdout.splitlines() if l.startswith("  [0] LABEL_0 "))
        assert "(" not in line  # no score beside the logit


def test_a_token_classification_checkpoint_serves_its_encoder(tmp_path):
    """BertForTokenClassification's classifier reads each token's state: HEAD_TOKEN_LOGITS, not
    HEAD_LOGITS. The checkpoint (here without a pooler, as recent ones are) serves the
    encoder's heads, equal to the reference."""
    pb2, _ = stubs()
    model = classifier_model(tmp_path / "ner", labels=tuple(f"B-{i}" for i in range(9)),
                             problem_type=None,
                             extra_config={"architectures": ["BertForTokenClassification"]})
    weights = read_safetensors(os.path.join(model, "model.safetensors"))
    write_safetensors(os.path.join(model, "model.safetensors"),
                      {k: v for k, v in weights.items() if "pooler" not in k})
    with Server(model_dir=model, vocab=TINY_VOCAB, extra=["--max_batch_tokens=2048"]) as server:
        stub = server.stub()
        info = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
        assert info.classifier.per_token and len(info.classifier.labels) == 9
        resp = stub.Embed(pb2.EmbedRequest(inputs=token_inputs(pb2), seq_length=SEQ,
                                           heads=[pb2.HEAD_SEQUENCE]), timeout=30)
        for i, result in enumerate(resp.results):
            check_result(pb2, result, i, [pb2.HEAD_SEQUENCE], [], pb2.PADDING_PAD_TO_SEQ_LENGTH,
                         pb2.DATA_TYPE_FLOAT32, False)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Embed(pb2.EmbedRequest(inputs=token_inputs(pb2)[:1], heads=[pb2.HEAD_LOGITS]),
                       timeout=30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("activation", ["torch.nn.modules.linear.Identity", None])
def test_the_readme_reranking_example_runs(tmp_path, activation):
    """server/README.md's reranking example (Rerank), against a one-label classifier model: the
    scores it ranks by are the logits (Identity named) or their sigmoid (none named), of pairs
    packed at the classifier's length with longest_first truncation."""
    import ast
    import re
    from repo_paths import REPO
    pb2, _ = stubs()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```",
                                      (REPO / "server" / "README.md").read_text(), re.S)
                if "Rerank(" in b]
    extra = {"sbert_ce_default_activation_function": activation} if activation else {}
    model = classifier_model(tmp_path / "ce", labels=("LABEL_0",), problem_type=None,
                             extra_config=extra)
    (tmp_path / "ce" / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}))
    protoc = re.search(r"^# (\.venv/bin/python -m grpc_tools\.protoc .*)$", block, re.M)
    args = protoc.group(1).split()[1:]
    subprocess.run([sys.executable, *args[:-1], str(REPO / args[-1]), f"-I{REPO}"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=60)
    with Server(model_dir=model, vocab=TINY_VOCAB, extra=["--max_batch_tokens=2048"]) as server:
        script = block.replace("127.0.0.1:50051", server.address)
        script += "\nimport json; print(json.dumps([float(s) for s in scores]), ranked[0])\n"
        r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        last = r.stdout.strip().split("\n")[-1]
        scores = json.loads(last.split("]")[0] + "]")
        # The same pairs, asked for with their pooled output: the classifier by hand.
        query = ast.literal_eval(re.search(r"query = (.*)", block).group(1))
        passages = ast.literal_eval(re.search(r"passages = (\[.*?\])", block, re.S).group(1))
        resp = server.stub().Embed(pb2.EmbedRequest(
            inputs=[pb2.Input(text=pb2.TextInput(text_a=query, text_b=p)) for p in passages],
            heads=[pb2.HEAD_POOLED], seq_length=64, truncation=pb2.TRUNCATION_LONGEST_FIRST),
            timeout=30)
        weight, bias = classifier_weights(1)
        logits = [float(weight[0].astype(np.float64) @ decode(res.pooled_output) + bias[0])
                  for res in resp.results]
        want = logits if activation else [1 / (1 + np.exp(-x)) for x in logits]
        np.testing.assert_allclose(scores, want, rtol=1e-5)
        assert last.split("] ", 1)[1].strip() == passages[int(np.argmax(want))]
        # The loop's lines: best first, each score with its passage.
        order = np.argsort(-np.array(want), kind="stable")
        assert r.stdout.split("\n")[:len(passages)] == [
            f"{scores[i]:.4f} {passages[i]}" for i in order]


NER_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")


@pytest.mark.parametrize("pooler", [True, False])
def test_token_classifier_logits_for_every_row(tmp_path, pooler):
    """A BertForTokenClassification checkpoint (usually without a pooler): HEAD_TOKEN_LOGITS is
    the classifier on every row of the last layer, as Hugging Face computes it, for the rows
    `padding` gives; GetModelInfo says per_token; the sequence-level heads that need a
    classifier are refused, naming the one it has; bert_client shows each token's label."""
    pb2, _ = stubs()
    model = classifier_model(tmp_path / "ner", NER_LABELS, problem_type=None,
                             architecture="BertForTokenClassification")
    if not pooler:
        tensors = read_safetensors(os.path.join(model, "model.safetensors"))
        write_safetensors(os.path.join(model, "model.safetensors"),
                          {k: v for k, v in tensors.items() if ".pooler." not in k})
    weight, bias = classifier_weights(len(NER_LABELS))
    with Server(model_dir=model, vocab=TINY_VOCAB) as server:
        stub = server.stub()
        info = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
        assert info.classifier.per_token and list(info.classifier.labels) == list(NER_LABELS)
        assert info.config.has_pooler == pooler
        inputs = [pb2.Input(text=pb2.TextInput(text_a="hello world")),
                  pb2.Input(text=pb2.TextInput(text_a="good morning", text_b="thank you"))]
        for padding, dtype, tol in [(pb2.PADDING_TRIM, pb2.DATA_TYPE_FLOAT32, 1e-5),
                                    (pb2.PADDING_PAD_TO_SEQ_LENGTH, pb2.DATA_TYPE_FLOAT16, 1e-2)]:
            resp = stub.Embed(pb2.EmbedRequest(
                inputs=inputs, heads=[pb2.HEAD_TOKEN_LOGITS, pb2.HEAD_SEQUENCE], seq_length=16,
                padding=padding, output_dtype=dtype), timeout=30)
            for result in resp.results:
                rows = result.num_tokens if padding == pb2.PADDING_TRIM else 16
                logits = decode(result.token_logits)
                assert result.token_logits.dtype == dtype
                assert list(result.token_logits.shape) == [rows, len(NER_LABELS)]
                sequence = decode(result.sequence_output).astype(np.float64)
                want = sequence @ weight.astype(np.float64).T + bias
                np.testing.assert_allclose(logits, want, rtol=tol, atol=tol)
                assert not result.HasField("logits")
        # Only the token logits: the sequence output is computed but not sent.
        alone = stub.Embed(pb2.EmbedRequest(inputs=inputs[:1], heads=[pb2.HEAD_TOKEN_LOGITS],
                                            padding=pb2.PADDING_TRIM), timeout=30).results[0]
        assert not alone.HasField("sequence_output")
        assert list(alone.token_logits.shape) == [4, len(NER_LABELS)]
        assert not alone.token_starts
        # return_offsets: each row's bytes in its text, from the same call, as Tokenize gives.
        with_offsets = stub.Embed(pb2.EmbedRequest(
            inputs=inputs, heads=[pb2.HEAD_TOKEN_LOGITS], seq_length=16, return_offsets=True),
            timeout=30)
        encodings = stub.Tokenize(pb2.TokenizeRequest(
            inputs=[i.text for i in inputs], seq_length=16), timeout=30).encodings
        for result, encoding in zip(with_offsets.results, encodings, strict=True):
            assert len(result.token_starts) == result.num_tokens == encoding.num_tokens
            assert list(result.token_starts) == list(encoding.token_starts)
            assert list(result.token_ends) == list(encoding.token_ends)
        assert list(zip(with_offsets.results[1].token_starts, with_offsets.results[1].token_ends)) \
            == [(0, 0), (0, 4), (5, 12), (0, 0), (0, 5), (6, 9), (0, 0)]
        with pytest.raises(grpc.RpcError) as refused:
            stub.Embed(pb2.EmbedRequest(inputs=[pb2.Input(tokens=pb2.TokenInput(
                input_word_ids=[2, 3]))], heads=[pb2.HEAD_TOKEN_LOGITS], return_offsets=True),
                timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "return_offsets applies to text inputs" in refused.value.details()
        with pytest.raises(grpc.RpcError) as refused:
            stub.Embed(pb2.EmbedRequest(inputs=inputs, heads=[pb2.HEAD_LOGITS]), timeout=30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "ask for HEAD_TOKEN_LOGITS" in refused.value.details()
        with pytest.raises(grpc.RpcError) as refused:
            stub.Rerank(pb2.RerankRequest(query="q", texts=["a"]), timeout=30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "this one has a token classifier" in refused.value.details()
        client = [bin_path("client", "bert_client"), f"--server={server.address}"]
        r = subprocess.run(client + ["embed", "--heads=token_logits", "--padding=trim",
                                     "hello world"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        labels = [NER_LABELS[k] for k in np.argmax(decode(alone.token_logits), axis=1)]
        assert f"[0] hello={labels[1]}  world={labels[2]}\n" in r.stdout, r.stdout
        # A pair's second text: its tokens' offsets are in text_b.
        r = subprocess.run(client + ["embed", "--heads=token_logits", "--padding=trim",
                                     "good morning ||| thank you"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "[0] good=" in r.stdout and "  thank=" in r.stdout and "  you=" in r.stdout, r.stdout
        r = subprocess.run(client + ["embed", "--json", "--heads=token_logits", "hello world"],
                           capture_output=True, text=True, timeout=60)
        row = json.loads(r.stdout)
        assert row["token_logits"]["shape"] == [128, len(NER_LABELS)]
        assert row["offsets"] == [[0, 0], [0, 5], [6, 11], [0, 0]]
        np.testing.assert_allclose(np.reshape(row["token_logits"]["values"], (128, -1))[:4],
                                   decode(alone.token_logits), rtol=1e-6)
        r = subprocess.run(client + ["info", "--json"], capture_output=True, text=True, timeout=60)
        assert json.loads(r.stdout)["classifier"]["per_token"] is True


def simple_entities(logits, spans, labels):
    """Hugging Face's token-classification pipeline, aggregation_strategy="simple", over one
    text's real tokens: (group, score, start, end) of each entity not labelled "O"."""
    def tag(name):
        if name.startswith(("B-", "I-")):
            return name[0] == "B", name[2:]
        return False, name
    groups, current = [], []
    for row, (start, end) in zip(logits, spans):
        if start == end:  # [CLS], [SEP]
            continue
        p = np.exp(row.astype(np.float64) - row.max())
        p /= p.sum()
        label = int(np.argmax(row))
        token = (labels[label], p[label], start, end)
        if current and (tag(token[0])[0] or tag(token[0])[1] != tag(current[-1][0])[1]):
            groups.append(current)
            current = []
        current.append(token)
    if current:
        groups.append(current)
    out = []
    for g in groups:
        name = g[0][0].split("-", 1)[-1]
        if name != "O":
            out.append((name, float(np.mean([t[1] for t in g])), g[0][2], g[-1][3]))
    return out


def test_ner_groups_the_token_labels_into_entities(tmp_path):
    """bert_client ner: the token classifier's labels grouped into entities as the
    token-classification pipeline's "simple" aggregation does, with byte spans and their text."""
    pb2, _ = stubs()
    model = classifier_model(tmp_path / "ner", NER_LABELS, problem_type=None, seed=5,
                             architecture="BertForTokenClassification")
    texts = ["hello world, good morning to you", "thank you very much for the good time",
             "é hello"]
    with Server(model_dir=model, vocab=TINY_VOCAB) as server:
        resp = server.stub().Embed(pb2.EmbedRequest(
            inputs=[pb2.Input(text=pb2.TextInput(text_a=t)) for t in texts],
            heads=[pb2.HEAD_TOKEN_LOGITS], padding=pb2.PADDING_TRIM, return_offsets=True),
            timeout=30)
        client = [bin_path("client", "bert_client"), f"--server={server.address}"]
        r = subprocess.run(client + ["ner", "--json", *texts], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        found = 0
        for text, row, result in zip(texts, rows, resp.results, strict=True):
            want = simple_entities(decode(result.token_logits),
                                   list(zip(result.token_starts, result.token_ends)), NER_LABELS)
            got = [(e["entity_group"], e["score"], e["start"], e["end"]) for e in row["entities"]]
            assert [g[0] for g in got] == [w[0] for w in want] and \
                [g[2:] for g in got] == [w[2:] for w in want], (text, got, want)
            np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-6)
            for e in row["entities"]:
                assert e["word"] == text.encode()[e["start"]:e["end"]].decode()
            found += len(got)
        assert found > 0  # the seeded classifier finds some
        r = subprocess.run(client + ["ner", texts[0]], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"[0] {len(rows[0]['entities'])} entities\n"), r.stdout
        r = subprocess.run(client + ["ner", "a ||| b"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "ner takes single texts" in r.stderr
        json_lines = [json.dumps(row) for row in rows]
    # Where one request takes fewer texts, they go in calls of that size, indexed as before.
    with Server(model_dir=model, vocab=TINY_VOCAB, extra=["--max_inputs_per_request=2"]) as small:
        r = subprocess.run([bin_path("client", "bert_client"), f"--server={small.address}", "ner",
                            "--json", *texts], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert [json.dumps(json.loads(line)) for line in r.stdout.splitlines()] == json_lines
    with Server() as plain:
        r = subprocess.run([bin_path("client", "bert_client"), f"--server={plain.address}", "ner",
                            "x"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "no token classifier" in r.stderr


def word_entities(logits, spans, tokens, text, labels, strategy):
    """The pipeline's word strategies ("first", "average", "max") over one text: a token whose
    vocabulary string and text differ in length (in characters; not [UNK]) continues the
    word before it; each word takes one label; the words are grouped as simple_entities groups
    tokens. (group, score, start, end) with byte spans."""
    data = text.encode()
    words = []
    for row, (start, end), token in zip(logits, spans, tokens, strict=True):
        if start == end:
            continue
        p = np.exp(row.astype(np.float64) - row.max())
        p /= p.sum()
        piece = data[start:end].decode()
        if words and token != "[UNK]" and len(token) != len(piece):
            words[-1].append((p, start, end))
        else:
            words.append([(p, start, end)])
    word_logits, word_spans = [], []
    for word in words:
        if strategy == "first":
            p = word[0][0]
        elif strategy == "max":
            p = max((piece[0] for piece in word), key=lambda q: q.max())
        else:
            p = np.mean([piece[0] for piece in word], axis=0)
        word_logits.append(np.log(p))  # simple_entities takes the softmax again: the same p
        word_spans.append((word[0][1], word[-1][2]))
    return simple_entities(np.array(word_logits), word_spans, labels)


@pytest.mark.parametrize("strategy", ["first", "average", "max"])
def test_ner_word_strategies_give_each_word_one_label(tmp_path, strategy):
    """bert_client ner --aggregation=first|average|max: the pieces of one word agree on a label
    as the token-classification pipeline's word strategies make them, before the grouping."""
    pb2, _ = stubs()
    model = classifier_model(tmp_path / "ner", NER_LABELS, problem_type=None, seed=5,
                             architecture="BertForTokenClassification")
    # Words the tiny vocabulary splits into pieces, a decomposed accent, an unknown character.
    texts = ["zebra quokka lives in xylophone valley", "Cafe\u0301 owner mzwxq went home",
             "hello \U0001F600 world, good morning to you"]
    with Server(model_dir=model, vocab=TINY_VOCAB) as server:
        stub = server.stub()
        resp = stub.Embed(pb2.EmbedRequest(
            inputs=[pb2.Input(text=pb2.TextInput(text_a=t)) for t in texts],
            heads=[pb2.HEAD_TOKEN_LOGITS], padding=pb2.PADDING_TRIM, return_offsets=True),
            timeout=30)
        encodings = stub.Tokenize(pb2.TokenizeRequest(
            inputs=[pb2.TextInput(text_a=t) for t in texts]), timeout=30).encodings
        assert any(t.startswith("##") for e in encodings for t in e.tokens)
        assert "[UNK]" in encodings[2].tokens
        client = [bin_path("client", "bert_client"), f"--server={server.address}"]
        r = subprocess.run(client + ["ner", "--json", f"--aggregation={strategy}", *texts],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        differs = False
        for text, row, result, encoding in zip(texts, rows, resp.results, encodings, strict=True):
            spans = list(zip(result.token_starts, result.token_ends))
            want = word_entities(decode(result.token_logits), spans, list(encoding.tokens), text,
                                 NER_LABELS, strategy)
            got = [(e["entity_group"], e["start"], e["end"]) for e in row["entities"]]
            assert got == [(w[0], w[2], w[3]) for w in want], (text, got, want)
            np.testing.assert_allclose([e["score"] for e in row["entities"]],
                                       [w[1] for w in want], rtol=1e-6)
            differs |= want != simple_entities(decode(result.token_logits), spans, NER_LABELS)
        assert differs  # the seeded classifier's pieces disagree somewhere: the strategy counts
        r = subprocess.run(client + ["ner", "--aggregation=none", "x"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and "--aggregation must be" in r.stderr


def test_a_sequence_classifier_refuses_token_logits(server):
    pb2, _ = stubs()
    with pytest.raises(grpc.RpcError) as refused:
        server.stub().Embed(pb2.EmbedRequest(
            inputs=[pb2.Input(text=pb2.TextInput(text_a="x"))], heads=[pb2.HEAD_TOKEN_LOGITS]),
            timeout=30)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "labels whole inputs: ask for HEAD_LOGITS" in refused.value.details()
