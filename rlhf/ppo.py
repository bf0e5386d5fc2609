"""Stage 4 of InstructGPT: PPO against the reward model, with a KL penalty to the SFT model.

    python -m rlhf.ppo --preset default                      # after rlhf.reward_model; ~3 min on 2 cores
    python -m rlhf.ppo --preset tiny --sft_dir=runs/tiny/sft --rm_dir=runs/tiny/reward_model --out_dir=runs/tiny/ppo
    python -m rlhf.ppo --out_dir=runs/default/ppo --resume            # continue an interrupted run
    torchrun --standalone --nproc_per_node=2 -m rlhf.ppo --preset default   # each rank rolls out its own prompts

The policy π starts as the SFT model and maximises (InstructGPT eq. 2)

    objective(π) = E_{x ~ prompts, y ~ π(.|x)} [ r(x, y) - β log(π(y|x) / π_ref(y|x)) ]  +  γ E_{x ~ D_pretrain}[ log π(x) ]

where r is the frozen reward model, π_ref the frozen SFT model and the last term is PPO-ptx. A response
is an episode and each token an action, so the sequence-level objective becomes per-token rewards

    r_t = -β (log π(y_t) - log π_ref(y_t))    +  [t = last token] · r(x, y)          (losses.kl_shaped_rewards)

optimised with PPO's clipped surrogate (Schulman et al. 2017) and GAE advantages (Schulman et al. 2016).
One iteration, in the order the code below runs:

    1. rollout     sample a response to each prompt of a batch (KV-cache generator: left-padded prompts,
                   temperature, stop at <|end|>, max_new_tokens), keeping each token's log-prob
    2. score       truncate after the first <|end|>; the reward model's score of the reply's text (a fixed
                   penalty instead when there is no <|end|>); old-policy, reference log-probs and values
                   by forward passes, in the update's precision
    3. advantages  kl_shaped_rewards -> gae -> whitened advantages (optional reward whitening / clipping)
    4. update      ppo_epochs passes over shuffled minibatches (gradient accumulation over micro-batches):
                   ppo_policy_loss + vf_coef * ppo_value_loss - entropy_coef * entropy + ptx_coef * LM loss;
                   gradient clipping; linear learning-rate decay
    5. control     AdaptiveKLController moves β towards kl_target (or β stays fixed when kl_target is None)

All the formulas live in rlhf/losses.py; this file is the plumbing, and the plumbing is where PPO for
language models fails silently. The checklist in docs/DESIGN.md ("PPO for language models", 14 items) is
implemented here (sampling, cutting and log-probs in rlhf/rollout.py) and each item has a test in
tests/test_ppo.py:
  1 temperature in every forward (response_logits)      8 dropout off, ratio ≡ 1 on the first minibatch
  2 left-padded prompts, positions from the mask           9 value model initialised from the RM
  3 truncate after first stop, no-stop penalty (score)    10 RM normalised so demos score 0 (RM stage)
  4 per-token KL-shaped rewards                           11 PPO-ptx
  5 adaptive β                                            12 epochs x minibatches x accumulation; KL >= 0
  6 GAE, returns before whitening                         13 generation log-probs == forward recompute
  7 clipped losses, approx-KL, clip fraction, EV          14 <|end|> is never the padding token

The reward is the frozen reward model's judgement of each reply's *text* (rlhf.rollout.rm_reward: the
same encoding the RM was trained on). The gold oracle is never imported here: the caller (the pipeline,
or `main()` below) may hand in an evaluator that measures the policy on fixed val prompts every
eval_interval iterations; what it returns is logged, never part of the reward.

Simplifications relative to InstructGPT (Ouyang et al. 2022, sec. 3.5 and appendix C.4):
  1. Models: a ~1M-parameter GPT instead of 1.3B-175B, and one reward model of the
     policy's own size; prompts come from the synthetic instruction world, labels from simulated labelers.
  2. Scale: tens of iterations of tens of prompts (a few thousand episodes) instead of 256k episodes.
  3. β: adaptive by default (Ziegler et al. 2019's controller) towards a KL of 0.5 nats per response,
     because our reward model is weak (it cannot verify a sum or a reversed word): its errors about
     content are noise the policy drifts on, and every extra nat unlearns answers SFT got right;
     InstructGPT used a fixed β = 0.02 (--kl_target=none).
  4. PPO-ptx mixes in the world's plain-text corpus (the pretraining data of *our* base model), with a
     small γ; InstructGPT used its GPT-3 pretraining mix with γ = 27.8 on a differently scaled loss.
  5. A response without <|end|> gets a fixed score (no_stop_reward) instead of the reward model's; the
     paper does not say how it treated unfinished responses.
  6. Advantages are whitened over each process's own rollout (not over all processes); the
     KL controller and the logs use the mean over processes.
  7. One optimizer and one learning rate for the policy and the value model, as most open PPO
     implementations do; InstructGPT does not give the value model's learning rate.
  8. The rollout temperature is the training temperature (1.0 by default); no top-k / top-p, so the
     sampled distribution is exactly the policy being optimised.
"""

