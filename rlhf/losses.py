"""Every RLHF formula as a small pure function: the exercise surface of the project.

Each function takes tensors and returns tensors; none of them knows about models, tokenizers or
data. Masks are 0/1 float tensors of the same shape as the values they mask (1 = a real token).
The stages call these: rlhf/sft.py (sft_loss), rlhf/reward_model.py (pairwise_reward_loss,
ranked_reward_loss), rlhf/ppo.py (token_logprobs ... AdaptiveKLController), rlhf/dpo.py (dpo_loss),
rlhf/grpo.py (group_advantages, rloo_advantages, kl_k3).

Papers behind the equations:
  InstructGPT  Ouyang et al. 2022, "Training language models to follow instructions with human feedback"
  Ziegler      Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences"
  PPO          Schulman et al. 2017, "Proximal Policy Optimization Algorithms"
  GAE          Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation"
  DPO          Rafailov et al. 2023, "Direct Preference Optimization"
  GRPO         Shao et al. 2024, "DeepSeekMath" (section 4.1)
  RLOO         Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning
               from Human Feedback in LLMs"

Exercises: the code between the BEGIN/END SOLUTION markers is what a student writes (the marker names
the exercise; tests/course.py registers them). `python tools/make_exercises.py --out DIR` makes the
student copy, `python tools/grade.py` grades it, and exercises/README.md is the course's map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# -----------------------------------------------------------------------------
# masked statistics


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over the positions where mask == 1.

        masked_mean(x, m) = sum(x * m) / sum(m)

    x, mask: same shape (e.g. (B, T)). dim=None → a scalar; dim=d → the mean along d.
    A row with no valid position gives 0 (not NaN).
    Example: x = [[1, 2, 9]], mask = [[1, 1, 0]] → (1 + 2) / 2 = 1.5 (the 9 is padding).
    """
    # BEGIN SOLUTION a2.masked_mean
    total = (x * mask).sum() if dim is None else (x * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1e-8)
    # END SOLUTION


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Normalise x to zero mean and unit variance over the valid positions.

        x' = (x - mean) / sqrt(var + 1e-8)          mean, var over mask == 1 (population variance)
        shift_mean=False adds the mean back: x' = (x - mean) / sqrt(var + 1e-8) + mean

    PPO whitens advantages this way (over every valid token of the rollout batch).
    x, mask: same shape. Returns the same shape; masked positions are set to 0.
    Example: x = [[1, 3, 100]], mask = [[1, 1, 0]] → mean 2, var 1 → [[-1, 1, 0]].
    """
    # BEGIN SOLUTION a4.whiten
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask
    # END SOLUTION


# -----------------------------------------------------------------------------
# supervised fine-tuning


def sft_loss(logits: Tensor, targets: Tensor, loss_mask: Tensor) -> Tensor:
    """Next-token cross-entropy averaged over the supervised (assistant) tokens only.

        L = - sum_{b,t} m[b,t] * log softmax(logits[b,t])[targets[b,t]] / sum_{b,t} m[b,t]

    logits (B, T, V), targets (B, T) long, loss_mask (B, T) float. Already aligned: logits[b, t]
    predicts targets[b, t]. Targets under mask 0 may hold anything (e.g. -1 or the pad id).
    Example: V = 2, logits all zero → every token has probability 1/2 → L = ln 2 ≈ 0.693.
    """
    # BEGIN SOLUTION a2.sft_loss
    logprobs = F.log_softmax(logits, dim=-1)                                            # (B, T, V)
    safe_targets = targets.clamp(min=0)                                                 # -1 → 0 (masked anyway)
    nll = -logprobs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)                  # (B, T)
    return masked_mean(nll, loss_mask.to(nll.dtype))
    # END SOLUTION


# -----------------------------------------------------------------------------
# reward model (InstructGPT eq. 1)


def pairwise_reward_loss(chosen: Tensor, rejected: Tensor, margin: Tensor | float | None = None) -> Tensor:
    """Bradley–Terry loss for one preferred and one dispreferred reward per comparison.

        L = - mean log σ(r_chosen - r_rejected - margin)            (margin = 0 when None)

    chosen, rejected: (N,) rewards; margin: (N,) or a float (Llama 2 adds a margin that grows with
    how strongly the labeler preferred chosen). Returns a scalar.
    Example: r_chosen = r_rejected → L = -log σ(0) = ln 2 ≈ 0.693;  r_chosen - r_rejected = 2 → 0.127.
    """
    # BEGIN SOLUTION a3.pairwise_loss
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()
    # END SOLUTION


def ranked_reward_loss(rewards: Tensor, pair_mask: Tensor | None = None, reduction: str = "prompt") -> Tensor:
    """InstructGPT's reward-model loss: every pair of a prompt's K ranked responses, one forward pass.

        L = - 1/C(K,2) * E_{(x, y_w, y_l)} [ log σ(r(x, y_w) - r(x, y_l)) ]         (InstructGPT eq. 1)

    rewards: (P, K), each row ordered best first, so response i beats response j for every i < j.
    pair_mask: optional (P, K, K) 0/1; entry [p, i, j] with i < j keeps the pair "i beats j" of
    prompt p. Entries on or below the diagonal are ignored. Use it to drop tied pairs (they carry
    no loss) and pairs that touch padding when prompts have different K.
    reduction="prompt" (eq. 1): the mean of -log σ(r_i - r_j) over each prompt's kept pairs (its
    1/C(K,2)), then the mean over the prompts that keep at least one pair, so every comparison
    *prompt* weighs the same (InstructGPT: this keeps a prompt's C(K,2) correlated pairs from
    counting as C(K,2) independent examples). reduction="pair": one mean over all kept pairs of all
    prompts, so a prompt with 28 informative pairs weighs 28 times one with a single pair.
    0 if no pair is kept.
    Example: rewards = [[2, 1, 0]] → pairs (2,1), (2,0), (1,0) → mean(-log σ([1, 2, 1])) ≈ 0.251 (either
    reduction); rewards [[2, 1, 0], [0, 1, 0]] with only pair (0, 1) kept in row 2: "prompt" averages
    0.251 and -log σ(-1) = 1.313 → 0.782, "pair" averages the four pair losses → 0.516.
    """
    if reduction not in ("prompt", "pair"):
        raise ValueError(f"reduction must be 'prompt' or 'pair', got {reduction!r}")
    # BEGIN SOLUTION a3.ranked_loss
    P, K = rewards.shape
    diff = rewards[:, :, None] - rewards[:, None, :]                                    # (P, K, K): r_i - r_j
    upper = torch.ones(K, K, dtype=rewards.dtype, device=rewards.device).triu(diagonal=1)  # pairs i < j
    keep = upper.expand(P, K, K) if pair_mask is None else upper * pair_mask.to(rewards.dtype)
    losses = -F.logsigmoid(diff)                                                        # (P, K, K)
    if reduction == "pair":
        return masked_mean(losses, keep)
    n_pairs = keep.sum(dim=(1, 2))                                                      # (P,)
    per_prompt = (losses * keep).sum(dim=(1, 2)) / n_pairs.clamp(min=1)                 # (P,) eq. 1's 1/C(K,2)
    has_pairs = (n_pairs > 0).to(rewards.dtype)                                         # (P,)
    return (per_prompt * has_pairs).sum() / has_pairs.sum().clamp(min=1)
    # END SOLUTION


# -----------------------------------------------------------------------------
# per-token quantities of a policy


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log π(token) for each position: the log-softmax of the logits gathered at the given tokens.

        logprob[b, t] = logits[b, t, tokens[b, t]] - logsumexp_v logits[b, t, v]

    logits (B, T, V), tokens (B, T) long → (B, T). Already aligned: pass logits[:, :-1] with
    tokens[:, 1:] (a token's log-prob comes from the logits one position earlier), and divide the
    logits by the sampling temperature first.
    Example: logits [[ [0, ln 3] ]] (probabilities 1/4, 3/4), token 1 → log 0.75 ≈ -0.288.
    """
    # BEGIN SOLUTION a4.token_logprobs
    logprobs = F.log_softmax(logits, dim=-1)                                            # (B, T, V)
    return logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)                       # (B, T)
    # END SOLUTION


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the softmax distribution at each position.

        H = - sum_v p_v log p_v = logsumexp(logits) - sum_v p_v * logits_v

    logits (..., V) → (...). Example: V equal logits → H = ln V (ln 2 ≈ 0.693 for V = 2).
    """
    # BEGIN SOLUTION a4.entropy
    p = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)
    # END SOLUTION


# -----------------------------------------------------------------------------
# PPO for language models


def kl_shaped_rewards(scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor,
                      kl_coef: float) -> Tensor:
    """Per-token reward: a KL penalty on every response token plus the RM score on the last one.

        r_t = -β (log π(y_t) - log π_ref(y_t))  +  [t == last valid token] * RM(x, y)
                                                            (Ziegler eq. 2; InstructGPT eq. 2)
    scores (B,) RM scores; logprobs, ref_logprobs, mask (B, T) over response tokens → rewards (B, T),
    0 where mask == 0. A row with no valid token gets no reward.
    Example: β = 0.1, logprobs [-1, -1], ref [-2, -1], mask [1, 1], score 3 → [-0.1, 3.0].
    """
    # BEGIN SOLUTION a4.kl_shaped_rewards
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask                               # (B, T)
    T = mask.shape[1]
    positions = torch.arange(T, device=mask.device).expand_as(mask)
    last = torch.where(mask > 0, positions, torch.full_like(positions, -1)).max(dim=1).values  # (B,)
    has_token = last >= 0
    rows = torch.arange(mask.shape[0], device=mask.device)[has_token]
    rewards = rewards.clone()
    rewards[rows, last[has_token]] += scores[has_token].to(rewards.dtype)
    return rewards
    # END SOLUTION


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation, backwards over the response tokens.

        δ_t = r_t + γ V_{t+1} - V_t                  (V after the last valid token = 0)
        A_t = δ_t + γ λ A_{t+1}                      (GAE eq. 16)
        returns_t = A_t + V_t                        (the value target; computed before whitening)

    rewards, values, mask (B, T), right-padded → (advantages, returns), both (B, T), 0 where masked.
    Whitening the advantages (masked_whiten) is the caller's next step.
    Example (γ = λ = 1): r = [0, 0, 1], V = [0.5, 0.5, 0.5] → δ = [0, 0, 0.5], A = [0.5, 0.5, 0.5],
    returns = [1, 1, 1].
    """
    # BEGIN SOLUTION a4.gae
    rewards, values = rewards * mask, values * mask
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])                                        # (B,)
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_adv) * mask[:, t]
        next_value, next_adv = values[:, t], advantages[:, t]                          # 0 past the end
    returns = (advantages + values) * mask
    return advantages, returns
    # END SOLUTION


