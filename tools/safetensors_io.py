"""Minimal safetensors reading and writing with numpy (no `safetensors` package needed).

The format: an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
data_offsets), then the raw little-endian data.
"""
import json
import pathlib
import struct

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def read_safetensors(path):
    """Returns {name: numpy array} for every tensor in the file."""
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
    """Writes {name: numpy array} (float32, float16, int32 or int64)."""
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