from __future__ import annotations

import copy
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
from rlhf.losses import (AdaptiveKLController, entropy_from_logits, gae, kl_shaped_rewards, masked_mean,
                         masked_whiten, ppo_policy_loss, ppo_value_loss, token_logprobs)
from rlhf.rl_loop import IterationRun, data_parallel
from rlhf.rl_update import disable_dropout, eval_record, load_prompt_pool, load_rl_models, minibatch_updates
from rlhf.rollout import (MIN_PROMPT_TOKENS, render_prompts, response_logits, rm_reward, sample,
                          sampling_generator, shift_to_response, trim_padding, used_columns)
from rlhf.stats import format_number
from rlhf.world import corpus

# -----------------------------------------------------------------------------
# config


@dataclass
class PPOConfig:
    """PPO: optimise the SFT policy against the reward model with a KL penalty to the SFT model."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"max_iters": ">= 0", "batch_size": ">= 1", "micro_batch_size": ">= 1", "n_minibatches": ">= 1",
              "ppo_epochs": ">= 1", "max_new_tokens": ">= 1", "temperature": "> 0", "score_clip": "> 0",
              "gamma": "in [0, 1]", "lam": "in [0, 1]", "init_kl_coef": ">= 0", "kl_target": "> 0",
              "kl_horizon": "> 0", "clip_range": "> 0", "clip_range_value": "> 0", "learning_rate": ">= 0",
              "ptx_coef": ">= 0", "ptx_batch_size": ">= 1", "ptx_block_size": ">= 2"}
    # ---- where things are
    out_dir: str = "runs/default/ppo"  # run directory: model.pt, ckpt.pt, metrics.jsonl, dashboard.png, summary.json
    sft_dir: str = "runs/default/sft"  # SFT run: the initial policy and the frozen reference π_ref
    init_dir: str = ""                # run whose model.pt starts the policy ("" = sft_dir); π_ref stays sft_dir
    rm_dir: str = "runs/default/reward_model"  # reward-model run: the frozen reward r(x, y) and the value model's init
    prompts: str = ""                 # prompts JSONL (rlhf.data.load_prompts); "" = the world's train prompts
    n_prompts: int = 4000             # world prompts in the training pool (when --prompts is empty)
    prompt_seed: int = 2              # seed of the world prompt pool (other stages use other seeds)
    seed: int = 1337                  # seeds sampling and shuffling: same seed, same CPU -> same run
    device: str = "auto"              # auto = cuda, else mps, else cpu
    dtype: str = "auto"               # auto = bf16 autocast on a GPU with bf16 hardware, else float32; float32; bfloat16
    resume: bool = False              # continue from out_dir/ckpt.pt
    progress: bool = True             # tqdm progress bar (rank 0)

    # ---- 1. rollout
    max_iters: int = 80               # PPO iterations, each = one rollout batch + its update
    batch_size: int = 64              # prompts (= episodes) per rollout, in total over all processes
    max_new_tokens: int = 48          # longest response (as the RM's candidates and the evaluation); no <|end|> by then = cut
    temperature: float = 1.0          # sampling temperature; every forward pass divides the logits by it too

    # ---- 2. score
    no_stop_reward: float | None = -2.0  # the score given instead of the RM's to a response without <|end|> (None = the RM's)
    score_clip: float | None = None   # clip RM scores to [-score_clip, score_clip] (None = no clipping)
    whiten_rewards: bool = False      # scale the per-token rewards to unit variance over the batch

    # ---- 3. advantages and KL control
    gamma: float = 1.0                # discount over response tokens (1: the score is the episode's return)
    lam: float = 0.95                 # GAE λ: 1 = Monte-Carlo returns, 0 = one-step TD
    init_kl_coef: float = 0.3         # β at the start (InstructGPT: a fixed 0.02, on its reward scale)
    kl_target: float | None = 0.5     # KL (nats per response) the adaptive controller aims for; None = fixed β.
                                      # Default preset's tuning (val): 2.0 gave greedy -0.038, sampled +0.060
                                      # vs SFT; 0.5 gave -0.004 and +0.070
    kl_horizon: int = 1000            # episodes to close a large gap (Ziegler et al.: 10000, for far longer runs)

    # ---- 4. update
    ppo_epochs: int = 2               # passes over each rollout batch
    n_minibatches: int = 4            # optimizer steps per pass: the rollout is split into this many shuffled minibatches
    micro_batch_size: int = 16        # rows per forward/backward in a process; gradients accumulate up to the minibatch
    learning_rate: float = 1e-4       # Adam learning rate of policy and value model, decayed linearly to 0
    weight_decay: float = 0.0         # AdamW weight decay (on >= 2-D weights)
    beta1: float = 0.9                # Adam β1
    beta2: float = 0.95               # Adam β2
    grad_clip: float = 1.0            # clip the global gradient norm (0 = off)
    clip_range: float = 0.2           # PPO ε: the ratio π/π_old is clipped to [1 - ε, 1 + ε]
    clip_range_value: float = 0.2     # the new value may move at most this far from the rollout's value
    vf_coef: float = 0.1              # weight of the value loss in the total loss
    entropy_coef: float = 0.0         # weight of the entropy bonus (0 = none, as in InstructGPT)
    ptx_coef: float = 0.0             # γ of PPO-ptx: weight of the pretraining LM loss (0 = plain PPO)
    ptx_batch_size: int = 8           # corpus windows per micro-batch for the ptx loss
    ptx_block_size: int = 64          # tokens per corpus window
    ptx_corpus_chars: int = 200_000   # characters of the world corpus the ptx windows come from
    value_model: Literal["separate", "shared"] = "separate"  # "separate": a copy of the RM (InstructGPT);
                                      # "shared": a head on the policy

    # ---- evaluation (gold oracle on val prompts: measured, never trained on)
    eval_interval: int = 20           # evaluate, print samples and save ckpt.pt every this many iterations
    n_eval_prompts: int = 128         # fixed val prompts scored by the gold oracle
    eval_seed: int = 0                # seed of the val prompt set and of its sampling
    n_print_samples: int = 3          # sample responses printed at each evaluation


PRESETS: dict[str, dict] = {
    # CI smoke run: seconds on a tiny model.
    "tiny": dict(out_dir="runs/tiny/ppo", sft_dir="runs/tiny/sft", rm_dir="runs/tiny/reward_model", n_prompts=64,
                 max_iters=3, batch_size=8, max_new_tokens=12, ppo_epochs=2, n_minibatches=2, micro_batch_size=4,
                 learning_rate=1e-4, eval_interval=2, n_eval_prompts=8, n_print_samples=1, ptx_coef=0.1,
                 ptx_batch_size=2, ptx_block_size=16, ptx_corpus_chars=5_000),
    # The course's student-scale run, after the small RM: 20 iterations of 32 episodes of <= 32 tokens.
    "small": dict(out_dir="runs/small/ppo", sft_dir="runs/small/sft", rm_dir="runs/small/reward_model",
                  n_prompts=1000, max_iters=20, batch_size=32, max_new_tokens=32, eval_interval=10,
                  n_eval_prompts=64, ptx_corpus_chars=200_000, kl_target=0.25),   # its RM is weaker: stay closer
    # The CPU default, after the default RM: about 2 minutes on 2 cores (80 iterations of 64 episodes).
    "default": dict(),
}

# -----------------------------------------------------------------------------
# models


class SharedValueHead(nn.Module):
    """The documented alternative to a separate value model: a scalar head on the policy's own hidden states.
    Cheaper (one backbone), but the value loss then also moves the policy's weights."""

    def __init__(self, n_embd: int, init_from: nn.Linear | None = None):
        super().__init__()
        self.head = nn.Linear(n_embd, 1)
        if init_from is not None:  # the RM's head, so the values start on the reward's scale
            self.head.load_state_dict(init_from.state_dict())

    def forward(self, hidden: Tensor) -> Tensor:
        return self.head(hidden).squeeze(-1)                                     # (B, T, C) -> (B, T)


