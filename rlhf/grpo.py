"""Group relative policy optimisation (GRPO): PPO without a value model, for contrast with rlhf/ppo.py.

    python -m rlhf.grpo --preset default       # after rlhf.reward_model
    python -m rlhf.grpo --preset tiny --sft_dir=runs/tiny/sft --rm_dir=runs/tiny/reward_model --out_dir=runs/tiny/grpo
    python -m rlhf.grpo --out_dir=runs/default/grpo --resume
    python -m rlhf.grpo --baseline=rloo        # RLOO's leave-one-out baseline instead of GRPO's mean/std
    torchrun --standalone --nproc_per_node=2 -m rlhf.grpo --preset default   # each rank samples its own groups

PPO needs a value model V(s_t) as large as the policy to turn one score per response into per-token
advantages. GRPO (Shao et al. 2024, DeepSeekMath §4.1) drops it: for each prompt q it samples a *group*
of G responses o_1..o_G from the current policy, scores each with the frozen reward model, and uses the
group as the baseline. Every token of response i gets the same advantage

    Â_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)                       (DeepSeekMath §4.1.2)

RLOO (Ahmadian et al. 2024, "Back to Basics") is the other critic-free baseline: `--baseline=rloo` uses
Â_i = r_i - mean of the other G-1 rewards (rlhf.losses.rloo_advantages; no std division). Only the
baseline changes: the paper's RLOO is plain REINFORCE with the KL in the reward, here it sits in GRPO's loss.

The policy maximises PPO's clipped surrogate with the KL to the reference model moved out of the
reward and into the loss, estimated per token with the unbiased, always >= 0 "k3" estimator:

    J(θ) = E[ 1/G Σ_i 1/|o_i| Σ_t { min(ρ_it Â_i, clip(ρ_it, 1-ε, 1+ε) Â_i) - β D_KL,it } ]      (eq. 3)
    ρ_it = π_θ(o_it | q, o_i,<t) / π_old(o_it | ...),    D_KL,it = π_ref/π_θ - log(π_ref/π_θ) - 1  (eq. 4)

One iteration, in the order the code runs:
    1. rollout   prompts_per_iter prompts, each repeated group_size times, sampled from the policy with the
                 KV-cache generator (rlhf.rollout: left-padded prompts, temperature, stop at <|end|>,
                 truncate after the first stop)
    2. score     the RM's score of each reply's text (no_stop_reward when the response never said <|end|>);
                 old-policy and reference log-probs by forward passes (rlhf.rollout.response_logprobs)
    3. advantage group_advantages (or rloo_advantages): zero mean in every group, exactly 0 when the whole group ties
    4. update    ppo_epochs passes over shuffled minibatches: ppo_policy_loss + β · masked mean of k3
    Gold score (the oracle) of greedy and sampled answers on fixed val prompts every eval_interval
    iterations: measured, never trained on.

Simplifications relative to DeepSeekMath:
  1. Scale: a tiny GPT, G = 4 samples per prompt (the paper: 64), tens of iterations; outcome supervision
     only (one reward per response), no process supervision, no iterative RL that retrains the reward model.
  2. The loss averages over all valid tokens of a minibatch (rlhf.losses.ppo_policy_loss, a masked mean)
     instead of 1/G Σ_i 1/|o_i| Σ_t (a mean per response, then over responses); the token mean does not
     favour short responses, as later work (DAPO, Dr. GRPO) recommends.
  3. The group std is the population std (divide by G); a group whose rewards all tie gets advantage 0
     exactly (no learning signal), and the share of such groups is logged.
  4. A response without <|end|> gets a fixed score (no_stop_reward), as in rlhf.ppo.
  5. π_ref is the SFT model and stays fixed (the paper also keeps π_ref fixed within an iteration of its
     outer loop); rollout temperature = training temperature, no top-k/top-p.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from minigpt import checkpoint as ckpt_io
from minigpt.configurator import parse_config, utf8_console
from minigpt.distributed import DistInfo, barrier, mean_over_processes, teardown_distributed
from minigpt.trainer import (autocast_context, configure_optimizer, make_generator, plot_panels, run_entry_point,
                             seed_everything, set_lr, start_stage)
from rlhf import data as D
from rlhf.losses import (entropy_from_logits, group_advantages, kl_k3,  # noqa: F401  (G.group_advantages)
                         masked_mean, ppo_policy_loss, rloo_advantages, token_logprobs)
from rlhf.rl_loop import IterationRun, data_parallel
from rlhf.rl_update import eval_record, load_prompt_pool, load_rl_models, minibatch_updates
from rlhf.rollout import (MIN_PROMPT_TOKENS, render_prompts, response_logits, response_logprobs, rm_reward, sample,
                          sampling_generator, trim_padding)
from rlhf.stats import format_number

# -----------------------------------------------------------------------------
# config


@dataclass
class GRPOConfig:
    """GRPO: PPO's clipped objective with group-normalised rewards as advantages and no value model."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"max_iters": ">= 0", "prompts_per_iter": ">= 1", "micro_batch_size": ">= 1", "n_minibatches": ">= 1",
              "ppo_epochs": ">= 1", "max_new_tokens": ">= 1", "temperature": "> 0", "clip_range": "> 0",
              "beta": ">= 0", "learning_rate": ">= 0"}
    # ---- where things are
    out_dir: str = "runs/default/grpo"  # run directory: model.pt, ckpt.pt, metrics.jsonl, grpo.png, summary.json
    sft_dir: str = "runs/default/sft"  # SFT run: the initial policy and the frozen reference π_ref
    rm_dir: str = "runs/default/reward_model"  # reward-model run: the frozen reward r(q, o)
    prompts: str = ""                 # prompts JSONL (rlhf.data.load_prompts); "" = the world's train prompts
    n_prompts: int = 4000             # world prompts in the training pool (when --prompts is empty)
    prompt_seed: int = 2              # seed of the world prompt pool (the same pool as PPO's)
    seed: int = 1337                  # seeds sampling and shuffling: same seed, same CPU -> same run
    device: str = "auto"              # auto = cuda, else mps, else cpu
    dtype: str = "auto"               # auto = bf16 autocast on a GPU with bf16 hardware, else float32; float32; bfloat16
    resume: bool = False              # continue from out_dir/ckpt.pt
    progress: bool = True             # tqdm progress bar (rank 0)
    # ---- 1. rollout
    max_iters: int = 60               # iterations, each = one batch of groups + its update
    prompts_per_iter: int = 16        # prompts (= groups) per iteration, in total over all processes
    group_size: int = 4               # G: responses sampled per prompt (DeepSeekMath: 64)
    max_new_tokens: int = 40          # longest response; a response that has not said <|end|> by then is cut
    temperature: float = 1.0          # sampling temperature; every forward pass divides the logits by it too
    # ---- 2-3. score and advantages
    no_stop_reward: float | None = -2.0  # the score given instead of the RM's to a response without <|end|> (None = the RM's)
    baseline: Literal["group", "rloo"] = "group"  # "group" = GRPO's (r - mean) / (std + eps); "rloo" = r - mean of the
                                      # other G-1 rewards, no std (Ahmadian et al. 2024)
    adv_eps: float = 1e-4             # eps in (r - mean) / (std + eps) (baseline "group" only)
    # ---- 4. update
    beta: float = 0.04                # weight of the k3 KL-to-reference term in the loss (DeepSeekMath: 0.04)
    clip_range: float = 0.2           # ε: the ratio π/π_old is clipped to [1 - ε, 1 + ε]
    ppo_epochs: int = 1               # passes over each batch of groups (μ in the paper)
    n_minibatches: int = 2            # optimizer steps per pass (the rollout is split into shuffled minibatches)
    micro_batch_size: int = 16        # rows per forward/backward; gradients accumulate up to the minibatch
    learning_rate: float = 2e-5       # Adam learning rate, decayed linearly to 0
    weight_decay: float = 0.0         # AdamW weight decay (on >= 2-D weights)
    beta1: float = 0.9                # Adam β1
    beta2: float = 0.95               # Adam β2
    grad_clip: float = 1.0            # clip the global gradient norm (0 = off)
    # ---- evaluation (gold oracle on val prompts: measured, never trained on)
    eval_interval: int = 10           # evaluate, print samples and save ckpt.pt every this many iterations
    n_eval_prompts: int = 128         # fixed val prompts scored by the gold oracle during training
    n_final_eval: int = 200           # val prompts of the final comparison with SFT (greedy and sampled)
    eval_seed: int = 0                # seed of the val prompt sets and of their sampling
    n_print_samples: int = 2          # sample responses printed at each evaluation


