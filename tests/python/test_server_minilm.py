"""The server on the real default model (models/all-MiniLM-L6-v2, CPU backend): tokenizer
parity with Hugging Face `tokenizers`, every head equal to tools/bert_encode's outputs for
the same packed inputs, sentence-embedding sanity, and the bundled client CLI driving the
README's seed example."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from server_harness import (MINILM, Server, cpu_flags, decode, read_safetensors,  # noqa
                            rel_err, stubs)
from repo_paths import bin_path
from safetensors_io import write_safetensors

pytestmark = pytest.mark.skipif(
    not os.path.isdir(MINILM),
    reason="models/all-MiniLM-L6-v2 is absent (tools/setup.sh fetches it)")

SEED = ["Please subscribe to this newsletter", "You are being offered this job role"]


@pytest.fixture(scope="module")
def server():
    s = Server(model_dir=MINILM, extra=["--max_batch_tokens=2048"])
    yield s
    s.kill()


def hf_byte_offsets(enc, texts):
    """tokenizers' character offsets as UTF-8 byte offsets in each token's own text."""
    out = []
    for (begin, end), seq in zip(enc.offsets, enc.sequence_ids):
        if seq is None:
            out.append((0, 0))
        else:
            text = texts[seq]
            out.append((len(text[:begin].encode()), len(text[:end].encode())))
    return out


def test_tokenize_matches_hugging_face_tokenizers(server):
    from tokenizers import BertWordPieceTokenizer
    pb2, _ = stubs()
    hf = BertWordPieceTokenizer(os.path.join(MINILM, "vocab.txt"), lowercase=True)
    texts = SEED + ["Héllo, WORLD! Don't panic: 3.14159 is π.", "unaffable tokenization 東京",
                    "  multiple   spaces\tand\nnewlines  ", "Ünïcödé n\u0303o\u0301 😀 x\u200by"]
    resp = server.stub().Tokenize(pb2.TokenizeRequest(
        inputs=[pb2.TextInput(text_a=t) for t in texts]), timeout=30)
    for t, e in zip(texts, resp.encodings, strict=True):
        ref = hf.encode(t)
        assert list(e.input_word_ids[:e.num_tokens]) == ref.ids, t
        assert list(e.tokens) == ref.tokens, t
        assert list(zip(e.token_starts, e.token_ends)) == hf_byte_offsets(ref, [t]), t
    for a, b, seq_length in [(SEED[0], SEED[1], 128), (texts[2], texts[5], 12)]:
        hf.enable_truncation(seq_length)
        pair = hf.encode(a, b)
        resp = server.stub().Tokenize(pb2.TokenizeRequest(
            inputs=[pb2.TextInput(text_a=a, text_b=b)], seq_length=seq_length,
            truncation=pb2.TRUNCATION_LONGEST_FIRST), timeout=30)
        e = resp.encodings[0]
        assert list(e.input_word_ids[:e.num_tokens]) == pair.ids
        assert list(e.input_type_ids[:e.num_tokens]) == pair.type_ids
        assert list(zip(e.token_starts, e.token_ends)) == hf_byte_offsets(pair, [a, b])


def test_decode_matches_hugging_face_tokenizers_on_the_real_vocabulary(server):
    """Decode over bert-base-uncased's vocabulary (its 30,522 tokens, 994 [unused] ones and
    every punctuation mark among them): random ids and real tokenizations, both ways."""
    import random
    from tokenizers import BertWordPieceTokenizer, models
    pb2, _ = stubs()
    hf = BertWordPieceTokenizer(models.WordPiece.read_file(os.path.join(MINILM, "vocab.txt")),
                                lowercase=True)
    rng = random.Random(29)
    texts = ["It's 3 p.m., isn't it? \"Yes!\" she'd said (twice) -- we've won; they're gone...",
             "Don't do not; I'm here, you're there: O'Neil's co-op @ 50% off #1 $5 & more."]
    sequences = [hf.encode(t).ids for t in texts]
    sequences += [[rng.randrange(30522) for _ in range(rng.randrange(60))] for _ in range(400)]
    for keep in (False, True):
        resp = server.stub().Decode(pb2.DecodeRequest(
            inputs=[pb2.TokenIds(ids=ids) for ids in sequences[:256]], keep_special_tokens=keep),
            timeout=30)
        resp2 = server.stub().Decode(pb2.DecodeRequest(
            inputs=[pb2.TokenIds(ids=ids) for ids in sequences[256:]], keep_special_tokens=keep),
            timeout=30)
        ours = list(resp.texts) + list(resp2.texts)
        assert ours == [hf.decode(ids, skip_special_tokens=not keep) for ids in sequences]
    # What WordPiece cannot give back: the spaces around "'" and inside "p.m.".
    assert ours[0].startswith("[CLS] it ' s 3 p. m., isn ' t it? \" yes! \" she ' d said")


def test_every_head_equals_bert_encode(server, tmp_path):
    pb2, _ = stubs()
    stub = server.stub()
    seq = 64
    texts = [pb2.TextInput(text_a=SEED[0]), pb2.TextInput(text_a=SEED[1]),
             pb2.TextInput(text_a="What is a newsletter?", text_b=SEED[0])]
    tok = stub.Tokenize(pb2.TokenizeRequest(inputs=texts, seq_length=seq), timeout=30)
    ids = np.array([list(e.input_word_ids) for e in tok.encodings], dtype=np.int32)
    mask = np.array([list(e.input_mask) for e in tok.encodings], dtype=np.int32)
    types = np.array([list(e.input_type_ids) for e in tok.encodings], dtype=np.int32)
    write_safetensors(tmp_path / "in.safetensors",
                      {"input_word_ids": ids, "input_mask": mask, "input_type_ids": types})
    subprocess.run([bin_path("tools", "bert_encode"), f"--model_dir={MINILM}",
                    f"--inputs={tmp_path / 'in.safetensors'}",
                    f"--output={tmp_path / 'out.safetensors'}", "--backend=cpu"],
                   check=True, capture_output=True, timeout=120)
    ref = read_safetensors(tmp_path / "out.safetensors")
    resp = stub.Embed(pb2.EmbedRequest(
        inputs=[pb2.Input(text=t) for t in texts], seq_length=seq,
        heads=[pb2.HEAD_POOLED, pb2.HEAD_SEQUENCE, pb2.HEAD_ENCODER_OUTPUTS, pb2.HEAD_DEFAULT,
               pb2.HEAD_MEAN_POOLED, pb2.HEAD_CLS]), timeout=60)
    for i, r in enumerate(resp.results):
        n = int(mask[i].sum())
        assert r.num_tokens == n
        assert rel_err(decode(r.pooled_output), ref["pooled_output"][i]) < 1e-5
        assert rel_err(decode(r.default_output), ref["pooled_output"][i]) < 1e-5
        assert rel_err(decode(r.sequence_output), ref["sequence_output"][i]) < 1e-5
        assert len(r.encoder_outputs) == 6
        for lo in r.encoder_outputs:
            assert rel_err(decode(lo.output), ref[f"encoder_outputs.{lo.layer}"][i]) < 1e-5
        mean_ref = ref["sequence_output"][i][:n].mean(axis=0)
        assert rel_err(decode(r.mean_pooled_output), mean_ref) < 1e-5
        assert rel_err(decode(r.cls_output), ref["sequence_output"][i][0]) < 1e-5


AMX_BF16 = {"amx_bf16", "amx_tile", "avx512_bf16"} <= cpu_flags()


AMX_HINT = "this CPU has Intel AMX: --dtype=bfloat16"


def test_a_float32_server_on_an_amx_cpu_says_bfloat16_would_be_faster(server):
    """On a CPU with AMX the float32 server's startup log names --dtype=bfloat16 (about twice
    the throughput, bench/RESULTS_cpu.md); elsewhere it says nothing of it."""
    assert (AMX_HINT in server.log()) == AMX_BF16, server.log()


@pytest.mark.skipif(not AMX_BF16, reason="the CPU has no AMX-BF16 (Sapphire Rapids or later)")
def test_bfloat16_on_amx_is_close_to_float32(server):
    """--dtype=bfloat16 on the CPU backend: the AMX GEMM. GetModelInfo says bfloat16 and names
    the GEMM; every head within bfloat16's tolerance of the float32 server's, the model's
    sentence embedding too."""
    pb2, _ = stubs()
    texts = [pb2.TextInput(text_a=SEED[0]), pb2.TextInput(text_a=SEED[1]),
             pb2.TextInput(text_a="What is a newsletter?", text_b=SEED[0])]
    request = pb2.EmbedRequest(
        inputs=[pb2.Input(text=t) for t in texts], seq_length=64, padding=pb2.PADDING_TRIM,
        heads=[pb2.HEAD_POOLED, pb2.HEAD_SEQUENCE, pb2.HEAD_MEAN_POOLED])
    want = server.stub().Embed(request, timeout=60)
    with Server(model_dir=MINILM, extra=["--dtype=bfloat16"]) as bf16:
        info = bf16.stub().GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
        assert info.compute_dtype == pb2.DATA_TYPE_BFLOAT16
        assert "AMX bfloat16 packed GEMM" in info.device, info.device
        assert AMX_HINT not in bf16.log()
        got = bf16.stub().Embed(request, timeout=60)
    errors = []
    for g, w in zip(got.results, want.results, strict=True):
        for head in ("pooled_output", "sequence_output", "mean_pooled_output"):
            errors.append(rel_err(decode(getattr(g, head)), decode(getattr(w, head))))
    assert max(errors) < 2e-2, errors
    assert min(errors) > 1e-6, errors  # bfloat16 products, not float32's


def test_bfloat16_needs_the_amx_gemm(tmp_path):
    """--dtype=bfloat16 with a float32 GEMM, and --cpu_gemm=amx_bf16 with --dtype=float32, stop
    the server at startup with a message that says what to run instead (on an AVX2 CPU)."""
    if "avx2" not in cpu_flags():
        pytest.skip("--cpu_gemm=avx2 needs AVX2")
    # (Where the CPU has no AMX, --cpu_gemm=amx_bf16 is refused for that first.)
    for flags, message in [(["--dtype=bfloat16", "--cpu_gemm=avx2"], "amx_bf16"),
                           (["--dtype=float32", "--cpu_gemm=amx_bf16"],
                            "--dtype=bfloat16" if AMX_BF16 else "does not run")]:
        result = subprocess.run(
            [bin_path("server", "bert_server"), f"--model_dir={MINILM}", "--backend=cpu",
             "--address=127.0.0.1:0", *flags], capture_output=True, text=True, timeout=120)
        assert result.returncode != 0, flags
        assert message in result.stderr, (flags, result.stderr[-2000:])


def test_sentence_embeddings_make_sense(server):
    pb2, _ = stubs()
    texts = ["A man is eating food.", "A man is eating a piece of bread.",
             "The girl is carrying a baby.", "A man is riding a horse."]
    resp = server.stub().Embed(pb2.EmbedRequest(
        inputs=[pb2.Input(text=pb2.TextInput(text_a=t)) for t in texts],
        heads=[pb2.HEAD_MEAN_POOLED], normalize=True, padding=pb2.PADDING_TRIM), timeout=60)
    v = np.stack([decode(r.mean_pooled_output) for r in resp.results])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    assert sims[0, 1] > sims[0, 3]


def test_batched_equals_one_by_one(server):
    pb2, _ = stubs()
    stub = server.stub()
    texts = SEED + ["short", "a somewhat longer sentence about batching and padding rows"]
    heads = [pb2.HEAD_POOLED, pb2.HEAD_SEQUENCE]
    together = stub.Embed(pb2.EmbedRequest(
        inputs=[pb2.Input(text=pb2.TextInput(text_a=t)) for t in texts], heads=heads,
        padding=pb2.PADDING_TRIM), timeout=60)
    for t, r in zip(texts, together.results, strict=True):
        alone = stub.Embed(pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a=t))],
                                            heads=heads, padding=pb2.PADDING_TRIM),
                           timeout=60).results[0]
        assert rel_err(decode(r.pooled_output), decode(alone.pooled_output)) < 1e-5
        assert rel_err(decode(r.sequence_output), decode(alone.sequence_output)) < 1e-5


def test_client_cli_seed_example(server, tmp_path):
    client = bin_path("client", "bert_client")
    run = lambda *args, **kw: subprocess.run(  # noqa: E731
        [client, f"--server={server.address}", *args], capture_output=True, text=True,
        timeout=60, **kw)
    r = run("health")
    assert r.returncode == 0 and r.stdout.strip() == "SERVING"
    r = run("embed", *SEED)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for line in ["Pooled Outputs Shape:(2, 384)", "Default Outputs Shape:(2, 384)",
                 "Sequence Outputs Shape:(2, 128, 384)", "Encoder Outputs: 6 layers",
                 "Layer 5 Shape:(2, 128, 384)"]:
        assert line in out, out
    # --json: the values equal a direct gRPC call's.
    r = run("embed", "--json", "--heads=pooled,mean_pooled,cls", "--padding=trim", input="\n".join(
        json.dumps(x) for x in [SEED[0], {"text_a": SEED[1], "text_b": SEED[0]}]))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in r.stdout.splitlines()]
    pb2, _ = stubs()
    direct = server.stub().Embed(pb2.EmbedRequest(
        inputs=[pb2.Input(text=pb2.TextInput(text_a=SEED[0])),
                pb2.Input(text=pb2.TextInput(text_a=SEED[1], text_b=SEED[0]))],
        heads=[pb2.HEAD_POOLED, pb2.HEAD_MEAN_POOLED, pb2.HEAD_CLS], padding=pb2.PADDING_TRIM),
        timeout=60)
    for row, res in zip(rows, direct.results, strict=True):
        assert row["pooled_output"]["shape"] == [384]
        np.testing.assert_allclose(row["pooled_output"]["values"], decode(res.pooled_output),
                                   rtol=1e-6)
        np.testing.assert_allclose(row["mean_pooled_output"]["values"],
                                   decode(res.mean_pooled_output), rtol=1e-6)
        np.testing.assert_allclose(row["cls_output"]["values"], decode(res.cls_output),
                                   rtol=1e-6)
        assert row["num_tokens"] == res.num_tokens
    r = run("tokenize", "Hello World ||| second one")
    assert "[CLS] hello world [SEP] second one [SEP]" in r.stdout
    assert "offsets: 0-0 0-5 6-11 0-0 0-6 7-10 0-0" in r.stdout
    r = run("tokenize", "--json", "Héllo wörld")
    assert json.loads(r.stdout)["offsets"] == [[0, 0], [0, 6], [7, 13], [0, 0]]
    r = run("info", "--json")
    info = json.loads(r.stdout)
    assert info["model_name"] == "all-MiniLM-L6-v2" and info["config"]["hidden_size"] == 384
    assert info["sentence_embedding"] == {"head": "HEAD_MEAN_POOLED", "normalize": True,
                                          "note": "modules.json, 1_Pooling/config.json",
                                          "max_seq_length": 256, "prompts": {},
                                          "default_prompt_name": "", "similarity_fn_name": ""}
    r = run("embed", "--seq_length=1", "x")
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr


def test_the_models_sentence_embedding(server):
    """sentence-transformers' modules.json, 1_Pooling/config.json and sentence_bert_config.json
    (fetched with the model) say mean pooling, then Normalize, of at most 256 tokens:
    GetModelInfo reports it, and bert_client's and bert_load's head "embedding" ask for it."""
    pb2, _ = stubs()
    info = server.stub().GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
    assert info.sentence_embedding.head == pb2.HEAD_MEAN_POOLED
    assert info.sentence_embedding.normalize
    assert info.sentence_embedding.max_seq_length == 256
    # 300 words: truncated at 256 tokens (sentence-transformers' length), not the server's 128.
    texts = SEED + [" ".join(["newsletter"] * 300)]
    r = subprocess.run([bin_path("client", "bert_client"), f"--server={server.address}", "embed",
                        "--json", "--heads=embedding", "--padding=trim", *texts],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows[2]["num_tokens"] == 256 and rows[2]["truncated"]
    direct = server.stub().Embed(pb2.EmbedRequest(
        inputs=[pb2.Input(text=pb2.TextInput(text_a=t)) for t in texts], seq_length=256,
        heads=[pb2.HEAD_MEAN_POOLED], normalize=True, padding=pb2.PADDING_TRIM), timeout=60)
    for row, res in zip(rows, direct.results, strict=True):
        assert set(row) & {"pooled_output", "cls_output", "sequence_output"} == set()
        assert row["num_tokens"] == res.num_tokens
        values = np.array(row["mean_pooled_output"]["values"])
        np.testing.assert_allclose(values, decode(res.mean_pooled_output), rtol=1e-6)
        assert abs(np.linalg.norm(values) - 1) < 1e-5
    # A seq_length asked for wins.
    r = subprocess.run([bin_path("client", "bert_client"), f"--server={server.address}", "embed",
                        "--json", "--heads=embedding", "--seq_length=32", texts[2]],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["num_tokens"] == 32
    load = subprocess.run([bin_path("client", "bert_load"), f"--server={server.address}",
                           "--heads=embedding", "--concurrency=1", "--duration_s=0.5",
                           "--warmup_s=0", "--lengths=fixed:8"],
                          capture_output=True, text=True, timeout=60)
    assert load.returncode == 0, load.stdout + load.stderr


@pytest.mark.parametrize("readme", ["README.md", "server/README.md"])
def test_the_readme_python_examples_run(server, tmp_path, readme):
    """Each Python example of the READMEs, with the protoc command it starts with, against this
    server (the examples say 127.0.0.1:50051)."""
    import re
    from repo_paths import REPO
    blocks = re.findall(r"```python\n(.*?)```", (REPO / readme).read_text(), re.S)
    assert blocks, readme
    for block in blocks:
        if "Rerank(" in block:
            continue  # a cross-encoder's: test_server_heads runs it on a classifier model
        protoc = re.search(r"^# (\.venv/bin/python -m grpc_tools\.protoc .*)$", block, re.M)
        assert protoc, block
        args = protoc.group(1).split()[1:]
        subprocess.run([sys.executable, *args[:-1], str(REPO / args[-1]), f"-I{REPO}"],
                       cwd=tmp_path, check=True, capture_output=True, timeout=60)
        script = block.replace("127.0.0.1:50051", server.address)
        # What the example computed, to check it is an embedding of the model's width.
        script += "\nprint([v.shape for v in (globals().get('vec'), globals().get('pooled')) " \
                  "if v is not None])\n"
        r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "(384,)" in r.stdout, r.stdout