class ActorCritic(nn.Module):
    """The trainable networks under one module, so that one optimizer and one DDP wrapper serve both.

    forward(sequences, attention_mask, prompt_length) -> (logits, values) over the response positions:
    logits (B, N, V) already divided by the temperature, values (B, N). Position P-1+t of the full
    sequence is the state before response token t: its logits predict token t and its value is V(s_t).
    With ptx_x/ptx_y also the pretraining LM loss (computed inside forward, as DDP wants one forward).
    """

    def __init__(self, policy: nn.Module, value_model: nn.Module, temperature: float):
        super().__init__()
        self.policy = policy
        self.value_model = value_model  # a RewardModel copy, or a SharedValueHead
        self.temperature = temperature

    def forward(self, sequences: Tensor, attention_mask: Tensor, prompt_length: int,
                ptx_x: Tensor | None = None, ptx_y: Tensor | None = None):
        P = prompt_length
        if isinstance(self.value_model, SharedValueHead):
            hidden = self.policy.hidden_states(sequences, attention_mask=attention_mask)   # (B, P+N, C)
            logits = self.policy.lm_head(hidden)                                           # (B, P+N, V)
            values = self.value_model(hidden)                                              # (B, P+N)
        else:
            logits, _ = self.policy(sequences, attention_mask=attention_mask)              # (B, P+N, V)
            values = self.value_model(sequences, attention_mask)                           # (B, P+N)
        logits = shift_to_response(logits, P, self.temperature)                            # (B, N, V)
        values = values[:, P - 1:-1].float()                                               # (B, N)
        ptx_loss = None
        if ptx_x is not None:
            _, ptx_loss = self.policy(ptx_x, targets=ptx_y)
        return logits, values, ptx_loss


