"""The only door the graded tests use to reach an exercise's implementation.

One `run_*` function per exercise (tests/course.py lists them). The graded tests import these, never the
modules directly, so the same tests grade the reference solution and a student's copy: write your code
in the marked places of the real modules (the student copy made by tools/make_exercises.py has them
blanked), or point a `run_*` function below at your own implementation elsewhere.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import Tensor

from minigpt import bpe, trainer
from minigpt.config import GPTConfig
from minigpt.generate import filter_logits, sample_next
from minigpt.model import GPT, MLP, Block, CausalSelfAttention, KVCache
from minigpt.tokenizer import Tokenizer
from rlhf import best_of_n, data, losses, reward, reward_model, rl_update, rollout
from rlhf.world import labelers


# ---------------------------------------------------------------------------------------------------- A1

def run_count_pairs(ids: list[int], counts: Counter | None = None, weight: int = 1) -> Counter:
    """Counter of adjacent pairs of ids, each occurrence adding `weight` (added to `counts` when given)."""
    return bpe.count_pairs(ids, counts, weight)


def run_merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """ids with every left-to-right occurrence of `pair` replaced by new_id."""
    return bpe.merge_pair(ids, pair, new_id)


def run_learn_merges(text: str, n_merges: int) -> list[tuple[int, int]]:
    """The first n_merges BPE merges learned from text (merge i makes token 256 + i)."""
    return bpe.learn_merges(text, n_merges)


def run_bpe_encode(merges: list[tuple[int, int]], text: str) -> list[int]:
    """text -> ids with the given merges, by the readable reference encoder (Tokenizer.encode_slow)."""
    return Tokenizer(merges).encode_slow(text)


def run_attention(config: dict, state: dict, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """CausalSelfAttention(GPTConfig(**config)) with the explicit (non-fused) path and weights `state`, on x."""
    layer = CausalSelfAttention(GPTConfig(**config, fused_attention=False))
    layer.load_state_dict(state)
    return layer.to(x.device).eval()(x, attn_mask)


def run_mlp(config: dict, state: dict, x: Tensor) -> Tensor:
    layer = MLP(GPTConfig(**config))
    layer.load_state_dict(state)
    return layer.eval()(x)


def run_block(config: dict, state: dict, x: Tensor) -> Tensor:
    layer = Block(GPTConfig(**config))
    layer.load_state_dict(state)
    return layer.eval()(x)


def run_gpt_forward(config: dict, state: dict, idx: Tensor, targets: Tensor | None = None,
                    attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """(logits (B, T, V), loss or None) of a GPT with weights `state`."""
    model = GPT(GPTConfig(**config))
    model.load_state_dict(state)
    return model.eval()(idx, targets=targets, attention_mask=attention_mask)


def run_filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """(B, V) logits with -inf outside the top-k, then outside the top-p nucleus."""
    return filter_logits(logits, top_k=top_k, top_p=top_p)


def run_sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(next token (B,), log_softmax(logits / τ) (B, V)) of one decoding step; τ = 0 is greedy."""
    return sample_next(logits, temperature, top_k=top_k, top_p=top_p, generator=generator)


def run_kv_cache(n_layer: int, shape: tuple, steps: list[tuple[int, Tensor, Tensor]],
                 advance: list[int]) -> list[tuple[Tensor, Tensor]]:
    """A KVCache of (B, nh, max_len, hs) = shape; for each step (layer, k, v) the (keys, values) update returns.
    advance[i]: positions the model has finished after step i (the cache's `length` is set to it)."""
    B, nh, max_len, hs = shape
    cache = KVCache(n_layer, B, nh, max_len, hs, dtype=steps[0][1].dtype)
    out = []
    for (layer, k, v), length in zip(steps, advance):
        keys, values = cache.update(layer, k, v)
        out.append((keys.clone(), values.clone()))
        cache.length = length
    return out


# ---------------------------------------------------------------------------------------------------- A2

def run_configure_optimizer(model: torch.nn.Module, weight_decay: float, learning_rate: float) -> torch.optim.AdamW:
    """The AdamW a training stage builds for `model` (two parameter groups)."""
    class Cfg:
        beta1, beta2 = 0.9, 0.95
    Cfg.weight_decay, Cfg.learning_rate = weight_decay, learning_rate
    return trainer.configure_optimizer(model, Cfg)


def run_lr_at(step: int, learning_rate: float, min_lr: float, warmup_iters: int, max_iters: int,
              lr_decay_iters: int | None = None) -> float:
    class Cfg:
        pass
    Cfg.learning_rate, Cfg.min_lr, Cfg.warmup_iters = learning_rate, min_lr, warmup_iters
    Cfg.max_iters, Cfg.lr_decay_iters = max_iters, lr_decay_iters
    return trainer.lr_at(step, Cfg)