def ppo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                    clip_range: float) -> tuple[Tensor, dict]:
    """PPO's clipped surrogate objective, as a loss to minimise, averaged over valid tokens.

        ratio_t = exp(log π(y_t) - log π_old(y_t))
        L = mean_t max(-A_t ratio_t, -A_t clip(ratio_t, 1 - ε, 1 + ε))          (PPO eq. 7, negated)

    All inputs (B, T). Returns (loss, stats): stats has approx_kl (mean of (ratio - 1) - log ratio,
    an always ≥ 0 estimate of KL(π_old || π)), clipfrac (share of tokens with |ratio - 1| > ε) and
    ratio_mean; detached 0-d tensors.
    Example: on the first minibatch ratio ≡ 1 → loss = -mean(A), approx_kl = 0, clipfrac = 0.
    """
    # BEGIN SOLUTION a4.policy_loss
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        stats = {
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
            "clipfrac": masked_mean(((ratio - 1.0).abs() > clip_range).to(mask.dtype), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats
    # END SOLUTION


def ppo_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                   clip_range: float) -> tuple[Tensor, dict]:
    """Clipped value loss: the new value may move at most ε away from the rollout's value.

        V_clip = V_old + clip(V - V_old, -ε, ε)
        L = 1/2 mean_t max((V_t - R_t)^2, (V_clip,t - R_t)^2)

    All inputs (B, T). Returns (loss, stats): stats has vf_clipfrac (share of tokens where the
    clipped term is the larger) and explained_variance = 1 - Var(R - V) / Var(R) over valid tokens.
    Example: V = V_old = R → loss 0; V = V_old = 0, R = 2 → loss 2.
    """
    # BEGIN SOLUTION a4.value_loss
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
        residual = returns - values
        var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
        stats = {
            "vf_clipfrac": masked_mean((loss_clipped > loss_unclipped).to(mask.dtype), mask),
            "explained_variance": 1.0 - var_residual / var_returns.clamp(min=1e-8),
        }
    return loss, stats
    # END SOLUTION


# -----------------------------------------------------------------------------
# DPO: the reward model and the policy in one


def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
             ref_rejected_logps: Tensor, beta: float) -> tuple[Tensor, dict]:
    """Direct preference optimisation: Bradley–Terry on implicit rewards β log(π / π_ref).

        L = - mean log σ( β [log π(y_w) - log π_ref(y_w)] - β [log π(y_l) - log π_ref(y_l)] )   (DPO eq. 7)

    Each input (N,): the summed log-prob of the whole response under policy / reference.
    Returns (loss, stats): chosen_reward, rejected_reward (mean implicit rewards), accuracy (share
    of pairs with chosen_reward > rejected_reward); detached 0-d tensors.
    Example: policy == reference → every implicit reward is 0 → loss = ln 2.
    """
    # BEGIN SOLUTION a5.dpo_loss
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)                    # (N,)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)              # (N,)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    with torch.no_grad():
        stats = {
            "chosen_reward": chosen_rewards.mean(),
            "rejected_reward": rejected_rewards.mean(),
            "accuracy": (chosen_rewards > rejected_rewards).float().mean(),
        }
    return loss, stats
    # END SOLUTION


