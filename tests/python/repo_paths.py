"""Where the tests find the repository and the built binaries.

BERT_BIN is Bazel's output tree (tools/test.sh sets it); without it, the repository's own
bazel-bin.
"""
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]


def bin_path(*parts):
    """The built binary at BERT_BIN/<parts...>, as a string; fails the test if it is missing."""
    path = pathlib.Path(os.environ.get("BERT_BIN") or REPO / "bazel-bin").joinpath(*parts)
    assert path.exists(), f"{path} not built (bazel build //{'/'.join(parts[:-1])}:{parts[-1]})"
    return str(path)