# -----------------------------------------------------------------------------
# 1-3. rollout, score, advantages


@dataclass
class Rollout:
    """One batch of episodes and everything PPO needs from them. B episodes, P prompt and N response columns."""
    sequences: Tensor        # (B, P+N) long: left-padded prompt, then the response (pad after its stop)
    attention_mask: Tensor   # (B, P+N) long: 1 on real prompt and response tokens
    prompt_length: int       # P
    response_mask: Tensor    # (B, N) float: 1 on response tokens up to and including the first <|end|>
    stopped: Tensor          # (B,) bool: the response said <|end|>
    logprobs: Tensor         # (B, N) log π_old(y_t), recomputed by a forward pass (the ratio's denominator)
    ref_logprobs: Tensor     # (B, N) log π_ref(y_t)
    values: Tensor           # (B, N) V_old(s_t)
    rm_scores: Tensor        # (B,) the reward model's raw score
    scores: Tensor           # (B,) the score used: RM score, or no_stop_reward when not stopped; clipped
    rewards: Tensor          # (B, N) per-token KL-shaped rewards
    advantages: Tensor       # (B, N) whitened GAE advantages
    returns: Tensor          # (B, N) value targets (advantages + values, before whitening)
    kl: Tensor               # (B, N) log π_old - log π_ref per token (the sampled KL estimate)
    kl_exact: Tensor         # (B, N) KL(π_old || π_ref) of the full next-token distributions (always >= 0)
    gen_logprobs: Tensor     # (B, N) the generator's log-probs (only to check they equal `logprobs`)

    def select(self, idx: Tensor) -> dict:
        """The rows `idx` as the micro-batch dict the loss function takes."""
        return {"sequences": self.sequences[idx], "attention_mask": self.attention_mask[idx],
                "response_mask": self.response_mask[idx], "logprobs": self.logprobs[idx],
                "values": self.values[idx], "advantages": self.advantages[idx], "returns": self.returns[idx]}


