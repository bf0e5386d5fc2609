"""Iterated RLHF: rounds of PPO -> fresh comparisons of the current policy -> reward-model update.

    python -m rlhf.experiments rounds --run=runs/default                 # 2 rounds on a finished default run
    python -m rlhf.experiments.rounds --run=runs/default --rounds=3      # the same module, run directly
    python -m rlhf.experiments.rounds --preset tiny --run=runs/tiny      # seconds: a smoke run, numbers mean nothing
    python -m rlhf.experiments.rounds --run=runs/default                 # re-run: finished rounds are reused

InstructGPT (Ouyang et al. 2022, figure 2) notes that its comparison step and its PPO step can be
repeated: labelers rank outputs of the *current best* policy, a new reward model is trained on them, and
a new policy is optimised against it. Bai et al. (2022) ran such a loop ("iterated online RLHF"). Why
it should help: a reward model judges best the kind of reply it was trained on; once PPO has
moved the policy, the RM is asked about replies it has seen less of, and its errors there are what PPO
exploits. Fresh comparisons of the policy's own samples aim the RM at exactly those replies.

    round 0   the run's SFT policy π_0 and its reward model RM_0 (and RM_0's comparisons)
    round r   a. PPO from π_{r-1} against RM_{r-1}, KL penalty to the SFT model throughout:
                 π_ref = SFT in every round, so KL(π_r || SFT) is cumulative (rlhf.ppo, init_dir = π_{r-1})
              b. fresh comparisons: new train prompts (data_seed + r) whose candidates include π_r's
                 samples, ranked by the simulated labelers (rlhf.comparisons.simulate_rankings); every
                 comparison so far is kept in round_r/rankings_all.jsonl
              c. held-out comparisons of π_r's samples (val prompts, two labelers): RM_{r-1}'s accuracy on
                 them before the update (the drift) and RM_r's after it
              d. RM_r: the reward-model stage on a rankings file (RMConfig.data); by default it fine-tunes
                 RM_{r-1} (RMConfig.init_rm) on the new comparisons plus as many replayed older ones
                 (rm_init=previous), or retrains from the SFT weights on all of them (rm_init=sft)
    per round π_r's gold score on val prompts (greedy and sampled, paired against SFT) and KL(π_r || SFT)
    at the end π_R against SFT (and against the run's single-round PPO model) on the TEST prompts, with
              rlhf.evaluate: paired differences with 95% CIs, win / tie / loss, greedy and sampled

What it writes to OUT (default RUN/experiments/rounds; RUN itself is only read): round_R/ (ppo/,
reward_model/, comparisons_{train,val}.jsonl, rm_train.jsonl, rankings_all.jsonl, summary.json),
eval/ (cached test answers), metrics.json, rounds.png, report.md. A round whose summary.json exists is
reused on a re-run; an interrupted PPO or RM stage resumes from its ckpt.pt.

Training never sees the gold oracle: the labelers play the humans (as in the reward-model stage), the
gold scores are measured here, the caller, and handed to no training function.

Simplifications: labelers are simulated (rlhf.world); each round's new prompts are drawn with a new seed
from a world whose prompt space is small for some families, so part of them repeat earlier prompts (the
share is reported as seen_before_share; the candidates, the policy's samples, are new either way); the
default RM update fine-tunes instead of retraining, to fit a 2-core CPU budget (see rm_init).
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from minigpt import checkpoint as ckpt_io
from minigpt.configurator import parse_config, replace_checked, utf8_console
from minigpt.files import make_dir
from minigpt.metrics import save_figure
from minigpt.trainer import pick_device, run_entry_point
from rlhf import data as D
from rlhf import evaluate as ev
from rlhf import ppo, reward_model
from rlhf.comparisons import simulate_rankings
from rlhf.experiments.common import output_dir, run_paths
from rlhf.gold import GoldEvaluator, score
from rlhf.reward import RewardModel, load_reward_model
from rlhf.rm_metrics import evaluate_rankings
from rlhf.world import canonical_text


@dataclass
class RoundsConfig:
    """Iterated RLHF on a finished pipeline run (see the module docstring)."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"rounds": ">= 1", "ppo_iters": ">= 1", "kl_targets": "> 0", "ppo_learning_rate": ">= 0",
              "n_train_prompts": ">= 1", "n_val_prompts": ">= 1", "temperatures": ">= 0", "rm_replay": ">= 0",
              "rm_epochs": "> 0", "rm_learning_rate": ">= 0", "n_val_eval": ">= 1", "eval_prompts": ">= 1",
              "eval_max_new_tokens": ">= 1", "n_boot": ">= 100", "target_win_rate": "in [0, 1]"}
    run: str = "runs/default"          # finished pipeline run, only read: sft/ (π_ref, round 0's policy),
                                       # reward_model/ (round 0's RM, its comparisons), eval/ (cached answers)
    out: str = ""                      # output directory ("" = RUN/experiments/rounds)
    rounds: int = 2                    # R: rounds of PPO -> fresh comparisons -> reward-model update (default preset's
                                       # tuning, val: 3 rounds at KL targets 0.5 / 0.75 / 1.0 gained +0.023 / +0.043 /
                                       # +0.018 greedy and +0.048 / +0.055 / +0.061 sampled over SFT: a third round
                                       # bought little sampled gain, cost greedy, and broke the 15-minute budget)
    stage_preset: str = "default"      # preset of rlhf.ppo and rlhf.reward_model that every round starts from
    seed: int = 0                      # round r's PPO seed is the preset's + seed + r - 1; seeds the replay draw
    device: str = "auto"               # auto = cuda, else mps, else cpu
    progress: bool = True              # progress bars

    # ---- a. PPO from the current policy, KL to SFT throughout
    ppo_iters: int = 30                # PPO iterations per round (the single-round default runs 80; val gold
                                       # peaked near iteration 20 there, with KL at its target after ~5)
    kl_targets: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0])  # KL(π_r || SFT) target of
                                       # round r (nats per response, cumulative); the last one repeats
    carry_kl_coef: bool = True         # start round r's β where round r-1's KL controller left it
    ppo_learning_rate: float = 0.0     # PPO learning rate (0 = the preset's)

    # ---- b. fresh comparisons of the current policy's samples
    n_train_prompts: int = 500         # new train prompts ranked per round (K = 8 candidates each, as the RM stage)
    n_val_prompts: int = 300           # held-out val prompts ranked per round by two labelers (RM accuracy, ceiling)
    temperatures: list[float] = field(default_factory=lambda: [1.0, 1.6])  # the policy's samples per prompt
    data_seed: int = 1000              # round r's train prompts use data_seed + r (the RM stage's used 0)
    val_seed: int = 0                  # seed of the held-out val comparisons: 0 = the RM stage's val prompts, so
                                       # round 0 reproduces its held-out accuracy

    # ---- d. reward-model update
    rm_init: str = "previous"          # "previous": fine-tune RM_{r-1} on the new comparisons + replayed old ones;
                                       # "sft": retrain from the SFT weights on all comparisons so far. Default run,
                                       # round 1, on π_1's held-out comparisons: fine-tuned 64.6% (RM_0: 64.3%) in
                                       # 125 steps, retrained 66.8% in 313 steps (2.5x the time; over the budget)
    rm_replay: float = 1.0             # rm_init=previous: older comparisons replayed per new one (drawn from all)
    rm_epochs: float = 2.0             # passes over the round's RM training set
    rm_learning_rate: float = 1e-4     # peak RM learning rate (0 = the preset's, 3e-4, tuned for training from SFT)

    # ---- evaluation (gold oracle: measured here, never trained on)
    n_val_eval: int = 200              # val prompts of each round's gold score (greedy and sampled) and KL
    eval_prompts: int = 200            # test prompts of the final evaluation (the pipeline's: its answers are reused)
    eval_split: Literal["test", "val"] = "test"  # "test" to report; "val" while tuning (never tune on test)
    eval_seed: int = 0                 # seed of the test prompts, of sampled decoding and of the bootstrap
    eval_max_new_tokens: int = 48      # response budget at evaluation
    n_boot: int = 2000                 # bootstrap resamples per 95% CI
    target_win_rate: float = 0.70      # the goal: π_R beats SFT on >= this share of non-tied test prompts ...
                                       # ... with the 95% CI of the paired gold difference above 0, on both decodings


