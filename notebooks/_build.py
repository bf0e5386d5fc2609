"""Write the walkthrough notebooks (notebooks/*.ipynb) from the Python source in notebooks/_cells/.

The notebooks are generated, not hand-edited: each one is a list of markdown and code cells in
`notebooks/_cells/NN_name.py`, so a change of the packages' behaviour is a one-line edit with a normal
diff, and the .ipynb files are written without outputs and with stable cell ids (a rebuild of
unchanged source gives byte-identical files).

    python notebooks/_build.py            # rewrite every notebook
    python notebooks/_build.py --check    # exit 1 if a notebook differs from its source (tests run this)

A cell-source file defines CELLS, a list of (kind, text) pairs: "md" (markdown), "code", or "setup":
the shared first code cell below (the SMALL switch and the import path) followed by `text`.
"""

import argparse
import importlib.util
import os
import sys
import textwrap

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
CELLS_DIR = os.path.join(HERE, "_cells")

SETUP = '''\
import os, sys, math, time, pathlib, tempfile

# SMALL=1 (the default, and what the tests run): seconds on 2 CPU cores. SMALL=0: the bigger version.
SMALL = os.environ.get("SMALL", "1") == "1"

# Import minigpt / rlhf from this clone without installing it: walk up from notebooks/ to the root.
ROOT = pathlib.Path.cwd().resolve()
while not (ROOT / "minigpt").is_dir() and ROOT.parent != ROOT:
    ROOT = ROOT.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch
torch.manual_seed(0)
if SMALL:
    torch.set_num_threads(1)  # tiny models gain nothing from threads, and lose a lot on a busy machine
print(f"SMALL={SMALL}, torch {torch.__version__}, repository {ROOT}")'''


def load_cells(path: str) -> list[tuple[str, str]]:
    spec = importlib.util.spec_from_file_location(f"_cells_{os.path.basename(path)[:-3]}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CELLS


def build_notebook(stem: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, text) in enumerate(cells):
        text = textwrap.dedent(text).strip("\n")
        if kind == "setup":
            kind, text = "code", SETUP + ("\n\n" + text if text else "")
        if kind == "md":
            cell = nbformat.v4.new_markdown_cell(text)
        elif kind == "code":
            cell = nbformat.v4.new_code_cell(text)
        else:
            raise ValueError(f"{stem}: cell {i} has kind {kind!r}; use 'md' or 'code'")
        cell.id = f"{stem.replace('_', '-')}-{i:02d}"  # stable ids: a rebuild changes nothing
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def sources() -> dict[str, str]:
    """{notebook stem: path of its cell source}, in order."""
    names = sorted(f for f in os.listdir(CELLS_DIR) if f[:2].isdigit() and f.endswith(".py"))
    return {f[:-3]: os.path.join(CELLS_DIR, f) for f in names}


def render(stem: str, path: str) -> str:
    return nbformat.writes(build_notebook(stem, load_cells(path))) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report notebooks that differ from their source")
    args = ap.parse_args(argv)
    stale = []
    for stem, path in sources().items():
        text = render(stem, path)
        out = os.path.join(HERE, stem + ".ipynb")
        old = open(out, encoding="utf-8").read() if os.path.exists(out) else None
        if old == text:
            continue
        if args.check:
            stale.append(out)
            continue
        tmp = out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, out)
        print(f"wrote {os.path.relpath(out)}")
    if stale:
        print("out of date (run python notebooks/_build.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
