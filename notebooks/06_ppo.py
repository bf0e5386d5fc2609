# %% [markdown]
# # 06 · PPO from human feedback
#
# Step 3 of InstructGPT: optimise the SFT policy π against the frozen reward model r, while a KL
# penalty keeps it near the SFT model π_ref (InstructGPT eq. 2, without the pretraining term):
#
# $$\text{objective}(\pi) = \mathbb{E}_{x,\, y \sim \pi}\big[r(x, y) - \beta \log \tfrac{\pi(y|x)}{\pi_{ref}(y|x)}\big]$$
#
# Each response is an episode and each token an action. The formulas are in `rlhf/losses.py`; the
# plumbing (rollout → score → advantages → update → KL control) in `rlhf/ppo.py`, whose docstring
# lists the 14 implementation details that make PPO for language models work.
#
# 1. Setup: pretrain, SFT and reward model as in notebooks 04–05
# 2. KL-shaped per-token rewards
# 3. GAE by hand on a 3-step trajectory
# 4. The clipped policy loss
# 5. The adaptive KL coefficient
# 6. One PPO iteration, inspected
# 7. A short PPO run
# 8. Summary

# %% [markdown]
# ## 1. Setup
#
# PPO needs an SFT policy and a reward model; we re-run the earlier stages with notebook 04–05's SMALL
# settings (about 30 s; their output is captured in `log`).

# %%
import math, os, pathlib, sys, tempfile, time

# Make this clone's packages importable without installing them: walk up from notebooks/ to the root.
ROOT = pathlib.Path.cwd().resolve()
while not (ROOT / "minigpt").is_dir() and ROOT.parent != ROOT:
    ROOT = ROOT.parent
sys.path[:0] = [str(ROOT), str(ROOT / "notebooks")]

import torch
from nbutil import SMALL, check, run_stages, show_result   # shared by the notebooks: notebooks/nbutil.py
torch.manual_seed(0)
print(f"SMALL={SMALL}, torch {torch.__version__}")

from IPython.display import Image, display
from rlhf import data as D
from rlhf.losses import AdaptiveKLController, gae, kl_shaped_rewards, masked_whiten, ppo_policy_loss
from rlhf.gold import GoldEvaluator
from rlhf.world import make_prompts, score

RUN = tempfile.mkdtemp(prefix="minigpt-nb06-")   # every file this notebook writes goes here

# %%
run_stages("reward_model")

# %%
print(f"SFT gold score {sft['gold_score']:.3f}; reward model held-out accuracy {rm['val_accuracy']:.3f} "
      f"(labelers' ceiling {rm['label_agreement']:.3f})")

# %% [markdown]
# ## 2. KL-shaped rewards
#
# The sequence-level objective becomes a reward per token: a KL penalty on every response token, and
# the reward model's score added on the last one (Ziegler et al., 2019):
#
# $$r_t = -\beta\,(\log \pi(y_t) - \log \pi_{ref}(y_t)) + [t = \text{last}]\; r(x, y)$$
#
# Padding after the response (mask 0) gets nothing.

# %%
beta = 0.1
logprobs = torch.tensor([[-1.0, -0.5, -2.0, 0.0]])        # log π of the sampled tokens
ref_logprobs = torch.tensor([[-2.0, -0.5, -1.0, 0.0]])    # log π_ref of the same tokens
mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])               # three tokens, then padding
rm_score = torch.tensor([3.0])

# BEGIN SOLUTION a4.kl_shaped_rewards
by_hand = -beta * (logprobs - ref_logprobs) * mask
by_hand[0, 2] += rm_score[0]                               # the last real token
# END SOLUTION
ours = kl_shaped_rewards(rm_score, logprobs, ref_logprobs, mask, beta)
print("by hand:           ", by_hand)
print("kl_shaped_rewards: ", ours)
assert torch.allclose(ours, by_hand)

# %% [markdown]
# ## 3. GAE by hand on a 3-step trajectory
#
# Generalised advantage estimation (Schulman et al., 2016), backwards from the last token, with the
# value after the last token taken as 0:
#
# $$\delta_t = r_t + \gamma V_{t+1} - V_t, \qquad A_t = \delta_t + \gamma\lambda A_{t+1}, \qquad \text{returns}_t = A_t + V_t$$
#
# With γ = 1, λ = 0.95, rewards r = (0, 0, 1) and values V = (0.2, 0.4, 0.6):

