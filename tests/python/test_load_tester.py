"""bert_load, the bundled load tester, against a real bert_server (CPU backend, tiny golden
model): its JSON report, CSV, /metrics view, input kinds and files, error accounting, and
its exit status. Steps are short (about a second): these check behaviour, not speed."""
import csv
import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from repo_paths import bin_path  # noqa: E402
from server_harness import (TINY_VOCAB, Server, classifier_model, metric_value,  # noqa: E402
                            sentence_transformers_model)


def bert_load(*args, timeout=120):
    return subprocess.run([bin_path("client", "bert_load"), *args], capture_output=True,
                          text=True, timeout=timeout)


def run_report(tmp_path, server, *args):
    out = tmp_path / "report.json"
    r = bert_load(f"--server={server.address}", f"--json_out={out}", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text()), r.stdout


@pytest.fixture(scope="module")
def server():
    # A fixed delay: the sweep checks that calls in flight together share batches, which the
    # adaptive delay, taught by the c=1 step that waiting does not pay, may no longer show.
    with Server(metrics=True, extra=["--max_batch_delay_us=5000",
                                     "--adaptive_batch_delay=false"]) as s:
        yield s


def test_closed_loop_sweep_reports_every_step(server, tmp_path):
    csv_path = tmp_path / "calls.csv"
    report, stdout = run_report(
        tmp_path, server, "--concurrency=1,4", "--duration_s=1", "--warmup_s=0.3",
        "--lengths=fixed:12", "--inputs_per_request=2", f"--metrics=127.0.0.1:{server.metrics_port}",
        f"--csv_out={csv_path}")
    assert [s["label"] for s in report["steps"]] == ["c=1", "c=4"]
    assert report["server"]["backend"] == "cpu"
    for step in report["steps"]:
        assert step["mode"] == "closed"
        assert step["errors"] == {}
        assert step["ok"] == step["calls"] > 0
        # Every synthetic word is one token of the model's vocabulary: 12 tokens per input.
        assert step["tokens_per_s"] == pytest.approx(12 * step["sequences_per_s"])
        assert step["sequences_per_s"] == pytest.approx(2 * step["requests_per_s"])
        lat = step["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert step["server_ms"]["inference"]["p50"] > 0
        assert step["server_batches"]["mean_sequences"] >= 1
        assert step["client_cpu_percent"] > 0
        assert "error" not in step["server_batches"]
    # Four calls in flight batch together more than one does.
    c1, c4 = report["steps"]
    assert c4["server_batches"]["mean_sequences"] > c1["server_batches"]["mean_sequences"]
    assert "c=4" in stdout and "latency (ms) from the intended send" in stdout
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    for i, step in enumerate(report["steps"]):
        in_window = [r for r in rows if r["step"] == str(i) and r["in_window"] == "1"]
        assert len(in_window) == step["calls"]
        assert all(r["code"] == "OK" and r["tokens"] == "24" for r in in_window)
        assert all(int(r["intended_us"]) <= int(r["sent_us"]) < int(r["done_us"])
                   for r in in_window)


def test_open_loop_keeps_its_rate(server, tmp_path):
    report, _ = run_report(tmp_path, server, "--rate=40", "--arrival=constant", "--duration_s=1.5",
                           "--warmup_s=0.2", "--lengths=lognormal:20:48", "--input_kind=tokens")
    (step,) = report["steps"]
    assert step["mode"] == "open" and step["arrival"] == "constant"
    assert step["calls"] == 60  # a constant schedule: exactly rate x window
    assert step["ok"] == 60
    # The tiny model answers in a few ms: the answers keep up with the schedule.
    assert step["requests_per_s"] == pytest.approx(40, rel=0.15)
    assert step["send_lag_ms"]["p50"] < 5


def test_token_input_sends_the_same_tokens_as_text(server, tmp_path):
    args = ["--concurrency=2", "--duration_s=0.6", "--warmup_s=0", "--lengths=fixed:9"]
    text, _ = run_report(tmp_path, server, *args)
    tokens, _ = run_report(tmp_path, server, *args, "--input_kind=tokens")
    for report in (text, tokens):
        step = report["steps"][0]
        assert step["ok"] > 0 and step["errors"] == {}
        assert step["tokens_per_s"] == pytest.approx(9 * step["sequences_per_s"])
    assert tokens["workload"]["input_kind"] == "tokens"


def test_stream_api_drives_embedstream_and_serves_like_unary(server, tmp_path):
    args = ["--concurrency=4", "--duration_s=0.8", "--warmup_s=0", "--lengths=fixed:10",
            "--inputs_per_request=2", "--channels=2"]

    def counts():
        text = server.metrics_text()
        return {m: metric_value(text, "bert_requests_total", {"method": m, "code": "OK"}) or 0
                for m in ("Embed", "EmbedStream")}

    before = counts()
    unary, _ = run_report(tmp_path, server, *args)
    middle = counts()
    stream, stdout = run_report(tmp_path, server, *args, "--api=stream")
    after = counts()
    # Each run used its own method: the server's counters rose by its answers and only
    # those (the startup's GetModelInfo is neither).
    assert middle["EmbedStream"] == before["EmbedStream"]
    assert after["Embed"] == middle["Embed"]
    assert after["EmbedStream"] - middle["EmbedStream"] == stream["steps"][0]["ok"]
    assert middle["Embed"] - before["Embed"] == unary["steps"][0]["ok"]
    assert "one EmbedStream each" in stdout and stream["run"]["api"] == "stream"
    for report in (unary, stream):
        step = report["steps"][0]
        # Every answer matched its own message (a mismatched request_id is INTERNAL).
        assert step["errors"] == {} and step["ok"] > 0
        assert step["tokens_per_s"] == pytest.approx(10 * step["sequences_per_s"])
        assert step["server_ms"]["inference"]["p50"] > 0


def test_stream_api_counts_per_message_errors(server, tmp_path):
    # Ids beyond the tiny vocabulary: each message gets an error, the stream goes on.
    inputs = tmp_path / "mixed.jsonl"
    inputs.write_text('{"input_word_ids": [101, 5000, 102]}\n"hello world"\n')
    report, _ = run_report(tmp_path, server, f"--input_file={inputs}", "--api=stream",
                           "--concurrency=2", "--duration_s=0.5", "--warmup_s=0", "--channels=1")
    step = report["steps"][0]
    bad = step["errors"].get("INVALID_ARGUMENT", 0)
    # Requests alternate between the bad and the good input.
    assert bad > 0 and step["ok"] > 0
    assert abs(bad - step["ok"]) <= 2
    assert step["ok"] + bad == step["calls"]


def test_input_file_with_pairs(server, tmp_path):
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"text_a": "the world", "text_b": "a new day"}\n\n"hello world"\n')
    report, _ = run_report(tmp_path, server, f"--input_file={inputs}", "--concurrency=1",
                           "--duration_s=0.5", "--warmup_s=0", "--inputs_per_request=2")
    step = report["steps"][0]
    assert step["ok"] > 0 and step["errors"] == {}
    # [CLS] the world [SEP] a new day [SEP] = 8 tokens, [CLS] hello world [SEP] = 4.
    assert step["tokens_per_s"] == pytest.approx(6 * step["sequences_per_s"])
    # The synthetic lengths were not used, so the report does not claim them.
    assert report["workload"]["lengths"] is None
    lat = step["latency_ms"]
    assert lat["p90"] <= lat["p95"] <= lat["p99"]


