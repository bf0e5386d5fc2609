"""The only door the tests use to reach an exercise's implementation.

One `run_*` function per exercise. Tests import these, never `rlhf.losses` directly, so the same
tests grade the reference solution and a student's copy: point the imports below at your own
implementation (or generate the student copy with tools/make_exercises.py, which keeps this file
and blanks the solutions) and run the `pytest -k` command in exercises/README.md.
"""

from __future__ import annotations

from torch import Tensor

from rlhf import losses


def run_masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(x * mask) / sum(mask), over everything (dim=None) or along `dim`."""
    return losses.masked_mean(x, mask, dim=dim)


def run_masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """(x - mean) / std over the valid positions; masked positions 0."""
    return losses.masked_whiten(x, mask, shift_mean=shift_mean)


def run_sft_loss(logits: Tensor, targets: Tensor, loss_mask: Tensor) -> Tensor:
    """Cross-entropy of (B, T, V) logits against aligned (B, T) targets, mean over loss_mask == 1."""
    return losses.sft_loss(logits, targets, loss_mask)


def run_pairwise_reward_loss(chosen: Tensor, rejected: Tensor, margin: Tensor | float | None = None) -> Tensor:
    """-mean log σ(r_chosen - r_rejected - margin) over (N,) rewards."""
    return losses.pairwise_reward_loss(chosen, rejected, margin=margin)


def run_ranked_reward_loss(rewards: Tensor, pair_mask: Tensor | None = None, reduction: str = "prompt") -> Tensor:
    """-log σ(r_i - r_j) over the pairs i < j of each (P, K) best-first row (kept by pair_mask), averaged
    per prompt then over prompts (reduction="prompt", InstructGPT eq. 1) or over all pairs ("pair")."""
    return losses.ranked_reward_loss(rewards, pair_mask=pair_mask, reduction=reduction)


def run_token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log_softmax(logits)[tokens]: (B, T, V), (B, T) → (B, T)."""
    return losses.token_logprobs(logits, tokens)


def run_entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) along the last dim: (..., V) → (...)."""
    return losses.entropy_from_logits(logits)


def run_kl_shaped_rewards(scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor,
                          kl_coef: float) -> Tensor:
    """-β (logπ - logπ_ref) per valid token, plus scores (B,) on each row's last valid token."""
    return losses.kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, kl_coef)


def run_gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """(advantages, returns) of right-padded (B, T) rewards/values; V after the last token = 0."""
    return losses.gae(rewards, values, mask, gamma, lam)


def run_ppo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                        clip_range: float) -> tuple[Tensor, dict]:
    """Clipped surrogate loss and stats {approx_kl, clipfrac, ratio_mean}."""
    return losses.ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range)


def run_ppo_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                       clip_range: float) -> tuple[Tensor, dict]:
    """Clipped value loss and stats {vf_clipfrac, explained_variance}."""
    return losses.ppo_value_loss(values, old_values, returns, mask, clip_range)


def run_dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
                 ref_rejected_logps: Tensor, beta: float) -> tuple[Tensor, dict]:
    """DPO loss on summed (N,) log-probs and stats {chosen_reward, rejected_reward, accuracy}."""
    return losses.dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                           ref_rejected_logps, beta)


def run_adaptive_kl_controller(init_kl_coef: float, target: float | None, horizon: float,
                               updates: list[tuple[float, int]]) -> list[float]:
    """Build an AdaptiveKLController, apply update(kl, n_steps) for each pair, return β after each."""
    controller = losses.AdaptiveKLController(init_kl_coef, target, horizon)
    values = []
    for current_kl, n_steps in updates:
        controller.update(current_kl, n_steps)
        values.append(controller.value)
    return values
