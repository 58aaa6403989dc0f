"""pytest setup shared by tests/python: the repository's tools/ directory goes on sys.path so
the tests import the helpers that live there (safetensors_io) the way tools/ and bench/
scripts do."""
import sys

from repo_paths import REPO

_TOOLS = str(REPO / "tools")
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)
