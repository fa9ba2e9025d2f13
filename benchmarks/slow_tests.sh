#!/usr/bin/env bash
# Every test marked slow (the default suite leaves them out to stay under ~15 minutes on 2
# cores): long resume, multi-process, memory and packaging runs, each with its outcome and time
# in benchmarks/results/slow_tests.json.
#
#   bash benchmarks/slow_tests.sh                  # about 35 minutes on 2 idle CPU cores (15 of
#                                                  # them the Pallas kernels' interpret-mode matrix)
#   PYTHON=/path/to/python bash benchmarks/slow_tests.sh -x   # extra arguments go to pytest
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
xml=$(mktemp --suffix=.xml)
trap 'rm -f "$xml"' EXIT
"$PYTHON" -m pytest tests -m slow -p no:cacheprovider --junitxml="$xml" -q "$@"
status=$?
"$PYTHON" - "$xml" <<'PY'
import json, pathlib, sys
import xml.etree.ElementTree as ET
tests = []
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
  outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
  tests.append({"test": f"{case.get('classname').split('.')[-1]}::{case.get('name')}",
                "outcome": {"failure": "failed"}.get(outcome, outcome),
                "seconds": round(float(case.get("time", 0)), 1)})
out = pathlib.Path("benchmarks/results/slow_tests.json")
out.write_text(json.dumps({"command": "bash benchmarks/slow_tests.sh", "tests": tests},
                          indent=1) + "\n")
print(f"{sum(t['outcome'] == 'passed' for t in tests)}/{len(tests)} passed; {out}")
PY
exit $status