# %%
gamma, lam = 1.0, 0.95
r = [0.0, 0.0, 1.0]
V = [0.2, 0.4, 0.6]

# BEGIN SOLUTION a4.gae
d2 = r[2] + gamma * 0.0 - V[2]          # 1 - 0.6          = 0.4
d1 = r[1] + gamma * V[2] - V[1]         # 0 + 0.6 - 0.4    = 0.2
d0 = r[0] + gamma * V[1] - V[0]         # 0 + 0.4 - 0.2    = 0.2
A2 = d2                                 #                    0.4
A1 = d1 + gamma * lam * A2              # 0.2 + 0.95 * 0.4 = 0.58
A0 = d0 + gamma * lam * A1              # 0.2 + 0.95 * 0.58 = 0.751
# END SOLUTION
print(f"deltas {d0:.3f} {d1:.3f} {d2:.3f};  advantages {A0:.3f} {A1:.3f} {A2:.3f}")

advantages, returns = gae(torch.tensor([r]), torch.tensor([V]), torch.ones(1, 3), gamma, lam)
print("rlhf.losses.gae: advantages", advantages, " returns", returns)
assert torch.allclose(advantages, torch.tensor([[A0, A1, A2]]))
assert torch.allclose(returns, torch.tensor([[A0 + V[0], A1 + V[1], A2 + V[2]]]))

# %%
# Padding after the response changes nothing: the value "after the last token" is still 0.
padded_adv, _ = gae(torch.tensor([r + [5.0]]), torch.tensor([V + [9.0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]]), gamma, lam)
print(padded_adv)
assert torch.allclose(padded_adv[:, :3], advantages) and padded_adv[0, 3] == 0
# Before the update the advantages are whitened over the valid tokens of the batch.
print("whitened:", masked_whiten(advantages, torch.ones(1, 3)))

# %% [markdown]
# ## 4. The clipped policy loss
#
# With ratio ρ_t = exp(log π(y_t) − log π_old(y_t)), PPO minimises the mean of
# max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε, 1 + ε)). On the first minibatch of an iteration π = π_old, so
# ρ ≡ 1 and the loss is just −mean(A); once ρ leaves [1 − ε, 1 + ε] in the direction the advantage
# favours, the gradient stops (the "clip fraction").

# %%
A = torch.tensor([[1.0, -1.0, 2.0]])
old = torch.tensor([[-1.0, -1.0, -1.0]])
m = torch.ones(1, 3)
loss, stats = ppo_policy_loss(old.clone(), old, A, m, clip_range=0.2)
print(f"ratio 1: loss {loss.item():.3f} = -mean(A) = {-A.mean().item():.3f}; approx-KL {stats['approx_kl'].item():.3f}, "
      f"clip fraction {stats['clipfrac'].item():.2f}")

new = (old + torch.tensor([[0.5, 0.1, 0.0]])).requires_grad_()   # ratios e^0.5 = 1.65, e^0.1 = 1.11, 1
loss, stats = ppo_policy_loss(new, old, A, m, clip_range=0.2)
loss.backward()
print(f"moved: ratio {stats['ratio_mean'].item():.3f} (mean), clip fraction {stats['clipfrac'].item():.2f}, "
      f"gradient {new.grad}")
print("token 0 (A > 0, ratio 1.65 > 1.2) is clipped: its gradient is 0")
assert new.grad[0, 0] == 0

# %% [markdown]
# ## 5. The adaptive KL coefficient
#
# Ziegler et al.'s proportional controller moves β so that the KL per response tracks a target:
# e = clip(KL / target − 1, ±0.2), β ← β (1 + e · n / horizon).

# %%
ctl = AdaptiveKLController(init_kl_coef=0.1, target=4.0, horizon=2000)
for kl in [0.5, 2.0, 4.0, 8.0, 12.0, 12.0]:
    before = ctl.value
    ctl.update(kl, n_steps=64)
    print(f"KL {kl:5.1f} nats: beta {before:.4f} -> {ctl.value:.4f}")

