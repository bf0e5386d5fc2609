"""Execute every walkthrough notebook (notebooks/*.ipynb) in SMALL mode and fail on any cell error.

    python -m pytest tests/test_notebooks.py -q      # all seven, ~4 minutes on 2 CPU cores (01-03: seconds)

Each notebook runs in a fresh `python3` kernel (nbclient + ipykernel) with SMALL=1, its working
directory set to notebooks/ and a per-cell timeout. The stage notebooks share one run directory for the
session, as a reader's do (nbutil.RUN_DIR): 04 trains pretraining and SFT, 05 the reward model, 06 PPO,
07 DPO and GRPO, each reusing the last. Under pytest-xdist (the default addopts) 04-07 form one group, run
in order on one worker, and conftest.py schedules the notebooks first (that group is the longest unit). Nothing is written
back: executed notebooks stay in memory. Other tests check that the committed .ipynb files match their
paired jupytext sources notebooks/NN_name.py and carry no outputs.
"""

import os
import pathlib

import pytest

from tools import run_notebooks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")



@pytest.fixture(scope="session")
def shared_run_dir(tmp_path_factory):
    """One run directory for the session's stage notebooks (each continues the previous one's run)."""
    return str(tmp_path_factory.mktemp("notebook-run"))


def _run_notebook(name, run_dir, tmp_dir):
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:  # ipykernel is installed but its spec was not registered: still runnable
        pytest.skip("no 'python3' Jupyter kernelspec (python -m ipykernel install --user registers one)")
    # TMPDIR in pytest's tmp_path: whatever a notebook writes to a temporary folder is cleaned up by pytest.
    return run_notebooks.execute(name, run_dir=run_dir, tmp_dir=str(tmp_dir))


# The stage notebooks continue one run: under pytest-xdist they are one group, on one worker, in order.
STAGES = {"04_pretrain_and_sft", "05_reward_model", "06_ppo", "07_dpo_grpo"}


def _notebooks():
    return [pytest.param(n, id=n, marks=[pytest.mark.xdist_group("stage-notebooks")] if n in STAGES else [])
            for n in run_notebooks.notebooks()]


@pytest.mark.parametrize("name", _notebooks())
def test_notebook_runs(name, shared_run_dir, tmp_path, monkeypatch):
    if os.environ.get("PYTEST_XDIST_WORKER"):     # another worker has the other core: one thread, as the tests
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = _run_notebook(name, shared_run_dir, tmp_path)  # nbclient raises CellExecutionError naming the cell on any error
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


def test_rendered_copies_show_the_current_notebooks():
    """notebooks/rendered/NN_name.ipynb (tools/run_notebooks.py: executed, for readers on GitHub) exist for every
    notebook, carry outputs and figures, and have the notebook's cells (re-run the tool after an edit)."""
    nbformat = pytest.importorskip("nbformat")
    for name in run_notebooks.notebooks():
        path = os.path.join(NB_DIR, "rendered", name + ".ipynb")
        assert os.path.exists(path), f"no rendered copy of {name}: python tools/run_notebooks.py {name}"
        rendered = nbformat.read(path, as_version=4)
        clean = nbformat.read(os.path.join(NB_DIR, name + ".ipynb"), as_version=4)
        assert [c.source for c in rendered.cells] == [c.source for c in clean.cells], (
            f"notebooks/rendered/{name}.ipynb is stale: python tools/run_notebooks.py {name}")
        outputs = [o for c in rendered.cells if c.cell_type == "code" for o in c.outputs]
        assert outputs and not [o for o in outputs if o.get("output_type") == "error"], f"{name}: no or failed outputs"
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}: no figure in the rendered copy"



@pytest.mark.parametrize("name", _notebooks())
def test_setup_outside_a_clone_says_how_to_get_one(name, tmp_path, monkeypatch):
    """A cloud notebook (Colab, Kaggle) starts outside any copy of the repository: the Setup cell stops with one
    line saying how to get one (notebooks/README.md, "On a cloud GPU"), not `No module named 'nbutil'`."""
    with open(os.path.join(NB_DIR, name + ".py"), encoding="utf-8") as f:
        source = f.read()
    start = source.index("# Make this clone's packages importable")
    setup = source[start:source.index("sys.path[:0]", start)]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"no minigpt-rlhf clone at or above .*clone it and %cd into it first"):
        exec("import pathlib\n" + setup, {})
    monkeypatch.chdir(NB_DIR)                            # inside a clone: found, nothing raised
    namespace: dict = {}
    exec("import pathlib\n" + setup, namespace)
    assert namespace["ROOT"] == pathlib.Path(ROOT).resolve()


def test_quiet_stage_output_still_shows_its_notes(tmp_path, monkeypatch, capsys):
    """The notebooks run the stages quietly (their logs go to RUN_DIR/notebook.log), but a `note:` line is for
    the reader (on a Colab T4: float32; on a GPU this torch cannot use: the CPU), so it still reaches the
    notebook."""
    monkeypatch.syspath_prepend(NB_DIR)
    import nbutil
    monkeypatch.setattr(nbutil, "RUN_DIR", str(tmp_path))
    with nbutil.quietly():
        print("step 10: loss 2.31")
        print("note: Tesla T4 (compute capability 7.5) has no bf16 hardware, so the stages compute in float32 here")
    out = capsys.readouterr().out
    assert out == "note: Tesla T4 (compute capability 7.5) has no bf16 hardware, so the stages compute in float32 here\n"
    assert "step 10: loss 2.31" in (tmp_path / "notebook.log").read_text(encoding="utf-8")