@torch.no_grad()
def collect_rollout(policy: nn.Module, ref_model: nn.Module, value_model: nn.Module, reward_fn: Callable,
                    conversations: list, prompts: list[list[int]], cfg: PPOConfig, kl_coef: float, stop_id: int,
                    pad_id: int, generator: torch.Generator | None = None, ctx=None) -> Rollout:
    """Steps 1-3 of an iteration: sample, score, shape rewards, estimate advantages.

    conversations[i] is the chat whose rendered ids are prompts[i]; reward_fn(conversations, samples) -> (B,)
    is the frozen reward (rlhf.rollout.rm_reward: the reward model's judgement of each reply's text).
    `ctx` is the update's autocast context: the old-policy and reference log-probs are computed in the
    same precision as the update's, so that the ratio π/π_old is 1 on the first minibatch (checklist 8)
    on a GPU too."""
    T = cfg.temperature
    # ---- 1. rollout: KV-cache sampling from the current policy, prompts left-padded, cut after <|end|>
    s = sample(policy, prompts, cfg.max_new_tokens, T, stop_id, pad_id, generator, return_logprobs=True)
    sequences, attention_mask, P, mask = s.sequences, s.attention_mask, s.prompt_length, s.response_mask

    # ---- 2. score: forward passes of the policy, reference and value models over the same tokens
    # (micro-batches), and the reward model's judgement of each reply's text (checklist 3)
    cols = {k: [] for k in ("logprobs", "ref_logprobs", "values", "kl_exact")}
    with ctx or nullcontext():
        for rows in torch.arange(len(prompts)).split(cfg.micro_batch_size):
            skip = used_columns(attention_mask[rows], P, mask[rows])[0]       # prompt columns all-padding here
            seq, am, p = sequences[rows, skip:], attention_mask[rows, skip:], P - skip      # (b, p+N)
            logits = response_logits(policy, seq, am, p, T)                                # (b, N, V)
            ref_logits = response_logits(ref_model, seq, am, p, T)                         # (b, N, V)
            logp_all, ref_logp_all = logits.log_softmax(-1), ref_logits.log_softmax(-1)
            cols["logprobs"].append(token_logprobs(logits, seq[:, p:]))                     # (b, N)
            cols["ref_logprobs"].append(token_logprobs(ref_logits, seq[:, p:]))             # (b, N)
            cols["kl_exact"].append((logp_all.exp() * (logp_all - ref_logp_all)).sum(-1))   # (b, N)
            if isinstance(value_model, SharedValueHead):
                values = value_model(policy.hidden_states(seq, attention_mask=am))         # (b, p+N)
            else:
                values = value_model(seq, am)                                              # (b, p+N)
            cols["values"].append(values[:, p - 1:-1].float())                             # (b, N): V(s_t)
    logprobs, ref_logprobs, values, kl_exact = (torch.cat(cols[k]) * mask for k in
                                                ("logprobs", "ref_logprobs", "values", "kl_exact"))
    rm_scores = reward_fn(conversations, s).float()                                     # (B,)

    scores = rm_scores
    if cfg.no_stop_reward is not None:                                                     # checklist 3
        scores = torch.where(s.stopped, rm_scores, torch.full_like(rm_scores, cfg.no_stop_reward))
    if cfg.score_clip is not None:
        scores = scores.clamp(-cfg.score_clip, cfg.score_clip)

    # ---- 3. advantages: per-token KL-shaped rewards (checklist 4) -> GAE (checklist 6) -> whitening
    rewards = kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, kl_coef)                # (B, N)
    if cfg.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)                     # (B, N) x2
    advantages = masked_whiten(advantages, mask)

    return Rollout(sequences=sequences, attention_mask=attention_mask, prompt_length=P, response_mask=mask,
                   stopped=s.stopped, logprobs=logprobs, ref_logprobs=ref_logprobs, values=values,
                   rm_scores=rm_scores, scores=scores, rewards=rewards, advantages=advantages, returns=returns,
                   kl=(logprobs - ref_logprobs) * mask, kl_exact=kl_exact, gen_logprobs=s.gen_logprobs)


def rollout_stats(ro: Rollout) -> dict:
    """Per-iteration numbers of a rollout (per process; the caller averages over processes)."""
    mask = ro.response_mask
    length = mask.sum(1)                                                                     # (B,)
    _, vf_stats = ppo_value_loss(ro.values, ro.values, ro.returns, mask, 1.0)
    return {
        "rm_score": ro.rm_scores.mean().item(),            # the reward model's opinion of the samples
        "score": ro.scores.mean().item(),                  # after the no-stop penalty and clipping
        "kl": ro.kl.sum(1).mean().item(),                  # nats per response, sampled estimate (the one in the reward)
        "kl_exact": ro.kl_exact.sum(1).mean().item(),      # nats per response, exact over the vocabulary (>= 0)
        "reward_total": ro.rewards.sum(1).mean().item(),   # score - β KL: what PPO maximises
        "response_length": length.mean().item(),
        "stop_rate": ro.stopped.float().mean().item(),
        "value_mean": masked_mean(ro.values, mask).item(),
        "return_mean": masked_mean(ro.returns, mask).item(),
        "explained_variance": vf_stats["explained_variance"].item(),   # of the rollout's values for its returns
        "logprob_drift": (ro.gen_logprobs - ro.logprobs).abs().max().item(),  # generator vs forward (checklist 13)
    }


# -----------------------------------------------------------------------------
# 4. update


