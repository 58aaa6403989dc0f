"""Benchmark tools that run without a GPU: bench/compare.py (the table the GPU check prints:
ours vs Hugging Face, plus variants), bench/gelu_fp16_emulation.py, bench/goals.py,
bench/cpu_ab.py, bench/bf16_agreement.py, and dry runs of bench/serving_vs_engine.py,
bench/load_tester_memory.py, bench/host_path.py and bench/unread_answers.py."""
import importlib.util
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys

import pytest

from repo_paths import REPO, bin_path


def row(dtype, shape, batch, tokens, ms, **extra):
    r = {"dtype": dtype, "shape": shape, "batch": batch, "real_tokens": tokens, "gpu_ms": ms}
    r.update(extra)
    return r


def run(tmp_path, ours, hf, variants=()):
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    if hf is not None:
        (tmp_path / "hf.json").write_text(json.dumps(hf))
    args = [sys.executable, str(REPO / "bench" / "compare.py"), str(tmp_path / "ours.json"),
            str(tmp_path / "hf.json")]
    for name, rows in variants:
        path = tmp_path / f"{name}.json"
        if rows is not None:
            path.write_text(json.dumps(rows))
        args.append(f"{name}={path}")
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return out.splitlines()


def table_rows(lines):
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines
            if line.startswith("| fp")]


def test_ratio_is_best_hf_over_ours(tmp_path):
    ours = [row("fp16", "seq128", 128, 16384, 5.0), row("fp16", "seq128", 1, 128, 0.5)]
    hf = [row("fp16", "seq128", 128, 16384, 7.5, mode="compile"),
          row("fp16", "seq128", 128, 16384, 8.0, mode="eager"),
          row("fp16", "seq128", 1, 128, 1.0, mode="compile-ro")]
    rows = table_rows(run(tmp_path, ours, hf))
    assert len(rows) == 2
    assert rows[0][4] == "5.000" and rows[0][5] == "25,600"  # seq/s
    assert rows[0][7:10] == ["8.000", "7.500", "–"]
    assert rows[0][10] == "1.50x"
    assert rows[1][10] == "2.00x"


def test_variant_columns_and_missing_inputs(tmp_path):
    ours = [row("fp16", "seq128", 1, 128, 0.5), row("fp16", "varlen", 256, 9172, 3.5)]
    exact = [row("fp16", "varlen", 256, 9172, 4.0)]
    lines = run(tmp_path, ours, None, [("exact_gelu", exact), ("gone", None)])
    assert "(no Hugging Face results)" in lines
    assert any("no results for variant gone" in line for line in lines)
    header = next(line for line in lines if line.startswith("| dtype"))
    assert header.rstrip().endswith("| ours exact_gelu ms |")
    rows = table_rows(lines)
    assert rows[0][-1] == "–"      # the variant did not run batch 1
    assert rows[1][-1] == "4.000"
    assert rows[1][10] == "–"      # no HF number, no ratio


def test_shapes_only_variants_ran_get_rows(tmp_path):
    """When the defaults gave no fp16 result, the kit still writes compare.md from the
    run3_config variant: its shapes get rows, with '–' in our own columns."""
    run3 = [row("fp16", "seq128", 1, 128, 0.5), row("fp16", "seq128", 256, 32768, 13.0)]
    hf = [row("fp16", "seq128", 1, 128, 1.0, mode="compile-ro")]
    lines = run(tmp_path, [], hf, [("run3_config", run3)])
    assert "(no results with the defaults)" in lines
    rows = table_rows(lines)
    assert [(r[2], r[4], r[10], r[-1]) for r in rows] == [("1", "–", "–", "0.500"),
                                                          ("256", "–", "–", "13.000")]
    assert rows[0][9] == "1.000"  # HF's number is still shown
    # With the defaults, their shapes come first, in their order, and the variant's extra
    # shape after them.
    ours = [row("fp16", "seq128", 1, 128, 0.4)]
    rows = table_rows(run(tmp_path, ours, hf, [("run3_config", run3)]))
    assert [(r[2], r[4], r[10], r[-1]) for r in rows] == [("1", "0.400", "2.50x", "0.500"),
                                                          ("256", "–", "–", "13.000")]


def load_script(path):
    """The Python script at REPO/path, imported as a module."""
    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_emulation():
    return load_script("bench/gelu_fp16_emulation.py")