# %% [markdown]
# ## 6. One PPO iteration, inspected
#
# `build_models` loads the policy and the frozen reference (both the SFT model), the frozen reward
# model, and a value model initialised from the reward model (as InstructGPT does), with dropout off
# everywhere. `collect_rollout` does steps 1–3: sample (left-padded prompts, KV cache, stop at
# `<|end|>`), score (the RM's score of the reply's text, read at its last token; a fixed penalty
# without `<|end|>`), shape the rewards,
# run GAE, whiten. Its tensors are (B, P+N) and (B, N) with N = the longest response of the batch:
# the response columns that are padding in every row are dropped before any forward pass.

# %%
from rlhf.ppo import (PRESETS as PPO_PRESETS, ActorCritic, PPOConfig, build_models, collect_rollout,
                      gold_evaluator, ppo_update, rollout_stats, train_ppo)
from rlhf.rollout import render_prompts, rm_reward, sampling_generator
from minigpt.trainer import configure_optimizer, make_generator

SMALL_PPO = dict(max_iters=12, batch_size=32, max_new_tokens=16, n_minibatches=2, micro_batch_size=16,
                 learning_rate=1e-4, n_eval_prompts=48, eval_interval=6, n_print_samples=1)
ppo_cfg = PPOConfig(**{**(PPO_PRESETS["tiny"] | SMALL_PPO if SMALL else PPO_PRESETS["default"]),
                       "out_dir": os.path.join(RUN, "ppo"), "sft_dir": sft_cfg.out_dir,
                       "rm_dir": rm_cfg.out_dir, "progress": False})
policy, ref_model, reward_model, value_model, tok = build_models(ppo_cfg, "cpu")
stop_id, pad_id = D.stop_token_id(tok), D.pad_token_id(tok)

examples = make_prompts("train", 8, seed=2)
convs = [ex.conversation for ex in examples]
prompts = render_prompts(convs, tok, policy.config.block_size, ppo_cfg.max_new_tokens)
reward_fn = rm_reward(reward_model, tok)        # the RM's judgement of each reply's *text*
ro = collect_rollout(policy, ref_model, value_model, reward_fn, convs, prompts, ppo_cfg,
                     kl_coef=ppo_cfg.init_kl_coef, stop_id=stop_id, pad_id=pad_id,
                     generator=sampling_generator(policy, 0, "notebook-rollout"))
print({k: tuple(v.shape) for k, v in vars(ro).items() if isinstance(v, torch.Tensor)})

# %%
# Episode by episode: what was sampled, what the RM and the gold oracle think of it.
for b, ex in enumerate(examples):
    n = int(ro.response_mask[b].sum())
    text, stopped = D.decode_response(ro.sequences[b, ro.prompt_length:ro.prompt_length + n].tolist(), tok)
    print(f"{ex.conversation[-1]['content']!r:45} -> {text!r:28} stopped={stopped!s:5} "
          f"rm {ro.rm_scores[b].item():+.2f} score {ro.scores[b].item():+.2f} gold {score(ex.conversation, text, stopped):.2f}")

# %%
# Token by token for the first episode. At iteration 0 the policy *is* the reference, so the KL
# term is exactly 0 and the only reward is the score on the last token.
b = 0
n = int(ro.response_mask[b].sum())
P = ro.prompt_length
print(f"{'token':>14} {'logp':>7} {'ref':>7} {'reward':>7} {'value':>7} {'return':>7} {'adv':>7}")
for t in range(n):
    print(f"{tok.decode([ro.sequences[b, P + t].item()])!r:>14} {ro.logprobs[b, t]:7.3f} {ro.ref_logprobs[b, t]:7.3f} "
          f"{ro.rewards[b, t]:7.3f} {ro.values[b, t]:7.3f} {ro.returns[b, t]:7.3f} {ro.advantages[b, t]:7.3f}")
stats = rollout_stats(ro)
print({k: round(v, 4) for k, v in stats.items()})
assert stats["logprob_drift"] < 1e-4   # generation's log-probs == a forward pass's (checklist 13)
assert abs(stats["kl"]) < 1e-6         # policy == reference before any update

# %% [markdown]
# Step 4, the update: `ppo_epochs` passes over the rollout in shuffled minibatches, each one optimizer
# step on `ppo_policy_loss + vf_coef · ppo_value_loss`. On the very first minibatch the ratio must be
# exactly 1 (dropout off, same temperature, same padding and positions as the rollout) — the check
# that catches most silent PPO bugs.