PRESETS: dict[str, dict] = {
    # CI smoke run: seconds on a tiny model.
    "tiny": dict(out_dir="runs/tiny/grpo", sft_dir="runs/tiny/sft", rm_dir="runs/tiny/reward_model", n_prompts=64,
                 max_iters=3, prompts_per_iter=4, group_size=2, max_new_tokens=12, micro_batch_size=4,
                 learning_rate=1e-4, eval_interval=2, n_eval_prompts=8, n_final_eval=8, n_print_samples=1),
    # The course's student-scale run, after the small RM: 30 iterations of 8 prompts x 4 samples.
    "small": dict(out_dir="runs/small/grpo", sft_dir="runs/small/sft", rm_dir="runs/small/reward_model",
                  n_prompts=1000, max_iters=30, prompts_per_iter=8, eval_interval=10, n_eval_prompts=64,
                  n_final_eval=100),
    # The CPU default, after the default RM: 60 iterations of 16 prompts x 4 samples (PPO's 64 episodes).
    "default": dict(),
}

# -----------------------------------------------------------------------------
# 1-3. rollout, score, advantages


@dataclass
class GroupRollout:
    """A batch of groups: B prompts x G responses = B·G rows (group b is rows b·G .. b·G + G - 1)."""
    sequences: Tensor        # (B·G, P+N) long: left-padded prompt, then the response (pad after its stop)
    attention_mask: Tensor   # (B·G, P+N) long: 1 on real prompt and response tokens
    prompt_length: int       # P
    response_mask: Tensor    # (B·G, N) float: 1 on response tokens up to and including the first <|end|>
    stopped: Tensor          # (B·G,) bool: the response said <|end|>
    logprobs: Tensor         # (B·G, N) log π_old(o_t), by a forward pass (the ratio's denominator)
    ref_logprobs: Tensor     # (B·G, N) log π_ref(o_t)
    rm_scores: Tensor        # (B·G,) the reward model's raw score
    rewards: Tensor          # (B·G,) the reward used: RM score, or no_stop_reward when not stopped
    advantages: Tensor       # (B·G,) group-normalised rewards (or leave-one-out ones: cfg.baseline)

    def select(self, idx: Tensor) -> dict:
        """The rows `idx` as the micro-batch dict grpo_loss takes."""
        return {"sequences": self.sequences[idx], "attention_mask": self.attention_mask[idx],
                "response_mask": self.response_mask[idx], "logprobs": self.logprobs[idx],
                "ref_logprobs": self.ref_logprobs[idx], "advantages": self.advantages[idx],
                "prompt_length": self.prompt_length}