def test_gelu_emulation_matches_reference_and_bounds_the_epilogue():
    emu = load_emulation()
    d = REPO / "tests" / "golden" / "tiny-l4-h128"
    cfg = json.loads((d / "config.json").read_text())
    w = emu.read_safetensors(d / "model.safetensors")
    e = emu.read_safetensors(d / "expected.safetensors")
    args = (e["input_word_ids"], e["input_type_ids"], e["input_mask"])
    ref = e["sequence_output"]
    # Without 16-bit rounding the emulator is the reference model.
    assert emu.rel(emu.forward(w, cfg, *args, emu.ROUND["fp32"], "exact"), ref) < 1e-5
    # bf16 rounding is round-to-nearest-even to 8 significant bits.
    assert emu.round_bf16([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8])[0] == 1.0
    assert emu.round_bf16([1.0 + 3 * 2 ** -8])[0] == 1.0 + 2 ** -6
    exact = emu.rel(emu.forward(w, cfg, *args, emu.ROUND["fp16"], "exact"), ref)
    fused_out = emu.forward(w, cfg, *args, emu.ROUND["fp16"], "fused")
    exact_out = emu.forward(w, cfg, *args, emu.ROUND["fp16"], "exact")
    fused = emu.rel(fused_out, ref)
    assert 1e-4 < exact < 5e-3
    assert abs(fused / exact - 1.0) < 0.1
    # The two paths really differ (the tanh form is taken), by less than the fp16 error.
    assert 0 < emu.rel(fused_out, exact_out) < exact


def run_goals(tmp_path, ours, hf, log_text=None, variants=None, with_best=False):
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    (tmp_path / "hf.json").write_text(json.dumps(hf))
    args = [sys.executable, str(REPO / "bench" / "goals.py"), str(tmp_path / "ours.json"),
            str(tmp_path / "hf.json")]
    if log_text is not None:
        (tmp_path / "ours.log").write_text(log_text)
        args.append(str(tmp_path / "ours.log"))
    for name, rows in (variants or {}).items():
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
        args.append(f"{name}={tmp_path / f'{name}.json'}")
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| fp16")]
    # Without with_best: measured and verdict only (the fastest-variant column is "–" then).
    return {cells[0]: cells[1:] if with_best else cells[1:3] for cells in rows}


def test_goals_met_missed_and_missing(tmp_path):
    ours = [row("fp16", "seq128", 128, 16384, 5.5), row("fp16", "seq128", 1, 128, 0.40),
            row("fp16", "seq128", 32, 4096, 1.5), row("fp16", "varlen", 256, 9172, 3.5)]
    hf = [row("fp16", "seq128", 128, 16384, 7.0, mode="compile"),
          row("fp16", "varlen", 256, 9172, 15.0, mode="eager")]
    log = "memory: fp16 engine with a 16384-token workspace uses 660.0 MiB of device memory\n"
    goals = run_goals(tmp_path, ours, hf, log)
    assert len(goals) == 7
    rows_128 = [v for k, v in goals.items() if k.startswith("fp16 batch 128 x 128")]
    assert rows_128 == [["23,273 seq/s (5.500 ms)", "met"]]
    ratio = [v for k, v in goals.items() if "HF torch.compile" in k]
    assert ratio == [["1.27x (HF compile 7.000 ms)", "met"]]
    assert [v for k, v in goals.items() if k.startswith("fp16 batch 1 x")] == [["0.400 ms",
                                                                             "NOT met"]]
    assert [v for k, v in goals.items() if k.startswith("fp16 batch 32 x")] == [["1.500 ms",
                                                                              "met"]]
    assert [v for k, v in goals.items() if "M real tokens/s" in k] == [["2.62 M tokens/s",
                                                                      "met"]]
    assert [v for k, v in goals.items() if "HF eager" in k] == [["4.29x", "met"]]
    assert [v for k, v in goals.items() if "MiB" in k] == [["660 MiB", "met"]]
    # Without the HF side or the log: those goals say so instead of guessing.
    goals = run_goals(tmp_path, ours, [])
    assert [v for k, v in goals.items() if "HF torch.compile" in k] == [["–", "no data"]]
    assert [v for k, v in goals.items() if "MiB" in k] == [["–", "no data"]]


