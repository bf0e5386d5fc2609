"""What the experiments share: the finished pipeline run they build on, PPO started from a preset of
rlhf.ppo, and a gold evaluator that keeps what each of PPO's evaluations saw.

    paths = run_paths("runs/default", ("sft", "reward_model"))   # checked: one-line error if missing
    cfg = ppo_config("default", sft_dir=paths["sft"], rm_dir=paths["reward_model"], out_dir=OUT + "/ppo")
    summary, evals = tracked_ppo(cfg)           # evals[k]: iter, gold, rm, kl, per-prompt gold on val prompts

An experiment is a caller, like rlhf.pipeline: it hands the gold judge (rlhf.gold.GoldEvaluator) to the
training stages' public functions and never changes what they optimise. Every part an experiment trains
writes its own directory under OUT; a part whose directory is finished with the same config is reused,
so an interrupted or re-plotted experiment does not train it again (delete OUT to start over).
"""

from __future__ import annotations

import os

from minigpt import checkpoint as ckpt_io
from minigpt.checkpoint import read_json_file as read_json   # noqa: F401 (the experiments import it from here)
from minigpt.configurator import replace_checked
from minigpt.trainer import pick_device, read_metrics
from rlhf import ppo
from rlhf.gold import GoldEvaluator, kl_to_reference
from rlhf.reward import RewardModel
from rlhf.rollout import score_responses

# what each part of a pipeline run is made by, for the error message when it is missing
MAKERS = {"sft": "rlhf.sft", "reward_model": "rlhf.reward_model", "pretrain": "rlhf.pretrain",
          "tokenizer": "rlhf.pipeline"}


def run_paths(run: str, parts: tuple[str, ...]) -> dict[str, str]:
    """{part: RUN/part} for the parts an experiment needs, each checked to be finished (a one-line
    SystemExit otherwise: the experiments build on a finished `python -m rlhf.pipeline` run)."""
    if not os.path.isdir(run):
        raise SystemExit(f"error: --run={run}: no such directory; run `python -m rlhf.pipeline` first "
                         f"(or point --run at its --out)")
    if ckpt_io.is_stage_dir(run):
        raise SystemExit(f"error: --run={run} is one stage's directory; --run wants the pipeline run that holds "
                         f"the stages (here perhaps {os.path.dirname(os.path.abspath(run))})")
    paths = {p: os.path.join(run, p) for p in parts}
    for part, path in paths.items():
        done = (os.path.exists(os.path.join(path, ckpt_io.TOKENIZER_FILE)) if part == "tokenizer"
                else ckpt_io.is_finished(path) and os.path.exists(os.path.join(path, ckpt_io.MODEL_FILE)))
        if not done:
            raise SystemExit(f"error: {path}: not a finished {part} stage; run `python -m rlhf.pipeline "
                             f"--out {run}` (or `python -m {MAKERS.get(part, 'rlhf.pipeline')}`) first")
    return paths


def output_dir(run: str, out: str, name: str) -> str:
    """--out, or RUN/experiments/NAME when it is empty; never the run directory or one of its stages'
    (anywhere in RUN but RUN/experiments/), whose metrics.json, report.md, config.json and stage
    directories the experiment would write over."""
    default = os.path.join(run, "experiments", name)
    if out:
        where, run_dir = os.path.realpath(out), os.path.realpath(run)
        inside = where == run_dir or where.startswith(run_dir + os.sep)
        if inside and not where.startswith(os.path.join(run_dir, "experiments") + os.sep):
            raise SystemExit(f"error: --out={out} is inside the --run directory: the experiment would write over "
                             f"the run's own files; leave --out out (the default is {default}) or choose a "
                             f"directory outside {run} (or in {os.path.join(run, 'experiments')})")
    return out or default


def config_matches(run_dir: str, cfg, ignore: tuple[str, ...] = ()) -> bool:
    """True when run_dir/config.json holds the same config as `cfg` (minigpt.checkpoint.config_differences:
    progress, resume, device and the fields in `ignore` aside): the part there was, or is being, trained
    with these settings."""
    return ckpt_io.config_differences(run_dir, cfg, ignore) == {}


def finished_with(run_dir: str, cfg, ignore: tuple[str, ...] = ()) -> bool:
    """True when run_dir holds a finished part (summary.json) trained with the same config as `cfg`
    (config_matches)."""
    return ckpt_io.is_finished(run_dir) and config_matches(run_dir, cfg, ignore)


def ppo_config(preset: str, **overrides) -> ppo.PPOConfig:
    """rlhf.ppo's preset `preset` (the settings `python -m rlhf.ppo --preset PRESET` uses), then `overrides`."""
    if preset not in ppo.PRESETS:
        raise SystemExit(f"error: unknown rlhf.ppo preset {preset!r}; choose one of: {', '.join(ppo.PRESETS)}")
    cfg = replace_checked(ppo.PPOConfig(), ppo.PRESETS[preset], where=f"rlhf.ppo preset {preset!r}:")
    return replace_checked(cfg, overrides, where="experiment's PPO setting")