@torch.no_grad()
def collect_groups(policy: nn.Module, ref_model: nn.Module, reward_fn: Callable, conversations: list,
                   prompts: list[list[int]], cfg: GRPOConfig, stop_id: int, pad_id: int,
                   generator: torch.Generator | None = None, ctx=None) -> GroupRollout:
    """Steps 1-3: G samples of each prompt, their rewards, and their group advantages.

    conversations[i] is the chat whose rendered ids are prompts[i]; reward_fn(conversations, samples) -> (rows,)
    is the frozen reward (rlhf.rollout.rm_reward; a toy in tests). `ctx` is the update's autocast
    context, so that π_old and π_ref are computed in the update's precision.
    """
    G, T = cfg.group_size, cfg.temperature
    repeated = [p for p in prompts for _ in range(G)]                                  # group b = rows bG..bG+G-1
    convs = [c for c in conversations for _ in range(G)]
    s = sample(policy, repeated, cfg.max_new_tokens, T, stop_id, pad_id, generator)
    P, mask = s.prompt_length, s.response_mask
    cols = {"logprobs": [], "ref_logprobs": []}
    with ctx or nullcontext():
        for rows in torch.arange(len(repeated)).split(cfg.micro_batch_size):
            seq, am = s.sequences[rows], s.attention_mask[rows]
            cols["logprobs"].append(response_logprobs(policy, seq, am, P, T))               # (b, N)
            cols["ref_logprobs"].append(response_logprobs(ref_model, seq, am, P, T))        # (b, N)
    logprobs, ref_logprobs = (torch.cat(cols[k]) for k in ("logprobs", "ref_logprobs"))
    rm_scores = reward_fn(convs, s).float()                                                # (BG,)
    rewards = rm_scores
    if cfg.no_stop_reward is not None:
        rewards = torch.where(s.stopped, rm_scores, torch.full_like(rm_scores, cfg.no_stop_reward))
    return GroupRollout(sequences=s.sequences, attention_mask=s.attention_mask, prompt_length=P, response_mask=mask,
                        stopped=s.stopped, logprobs=logprobs * mask, ref_logprobs=ref_logprobs * mask,
                        rm_scores=rm_scores, rewards=rewards,
                        advantages=compute_advantages(rewards, cfg))