def test_goals_name_the_fastest_variant(tmp_path):
    ours = [row("fp16", "seq128", 128, 16384, 6.0), row("fp16", "seq128", 1, 128, 0.40),
            row("fp16", "seq128", 32, 4096, 1.5), row("fp16", "varlen", 256, 9172, 4.0)]
    variants = {
        # faster at batch 1 (meets the goal) and at varlen (not enough), slower at batch 128
        "custom_gemm_pdl": [row("fp16", "seq128", 1, 128, 0.33), row("fp16", "seq128", 128,
                                                                     16384, 6.5),
                            row("fp16", "varlen", 256, 9172, 3.9)],
        "pdl": [row("fp16", "seq128", 1, 128, 0.37), row("fp16", "seq128", 32, 4096, 1.6)],
        "missing": [],
    }
    goals = run_goals(tmp_path, ours, [], None, variants, with_best=True)
    best = {k: v[2] for k, v in goals.items()}
    assert best["fp16 batch 1 x 128 <= 0.35 ms GPU time"] == "custom_gemm_pdl: 0.330 ms (met)"
    # the only variant there is slower
    assert best["fp16 batch 32 x 128 <= 1.6 ms GPU time"] == "–"
    assert best["fp16 batch 128 x 128 >= 23,000 seq/s"] == "–"
    assert (best["fp16 varlen 256 >= 2.4 M real tokens/s"] ==
            "custom_gemm_pdl: 2.35 M tokens/s (NOT met)")
    assert best["fp16 varlen 256 >= 4x HF eager"] == "–"
    # Time goals keep the defaults' verdict in their own columns.
    assert goals["fp16 batch 1 x 128 <= 0.35 ms GPU time"][:2] == ["0.400 ms", "NOT met"]


def test_ratio_goals_name_the_fastest_variant_too(tmp_path):
    """The goals against HF are judged on the fastest variant as well, and on it alone when
    the defaults have no result (the kit's fallback to run3_config)."""
    hf = [row("fp16", "seq128", 128, 16384, 7.0, mode="compile"),
          row("fp16", "varlen", 256, 9172, 15.0, mode="eager")]
    run3 = [row("fp16", "seq128", 128, 16384, 6.0), row("fp16", "varlen", 256, 9172, 4.0)]
    goals = run_goals(tmp_path, [], hf, None, {"run3_config": run3}, with_best=True)
    assert goals["fp16 batch 128: >= 1.25x HF torch.compile"] == [
        "–", "no data", "run3_config: 1.17x (HF compile 7.000 ms) (NOT met)"]
    assert goals["fp16 varlen 256 >= 4x HF eager"] == ["–", "no data",
                                                       "run3_config: 3.75x (NOT met)"]
    assert goals["fp16 batch 128 x 128 >= 23,000 seq/s"] == [
        "–", "no data", "run3_config: 21,333 seq/s (6.000 ms) (NOT met)"]
    # With the defaults: their verdict, and the variant only where it is faster.
    ours = [row("fp16", "seq128", 128, 16384, 6.5), row("fp16", "varlen", 256, 9172, 3.0)]
    goals = run_goals(tmp_path, ours, hf, None, {"run3_config": run3}, with_best=True)
    assert goals["fp16 batch 128: >= 1.25x HF torch.compile"] == [
        "1.08x (HF compile 7.000 ms)", "NOT met",
        "run3_config: 1.17x (HF compile 7.000 ms) (NOT met)"]
    assert goals["fp16 varlen 256 >= 4x HF eager"] == ["5.00x", "met", "–"]


def test_serving_vs_engine_dry_run_on_the_cpu(tmp_path):
    """bench/serving_vs_engine.py end to end on the CPU backend and the tiny model, against a
    made-up engine figure: the method the GPU kit runs, checked before a GPU session spends
    time on it."""
    bin_dir = pathlib.Path(bin_path("client", "bert_load")).parents[1]
    # An engine figure of 1,000 real tokens/s (varlen, fp32): the ratio is tokens/s / 1000.
    engine = tmp_path / "ours.json"
    engine.write_text(json.dumps([row("fp32", "batch 1 x seq 128", 1, 128, 1.0),
                                  row("fp32", "varlen", 256, 1000, 1000.0)]))
    out_json = tmp_path / "serving.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "serving_vs_engine.py"), "--bin", str(bin_dir),
         "--model_dir", str(REPO / "tests/golden/tiny-l4-h128"),
         "--vocab", str(REPO / "tests/data/tiny_vocab_1024.txt"), "--backend", "cpu",
         "--dtype", "float32", "--concurrency", "1,2", "--inputs_per_request", "2",
         "--duration_s", "0.5", "--warmup_s", "0", "--engine_json", str(engine),
         "--json_out", str(out_json)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(out_json.read_text())
    assert report["engine_tokens_per_s"] == 1000.0
    assert report["kinds"] == ["text", "text", "tokens"]
    assert report["server_exit"] == 0
    best = max(s["tokens_per_s"] for s in report["steps"][:2])
    assert best > 0
    assert f"= {best / 1000:.2f} of it" in r.stdout
    assert ("MET" if best >= 800 else "MISSED") in r.stdout


