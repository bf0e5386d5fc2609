"""Write the walkthrough notebooks (notebooks/*.ipynb) from the Python source in notebooks/_cells/.

The notebooks are generated, not hand-edited: each one is a list of markdown and code cells in
`notebooks/_cells/NN_name.py`, so a change of the packages' behaviour is a one-line edit with a normal
diff, and the .ipynb files are written without outputs and with stable cell ids (a rebuild of
unchanged source gives byte-identical files).

    python notebooks/_build.py            # rewrite every notebook
    python notebooks/_build.py --check    # exit 1 if a notebook differs from its source (tests run this)

A cell-source file defines CELLS, a list of (kind, text) pairs: "md" (markdown), "code", "setup"
(the shared first code cell below -- the SMALL switch and the import path -- followed by `text`), or
"stages" (`text` names earlier stages, e.g. "pretrain sft", which the cell runs quietly into RUN with
the shared SMALL settings, so a stage notebook can start where the previous one ended).
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


# The SMALL-mode stage settings shared by notebooks 04-06: each stage's `tiny` preset, made a little
# bigger so the models learn something (pretrain + SFT ~20 s, reward model ~10 s on 2 cores). With
# SMALL=0 the stages' `default` presets run instead (minutes). Notebook 04 walks through these stages;
# 05 and 06 re-run the earlier ones with the same settings through the `stages` cell kind.
SMALL_STAGES = '''\
SMALL_PRETRAIN = dict(max_iters=300, batch_size=16, n_embd=64, n_head=4, vocab_size=512, corpus_chars=200_000,
                      tokenizer_chars=100_000, eval_interval=100, learning_rate=3e-3, warmup_iters=20)
SMALL_SFT = dict(n_demos=600, max_iters=200, batch_size=16, n_eval=60, max_new_tokens=16, learning_rate=2e-3,
                 eval_interval=100, warmup_iters=10, eval_batch_size=60)
SMALL_RM = dict(n_train_prompts=300, n_val_prompts=100, temperatures=[1.0, 1.6], max_new_tokens=16,
                batch_size=16, learning_rate=3e-4, epochs=2.0, eval_interval=20, eval_iters=2)'''

STAGE_RUNS = {
    "pretrain": '''\
from rlhf.pretrain import PRESETS as PRETRAIN_PRESETS, WorldPretrainConfig, train_world_pretrain
pre_cfg = WorldPretrainConfig(**{**(PRETRAIN_PRESETS["tiny"] | SMALL_PRETRAIN if SMALL else PRETRAIN_PRESETS["default"]),
                                 "out_dir": os.path.join(RUN, "pretrain"), "progress": False})
pre = train_world_pretrain(pre_cfg)''',
    "sft": '''\
from rlhf.gold import GoldEvaluator, score as gold_score   # the judge we hand in: stages never import it
from rlhf.sft import PRESETS as SFT_PRESETS, SFTConfig, gold_evaluator, train_sft
sft_cfg = SFTConfig(**{**(SFT_PRESETS["tiny"] | SMALL_SFT if SMALL else SFT_PRESETS["default"]),
                       "out_dir": os.path.join(RUN, "sft"), "init_from": pre_cfg.out_dir, "progress": False})
sft = train_sft(sft_cfg, gold_evaluator(sft_cfg, GoldEvaluator))''',
    "reward_model": '''\
from rlhf.reward_model import PRESETS as RM_PRESETS, RMConfig, train_reward_model
rm_cfg = RMConfig(**{**(RM_PRESETS["tiny"] | SMALL_RM if SMALL else RM_PRESETS["default"]),
                     "out_dir": os.path.join(RUN, "reward_model"), "sft_dir": sft_cfg.out_dir, "progress": False})
rm = train_reward_model(rm_cfg, gold=gold_score)''',
}


def stages_cell(names: str) -> str:
    """Code that runs the named stages (space-separated, in order) into RUN, quietly."""
    body = "\n".join(STAGE_RUNS[n] for n in names.split())
    return ("import contextlib, io\n" + SMALL_STAGES + "\n\n"
            "log = io.StringIO()  # the stages print a lot; keep it (print(log.getvalue()) shows it)\n"
            "t0 = time.time()\n"
            "with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):\n"
            + textwrap.indent(body, "    ") + "\n"
            f"print(f\"{names.replace(' ', ', ')}: done in {{time.time() - t0:.0f}}s -> {{RUN}}\")")


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
        text = text.replace("# <SMALL_STAGES>", SMALL_STAGES)
        if kind == "stages":
            kind, text = "code", stages_cell(text.strip())
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


def _content(text: str) -> list:
    """What --check compares: each cell's id, type and source, and the kernel (not nbformat's layout,
    which may change between nbformat versions)."""
    nb = nbformat.reads(text, as_version=4)
    return [nb.metadata.get("kernelspec", {}).get("name")] + [(c.get("id"), c.cell_type, c.source) for c in nb.cells]


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
            if old is None or _content(old) != _content(text):
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
