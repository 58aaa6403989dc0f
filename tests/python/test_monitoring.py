"""deploy/prometheus/bert-server-alerts.yml: it loads in Prometheus (promtool check rules),
each alert fires when it should and not otherwise (promtool's unit tests in
tests/data/prometheus/bert-server-alerts_test.yml), those tests fail when any threshold of the
rules is changed or any `for` dropped, and every metric and label the rules read is one that
bert_server exports, so that a renamed metric cannot silently disarm an alert.
promtool comes from tools/setup.sh --tests (into .venv/bin)."""
import os
import re
import subprocess
import sys

import grpc
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from repo_paths import REPO  # noqa: E402
from server_harness import Server, stubs  # noqa: E402

RULES = REPO / "deploy" / "prometheus" / "bert-server-alerts.yml"
RULE_TESTS = REPO / "tests" / "data" / "prometheus" / "bert-server-alerts_test.yml"
PROMTOOL = REPO / ".venv" / "bin" / "promtool"


def promtool(*args):
    assert PROMTOOL.exists(), f"{PROMTOOL} missing: run tools/setup.sh --tests"
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=120)


def load_rules(path=RULES):
    return [rule for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def test_the_rules_load_in_prometheus():
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in r.stdout, r.stdout


def test_each_alert_fires_when_it_should():
    r = promtool("test", "rules", str(RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    # Every alert of the file has a case.
    alerts = {rule["alert"] for rule in load_rules()}
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert alerts == tested, alerts ^ tested


def mutants(rule):
    """(what, mutated rule) for each change the unit tests must notice: no `for`; each
    comparison's threshold ten times higher and lower (> 0 becomes >= 0, == N becomes != N)."""
    if "for" in rule:
        yield "without its for", {k: v for k, v in rule.items() if k != "for"}
    expr = rule["expr"]
    for m in re.finditer(r"(>|==)\s*([0-9.]+)", expr):
        op, number = m.group(1), float(m.group(2))
        if op == "==":
            changes = [f"!= {m.group(2)}"]
        elif number == 0:
            changes = [">= 0"]
        else:
            changes = [f"> {number * 10:g}", f"> {number / 10:g}"]
        for change in changes:
            yield (f"{m.group(0)} -> {change}",
                   dict(rule, expr=expr[:m.start()] + change + expr[m.end():]))


def test_the_unit_tests_notice_every_changed_threshold_and_dropped_for(tmp_path):
    rules = load_rules()
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["rule_files"] = ["rules.yml"]
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))

    def passes(with_rules):
        (tmp_path / "rules.yml").write_text(
            yaml.safe_dump({"groups": [{"name": "bert-server", "rules": with_rules}]}))
        return promtool("test", "rules", str(tmp_path / "tests.yml")).returncode == 0

    # Control: the rules as they are, written the same way, pass (so a mutant's failure is the
    # mutation's doing, not the copy's).
    assert passes(rules)
    tried, survivors = 0, []
    for i, rule in enumerate(rules):
        for what, mutant in mutants(rule):
            tried += 1
            if passes(rules[:i] + [mutant] + rules[i + 1:]):
                survivors.append(f"{rule['alert']}: {what}")
    assert tried >= 2 * len(rules), tried
    assert not survivors, survivors


def selectors(expr):
    """(metric, {label: (op, value)}) for each metric selector of a PromQL expression."""
    found = []
    for m in re.finditer(r"\b(bert_[a-z_]+|process_[a-z_]+)(\{([^}]*)\})?", expr):
        labels = {k: (op, v) for k, op, v in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"',
                                                       m.group(3) or "")}
        found.append((m.group(1), labels))
    return found


def exported(text):
    """{metric: [label dicts of its samples]}, histogram samples under their _bucket etc. names."""
    samples = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
        if m and not line.startswith("#"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
            samples.setdefault(m.group(1), []).append(labels)
    return samples


def test_the_rules_read_only_what_the_server_exports():
    pb2, _ = stubs()
    # A fallback injected on word id 7, so that bert_engine_fallbacks_total has a series (the CPU
    # engine has no path of its own to fall back from).
    with Server(metrics=True, extra=["--debug_engine_fault_word_id=7",
                                     "--debug_engine_fault=fallback"]) as server:
        server.stub().Embed(pb2.EmbedRequest(
            inputs=[pb2.Input(tokens=pb2.TokenInput(input_word_ids=[101, 7, 102]))]), timeout=30)
        samples = exported(server.metrics_text())
    used = [s for rule in load_rules() for s in selectors(rule["expr"])]
    assert {metric for metric, _ in used} == {
        "bert_requests_total", "bert_engine_batches_total", "bert_request_latency_seconds_bucket",
        "bert_request_latency_seconds_count", "bert_engine_fallbacks_total",
        "process_start_time_seconds", "bert_serving", "bert_answers_abandoned_total"}, used
    codes = {c.name for c in grpc.StatusCode}
    for metric, labels in used:
        assert metric in samples, f"the rules read {metric}, which the server does not export"
        for key, (op, value) in labels.items():
            assert any(key in s for s in samples[metric]), f"{metric} has no label {key}"
            if key == "code":  # written once a call ends with it: a gRPC code's name
                assert set(value.split("|")) <= codes, (metric, value)
            elif op == "=":  # the server writes these from the start (le: a bucket bound)
                assert any(s.get(key) == value for s in samples[metric]), (metric, key, value)
