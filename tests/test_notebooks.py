"""Execute every walkthrough notebook (notebooks/*.ipynb) in SMALL mode and fail on any cell error.

    python -m pytest tests/test_notebooks.py -q            # the fast notebooks (01-03)
    python -m pytest tests/test_notebooks.py -q -m slow    # the stage notebooks (04-06, training runs)

Each notebook runs in a fresh `python3` kernel (nbclient + ipykernel) with SMALL=1, its working
directory set to notebooks/ and a per-cell timeout. Nothing is written back: executed notebooks stay
in memory, and the notebooks themselves put run outputs in a temporary directory. A second test
checks that the committed .ipynb files match their paired jupytext sources notebooks/NN_name.py.
"""

import os

import pytest

from tools import run_notebooks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")

# Stage notebooks train models: seconds each, but together too long for the default run.
SLOW = {"04_pretrain_and_sft", "05_reward_model", "06_ppo"}


def _notebooks():
    return [pytest.param(n, id=n, marks=[pytest.mark.slow] if n in SLOW else []) for n in run_notebooks.notebooks()]


def _run_notebook(name, tmp_dir):
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:  # ipykernel is installed but its spec was not registered: still runnable
        pytest.skip("no 'python3' Jupyter kernelspec (python -m ipykernel install --user registers one)")
    # TMPDIR in pytest's tmp_path: whatever a notebook writes to a temporary folder is cleaned up by pytest.
    return run_notebooks.execute(name, run_dir=os.path.join(str(tmp_dir), "run"), tmp_dir=str(tmp_dir))


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


def test_notebooks_are_clean():
    """Committed notebooks carry no outputs or execution counts (they are regenerated and re-run)."""
    nbformat = pytest.importorskip("nbformat")
    for f in sorted(os.listdir(NB_DIR)):
        if f.endswith(".ipynb"):
            nb = nbformat.read(os.path.join(NB_DIR, f), as_version=4)
            for c in nb.cells:
                if c.cell_type == "code":
                    assert not c.outputs and c.execution_count is None, f"{f}: cell {c.id} has outputs"
