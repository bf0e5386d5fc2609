"""Are realistic student bugs caught? Apply each bug of tools/bug_catalogue.py to the solution, one at a
time in a scratch copy, and run that exercise's graded tests.

    python tools/mutants.py                        # the whole catalogue: a table and the catch rate
    python tools/mutants.py --exercise a4.gae      # the bugs of one exercise
    python tools/mutants.py --jobs 2               # two bugs at a time

A bug is caught when at least one graded test of its exercise fails; the table names the first one.
A bug whose `old` text is no longer in the file is reported as stale (update the catalogue).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from minigpt.configurator import CommandParser, bounded, utf8_console  # noqa: E402
from minigpt.files import atomic_write_text, check_output_file  # noqa: E402
from tools.bug_catalogue import BUGS  # noqa: E402

COPY = ("minigpt", "rlhf", "tests", "tools", "pyproject.toml")


def scratch_copy() -> str:
    d = tempfile.mkdtemp(prefix="mutants-")
    for entry in COPY:
        src = os.path.join(ROOT, entry)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(d, entry), ignore=shutil.ignore_patterns("__pycache__", "_student*"))
        else:
            shutil.copy2(src, os.path.join(d, entry))
    return d


def run_bug(bug) -> dict:
    """Apply one bug in its own scratch copy, grade its exercise, return {caught, by, detail}."""
    d = scratch_copy()
    try:
        path = os.path.join(d, bug.file)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if text.count(bug.old) != 1:
            return {"caught": None, "by": "", "detail": f"stale: the bug's text occurs {text.count(bug.old)} times"}
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace(bug.old, bug.new))
        out = os.path.join(d, "results.json")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        r = subprocess.run([sys.executable, "tools/grade.py", "--exercise", bug.exercise, "--json", out],
                           cwd=d, env=env, capture_output=True, encoding="utf-8", timeout=600)
        if not os.path.exists(out):
            return {"caught": True, "by": "(the grader itself failed)", "detail": (r.stderr or r.stdout)[-300:]}
        with open(out, encoding="utf-8") as f:
            test = json.load(f)["tests"][0]
        caught = test["score"] < test["max_score"]
        failing = [line for line in test["output"].splitlines()[1:] if ": failed" in line or ": blocked" in line]
        by = failing[0].split(":")[0] if failing else ""
        detail = failing[0].split(": failed: ", 1)[-1][:160] if failing else ""
        return {"caught": caught, "by": by, "detail": detail}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main(argv=None) -> int:
    parser = CommandParser(prog="python tools/mutants.py",
                           description="Apply each catalogued student bug and check the graded tests catch it.")
    parser.add_argument("--exercise", help="only the bugs of this exercise")
    parser.add_argument("--jobs", type=bounded(int, ">= 1"), default=1, help="bugs checked in parallel")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.json:
        check_output_file(args.json, "--json")        # before the bugs run, not a traceback after them
    bugs = [b for b in BUGS if args.exercise is None or b.exercise == args.exercise]
    if not bugs:
        raise SystemExit(f"error: no catalogued bug for {args.exercise!r}")
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(run_bug, bugs))
    print(f"{'exercise':<22} {'bug':<58} caught by")
    for bug, r in zip(bugs, results):
        mark = "STALE" if r["caught"] is None else (r["by"] if r["caught"] else "NOT CAUGHT")
        print(f"{bug.exercise:<22} {bug.name[:58]:<58} {mark}")
    valid = [r for r in results if r["caught"] is not None]
    caught = sum(1 for r in valid if r["caught"])
    exercises = {b.exercise for b in bugs}
    print(f"caught {caught} of {len(valid)} bugs ({caught / max(len(valid), 1):.0%}) over {len(exercises)} exercises"
          + (f"; {len(results) - len(valid)} stale" if len(valid) < len(results) else ""))
    if args.json:
        atomic_write_text(args.json, json.dumps([{"exercise": b.exercise, "bug": b.name, **r}
                                                 for b, r in zip(bugs, results)], indent=2))
    return 0 if caught == len(valid) == len(results) else 1


if __name__ == "__main__":
    utf8_console()
    sys.exit(main(sys.argv[1:]))
