"""Architecture tests: the layer rules of minigpt/ and rlhf/, checked by reading the source with `ast`.

Nothing here imports the packages. Every import counts: at the top of a file and inside functions,
methods and classes (`import`, `from ... import`, `importlib.import_module("...")`), except the bodies
of `if TYPE_CHECKING:` blocks. `from X import Y` where X/Y.py exists counts as importing module X.Y.

    rlhf.pipeline / stage CLIs (main)      callers: wire stages, hand in the gold evaluator
    rlhf.sft  rlhf.reward_model  rlhf.ppo  rlhf.dpo  rlhf.grpo   stages: never import each other or the oracle
    rlhf.rollout  rlhf.reward  rlhf.rl_update  rlhf.data  ...   shared code below the stages
    rlhf.losses                            pure formulas: torch only
    minigpt                                the language model: nothing of rlhf

Each rule is a plain function `check_x(root) -> list[str]` of violation messages, so the planted-violation
test at the bottom can prove on a fake tree that every check is able to fail.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import subprocess
import warnings
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("minigpt", "rlhf")
STAGES = ("rlhf.sft", "rlhf.reward_model", "rlhf.ppo", "rlhf.dpo", "rlhf.grpo", "rlhf.pretrain")
ORACLE_MODULES = ("rlhf.world.oracle", "rlhf.gold", "rlhf.evaluate")
ORACLE_NAMES = {"score", "score_details", "classify"}
LOSSES_ALLOWED = {"torch", "math", "typing", "__future__", "dataclasses"}
# (importer, imported) pairs of stages allowed to import each other. Empty on purpose: what two stages
# share (e.g. the reward model's class, in rlhf.reward) lives in a module below both of them.
ALLOWED_STAGE_IMPORTS: set[tuple[str, str]] = set()
MAX_LOCAL_IMPORT_EXEMPTIONS = 10
ORACLE_MSG = ("training code must not touch the gold oracle; the caller (pipeline or the stage's main()) "
              "hands in an evaluator callable")


@dataclass(frozen=True)
class Imp:
    module: str          # the importing module, e.g. "rlhf.ppo"
    path: str            # its file, relative to the root
    imported: str        # the imported module, e.g. "rlhf.world"
    names: tuple[str, ...]  # `from X import a, b` where X.a, X.b are not module files; () otherwise
    bound: str | None    # the local name bound to the imported module (None for names, importlib)
    lineno: int
    function: str | None  # enclosing function ("main", "Cls.meth", "f.inner"); None outside functions
    in_main: bool        # inside the top-level function `main` (or something nested in it)

    def where(self) -> str:
        what = f"from {self.imported} import {', '.join(self.names)}" if self.names else f"import {self.imported}"
        return f"{self.path}:{self.lineno}: `{what}`" + (f" (in {self.function}())" if self.function else "")


def project_modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Module name -> file for every .py under minigpt/ and rlhf/ (rlhf/world/__init__.py -> rlhf.world)."""
    mods = {}
    for pkg in PACKAGES:
        for p in sorted((root / pkg).rglob("*.py")):
            if "__pycache__" in p.parts:
                continue
            parts = list(p.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = p
    return mods


def _parse(path: pathlib.Path) -> ast.Module:
    with warnings.catch_warnings():  # e.g. an invalid escape in a docstring: not this file's business
        warnings.simplefilter("ignore")
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def parse_imports(root: pathlib.Path, module: str, path: pathlib.Path, mods) -> list[Imp]:
    tree = _parse(path)
    rel = path.relative_to(root).as_posix()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[Imp] = []

    def resolve(level: int, name: str | None) -> str:
        if not level:
            return name or ""
        base = package.split(".")[: len(package.split(".")) - (level - 1)]
        return ".".join(base + ([name] if name else []))

    def visit(node: ast.AST, scope: tuple[tuple[str, str], ...]) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, scope)
            return
        func = ".".join(n for _, n in scope) if any(k == "def" for k, _ in scope) else None
        ctx = dict(lineno=getattr(node, "lineno", 0), function=func, in_main=scope[:1] == (("def", "main"),))
        if isinstance(node, ast.Import):
            for a in node.names:
                out.append(Imp(module, rel, a.name, (), a.asname or a.name.split(".")[0], **ctx))
        elif isinstance(node, ast.ImportFrom):
            src = resolve(node.level, node.module)
            names = tuple(a.name for a in node.names if f"{src}.{a.name}" not in mods)
            if names:
                out.append(Imp(module, rel, src, names, None, **ctx))
            for a in node.names:  # `from rlhf import world` imports the module rlhf.world
                if f"{src}.{a.name}" in mods:
                    out.append(Imp(module, rel, f"{src}.{a.name}", (), a.asname or a.name, **ctx))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
            target = node.args[0].value
            if target.startswith("."):
                target = resolve(len(target) - len(target.lstrip(".")), target.lstrip(".") or None)
            out.append(Imp(module, rel, target, (), None, **ctx))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scope = scope + (("def", node.name),)
        elif isinstance(node, ast.ClassDef):
            scope = scope + (("class", node.name),)
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(tree, ())
    return out