PRESETS: dict[str, dict] = {
    # tests: seconds on a tiny run (the models learn nothing; the plumbing is what is checked)
    "tiny": dict(rounds=2, stage_preset="tiny", ppo_iters=2, kl_targets=[0.5], n_train_prompts=8, n_val_prompts=6,
                 rm_epochs=1.0, n_val_eval=6, eval_prompts=8, eval_max_new_tokens=12, n_boot=100),
    # the course's student-scale run (runs/small): ~1.5 minutes on 2 cores
    "small": dict(stage_preset="small", ppo_iters=10, kl_targets=[0.25, 0.35, 0.5], n_train_prompts=200,
                  n_val_prompts=150, n_val_eval=100, n_boot=1000),
    # after `python -m rlhf.pipeline` (the dataclass defaults)
    "default": dict(),
}


# ----------------------------------------------------------------------------------------------------
# where things are

def out_dir(cfg: RoundsConfig) -> str:
    return output_dir(cfg.run, cfg.out, "rounds")


def round_dir(cfg: RoundsConfig, r: int) -> str:
    return os.path.join(out_dir(cfg), f"round_{r}")


def policy_dir(cfg: RoundsConfig, r: int) -> str:
    """π_r: the run's SFT model for r = 0, else round r's PPO model."""
    return os.path.join(cfg.run, "sft") if r == 0 else os.path.join(round_dir(cfg, r), "ppo")


