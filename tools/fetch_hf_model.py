#!/usr/bin/env python3
"""Downloads a BERT model directory from the Hugging Face Hub (or a mirror with its layout).

    tools/fetch_hf_model.py --repo bert-base-uncased [--revision main] \
        [--endpoint https://huggingface.co] --out models/bert-base-uncased

Fetches config.json, vocab.txt and model.safetensors from
{endpoint}/{repo}/resolve/{revision}/{file}, sending `Authorization: Bearer $HF_TOKEN` when
HF_TOKEN is set (gated or private repos), and where the repo has them the files the server
also reads: tokenizer_config.json (do_lower_case), and sentence-transformers' modules.json
with each Pooling module's config.json, sentence_bert_config.json and
config_sentence_transformers.json (the model's sentence embedding, the length it truncates
to, its prompts). Each file is written
to a temporary name and renamed only after the whole directory checks out: config.json is a
BERT config, vocab.txt has one token per line and as many as vocab_size, model.safetensors has
a consistent header and the word embeddings the config implies, the optional JSON files parse.
Standard library only.
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
OPTIONAL_FILES = ("tokenizer_config.json", "modules.json", "sentence_bert_config.json",
                  "config_sentence_transformers.json")
REQUIRED_CONFIG = ("hidden_size", "num_hidden_layers", "num_attention_heads",
                   "intermediate_size", "vocab_size")
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U8": 1, "BOOL": 1}


class FetchError(Exception):
    pass


class NotFound(FetchError):
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
            raise NotFound(f"{url}: HTTP {e.code} {e.reason}{hint}") from None
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


def read_json(path, name, kind):
    try:
        value = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise FetchError(f"{name}: invalid JSON: {e}") from None
    if not isinstance(value, kind):
        raise FetchError(f"{name}: not a JSON {'array' if kind is list else 'object'}")
    return value


def pooling_configs(modules_path):
    """The config.json of each Pooling module that modules.json lists."""
    names = []
    for module in read_json(modules_path, "modules.json", list):
        if not isinstance(module, dict) or not isinstance(module.get("type"), str):
            raise FetchError("modules.json: a module without a \"type\" string")
        if module["type"].rsplit(".", 1)[-1] == "Pooling":
            path = module.get("path")
            # A directory inside the model's: nothing the repository says may write elsewhere.
            if (not isinstance(path, str) or not path or path.startswith("/")
                    or ".." in path.split("/")):
                raise FetchError(f"modules.json: Pooling module path {path!r}")
            names.append(f"{path}/config.json")
    return names


def fetch(repo, revision, endpoint, out, token, timeout=60):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".fetch-") as tmp:
        def get(name, optional=False):
            url = "{}/{}/resolve/{}/{}".format(endpoint.rstrip("/"), repo,
                                               urllib.parse.quote(revision, safe=""), name)
            dest = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            try:
                size = download(url, dest, token, timeout)
            except NotFound:
                if optional:
                    return False
                raise
            print(f"fetch_hf_model: {name}: {size} bytes", file=sys.stderr)
            return True

        for name in FILES:
            get(name)
        fetched = list(FILES) + [name for name in OPTIONAL_FILES if get(name, optional=True)]
        config = check_config(os.path.join(tmp, "config.json"))
        check_vocab(os.path.join(tmp, "vocab.txt"), config)
        check_safetensors(os.path.join(tmp, "model.safetensors"), config)
        for name in ("tokenizer_config.json", "sentence_bert_config.json",
                     "config_sentence_transformers.json"):
            if name in fetched:
                read_json(os.path.join(tmp, name), name, dict)
        if "modules.json" in fetched:
            for name in pooling_configs(os.path.join(tmp, "modules.json")):
                get(name)
                read_json(os.path.join(tmp, name), name, dict)
                fetched.append(name)
        for name in fetched:
            dest = out / name
            if out.resolve() not in dest.resolve().parents:  # checked above; never write outside
                raise FetchError(f"{name}: outside {out}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(os.path.join(tmp, name), dest)
        # An optional file this revision does not have must not stay from an earlier fetch.
        for name in OPTIONAL_FILES:
            if name not in fetched and (out / name).exists():
                (out / name).unlink()
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