def test_cpu_ab_alternates_the_binaries(tmp_path):
    """bench/cpu_ab.py on two copies of cpu_bench (one layer, 8 tokens): a row per batch size
    and binary, ratios to the first, and the flags after -- reaching every binary."""
    cpu_bench = bin_path("bench", "cpu_bench")
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cpu_ab.py"), "--bin", f"a={cpu_bench}",
         "--bin", f"b={cpu_bench}", "--batches=1,2", "--rounds=3", "--warmup=1", "--",
         "--threads=1", "--layers=1", "--seq=8"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in r.stdout.splitlines()
            if re.match(r"\| \d", line)]
    assert [(c[0], c[1]) for c in rows] == [("1", "a"), ("1", "b"), ("2", "a"), ("2", "b")]
    for cells in rows:
        assert 0 < float(cells[3]) <= float(cells[2])  # min <= median wall ms
    assert [c[5] for c in rows if c[1] == "a"] == ["1.000", "1.000"]
    assert all(re.fullmatch(r"[0-3]/3", c[6]) for c in rows if c[1] == "b")
    # A binary that cannot serve is an error, not a table.
    bad = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cpu_ab.py"), "--bin", f"a={cpu_bench}",
         "--bin", "b=/bin/false", "--", "--threads=1", "--layers=1", "--seq=8"],
        capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "did not start serving" in bad.stderr
    missing = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cpu_ab.py"), "--bin", f"a={cpu_bench}",
         "--bin", f"b={tmp_path / 'no_such_binary'}"], capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and missing.stderr.startswith("cpu_ab: ")
    same = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cpu_ab.py"), "--bin", f"a={cpu_bench}",
         "--bin", f"a={cpu_bench}"], capture_output=True, text=True, timeout=300)
    assert same.returncode != 0 and "a name of its own" in same.stderr


def test_load_tester_memory_dry_run(tmp_path):
    """bench/load_tester_memory.py for one short step: its table has a row per binary."""
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "load_tester_memory.py"),
         "--bert_load", f"a={bin_path('client', 'bert_load')}",
         "--bert_load", f"b={bin_path('client', 'bert_load')}", "--durations", "1",
         "--concurrency", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line.split("|")[1:-1] for line in r.stdout.splitlines() if line.startswith("| a ")
            or line.startswith("| b ")]
    assert [c[0].strip() for c in rows] == ["a", "b"]
    for cells in rows:
        assert int(cells[2].replace(",", "")) > 0  # calls in the window
        assert float(cells[3]) > 5  # peak RSS in MB: a gRPC client takes more than this