def rm_dir(cfg: RoundsConfig, r: int) -> str:
    """RM_r: the run's reward model for r = 0, else round r's."""
    return os.path.join(cfg.run, "reward_model") if r == 0 else os.path.join(round_dir(cfg, r), "reward_model")


def policy_name(r: int) -> str:
    """The candidate source name of π_r's samples in the comparison files ("sft", "ppo1", ...)."""
    return "sft" if r == 0 else f"ppo{r}"


def kl_target(cfg: RoundsConfig, r: int) -> float:
    return cfg.kl_targets[min(r, len(cfg.kl_targets)) - 1]


# ----------------------------------------------------------------------------------------------------
# stage configs: the module's preset, then the round's wiring

def ppo_config(cfg: RoundsConfig, r: int, init_kl_coef: float | None) -> ppo.PPOConfig:
    """Round r's PPO: from π_{r-1} (init_dir; "" = SFT), against RM_{r-1}, KL to SFT (sft_dir) always."""
    base = replace_checked(ppo.PPOConfig(), ppo.PRESETS[cfg.stage_preset], where="rlhf.ppo preset:")
    d = os.path.join(round_dir(cfg, r), "ppo")
    kw = dict(out_dir=d, sft_dir=policy_dir(cfg, 0), init_dir="" if r == 1 else policy_dir(cfg, r - 1),
              rm_dir=rm_dir(cfg, r - 1), max_iters=cfg.ppo_iters, kl_target=kl_target(cfg, r),
              seed=base.seed + cfg.seed + r - 1, device=cfg.device, progress=cfg.progress,
              resume=os.path.exists(os.path.join(d, ckpt_io.RESUME_FILE)), n_print_samples=0)
    if init_kl_coef is not None:
        kw["init_kl_coef"] = init_kl_coef
    if cfg.ppo_learning_rate > 0:
        kw["learning_rate"] = cfg.ppo_learning_rate
    return replace(base, **kw)


def rm_base(cfg: RoundsConfig) -> reward_model.RMConfig:
    return replace_checked(reward_model.RMConfig(), reward_model.PRESETS[cfg.stage_preset],
                           where="rlhf.reward_model preset:")


def rm_config(cfg: RoundsConfig, r: int, train_path: str, val_path: str) -> reward_model.RMConfig:
    """Round r's reward model: the stage on a rankings file, fine-tuned from RM_{r-1} or retrained from SFT."""
    base = rm_base(cfg)
    d = os.path.join(round_dir(cfg, r), "reward_model")
    lr = cfg.rm_learning_rate or base.learning_rate
    return replace(base, out_dir=d, sft_dir=policy_dir(cfg, 0), data=train_path, val_data=val_path,
                   init_rm=rm_dir(cfg, r - 1) if cfg.rm_init == "previous" else "", base_dir="",
                   base_temperatures=[], epochs=cfg.rm_epochs, learning_rate=lr, min_lr=lr / 10,
                   seed=base.seed + cfg.seed + r, device=cfg.device, progress=cfg.progress,
                   resume=os.path.exists(os.path.join(d, ckpt_io.RESUME_FILE)))


def labeling(cfg: RoundsConfig, data_seed: int) -> reward_model.RMConfig:
    """The reward-model stage's way of making candidates (demo, flawed answer, samples, twins), another seed:
    its config stands in for rlhf.comparisons.LabelingConfig (the same fields), as in the stage itself."""
    return replace(rm_base(cfg), data_seed=data_seed, progress=cfg.progress)


# ----------------------------------------------------------------------------------------------------
# measurements (the gold oracle and the labelers' held-out rankings; nothing here trains)

def comparisons(cfg: RoundsConfig, r: int, split: str, n: int, data_seed: int, device) -> list[dict]:
    """Rankings rows of n prompts of `split` whose candidates include π_r's samples (two labelers on val)."""
    policy, tok = ckpt_io.load_model(policy_dir(cfg, r), device)
    return simulate_rankings(split, n, [(policy_name(r), policy, list(cfg.temperatures))], tok,
                             labeling(cfg, data_seed), n_labelers=2 if split == "val" else 1, gold=score)


def rm_accuracy(rm_path: str, rankings_file: str, r: int, device, seed: int = 0) -> dict:
    """A reward model's pairwise accuracy on held-out rankings, against the labelers' ceiling: over all
    pairs, and over the pairs of two samples of π_r (what PPO's update depends on)."""
    rm = RewardModel.load(rm_path, device)
    tok = ckpt_io.load_tokenizer(rm_path)
    items = reward_model.to_items(D.load_rankings(rankings_file), tok, rm.config.block_size)
    rewards = reward_model.score_items(rm, items, D.pad_token_id(tok), device=device)
    m = evaluate_rankings(items, rewards, seed=seed)
    own = m["by_pair_sources"].get(f"{policy_name(r)}-{policy_name(r)}", {})
    return {"accuracy": m["accuracy"], "label_agreement": m["label_agreement"], "pairs": m["pairs"],
            "policy_pairs_accuracy": own.get("accuracy"), "policy_pairs_ceiling": own.get("ceiling"),
            "policy_pairs": own.get("pairs", 0), "gold_accuracy": m["gold_accuracy"]}


