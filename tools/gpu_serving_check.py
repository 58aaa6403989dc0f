#!/usr/bin/env python3
"""End-to-end check of the CUDA serving path, run on the GPU machine by gpu_check.sh.

1. bert_encode --backend=cuda on a golden fixture, compared with the reference outputs.
2. bert_server --backend=cuda and --backend=cpu on the same tiny model (the golden one with a
   classifier added, so that the logits are checked too); the bundled client embeds the same
   texts on both; the heads must agree; the GPU server must give the same
   answer bit for bit three times in a row (eager, CUDA-graph capture, replay); SIGTERM
   must exit 0. If the GPU server fails to start or to agree, the check is repeated with
   each default path's flag turned off in turn (--fused_gelu=false, ...), and each line
   says whether that avoids the fault. The GPU server's fallbacks from its default paths
   (bert_engine_fallbacks_total) are printed, and any taken goes on the last line.
Prints one PASS/FAIL line per check and exits non-zero if any failed.
"""
import atexit
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

from classifier_model import write_classifier_model  # tools/, beside this script
from safetensors_io import read_safetensors

BIN = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".gpu/bin")
GOLDEN = pathlib.Path("tests/golden/tiny-l4-h128")
VOCAB = "tests/data/tiny_vocab_1024.txt"
TOL = {"float32": 1e-5, "float16": 2e-2, "bfloat16": 2e-2}
BACKEND = os.environ.get("GPU_CHECK_BACKEND", "cuda")  # "cpu" for a dry run without a GPU
# Only our binaries get the carried libraries (gpu_check.sh passes them in BERT_LD).
ENV = dict(os.environ, LD_LIBRARY_PATH=os.environ.get("BERT_LD", ""))
failures = []
culprits = []  # the culprit search's verdicts, for the last line


def check(name, ok, detail=""):
    print(f"{'PASS' if ok else 'FAIL'} {name} {detail}")
    if not ok:
        failures.append(name)


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def encode_check():
    ref = read_safetensors(GOLDEN / "expected.safetensors")
    for dtype, tol in TOL.items():
        with tempfile.TemporaryDirectory() as tmp:
            out_path = os.path.join(tmp, "out.safetensors")
            proc = subprocess.run(
                [str(BIN / "bert_encode"), f"--model_dir={GOLDEN}",
                 f"--inputs={GOLDEN / 'expected.safetensors'}", f"--output={out_path}",
                 f"--backend={BACKEND}", f"--dtype={dtype}"],
                capture_output=True, text=True, timeout=120, env=ENV)
            if proc.returncode != 0:
                check(f"bert_encode {BACKEND} {dtype}", False, proc.stderr[-500:])
                continue
            got = read_safetensors(out_path)
            worst = max(rel(got[k], ref[k]) for k in got if k in ref)
            check(f"bert_encode {BACKEND} {dtype} vs golden", worst <= tol, f"max rel {worst:.2e}")


_served_model = None