# -----------------------------------------------------------------------------
# adaptive KL coefficient


class AdaptiveKLController:
    """Ziegler et al.'s proportional controller that steers the KL to the policy towards a target.

        e = clip(KL / target - 1, -0.2, 0.2)
        β ← β · (1 + e · n_steps / horizon)

    init_kl_coef: the starting β; target: the KL (nats per sequence) to aim for, None = keep β fixed;
    horizon: how many samples it takes to correct a large error.
    Example: β = 0.1, target 6, horizon 10000; update(KL = 12, n_steps = 1000): e = clip(1) = 0.2
    → β = 0.1 · (1 + 0.2 · 0.1) = 0.102.
    """

    def __init__(self, init_kl_coef: float, target: float | None, horizon: float):
        self.value = float(init_kl_coef)
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        """Adjust β after a batch of n_steps samples whose mean KL was current_kl; returns the new β."""
        if self.target is None:
            return self.value
        # BEGIN SOLUTION a4.adaptive_kl
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
        # END SOLUTION


# -----------------------------------------------------------------------------
# GRPO (Shao et al. 2024, DeepSeekMath §4.1): the two formulas it adds to PPO's, and RLOO's baseline beside it

def group_advantages(rewards: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    """Â_i = (r_i - mean_group) / (std_group + eps), one advantage per response (DeepSeekMath §4.1.2).

    rewards (B·G,), the G responses of a prompt in consecutive rows → (B·G,). std is the population std
    (over G). A group whose rewards are all equal gets exactly 0 (its responses teach nothing).
    Example: G = 2, rewards [1, 3, 5, 5] → group 1: mean 2, std 1 → [-1, 1]; group 2 ties → [0, 0]
    (up to eps: [-0.9999, 0.9999, 0, 0]).
    """
    # BEGIN SOLUTION a5.group_advantages
    r = rewards.float().view(-1, group_size)                                       # (B, G)
    mean = r.mean(dim=1, keepdim=True)                                             # (B, 1)
    std = r.std(dim=1, keepdim=True, correction=0)                                 # (B, 1)
    adv = (r - mean) / (std + eps)                                                 # (B, G)
    tied = (r == r[:, :1]).all(dim=1, keepdim=True)                                # (B, 1) no rounding noise
    return torch.where(tied, torch.zeros_like(adv), adv).view(-1)                  # (B·G,)
    # END SOLUTION


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """REINFORCE leave-one-out (RLOO): each response's baseline is the mean reward of the OTHER k - 1
    responses to its prompt (Ahmadian et al. 2024, "Back to Basics"), with no std division:

        A_i = r_i - 1/(k-1) Σ_{j≠i} r_j  =  k/(k-1) (r_i - mean(r_1..r_k))

    The baseline does not depend on r_i, so the estimate stays unbiased; the second form shows it is
    GRPO's centred reward scaled by k/(k-1) and left in the reward's units (not divided by the std).
    rewards (B·k,), the k responses of a prompt in consecutive rows (as group_advantages) → (B·k,).
    Zero sum in every group; a group whose rewards all tie gets exactly 0.
    Example: k = 2, rewards [1, 3, 5, 5] → group 1: [1 - 3, 3 - 1] = [-2, 2]; group 2 ties → [0, 0].
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (a leave-one-out baseline needs another sample), got {group_size}")
    r = rewards.float().view(-1, group_size)                                       # (B, k)
    others_mean = (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)              # (B, k): mean of the k-1 others
    adv = r - others_mean                                                          # (B, k)
    tied = (r == r[:, :1]).all(dim=1, keepdim=True)                                # (B, 1) no rounding noise
    return torch.where(tied, torch.zeros_like(adv), adv).view(-1)                  # (B·k,)


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(π || π_ref) on tokens sampled from π (Schulman's "k3"; DeepSeekMath eq. 4):

        D = π_ref/π - log(π_ref/π) - 1 = exp(d) - d - 1,   d = log π_ref - log π

    Unbiased for KL(π || π_ref) when the tokens come from π, and >= 0 for every token (e^d >= 1 + d),
    unlike the plain log-ratio. Same shape in and out. Example: d = 0 → 0; d = ln 2 → 2 - 0.693 - 1 = 0.307.
    """
    # BEGIN SOLUTION a5.kl_k3
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1.0
    # END SOLUTION