def test_errors_are_counted_by_code(tmp_path):
    # One call at a time admitted; an open loop faster than the engine meets RESOURCE_EXHAUSTED.
    heavy = ["--max_concurrent_requests=1", "--max_batch_delay_us=20000",
             "--adaptive_batch_delay=false"]
    with Server(metrics=True, extra=heavy) as s:
        report, stdout = run_report(tmp_path, s, "--rate=400", "--duration_s=1", "--warmup_s=0",
                                    "--lengths=fixed:60", "--inputs_per_request=8")
        text = s.metrics_text()
    step = report["steps"][0]
    # Every call of the run is in the window (no warm-up; nothing is sent for after it), so
    # the counts equal the server's own.
    refused = metric_value(text, "bert_requests_total",
                           {"method": "Embed", "code": "RESOURCE_EXHAUSTED"})
    answered = metric_value(text, "bert_requests_total", {"method": "Embed", "code": "OK"})
    assert step["errors"].get("RESOURCE_EXHAUSTED", 0) == refused > 0
    assert step["ok"] == answered > 0
    assert step["latency_ms"]["count"] == step["ok"]
    assert step["failed_latency_ms"]["count"] == refused
    assert "RESOURCE_EXHAUSTED" in stdout  # the table's error line
    # The server's reason comes with the count, in the table and the report.
    reason = step["error_messages"]["RESOURCE_EXHAUSTED"]
    assert reason and f"RESOURCE_EXHAUSTED: {reason}" in stdout


