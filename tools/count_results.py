#!/usr/bin/env python3
"""Prints 'N passed, N failed, N skipped' from the JUnit XML files in directories or files.

    count_results.py [PATH ...]     # default .test-results; several paths add up

Counts test cases (gtest cases and pytest tests), not test targets. A path with no results
counts as one failure: a run that executed nothing must not look green.
Exits non-zero when anything failed.
"""
import pathlib
import sys
import xml.etree.ElementTree as ET


def main() -> int:
    roots = [pathlib.Path(arg) for arg in sys.argv[1:]] or [pathlib.Path(".test-results")]
    passed = failed = skipped = 0
    files = []
    for root in roots:
        found = [root] if root.is_file() else sorted(root.glob("*.xml"))
        if not found:
            failed += 1
            print(f"count_results: no test results in {root}", file=sys.stderr)
        files += found
    for path in files:
        try:
            tree = ET.parse(path)
        except ET.ParseError:
            print(f"count_results: unreadable {path}", file=sys.stderr)
            failed += 1
            continue
        for case in tree.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
                print(f"FAILED: {path.name}: {case.get('classname')}.{case.get('name')}")
            elif case.find("skipped") is not None or case.get("status") == "notrun" \
                    or case.get("result") == "skipped":
                skipped += 1
            else:
                passed += 1
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
