"""The CPU serving path builds for aarch64 (Grace, Graviton) as well as x86-64.

There is no aarch64 machine here, so the C++ sources of the CPU path (kernels, engine,
tokenizer, batching) are compiled by the aarch64 cross compiler: an x86-only intrinsic,
header or builtin without its #if fails here. Plain `char` is unsigned on aarch64; the
sanitized build (tools/sanitize.sh) runs every test with -funsigned-char for that.
"""
import concurrent.futures
import os
import shutil
import subprocess

import pytest

from repo_paths import REPO

CROSS_CXX = "aarch64-linux-gnu-g++"
# The CPU path: what a CPU-only server computes with. The gRPC layer and the tools are
# portable C++ on portable libraries.
PACKAGES = ["kernels/cpu", "server/core", "server/engine", "server/text", "server/util"]


def cpu_path_sources():
    sources = []
    for package in PACKAGES:
        for path in sorted((REPO / package).glob("*.cc")):
            name = path.name
            if "cuda" in name or name.endswith("_test.cc"):
                continue
            sources.append(path)
    return sources


def openblas_include_dir():
    # Debian installs cblas.h under the host's multiarch directory; its declarations are the
    # same for every architecture.
    flags = subprocess.run(["pkg-config", "--cflags-only-I", "openblas"], capture_output=True,
                           text=True, check=True).stdout.split()
    return [flag[2:] for flag in flags if flag.startswith("-I")]


@pytest.mark.skipif(shutil.which(CROSS_CXX) is None,
                    reason=f"{CROSS_CXX} not installed (tools/setup.sh --tests installs it)")
def test_cpu_path_compiles_for_aarch64():
    # The cross compiler's own C and C++ headers come first; the architecture-independent
    # library headers (abseil, utf8proc, nlohmann, cblas) after them.
    after = ["/usr/include"] + openblas_include_dir()
    command = [CROSS_CXX, "-std=c++17", "-fsyntax-only", "-Wall", "-Wno-sign-compare",
               f"-I{REPO}"] + [arg for d in after for arg in ("-idirafter", d)]
    sources = cpu_path_sources()
    assert len(sources) >= 20, sources  # the glob found the tree

    def compile_one(path):
        proc = subprocess.run(command + [str(path)], capture_output=True, text=True)
        return path, proc.returncode, proc.stderr

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        failures = [f"{path.relative_to(REPO)}:\n{stderr[-2000:]}"
                    for path, rc, stderr in pool.map(compile_one, sources) if rc != 0]
    assert not failures, "\n".join(failures)


def test_no_architecture_flag_applies_to_every_target():
    # A -march in .bazelrc reaches every compile, and GCC for aarch64 rejects x86 values:
    # the architecture's flags belong in bazel/copts.bzl, chosen per CPU.
    lines = (REPO / ".bazelrc").read_text().splitlines()
    flagged = [line for line in lines
               if not line.lstrip().startswith("#") and ("-march" in line or "-mavx" in line)]
    assert not flagged, flagged
