"""The server against the Python libraries its users would otherwise call, on the CPU backend:

  - transformers' BertModel on the default model's real weights: the TF Hub heads
    (pooled_output, sequence_output, every layer's encoder_outputs), texts and a pair padded
    to seq_length 128 as the tokenizer pads them (the padding rows within the spread of
    transformers' own two attention implementations);
  - sentence-transformers' SentenceTransformer.encode of the default model (the model's own
    sentence embedding, GetModelInfo.sentence_embedding), also with truncate_dim
    (EmbedRequest.dimensions);
  - transformers' BertForSequenceClassification (three labels) on sentence pairs
    (HEAD_LOGITS, longest-first truncation at the tokenizer's length);
  - sentence-transformers' CrossEncoder.rank and .predict of a one-label cross-encoder
    (Rerank), with the activation CrossEncoder picks and with the identity named;
  - transformers' BertForTokenClassification (five labels, no pooler) on every real token
    (HEAD_TOKEN_LOGITS), the fast tokenizer's offset_mapping (Tokenize's token offsets), and
    its token-classification pipeline's entities (aggregation_strategy "simple", "first",
    "average" and "max") against `bert_client ner --aggregation`.

The classification checkpoints are the default model's encoder with a head of seeded random
weights, written by transformers' save_pretrained (no network). The texts include pairs longer
than the tokenizer's 512 tokens.

PyTorch, transformers and sentence-transformers are not among the project's requirements (the
tests use the golden outputs in tests/golden and the `tokenizers` package); install them into
an environment of their own with grpcio-tools, then, from the repository root, with
bert_server built:

  python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers \\
      sentence-transformers grpcio-tools grpcio-health-checking
  /tmp/ref/bin/python tools/check_against_transformers.py [--model_dir models/all-MiniLM-L6-v2]

Prints each comparison's largest differences and the library versions; exits 1 if one is over
its tolerance.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "python"), str(REPO / "tools")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from server_harness import Server, decode, stubs  # noqa: E402

TEXTS = [
    "This is a happy person",
    "Please subscribe to this newsletter",
    "You are being offered this job role",
    "Brown fox jumps over the lazy dog!",
    "Café déjà vu: naïve résumé façade, ÉTÉ À L'ÉCOLE",
    "How many people live in Berlin? " * 60,  # over the sentence embedding's 256 tokens
    "",
]
QUERY = "how many people live in berlin"
PASSAGES = [
    "Berlin has a population of 3,520,031 registered inhabitants in an area of 891.82 km².",
    "New York City is famous for the Metropolitan Museum of Art.",
    "Berlin is the capital and largest city of Germany by both area and population. " * 40,
    "berlin",
    "",
]


class Report:
    def __init__(self):
        self.failed = []

    def check(self, name, got, want, atol):
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        if got.shape != want.shape:
            self.failed.append(name)
            print(f"FAIL {name}: shape {got.shape}, want {want.shape}")
            return
        diff = np.abs(got - want)
        worst = float(diff.max()) if diff.size else 0.0
        ok = bool(np.all(diff <= atol))
        rel = float((diff / np.maximum(np.abs(want), 1e-12)).max()) if diff.size else 0.0
        print(f"{'ok  ' if ok else 'FAIL'} {name}: max abs diff {worst:.3g}, max rel {rel:.3g} "
              f"({got.size} values)")
        if not ok:
            self.failed.append(name)

    def equal(self, name, got, want):
        got, want = list(got), list(want)
        ok = got == want

        def shown(values):  # long lists: their first entries and their length
            return values if len(values) <= 12 else f"{values[:12]} ... ({len(values)} in all)"
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {shown(got)}"
              + ("" if ok else f", want {shown(want)}"))
        if not ok:
            self.failed.append(name)


def tf_hub_heads(report, model_dir):
    """Real rows to 2e-5. Padding rows ([PAD] tokens attending to their input's real ones) are
    ill-conditioned: transformers' own two attention implementations (sdpa, its default, and
    eager) differ there by up to ~4e-4, so ours must lie within 2e-5 plus that spread of the
    default."""
    import torch
    from transformers import AutoTokenizer, BertModel
    pb2, _ = stubs()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, model_max_length=512)
    models = {name: BertModel.from_pretrained(model_dir, attn_implementation=name).eval()
              for name in ("sdpa", "eager")}
    # The single texts, then a pair (its segment ids), each padded to 128 tokens.
    batches = [tokenizer(TEXTS, padding="max_length", max_length=128, truncation=True,
                         return_tensors="pt"),
               tokenizer([QUERY], [PASSAGES[0]], padding="max_length", max_length=128,
                         truncation=True, return_tensors="pt")]
    with torch.no_grad():
        want = {name: [m(**b, output_hidden_states=True) for b in batches]
                for name, m in models.items()}
    inputs = [pb2.Input(text=pb2.TextInput(text_a=t)) for t in TEXTS]
    inputs.append(pb2.Input(text=pb2.TextInput(text_a=QUERY, text_b=PASSAGES[0])))
    with Server(model_dir=model_dir) as server:
        stub = server.stub(server.channel(  # the answer is 11 MB
            options=[("grpc.max_receive_message_length", 64 << 20)]))
        has_pooler = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=30).config.has_pooler
        heads = [pb2.HEAD_SEQUENCE, pb2.HEAD_ENCODER_OUTPUTS] + (
            [pb2.HEAD_POOLED] if has_pooler else [])
        results = stub.Embed(pb2.EmbedRequest(inputs=inputs, seq_length=128, heads=heads),
                             timeout=120).results

    def stacked(name, get):
        return np.concatenate([get(w).numpy() for w in want[name]])

    real = np.concatenate([b["attention_mask"].numpy() for b in batches]).astype(bool)
    report.equal("num_tokens vs the tokenizer's attention mask",
                 [r.num_tokens for r in results], real.sum(axis=1))

    def rows(what, ours, get):
        theirs, other = stacked("sdpa", get), stacked("eager", get)
        report.check(f"{what}, real rows", ours[real], theirs[real], atol=2e-5)
        spread = float(np.abs(theirs - other)[~real].max())
        print(f"     transformers sdpa vs eager on {what}'s padding rows: {spread:.3g}")
        report.check(f"{what}, padding rows", ours[~real], theirs[~real], atol=2e-5 + spread)

    rows("sequence_output (BertModel last_hidden_state)",
         np.stack([decode(r.sequence_output) for r in results]),
         lambda w: w.last_hidden_state)
    for layer in range(len(results[0].encoder_outputs)):
        rows(f"encoder_outputs[{layer}] (hidden_states[{layer + 1}])",
             np.stack([decode(r.encoder_outputs[layer].output) for r in results]),
             lambda w, l=layer: w.hidden_states[l + 1])
    if has_pooler:
        report.check("pooled_output (BertModel pooler_output)",
                     np.stack([decode(r.pooled_output) for r in results]),
                     stacked("sdpa", lambda w: w.pooler_output), atol=2e-5)


def sentence_embeddings(report, model_dir):
    from sentence_transformers import SentenceTransformer
    pb2, _ = stubs()
    st = SentenceTransformer(model_dir, device="cpu")
    with Server(model_dir=model_dir) as server:
        stub = server.stub()
        e = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=30).sentence_embedding
        field = {pb2.HEAD_MEAN_POOLED: "mean_pooled_output", pb2.HEAD_CLS: "cls_output"}[e.head]

        def ours(**options):
            resp = stub.Embed(pb2.EmbedRequest(
                inputs=[pb2.Input(text=pb2.TextInput(text_a=t)) for t in TEXTS], heads=[e.head],
                normalize=e.normalize, seq_length=e.max_seq_length, **options), timeout=120)
            return np.stack([decode(getattr(r, field)) for r in resp.results])

        want = st.encode(TEXTS, convert_to_numpy=True)
        report.check("SentenceTransformer.encode", ours(), want, atol=2e-6)
        cut = st.encode(TEXTS, convert_to_numpy=True, truncate_dim=64, normalize_embeddings=True)
        report.check("encode(truncate_dim=64, normalize_embeddings=True) vs dimensions=64",
                     ours(dimensions=64), cut, atol=2e-6)
        # Without normalize_embeddings the library cuts the normalised vector: same direction.
        raw_cut = st.encode(TEXTS, convert_to_numpy=True, truncate_dim=64)
        unit = raw_cut / np.linalg.norm(raw_cut, axis=1, keepdims=True)
        report.check("encode(truncate_dim=64), its direction", ours(dimensions=64), unit,
                     atol=2e-6)


def classifier_dir(model_dir, path, num_labels, seed, config_extra=None):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels)
    # A visible spread of scores: the freshly initialised head's weights are tiny.
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.5)
        model.classifier.bias.normal_(0, 0.5)
    model.save_pretrained(path)
    # As the published cross-encoders' tokenizers say (the default model's directory has only
    # its vocabulary).
    AutoTokenizer.from_pretrained(model_dir, model_max_length=512).save_pretrained(path)
    # The published checkpoints ship vocab.txt too (recent transformers save tokenizer.json).
    shutil.copy(pathlib.Path(model_dir) / "vocab.txt", path / "vocab.txt")
    if config_extra:
        config = json.loads((path / "config.json").read_text())
        config.update(config_extra)
        (path / "config.json").write_text(json.dumps(config))
    return model


def sequence_classification(report, model_dir, work):
    import torch
    from transformers import AutoTokenizer
    pb2, _ = stubs()
    path = work / "three-labels"
    model = classifier_dir(model_dir, path, num_labels=3, seed=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    pairs = [(QUERY, p) for p in PASSAGES] + [(p, QUERY) for p in PASSAGES]
    with torch.no_grad():
        batch = tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=True,
                          padding=True, return_tensors="pt")
        want = model(**batch).logits.numpy()
    with Server(model_dir=str(path)) as server:
        stub = server.stub()
        c = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=30).classifier
        resp = stub.Embed(pb2.EmbedRequest(
            inputs=[pb2.Input(text=pb2.TextInput(text_a=a, text_b=b)) for a, b in pairs],
            heads=[pb2.HEAD_LOGITS], seq_length=c.max_seq_length,
            truncation=pb2.TRUNCATION_LONGEST_FIRST), timeout=120)
    report.equal("classifier max_seq_length (tokenizer's model_max_length)",
                 [c.max_seq_length], [min(tokenizer.model_max_length, 512)])
    report.equal("num_tokens vs the tokenizer's attention mask",
                 [r.num_tokens for r in resp.results],
                 batch["attention_mask"].sum(dim=1).tolist())
    report.check("BertForSequenceClassification logits", np.stack(
        [decode(r.logits) for r in resp.results]), want, atol=1e-5)


def token_classification(report, model_dir, work):
    import torch
    from transformers import AutoTokenizer, BertForTokenClassification
    pb2, _ = stubs()
    path = work / "token-classifier"
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    torch.manual_seed(3)
    model = BertForTokenClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)})
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.5)
        model.classifier.bias.normal_(0, 0.5)
    model.save_pretrained(path)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, model_max_length=512)
    tokenizer.save_pretrained(path)
    shutil.copy(pathlib.Path(model_dir) / "vocab.txt", path / "vocab.txt")
    texts = TEXTS + [PASSAGES[2]]  # the last one longer than 512 tokens
    batch = tokenizer(texts, truncation=True, padding=True, return_tensors="pt",
                      return_offsets_mapping=True)
    offsets = batch.pop("offset_mapping").numpy()
    with torch.no_grad():
        want = model(**batch).logits.numpy()
    mask = batch["attention_mask"].numpy().astype(bool)
    with Server(model_dir=str(path)) as server:
        stub = server.stub()
        info = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=30)
        resp = stub.Embed(pb2.EmbedRequest(
            inputs=[pb2.Input(text=pb2.TextInput(text_a=t)) for t in texts],
            heads=[pb2.HEAD_TOKEN_LOGITS], seq_length=512, padding=pb2.PADDING_TRIM),
            timeout=120)
        encodings = stub.Tokenize(pb2.TokenizeRequest(
            inputs=[pb2.TextInput(text_a=t) for t in texts], seq_length=512), timeout=120).encodings
    report.equal("token classifier: per_token and labels",
                 [info.classifier.per_token] + list(info.classifier.labels), [True] + labels)
    # The rows agree to ~5e-6 (tf_hub_heads); the classifier's rows (384 weights of sd 0.5,
    # norm ~10) carry that into logits of magnitude ~10 at some 1e-5 absolute.
    report.check("BertForTokenClassification logits (real tokens)",
                 np.concatenate([decode(r.token_logits) for r in resp.results]), want[mask],
                 atol=1e-4)

    def byte_offsets(text, spans):
        return [(len(text[:b].encode()), len(text[:e].encode())) for b, e in spans]
    report.equal("Tokenize offsets vs the tokenizer's offset_mapping (in bytes)",
                 [o for e in encodings for o in zip(e.token_starts, e.token_ends)],
                 [o for t, spans, m in zip(texts, offsets, mask)
                  for o in byte_offsets(t, spans[m])])
    # The pipeline's entities, and bert_client ner's, for the texts the pipeline takes whole,
    # with each of its grouping strategies.
    from transformers import pipeline
    short = [t for t in texts if t and len(tokenizer(t)["input_ids"]) <= 512]
    for strategy in ("simple", "first", "average", "max"):
        ner = pipeline("token-classification", model=str(path), aggregation_strategy=strategy,
                       device="cpu")
        want = [[(e["entity_group"], len(t[:e["start"]].encode()), len(t[:e["end"]].encode()),
                  float(e["score"])) for e in ner(t)] for t in short]
        with Server(model_dir=str(path)) as server:
            r = subprocess.run([str(REPO / "bazel-bin" / "client" / "bert_client"),
                                f"--server={server.address}", "ner", "--json",
                                f"--aggregation={strategy}", *short],
                               capture_output=True, text=True, timeout=120, check=True)
        got = [[(e["entity_group"], e["start"], e["end"], e["score"])
                for e in json.loads(line)["entities"]] for line in r.stdout.splitlines()]
        report.equal(f"bert_client ner --aggregation={strategy} entities vs the pipeline's "
                     "(group, byte start, end)",
                     [e[:3] for g in got for e in g], [e[:3] for w in want for e in w])
        report.check(f"bert_client ner --aggregation={strategy} scores vs the pipeline's",
                     [e[3] for g in got for e in g], [e[3] for w in want for e in w], atol=1e-5)


def cross_encoder(report, model_dir, work, activation=None):
    from sentence_transformers import CrossEncoder
    pb2, _ = stubs()
    name = "identity" if activation else "default"
    path = work / f"cross-encoder-{name}"
    extra = {"sbert_ce_default_activation_function": activation} if activation else None
    classifier_dir(model_dir, path, num_labels=1, seed=2, config_extra=extra)
    ce = CrossEncoder(str(path), device="cpu")
    ranked = ce.rank(QUERY, PASSAGES)
    scores = ce.predict([(QUERY, p) for p in PASSAGES])
    with Server(model_dir=str(path)) as server:
        resp = server.stub().Rerank(pb2.RerankRequest(query=QUERY, texts=PASSAGES), timeout=120)
    print(f"     Rerank score_function {resp.score_function!r}")
    report.equal(f"Rerank order vs CrossEncoder.rank ({name} activation)",
                 [r.index for r in resp.ranked], [r["corpus_id"] for r in ranked])
    report.check(f"Rerank scores vs CrossEncoder.predict ({name} activation)",
                 [r.score for r in sorted(resp.ranked, key=lambda r: r.index)], scores,
                 atol=1e-5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", default=str(REPO / "models" / "all-MiniLM-L6-v2"))
    args = parser.parse_args()
    import sentence_transformers
    import torch
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"sentence-transformers {sentence_transformers.__version__}; model {args.model_dir}")
    torch.set_num_threads(2)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="bert_reference_") as tmp:
        work = pathlib.Path(tmp)
        tf_hub_heads(report, args.model_dir)
        sentence_embeddings(report, args.model_dir)
        sequence_classification(report, args.model_dir, work)
        cross_encoder(report, args.model_dir, work)
        cross_encoder(report, args.model_dir, work,
                      activation="torch.nn.modules.linear.Identity")
        token_classification(report, args.model_dir, work)
    print(f"{len(report.failed)} failed" + (f": {report.failed}" if report.failed else ""))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
