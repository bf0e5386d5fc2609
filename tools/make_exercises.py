"""Write the student copy of the repository: every solution block becomes `raise NotImplementedError`.

In the source, the code a student should write sits between two marker comments:

        # BEGIN SOLUTION
        ... reference code ...
        # END SOLUTION

The generator copies the repository (minigpt/, rlhf/, tests/, tools/, pyproject.toml, ...) to --out
and replaces each marked block with one line at the same indentation,
`raise NotImplementedError("exercise: <function name>")`. Docstrings, signatures and the tests stay, and
tests reach the code only through tests/adapters.py, so the same tests grade both copies.

    python tools/make_exercises.py --out exercises/student      # write the copy
    python tools/make_exercises.py --check                      # only verify the markers are well formed
    cd exercises/student && python -m pytest tests/test_losses.py -k gae    # grade one exercise

exercises/README.md lists every exercise with its grading command.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what the student copy contains (relative to the repository root)
COPY = ["minigpt", "rlhf", "tests", "tools", "bench", "pyproject.toml", "requirements.txt"]
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".git"}
DEF_RE = re.compile(r"^\s*(?:async\s+)?def\s+(\w+)|^\s*class\s+(\w+)")


def blank_solutions(text: str, name: str = "<string>") -> tuple[str, int]:
    """Replace each BEGIN/END SOLUTION block of `text` by a raise; returns (new text, number of blocks).

    Example: "def f():\\n    # BEGIN SOLUTION\\n    return 1\\n    # END SOLUTION\\n"
          → "def f():\\n    raise NotImplementedError(\\"exercise: f\\")\\n", 1
    A marker without its partner raises ValueError naming the file and line.
    """
    out, n_blocks, inside, begin_line, where = [], 0, False, 0, "?"
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if not inside:
            m = DEF_RE.match(line)
            if m:
                where = m.group(1) or m.group(2)
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{name}:{lineno}: nested '{BEGIN}' (the one at line {begin_line} is not closed)")
            inside, begin_line = True, lineno
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("exercise: {where}")\n')
            n_blocks += 1
        elif stripped == END:
            if not inside:
                raise ValueError(f"{name}:{lineno}: '{END}' without a '{BEGIN}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{name}:{begin_line}: '{BEGIN}' is never closed")
    return "".join(out), n_blocks


def _python_files(root: str):
    for entry in COPY:
        path = os.path.join(root, entry)
        if os.path.isfile(path):
            yield entry
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for f in sorted(filenames):
                yield os.path.relpath(os.path.join(dirpath, f), root)


def make_student_copy(out_dir: str, root: str = ROOT, check_only: bool = False) -> dict[str, int]:
    """Copy the repository to out_dir with solutions blanked; returns {file: number of exercises}."""
    counts = {}
    out_dir = os.path.abspath(out_dir)
    for rel in _python_files(root):
        src = os.path.join(root, rel)
        if src.startswith(out_dir + os.sep):
            continue
        dst = os.path.join(out_dir, rel)
        if rel.endswith(".py") and os.path.abspath(src) != os.path.abspath(__file__):
            with open(src, encoding="utf-8") as f:
                text, n = blank_solutions(f.read(), rel)
            if n:
                counts[rel] = n
            if check_only:
                continue
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "w", encoding="utf-8") as f:
                f.write(text)
        elif not check_only:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "exercises", "student"),
                        help="where to write the student copy (default: exercises/student)")
    parser.add_argument("--check", action="store_true", help="only check the markers; write nothing")
    args = parser.parse_args(argv)
    try:
        counts = make_student_copy(args.out, check_only=args.check)
    except ValueError as e:
        raise SystemExit(f"make_exercises: {e}")
    for rel, n in counts.items():
        print(f"{rel}: {n} exercise block(s)")
    if not args.check:
        print(f"student copy written to {args.out}")
    return counts


if __name__ == "__main__":
    main(sys.argv[1:])