class TrackingEvaluator:
    """PPO's evaluator hook (rlhf.gold.GoldEvaluator's interface) that also keeps, for every sampled
    evaluation, what the experiments plot and PPO's metrics.jsonl does not hold: each prompt's gold
    score, the proxy reward model's score of the same answer (no_stop_reward for an answer without
    <|end|>, as in PPO's rollouts), and KL(π || π_SFT) in nats per response measured on the very answers
    that were judged (rlhf.gold.kl_to_reference samples them again with the same per-prompt streams).

    history[k] = {"gold": mean, "rm": mean, "kl": mean, "kl_ci", "gold_per_prompt", "rm_per_prompt",
    "stop_rate", "samples"}; greedy[k] = the greedy answers' gold of the same evaluation, per prompt."""

    def __init__(self, gold: GoldEvaluator, ref_model, reward_model, tokenizer, no_stop_reward: float | None):
        self.gold, self.ref_model, self.reward_model, self.tokenizer = gold, ref_model, reward_model, tokenizer
        self.no_stop_reward = no_stop_reward
        self.history: list[dict] = []
        self.greedy: list[list[float]] = []

    @property
    def conversations(self) -> list:
        return self.gold.conversations

    def __call__(self, model, tokenizer, temperature: float = 0.0, seed: int | None = None) -> dict:
        res = self.gold(model, tokenizer, temperature, seed=seed)
        if temperature <= 0:
            self.greedy.append([r["score"] for r in res["rows"]])
            return res
        rows = res["rows"]
        rm = score_responses(self.reward_model, self.tokenizer, self.conversations, [r["response"] for r in rows],
                             [r["stopped"] for r in rows])
        rm = [x if r["stopped"] or self.no_stop_reward is None else self.no_stop_reward for x, r in zip(rm, rows)]
        kl = kl_to_reference(model, self.ref_model, tokenizer, self.conversations, self.gold.max_new_tokens,
                             self.gold.batch_size, self.gold.seed if seed is None else seed, temperature)
        n = max(len(rows), 1)
        self.history.append({
            "gold": res["gold"], "rm": sum(rm) / n, "kl": max(kl["mean"], 0.0), "kl_ci": kl["ci"],
            "stop_rate": res["stop_rate"], "mean_chars": sum(len(r["response"]) for r in rows) / n,
            "gold_per_prompt": [r["score"] for r in rows], "rm_per_prompt": rm,
            "samples": [{"prompt": r["prompt"], "response": r["response"], "gold": r["score"], "rm": x}
                        for r, x in zip(rows[:4], rm)]})
        return res


def tracked_ppo(cfg: ppo.PPOConfig) -> tuple[dict, list[dict]]:
    """rlhf.ppo.train_ppo(cfg) judged by a TrackingEvaluator on the cfg.n_eval_prompts val prompts of
    rlhf.ppo.gold_evaluator (cfg.eval_seed: the prompt set and the sampling streams) every
    cfg.eval_interval iterations and at the end.

    Returns (PPO's summary, evaluations), evaluations[k] = {"iter", "gold" (sampled), "gold_greedy", "rm",
    "kl", "gold_per_prompt", "gold_greedy_per_prompt", ...}; evaluation 0 is the SFT model itself (KL 0).
    Both are also in cfg.out_dir (summary.json, evaluations.json); a finished run with the same config is
    read back, not retrained."""
    path = os.path.join(cfg.out_dir, "evaluations.json")
    evals = read_json(path, want=list)
    if finished_with(cfg.out_dir, cfg) and evals is not None:
        return ckpt_io.read_summary(cfg.out_dir), evals
    device = pick_device(cfg.device)
    ref_model, tokenizer = ckpt_io.load_model(cfg.sft_dir, device)
    reward_model = RewardModel.load(cfg.rm_dir, device)
    gold = ppo.gold_evaluator(cfg, GoldEvaluator)
    if gold is None:
        raise SystemExit("error: the experiment's PPO needs evaluations: n_eval_prompts must be > 0")
    evaluator = TrackingEvaluator(gold, ref_model, reward_model, tokenizer, cfg.no_stop_reward)
    summary = ppo.train_ppo(cfg, evaluator)          # (a Ctrl-C raises KeyboardInterrupt: exit 130)
    if not ckpt_io.is_finished(cfg.out_dir):
        raise SystemExit(f"error: PPO in {cfg.out_dir} stopped before finishing; run the same command again")
    records = [r for r in read_metrics(os.path.join(cfg.out_dir, "metrics.jsonl")) if "gold" in r]
    if len(records) != len(evaluator.history) or len(evaluator.greedy) != len(records):
        raise RuntimeError(f"{len(records)} evaluations logged, {len(evaluator.history)} tracked")
    evals = [{"iter": r["iter"], **h, "gold_greedy": sum(g) / max(len(g), 1), "gold_greedy_per_prompt": g}
             for r, h, g in zip(records, evaluator.history, evaluator.greedy)]
    ckpt_io.atomic_write_json(path, evals)
    return summary, evals


def write_text(path: str, text: str) -> str:
    """A text file (report.md), written atomically."""
    ckpt_io.atomic_write_text(path, text)
    return path