def run_kit_with_stub_gpu_bench(tmp_path, what, fp16_fails=False):
    """Runs `tools/gpu_check.sh run WHAT` in a scratch tree whose .gpu/bin/gpu_bench is a stub:
    it records its arguments and what the real gpu_bench --check_flags makes of them (which
    stops before any CUDA call, and parses the same way in a build without CUDA), and writes
    a --json with one fp16 result (none with fp16_fails: as if the defaults failed). python3
    is a stub that exits 0 (the HF, serving, comparison and host-path steps); the other
    binaries are missing, so their steps fail at once. Returns
    ([(check_flags status, arguments, its output)], the kit's stdout)."""
    tree = tmp_path / "tree"
    (tree / "tools").mkdir(parents=True)
    shutil.copy(REPO / "tools" / "gpu_check.sh", tree / "tools" / "gpu_check.sh")
    (tree / ".gpu" / "bert-base-random").mkdir(parents=True)
    (tree / ".gpu" / "bert-base-random" / "model.safetensors").write_bytes(b"")
    (tree / ".gpu" / "varlen.txt").write_text("36\n")
    (tree / ".gpu" / "bin").mkdir()
    calls = tmp_path / "calls.txt"
    stub = tree / ".gpu" / "bin" / "gpu_bench"
    stub.write_text(f"""#!/usr/bin/env bash
# Without the kit's stdbuf preload (an ASan build must come first in the library list).
out=$(env -u LD_PRELOAD "{bin_path('bench', 'gpu_bench')}" --check_flags "$@" 2>&1)
printf 'CALL %s %s\\n' "$?" "$*" >> "{calls}"
printf 'OUT %s\\n' "$out" >> "{calls}"
result='[{{"impl": "ours", "mode": "cuda", "dtype": "fp16", "shape": "seq128", "batch": 1}}]'
[ -n "$STUB_FP16_FAILS" ] && result='[]'
for a in "$@"; do case "$a" in --json=*) echo "$result" > "${{a#--json=}}";; esac; done
""")
    stub.chmod(0o755)
    stubs = tmp_path / "stubbin"
    stubs.mkdir()
    (stubs / "python3").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{tmp_path / "python_calls.txt"}"\nexit 0\n')
    (stubs / "python3").chmod(0o755)
    env = dict(os.environ, OUT=str(tmp_path / "out"), PATH=f"{stubs}:{os.environ['PATH']}")
    env.pop("STUB_FP16_FAILS", None)
    if fp16_fails:
        env["STUB_FP16_FAILS"] = "1"
    r = subprocess.run(["bash", "tools/gpu_check.sh", "run", what], cwd=tree, env=env,
                       capture_output=True, text=True, timeout=300)
    assert "== GPU check summary" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    lines = calls.read_text().splitlines() if calls.exists() else []
    result = []
    for call, out in zip(lines[0::2], lines[1::2]):
        _, status, *args = call.split(" ")
        result.append((int(status), args, out[len("OUT "):]))
    return result, r.stdout


def kit_variants():
    """The kit's gpu_bench variants as {name: (batches, flags)}, read from its run_variants
    lines (run3_config's batches as they are when the defaults gave results)."""
    import shlex
    script = (REPO / "tools" / "gpu_check.sh").read_text().replace("\\\n", " ")
    run3_flags = " ".join(" ".join(re.findall(r'^RUN3_FLAGS\+?="([^"]*)"', script, re.M)).split())
    run3_batches = re.search(r'local run3_batches="([^"]*)"', script).group(1)
    variants = {}
    for line in script.splitlines():
        line = line.strip()
        if line.startswith("run_variants "):
            line = line.replace("$run3_batches", run3_batches).replace("$RUN3_FLAGS", run3_flags)
            for spec in shlex.split(line)[1:]:
                name, batches, *flags = spec.split()
                variants[name] = (batches, flags)
    return variants


def test_the_gpu_kit_runs_gpu_bench_as_intended(tmp_path):
    """tools/gpu_check.sh, run with a stub gpu_bench: every call's flags parse, each result
    file comes from the call meant for it, and each variant runs its flags on its batches
    (with the variable-length batch where its spec says +varlen). A flag renamed, misspelled,
    dropped or quoted into one argument in the kit would otherwise show only on a GPU."""
    calls, _ = run_kit_with_stub_gpu_bench(tmp_path, "all")
    for status, args, out in calls:
        assert status == 0 and out.startswith("flags: "), (args, out)
    by_json = {}
    for _, args, out in calls:
        json_arg = [a for a in args if a.startswith("--json=")]
        assert len(json_arg) == 1, args
        by_json[pathlib.Path(json_arg[0][len("--json="):]).stem] = (args, out)
    variants = kit_variants()
    assert len(variants) == 11, variants
    assert variants["run3_config"][0] == "1,8,32,128+varlen"
    assert len(variants["run3_config"][1]) == 6
    expected = {"ours", "ours_nographs", "ours_layers_overlap", "ours_layers_serial"}
    expected |= {f"ours_{name}" for name in variants}
    assert set(by_json) == expected and len(calls) == len(expected), sorted(by_json)

    def parsed(out, key):
        return out.split(f" {key}=", 1)[1].split(" ", 1)[0]

    def label(out):
        return out.split(" options: ", 1)[1].split()

    for name, (batches, flags) in variants.items():
        args, out = by_json[f"ours_{name}"]
        assert parsed(out, "batches") == batches.removesuffix("+varlen"), (name, out)
        assert (parsed(out, "varlen_file") != "") == batches.endswith("+varlen"), (name, out)
        assert parsed(out, "dtypes") == "fp16", (name, out)
        assert flags and all(f in label(out) for f in flags), (name, flags, out)
    _, out = by_json["ours"]
    assert parsed(out, "dtypes") == "fp16,bf16,fp32" and parsed(out, "memory") == "1", out
    assert parsed(out, "varlen_file") != "", out
    _, out = by_json["ours_nographs"]
    assert parsed(out, "profile") == "1" and "--cuda_graphs=false" in label(out), out
    for name in ("ours_layers_overlap", "ours_layers_serial"):
        assert "--outputs=layers" in label(by_json[name][1]), by_json[name]
    assert "--cuda_overlap_copies=false" in label(by_json["ours_layers_serial"][1])


