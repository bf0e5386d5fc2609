"""Execute the walkthrough notebooks in SMALL mode; store executed copies for readers on GitHub.

    python tools/run_notebooks.py                 # every notebook, in order (~6 min); executed copies written
    python tools/run_notebooks.py 06_ppo          # some of them (the earlier stages are trained first if needed)
    python tools/run_notebooks.py --check         # execute, write nothing (tests/test_notebooks.py does the same)

The committed notebooks/NN_name.ipynb carry no outputs (a student runs them; a test checks they are clean).
Executed copies, with every table and figure of a SMALL run, go to notebooks/rendered/NN_name.ipynb, which
GitHub displays without running anything; the student copy (tools/make_exercises.py) leaves them out, as
they show the solutions. Re-run this tool after changing a notebook: a test checks that each rendered
copy's cells are the notebook's. The notebooks' sources are the paired percent-format files
notebooks/NN_name.py (jupytext): edit one, run `jupytext --update --to ipynb notebooks/NN_name.py`, then this
tool. Each run uses a fresh shared run directory (MINIGPT_NB_RUN), so the stage notebooks continue one
another as they do for a student: 04 trains SFT, 05 the reward model on it, 06 PPO, 07 DPO and GRPO.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from minigpt.configurator import CommandParser, utf8_console  # noqa: E402  (needs ROOT on sys.path)
NB_DIR = os.path.join(ROOT, "notebooks")
CELL_TIMEOUT = 300  # seconds per cell; the longest SMALL cell (pretraining + SFT) takes about a minute


def notebooks() -> list[str]:
    """The notebooks' names (stems), in order."""
    return sorted(f[:-6] for f in os.listdir(NB_DIR) if f.endswith(".ipynb") and f[:2].isdigit())


def execute(name: str, run_dir: str, tmp_dir: str | None = None):
    """Execute notebooks/NAME.ipynb in a fresh python3 kernel with SMALL=1 and the shared run directory
    run_dir; returns the executed notebook (nbformat). nbclient raises CellExecutionError on a failing cell."""
    import nbclient
    import nbformat

    nb = nbformat.read(os.path.join(NB_DIR, name + ".ipynb"), as_version=4)
    env = {"SMALL": "1", "MINIGPT_NB_RUN": run_dir, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    if tmp_dir:
        env["TMPDIR"] = tmp_dir
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)   # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                         resources={"metadata": {"path": NB_DIR}})
        client.execute()
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


RENDERED_DIR = os.path.join(NB_DIR, "rendered")


def write(name: str, nb) -> None:
    """The executed notebook to notebooks/rendered/NAME.ipynb (atomically)."""
    import nbformat

    os.makedirs(RENDERED_DIR, exist_ok=True)
    path = os.path.join(RENDERED_DIR, name + ".ipynb")
    tmp = path + ".tmp"
    nbformat.write(nb, tmp)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = CommandParser(prog="python tools/run_notebooks.py", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="notebooks to run (default: all), e.g. 06_ppo")
    ap.add_argument("--check", action="store_true", help="execute without writing the executed copies")
    args = ap.parse_args(argv)
    names = args.names or notebooks()
    unknown = [n for n in names if n not in notebooks()]
    if unknown:
        raise SystemExit(f"error: no notebook {unknown[0]!r}; there are: {', '.join(notebooks())}")
    run_dir = tempfile.mkdtemp(prefix="minigpt-nb-run-")
    try:
        for name in names:
            t0 = time.time()
            nb = execute(name, run_dir)
            if not args.check:
                write(name, nb)
            print(f"{name}: {time.time() - t0:.0f}s" + ("" if args.check else f" (written to {os.path.relpath(RENDERED_DIR, ROOT)}/)"), flush=True)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    utf8_console()
    sys.exit(main(sys.argv[1:]))
