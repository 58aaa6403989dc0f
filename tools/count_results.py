#!/usr/bin/env python3
"""Prints 'N passed, N failed, N skipped' from the JUnit XML files in a directory (or one file).

Counts test cases (gtest cases and pytest tests), not test targets. A directory with no
results counts as one failure: a run that executed nothing must not look green.
Exits non-zero when anything failed.
"""
import pathlib
import sys
import xml.etree.ElementTree as ET


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".test-results")
    passed = failed = skipped = 0
    for path in [root] if root.is_file() else sorted(root.glob("*.xml")):
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
    if passed + failed + skipped == 0:
        failed = 1
        print("count_results: no test results found", file=sys.stderr)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