def val_gold(cfg: RoundsConfig, r: int, device) -> dict:
    """π_r's gold score on val prompts, greedy and sampled, paired against SFT; KL(π_r || SFT)."""
    evaluator = GoldEvaluator(cfg.n_val_eval, seed=0, max_new_tokens=cfg.eval_max_new_tokens, split="val")
    sft, tok = ckpt_io.load_model(policy_dir(cfg, 0), device)
    if r == 0:
        out = {"kl": 0.0, "kl_ci": [0.0, 0.0]}
        for d, t in (("greedy", 0.0), ("sampled", 1.0)):
            out[d] = {"gold": evaluator(sft, tok, t)["gold"], "gold_diff": 0.0, "gold_diff_ci": [0.0, 0.0]}
        return out
    policy, _ = ckpt_io.load_model(policy_dir(cfg, r), device)
    vs = evaluator.versus(policy, sft, tok)
    for d in ("greedy", "sampled"):
        vs[d] = {k: v for k, v in vs[d].items() if k != "samples"}
    return vs


# ----------------------------------------------------------------------------------------------------
# the rounds

def round_zero(cfg: RoundsConfig, device) -> dict:
    """Round 0's record: SFT's val gold, and RM_0's accuracy on held-out comparisons of SFT samples."""
    rd = round_dir(cfg, 0)
    t0, c0 = time.time(), time.process_time()
    val_path = os.path.join(rd, "comparisons_val.jsonl")
    if not os.path.exists(val_path):
        D.write_jsonl(val_path, comparisons(cfg, 0, "val", cfg.n_val_prompts, cfg.val_seed, device))
    rec = {"round": 0, "policy": policy_dir(cfg, 0), "rm": rm_dir(cfg, 0), "kl_target": 0.0,
           "val": val_gold(cfg, 0, device), "rm_accuracy_before": None,
           "rm_accuracy_after": rm_accuracy(rm_dir(cfg, 0), val_path, 0, device),
           "comparisons": {"prompts_total": len(previous_rankings(cfg, 0))}}
    rec["seconds"] = {"total": time.time() - t0, "cpu": time.process_time() - c0}
    ckpt_io.write_summary(rd, rec)
    return rec


def previous_rankings(cfg: RoundsConfig, r: int) -> list[dict]:
    """Every comparison before round r + 1: RM_0's training rankings, then each round's new ones."""
    path = (os.path.join(cfg.run, "reward_model", "data", "rm_train.jsonl") if r == 0
            else os.path.join(round_dir(cfg, r), "rankings_all.jsonl"))
    return [json_row(x) for x in D.load_rankings(path)] if os.path.exists(path) else []


def json_row(rec) -> dict:
    """A Ranking record back as its JSONL row."""
    return {"prompt": rec.prompt, "responses": rec.responses, "ranks": rec.ranks, **rec.meta}


