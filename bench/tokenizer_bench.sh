#!/usr/bin/env bash
# Tokenizer throughput, ours vs HF `tokenizers`, single thread, same corpus, same run.
#
#   bench/tokenizer_bench.sh [MIN_SECONDS]
#
# Builds //bench:tokenizer_bench, writes the corpus (bench/make_english_corpus.py: Python
# stdlib docstring paragraphs) to a temp file, runs both sides pinned to one CPU when taskset
# exists, and prints one table. Results and method: bench/RESULTS_tokenizer.md.
set -euo pipefail
cd "$(dirname "$0")/.."
min_seconds=${1:-3}
py=.venv/bin/python
vocab=tests/data/bert_uncased_vocab.txt
corpus=$(mktemp /tmp/tokenizer_corpus.XXXXXX)
trap 'rm -f "$corpus"' EXIT

bazel build ${BAZEL_FLAGS:-} //bench:tokenizer_bench >/dev/null 2>&1 ||
  bazel build ${BAZEL_FLAGS:-} //bench:tokenizer_bench
"$py" bench/make_english_corpus.py "$corpus"

pin=()
if command -v taskset >/dev/null; then pin=(taskset -c 0); fi
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs; $(date -u +%FT%TZ)"
echo "tokenizers $("$py" -c 'import tokenizers; print(tokenizers.__version__)')"
printf '%-18s %15s %20s %23s\n' mode 'MB/s (per CPU-s)' texts/s tokens/s
"${pin[@]}" bazel-bin/bench/tokenizer_bench --vocab="$vocab" --corpus="$corpus" \
  --min_seconds="$min_seconds" | sed 1d | sed 's/^/ours /'
"${pin[@]}" "$py" bench/hf_tokenizer_bench.py --vocab="$vocab" --corpus="$corpus" \
  --min_seconds="$min_seconds"
