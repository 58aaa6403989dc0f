#!/usr/bin/env python3
"""How far the CPU backend's bfloat16 answers (Intel AMX) are from its float32 ones, through the
server: a float32 and a --dtype=bfloat16 bert_server on the same model; the notebook's two
sentences and a sentence pair at seq_length 128; per input, the relative error of
sequence_output and of the sentence embedding (mean_pooled_output) against the float32 server's,
and the two embeddings' cosine similarity. Needs a CPU with AMX-BF16 (Sapphire Rapids or later).
Not a test: a measurement (test_server_minilm.py holds the bounds).

    BERT_BIN=bazel-bin .venv/bin/python bench/bf16_agreement.py [--model_dir=DIR]
"""
import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests", "python"), os.path.join(REPO, "tools")]
from server_harness import MINILM, Server, decode, rel_err, stubs  # noqa: E402

SENTENCES = ["Please subscribe to this newsletter", "You are being offered this job role"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", default=str(MINILM))
    parser.add_argument("--seq_length", type=int, default=128)
    args = parser.parse_args()
    pb2, _ = stubs()
    texts = [pb2.TextInput(text_a=s) for s in SENTENCES]
    texts.append(pb2.TextInput(text_a="What is a newsletter?", text_b=SENTENCES[0]))
    request = pb2.EmbedRequest(inputs=[pb2.Input(text=t) for t in texts],
                               seq_length=args.seq_length, padding=pb2.PADDING_TRIM,
                               heads=[pb2.HEAD_SEQUENCE, pb2.HEAD_MEAN_POOLED])
    answers = {}
    for dtype in ("float32", "bfloat16"):
        with Server(model_dir=args.model_dir, extra=[f"--dtype={dtype}"]) as server:
            answers[dtype] = server.stub().Embed(request, timeout=120)
    print(f"model {args.model_dir}, seq_length {args.seq_length}: bfloat16 server against "
          "float32 server")
    print("| input | sequence_output rel. error | mean_pooled_output rel. error | cosine |")
    print("|---|---|---|---|")
    for i, (got, want) in enumerate(zip(answers["bfloat16"].results,
                                        answers["float32"].results, strict=True)):
        a, b = decode(got.mean_pooled_output), decode(want.mean_pooled_output)
        cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
        sequence = rel_err(decode(got.sequence_output), decode(want.sequence_output))
        print(f"| {i} | {sequence:.2e} | {rel_err(a, b):.2e} | {cosine:.6f} |")


if __name__ == "__main__":
    main()
