"""Grade the course's exercises: run every graded test, exercise by exercise, and print the points.

    python tools/grade.py                          # every assignment: a table and the total
    python tools/grade.py --assignment a4          # one assignment
    python tools/grade.py --exercise a4.gae -v     # one exercise, with the failing tests' messages
    python tools/grade.py --json results.json      # also write Gradescope's results.json format
    python tools/grade.py --e2e                    # also the student-scale end-to-end check (small preset)

    from tools.grade import check                  # in a notebook: grade a function you wrote there
    check("a4.gae", my_gae)

An exercise earns its points when all its graded tests (marked @pytest.mark.exercise("a4.gae")) pass.
A test that needs another, unwritten exercise is "blocked" (tests/conftest.py) and earns nothing; the
table names the exercise to write first. The register of exercises and points is tests/course.py.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
from contextlib import redirect_stdout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest  # noqa: E402

from minigpt.configurator import CommandParser, utf8_console  # noqa: E402
from minigpt.files import atomic_write_text, check_output_file  # noqa: E402
from tests.course import ASSIGNMENTS, BY_ID, EXERCISES, find_blank  # noqa: E402
from tools.e2e import run_e2e  # noqa: E402


class _Collector:
    """A pytest plugin: which exercise each graded test belongs to, and how each test ended."""

    def __init__(self, wanted: set[str]):
        self.wanted = wanted
        self.exercise_of: dict[str, str] = {}          # nodeid -> exercise id
        self.outcome: dict[str, tuple[str, str]] = {}  # nodeid -> (passed | failed | blocked, message)

    def pytest_collection_modifyitems(self, session, config, items):
        keep, drop = [], []
        for item in items:
            ids = [m.args[0] for m in item.iter_markers("exercise")]
            if ids and ids[0] in self.wanted:
                self.exercise_of[item.nodeid] = ids[0]
                keep.append(item)
            else:
                drop.append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
        items[:] = keep

    def pytest_runtest_logreport(self, report):
        if report.nodeid not in self.exercise_of:
            return
        previous = self.outcome.get(report.nodeid, ("passed", ""))
        if previous[0] != "passed":
            return  # the first problem of a test (setup, call or teardown) is the one to show
        if report.failed:
            self.outcome[report.nodeid] = ("failed", _message(report))
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.outcome[report.nodeid] = ("blocked" if "blocked by" in reason else "skipped", reason)
        elif report.when == "call":
            self.outcome[report.nodeid] = ("passed", "")


def _message(report) -> str:
    """The assertion message of a failure, without the traceback: what a student should read."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text.strip()


def run_tests(wanted: set[str], verbose: bool = False) -> dict[str, list[tuple[str, str, str]]]:
    """{exercise id: [(test name, outcome, message)]} from one pytest run over the graded tests."""
    collector = _Collector(wanted)
    assignments = sorted({e.split(".")[0] for e in wanted})
    files = [os.path.join(ROOT, "tests", f) for f in sorted(os.listdir(os.path.join(ROOT, "tests")))
             if f.startswith("test_a") and f.split("_")[1] in assignments]   # graded tests: tests/test_a<N>_*.py
    args = [*files, "-m", "exercise", "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=", "--tb=no"]
    out = io.StringIO()
    with redirect_stdout(out):
        code = pytest.main(args, plugins=[collector])
    if code not in (0, 1, 5):  # 0 all passed, 1 some failed, 5 nothing collected
        print(out.getvalue(), file=sys.stderr)
        raise SystemExit(f"error: pytest stopped with exit code {code} (see above)")
    results: dict[str, list[tuple[str, str, str]]] = {e: [] for e in wanted}
    for nodeid, exercise_id in collector.exercise_of.items():
        outcome, msg = collector.outcome.get(nodeid, ("failed", "did not run"))
        results[exercise_id].append((nodeid.split("::", 1)[-1], outcome, msg))
    if verbose:
        print(out.getvalue())
    return results


def summarise(results) -> list[dict]:
    """One row per exercise: points earned (all or nothing), tests passed, and what stopped the rest."""
    rows = []
    for e in EXERCISES:
        if e.id not in results:
            continue
        tests = results[e.id]
        n_pass = sum(1 for _, o, _ in tests if o == "passed")
        ok = bool(tests) and n_pass == len(tests)
        blocked = sorted({m.split("blocked by exercise ")[1].split(":")[0] for _, o, m in tests if o == "blocked"})
        failed = [(name, m) for name, o, m in tests if o == "failed"]
        if ok:
            status = "ok"
        elif not tests:
            status = "no graded tests found"
        elif failed and all(find_blank(m) == e.id for _, m in failed):
            status = f"not written yet ({e.pointer})"
        elif failed:
            status = f"{len(failed)} failing: {failed[0][0]}"
        elif blocked:
            status = "blocked by " + ", ".join(blocked)
        else:                                      # skipped for another reason (e.g. an optional package)
            status = "skipped"
        rows.append({"exercise": e.id, "title": e.title, "points": e.points, "earned": e.points if ok else 0,
                     "passed": n_pass, "tests": len(tests), "status": status,
                     "output": "\n".join(f"{name}: {o}{': ' + m if m else ''}" for name, o, m in tests)})
    return rows


def _target(exercise_id: str) -> tuple[object, str]:
    """(owner, attribute name) of the code an exercise replaces: tests/course.py's `where`, e.g.
    "rlhf/losses.py::gae" -> (module rlhf.losses, "gae"); "minigpt/model.py::Block.forward" -> (Block, "forward")."""
    where = BY_ID[exercise_id].where
    path, _, qualname = where.partition("::")
    if "," in qualname or not qualname:
        raise ValueError(f"{exercise_id} spans several functions ({where}); grade it with tools/grade.py")
    owner = importlib.import_module(path[:-3].replace("/", "."))
    *outer, name = qualname.split(".")
    for part in outer:
        owner = getattr(owner, part)
    return owner, name


