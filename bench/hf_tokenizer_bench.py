"""HF `tokenizers` single-thread throughput over the same corpus and vocabulary.

The tokenizer is assembled exactly as in tests/python/test_tokenizer_diff.py (BertNormalizer,
BertPreTokenizer, WordPiece, [CLS]/[SEP] template). Run with RAYON_NUM_THREADS=1 and
TOKENIZERS_PARALLELISM=false (bench/tokenizer_bench.sh sets both). Method: one untimed
warm-up pass, then whole passes until --min_seconds of process CPU time (time.process_time;
the machine is shared, wall-clock MB/s printed alongside); modes:
  hf encode        Python loop of tokenizer.encode(text) (includes Python call overhead)
  hf encode_batch  tokenizer.encode_batch(all texts), one thread
Both with add_special_tokens=True (ids + [CLS]/[SEP], as our tokenize+pack).
"""
import argparse
import time

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vocab", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--min_seconds", type=float, default=3.0)
    args = p.parse_args()
    with open(args.vocab, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
    with open(args.corpus, encoding="utf-8") as f:
        texts = f.read().split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    nbytes = sum(len(t.encode("utf-8")) for t in texts)

    def per_text():
        n = 0
        for t in texts:
            n += len(tok.encode(t).ids)
        return n

    def batch():
        return sum(len(e.ids) for e in tok.encode_batch(texts))

    for name, fn in (("hf encode", per_text), ("hf encode_batch", batch)):
        fn()
        wall_start = time.perf_counter()
        start = time.process_time()
        passes = tokens = 0
        while True:
            tokens += fn()
            passes += 1
            elapsed = time.process_time() - start
            if elapsed >= args.min_seconds:
                break
        wall = time.perf_counter() - wall_start
        print(f"{name:<18} {nbytes * passes / elapsed / 1e6:10.2f} MB/s "
              f"{len(texts) * passes / elapsed:12.0f} texts/s {tokens / elapsed:14.0f} tokens/s"
              f"  ({passes} passes, {elapsed:.2f} cpu-s, wall {nbytes * passes / wall / 1e6:.2f}"
              " MB/s)")


if __name__ == "__main__":
    main()