# %%
model = ActorCritic(policy, value_model, ppo_cfg.temperature)       # the trainable part
optimizer = configure_optimizer(model, ppo_cfg)
update = ppo_update(model, optimizer, ro, ppo_cfg, make_generator(0, "notebook-update"))
print({k: round(v, 4) for k, v in update.items()})
assert abs(update["first_ratio_mean"] - 1) < 1e-5 and update["first_clipfrac"] == 0

# How far has the policy moved? The exact KL(π || π_ref) of the next-token distributions at the
# rollout's positions (always >= 0), summed over each response.
with torch.no_grad():
    T = ppo_cfg.temperature
    logp = (policy(ro.sequences, attention_mask=ro.attention_mask)[0][:, P - 1:-1] / T).log_softmax(-1)
    ref_logp = (ref_model(ro.sequences, attention_mask=ro.attention_mask)[0][:, P - 1:-1] / T).log_softmax(-1)
    kl_per_token = (logp.exp() * (logp - ref_logp)).sum(-1)                        # (B, N)
kl_after = (kl_per_token * ro.response_mask).sum(1).mean().item()
print(f"after one PPO update: KL(policy || reference) = {kl_after:.4f} nats per response (0 before)")
assert kl_after > 0

# %% [markdown]
# ## 7. A short PPO run
#
# `train_ppo` repeats the iteration: a fresh batch of train prompts each time, β adapted towards the KL
# target, and every `eval_interval` iterations the gold oracle scores sampled and greedy answers to
# fixed *val* prompts (for us only; it never enters training). It writes `metrics.jsonl`, a dashboard
# PNG, the policy and `summary.json`.

# %%
import contextlib, io
ppo_log = io.StringIO()
with contextlib.redirect_stdout(ppo_log), contextlib.redirect_stderr(ppo_log):
    result = train_ppo(ppo_cfg, gold_evaluator(ppo_cfg, GoldEvaluator))   # the judge we hand in
print(ppo_log.getvalue()[-1500:])

# %%
init = result["initial"]
print(f"{result['iters']} iterations in {result['seconds']:.0f}s")
print(f"RM score on val prompts: {init['eval_rm']:+.3f} -> {result['rm_score']:+.3f}")
print(f"gold (sampled):          {init['gold']:.3f} -> {result['gold_score']:.3f}")
print(f"gold (greedy):           {init['gold_greedy']:.3f} -> {result['gold_score_greedy']:.3f}")
print(f"KL to SFT {result['kl']:.2f} nats per response; beta {ppo_cfg.init_kl_coef} -> {result['kl_coef']:.4f}; "
      f"stop rate {result['stop_rate']:.2f}")
display(Image(filename=result["dashboard"], width=900))

# %% [markdown]
# At SMALL size this run shows the machinery, not an improvement: a dozen iterations on a 2-layer
# policy against a reward model well below its ceiling move the RM score (and the stop rate) much
# more than the gold score, which in our runs moved by a few hundredths either way on 48 prompts —
# noise at that size. Read the proxy (RM score) and the truth (gold) side by
# side: a rising RM score with a flat or falling gold score is reward over-optimisation.
# `SMALL=0` runs every stage's `default` preset here; `python -m rlhf.pipeline` (preset `default`)
# is the run whose numbers the project's README reports.

# %% [markdown]
# ## 8. Summary
#
# - `kl_shaped_rewards`: −β · (log π − log π_ref) on every response token, plus the RM score on the last.
# - `gae`: δ_t = r_t + γV_{t+1} − V_t, A_t = δ_t + γλA_{t+1}, returns = A + V — checked by hand above.
# - `ppo_policy_loss`: the clipped surrogate; ratio ≡ 1 on the first minibatch, zero gradient once
#   clipped. `AdaptiveKLController` steers β towards a KL target.
# - `collect_rollout` + `ppo_update` are one iteration; generation's log-probs equal a forward pass's,
#   and the first update starts at ratio 1 — the two checks that catch silent PPO bugs.
# - `train_ppo` is the stage; judge it by gold score, not by the reward model's.
#
# The whole recipe in one command: `python -m rlhf.pipeline --preset tiny` (or `default`).