def run_round(cfg: RoundsConfig, r: int, device, init_kl_coef: float | None) -> dict:
    """Round r (a-d of the module docstring); writes round_r/summary.json and returns it."""
    rd = round_dir(cfg, r)
    os.makedirs(rd, exist_ok=True)
    seconds: dict = {}
    t_round, c_round = time.time(), time.process_time()

    # ---- a. PPO from π_{r-1} against RM_{r-1}, KL to SFT
    pcfg = ppo_config(cfg, r, init_kl_coef)
    t0 = time.time()
    if not ckpt_io.is_finished(pcfg.out_dir):
        ppo.train_ppo(pcfg, evaluator=None)           # gold is measured below, on the finished policy
        if not ckpt_io.is_finished(pcfg.out_dir):
            raise SystemExit(f"error: round {r}: PPO stopped before finishing; re-run to resume it")
    seconds["ppo"] = time.time() - t0
    ppo_summary = ckpt_io.read_summary(pcfg.out_dir)

    # ---- b, c. fresh train comparisons and held-out val comparisons of π_r's samples
    t0 = time.time()
    train_new, val_path = os.path.join(rd, "comparisons_train.jsonl"), os.path.join(rd, "comparisons_val.jsonl")
    if not os.path.exists(val_path):
        D.write_jsonl(train_new, comparisons(cfg, r, "train", cfg.n_train_prompts, cfg.data_seed + r, device))
        D.write_jsonl(val_path, comparisons(cfg, r, "val", cfg.n_val_prompts, cfg.val_seed, device))
    new = [json_row(x) for x in D.load_rankings(train_new)]
    old = previous_rankings(cfg, r - 1)
    seen = {canonical_text(row["prompt"]) for row in old}
    all_path = os.path.join(rd, "rankings_all.jsonl")
    D.write_jsonl(all_path, old + new)                # every comparison so far (the loop's data set)
    if cfg.rm_init == "previous":                     # the new ones + a replayed sample of the older ones
        replay = random.Random(f"rounds-replay:{cfg.seed}:{r}").sample(old, min(len(old), round(cfg.rm_replay * len(new))))
        train_rows = new + replay
    else:
        train_rows = old + new
    rm_train = os.path.join(rd, "rm_train.jsonl")
    D.write_jsonl(rm_train, train_rows)
    seconds["comparisons"] = time.time() - t0
    before = rm_accuracy(rm_dir(cfg, r - 1), val_path, r, device)

    # ---- d. RM_r
    rcfg = rm_config(cfg, r, rm_train, val_path)
    t0 = time.time()
    if not ckpt_io.is_finished(rcfg.out_dir):
        reward_model.train_reward_model(rcfg, gold=score)   # gold only annotates held-out pairs ("vs gold")
        if not ckpt_io.is_finished(rcfg.out_dir):
            raise SystemExit(f"error: round {r}: the reward model stopped before finishing; re-run to resume it")
    seconds["rm"] = time.time() - t0
    rm_summary = ckpt_io.read_summary(rcfg.out_dir)
    after = rm_accuracy(rm_dir(cfg, r), val_path, r, device)

    # ---- gold on val prompts, KL to SFT
    t0 = time.time()
    val = val_gold(cfg, r, device)
    seconds["eval"] = time.time() - t0
    seconds["total"], seconds["cpu"] = time.time() - t_round, time.process_time() - c_round
    rec = {
        "round": r, "policy": pcfg.out_dir, "rm": rm_dir(cfg, r - 1), "kl_target": pcfg.kl_target, "val": val,
        "rm_accuracy_before": before, "rm_accuracy_after": after,
        "ppo": {**{k: ppo_summary.get(k) for k in ("iters", "kl", "kl_coef", "seconds")},
                "init_kl_coef": pcfg.init_kl_coef, "init_dir": pcfg.init_dir or pcfg.sft_dir},
        "comparisons": {"new_prompts": len(new), "seen_before_share": float(np.mean(
            [canonical_text(row["prompt"]) in seen for row in new])) if new else None,
            "prompts_total": len(old) + len(new), "rm_train_prompts": len(train_rows)},
        "reward_model": {"init": rcfg.init_rm or rcfg.sft_dir, "steps": rm_summary.get("steps"),
                         "seconds": rm_summary.get("seconds"), "val_accuracy": rm_summary.get("val_accuracy")},
        "seconds": seconds,
    }
    ckpt_io.write_summary(rd, rec)
    return rec


# ----------------------------------------------------------------------------------------------------
# the final evaluation on test prompts (rlhf.evaluate, as the pipeline evaluates)

def final_evaluation(cfg: RoundsConfig, device) -> dict:
    """π_R, SFT and the run's single-round PPO model on the same test prompts: summaries, KL to SFT, paired
    comparisons. The run's cached answers (RUN/eval) are reused when they were made with these settings."""
    ecfg = ev.EvalConfig(n_prompts=cfg.eval_prompts, split=cfg.eval_split, seed=cfg.eval_seed,
                         max_new_tokens=cfg.eval_max_new_tokens, temperature=1.0, n_boot=cfg.n_boot, device=cfg.device)
    eval_dir = os.path.join(out_dir(cfg), "eval")
    os.makedirs(eval_dir, exist_ok=True)
    for stage in ("sft", "ppo"):                      # copy; stage_rows checks the fingerprint before use
        for name in (f"{stage}.jsonl", f"{stage}.meta.json"):
            src, dst = os.path.join(cfg.run, "eval", name), os.path.join(eval_dir, name)
            if os.path.exists(src) and not os.path.exists(dst):
                shutil.copyfile(src, dst)
    examples = ev.eval_examples(ecfg.n_prompts, ecfg.seed, ecfg.split)
    rm_path = rm_dir(cfg, 0)                          # every answer is also scored by RM_0, as in the pipeline
    rm, rm_tok = load_reward_model(rm_path, device)
    dirs = {"sft": policy_dir(cfg, 0), "rounds": policy_dir(cfg, cfg.rounds)}
    if os.path.exists(os.path.join(cfg.run, "ppo", ckpt_io.MODEL_FILE)):
        dirs["ppo"] = os.path.join(cfg.run, "ppo")
    rows = {s: ev.stage_rows(s, d, eval_dir, examples, ecfg, rm, rm_tok, rm_path, cfg.progress) for s, d in dirs.items()}
    out = {"split": ecfg.split, "n": len(examples), "seed": ecfg.seed, "models": dirs, "stages": {}, "comparisons": {}}
    for stage, rs in rows.items():
        out["stages"][stage] = {d: ev.summarize(ev.by_decoding(rs, d), ecfg.n_boot, ecfg.seed) for d in ev.DECODINGS}
        if stage != "sft":
            out["stages"][stage]["kl"] = ev.cached_kl(eval_dir, stage, dirs[stage], "sft", dirs["sft"], examples, ecfg,
                                                      device)[0]
    for a, b in (("rounds", "sft"), ("ppo", "sft"), ("rounds", "ppo")):
        if a in rows and b in rows:
            out["comparisons"][f"{a}_vs_{b}"] = ev.compare_by_decoding(rows[a], rows[b], ecfg)
    c = out["comparisons"]["rounds_vs_sft"]
    out["target"] = {d: {"ci_above_0": c[d]["gold_diff"]["ci"][0] > 0,
                         "non_tied_win_rate": c[d]["gold"]["win_rate"],
                         "met": c[d]["gold_diff"]["ci"][0] > 0 and (c[d]["gold"]["win_rate"] or 0) >= cfg.target_win_rate}
                     for d in ev.DECODINGS}
    out["target"]["met"] = all(out["target"][d]["met"] for d in ev.DECODINGS)
    return out


