"""The mutmut score of the exercise code alone: of the mutants whose changed line lies inside a
`# BEGIN SOLUTION <id>` block, how many the graded tests killed, per exercise, and every survivor.

    pip install mutmut && mutmut run          # uses [tool.mutmut] in pyproject.toml (~13 min on 2 cores)
    python tools/mutmut_blocks.py             # then this: the score and one line per survivor

mutmut mutates whole files; code outside the exercise blocks is not what students write, so it is left
out of the score here.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import sys

try:
    import tomllib
except ImportError:  # Python 3.10: pip install tomli
    import tomli as tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from minigpt.configurator import CommandParser, utf8_console  # noqa: E402
from tools.make_exercises import BEGIN_RE, END  # noqa: E402  (the marker syntax, defined once)


def exercise_blocks(path: str) -> list[tuple[str, set[str]]]:
    """[(exercise id, {stripped lines of its block})] of one source file."""
    lines = open(path, encoding="utf-8").read().splitlines()
    out, start, eid = [], None, ""
    for i, line in enumerate(lines):
        s = line.strip()
        m = BEGIN_RE.match(s)
        if m:
            start, eid = i, m.group(1)
        elif s == END and start is not None:
            out.append((eid, {lines[k].strip() for k in range(start + 1, i)}))
            start = None
    return out


def mutant_functions(path: str) -> dict[str, list[str]]:
    """{function name: its source lines} of every function of a mutmut-generated file."""
    text = open(path, encoding="utf-8").read()
    lines = text.splitlines()
    return {node.name: lines[node.lineno - 1:node.end_lineno] for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef) and "__mutmut_" in node.name}


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python tools/mutmut_blocks.py", description=__doc__.splitlines()[0],
                           epilog="Run `mutmut run` first (see pyproject.toml's [tool.mutmut]).")
    parser.parse_args(argv)                        # no options: --help, and a one-line error for anything else
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        files = tomllib.load(f)["tool"]["mutmut"]["source_paths"]
    totals: dict[str, list[int]] = {}
    survivors = []
    for rel in files:
        meta_path = os.path.join(ROOT, "mutants", rel + ".meta")
        if not os.path.exists(meta_path):
            raise SystemExit(f"error: {meta_path} not found: run `mutmut run` first")
        with open(meta_path, encoding="utf-8") as f:
            exit_codes = json.load(f)["exit_code_by_key"]
        blocks = exercise_blocks(os.path.join(ROOT, rel))
        funcs = mutant_functions(os.path.join(ROOT, "mutants", rel))
        for key, code in exit_codes.items():
            if code is None:                       # no test covers the function
                continue
            name = key.split(".")[-1]
            orig, mutant = funcs.get(name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"), funcs.get(name)
            if orig is None or mutant is None:
                continue
            diff = list(difflib.ndiff(orig[1:], mutant[1:]))   # [1:]: the signature line differs by name only
            removed = [d[2:].strip() for d in diff if d.startswith("- ")]
            added = [d[2:].strip() for d in diff if d.startswith("+ ")]
            if not removed:
                continue                           # a default argument changed: not exercise code
            eid = next((e for e, texts in blocks if removed[0] in texts), None)
            if eid is None:
                continue
            t = totals.setdefault(eid, [0, 0])
            t[0 if code != 0 else 1] += 1
            if code == 0:
                survivors.append(f"{eid}: `{removed[0][:80]}` -> `{(added or [''])[0][:80]}`")
    killed, survived = sum(t[0] for t in totals.values()), sum(t[1] for t in totals.values())
    for eid in sorted(totals):
        print(f"{eid:<24} killed {totals[eid][0]:>4}  survived {totals[eid][1]:>3}")
    print(f"mutants inside exercise blocks: {killed + survived}; killed {killed} "
          f"({killed / max(killed + survived, 1):.1%}); survivors:")
    for line in survivors:
        print("  " + line)
    return 0


if __name__ == "__main__":
    utf8_console()
    sys.exit(main(sys.argv[1:]))