def ppo_loss(model: nn.Module, batch: dict, cfg: PPOConfig) -> tuple[Tensor, dict]:
    """Loss of one micro-batch: clipped policy loss + vf_coef * clipped value loss - entropy bonus + ptx."""
    mask = batch["response_mask"]
    logits, values, ptx_loss = model(batch["sequences"], batch["attention_mask"], batch["prompt_length"],
                                     batch.get("ptx_x"), batch.get("ptx_y"))                 # (b, N, V), (b, N)
    logprobs = token_logprobs(logits, batch["sequences"][:, batch["prompt_length"]:])       # (b, N)
    # Zero every per-token input at padded positions (torch.where, so not even a NaN gradient leaks from
    # them): masked means skip them, but exp(ratio) of garbage could still be inf there (checklist 2).
    logprobs, old_logprobs, advantages, values, old_values, returns = (
        torch.where(mask > 0, x, torch.zeros_like(x)) for x in
        (logprobs, batch["logprobs"], batch["advantages"], values, batch["values"], batch["returns"]))
    pg_loss, pg_stats = ppo_policy_loss(logprobs, old_logprobs, advantages, mask, cfg.clip_range)
    vf_loss, vf_stats = ppo_value_loss(values, old_values, returns, mask, cfg.clip_range_value)
    entropy = masked_mean(entropy_from_logits(logits), mask)
    loss = pg_loss + cfg.vf_coef * vf_loss - cfg.entropy_coef * entropy
    stats = {"pg_loss": pg_loss.detach(), "vf_loss": vf_loss.detach(), "entropy": entropy.detach(),
             "approx_kl": pg_stats["approx_kl"], "clipfrac": pg_stats["clipfrac"],
             "ratio_mean": pg_stats["ratio_mean"], "vf_clipfrac": vf_stats["vf_clipfrac"]}
    if ptx_loss is not None:
        loss = loss + cfg.ptx_coef * ptx_loss
        stats["ptx_loss"] = ptx_loss.detach()
    return loss, stats


def ppo_update(model: nn.Module, optimizer: torch.optim.Optimizer, ro: Rollout, cfg: PPOConfig,
               generator: torch.Generator, ptx_tokens: Tensor | None = None, ctx=None, step: int = 0) -> dict:
    """Step 4: ppo_epochs passes over ro in n_minibatches shuffled minibatches of micro-batches
    (minibatch_updates), each micro-batch with its PPO-ptx corpus windows when ptx_coef > 0. Returns the
    mean stats and, as first_*, those of the very first minibatch (where the ratio must be exactly 1)."""
    def make_batch(rows: Tensor) -> dict:
        batch = trim_padding({**ro.select(rows), "prompt_length": ro.prompt_length})
        if ptx_tokens is not None and cfg.ptx_coef > 0:
            batch["ptx_x"], batch["ptx_y"] = ptx_batch(ptx_tokens, cfg, generator)
        return batch

    out, first = minibatch_updates(model, optimizer, ro.sequences.shape[0], lambda m, b: ppo_loss(m, b, cfg),
                                   make_batch, cfg.ppo_epochs, cfg.n_minibatches, cfg.micro_batch_size,
                                   cfg.grad_clip, generator, ctx, step)
    out.update({f"first_{k}": first[k] for k in ("approx_kl", "clipfrac", "ratio_mean")} if first else {})
    return out