def served_model():
    """The golden model as a BertForSequenceClassification checkpoint (the encoder under
    "bert.", a random three-label classifier beside it), made once per run in a temporary
    directory: the servers' model, so that HEAD_LOGITS is compared too."""
    global _served_model
    if _served_model is None:
        directory = pathlib.Path(tempfile.mkdtemp(prefix="gpu_serving_check_"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        hidden = json.loads((GOLDEN / "config.json").read_text())["hidden_size"]
        rng = np.random.default_rng(11)
        _served_model = write_classifier_model(
            directory, GOLDEN, rng.normal(0, 0.2, (3, hidden)).astype(np.float32),
            rng.normal(0, 0.5, 3).astype(np.float32))
    return _served_model


# The default paths of the CUDA engine that a server flag turns off (bench/NOTES.md).
ESCAPES = ["--fused_gelu=false", "--gemm_autotune=false", "--cuda_graphs=false",
           "--cuda_overlap_copies=false", "--cuda_attention_tile=64",
           "--cuda_layer_norm_hoist_max_rows=0"]


def start_server(backend, port, dtype, extra=()):
    # The check compares answers bit for bit, and which GEMM algorithm runs depends on the
    # batch's rows: a batching delay of 100 ms keeps the one request's three inputs (tokenized
    # in parallel) in one batch every time, where the default 2 ms only nearly always does.
    proc = subprocess.Popen(
        [str(BIN / "bert_server"), f"--model_dir={served_model()}", f"--vocab={VOCAB}",
         f"--backend={backend}", f"--dtype={dtype}", f"--address=127.0.0.1:{port}",
         "--max_batch_tokens=2048", "--max_batch_delay_us=100000", "--mutex_deadlock_detection",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:  # a failed startup ends at once
            r = subprocess.run([str(BIN / "bert_client"), f"--server=127.0.0.1:{port}", "health"],
                               capture_output=True, text=True, timeout=10, env=ENV)
            if r.stdout.strip() == "SERVING":
                return proc
            time.sleep(0.5)
    except BaseException:
        stop(proc)
        raise
    stop(proc)
    raise RuntimeError(f"{backend} server did not become SERVING: {proc.stdout.read()[-2000:]}")


def stop(proc, timeout=60):
    """SIGTERM, then SIGKILL if it has not exited within `timeout`; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def embed(port, timeout_s=60):
    texts = ["please subscribe to this newsletter", "you are being offered this job role",
             "a b ||| c d e"]
    r = subprocess.run([str(BIN / "bert_client"), f"--server=127.0.0.1:{port}", "embed", "--json",
                        f"--timeout_ms={timeout_s * 1000}",
                        "--heads=pooled,sequence,mean_pooled,cls,logits",
                        "--padding=pad", "--seq_length=32", "--truncation=truncate"]
                       + texts, capture_output=True, text=True, timeout=timeout_s + 10, env=ENV)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


HEADS = ("pooled_output", "sequence_output", "mean_pooled_output", "cls_output", "logits")


def values(answers):
    return [[r[h]["values"] for h in HEADS] for r in answers]


def worst_difference(a, b):
    return max(rel(np.array(rb[h]["values"]), np.array(ra[h]["values"]))
               for ra, rb in zip(a, b) for h in HEADS)


def ask_three_times(port, timeout_s=60):
    """The check's call three times: on a GPU server the batch shape runs eagerly the first
    time, is captured as a CUDA graph the second and replayed the third."""
    return [embed(port, timeout_s) for _ in range(3)]


def judge(answers, reference):
    """(the three answers are the same bit for bit, the first one's largest relative
    difference from `reference`)."""
    identical = all(values(x) == values(answers[0]) for x in answers)
    return identical, worst_difference(reference, answers[0])


def try_config(dtype, reference, extra):
    """One GPU server with `extra` flags: starts, answers the check's call three times alike
    and close to `reference`? Returns (ok, detail). Short limits: a hung engine costs seconds."""
    proc = None
    try:
        proc = start_server(BACKEND, 50083, dtype,
                            [*extra, "--engine_watchdog_s=10", "--drain_timeout_s=5"])
        identical, worst = judge(ask_three_times(50083, timeout_s=15), reference)
        return identical and worst <= TOL[dtype], f"max rel {worst:.2e}, identical {identical}"
    except Exception as e:  # noqa: BLE001 - a report, not a check
        return False, repr(e)[-300:]
    finally:
        if proc is not None:
            stop(proc, timeout=15)


# What all culprit searches of one run may take together (the kit gives the whole check
# 300 s): up to eight servers of ~5-20 s each for one dtype, and what is left for the others.
CULPRIT_SEARCH_BUDGET_S = 200
culprit_search_spent_s = 0.0


def find_culprit(dtype, reference):
    """After the default GPU server failed: the defaults once more (a fault that does not come
    back is reported as such), then each default path turned off in turn, so that the summary
    names the flags that avoid the fault, and, when none does, all of them at once. Returns a
    one-line verdict."""
    global culprit_search_spent_s
    budget_s = CULPRIT_SEARCH_BUDGET_S - culprit_search_spent_s
    started = time.time()
    try:
        return search_culprit(dtype, reference, started, budget_s)
    finally:
        culprit_search_spent_s += time.time() - started


def search_culprit(dtype, reference, started, budget_s):
    if budget_s <= 0:
        return "not searched (the run's search time is spent)"
    ok, detail = try_config(dtype, reference, [])
    print(f"  defaults again: {'passes' if ok else 'fails'} ({detail})")
    if ok:
        return "did not come back on a second server"
    avoiders = []
    for flag in ESCAPES:
        if time.time() - started > budget_s:
            print(f"  {flag} and later: not tried (the search's {budget_s:.0f} s are spent)")
            break
        ok, detail = try_config(dtype, reference, [flag])
        print(f"  with {flag}: {'passes' if ok else 'still fails'} ({detail})")
        if ok:
            avoiders.append(flag)
    if avoiders:
        return "avoided by " + " ".join(avoiders)
    if time.time() - started > budget_s:
        return "no single flag tried avoids it"
    ok, detail = try_config(dtype, reference, ESCAPES)
    print(f"  with all of them: {'passes' if ok else 'still fails'} ({detail})")
    return ("no single flag avoids it; all of them together do" if ok
            else "no single flag avoids it, nor all of them together")


METRICS_PORT = 50092  # the GPU server's /metrics


def report_fallbacks(dtype):
    """Prints the GPU server's bert_engine_fallbacks_total by path. A fallback keeps the
    answers right (the checks above judge them) but means a default path did not run, so the
    benchmark numbers of that path are not what they seem: it goes on the last line too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError as e:
        print(f"INFO bert_server {BACKEND} {dtype} fallbacks: /metrics unreadable ({e!r})")
        return
    counts = {}
    for m in re.finditer(r"^bert_engine_fallbacks_total(\{[^}]*\})?\s+(\S+)", text, re.M):
        path = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or "")).get("path", "?")
        counts[path] = float(m.group(2))
    listed = " ".join(f"{path}={count:g}" for path, count in sorted(counts.items()))
    print(f"INFO bert_server {BACKEND} {dtype} fallbacks: {listed or 'none listed'}")
    taken = [f"{path} {count:g}" for path, count in sorted(counts.items()) if count > 0]
    if taken:
        culprits.append(f"{dtype} fell back: {', '.join(taken)}")


def serving_check():
    # The float32 CPU server's answers: the reference for every GPU dtype.
    cpu = start_server("cpu", 50081, "float32")
    try:
        reference = embed(50081)
    finally:
        code = stop(cpu)
        check("bert_server SIGTERM exit (cpu float32)", code == 0, str(code))
    for dtype in ("float32", "float16"):
        failures_before = len(failures)
        gpu = None
        try:
            try:
                gpu = start_server(BACKEND, 50082, dtype,
                                   [f"--metrics_address=127.0.0.1:{METRICS_PORT}"])
                answers = ask_three_times(50082)
            except (RuntimeError, AssertionError, subprocess.TimeoutExpired) as e:
                check(f"bert_server {BACKEND} {dtype} starts and answers", False, repr(e)[-1500:])
                continue
            report_fallbacks(dtype)
            identical, worst = judge(answers, reference)
            check(f"bert_server {BACKEND} {dtype}: eager, captured, replayed answers identical",
                  identical)
            check(f"bert_server {BACKEND} {dtype} vs cpu",
                  len(reference) == len(answers[0]) == 3 and worst <= TOL[dtype],
                  f"max rel {worst:.2e}")
        finally:
            # The search below re-checks starting and answering only: an exit code alone that
            # failed would cost it ~60 s of device time for a verdict about something else.
            serving_failed = len(failures) > failures_before
            if gpu is not None:
                code = stop(gpu)
                check(f"bert_server SIGTERM exit ({dtype})", code == 0, str(code))
            if serving_failed:
                print(f"bert_server {BACKEND} {dtype}: trying each default path turned off")
                verdict = find_culprit(dtype, reference)
                culprits.append(f"{dtype}: {verdict}")
                print(f"bert_server {BACKEND} {dtype}: {verdict}")


if __name__ == "__main__":
    encode_check()
    try:
        serving_check()
    except Exception as e:  # noqa: BLE001 - report and fail the check
        check("serving", False, repr(e)[:1000])
    verdicts = f" ({'; '.join(culprits)})" if culprits else ""
    print(f"{'FAILED' if failures else 'OK'}: {len(failures)} failed{verdicts}")
    sys.exit(1 if failures else 0)
