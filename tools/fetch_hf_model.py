#!/usr/bin/env python3
"""Downloads a BERT model directory from the Hugging Face Hub (or a mirror with its layout).

    tools/fetch_hf_model.py --repo bert-base-uncased [--revision main] \
        [--endpoint https://huggingface.co] --out models/bert-base-uncased

Fetches config.json, vocab.txt and model.safetensors from
{endpoint}/{repo}/resolve/{revision}/{file}, sending `Authorization: Bearer $HF_TOKEN` when
HF_TOKEN is set (gated or private repos). Each file is written to a temporary name and
renamed only after the whole directory checks out: config.json is a BERT config,
vocab.txt has one token per line and as many as vocab_size, model.safetensors has a
consistent header and the word embeddings the config implies. Standard library only.
"""
import argparse
import json
import os
import pathlib
import shutil
import struct
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

FILES = ("config.json", "vocab.txt", "model.safetensors")
REQUIRED_CONFIG = ("hidden_size", "num_hidden_layers", "num_attention_heads",
                   "intermediate_size", "vocab_size")
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U8": 1, "BOOL": 1}


class FetchError(Exception):
    pass


def download(url, dest, token, timeout):
    request = urllib.request.Request(url, headers={"User-Agent": "bert-serving-fetch/1"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
            expected = response.headers.get("Content-Length")
            shutil.copyfileobj(response, out, length=1 << 20)
    except urllib.error.HTTPError as e:
        hint = ""
        if e.code in (401, 403):
            hint = " (gated or private repo? set HF_TOKEN)"
        elif e.code == 404:
            hint = " (check --repo, --revision and that the repo has this file)"
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(f"{url}: {e}") from None
    size = os.path.getsize(dest)
    if expected is not None and int(expected) != size:
        raise FetchError(f"{url}: got {size} bytes, server announced {expected}")
    return size


def check_config(path):
    try:
        config = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise FetchError(f"config.json: invalid JSON: {e}") from None
    if not isinstance(config, dict):
        raise FetchError("config.json: not a JSON object")
    for key in REQUIRED_CONFIG:
        if not isinstance(config.get(key), int) or config[key] <= 0:
            raise FetchError(f"config.json: missing or invalid {key!r}")
    return config


def check_vocab(path, config):
    try:
        lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise FetchError(f"vocab.txt: not UTF-8: {e}") from None
    if len(lines) != config["vocab_size"]:
        raise FetchError(f"vocab.txt: {len(lines)} tokens but config.json says vocab_size "
                         f"{config['vocab_size']}")


def check_safetensors(path, config):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise FetchError("model.safetensors: truncated (no header length)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100 << 20):
            raise FetchError(f"model.safetensors: header length {header_len} past the end")
        try:
            header = json.loads(f.read(header_len))
        except ValueError as e:
            raise FetchError(f"model.safetensors: corrupt header: {e}") from None
    data_size = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = entry["data_offsets"]
            count = 1
            for d in entry["shape"]:
                count *= d
            need = count * DTYPE_SIZES[entry["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise FetchError(f"model.safetensors: tensor {name!r}: malformed entry") from None
        if not 0 <= begin <= end <= data_size or end - begin != need:
            raise FetchError(f"model.safetensors: tensor {name!r}: offsets [{begin}, {end}) do "
                             f"not fit its shape or the {data_size}-byte data section")
    want = [config["vocab_size"], config["hidden_size"]]
    for name in ("embeddings.word_embeddings.weight", "bert.embeddings.word_embeddings.weight"):
        if name in header:
            if header[name]["shape"] != want:
                raise FetchError(f"model.safetensors: {name} has shape {header[name]['shape']}, "
                                 f"config.json implies {want}")
            return
    raise FetchError("model.safetensors: no embeddings.word_embeddings.weight (not a BERT model?)")


def fetch(repo, revision, endpoint, out, token, timeout=60):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".fetch-") as tmp:
        for name in FILES:
            url = "{}/{}/resolve/{}/{}".format(endpoint.rstrip("/"), repo,
                                               urllib.parse.quote(revision, safe=""), name)
            size = download(url, os.path.join(tmp, name), token, timeout)
            print(f"fetch_hf_model: {name}: {size} bytes", file=sys.stderr)
        config = check_config(os.path.join(tmp, "config.json"))
        check_vocab(os.path.join(tmp, "vocab.txt"), config)
        check_safetensors(os.path.join(tmp, "model.safetensors"), config)
        for name in FILES:
            os.replace(os.path.join(tmp, name), out / name)
    print(f"fetch_hf_model: {repo}@{revision} ready in {out}", file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="e.g. bert-base-uncased or org/name")
    parser.add_argument("--revision", default="main")
    parser.add_argument("--endpoint", default=os.environ.get("HF_ENDPOINT",
                                                             "https://huggingface.co"))
    parser.add_argument("--out", required=True, help="model directory to create")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    args = parser.parse_args(argv)
    try:
        fetch(args.repo, args.revision, args.endpoint, args.out, os.environ.get("HF_TOKEN"),
              args.timeout)
    except FetchError as e:
        print(f"fetch_hf_model: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