BASELINES = ("group", "rloo")   # the values of GRPOConfig.baseline


def compute_advantages(rewards: Tensor, cfg: GRPOConfig) -> Tensor:
    """Step 3: one advantage per response (B·G,) from its reward (B·G,), by cfg.baseline."""
    if cfg.baseline == "group":
        return group_advantages(rewards, cfg.group_size, cfg.adv_eps)
    if cfg.baseline == "rloo":
        return rloo_advantages(rewards, cfg.group_size)
    raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {cfg.baseline!r}")


def rollout_stats(ro: GroupRollout, group_size: int) -> dict:
    """Per-iteration numbers of a batch of groups (per process; the caller averages over processes)."""
    r = ro.rewards.view(-1, group_size)
    kl = kl_k3(ro.logprobs, ro.ref_logprobs) * ro.response_mask
    return {
        "rm_score": ro.rm_scores.mean().item(),                         # the reward model's opinion of the samples
        "reward": ro.rewards.mean().item(),                             # after the no-stop score
        "reward_std_in_group": r.std(dim=1, correction=0).mean().item(),  # the signal GRPO has to work with
        "tied_groups": (r == r[:, :1]).all(dim=1).float().mean().item(),  # share of groups with advantage 0
        "kl": kl.sum(1).mean().item(),                                  # nats per response (k3, >= 0)
        "response_length": ro.response_mask.sum(1).mean().item(),
        "stop_rate": ro.stopped.float().mean().item(),
    }


# -----------------------------------------------------------------------------
# 4. update


def grpo_loss(model: nn.Module, batch: dict, cfg: GRPOConfig) -> tuple[Tensor, dict]:
    """Loss of one micro-batch: clipped surrogate with the response's advantage on every token + β · k3 KL."""
    P, mask = batch["prompt_length"], batch["response_mask"]
    seq = batch["sequences"]
    logits = response_logits(model, seq, batch["attention_mask"], P, cfg.temperature)  # (b, N, V)
    logprobs = token_logprobs(logits, seq[:, P:])                                      # (b, N)
    advantages = batch["advantages"][:, None].expand_as(logprobs)                      # (b, N): Â_i on every token
    # zero every per-token input off the response (torch.where: not even a NaN gradient leaks from padding)
    logprobs, old_logprobs, ref_logprobs, advantages = (
        torch.where(mask > 0, x, torch.zeros_like(x)) for x in
        (logprobs, batch["logprobs"], batch["ref_logprobs"], advantages))
    pg_loss, pg_stats = ppo_policy_loss(logprobs, old_logprobs, advantages, mask, cfg.clip_range)
    kl = masked_mean(kl_k3(logprobs, ref_logprobs), mask)                             # per token
    loss = pg_loss + cfg.beta * kl
    with torch.no_grad():
        entropy = masked_mean(entropy_from_logits(logits), mask)
    stats = {"pg_loss": pg_loss.detach(), "kl_token": kl.detach(), "entropy": entropy,
             "approx_kl": pg_stats["approx_kl"], "clipfrac": pg_stats["clipfrac"], "ratio_mean": pg_stats["ratio_mean"]}
    return loss, stats


def grpo_update(model: nn.Module, optimizer: torch.optim.Optimizer, ro: GroupRollout, cfg: GRPOConfig,
                generator: torch.Generator, ctx=None) -> dict:
    """Step 4: ppo_epochs passes over the rollout in n_minibatches shuffled minibatches, each one optimizer
    step fed in micro-batches whose gradients accumulate (PPO's minibatch_updates). Returns the mean stats."""
    out, _ = minibatch_updates(model, optimizer, ro.sequences.shape[0], lambda m, b: grpo_loss(m, b, cfg),
                               lambda rows: trim_padding(ro.select(rows)), cfg.ppo_epochs, cfg.n_minibatches,
                               cfg.micro_batch_size, cfg.grad_clip, generator, ctx)
    return out


# -----------------------------------------------------------------------------
# the stage

