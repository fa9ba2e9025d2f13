#!/usr/bin/env bash
# The reliability, resume, multi-process and scan-fallback tests of issues 7 and 12, the slow ones
# included (SIGKILL at random steps and restart; SIGTERM, then SIGINT, and resume; auto's Pallas
# check seeing a broken kernel), with each test's outcome and time in
# benchmarks/results/reliability.json and reliability.md.
#
#   bash benchmarks/reliability.sh                 # about 12 minutes on 2 idle CPU cores
#   PYTHON=/path/to/python bash benchmarks/reliability.sh -x    # extra arguments go to pytest
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
out=benchmarks/results
mkdir -p "$out"
xml=$(mktemp --suffix=.xml)
trap 'rm -f "$xml"' EXIT

# The last -m wins over pyproject's "not slow": every test of these files runs.
"$PYTHON" -m pytest tests/test_reliability.py tests/test_train_resume.py tests/test_distributed.py \
    tests/test_scan_auto.py \
    -m "slow or not slow" \
    -p no:cacheprovider -o junit_logging=system-out --junitxml="$xml" -q "$@"
status=$?

"$PYTHON" - "$xml" "$out" <<'EOF'
import datetime, json, pathlib, platform, re, sys
import xml.etree.ElementTree as ET

import jax

xml, out = sys.argv[1], pathlib.Path(sys.argv[2])
tests = []
for case in ET.parse(xml).getroot().iter("testcase"):
  outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
  text = (case.findtext("system-out") or "")
  tests.append({"test": f"{case.get('classname').split('.')[-1]}::{case.get('name')}",
                "outcome": {"failure": "failed"}.get(outcome, outcome),
                "seconds": round(float(case.get("time", 0)), 1),
                "notes": re.findall(r"^seed \d+: (?:killed|stopped) .*$", text, re.M)})
summary = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "command": "bash benchmarks/reliability.sh", "python": platform.python_version(),
           "jax": jax.__version__, "cpu_count": __import__("os").cpu_count(),
           "passed": sum(t["outcome"] == "passed" for t in tests), "total": len(tests),
           "tests": tests}
(out / "reliability.json").write_text(json.dumps(summary, indent=2) + "\n")
rows = ["| test | outcome | seconds | notes |", "| --- | --- | ---: | --- |"]
rows += [f"| `{t['test']}` | {t['outcome']} | {t['seconds']} | {'; '.join(t['notes'])} |"
         for t in tests]
(out / "reliability.md").write_text(
    f"Reliability tests ({summary['date']}, jax {summary['jax']}, "
    f"{summary['passed']}/{summary['total']} passed): `bash benchmarks/reliability.sh`\n\n"
    + "\n".join(rows) + "\n")
print(f"{summary['passed']}/{summary['total']} passed; wrote {out}/reliability.json and .md")
EOF
exit $status