def all_imports(root: pathlib.Path) -> list[Imp]:
    mods = project_modules(root)
    return [i for m, p in mods.items() for i in parse_imports(root, m, p, mods)]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# --------------------------------------------------------------------------------------------- checks
def check_minigpt_no_rlhf(root) -> list[str]:
    return [f"{i.where()}: minigpt is the language model and must import nothing of rlhf; move the code "
            f"into rlhf (or pass what minigpt needs in as an argument)"
            for i in all_imports(root) if _under(i.module, "minigpt") and _under(i.imported, "rlhf")]


def check_losses_torch_only(root) -> list[str]:
    return [f"{i.where()}: rlhf/losses.py holds pure formulas and may import only {sorted(LOSSES_ALLOWED)}; "
            f"compute inputs elsewhere and pass tensors in"
            for i in all_imports(root)
            if i.module == "rlhf.losses" and i.imported.split(".")[0] not in LOSSES_ALLOWED]


def import_graph(root) -> dict[str, dict[str, Imp]]:
    """module -> {imported project module -> first import line}; an import of P.m is an edge to P.m only."""
    mods = project_modules(root)
    graph: dict[str, dict[str, Imp]] = {m: {} for m in mods}
    for i in all_imports(root):
        parts = i.imported.split(".")
        target = next((".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in mods), None)
        if target and target != i.module:
            prev = graph[i.module].get(target)
            if prev is None or i.lineno < prev.lineno:
                graph[i.module][target] = i
    return graph


def strongly_connected(graph: dict[str, dict]) -> list[list[str]]:
    """Tarjan's algorithm (recursive; the graph has a few dozen nodes)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sccs


def _shortest_cycle(graph, start: str, comp: set[str]) -> list[str]:
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]]):
            if w == start:
                return path + [start]
            if w in comp and w not in seen:
                seen.add(w)
                paths.append(path + [w])
    return [start]


def check_no_cycles(root) -> list[str]:
    graph = import_graph(root)
    out = []
    for comp in (c for c in strongly_connected(graph) if len(c) > 1):
        cycles = {}
        for start in comp:  # one shortest cycle through each member, deduplicated by rotation
            cyc = _shortest_cycle(graph, start, set(comp))[:-1]
            k = cyc.index(min(cyc))
            cycles[tuple(cyc[k:] + cyc[:k])] = None
        for cyc in cycles:
            chain = " -> ".join(f"{a} ({graph[a][b].path}:{graph[a][b].lineno})"
                                for a, b in zip(cyc, cyc[1:] + cyc[:1])) + f" -> {cyc[0]}"
            out.append(f"import cycle among {comp}: {chain}; modules must form layers: move what both "
                       f"sides need into a module below them (or pass it in as an argument)")
    return out


def _dotted(node: ast.AST) -> list[str]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id] + parts[::-1] if isinstance(node, ast.Name) else []


def check_stages_no_oracle(root) -> list[str]:
    mods = project_modules(root)
    out = []
    for stage in (s for s in STAGES if s in mods):
        imps = parse_imports(root, stage, mods[stage], mods)
        for i in imps:
            bad = any(_under(i.imported, m) for m in ORACLE_MODULES) or (
                i.imported in ("rlhf.world", "rlhf.world.oracle") and ORACLE_NAMES & set(i.names))
            if bad and not i.in_main:
                out.append(f"{i.where()}: {ORACLE_MSG}")
        # attribute uses of names bound to rlhf.world / its oracle (outside the top-level main()):
        # normalise each dotted chain to its full name, then look for rlhf.world.{score,...,oracle}
        alias = {i.bound: i.imported.split(".") for i in imps
                 if i.bound and _under(i.imported, "rlhf.world") and i.bound != "rlhf"}
        if any(i.bound == "rlhf" and _under(i.imported, "rlhf.world") for i in imps):
            alias["rlhf"] = ["rlhf"]
        tree = _parse(mods[stage])
        inner: set[int] = set()  # attributes inside an already-reported chain (world.oracle in world.oracle.f)
        for top in tree.body:
            if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)) and top.name == "main":
                continue
            for node in ast.walk(top):  # breadth first: outer attributes before their inner parts
                if not isinstance(node, ast.Attribute) or id(node) in inner:
                    continue
                d = _dotted(node)
                full = alias[d[0]] + d[1:] if d and d[0] in alias else []
                if full[:2] == ["rlhf", "world"] and len(full) > 2 and full[2] in ORACLE_NAMES | {"oracle"}:
                    inner.update(id(n) for n in ast.walk(node) if isinstance(n, ast.Attribute))
                    out.append(f"{mods[stage].relative_to(root).as_posix()}:{node.lineno}: "
                               f"`{'.'.join(d)}`: {ORACLE_MSG}")
    return sorted(set(out))


def check_stages_independent(root) -> list[str]:
    return [f"{i.where()}: training stages must not import each other ({i.module} -> {i.imported}); "
            f"move what both need into a shared module below the stages"
            for i in all_imports(root)
            for s in STAGES
            if i.module in STAGES and _under(i.imported, s) and s != i.module
            and (i.module, s) not in ALLOWED_STAGE_IMPORTS]


def local_import_exemptions(root) -> tuple[list[str], list[str]]:
    """(violations, counted `local import:` exemptions) for imports inside functions."""
    bad, exempt = [], []
    lines_of: dict[str, list[str]] = {}
    for i in all_imports(root):
        if i.function is None:
            continue
        if i.module in STAGES and i.in_main and _under(i.imported, "rlhf.gold"):
            continue
        lines = lines_of.setdefault(i.path, (root / i.path).read_text(encoding="utf-8").splitlines())
        marked = any("local import:" in lines[n - 1] for n in (i.lineno - 1, i.lineno) if n >= 1)
        if marked and i.module == "rlhf.pipeline" and i.imported in STAGES:
            continue  # the pipeline's lazy stage imports: allowed when marked, not counted
        if marked:
            exempt.append(i.where())
        else:
            bad.append(f"{i.where()}: imports belong at the top of the file; move it there, or if it must "
                       f"stay local, mark it with a `# local import: <why>` comment on or above the line")
    return bad, exempt


def check_imports_at_top(root) -> list[str]:
    bad, exempt = local_import_exemptions(root)
    if len(exempt) > MAX_LOCAL_IMPORT_EXEMPTIONS:
        bad.append(f"{len(exempt)} `local import:` exemptions (at most {MAX_LOCAL_IMPORT_EXEMPTIONS}); the "
                   f"exemption must stay rare, move some imports to the top of the file:\n  " + "\n  ".join(exempt))
    return bad


def text_files(root: pathlib.Path) -> list[pathlib.Path]:
    """Tracked (and untracked, not ignored) files per git; a plain walk when git is not there."""
    try:
        res = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, encoding="utf-8", check=True)
        files = [root / f for f in res.stdout.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if x not in {".git", "runs", "out", "__pycache__"}]
            files += [pathlib.Path(d) / n for n in names]
    return [f for f in files if f.is_file()]


def check_design_doc(root) -> list[str]:
    out = [] if (root / "docs/DESIGN.md").is_file() else [
        "docs/DESIGN.md is missing: the design document lives at docs/DESIGN.md; add it there"]
    shared = "../" + "shared"  # spelled in two pieces so this file does not trip its own check
    for f in text_files(root):
        rel = f.relative_to(root).as_posix()
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary
        cited = rel == "README.md" or rel.startswith("exercises/") or (
            rel.split("/")[0] in ("minigpt", "rlhf", "tests", "tools", "bench", "notebooks")
            and f.suffix in (".py", ".md", ".ipynb"))
        for n, line in enumerate(text.splitlines(), 1):
            if cited and re.search(r"(?<!docs/)DESIGN\.md", line):
                out.append(f"{rel}:{n}: cites the design doc without its path; write it as docs/DESIGN.md")
            if shared in line:
                out.append(f"{rel}:{n}: mentions `{shared}`, a path outside the repository; "
                           f"refer to something inside the repo instead")
    return out


# ---------------------------------------------------------------------------------------------- tests
def _fail_if(violations: list[str], rule: str) -> None:
    if violations:
        pytest.fail(f"{rule}: {len(violations)} violation(s):\n" + "\n".join(violations), pytrace=False)


def test_minigpt_imports_nothing_from_rlhf():
    _fail_if(check_minigpt_no_rlhf(ROOT), "minigpt must not import rlhf")


def test_losses_imports_only_torch():
    _fail_if(check_losses_torch_only(ROOT), "rlhf/losses.py imports only torch and the standard basics")


def test_no_import_cycles():
    _fail_if(check_no_cycles(ROOT), "no import cycles between project modules")


def test_training_stages_never_import_the_oracle():
    _fail_if(check_stages_no_oracle(ROOT), "training stages never touch the gold oracle")


def test_stages_do_not_import_each_other():
    _fail_if(check_stages_independent(ROOT), "training stages do not import each other")


def test_imports_at_top_of_file():
    _fail_if(check_imports_at_top(ROOT), "imports at the top of the file")


def test_docs_design_exists_and_is_cited_correctly():
    _fail_if(check_design_doc(ROOT), "docs/DESIGN.md exists and is cited by that path")


PLANTED = {
    "minigpt/__init__.py": "",
    "minigpt/a.py": "def f():\n    from rlhf import ppo\n",
    "rlhf/__init__.py": "",
    "rlhf/x.py": "import rlhf.y\n",
    "rlhf/y.py": "from rlhf import x\n",
    "rlhf/ppo.py": "from rlhf.world import score\nfrom rlhf import world\nv = world.classify('x')\n"
                   "def main():\n    from rlhf import gold\n",
    "rlhf/dpo.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rlhf.ppo\n"
                   "import importlib\nm = importlib.import_module('rlhf.sft')\n",
    "rlhf/sft.py": "",
    "rlhf/gold.py": "",
    "rlhf/losses.py": "import numpy as np\nimport torch.nn.functional as F\n",
    "rlhf/world/__init__.py": "def score(x):\n    return 0\n",
    "rlhf/pipeline.py": "def run():\n    # local import: stages load lazily\n    from rlhf import sft\n",
    "rlhf/many.py": "def f():\n" + "    import os  # local import: planted, one too many\n" * 11,
    "README.md": "see DESIGN" ".md and ../" "shared/x\n",  # in pieces: this file must pass its own check
}


@pytest.mark.parametrize("check, expected", [
    (check_minigpt_no_rlhf, ["minigpt/a.py:2: `import rlhf.ppo` (in f())"]),
    (check_losses_torch_only, ["rlhf/losses.py:1: `import numpy`"]),
    (check_no_cycles, ["rlhf.x (rlhf/x.py:1) -> rlhf.y (rlhf/y.py:1) -> rlhf.x"]),
    (check_stages_no_oracle, ["rlhf/ppo.py:1: `from rlhf.world import score`", "rlhf/ppo.py:3: `world.classify`"]),
    (check_stages_independent, ["rlhf/dpo.py:5: `import rlhf.sft`"]),
    (check_imports_at_top, ["minigpt/a.py:2", "11 `local import:` exemptions (at most 10)"]),
    (check_design_doc, ["docs/DESIGN.md is missing", "README.md:1: cites", "README.md:1: mentions"]),
])
def test_layer_checker_catches_planted_violations(tmp_path, check, expected):
    for rel, src in PLANTED.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(src, encoding="utf-8")
    found = check(tmp_path)
    for e in expected:
        assert any(e in v for v in found), f"{check.__name__} missed the planted `{e}`; it reported {found}"
    # the allowed cases stay quiet: main() may import rlhf.gold, TYPE_CHECKING imports do not count,
    # the pipeline's marked lazy stage import is allowed
    quiet = ("import rlhf.gold", "dpo.py:3", "pipeline.py")
    assert not any(q in v for v in found for q in quiet), f"{check.__name__} over-reports: {found}"