GRPO_PANELS = [("rm_score", "RM score (train samples)"), ("gold", "gold (val, sampled)"),
               ("gold_greedy", "gold (val, greedy)"), ("kl", "KL to SFT (k3, nats/response)"),
               ("reward_std_in_group", "reward std within a group"), ("tied_groups", "share of tied groups"),
               ("pg_loss", "policy loss"), ("entropy", "entropy"), ("clipfrac", "clip fraction"),
               ("approx_kl", "approx-KL (π_old || π)"), ("response_length", "response length (tokens)"),
               ("stop_rate", "stop rate")]


def build_models(cfg: GRPOConfig, device) -> tuple:
    """(policy, ref_model, reward_model, tokenizer): policy and reference from the SFT run, the frozen RM;
    dropout off everywhere (rlhf.rl_update.load_rl_models)."""
    return load_rl_models(cfg.sft_dir, cfg.rm_dir, device)


def train_grpo(cfg: GRPOConfig, evaluator=None, final_evaluator=None) -> dict:
    """Run GRPO (see the module docstring); returns the final metrics, also written to out_dir/summary.json.

    The gold judges the caller hands in (rlhf.gold.GoldEvaluator; None = no gold numbers): `evaluator`
    every eval_interval iterations, `final_evaluator.versus(policy, sft)` once at the end."""
    device, info, _ = start_stage(cfg, make_run_dir=False)   # the run dir is made once the run starts
    try:
        return _train_grpo(cfg, device, info, evaluator, final_evaluator)
    finally:
        teardown_distributed()


