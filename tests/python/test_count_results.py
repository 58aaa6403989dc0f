"""tools/count_results.py: the closing 'N passed, N failed, N skipped' line of the test
commands, over JUnit XML from gtest and pytest, from one or several paths."""
import subprocess
import sys

from repo_paths import REPO

SCRIPT = str(REPO / "tools" / "count_results.py")

GTEST_XML = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="3"><testsuite name="S" tests="3">
  <testcase name="a" status="run" result="completed" classname="S"/>
  <testcase name="b" status="run" result="completed" classname="S">
    <failure message="boom"/></testcase>
  <testcase name="c" status="run" result="skipped" classname="S"><skipped/></testcase>
</testsuite></testsuites>
"""
PYTEST_XML = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="2">
  <testcase classname="t" name="x" time="0.1"/>
  <testcase classname="t" name="y" time="0.1"/>
</testsuite></testsuites>
"""


def run(*paths):
    proc = subprocess.run([sys.executable, SCRIPT, *map(str, paths)], capture_output=True,
                          text=True)
    return proc.returncode, proc.stdout.strip().splitlines()[-1]


def test_counts_cases_across_paths(tmp_path):
    plain, sanitized = tmp_path / "plain", tmp_path / "sanitized"
    plain.mkdir()
    sanitized.mkdir()
    (plain / "gtest.xml").write_text(GTEST_XML)
    (sanitized / "pytest.xml").write_text(PYTEST_XML)
    assert run(sanitized) == (0, "2 passed, 0 failed, 0 skipped")
    assert run(plain) == (1, "1 passed, 1 failed, 1 skipped")
    assert run(plain, sanitized) == (1, "3 passed, 1 failed, 1 skipped")


def test_a_path_without_results_is_a_failure(tmp_path):
    ran, empty = tmp_path / "ran", tmp_path / "empty"
    ran.mkdir()
    empty.mkdir()
    (ran / "pytest.xml").write_text(PYTEST_XML)
    assert run(ran, empty) == (1, "2 passed, 1 failed, 0 skipped")
    assert run(tmp_path / "missing") == (1, "0 passed, 1 failed, 0 skipped")


def test_unreadable_xml_is_a_failure(tmp_path):
    (tmp_path / "broken.xml").write_text("<testsuites><testcase")
    assert run(tmp_path) == (1, "0 passed, 1 failed, 0 skipped")