def test_the_gpu_kit_falls_back_to_the_run3_configuration(tmp_path):
    """When the defaults give no fp16 result (a new default path broken on the device), the
    kit runs the run-3 configuration on every batch (and the server with its flags), skips
    every variant built on the broken defaults, and says so in its summary."""
    calls, stdout = run_kit_with_stub_gpu_bench(tmp_path, "bench", fp16_fails=True)
    by_json = {}
    for status, args, out in calls:
        assert status == 0, (args, out)
        json_arg = [a for a in args if a.startswith("--json=")][0]
        by_json[pathlib.Path(json_arg[len("--json="):]).stem] = out
    assert set(by_json) == {"ours", "ours_run3_config"}, sorted(by_json)
    out = by_json["ours_run3_config"]
    assert " batches=1,8,32,128,256 " in out and " varlen_file=.gpu/varlen.txt " in out, out
    for flag in kit_variants()["run3_config"][1]:
        assert flag in out.split(" options: ", 1)[1].split(), (flag, out)
    assert "defaults (fp16)          NO RESULT: goals.md has run3_config's numbers" in stdout
    # The legend names the flags that give the run-3 engine, on the server too.
    assert f"RUN3_FLAGS: {' '.join(kit_variants()['run3_config'][1])}" in stdout
    # The server end to end runs with run3_config's flags, against run3_config's engine figure.
    serving = [line for line in (tmp_path / "python_calls.txt").read_text().splitlines()
               if line.startswith("bench/serving_vs_engine.py")]
    assert len(serving) == 1, serving
    flags = " ".join(kit_variants()["run3_config"][1])
    assert f"--server_args {flags} --engine_json" in serving[0], serving[0]
    assert "ours_run3_config.json" in serving[0], serving[0]


def test_the_gpu_kit_runs_compute_sanitizer_on_the_attention_tiles(tmp_path):
    """With .gpu/sanitizer (tools/gpu_check.sh build fetches it), `run micro` runs the
    attention test's tile variants under each of compute-sanitizer's memcheck, racecheck and
    synccheck, and the summary gives each one's error count; without it, says it skipped."""
    stub_dir = tmp_path / "tree" / ".gpu" / "sanitizer" / "bin"
    stub_dir.mkdir(parents=True)
    calls = tmp_path / "sanitizer_calls.txt"
    (stub_dir / "compute-sanitizer").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{calls}"\n'
        'echo "========= ERROR SUMMARY: 0 errors"\n')
    (stub_dir / "compute-sanitizer").chmod(0o755)
    _, stdout = run_kit_with_stub_gpu_bench(tmp_path, "micro")
    runs = calls.read_text().splitlines()
    assert [r.split()[1] for r in runs] == ["memcheck", "racecheck", "synccheck"], runs
    for r in runs:
        assert "--error-exitcode 9 .gpu/bin/attention_test" in r, r
        assert "--gtest_filter=*TileIdentity*f16_d*_Odd:*TileIdentity*f16_d*_Padding" in r, r
    for tool in ("memcheck", "racecheck", "synccheck"):
        line = [l for l in stdout.splitlines() if l.startswith(f"sanitizer {tool}")]
        assert len(line) == 1 and "ERROR SUMMARY: 0 errors" in line[0], stdout[-2000:]


def test_the_gpu_kit_skips_the_sanitizer_without_it(tmp_path):
    _, stdout = run_kit_with_stub_gpu_bench(tmp_path, "micro")
    assert "sanitizer                skipped (no .gpu/sanitizer" in stdout, stdout[-2000:]


