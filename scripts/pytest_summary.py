"""Runs pytest and writes what it found as JSON, for the device check (scripts/device_check.sh).

    python scripts/pytest_summary.py OUT.json -- PYTEST_ARGS...

With ``--junitxml FILE`` among the arguments the JSON holds the counts and each failure's test and
first message line (read from that report); with ``--collect-only`` it holds the collected test ids.
Exits with pytest's exit code, so the step's status is the tests' status.
"""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET


def junit_summary(path: str) -> dict:
    counts = dict(tests=0, failures=0, errors=0, skipped=0)
    failed = []
    for case in ET.parse(path).getroot().iter("testcase"):
        counts["tests"] += 1
        for kind, key in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            if (node := case.find(kind)) is not None:
                counts[key] += 1
                if kind != "skipped":
                    message = (node.get("message") or "").strip().splitlines()
                    failed.append(dict(test=f"{case.get('classname')}::{case.get('name')}", kind=kind,
                                       message=message[0][:300] if message else ""))
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return dict(**counts, failed=failed)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        raise SystemExit(f"usage: {__doc__.splitlines()[2].strip()}")
    out, args = argv[0], argv[2:]
    proc = subprocess.run([sys.executable, "-m", "pytest", *args], capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    summary: dict = dict(args=args, exit_code=proc.returncode)
    if "--junitxml" in args:
        try:
            summary.update(junit_summary(args[args.index("--junitxml") + 1]))
        except (OSError, ET.ParseError) as err:  # pytest died before writing it: the exit code says so
            summary["report_error"] = f"{type(err).__name__}: {err}"
    if "--collect-only" in args:
        summary["collected"] = [line.strip() for line in proc.stdout.splitlines() if "::" in line]
    with open(out, "w") as f:
        json.dump(summary, f, indent=1)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
