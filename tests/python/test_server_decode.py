"""Decode, token ids back to text, end to end: a bert_server on the golden tiny model against
Hugging Face `tokenizers` (BertWordPieceTokenizer over the same vocabulary, its decode), id
sequence for id sequence, with and without special tokens; the error statuses; the metric;
and `bert_client decode`, alone and fed by `bert_client tokenize --json`."""
import json
import random
import subprocess
import time

import grpc
import pytest
from repo_paths import bin_path
from server_harness import TINY_VOCAB, Server, metric_value, stubs
from tokenizers import BertWordPieceTokenizer, models

SEED = 20261129
MAX_MESSAGE_BYTES = 256 * 1024
WORDS = ["it's", "don't", "i'm", "we've", "they're", "do not", "hello", "world", "bert",
         "unaffable", "tokenization", "naïve", "café", "2026", "a.b", "x,y", "?!", "'quoted'",
         "n't", "'s", "state-of-the-art", "e-mail", "ok.", "wait...", "東京", "(paren)"]


@pytest.fixture(scope="module")
def server():
    with Server(extra=[f"--max_message_bytes={MAX_MESSAGE_BYTES}"], metrics=True) as s:
        yield s


@pytest.fixture(scope="module")
def hf():
    return BertWordPieceTokenizer(models.WordPiece.read_file(TINY_VOCAB), lowercase=True)


def decode(server, sequences, keep_special_tokens=False, timeout=30):
    pb2, _ = stubs()
    request = pb2.DecodeRequest(inputs=[pb2.TokenIds(ids=ids) for ids in sequences],
                                keep_special_tokens=keep_special_tokens)
    return list(server.stub().Decode(request, timeout=timeout).texts)


def random_sequences(hf, rng, count):
    """Ids drawn from the whole vocabulary (special tokens, "##" pieces, punctuation and
    [unused] entries included), and tokenizations of texts with contractions and punctuation,
    some with special tokens put in."""
    vocab_size = hf.get_vocab_size()
    specials = [hf.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]
    out = []
    for i in range(count):
        if i % 2 == 0:
            ids = [rng.randrange(vocab_size) for _ in range(rng.randrange(0, 40))]
        else:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 12)))
            ids = hf.encode(text).ids  # [CLS] ... [SEP]
            for _ in range(rng.randrange(0, 3)):
                ids.insert(rng.randrange(len(ids) + 1), rng.choice(specials))
        out.append(ids)
    return out


def test_decode_matches_hugging_face_tokenizers(server, hf):
    rng = random.Random(SEED)
    sequences = random_sequences(hf, rng, 2000)
    assert sum(map(len, sequences)) > 20000
    for keep in (False, True):
        for start in range(0, len(sequences), 200):
            chunk = sequences[start:start + 200]
            ours = decode(server, chunk, keep_special_tokens=keep)
            want = [hf.decode(ids, skip_special_tokens=not keep) for ids in chunk]
            for ids, got, expected in zip(chunk, ours, want):
                assert got == expected, f"ids {ids} keep_special_tokens={keep}"


def test_tokenize_then_decode_gives_hugging_faces_text(server, hf):
    pb2, _ = stubs()
    texts = ["Hello, World! It's a naïve café.", "I'm sure they're right ... (mostly)",
             "unaffable tokenization", ""]
    resp = server.stub().Tokenize(pb2.TokenizeRequest(
        inputs=[pb2.TextInput(text_a=t) for t in texts], seq_length=32), timeout=30)
    padded = [list(e.input_word_ids) for e in resp.encodings]
    assert all(len(ids) == 32 for ids in padded)
    # The padded ids as Tokenize gives them: [PAD] and the rest are special, left out.
    assert decode(server, padded) == [hf.decode(hf.encode(t).ids) for t in texts]
    assert decode(server, padded)[0] == "hello, world! it ' s a naive cafe."
    kept = decode(server, padded[3:], keep_special_tokens=True)
    assert kept == ["[CLS] [SEP]" + " [PAD]" * 30]