def test_the_gpu_kit_serving_part_runs_the_engine_benchmark(tmp_path):
    calls, _ = run_kit_with_stub_gpu_bench(tmp_path, "serving")
    assert len(calls) == 1, calls
    status, args, out = calls[0]
    assert status == 0 and " varlen_file=.gpu/varlen.txt " in out, out


def test_host_path_dry_run():
    """bench/host_path.py for one short round: the null-engine server answers bert_load's
    calls, and the server's CPU time per sequence comes out positive."""
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("bench/host_path.py pins the server and the load to CPUs 0 and 1")
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "host_path.py"),
         "--server", f"x={bin_path('bench', 'host_path_server')}",
         "--bert_load", bin_path("client", "bert_load"), "--inputs_per_request", "4",
         "--concurrency", "8", "--duration_s", "1", "--rounds", "1", "--transports", "tcp,unix"],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    for transport in ("tcp", "unix"):
        medians = [line.split("|")[1:-1] for line in r.stdout.splitlines()
                   if line.startswith(f"| x | {transport} | 4 |")]
        assert len(medians) == 1, r.stdout
        seq_s, us_per_seq = (float(c.replace(",", "")) for c in medians[0][3:5])
        assert seq_s > 0 and us_per_seq > 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_serving_check_reports_the_servers_fallbacks(tmp_path, monkeypatch, capsys):
    """tools/gpu_serving_check.py reads the GPU server's bert_engine_fallbacks_total after its
    three calls and puts any fallback on its last line (a default path that did not run makes
    that run's benchmark numbers misleading). Here on the CPU server, with fallbacks injected
    on [CLS] (id 101 in the tiny vocabulary), then without."""
    check = load_serving_check(monkeypatch)
    monkeypatch.chdir(REPO)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for package, name in (("server", "bert_server"), ("client", "bert_client")):
        (bin_dir / name).symlink_to(bin_path(package, name))
    check.BIN, check.BACKEND = bin_dir, "cpu"
    # Free ports instead of the check's fixed ones (other test runs may share this machine).
    port, check.METRICS_PORT = free_port(), free_port()
    metrics = f"--metrics_address=127.0.0.1:{check.METRICS_PORT}"
    for extra, want in (
            (["--debug_engine_fault_word_id=101", "--debug_engine_fault=fallback"],
             "fallbacks: debug_fault=3"),
            ([], "fallbacks: none listed")):
        proc = check.start_server("cpu", port, "float32", [metrics, *extra])
        try:
            answers = check.ask_three_times(port)
            assert check.judge(answers, answers[0]) == (True, 0.0)
            check.report_fallbacks("float32")
        finally:
            assert check.stop(proc) == 0
        assert f"INFO bert_server cpu float32 {want}" in capsys.readouterr().out
    assert check.culprits == ["float32 fell back: debug_fault 3"]