def ptx_batch(tokens: Tensor, cfg: PPOConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random windows of the pretraining corpus for PPO-ptx (checklist 11): x, y both (b, ptx_block_size),
    on the device of `tokens` (the model's: ptx_tokens puts them there)."""
    L = cfg.ptx_block_size
    starts = torch.randint(0, len(tokens) - L - 1, (cfg.ptx_batch_size,), generator=generator)
    x = torch.stack([tokens[s:s + L] for s in starts.tolist()])
    y = torch.stack([tokens[s + 1:s + L + 1] for s in starts.tolist()])
    return x, y


def ptx_tokens(tokenizer, cfg: PPOConfig, device) -> Tensor:
    """The token stream PPO-ptx draws its windows from: the world's corpus (the base model's pretraining
    text), encoded once and put on the model's device."""
    return torch.tensor(tokenizer.encode(corpus(cfg.ptx_corpus_chars, seed=cfg.seed)), dtype=torch.long,
                        device=device)


# -----------------------------------------------------------------------------
# the stage: models, one iteration after another (the plumbing: rlhf/rl_loop.py), the dashboard

DASHBOARD = [("rm_score", "RM score (train samples)"), (("gold", "gold_greedy"), "gold score (val prompts)"),
             ("kl", "KL to SFT (nats)"), ("kl_coef", "β"), ("pg_loss", "policy loss"), ("vf_loss", "value loss"),
             ("entropy", "entropy"), ("approx_kl", "approx-KL (π_old || π)"), ("clipfrac", "clip fraction"),
             ("explained_variance", "explained variance"), ("response_length", "response length (tokens)"),
             ("stop_rate", "stop rate")]


def plot_dashboard(records: list[dict] | str, path: str, title: str = "PPO") -> str:
    """A grid of every logged PPO metric against the iteration, as a PNG (minigpt.trainer.plot_panels)."""
    return plot_panels(records, path, DASHBOARD, x="iter", title=title)


def build_models(cfg: PPOConfig, device) -> tuple:
    """(policy, ref_model, reward_model, value_model, tokenizer): the policy from init_dir (default: the SFT
    run), the reference π_ref always from the SFT run, the frozen RM (rlhf.rl_update.load_rl_models), and
    the value model initialised from the RM (checklist 9); dropout off everywhere (8)."""
    if cfg.value_model not in ("separate", "shared"):
        raise SystemExit(f"error: --value_model must be 'separate' or 'shared', got {cfg.value_model!r}")
    policy, ref_model, reward_model, tokenizer = load_rl_models(cfg.sft_dir, cfg.rm_dir, device, cfg.init_dir)
    if cfg.value_model == "separate":
        value_model = copy.deepcopy(reward_model).requires_grad_(True)     # InstructGPT: V starts as the RM
    else:
        value_model = SharedValueHead(policy.config.n_embd, init_from=reward_model.head).to(device)
    return policy, ref_model, reward_model, disable_dropout(value_model), tokenizer


def train_ppo(cfg: PPOConfig, evaluator=None) -> dict:
    """Run PPO (see the module docstring); returns the final metrics, also written to out_dir/summary.json.

    `evaluator`: the gold judge the caller hands in (rlhf.gold.GoldEvaluator, or None for no gold
    numbers): called on the policy every eval_interval iterations, never part of the reward."""
    device, info, _ = start_stage(cfg, make_run_dir=False)   # the run dir is made once the run starts
    try:
        return _train_ppo(cfg, device, info, evaluator)
    finally:
        teardown_distributed()


def _train_ppo(cfg: PPOConfig, device: torch.device, info: DistInfo, evaluator) -> dict:
    t_start = time.time()
    seed_everything(cfg.seed + info.rank)
    if cfg.batch_size % info.world_size:
        raise SystemExit(f"error: --batch_size={cfg.batch_size} does not split over {info.world_size} processes")
    policy, ref_model, reward_model, value_model, tokenizer = build_models(cfg, device)
    reward_fn = rm_reward(reward_model, tokenizer, cfg.micro_batch_size)     # the RM judges each reply's text
    stop_id, pad_id = D.stop_token_id(tokenizer), D.pad_token_id(tokenizer)
    if stop_id == pad_id:                                                    # checklist 14
        raise SystemExit("error: the stop token <|end|> must not be the padding token")
    if policy.config.block_size - cfg.max_new_tokens < MIN_PROMPT_TOKENS:
        raise SystemExit(f"error: --max_new_tokens={cfg.max_new_tokens} leaves no room for a prompt "
                         f"in block_size={policy.config.block_size}")
    conversations = load_prompt_pool(cfg.prompts, cfg.n_prompts, cfg.prompt_seed, cfg.progress)
    pool = render_prompts(conversations, tokenizer, policy.config.block_size, cfg.max_new_tokens)
    if len(pool) < cfg.batch_size:
        raise SystemExit(f"error: {len(pool)} prompts, fewer than --batch_size={cfg.batch_size}")
    ptx = ptx_tokens(tokenizer, cfg, device) if cfg.ptx_coef > 0 else None

    model = ActorCritic(policy, value_model, cfg.temperature)          # the trainable part
    train_model = data_parallel(model, info, device)
    optimizer = configure_optimizer(model, cfg, device.type)
    kl_ctl = AdaptiveKLController(cfg.init_kl_coef, cfg.kl_target, cfg.kl_horizon)
    ctx = autocast_context(device, cfg.dtype)
    run = IterationRun(cfg, info, policy, optimizer, desc="ppo", extra_state=lambda: {
        "value_model": ckpt_io.clean_state_dict(value_model), "kl_coef": kl_ctl.value})
    state = run.start()
    if state is not None:
        value_model.load_state_dict(state["value_model"])
        kl_ctl.value = state["kl_coef"]
    per_rank = cfg.batch_size // info.world_size

    def one_iteration(it: int) -> dict:
        # ---- 1-3: this rank's shard of this iteration's prompts, sampled and scored
        order = torch.randperm(len(pool), generator=make_generator(cfg.seed, "prompts", it))[:cfg.batch_size]
        mine = order[info.rank * per_rank:(info.rank + 1) * per_rank].tolist()
        kl_coef = kl_ctl.value
        ro = collect_rollout(policy, ref_model, value_model, reward_fn, [conversations[i] for i in mine],
                             [pool[i] for i in mine], cfg, kl_coef, stop_id, pad_id,
                             sampling_generator(policy, cfg.seed, "rollout", it, info.rank), ctx)
        stats = rollout_stats(ro)
        # ---- 4: the PPO update
        lr = cfg.learning_rate * (1.0 - it / cfg.max_iters)                 # linear decay to 0
        set_lr(optimizer, lr)
        stats.update(ppo_update(train_model, optimizer, ro, cfg, make_generator(cfg.seed, "update", it, info.rank),
                                ptx, ctx, step=it))
        # ---- 5: average the logs over processes, then move β towards the KL target
        stats = mean_over_processes(stats, info)
        kl_ctl.update(stats["kl"], cfg.batch_size)
        return {**stats, "kl_coef": kl_coef, "lr": lr}

    def evaluate() -> dict:
        """Gold score of sampled and greedy responses on the evaluator's val prompts (rank 0 only)."""
        if not info.is_main or evaluator is None:
            return {}
        return eval_record(evaluator, policy, reward_model, tokenizer, cfg.temperature, cfg.eval_seed,
                           cfg.no_stop_reward, cfg.n_print_samples, run.log)

    def postfix(stats: dict, last_eval: dict) -> dict:
        return dict(rm=f"{stats['rm_score']:+.2f}", kl=f"{stats['kl']:.2f}", beta=f"{stats['kl_coef']:.3f}",
                    gold=f"{last_eval.get('gold', float('nan')):.3f}", stop=f"{stats['stop_rate']:.2f}")

    it, interrupted, final = run.loop(one_iteration, evaluate, postfix)
    result = {}
    if info.is_main:
        plot_dashboard(run.logger.path, os.path.join(cfg.out_dir, "dashboard.png"), title=f"PPO ({cfg.out_dir})")
        records = run.records()
        train_records = [r for r in records if "rm_score" in r]
        tail = train_records[-max(1, len(train_records) // 10):] if train_records else []
        result = {
            "iters": it, "interrupted": interrupted, "seconds": time.time() - t_start,
            "gold_score": final.get("gold"), "gold_score_greedy": final.get("gold_greedy"),
            "rm_score": final.get("eval_rm"), "stop_rate": final.get("eval_stop_rate"),
            "distinct": final.get("eval_distinct"),
            "kl": float(np.mean([r["kl"] for r in tail])) if tail else None,
            "kl_coef": kl_ctl.value,
            "kl_coef_trajectory": [r["kl_coef"] for r in train_records],
            "initial": {k: records[0].get(k) for k in ("gold", "gold_greedy", "eval_rm")} if records else {},
            "dashboard": os.path.join(cfg.out_dir, "dashboard.png"),
        }
        if not interrupted:
            ckpt_io.save_model(cfg.out_dir, policy, tokenizer, extra={"kind": "ppo_policy"})
            ckpt_io.write_summary(cfg.out_dir, result)
        run.log(f"ppo: {it} iterations in {result['seconds']:.0f}s; gold (sampled, val) "
                f"{format_number(result['initial'].get('gold'))} -> {format_number(result['gold_score'])}, "
                f"KL to SFT {format_number(result['kl'], 2)} nats per response, β {kl_ctl.value:.4f}; "
                f"{cfg.out_dir}/dashboard.png")
    barrier(info)
    if interrupted:             # Ctrl-C: ckpt.pt is saved; the command exits 130, the pipeline does not go on
        raise KeyboardInterrupt
    return result


def gold_evaluator(cfg: PPOConfig, evaluator_class):
    """The evaluator this stage's settings ask for (n_eval_prompts val prompts, eval_seed, max_new_tokens),
    built from the class the caller passes in (rlhf.gold.GoldEvaluator), or None when n_eval_prompts is 0."""
    if cfg.n_eval_prompts <= 0:
        return None
    return evaluator_class(cfg.n_eval_prompts, seed=cfg.eval_seed, max_new_tokens=cfg.max_new_tokens, batch_size=64)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(PPOConfig, argv, PRESETS, prog="python -m rlhf.ppo")
    # local import: the command line is the caller that hands the gold judge to the training code
    from rlhf.gold import GoldEvaluator
    evaluator = gold_evaluator(cfg, GoldEvaluator)
    return run_entry_point(lambda c: train_ppo(c, evaluator), cfg, errors=(D.DataError, FileNotFoundError))


if __name__ == "__main__":
    utf8_console()
    main()