def test_bad_requests_get_invalid_argument_naming_the_id(server):
    pb2, _ = stubs()
    cases = [
        ([[5, 6], [7, 1024]], "inputs[1].ids[1]: 1024 is outside the vocabulary [0, 1024)"),
        ([[-3]], "inputs[0].ids[0]: -3 is outside the vocabulary [0, 1024)"),
        ([], "inputs: empty request (at least one input is needed)"),
        ([[1]] * 257, "inputs: 257 inputs exceed the limit of 256"),
    ]
    for sequences, message in cases:
        with pytest.raises(grpc.RpcError) as e:
            decode(server, sequences)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details() == message
    # An empty sequence is fine: its text is "".
    assert decode(server, [[], [101, 102]]) == ["", ""]
    # Texts that could pass the message limit are refused before they are built: [unused]
    # tokens are 9-10 bytes, their ids one byte each on the wire.
    unused = [i for i in range(1, 100)]
    with pytest.raises(grpc.RpcError) as e:
        decode(server, [unused * 300])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over the server's 262144-byte message limit: send fewer ids" in e.value.details()
    assert len(decode(server, [unused * 100])[0]) > 100000  # under the limit: answered
    # Special tokens left out do not count: 45,000 [PAD]s make no text (counted, 6 bytes each
    # would pass the limit).
    assert 6 * 45000 > MAX_MESSAGE_BYTES
    assert decode(server, [[0] * 45000]) == [""]
    # At most max_inputs_per_request x max_seq_length ids in all (256 x 512), counted on the
    # wire before the request is parsed.
    with pytest.raises(grpc.RpcError) as e:
        decode(server, [[5] * 65536, [5] * 65537])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "inputs: 131073 ids exceed the limit of 131072 in one request"
    # The server goes on serving.
    assert decode(server, [[7, 8]]) == [decode(server, [[7]])[0] + " " + decode(server, [[8]])[0]]


def test_decode_is_counted_in_the_metrics(server):
    decode(server, [[5]])
    text = server.metrics_text()
    assert metric_value(text, "bert_requests_total", {"method": "Decode", "code": "OK"}) >= 1
    assert metric_value(text, "bert_calls_cancelled_total", {"method": "Decode"}) == 0
    # Decode answers count in the answer memory while they are held, and are let go once sent
    # (when the call is done, a moment after the client has the answer).
    deadline = time.time() + 30
    while metric_value(server.metrics_text(), "bert_answer_memory_bytes") != 0:
        assert time.time() < deadline, server.metrics_text()
        time.sleep(0.05)


def test_client_decodes_arguments_and_tokenize_output(server, hf):
    client = str(bin_path("client", "bert_client"))
    run = lambda *args, **kw: subprocess.run(  # noqa: E731
        [client, f"--server={server.address}", *args], capture_output=True, text=True,
        timeout=60, **kw)
    ids = hf.encode("It's a test, ok?").ids
    out = run("decode", " ".join(map(str, ids)), ",".join(map(str, ids[1:3])))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [hf.decode(ids), hf.decode(ids[1:3])]
    out = run("--keep_special_tokens", "--json", "decode", " ".join(map(str, ids)))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"text": hf.decode(ids, skip_special_tokens=False)}
    tokenized = run("--json", "--seq_length=16", "tokenize", "Hello, World!", "naïve café")
    assert tokenized.returncode == 0, tokenized.stderr
    out = run("decode", input=tokenized.stdout)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["hello, world!", "naive cafe"]
    bad = run("decode", "5 x 7")
    assert bad.returncode == 2 and '"x" is not a token id' in bad.stderr
    refused = run("decode", "5 99999")
    assert refused.returncode == 1
    assert "INVALID_ARGUMENT" in refused.stderr and "99999 is outside the vocabulary" in \
        refused.stderr
