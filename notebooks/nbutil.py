"""What the walkthrough notebooks share: the SMALL switch, one run of the pipeline that the stage
notebooks continue, grading of the "your turn" cells, and the documented default run's figures.

    from nbutil import SMALL, check, run_stages, show_result

SMALL=1 (the default, and what the tests run) uses the pipeline's `small` preset: a 2-layer, 64-wide model,
~1.5 minutes on 2 CPU cores for every stage. SMALL=0 uses the `default` preset (~15 minutes).
The stage notebooks share one run directory, RUN_DIR: notebook 04 trains pretraining and SFT into it,
05 adds the reward model, 06 PPO and the evaluation, 07 DPO and GRPO, each reusing what is already
finished there (the pipeline skips a stage whose directory holds a summary.json). Run any notebook on its
own and it trains what it needs first. Delete RUN_DIR (or set MINIGPT_NB_RUN) to start afresh.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import time
import warnings

# tqdm.auto wants ipywidgets for notebook bars; the stages run quietly here, so its warning is noise.
warnings.filterwarnings("ignore", message="IProgress not found")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from minigpt.checkpoint import read_summary  # noqa: E402
from minigpt.metrics import read_metrics  # noqa: E402
from rlhf.pipeline import PipelineConfig, run_pipeline  # noqa: E402
from tools.grade import check  # noqa: E402,F401  (re-exported: check("a4.gae", my_gae))

SMALL = os.environ.get("SMALL", "1") == "1"
PRESET = "small" if SMALL else "default"
RUN_DIR = os.environ.get("MINIGPT_NB_RUN") or os.path.join(tempfile.gettempdir(), f"minigpt-notebooks-{PRESET}")
RESULTS = os.path.join(ROOT, "docs", "results")   # the documented default run (README's figures)


@contextlib.contextmanager
def quietly():
    """Send what the code inside prints (stage logs, progress) to RUN_DIR/notebook.log instead of the notebook,
    all but its `note: ...` lines (e.g. a GPU that computes in float32, or one this torch cannot use)."""
    os.makedirs(RUN_DIR, exist_ok=True)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        with open(os.path.join(RUN_DIR, "notebook.log"), "a", encoding="utf-8") as f:
            f.write(log.getvalue())
        for line in log.getvalue().splitlines():
            if line.startswith("note: "):
                print(line)


def run_stages(upto: str | None = None, **pipeline) -> None:
    """Run (or reuse) the pipeline's stages into RUN_DIR up to and including `upto` ("sft", "reward_model",
    "ppo"; None = all, evaluation and report included), quietly.

    The stages' own output goes to RUN_DIR/notebook.log; what was trained or reused is printed."""
    os.makedirs(RUN_DIR, exist_ok=True)
    cfg = PipelineConfig(out=RUN_DIR, stop_after=upto or "", progress=False, **pipeline)
    before = {s for s in os.listdir(RUN_DIR) if summary(s) is not None}
    t0 = time.time()
    try:
        with quietly():
            run_pipeline(cfg, preset=PRESET)
    except NotImplementedError as e:   # the student copy: a stage reached a blank the student has not written
        raise RuntimeError(f"a stage needs code you have not written yet ({e}). The stages run on the repository's "
                           "code: write that exercise in its file (python tools/grade.py checks it), or run "
                           "this notebook after the assignment that covers it.") from None
    after = {s for s in os.listdir(RUN_DIR) if summary(s) is not None}
    trained = sorted(after - before, key=lambda s: os.path.getmtime(os.path.join(RUN_DIR, s, "summary.json")))
    reused = sorted(before)
    print(f"pipeline preset {PRESET!r}: trained {', '.join(trained) or 'nothing'} in {time.time() - t0:.0f}s"
          + (f"; reused {', '.join(reused)} from an earlier notebook" if reused else ""))


def run_dpo_or_grpo(stage: str) -> dict:
    """Train (or reuse) `python -m rlhf.dpo` / `rlhf.grpo` at PRESET into RUN_DIR/STAGE, starting from
    RUN_DIR's SFT model and reward model (DPO trains on the reward-model stage's comparisons), with the
    gold evaluators their command lines use; quietly. Returns the stage's summary."""
    from rlhf import dpo, grpo
    from rlhf.gold import GoldEvaluator
    if stage not in ("dpo", "grpo"):
        raise ValueError(f"stage must be 'dpo' or 'grpo', not {stage!r}")
    if summary(stage) is None:
        paths = dict(out_dir=os.path.join(RUN_DIR, stage), sft_dir=os.path.join(RUN_DIR, "sft"),
                     rm_dir=os.path.join(RUN_DIR, "reward_model"), progress=False)
        t0 = time.time()
        with quietly():
            if stage == "dpo":
                cfg = dpo.DPOConfig(**{**dpo.PRESETS[PRESET], **paths})
                dpo.train_dpo(cfg, dpo.gold_evaluator(cfg, GoldEvaluator))
            else:
                cfg = grpo.GRPOConfig(**{**grpo.PRESETS[PRESET], **paths})
                grpo.train_grpo(cfg, *grpo.gold_evaluators(cfg, GoldEvaluator))
        print(f"{stage} ({PRESET} preset): trained in {time.time() - t0:.0f}s")
    else:
        print(f"{stage}: reused the finished run in {os.path.join(RUN_DIR, stage)}")
    return summary(stage)


def summary(stage: str) -> dict | None:
    """RUN_DIR/STAGE/summary.json: what a finished stage reported (None if it has not finished)."""
    return read_summary(os.path.join(RUN_DIR, stage))


def metrics_jsonl(stage: str) -> list[dict]:
    """RUN_DIR/STAGE/metrics.jsonl: one dict per logged step of a stage."""
    return read_metrics(os.path.join(RUN_DIR, stage, "metrics.jsonl"))


def default_run() -> dict:
    """docs/results/metrics_default_run.json: the documented default run's metrics (README's tables)."""
    with open(os.path.join(RESULTS, "metrics_default_run.json"), encoding="utf-8") as f:
        return json.load(f)


def show_result(name: str, width: int = 640):
    """Display a figure of the documented default run (docs/results/NAME)."""
    from IPython.display import Image, display
    display(Image(filename=os.path.join(RESULTS, name), width=width))
