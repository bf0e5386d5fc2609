"""Write the student copy of the repository: every marked solution becomes a NotImplementedError.

In the source, the code a student writes sits between two markers that name its exercise
(tests/course.py registers every exercise, its points and its handout section):

        # BEGIN SOLUTION a4.gae
        ... reference code ...
        # END SOLUTION

The generator copies the repository (code, tests, README, handouts, notebooks, docs) to --out and
replaces each marked block (in minigpt/, rlhf/ and the notebooks' .py sources, from which the
notebooks are rebuilt) by one line at the same indentation,

        raise NotImplementedError("exercise a4.gae — see exercises/a4_ppo.md §3")

Docstrings, signatures and tests stay; the tests reach exercise code only through tests/adapters.py
and compare it with stored expected values (tests/_snapshots), so the same tests grade both copies.

    python tools/make_exercises.py --out ~/rlhf-course               # every assignment blanked
    python tools/make_exercises.py --out ~/rlhf-a3 --assignment a3   # a3 and later blanked, a1-a2 solved
    python tools/make_exercises.py --check                           # markers <-> register, nothing written
    cd ~/rlhf-course && python tools/grade.py                        # 0 of N points until you write code

exercises/INSTRUCTORS.md says how to grade a submission and package the autograder.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from minigpt.configurator import CommandParser, utf8_console  # noqa: E402
from minigpt.files import make_dir  # noqa: E402
from tests.course import ASSIGNMENTS, BY_ID, not_implemented_message  # noqa: E402  (needs ROOT on sys.path)

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
BEGIN_RE = re.compile(r"^# BEGIN SOLUTION(?:\s+(\S+))?$")
# what the student copy contains (relative to the repository root)
COPY = ["minigpt", "rlhf", "tests", "tools", "bench", "exercises", "notebooks", "docs", "README.md",
        "pyproject.toml", "requirements.txt", ".gitignore"]
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".git", ".ipynb_checkpoints", "student"}
SKIP_PATHS = (os.path.join("notebooks", "rendered"),)   # executed notebooks for GitHub readers: they show solutions
# instructors' tools that quote the reference solution line by line (the bug catalogue's `old` texts)
SKIP_FILES = (os.path.join("tools", "bug_catalogue.py"), os.path.join("tools", "mutants.py"))
SOURCE_DIRS = ("minigpt", "rlhf", "notebooks")  # where solution markers may live (notebooks: their .py sources)


def blank_solutions(text: str, name: str = "<string>", blank=lambda exercise_id: True) -> tuple[str, list[str]]:
    """Replace each BEGIN/END SOLUTION block of `text` (whose id `blank(id)` accepts) by a raise.

    Returns (new text, ids of the blocks found, blanked or not). Example:
        "def f():\\n    # BEGIN SOLUTION a2.masked_mean\\n    return 1\\n    # END SOLUTION\\n"
        -> 'def f():\\n    raise NotImplementedError("exercise a2.masked_mean — see exercises/a2_sft.md §6")\\n'
    A marker without its partner, without a registered id, or nested raises ValueError naming file:line.
    """
    out, found, inside, begin_line, drop = [], [], False, 0, False
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            m = BEGIN_RE.match(stripped)
            if inside:
                raise ValueError(f"{name}:{lineno}: nested '{BEGIN}' (the one at line {begin_line} is not closed)")
            if not m or not m.group(1):
                raise ValueError(f"{name}:{lineno}: '{BEGIN}' must name its exercise, e.g. '{BEGIN} a4.gae'")
            exercise_id = m.group(1)
            if exercise_id not in BY_ID:
                raise ValueError(f"{name}:{lineno}: exercise {exercise_id!r} is not registered in tests/course.py")
            inside, begin_line, drop = True, lineno, blank(exercise_id)
            found.append(exercise_id)
            if drop:
                indent = line[: len(line) - len(line.lstrip())]
                out.append(f'{indent}raise NotImplementedError("{not_implemented_message(exercise_id)}")\n')
            else:
                out.append(line)
        elif stripped == END:
            if not inside:
                raise ValueError(f"{name}:{lineno}: '{END}' without a '{BEGIN}'")
            inside = False
            if not drop:
                out.append(line)
        elif not inside or not drop:
            out.append(line)
    if inside:
        raise ValueError(f"{name}:{begin_line}: '{BEGIN}' is never closed")
    return "".join(out), found


def _files(root: str):
    for entry in COPY:
        path = os.path.join(root, entry)
        if os.path.isfile(path):
            yield entry
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for f in sorted(filenames):
                yield os.path.relpath(os.path.join(dirpath, f), root)


def write_notebooks(nb_dir: str) -> None:
    """Write each notebooks/NN_name.ipynb from its paired percent-format source NN_name.py (jupytext), without
    outputs: the student copy's notebooks show neither the solutions' code nor their outputs."""
    import jupytext
    import nbformat

    for f in sorted(os.listdir(nb_dir)):
        if f[:2].isdigit() and f.endswith(".py"):
            nb = jupytext.read(os.path.join(nb_dir, f))
            nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                           "language_info": {"name": "python"}}
            for i, cell in enumerate(nb.cells):
                cell.id = f"{f[:-3].replace('_', '-')}-{i:02d}"
            nbformat.write(nb, os.path.join(nb_dir, f[:-3] + ".ipynb"))


def blanked_ids(assignment: str | None) -> set[str]:
    """The exercises to blank: all, or `assignment` and every later one (earlier ones stay solved)."""
    order = list(ASSIGNMENTS)
    keep = order[order.index(assignment):] if assignment else order
    return {e for e in BY_ID if e.split(".")[0] in keep}


def make_student_copy(out_dir: str | None, root: str = ROOT, assignment: str | None = None) -> dict[str, list[str]]:
    """Copy the repository to out_dir (None: only check) with solutions blanked; {file: exercise ids}.

    Checks that every registered exercise has at least one marked block and every block is registered."""
    to_blank = blanked_ids(assignment)
    found: dict[str, list[str]] = {}
    out_abs = os.path.abspath(out_dir) if out_dir else None
    for rel in _files(root):
        if any(rel.startswith(p + os.sep) for p in SKIP_PATHS) or rel in SKIP_FILES:
            continue
        src = os.path.join(root, rel)
        if out_abs and (os.path.abspath(src) + os.sep).startswith(out_abs + os.sep):
            continue
        dst = os.path.join(out_abs, rel) if out_abs else None
        if rel.endswith(".py") and any(rel.startswith(d + os.sep) for d in SOURCE_DIRS):
            with open(src, encoding="utf-8") as f:
                text, ids = blank_solutions(f.read(), rel, blank=lambda i: i in to_blank)
            if ids:
                found[rel] = ids
            if dst:
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with open(dst, "w", encoding="utf-8") as f:
                    f.write(text)
                shutil.copymode(src, dst)
        elif dst:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
    if out_abs:  # the notebooks' "your turn" cells are blanked in their .py sources: rebuild every .ipynb
        write_notebooks(os.path.join(out_abs, "notebooks"))
    marked = {i for ids in found.values() for i in ids}
    missing = sorted(set(BY_ID) - marked)
    if missing:
        raise ValueError(f"registered in tests/course.py but marked nowhere: {', '.join(missing)}")
    return found


def main(argv=None):
    parser = CommandParser(prog="python tools/make_exercises.py",
                           description="Write the student copy: marked solutions become NotImplementedError.")
    parser.add_argument("--out", help="where to write the student copy (a new or empty directory)")
    parser.add_argument("--assignment", choices=list(ASSIGNMENTS),
                        help="blank this assignment and the later ones; the earlier ones keep their solutions")
    parser.add_argument("--check", action="store_true", help="only check markers against tests/course.py")
    args = parser.parse_args(argv)
    if not args.check and not args.out:
        parser.error("give --out DIR (or --check)")
    if args.out and os.path.isdir(args.out) and os.listdir(args.out):
        raise SystemExit(f"error: {args.out} is not empty; choose a new directory (nothing was written)")
    if args.out and not args.check:                        # --check writes nothing
        make_dir(args.out, "--out")
    try:
        found = make_student_copy(None if args.check else args.out, assignment=args.assignment)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    to_blank = blanked_ids(args.assignment)
    n_blocks = sum(len(v) for v in found.values())
    n_blank = sum(1 for v in found.values() for i in v if i in to_blank)
    print(f"{len(BY_ID)} exercises in {n_blocks} marked blocks over {len(found)} files"
          + ("" if args.check else f"; {n_blank} blocks blanked"))
    if not args.check:
        print(f"student copy written to {args.out}; start with README.md and {ASSIGNMENTS[args.assignment or 'a1'][0]}")
    return found


if __name__ == "__main__":
    utf8_console()
    main(sys.argv[1:])
