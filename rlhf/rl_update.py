"""What the policy-gradient stages share: frozen copies without dropout, loading the policy, reference and
reward model, the prompt pool, the minibatch update loop, and the in-training evaluation (PPO and GRPO;
DPO uses disable_dropout too).

    rollout batch (B rows) --epochs x shuffled minibatches--> one optimizer step per minibatch
                                   +-- micro-batches whose gradients accumulate (forward_backward)

This is plumbing below the stages (docs/DESIGN.md, "layers"): PPO's and GRPO's losses differ, the loop
that feeds them does not, so it lives here once rather than in one stage that the other imports.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn

from minigpt import checkpoint as ckpt_io
from minigpt.trainer import check_finite, forward_backward, optimizer_step
from rlhf import data as D
from rlhf.reward import RewardModel
from rlhf.rollout import score_responses
from rlhf.world import make_prompts


def disable_dropout(model: nn.Module) -> nn.Module:
    """Eval mode and p = 0 in every Dropout (PPO checklist 8): with dropout the recomputed log-probs differ
    from the rollout's and the PPO ratio is not 1 even before any update (nor DPO's loss ln 2)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "dropout", None), float):   # e.g. attention's dropout_p for the fused kernel
            m.dropout = 0.0
    if hasattr(model, "config") and hasattr(model.config, "dropout"):
        model.config.dropout = 0.0
    return model.eval()


def frozen(model: nn.Module) -> nn.Module:
    """disable_dropout, and no gradients: a reference policy or a reward model during RL."""
    return disable_dropout(model).requires_grad_(False)


def load_rl_models(sft_dir: str, rm_dir: str, device, init_dir: str = "") -> tuple:
    """(policy, ref_model, reward_model, tokenizer) for an RL stage: the policy from init_dir (default: the
    SFT run; e.g. an earlier PPO round), the reference π_ref always from the SFT run, and the frozen reward
    model; dropout off everywhere (checklist 8). A run that is missing, or an RM whose vocabulary is not the
    policy's, is a one-line error naming what to run."""
    for d, what in ((sft_dir, "rlhf.sft"), (rm_dir, "rlhf.reward_model"), (init_dir, "rlhf.ppo")):
        if (d or what != "rlhf.ppo") and not os.path.exists(os.path.join(d, ckpt_io.MODEL_FILE)):  # init_dir: optional
            raise SystemExit(f"error: {d}: no {ckpt_io.MODEL_FILE}; "
                             f"run `python -m {what}` (with the same --preset) first")
    policy, tokenizer = ckpt_io.load_model(init_dir or sft_dir, device)
    ref_model, _ = ckpt_io.load_model(sft_dir, device)
    reward_model = RewardModel.load(rm_dir, device)
    if reward_model.config.vocab_size != policy.config.vocab_size:
        raise SystemExit(f"error: {rm_dir} (vocab {reward_model.config.vocab_size}) and {sft_dir} "
                         f"(vocab {policy.config.vocab_size}) do not share a tokenizer")
    return disable_dropout(policy), frozen(ref_model), frozen(reward_model), tokenizer


def load_prompt_pool(prompts_file: str, n_prompts: int, prompt_seed: int,
                     progress: bool = False) -> list[list[dict]]:
    """Training prompts (conversations ending with a user turn): a JSONL file, else n_prompts prompts of the
    world's train split (prompts only: no answers, no judge; progress: a bar if making them takes over 2 s)."""
    if prompts_file:
        return D.load_prompts(prompts_file)
    return [ex.conversation for ex in make_prompts("train", n_prompts, seed=prompt_seed, progress=progress)]


def minibatch_updates(model: nn.Module, optimizer: torch.optim.Optimizer, n_rows: int, loss_fn, make_batch,
                      epochs: int, n_minibatches: int, micro_batch_size: int, grad_clip: float,
                      generator: torch.Generator, ctx=None, step: int = 0) -> tuple[dict, dict | None]:
    """`epochs` passes over n_rows rollout rows in n_minibatches shuffled minibatches (PPO checklist 12).

    Each minibatch is one optimizer step; it is fed in micro-batches of micro_batch_size rows
    (make_batch(rows) -> batch for loss_fn(model, batch)) whose gradients accumulate
    (minigpt.trainer.forward_backward). Returns the mean stats of all minibatches and the stats of the very
    first one (where PPO's ratio must be exactly 1). PPO and GRPO share it.
    """
    mb_size = max(1, math.ceil(n_rows / n_minibatches))
    totals, n, first = {}, 0, None
    # BEGIN SOLUTION a4.minibatches
    for _ in range(epochs):
        perm = torch.randperm(n_rows, generator=generator)
        for mb in perm.split(mb_size):
            micro = [make_batch(rows) for rows in mb.split(micro_batch_size)]
            loss, stats = forward_backward(model, loss_fn, micro, ctx)
            check_finite(loss, step)                          # NaN/inf: stop with a clear message
            stats["grad_norm"] = optimizer_step(model, optimizer, grad_clip)
            stats["loss"] = loss
            first = first or dict(stats)
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            n += 1
    # END SOLUTION
    return {k: v / max(n, 1) for k, v in totals.items()}, first


@torch.no_grad()
def evaluate_policy(evaluator, policy: nn.Module, reward_model: nn.Module, tokenizer, temperature: float,
                    seed: int, no_stop_reward: float | None = None) -> dict:
    """The caller's gold evaluator on the policy's answers (greedy at temperature 0, else sampled with one
    random stream per prompt, seeded by `seed`), with the reward model's score of each answer next to the
    gold one (no_stop_reward for an answer without <|end|>, as in training). Returns the means (gold, rm,
    stop_rate, length in characters, share of distinct answers) and the rows."""
    res = evaluator(policy, tokenizer, temperature, seed=seed)
    rows = res["rows"]
    rm = score_responses(reward_model, tokenizer, evaluator.conversations, [r["response"] for r in rows],
                         [r["stopped"] for r in rows])
    for r, x in zip(rows, rm):
        r["rm"] = x if r["stopped"] or no_stop_reward is None else no_stop_reward
    n = max(len(rows), 1)
    return {"gold": res["gold"], "rm": sum(r["rm"] for r in rows) / n, "stop_rate": res["stop_rate"],
            "length": sum(len(r["response"]) for r in rows) / n,
            "distinct": len({r["response"] for r in rows}) / n, "rows": rows}


def eval_record(evaluator, policy: nn.Module, reward_model: nn.Module, tokenizer, temperature: float, seed: int,
                no_stop_reward: float | None, n_print: int = 0, log=print) -> dict:
    """The metrics record of one in-training evaluation: gold (sampled at `temperature`) and gold_greedy,
    the RM's mean score, stop rate, length and diversity of the sampled answers; prints n_print samples."""
    sampled = evaluate_policy(evaluator, policy, reward_model, tokenizer, temperature, seed, no_stop_reward)
    greedy = evaluate_policy(evaluator, policy, reward_model, tokenizer, 0.0, seed, no_stop_reward)
    for r in sampled["rows"][:n_print]:
        log(f"  [{r['family']}] {r['prompt']!r}\n    -> {r['response']!r} (gold {r['score']:.2f}, rm {r['rm']:+.2f})")
    return {"gold": sampled["gold"], "gold_greedy": greedy["gold"], "eval_rm": sampled["rm"],
            "eval_stop_rate": sampled["stop_rate"], "eval_distinct": sampled["distinct"],
            "eval_length_chars": sampled["length"]}