def _train_grpo(cfg: GRPOConfig, device: torch.device, info: DistInfo, evaluator, final_evaluator) -> dict:
    t_start = time.time()
    seed_everything(cfg.seed + info.rank)
    if cfg.prompts_per_iter % info.world_size:
        raise SystemExit(f"error: --prompts_per_iter={cfg.prompts_per_iter} does not split over {info.world_size} processes")
    if cfg.group_size < 2:
        raise SystemExit("error: --group_size must be >= 2 (a group of one has no baseline)")
    if cfg.baseline not in BASELINES:
        raise SystemExit(f"error: --baseline must be {' or '.join(BASELINES)}, got {cfg.baseline!r}")
    policy, ref_model, reward_model, tokenizer = build_models(cfg, device)
    reward_fn = rm_reward(reward_model, tokenizer, cfg.micro_batch_size)     # the RM judges each reply's text
    stop_id, pad_id = D.stop_token_id(tokenizer), D.pad_token_id(tokenizer)
    if policy.config.block_size - cfg.max_new_tokens < MIN_PROMPT_TOKENS:
        raise SystemExit(f"error: --max_new_tokens={cfg.max_new_tokens} leaves no room for a prompt "
                         f"in block_size={policy.config.block_size}")
    conversations = load_prompt_pool(cfg.prompts, cfg.n_prompts, cfg.prompt_seed, cfg.progress)
    pool = render_prompts(conversations, tokenizer, policy.config.block_size, cfg.max_new_tokens)
    if len(pool) < cfg.prompts_per_iter:
        raise SystemExit(f"error: {len(pool)} prompts, fewer than --prompts_per_iter={cfg.prompts_per_iter}")

    optimizer = configure_optimizer(policy, cfg, device.type)
    train_model = data_parallel(policy, info, device)
    ctx = autocast_context(device, cfg.dtype)
    run = IterationRun(cfg, info, policy, optimizer, desc="grpo")
    run.start()
    per_rank = cfg.prompts_per_iter // info.world_size

    def one_iteration(it: int) -> dict:
        # ---- 1-3: this rank's prompts, G samples each, scored and normalised within each group
        order = torch.randperm(len(pool), generator=make_generator(cfg.seed, "prompts", it))[:cfg.prompts_per_iter]
        mine = order[info.rank * per_rank:(info.rank + 1) * per_rank].tolist()
        ro = collect_groups(policy, ref_model, reward_fn, [conversations[i] for i in mine], [pool[i] for i in mine],
                            cfg, stop_id, pad_id, sampling_generator(policy, cfg.seed, "rollout", it, info.rank), ctx)
        stats = rollout_stats(ro, cfg.group_size)
        # ---- 4: the update
        lr = cfg.learning_rate * (1.0 - it / cfg.max_iters)                 # linear decay to 0
        set_lr(optimizer, lr)
        stats.update(grpo_update(train_model, optimizer, ro, cfg, make_generator(cfg.seed, "update", it, info.rank),
                                 ctx))
        return {**mean_over_processes(stats, info), "lr": lr}

    def evaluate() -> dict:
        """Gold score of sampled and greedy answers on the evaluator's val prompts (rank 0 only)."""
        if not info.is_main or evaluator is None:
            return {}
        return eval_record(evaluator, policy, reward_model, tokenizer, cfg.temperature, cfg.eval_seed,
                           cfg.no_stop_reward, cfg.n_print_samples, run.log)

    def postfix(stats: dict, last_eval: dict) -> dict:
        return dict(rm=f"{stats['rm_score']:+.2f}", kl=f"{stats['kl']:.2f}", tied=f"{stats['tied_groups']:.2f}",
                    gold=f"{last_eval.get('gold', float('nan')):.3f}")

    it, interrupted, _ = run.loop(one_iteration, evaluate, postfix)
    result: dict = {}
    if info.is_main:
        records = run.records()
        plot_path = plot_panels(records, os.path.join(cfg.out_dir, "grpo.png"), GRPO_PANELS, x="iter",
                                title=f"GRPO (G = {cfg.group_size}, β = {cfg.beta}) — {cfg.out_dir}")
        train_records = [r for r in records if "rm_score" in r]
        tail = train_records[-max(1, len(train_records) // 10):] if train_records else []
        result = {"stage": "grpo", "iters": it, "interrupted": interrupted, "group_size": cfg.group_size,
                  "baseline": cfg.baseline, "beta": cfg.beta,
                  "rm_score_train_first": train_records[0]["rm_score"] if train_records else None,
                  "rm_score_train_last": float(np.mean([r["rm_score"] for r in tail])) if tail else None,
                  "kl_train_last": float(np.mean([r["kl"] for r in tail])) if tail else None,
                  "tied_groups": float(np.mean([r["tied_groups"] for r in train_records])) if train_records else None,
                  "initial": {k: records[0].get(k) for k in ("gold", "gold_greedy", "eval_rm")} if records else {},
                  "final_eval": {k: records[-1].get(k) for k in ("gold", "gold_greedy", "eval_rm")} if records else {},
                  "seconds_train": time.time() - t_start, "plot": plot_path}
        if not interrupted:
            if final_evaluator is not None:
                t0 = time.time()
                gold = final_evaluator.versus(policy, ref_model, tokenizer)
                result.update({"gold_score": gold["greedy"]["gold"], "sft_gold_score": gold["greedy"]["sft_gold"],
                               "gold_score_sampled": gold["sampled"]["gold"],
                               "sft_gold_score_sampled": gold["sampled"]["sft_gold"],
                               "win_rate_vs_sft": gold["greedy"]["win_rate"], "kl": gold.get("kl"),
                               "gold": gold, "seconds_eval": time.time() - t0})
                run.log("\n" + final_evaluator.format_versus(gold, "GRPO"))
            result["seconds"] = time.time() - t_start
            ckpt_io.save_model(cfg.out_dir, policy, tokenizer, extra={"stage": "grpo", "kind": "grpo_policy"})
            ckpt_io.write_summary(cfg.out_dir, result)
        run.log(f"grpo: {it} iterations in {time.time() - t_start:.0f}s; RM score (train samples) "
            f"{format_number(result['rm_score_train_first'])} -> {format_number(result['rm_score_train_last'])}; "
            f"{cfg.out_dir}/grpo.png")
    barrier(info)
    if interrupted:             # Ctrl-C: ckpt.pt is saved; the command exits 130, the pipeline does not go on
        raise KeyboardInterrupt
    return result


def gold_evaluators(cfg: GRPOConfig, evaluator_class) -> tuple:
    """(in-training evaluator on n_eval_prompts val prompts, final one on n_final_eval), built from the class
    the caller passes in (rlhf.gold.GoldEvaluator); None where the count is 0."""
    def make(n: int, batch_size: int):
        return evaluator_class(n, seed=cfg.eval_seed, max_new_tokens=cfg.max_new_tokens, batch_size=batch_size) \
            if n > 0 else None
    return make(cfg.n_eval_prompts, 64), make(cfg.n_final_eval, 100)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(GRPOConfig, argv, PRESETS, prog="python -m rlhf.grpo")
    # local import: the command line is the caller that hands the gold judge to the training code
    from rlhf.gold import GoldEvaluator
    evaluators = gold_evaluators(cfg, GoldEvaluator)
    return run_entry_point(lambda c: train_grpo(c, *evaluators), cfg, errors=(D.DataError, FileNotFoundError))


if __name__ == "__main__":
    utf8_console()
    main()