def test_a_step_over_max_error_percent_fails_the_run(tmp_path):
    heavy = ["--max_concurrent_requests=1", "--max_batch_delay_us=20000",
             "--adaptive_batch_delay=false"]
    with Server(extra=heavy) as s:
        args = [f"--server={s.address}", "--rate=400,200", "--duration_s=0.5", "--warmup_s=0",
                "--lengths=fixed:60", "--inputs_per_request=8"]
        r = bert_load(*args, "--max_error_percent=1")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "calls failed, over --max_error_percent=1" in r.stderr
        assert "the sweep stops here" in r.stderr
        assert "poisson 200/s" not in r.stdout  # the second step did not run
        # A closed loop past the admission limit is said to be one before the sweep.
        r = bert_load(f"--server={s.address}", "--concurrency=3", "--duration_s=0.3",
                      "--warmup_s=0", "--lengths=fixed:8")
        assert "--concurrency=3 is over the server's max_concurrent_requests 1" in r.stderr


@pytest.mark.parametrize("api", ["unary", "stream"])
def test_a_server_that_dies_mid_step_fails_the_run(tmp_path, api):
    out = tmp_path / "report.json"
    with Server() as s:
        load = subprocess.Popen(
            [bin_path("client", "bert_load"), f"--server={s.address}", f"--json_out={out}",
             "--concurrency=2,4", "--duration_s=4", "--warmup_s=0", "--lengths=fixed:8",
             f"--api={api}", "--timeout_ms=2000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        s.kill()
        stdout, stderr = load.communicate(timeout=60)
    assert load.returncode == 1, stdout + stderr
    assert "the server stopped answering during step c=2" in stderr
    report = json.loads(out.read_text())
    (step,) = report["steps"]  # the sweep stopped after it
    assert step["ok"] > 0 and step["errors"]
    if api == "stream":
        # The closed loop stopped once both streams had ended, and says when.
        assert 0 < step["stopped_early_s"] < 4
        assert "UNAVAILABLE" in step["stopped_why"]
        assert "every stream ended" in stdout


def test_invalid_requests_are_errors_not_crashes(server, tmp_path):
    # The tiny model has 1024 tokens: ids beyond are INVALID_ARGUMENT for every call.
    inputs = tmp_path / "bad.jsonl"
    inputs.write_text('{"input_word_ids": [101, 5000, 102]}\n')
    out = tmp_path / "report.json"
    r = bert_load(f"--server={server.address}", f"--input_file={inputs}", "--concurrency=1,2",
                  "--duration_s=0.3", "--warmup_s=0", f"--json_out={out}")
    assert r.returncode == 1  # no OK answer in the step
    assert "INVALID_ARGUMENT" in r.stdout
    assert "step c=1 had no OK answer; the sweep stops here" in r.stderr
    assert "c=2" not in r.stdout
    (step,) = json.loads(out.read_text())["steps"]
    # The server's own message says why, once per code: the id and the vocabulary.
    message = step["error_messages"]["INVALID_ARGUMENT"]
    assert "5000" in message
    assert f"INVALID_ARGUMENT: {message}" in r.stdout
    # No OK call was measured: its latency columns say so instead of printing 0.00.
    (row,) = [line for line in r.stdout.splitlines() if line.startswith("c=1 ")]
    assert row.split()[6:10] == ["-", "-", "-", "-"]


def test_rerank_api_drives_rerank_on_a_cross_encoder(server, tmp_path):
    """--api=rerank against a one-label classifier model: Rerank calls of a query and
    --inputs_per_request texts, their tokens the ranked pairs'; refused up front (exit 2) by a
    model without such a classifier."""
    model = classifier_model(tmp_path / "ce", labels=("LABEL_0",), problem_type=None)
    with Server(model_dir=model, vocab=TINY_VOCAB, metrics=True,
                extra=["--max_batch_tokens=2048"]) as ce:
        report, stdout = run_report(tmp_path, ce, "--api=rerank", "--concurrency=2",
                                    "--duration_s=0.8", "--warmup_s=0", "--lengths=fixed:10",
                                    "--inputs_per_request=4")
        text = ce.metrics_text()
    step = report["steps"][0]
    assert step["errors"] == {} and step["ok"] > 0
    assert report["run"]["api"] == "rerank" and "a query to rerank" in stdout
    assert report["workload"]["truncation"] == "TRUNCATION_UNSPECIFIED"  # the server's
    assert report["workload"]["seq_length"] == 0  # the classifier's
    assert report["workload"]["heads_sent"] is None  # no Embed options
    assert step["sequences_per_s"] == pytest.approx(4 * step["requests_per_s"])
    # A pair of two 8-word inputs: [CLS] 8 [SEP] 8 [SEP].
    assert step["tokens_per_s"] == pytest.approx(19 * step["sequences_per_s"])
    assert metric_value(text, "bert_requests_total", {"method": "Rerank", "code": "OK"}) \
        >= step["ok"]
    assert not metric_value(text, "bert_requests_total", {"method": "Embed", "code": "OK"})
    r = bert_load(f"--server={server.address}", "--api=rerank", "--duration_s=1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--api=rerank needs a cross-encoder (a model with a classifier of one label); the " \
        "served model has no classifier" in r.stderr
    r = bert_load(f"--server={server.address}", "--api=rerank", "--input_kind=tokens")
    assert r.returncode == 2 and "--input_kind=text" in r.stderr
    r = bert_load(f"--server={server.address}", "--api=rerank", "--heads=cls", "--dimensions=8")
    assert r.returncode == 2
    assert "--api=rerank: --heads, --dimensions apply to Embed calls only" in r.stderr


def test_logits_need_a_model_with_a_classifier(server):
    r = bert_load(f"--server={server.address}", "--heads=logits", "--duration_s=1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--heads=logits: the served model has no sequence-classification head" in r.stderr
    assert "c=8" not in r.stdout  # no step ran


def test_the_embedding_head_needs_a_model_that_names_one(server):
    # The tiny model has no sentence-transformers files (test_server_minilm runs it on one).
    r = bert_load(f"--server={server.address}", "--heads=embedding", "--duration_s=1")
    assert r.returncode == 2
    assert "head embedding" in r.stderr and "no modules.json" in r.stderr
    r = subprocess.run([bin_path("client", "bert_client"), f"--server={server.address}", "embed",
                        "--heads=embedding", "hello"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "no modules.json" in r.stderr and "ask for mean_pooled or cls" in r.stderr


def test_the_embedding_head_is_what_the_model_names(tmp_path):
    """A CLS-pooling, normalising model (the tiny model with sentence-transformers' files):
    bert_load sends HEAD_CLS with normalize and the model's max_seq_length."""
    model = sentence_transformers_model(tmp_path / "cls-model", "cls", max_seq=48)
    with Server(model_dir=model, vocab=TINY_VOCAB) as server:
        report, _ = run_report(tmp_path, server, "--heads=embedding", "--concurrency=1",
                               "--duration_s=0.5", "--warmup_s=0", "--lengths=fixed:60")
    workload = report["workload"]
    assert workload["heads"] == "embedding"
    assert workload["heads_sent"] == ["HEAD_CLS"]
    assert workload["normalize"] is True
    assert workload["seq_length"] == 48
    assert report["steps"][0]["errors"] == {}


def test_a_workload_over_the_server_limits_fails_before_sending(server):
    r = bert_load(f"--server={server.address}", "--lengths=fixed:600", "--duration_s=1")
    assert r.returncode == 2
    assert "sequence length 600" in r.stderr and "over the server's" in r.stderr
    r = bert_load(f"--server={server.address}", "--inputs_per_request=100000", "--duration_s=1")
    assert r.returncode == 2
    assert "--inputs_per_request=100000 is over the server's" in r.stderr


def test_the_report_is_written_after_every_step(server, tmp_path):
    out = tmp_path / "report.json"
    r = bert_load(f"--server={server.address}", f"--json_out={out}", "--concurrency=1,2",
                  "--duration_s=0.3", "--warmup_s=0", "--lengths=fixed:5", "--timeout_ms=1234")
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert len(report["steps"]) == 2
    # Enough to run it again.
    assert report["run"]["timeout_ms"] == 1234
    assert report["workload"]["lengths"] == "fixed:5" and report["workload"]["seed"] == 1


def test_a_metrics_address_that_does_not_answer_fails_before_the_first_step(server):
    r = bert_load(f"--server={server.address}", "--metrics=127.0.0.1:1", "--duration_s=30")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--metrics=127.0.0.1:1: " in r.stderr
    assert "c=8" not in r.stdout
    # The gRPC port by mistake: an answer, but not HTTP.
    r = bert_load(f"--server={server.address}", f"--metrics={server.address}",
                  "--duration_s=30")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no HTTP answer (is this the gRPC port? /metrics is served on the server's " \
        "--metrics_address)" in r.stderr, r.stderr


def test_help_lists_the_connection_flags():
    r = bert_load("--help", timeout=30)
    for flag in ("--server", "--tls", "--token_file", "--max_error_percent", "--concurrency"):
        assert flag in r.stdout + r.stderr, flag


def test_an_unwritable_report_fails_before_the_first_step(server):
    r = bert_load(f"--server={server.address}", "--json_out=/nonexistent/dir/r.json",
                  "--duration_s=30")
    assert r.returncode == 2
    assert "cannot write /nonexistent/dir/r.json" in r.stderr
    assert "c=8" not in r.stdout  # no step ran


@pytest.mark.parametrize("args, message", [
    (["--concurrency=0"], "--concurrency: bad value 0"),
    (["--rate=-3"], "--rate: bad value -3"),
    (["--rate=5", "--concurrency=2"], "give --concurrency"),
    (["--arrival=burst", "--rate=5"], "--arrival"),
    (["--lengths=fixed:1"], "lengths"),
    (["--heads=max_pooled"], '--heads: unknown head "max_pooled"'),
    (["--duration_s=0"], "--duration_s"),
    (["--rate=100000", "--duration_s=600", "--csv_out=/nonexistent/calls.csv"],
     "would take too much memory"),
    (["--input_file=/nonexistent.jsonl"], "cannot read /nonexistent.jsonl"),
    (["--input_kind=ids"], "--input_kind"),
    (["--api=bidi"], "--api"),
    (["extra"], "unexpected argument extra"),
    (["--pool_size=2000000"], "--pool_size"),
])
def test_bad_flags_exit_2_with_a_message(args, message):
    r = bert_load("--server=127.0.0.1:1", *args, timeout=30)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr


def test_unreachable_server_exits_1():
    r = bert_load("--server=127.0.0.1:1", "--duration_s=1", timeout=60)
    assert r.returncode == 1
    assert "cannot reach 127.0.0.1:1: UNAVAILABLE" in r.stderr


def test_a_long_fast_schedule_is_accepted_without_csv():
    # Without --csv_out no call is kept, so memory does not bound the schedule: the run gets
    # as far as connecting.
    r = bert_load("--server=127.0.0.1:1", "--rate=100000", "--duration_s=600", timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cannot reach 127.0.0.1:1: UNAVAILABLE" in r.stderr
