"""End-to-end: tools/bert_encode on the golden models' inputs matches Hugging Face's outputs.

Runs the binary from $BERT_BIN (bazel-bin; default: the repo's bazel-bin) and compares every
output tensor with tests/golden/<model>/expected.safetensors at 1e-5 relative
(||out - ref|| / ||ref||), padded rows included. safetensors files are parsed with numpy.
"""
import json
import os
import pathlib
import struct
import subprocess

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64}


def read_safetensors(path):
    data = pathlib.Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    body = data[8 + header_len:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(body[begin:end], dtype=DTYPES[entry["dtype"]]).reshape(
            entry["shape"])
    return tensors


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    names = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def bert_encode():
    root = pathlib.Path(os.environ.get("BERT_BIN", REPO / "bazel-bin"))
    binary = root / "tools" / "bert_encode"
    assert binary.exists(), f"{binary} not built (bazel build //tools:bert_encode)"
    return str(binary)


def relative_error(out, ref):
    return float(np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize("model", ["tiny-l4-h128", "tiny-l12-h64-s128"])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_golden(tmp_path, model, threads):
    expected = read_safetensors(GOLDEN / model / "expected.safetensors")
    out_path = tmp_path / "out.safetensors"
    subprocess.run([bert_encode(), f"--model_dir={GOLDEN / model}",
                    f"--inputs={GOLDEN / model / 'expected.safetensors'}",
                    f"--output={out_path}", "--backend=cpu", f"--threads={threads}",
                    "--batch_size=2"], check=True, timeout=300)
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
