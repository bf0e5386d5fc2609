"""Execute every walkthrough notebook (notebooks/*.ipynb) in SMALL mode and fail on any cell error.

    python -m pytest tests/test_notebooks.py -q            # the fast notebooks (01-03)
    python -m pytest tests/test_notebooks.py -q -m slow    # the stage notebooks (04-06, training runs)

Each notebook runs in a fresh `python3` kernel (nbclient + ipykernel) with SMALL=1, its working
directory set to notebooks/ and a per-cell timeout. Nothing is written back: executed notebooks stay
in memory, and the notebooks themselves put run outputs in a temporary directory. A second test
checks that the committed .ipynb files are what notebooks/_build.py generates from notebooks/_cells/.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")

# Stage notebooks train models: seconds each, but together too long for the default run.
SLOW = {"04_pretrain_and_sft", "05_reward_model", "06_ppo"}
CELL_TIMEOUT = 120  # seconds per cell; a SMALL notebook takes well under a minute in all


def _notebooks():
    names = sorted(f[:-6] for f in os.listdir(NB_DIR) if f.endswith(".ipynb") and f[:2].isdigit())
    return [pytest.param(n, id=n, marks=[pytest.mark.slow] if n in SLOW else []) for n in names]


def _run_notebook(name, tmp_dir):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:  # ipykernel is installed but its spec was not registered: still runnable
        pytest.skip("no 'python3' Jupyter kernelspec (python -m ipykernel install --user registers one)")

    nb = nbformat.read(os.path.join(NB_DIR, name + ".ipynb"), as_version=4)
    # The kernel inherits this process's environment: SMALL mode, and TMPDIR so that the notebook's
    # tempfile run directories land in pytest's tmp_path (cleaned up by pytest) instead of /tmp.
    env = {"SMALL": "1", "TMPDIR": str(tmp_dir)}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
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


@pytest.mark.parametrize("name", _notebooks())
def test_notebook_runs(name, tmp_path):
    nb = _run_notebook(name, tmp_path)  # nbclient raises CellExecutionError naming the cell on any error
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "every code cell ran"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors


def test_notebooks_match_their_source():
    """notebooks/*.ipynb are paired with percent-format sources notebooks/NN_name.py (jupytext)."""
    nbformat = pytest.importorskip("nbformat")
    jupytext = pytest.importorskip("jupytext")
    for f in sorted(os.listdir(NB_DIR)):
        if f[:2].isdigit() and f.endswith(".ipynb"):
            nb = nbformat.read(os.path.join(NB_DIR, f), as_version=4)
            src = jupytext.read(os.path.join(NB_DIR, f[:-6] + ".py"))
            assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in src.cells], (
                f"{f} differs from {f[:-6]}.py: run jupytext --update --to ipynb notebooks/{f[:-6]}.py")
