"""The CPU serving path builds for aarch64 (Grace, Graviton) as well as x86-64.

There is no aarch64 machine here, so the C++ sources of the CPU path (kernels, engine,
tokenizer, batching) are compiled by the aarch64 cross compiler: an x86-only intrinsic,
header or builtin without its #if fails here. Plain `char` is unsigned on aarch64; the
sanitized build (tools/sanitize.sh) runs every test with -funsigned-char for that.
"""
import concurrent.futures
import os
import re
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


def build_files():
    for path in sorted(REPO.rglob("*")):
        parts = path.relative_to(REPO).parts
        if parts[0].startswith(("bazel-", ".")) or not path.is_file():
            continue
        if path.name in ("BUILD", "BUILD.bazel") or path.suffix == ".bzl":
            yield path
    yield REPO / ".bazelrc"


def test_x86_flags_only_where_chosen_per_cpu():
    # GCC for aarch64 rejects x86 instruction-set flags: they may appear only in
    # bazel/copts.bzl's x86-64 branch, whose default branch adds nothing.
    x86_flag = re.compile(r"-m(arch|tune|avx|sse|fma|bmi|popcnt|f16c|lzcnt)")
    copts = REPO / "bazel" / "copts.bzl"
    misplaced = []
    for path in build_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if not x86_flag.search(code):
                continue
            if path == copts and '"//bazel:x86_64":' in code:
                continue
            misplaced.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not misplaced, misplaced
    assert '"//conditions:default": []' in copts.read_text()