def run_forward_backward(model, loss_fn, micro_batches: list) -> tuple[float, dict]:
    """Accumulate the gradients of loss_fn(model, batch) over micro-batches; (mean loss, mean stats)."""
    return trainer.forward_backward(model, loss_fn, micro_batches)


def run_optimizer_step(model, optimizer, grad_clip: float) -> float:
    """Clip (grad_clip > 0), step, zero the gradients; the gradient norm before clipping."""
    return trainer.optimizer_step(model, optimizer, grad_clip)


def run_render(conversation: list[dict], tokenizer, train_on: str = "all") -> tuple[list[int], list[int]]:
    """(ids, loss_mask) of a conversation in the chat template."""
    return data.render(conversation, tokenizer, train_on=train_on)


def run_pad(seqs: list[list[int]], pad_id: int, left: bool) -> tuple[Tensor, Tensor]:
    """(ids (B, T), attention_mask (B, T)) of sequences padded on the left or on the right."""
    return data.pad_left(seqs, pad_id) if left else data.pad_right(seqs, pad_id)


def run_sft_targets(ids: list[int], loss_mask: list[int]) -> tuple[list[int], list[int]]:
    """(inputs ids[:-1], targets: ids[t+1] where supervised, else -1)."""
    return data.sft_targets(ids, loss_mask)


# ---------------------------------------------------------------------------------------------------- A3

def run_labeler(scores: list[float], temperature: float, rng) -> list[float]:
    """A simulated labeler's utilities (score / T + noise) for responses of gold scores `scores`."""
    return labelers.noisy_utilities(scores, temperature, rng)


def run_last_token_values(values: Tensor, attention_mask: Tensor) -> Tensor:
    """values[b, last t with attention_mask[b, t] = 1], (B,)."""
    return reward.last_token_values(values, attention_mask)


def run_pair_mask(ranks: list[int], texts: list[str], K: int) -> Tensor:
    """(K, K) 0/1 pairs that carry loss for one prompt's responses, sorted best first (ranks ascending)."""
    item = reward_model.RankedItem(ids=[[0]] * len(ranks), ranks=ranks, texts=texts, meta={})
    return reward_model.pair_mask_of(item, K)


def run_rm_loss(model, batch: dict) -> tuple[Tensor, dict]:
    """(loss, stats) of a collated batch: idx, attention_mask (P, K, T), pair_mask (P, K, K)."""
    return reward_model.rm_loss(model, batch)


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


# ---------------------------------------------------------------------------------------------------- A4

def run_shift_to_response(logits: Tensor, prompt_length: int, temperature: float = 1.0) -> Tensor:
    """(B, P+N, V) logits -> the (B, N, V) that predict the N response tokens, divided by the temperature."""
    return rollout.shift_to_response(logits, prompt_length, temperature)


def run_truncate_after_stop(response: Tensor, stop_id: int, pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """(response with pad after its first stop, mask up to and including it, stopped) of (B, N) samples."""
    return rollout.truncate_after_stop(response, stop_id, pad_id)


def run_minibatch_updates(model, optimizer, n_rows: int, loss_fn, make_batch, epochs: int, n_minibatches: int,
                          micro_batch_size: int, generator: torch.Generator) -> tuple[dict, dict | None]:
    """PPO's update loop over a rollout of n_rows rows (no clipping, no autocast)."""
    return rl_update.minibatch_updates(model, optimizer, n_rows, loss_fn, make_batch, epochs, n_minibatches,
                                       micro_batch_size, 0.0, generator)


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


def run_group_advantages(rewards: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    """(r - mean of its group) / (std of its group + eps) for (B·G,) rewards in groups of G rows; ties → 0."""
    return losses.group_advantages(rewards, group_size, eps=eps)


def run_kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """exp(d) - d - 1 with d = log π_ref - log π, per token."""
    return losses.kl_k3(logprobs, ref_logprobs)


# ---------------------------------------------------------------------------------------------------- A5

def run_sequence_logprobs(model, idx: Tensor, attention_mask: Tensor, response_mask: Tensor,
                          temperature: float = 1.0) -> Tensor:
    """Σ over response tokens of log π(y_t | x, y_<t), (B,)."""
    return rollout.sequence_logprobs(model, idx, attention_mask, response_mask, temperature)


def run_best_of_n_kl(n: int) -> float:
    """The upper bound on KL(best-of-n || π) in nats."""
    return best_of_n.best_of_n_kl(n)


def run_pick_best(scores: Tensor, n: int) -> Tensor:
    """Index of the highest score among the first n columns of each row, (P,)."""
    return best_of_n.pick_best(scores, n)