def load_serving_check(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tools"))  # for the modules it imports
    return load_script("tools/gpu_serving_check.py")


def test_the_serving_checks_escapes_are_server_flags(monkeypatch):
    """Each flag the serving check's culprit search turns off is one bert_server takes with
    that value: a misspelt one would make every server of the search fail to start, which it
    would report as 'still fails'."""
    check = load_serving_check(monkeypatch)
    help_text = subprocess.run([str(bin_path("server", "bert_server")), "--helpfull"],
                               capture_output=True, text=True, timeout=60).stdout
    assert len(check.ESCAPES) == 6
    for flag in check.ESCAPES:
        name = flag.split("=", 1)[0]
        assert f"    {name} (" in help_text, flag


def test_the_serving_checks_culprit_search(monkeypatch):
    """find_culprit names the single flags that avoid a fault, else tries them all together
    (the engine of the last measured run, roughly), else says nothing avoids it."""
    check = load_serving_check(monkeypatch)
    for avoided_by, want in (
            ({"--cuda_attention_tile=64"}, "avoided by --cuda_attention_tile=64"),
            ({"ALL"}, "no single flag avoids it; all of them together do"),
            (set(), "no single flag avoids it, nor all of them together")):
        tried = []

        def try_config(dtype, reference, flags, avoided_by=avoided_by, tried=tried):
            tried.append(list(flags))
            everything = len(flags) == len(check.ESCAPES)
            return bool(set(flags) & avoided_by) or (everything and "ALL" in avoided_by), "ok"

        monkeypatch.setattr(check, "try_config", try_config)
        assert check.find_culprit("float16", None) == want
        # The defaults again, then each flag alone, then (with no single one) all together.
        assert tried[:1 + len(check.ESCAPES)] == [[]] + [[f] for f in check.ESCAPES]
        assert len(tried) == 1 + len(check.ESCAPES) + (0 if "avoided" in want else 1)
    # The searches of one run share one budget: once it is spent, none starts.
    monkeypatch.setattr(check, "culprit_search_spent_s", check.CULPRIT_SEARCH_BUDGET_S)
    assert check.find_culprit("float32", None) == "not searched (the run's search time is spent)"


def test_gpu_bench_refuses_out_of_range_tuning_values():
    """gpu_bench checks the tuning values as the engine would, before any CUDA call, so the
    kit's flag test (--check_flags) catches a value the engine would refuse on the GPU."""
    gpu_bench = str(bin_path("bench", "gpu_bench"))
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    ok = subprocess.run([gpu_bench, "--check_flags", "--cuda_attention_tile=64",
                         "--cuda_layer_norm_hoist_max_rows=0"],
                        capture_output=True, text=True, timeout=60, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "--cuda_attention_tile=64" in ok.stdout
    for flag, name in (("--cuda_attention_tile=48", "--cuda_attention_tile"),
                       ("--cuda_layer_norm_hoist_max_rows=-1", "--cuda_layer_norm_hoist_max_rows"),
                       ("--cuda_graph_max_rows=-5", "--cuda_graph_max_rows")):
        bad = subprocess.run([gpu_bench, "--check_flags", flag], capture_output=True, text=True,
                             timeout=60, env=env)
        assert bad.returncode == 2 and name in bad.stderr, (flag, bad.returncode, bad.stderr)



def test_unread_answers_dry_run():
    """bench/unread_answers.py on a small scale: 4 unread calls of 2 inputs (~650 KB answers
    with the tiny model); without the limit all are answered and held, with 1 MiB one is."""
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "unread_answers.py"), "--calls", "4", "--inputs",
         "2", "--rounds", "1", "--config", "unlimited=--max_answer_memory_mb=0",
         "--config", "1mib=--max_answer_memory_mb=1 --max_message_bytes=1048576"],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {cells[2]: cells[3:6] for line in r.stdout.splitlines()
            if (cells := [c.strip() for c in line.split("|")])[1:2] == ["1"]}
    assert rows["unlimited"][:2] == ["4", "0"], r.stdout
    assert rows["1mib"][:2] == ["1", "3"], r.stdout
    assert 0 < float(rows["1mib"][2]) <= 1, r.stdout


def test_restart_under_load_dry_run():
    """bench/restart_under_load.py on a small scale: one round, four callers, a drain delay
    and health-checking clients (no call may fail then)."""
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "restart_under_load.py"), "--server",
         f"now={bin_path('server', 'bert_server').rsplit('/server/', 1)[0]}", "--rounds", "1",
         "--callers", "4", "--before_s", "1", "--after_s", "0.5", "--health_check",
         "--flags=--drain_delay_s=1"],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [cells for line in r.stdout.splitlines()
            if (cells := [c.strip() for c in line.split("|")])[1:3] == ["1", "now"]]
    assert len(rows) == 1, r.stdout
    calls, ok, failed, exit_code = rows[0][3:7]
    assert int(calls) == int(ok) > 0 and failed == "0" and exit_code == "0", r.stdout


def test_bf16_agreement_prints_bfloat16_against_float32():
    """bench/bf16_agreement.py: a row per input, bfloat16's error against float32 (above float32's
    own rounding, within bfloat16's), the sentence embeddings' cosine near 1."""
    from server_harness import cpu_flags
    if not {"amx_bf16", "amx_tile", "avx512_bf16"} <= cpu_flags():
        pytest.skip("the CPU has no AMX-BF16: no bfloat16 server to compare")
    r = subprocess.run([sys.executable, str(REPO / "bench" / "bf16_agreement.py")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line.split("|")[1:-1] for line in r.stdout.splitlines()
            if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 3, r.stdout
    for _, sequence, mean_pooled, cosine in rows:
        assert 1e-6 < float(sequence) < 2e-2 and 1e-6 < float(mean_pooled) < 2e-2, r.stdout
        assert 0.999 < float(cosine) <= 1.0, r.stdout
