"""Short libFuzzer run of server/text/fuzz/tokenizer_fuzzer.cc under ASan + UBSan.

Bazel's toolchain on this project is gcc (no libFuzzer), so this test compiles the tokenizer
sources and the fuzz target with clang++ directly and runs them for FUZZ_SECONDS (default 15),
once with a signed and once with an unsigned plain `char` (x86-64's and aarch64's).
Any crash, sanitizer report, leak or failed check fails the test. Seeds: a few texts covering
every code path plus invalid UTF-8. Skipped only when clang++ is not installed
(tools/setup.sh installs it).
"""
import os
import shutil
import subprocess

import pytest
from repo_paths import REPO

VOCAB = REPO / "tests" / "data" / "bert_uncased_vocab.txt"
SOURCES = ["server/text/tokenizer.cc", "server/text/piece_table.cc", "server/text/packer.cc",
           "server/text/utf8.cc", "server/text/fuzz/tokenizer_fuzzer.cc"]
SEEDS = ["Please subscribe to this newsletter", "Héllo Wörld! Crème brûlée e\u0301",
         "我爱北京天安门 ab北cd", "I \u2764 emoji \U0001F600 \u200b\u3000x", "a" * 120,
         "ΣΊΣΥΦΟΣ İstanbul \u037e \U0001D165\u0301\U0001D16D", "$100.50 @user #tag [MASK]"]


def _clang():
    for name in ("clang++", "clang++-14", "clang++-15", "clang++-16"):
        if shutil.which(name):
            return name
    return None


@pytest.mark.parametrize("char_sign", ["-fsigned-char", "-funsigned-char"])
def test_fuzz_tokenizer(tmp_path, char_sign):
    clang = _clang()
    if clang is None:
        pytest.skip("clang++ is not installed (tools/setup.sh installs clang)")
    binary = tmp_path / "tokenizer_fuzzer"
    libs = subprocess.run(["pkg-config", "--libs", "absl_status", "absl_statusor", "absl_strings",
                           "absl_str_format", "libutf8proc"],
                          capture_output=True, text=True, check=True).stdout.split()
    compile_cmd = [clang, "-std=c++17", "-O1", "-g", "-fno-omit-frame-pointer", char_sign,
                   "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
                   f"-I{REPO}", *[str(REPO / s) for s in SOURCES], "-o", str(binary), *libs]
    subprocess.run(compile_cmd, check=True, timeout=600)

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(SEEDS):
        (corpus / f"seed{i}").write_bytes(seed.encode("utf-8"))
    for i, raw in enumerate([b"abc\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80x",
                             b"\xe2\x82", b"\x00\x01\x7f"]):
        (corpus / f"bad{i}").write_bytes(raw)

    seconds = int(os.environ.get("FUZZ_SECONDS", "15"))
    env = dict(os.environ, BERT_FUZZ_VOCAB=str(VOCAB),
               ASAN_OPTIONS="detect_leaks=1:abort_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    run = subprocess.run([str(binary), f"-max_total_time={seconds}", "-max_len=4096",
                          "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/", str(corpus)],
                         env=env, capture_output=True, text=True, timeout=seconds + 120)
    log = run.stderr[-4000:]
    assert run.returncode == 0, f"fuzzer failed (exit {run.returncode}):\n{log}"
    assert "runtime error" not in run.stderr, log
    assert "Done" in run.stderr and "runs in" in run.stderr, log