def install_function(owner, name: str, fn) -> list[tuple[object, str, object]]:
    """Put fn in place of owner.name, and of every module's own reference to the same function (rlhf.ppo did
    `from rlhf.losses import gae`: its `gae` is replaced too), so the code run next uses fn.
    Returns [(owner or module, name, the original)] for restore_functions."""
    original = getattr(owner, name)
    places = [(owner, name, original)] + [(m, name, original) for m in list(sys.modules.values())
                                          if m is not owner and getattr(m, name, None) is original]
    for place, attr, _ in places:
        setattr(place, attr, fn)
    return places


def restore_functions(places) -> None:
    for place, attr, original in places:
        setattr(place, attr, original)


def check(exercise_id: str, fn, install: bool = True) -> None:
    """Grade `fn`, written in a notebook, on exercise `exercise_id`'s graded tests; print pass or fail.

    The graded tests run with `fn` in place of the project's function (tests/course.py says which one; fn
    takes the same arguments). With install=True a passing `fn` then stays in place for the rest of the
    session, so what the notebook runs next (a training stage) runs on your code. Prints one line starting
    with \u2713 (pass) or \u2717 (anything else: not written yet, failing, or blocked, with the first message).
    """
    if exercise_id not in BY_ID:
        raise ValueError(f"no exercise {exercise_id!r}; tests/course.py lists them")
    owner, name = _target(exercise_id)
    places = install_function(owner, name, fn)
    try:
        tests = run_tests({exercise_id})[exercise_id]
    finally:
        restore_functions(places)
    row = summarise({exercise_id: tests})[0]      # the grader's own verdict: ok, not written, failing, blocked
    if row["status"] == "ok":
        print(f"\u2713 {exercise_id}: all {row['tests']} graded tests pass")
        if install:
            install_function(owner, name, fn)
        return
    pointer = BY_ID[exercise_id].pointer
    print(f"\u2717 {exercise_id}: {row['status']}" + ("" if pointer in row["status"] else f" ({pointer})"))
    failed = [(test, msg) for test, outcome, msg in tests if outcome == "failed" and find_blank(msg) != exercise_id]
    if failed:
        print(f"  {failed[0][0]}:\n    " + failed[0][1].replace("\n", "\n    "))


def print_table(rows) -> None:
    width = max(len(r["exercise"]) for r in rows) if rows else 8
    print(f"{'exercise':<{width}}  {'points':>6}  {'tests':>5}  status")
    current = None
    for r in rows:
        a = r["exercise"].split(".")[0]
        if a != current:
            current = a
            sub = [x for x in rows if x["exercise"].startswith(a + ".")]
            print(f"-- {a}: {ASSIGNMENTS[a][1]} ({sum(x['earned'] for x in sub)}/{sum(x['points'] for x in sub)})")
        print(f"{r['exercise']:<{width}}  {r['earned']:>2}/{r['points']:<3}  {r['passed']:>2}/{r['tests']:<2}  {r['status']}")
    earned, total = sum(r["earned"] for r in rows), sum(r["points"] for r in rows)
    print(f"total: {earned} / {total} points ({sum(r['earned'] == r['points'] for r in rows)} of {len(rows)} exercises)")


def gradescope(rows, e2e: dict | None = None) -> dict:
    """Gradescope's autograder results.json: {"score", "tests": [{"name", "score", "max_score", "output"}]}."""
    tests = [{"name": f"{r['exercise']}: {r['title']}", "score": r["earned"], "max_score": r["points"],
              "output": f"{r['status']}\n{r['output']}", "visibility": "visible"} for r in rows]
    if e2e is not None:
        tests += [{"name": f"e2e: {c['check']}", "score": 0, "max_score": 0,
                   "output": ("ok: " if c["ok"] else "FAIL: ") + c["detail"], "visibility": "visible"}
                  for c in e2e["checks"]]
    return {"score": sum(r["earned"] for r in rows), "tests": tests}


def write_json(path: str, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


def main(argv=None) -> int:
    parser = CommandParser(prog="python tools/grade.py",
                           description="Run the graded tests exercise by exercise and print the points.")
    parser.add_argument("--assignment", choices=list(ASSIGNMENTS), help="grade only this assignment")
    parser.add_argument("--exercise", help="grade only this exercise (e.g. a4.gae)")
    parser.add_argument("--json", help="also write Gradescope's results.json format here")
    parser.add_argument("--e2e", action="store_true",
                        help="also run the small preset end to end and check each stage did its job (~2 min)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's output and each test's message")
    args = parser.parse_args(argv)
    if args.json:
        check_output_file(args.json, "--json")        # before grading, not a traceback after it
    wanted = {e.id for e in EXERCISES if (args.assignment is None or e.assignment == args.assignment)
              and (args.exercise is None or e.id == args.exercise)}
    if not wanted and args.exercise in BY_ID:
        raise SystemExit(f"error: --exercise {args.exercise} is in assignment {BY_ID[args.exercise].assignment}, "
                         f"not --assignment {args.assignment}; give one of the two")
    if not wanted:
        raise SystemExit(f"error: no exercise {args.exercise!r}; tests/course.py lists them")
    rows = summarise(run_tests(wanted, verbose=args.verbose))
    print_table(rows)
    if args.verbose:
        for r in rows:
            if r["earned"] < r["points"]:
                print(f"\n== {r['exercise']} ({r['status']})\n{r['output']}")
    e2e = None
    if args.e2e:
        e2e = run_e2e()
    if args.json:
        write_json(args.json, gradescope(rows, e2e))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    utf8_console()
    sys.exit(main(sys.argv[1:]))
