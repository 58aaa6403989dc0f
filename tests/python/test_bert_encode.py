"""End-to-end: tools/bert_encode on the golden models' inputs matches Hugging Face's outputs.

Runs the binary from $BERT_BIN (bazel-bin; default: the repo's bazel-bin) and compares every
output tensor with tests/golden/<model>/expected.safetensors at 1e-5 relative
(||out - ref|| / ||ref||), padded rows included. safetensors files are parsed with numpy.
"""
import json
import subprocess

import numpy as np
import pytest
from repo_paths import REPO, bin_path
from safetensors_io import read_safetensors, write_safetensors

GOLDEN = REPO / "tests" / "golden"


def bert_encode():
    return bin_path("tools", "bert_encode")


def relative_error(out, ref):
    return float(np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize("model", ["tiny-l4-h128", "tiny-l12-h64-s128"])
@pytest.mark.parametrize("threads,batch_size", [(1, 2), (2, 32)])  # several chunks / one
def test_matches_golden(tmp_path, model, threads, batch_size):
    expected = read_safetensors(GOLDEN / model / "expected.safetensors")
    out_path = tmp_path / "out.safetensors"
    subprocess.run([bert_encode(), f"--model_dir={GOLDEN / model}",
                    f"--inputs={GOLDEN / model / 'expected.safetensors'}",
                    f"--output={out_path}", "--backend=cpu", f"--threads={threads}",
                    f"--batch_size={batch_size}"], check=True, timeout=300)
    out = read_safetensors(out_path)
    config = json.loads((GOLDEN / model / "config.json").read_text())
    wanted = {"sequence_output", "pooled_output"} | {
        f"encoder_outputs.{i}" for i in range(config["num_hidden_layers"])}
    assert set(out) == wanted
    for name in sorted(wanted):
        assert out[name].shape == expected[name].shape, name
        assert out[name].dtype == np.float32
        assert relative_error(out[name], expected[name]) <= 1e-5, name
    # Padded rows are real outputs (TF Hub semantics), not zeros.
    mask = expected["input_mask"]
    assert (mask == 0).any()
    padded_rows = out["sequence_output"][mask == 0]
    assert np.abs(padded_rows).max() > 0.1


def test_rejects_bad_mask(tmp_path):
    model = GOLDEN / "tiny-l4-h128"
    expected = read_safetensors(model / "expected.safetensors")
    mask = expected["input_mask"].copy()
    mask[1, :] = 0
    mask[1, 2] = 1  # a hole: zeros before a one
    inputs = tmp_path / "in.safetensors"
    write_safetensors(inputs, {"input_word_ids": expected["input_word_ids"],
                               "input_mask": mask,
                               "input_type_ids": expected["input_type_ids"]})
    result = subprocess.run([bert_encode(), f"--model_dir={model}", f"--inputs={inputs}",
                             f"--output={tmp_path / 'out.safetensors'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "input_mask row 1" in result.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_rejects_out_of_vocab_ids(tmp_path):
    model = GOLDEN / "tiny-l4-h128"
    expected = read_safetensors(model / "expected.safetensors")
    ids = expected["input_word_ids"].copy()
    ids[0, 0] = 5000  # vocab is 1024
    inputs = tmp_path / "in.safetensors"
    write_safetensors(inputs, {"input_word_ids": ids, "input_mask": expected["input_mask"],
                               "input_type_ids": expected["input_type_ids"]})
    result = subprocess.run([bert_encode(), f"--model_dir={model}", f"--inputs={inputs}",
                             f"--output={tmp_path / 'out.safetensors'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "word id 5000" in result.stderr


def test_cpu_backend_rejects_half_precision(tmp_path):
    model = GOLDEN / "tiny-l4-h128"
    result = subprocess.run([bert_encode(), f"--model_dir={model}",
                             f"--inputs={model / 'expected.safetensors'}",
                             f"--output={tmp_path / 'out.safetensors'}", "--backend=cpu",
                             "--dtype=float16"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "float32" in result.stderr


MINILM = REPO / "models" / "all-MiniLM-L6-v2"
TEXTS = [{"text_a": "Please subscribe to this newsletter"},
         {"text_a": "Héllo, WORLD! Don't panic: 3.14159 is π.", "text_b": "unaffable 東京"},
         {"text_a": "a long first segment " * 12, "text_b": "and a second one " * 6},
         {"text_a": "You are being offered this job role", "text_b": None}]


@pytest.mark.skipif(not MINILM.is_dir(),
                    reason="models/all-MiniLM-L6-v2 is absent (tools/setup.sh fetches it)")
def test_text_matches_hf_tokenizer_and_inputs_mode(tmp_path):
    from tokenizers import BertWordPieceTokenizer
    seq_length = 48  # the third line is truncated
    text = tmp_path / "in.jsonl"
    text.write_text("\n".join(json.dumps(t, ensure_ascii=False) for t in TEXTS) + "\n\n",
                    encoding="utf-8")
    text_out = tmp_path / "text_out.safetensors"
    subprocess.run([bert_encode(), f"--model_dir={MINILM}", f"--text={text}",
                    f"--seq_length={seq_length}", f"--output={text_out}", "--backend=cpu",
                    "--batch_size=3"], check=True, timeout=300)
    out = read_safetensors(text_out)

    hf = BertWordPieceTokenizer(str(MINILM / "vocab.txt"), lowercase=True)
    # HF's longest_first equals TF Hub's round robin here (they differ only for an odd budget
    # with both texts cut, or the shorter one token over half of it).
    hf.enable_truncation(seq_length)
    hf.enable_padding(length=seq_length)
    refs = [hf.encode(t["text_a"], t["text_b"]) if t.get("text_b") else hf.encode(t["text_a"])
            for t in TEXTS]
    assert out["input_word_ids"].shape == (len(TEXTS), seq_length)
    np.testing.assert_array_equal(out["input_word_ids"], [r.ids for r in refs])
    np.testing.assert_array_equal(out["input_mask"], [r.attention_mask for r in refs])
    np.testing.assert_array_equal(out["input_type_ids"], [r.type_ids for r in refs])
    assert out["input_mask"][2].all() and not out["input_mask"][0].all()

    inputs = tmp_path / "in.safetensors"
    write_safetensors(inputs, {k: np.array([getattr(r, a) for r in refs], dtype=np.int32)
                               for k, a in [("input_word_ids", "ids"),
                                            ("input_mask", "attention_mask"),
                                            ("input_type_ids", "type_ids")]})
    ids_out = tmp_path / "ids_out.safetensors"
    subprocess.run([bert_encode(), f"--model_dir={MINILM}", f"--inputs={inputs}",
                    f"--output={ids_out}", "--backend=cpu"], check=True, timeout=300)
    expected = read_safetensors(ids_out)
    assert set(out) == set(expected) | {"input_word_ids", "input_mask", "input_type_ids"}
    for name in expected:
        assert out[name].shape == expected[name].shape, name
        assert relative_error(out[name], expected[name]) <= 1e-6, name


@pytest.mark.parametrize("bad_line,why", [
    (b'{"text_a": "unterminated', "not valid JSON"),
    (b'{"text_b": "no text_a"}', "missing string text_a"),
    (b'{"text_a": "bad \xff byte"}', "not valid JSON (or not valid UTF-8)"),
])
def test_text_bad_line_names_line_number(tmp_path, bad_line, why):
    model = GOLDEN / "tiny-l4-h128"
    text = tmp_path / "in.jsonl"
    text.write_bytes(b'{"text_a": "fine"}\n\n' + bad_line + b'\n{"text_a": "fine"}\n')
    result = subprocess.run([bert_encode(), f"--model_dir={model}", f"--text={text}",
                             f"--vocab={REPO / 'tests/data/tiny_vocab_1024.txt'}",
                             f"--output={tmp_path / 'out.safetensors'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"{text}:3: {why}" in result.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_text_and_inputs_are_exclusive(tmp_path):
    model = GOLDEN / "tiny-l4-h128"
    result = subprocess.run([bert_encode(), f"--model_dir={model}",
                             f"--inputs={model / 'expected.safetensors'}",
                             f"--text={tmp_path / 'in.jsonl'}",
                             f"--output={tmp_path / 'out.safetensors'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "exactly one of --inputs and --text" in result.stderr


@pytest.mark.skipif(not MINILM.is_dir(),
                    reason="models/all-MiniLM-L6-v2 is absent (tools/setup.sh fetches it)")
def test_text_lowercase_setting_reaches_the_tokenizer(tmp_path):
    text = tmp_path / "in.jsonl"
    text.write_text(json.dumps({"text_a": "Héllo WORLD"}) + "\n", encoding="utf-8")

    def ids(*flags):
        out = tmp_path / "out.safetensors"
        subprocess.run([bert_encode(), f"--model_dir={MINILM}", f"--text={text}",
                        "--seq_length=16", f"--output={out}", "--backend=cpu", *flags],
                       check=True, timeout=300)
        return read_safetensors(out)["input_word_ids"]

    # Its vocabulary has no upper-case pieces: auto lowercases, as the server decides too.
    np.testing.assert_array_equal(ids(), ids("--lowercase=true"))
    assert not np.array_equal(ids(), ids("--lowercase=false"))
    result = subprocess.run([bert_encode(), f"--model_dir={MINILM}", f"--text={text}",
                             "--lowercase=maybe", f"--output={tmp_path / 'x.safetensors'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "--lowercase: auto, true or false" in result.stderr


@pytest.mark.parametrize("batch_size", [2, 32])  # several chunks / one
def test_a_classifier_model_gets_its_logits(tmp_path, batch_size):
    """A BertForSequenceClassification checkpoint: logits [B, num_labels], the classifier
    applied to Hugging Face's pooled output, as the server's HEAD_LOGITS."""
    from server_harness import classifier_model, classifier_weights
    model = classifier_model(tmp_path / "classifier")
    golden = GOLDEN / "tiny-l4-h128" / "expected.safetensors"
    out_path = tmp_path / "out.safetensors"
    subprocess.run([bert_encode(), f"--model_dir={model}", f"--inputs={golden}",
                    f"--output={out_path}", "--backend=cpu", f"--batch_size={batch_size}"],
                   check=True, timeout=300)
    out = read_safetensors(out_path)
    weight, bias = classifier_weights(3)
    want = read_safetensors(golden)["pooled_output"].astype(np.float64) @ weight.T + bias
    assert out["logits"].shape == want.shape == (6, 3)
    assert relative_error(out["logits"], want) <= 1e-5
    assert "token_logits" not in out


def test_a_token_classifier_model_gets_token_logits(tmp_path):
    """A BertForTokenClassification checkpoint (here with a pooler): token_logits
    [B, S, num_labels], the classifier on every row of Hugging Face's sequence output, as the
    server's HEAD_TOKEN_LOGITS; no sequence-level logits."""
    from server_harness import classifier_model, classifier_weights
    model = classifier_model(tmp_path / "tagger", labels=("O", "B", "I"), problem_type=None,
                             architecture="BertForTokenClassification")
    golden = GOLDEN / "tiny-l4-h128" / "expected.safetensors"
    out_path = tmp_path / "out.safetensors"
    subprocess.run([bert_encode(), f"--model_dir={model}", f"--inputs={golden}",
                    f"--output={out_path}", "--backend=cpu"], check=True, timeout=300)
    out = read_safetensors(out_path)
    weight, bias = classifier_weights(3)
    want = read_safetensors(golden)["sequence_output"].astype(np.float64) @ weight.T + bias
    assert out["token_logits"].shape == want.shape == (6, 32, 3)
    assert relative_error(out["token_logits"], want) <= 1e-5
    assert "logits" not in out and "pooled_output" in out


def test_text_pairs_with_longest_first_truncation_match_hf(tmp_path):
    """--text --truncation=longest_first packs pairs as Hugging Face tokenizers do (the default
    round robin differs at this odd budget)."""
    from server_harness import TINY_VOCAB, hf_pair_tokenizer
    vocab_path = TINY_VOCAB
    seq_length = 16  # a budget of 13
    hf = hf_pair_tokenizer(seq_length)
    pairs = [("the quick brown fox " * 3, "jumps over the lazy dog " * 4),
             ("jumps over the lazy dog " * 4, "the quick brown fox " * 3),
             ("a b c d e f g", "h i j k l m n o p q r s t u v")]
    text = tmp_path / "in.jsonl"
    text.write_text("\n".join(json.dumps({"text_a": a, "text_b": b}) for a, b in pairs) + "\n")
    outputs = {}
    for truncation in ("longest_first", "truncate"):
        out_path = tmp_path / f"{truncation}.safetensors"
        subprocess.run([bert_encode(), f"--model_dir={GOLDEN / 'tiny-l4-h128'}", f"--text={text}",
                        f"--vocab={vocab_path}", f"--seq_length={seq_length}",
                        f"--truncation={truncation}", f"--output={out_path}", "--backend=cpu"],
                       check=True, timeout=300)
        outputs[truncation] = read_safetensors(out_path)
    for i, (a, b) in enumerate(pairs):
        want = hf.encode(a, b)
        assert outputs["longest_first"]["input_word_ids"][i].tolist() == want.ids, i
        assert outputs["longest_first"]["input_type_ids"][i].tolist() == want.type_ids, i
    assert (outputs["truncate"]["input_word_ids"] != outputs["longest_first"]["input_word_ids"]).any()
    r = subprocess.run([bert_encode(), f"--model_dir={GOLDEN / 'tiny-l4-h128'}", f"--text={text}",
                        f"--vocab={vocab_path}", "--truncation=longest-first",
                        f"--output={tmp_path / 'x.safetensors'}", "--backend=cpu"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "--truncation: truncate or longest_first" in r.stderr