# ----------------------------------------------------------------------------------------------------
# plot and report

def plot_rounds(records: list[dict], path: str) -> str:
    """rounds.png: per round, val gold (greedy, sampled), its paired gain over SFT, the RM's accuracy on
    held-out comparisons of the current policy's samples (before / after its update), and KL to SFT."""
    fig = Figure(figsize=(11, 7.5))
    FigureCanvasAgg(fig)
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    rs = [rec["round"] for rec in records]
    for d, color in (("greedy", "tab:blue"), ("sampled", "tab:orange")):
        ax1.plot(rs, [rec["val"][d]["gold"] for rec in records], "o-", color=color, label=d)
        diff = np.array([rec["val"][d]["gold_diff"] for rec in records])
        ci = np.array([rec["val"][d]["gold_diff_ci"] for rec in records])
        ax2.errorbar(rs, diff, yerr=[diff - ci[:, 0], ci[:, 1] - diff], fmt="o-", color=color, capsize=3, label=d)
    ax1.set_title("gold score of π_r (val prompts)")
    ax2.axhline(0, color="gray", lw=1)
    ax2.set_title("gold gain of π_r over SFT (val, paired, 95% CI)")
    for key, label, style in (("accuracy", "all pairs", "-"), ("policy_pairs_accuracy", "pairs of π_r's samples", ":")):
        after = [rec["rm_accuracy_after"][key] if rec["rm_accuracy_after"] else None for rec in records]
        before = [rec["rm_accuracy_before"][key] if rec["rm_accuracy_before"] else None for rec in records]
        ax3.plot(rs, [np.nan if x is None else x for x in before], "s" + style, color="tab:red",
                 label=f"RM_(r-1) (before), {label}")
        ax3.plot(rs, [np.nan if x is None else x for x in after], "o" + style, color="tab:green",
                 label=f"RM_r (after), {label}")
    ceiling = [rec["rm_accuracy_after"]["label_agreement"] for rec in records if rec["rm_accuracy_after"]]
    ax3.plot(rs[:len(ceiling)], ceiling, "--", color="gray", label="labelers' agreement (ceiling)")
    ax3.set_title("RM accuracy on held-out comparisons of π_r")
    ax3.legend(fontsize=7)
    ax4.plot(rs, [rec["val"]["kl"] for rec in records], "o-", color="tab:purple", label="KL(π_r || SFT), val")
    ax4.plot(rs, [rec["kl_target"] for rec in records], "x--", color="gray", label="PPO's KL target")
    ax4.set_title("KL to SFT (nats per response)")
    for ax in (ax1, ax2, ax4):
        ax.legend(fontsize=8)
    for ax in (ax1, ax2, ax3, ax4):
        ax.set_xlabel("round")
        ax.set_xticks(rs)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def _f(x, d: int = 3, sign: bool = False) -> str:
    return "n/a" if x is None else (f"{x:+.{d}f}" if sign else f"{x:.{d}f}")


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def report_text(m: dict) -> str:
    """report.md: the per-round table, the final test comparison and the verdict on the target."""
    cfg = m["config"]
    lines = [f"# Iterated RLHF: {cfg['rounds']} rounds on `{cfg['run']}`", "",
             "PPO from the current policy (KL to SFT throughout) -> fresh comparisons of its samples -> reward-model "
             f"update ({cfg['rm_init']}); `python -m rlhf.experiments rounds --run={cfg['run']}`.", "",
             "![rounds](rounds.png)", "",
             "| round | gold greedy (val) | gold sampled (val) | gain greedy [95% CI] | gain sampled [95% CI] | KL to SFT "
             "| RM acc. before / after (all pairs) | ... on pairs of π_r's samples | ceiling | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for rec in m["rounds"]:
        v, b, a = rec["val"], rec["rm_accuracy_before"] or {}, rec["rm_accuracy_after"] or {}
        gains = [f"{_f(v[d]['gold_diff'], sign=True)} [{_f(v[d]['gold_diff_ci'][0], sign=True)}, "
                 f"{_f(v[d]['gold_diff_ci'][1], sign=True)}]" for d in ("greedy", "sampled")]
        lines.append(f"| {rec['round']} | {_f(v['greedy']['gold'])} | {_f(v['sampled']['gold'])} | {gains[0]} | "
                     f"{gains[1]} | {_f(v['kl'], 2)} | {_pct(b.get('accuracy'))} / {_pct(a.get('accuracy'))} | "
                     f"{_pct(b.get('policy_pairs_accuracy'))} / {_pct(a.get('policy_pairs_accuracy'))} | "
                     f"{_pct(a.get('label_agreement'))} | {rec['seconds']['total']:.0f} |")
    f = m["final"]
    lines += ["", f"## Final: π_{cfg['rounds']} on {f['n']} {f['split']} prompts", "",
              "| model | gold greedy [95% CI] | gold sampled [95% CI] | KL to SFT |", "|---|---|---|---|"]
    for s, name in (("sft", "SFT"), ("ppo", "PPO, one round (the run's)"), ("rounds", f"PPO, {cfg['rounds']} rounds")):
        if s in f["stages"]:
            st = f["stages"][s]
            g, sa = st["greedy"], st["sampled"]
            lines.append(f"| {name} | {_f(g['gold_score'])} [{_f(g['gold_ci'][0])}, {_f(g['gold_ci'][1])}] | "
                         f"{_f(sa['gold_score'])} [{_f(sa['gold_ci'][0])}, {_f(sa['gold_ci'][1])}] | "
                         f"{_f(st['kl']['mean'], 2) if 'kl' in st else '0'} |")
    lines += ["", "| comparison | decoding | paired gain [95% CI] | W / T / L | non-tied win rate |", "|---|---|---|---|---|"]
    for key, c in f["comparisons"].items():
        for d in ("greedy", "sampled"):
            g = c[d]
            lines.append(f"| {key.replace('_vs_', ' vs ')} | {d} | {_f(g['gold_diff']['mean'], sign=True)} "
                         f"[{_f(g['gold_diff']['ci'][0], sign=True)}, {_f(g['gold_diff']['ci'][1], sign=True)}] | "
                         f"{g['gold']['wins']} / {g['gold']['ties']} / {g['gold']['losses']} | {_pct(g['gold']['win_rate'])} |")
    t = f["target"]
    lines += ["", f"**Target** (π_R beats SFT on both decodings, CI above 0 and >= {_pct(cfg['target_win_rate'])} of "
              f"non-tied pairs): **{'met' if t['met'] else 'not met'}** (greedy: CI above 0 {t['greedy']['ci_above_0']}, "
              f"{_pct(t['greedy']['non_tied_win_rate'])}; sampled: CI above 0 {t['sampled']['ci_above_0']}, "
              f"{_pct(t['sampled']['non_tied_win_rate'])}).", "",
              f"Time: {m['seconds']['total']:.0f} s wall for the rounds and the final evaluation "
              f"({m['seconds']['cpu']:.0f} s of CPU time; rounds 0..R: "
              + ", ".join(f"{x:.0f}" for x in m["seconds"]["rounds"]) + f" s; final evaluation "
              f"{m['seconds']['final_eval']:.0f} s; {m['seconds']['torch_threads']} torch thread(s)).", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# the experiment

def run_rounds(cfg: RoundsConfig) -> dict:
    """Round 0, rounds 1..R (finished ones reused), the final test evaluation, metrics.json, rounds.png,
    report.md; returns metrics.json's content."""
    if cfg.rounds < 1:
        raise SystemExit("error: --rounds must be at least 1")
    if cfg.rm_init not in ("previous", "sft"):
        raise SystemExit(f"error: --rm_init must be 'previous' or 'sft', got {cfg.rm_init!r}")
    if not cfg.kl_targets:
        raise SystemExit("error: --kl_targets needs at least one value")
    missing = [m.__name__ for m in (ppo, reward_model) if cfg.stage_preset not in m.PRESETS]
    if missing:
        raise SystemExit(f"error: --stage_preset={cfg.stage_preset}: not a preset of {' and '.join(missing)}")
    run_paths(cfg.run, ("sft", "reward_model"))      # a one-line error when RUN is not a finished pipeline run
    out = out_dir(cfg)
    make_dir(out, "--out")
    ckpt_io.atomic_write_json(os.path.join(out, "config.json"), asdict(cfg))
    device = pick_device(cfg.device)
    t0 = time.time()
    records = []
    bar = tqdm(total=cfg.rounds + 2, desc="rounds", dynamic_ncols=True, disable=not cfg.progress)
    for r in range(cfg.rounds + 1):
        rec = ckpt_io.read_summary(round_dir(cfg, r))
        tqdm.write(f"\n==== round {r} of {cfg.rounds}{' - finished earlier, reusing it' if rec else ''} - "
                   f"{time.time() - t0:.0f}s elapsed ====")
        if rec is None:
            carry = records[-1].get("ppo", {}).get("kl_coef") if (records and cfg.carry_kl_coef) else None
            rec = round_zero(cfg, device) if r == 0 else run_round(cfg, r, device, carry)
        records.append(rec)
        print_round(rec)
        bar.update(1)
    tqdm.write(f"\n==== final evaluation on {cfg.eval_prompts} {cfg.eval_split} prompts ====")
    t_eval, c_eval = time.time(), time.process_time()
    final = final_evaluation(cfg, device)
    bar.update(1)
    bar.close()
    # wall and CPU seconds of each round when it ran (a reused round keeps its own), and of the final evaluation
    rounds_wall, rounds_cpu = [rec["seconds"]["total"] for rec in records], [rec["seconds"]["cpu"] for rec in records]
    final_wall, final_cpu = time.time() - t_eval, time.process_time() - c_eval
    metrics = {"config": asdict(cfg), "out": out, "rounds": records, "final": final,
               "seconds": {"rounds": rounds_wall, "rounds_cpu": rounds_cpu, "final_eval": final_wall,
                           "final_eval_cpu": final_cpu, "total": sum(rounds_wall) + final_wall,
                           "cpu": sum(rounds_cpu) + final_cpu, "this_run": time.time() - t0,
                           "torch_threads": torch.get_num_threads()}}
    metrics["plot"] = plot_rounds(records, os.path.join(out, "rounds.png"))
    ckpt_io.atomic_write_json(os.path.join(out, "metrics.json"), metrics)
    ckpt_io.atomic_write_text(os.path.join(out, "report.md"), report_text(metrics))
    print_final(metrics)
    return metrics


def print_round(rec: dict) -> None:
    v, b, a = rec["val"], rec["rm_accuracy_before"] or {}, rec["rm_accuracy_after"] or {}
    tqdm.write(f"round {rec['round']}: val gold greedy {_f(v['greedy']['gold'])} ({_f(v['greedy']['gold_diff'], sign=True)} "
               f"vs SFT), sampled {_f(v['sampled']['gold'])} ({_f(v['sampled']['gold_diff'], sign=True)}); KL to SFT "
               f"{_f(v['kl'], 2)}; RM accuracy on π_{rec['round']}'s comparisons {_pct(b.get('accuracy'))} -> "
               f"{_pct(a.get('accuracy'))} (pairs of its samples {_pct(b.get('policy_pairs_accuracy'))} -> "
               f"{_pct(a.get('policy_pairs_accuracy'))}; ceiling {_pct(a.get('label_agreement'))}); "
               f"{rec['seconds']['total']:.0f}s")


def print_final(m: dict) -> None:
    f = m["final"]
    for key, c in f["comparisons"].items():
        for d in ("greedy", "sampled"):
            g = c[d]
            print(f"{key:<15} {d:<8} gain {_f(g['gold_diff']['mean'], sign=True)} [{_f(g['gold_diff']['ci'][0], sign=True)}, "
                  f"{_f(g['gold_diff']['ci'][1], sign=True)}], W/T/L {g['gold']['wins']}/{g['gold']['ties']}/"
                  f"{g['gold']['losses']} (non-tied {_pct(g['gold']['win_rate'])})")
    print(f"target {'met' if f['target']['met'] else 'not met'}; {m['seconds']['total']:.0f}s of compute "
          f"({m['seconds']['this_run']:.0f}s this run); {m['out']}/metrics.json, {m['out']}/report.md, {m['plot']}")


def run_or_say_where_to_go_on(cfg: RoundsConfig) -> dict:
    """run_rounds; on Ctrl-C, where the finished rounds are and how to go on (status 130)."""
    try:
        return run_rounds(cfg)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished rounds in {out_dir(cfg)} are kept; run the same command again to continue",
              file=sys.stderr)
        raise SystemExit(130) from None


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(RoundsConfig, argv, PRESETS, prog="python -m rlhf.experiments rounds")
    # a damaged run file (a malformed comparison, another stage's checkpoint) is one line, as in the stages
    return run_entry_point(run_or_say_where_to_go_on, cfg, errors=(D.DataError, FileNotFoundError))


if __name__ == "__main__":
    utf8_console()
    main()
