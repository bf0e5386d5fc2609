# %% [markdown]
# # 07 · DPO and GRPO against PPO
#
# PPO (notebook 06) needs four models at once: the policy, the frozen reference, the reward model and
# a value model as large as the policy, plus a sampler in the loop. Two later methods each drop part of it:
#
# - **DPO** (Rafailov et al. 2023) drops the reward model *and* the sampler: it trains the policy directly
#   on the labelers' comparisons, with a loss derived from the same KL-regularised objective as PPO's.
# - **GRPO** (Shao et al. 2024, DeepSeekMath) keeps the reward model and the sampler but drops the value
#   model: G samples of the same prompt are each other's baseline.
#
# All three start from the same SFT model and learn from the same labels (DPO from the reward-model
# stage's comparisons, PPO and GRPO from the RM trained on them), and the same gold oracle judges them.
#
# 1. Setup: the run of notebooks 04–06
# 2. DPO's loss in four lines, checked numerically
# 3. The DPO loss (**your turn**) and the DPO stage
# 4. GRPO: the group as the baseline (**your turn**) and the GRPO stage
# 5. Three methods, one judge: gold and KL on the same test prompts
# 6. Summary

# %% [markdown]
# ## 1. Setup
#
# `run_stages()` reuses the SFT model, reward model and PPO run of notebooks 04–06 from the shared run
# directory (or trains them first, about 2.5 minutes, if you run this notebook alone).

# %%
import math, os, pathlib, sys

# Make this clone's packages importable without installing them: walk up from notebooks/ to the root.
ROOT = pathlib.Path.cwd().resolve()
while not (ROOT / "minigpt").is_dir() and ROOT.parent != ROOT:
    ROOT = ROOT.parent
if not (ROOT / "minigpt").is_dir():   # e.g. a cloud notebook that has not cloned the repository yet
    raise SystemExit(f"no minigpt-rlhf clone at or above {pathlib.Path.cwd()}: start Jupyter inside your clone, or "
                     f"on a cloud notebook clone it and %cd into it first (notebooks/README.md, 'On a cloud GPU')")
sys.path[:0] = [str(ROOT), str(ROOT / "notebooks")]

import torch
from nbutil import SMALL, check, run_stages, show_result   # shared by the notebooks: notebooks/nbutil.py
torch.manual_seed(0)
print(f"SMALL={SMALL}, torch {torch.__version__}")

import json
import matplotlib.pyplot as plt
import torch.nn.functional as F
from IPython.display import Image, display
from minigpt.checkpoint import load_model
from nbutil import PRESET, RESULTS, RUN_DIR as RUN, metrics_jsonl, quietly, run_dpo_or_grpo, summary
from rlhf import evaluate as ev
from rlhf.best_of_n import best_of_n_kl, sample_candidates
from rlhf.pipeline import PIPELINE_PRESETS, PipelineConfig, eval_config
from rlhf.plots import plot_methods_vs_sft
from rlhf.reward import load_reward_model
from rlhf.world import make_prompts, score

# %%
run_stages()
print(f"SFT gold score {summary('sft')['gold_score']:.3f}; RM held-out accuracy "
      f"{summary('reward_model')['val_accuracy']:.3f}; PPO KL to SFT {summary('ppo')['kl']:.2f} nats")

# %% [markdown]
# ## 2. DPO in four lines
#
# Start from the objective PPO optimises (notebook 06), for one prompt x:
#
# $$\max_\pi\; \mathbb{E}_{y\sim\pi}[r(x,y)] - \beta\,\mathrm{KL}(\pi\,\|\,\pi_{ref})$$
#
# 1. Its maximiser has a closed form (a Gibbs distribution): $\pi^*(y|x) = \pi_{ref}(y|x)\,e^{r(x,y)/\beta} / Z(x)$.
# 2. Solve for the reward: $r(x,y) = \beta \log \frac{\pi^*(y|x)}{\pi_{ref}(y|x)} + \beta \log Z(x)$ — every policy
#    defines an *implicit* reward.
# 3. The labelers' Bradley–Terry model only sees reward *differences*, so $Z(x)$ cancels:
#    $P(y_w \succ y_l) = \sigma\big(\beta \log \frac{\pi^*(y_w)}{\pi_{ref}(y_w)} - \beta \log \frac{\pi^*(y_l)}{\pi_{ref}(y_l)}\big)$.
# 4. Fit the policy by maximum likelihood on the comparisons — the reward model's loss (notebook 05), with
#    the policy in the reward model's place:
#    $$L_{DPO} = -\,\mathbb{E}_{(x, y_w, y_l)} \log \sigma\Big(\beta \log \tfrac{\pi(y_w|x)}{\pi_{ref}(y_w|x)} - \beta \log \tfrac{\pi(y_l|x)}{\pi_{ref}(y_l|x)}\Big)$$
#
# Lines 1–3, checked on a prompt with four possible answers: the closed form beats every random policy on
# the objective, and its implicit reward equals the true reward up to one constant per prompt.

# %%
ref = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)      # π_ref over 4 answers
r = torch.tensor([1.0, 0.0, 2.0, -1.0], dtype=torch.float64)       # their rewards
beta = 0.5

def objective(p):
    return (p * r).sum() - beta * (p * (p / ref).log()).sum()      # E_p[r] - β KL(p || π_ref)

pi_star = ref * torch.exp(r / beta)
pi_star = pi_star / pi_star.sum()                                  # line 1
randoms = torch.distributions.Dirichlet(torch.ones(4, dtype=torch.float64)).sample((5000,))
best_random = max(objective(p).item() for p in randoms)
print(f"objective of π*: {objective(pi_star).item():.4f}; best of 5,000 random policies: {best_random:.4f}")
assert objective(pi_star) >= best_random

implied = beta * (pi_star / ref).log()                             # line 2 without β log Z
print("implicit reward - true reward per answer:", [round(v, 4) for v in (implied - r).tolist()],
      f"(= -β log Z = {-beta * math.log((ref * torch.exp(r / beta)).sum().item()):.4f})")
assert torch.allclose(implied - r, (implied - r)[0].expand(4))     # one constant: it cancels in differences

# %% [markdown]
# ## 3. The DPO loss — your turn
#
# **Your turn.** Write `my_dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
# ref_rejected_logps, beta)`. Each input is `(N,)`: the summed log-probability of a whole response (chosen =
# the one the labeler preferred) under the policy or the frozen reference. Return `(loss, stats)`: the mean
# DPO loss, and a dict of detached scalars `chosen_reward`, `rejected_reward` (the mean implicit rewards
# β·(log π − log π_ref)) and `accuracy` (the share of pairs whose chosen reward is *strictly* higher).
# Exercise `a5.dpo_loss`, exercises/a5_beyond.md §2.

# %%
def my_dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """Mean -log σ(β Δ_chosen - β Δ_rejected) over N pairs, Δ = log π - log π_ref; and its statistics."""
    # BEGIN SOLUTION a5.dpo_loss
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)           # (N,) implicit rewards
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)     # (N,)
    loss = -F.logsigmoid(chosen - rejected).mean()
    with torch.no_grad():
        stats = {"chosen_reward": chosen.mean(), "rejected_reward": rejected.mean(),
                 "accuracy": (chosen > rejected).float().mean()}
    return loss, stats
    # END SOLUTION

# %%
check("a5.dpo_loss", my_dpo_loss)

# %% [markdown]
# Before any update the policy *is* the reference: every implicit reward is 0 and the loss is exactly
# ln 2 = 0.6931, whatever the data — the first number the DPO stage logs, and a check worth keeping.

# %%
lp_w, lp_l = torch.randn(8) - 20, torch.randn(8) - 25
loss0, stats0 = my_dpo_loss(lp_w, lp_l, lp_w.clone(), lp_l.clone(), beta=0.1)
print(f"loss at the start {loss0.item():.4f} (ln 2 = {math.log(2):.4f})")

# %% [markdown]
# **The DPO stage** (`python -m rlhf.dpo --preset small`): the reference log-probs are computed once, then
# the policy trains on the non-tied pairs of the reward-model stage's rankings — fixed, off-policy pairs,
# no sampling. The gold oracle scores its answers to val prompts at the end (it never enters training).

# %%
dpo = run_dpo_or_grpo("dpo")
print(f"{dpo['steps']} steps on {dpo['train_pairs']} pairs: val loss {dpo['val_loss_init']:.4f} -> {dpo['val_loss']:.4f}, "
      f"implicit-reward accuracy {dpo['val_accuracy']:.1%}")
print(f"gold on val prompts: greedy SFT {dpo['sft_gold_score']:.3f} -> DPO {dpo['gold_score']:.3f}; "
      f"sampled {dpo['sft_gold_score_sampled']:.3f} -> {dpo['gold_score_sampled']:.3f}; KL to SFT {dpo['kl']:.2f} nats")

val = [m for m in metrics_jsonl("dpo") if m.get("split") == "val"]
fig, ax = plt.subplots(1, 2, figsize=(10, 3))
ax[0].plot([m["step"] for m in val], [m["loss"] for m in val], marker="o")
ax[0].axhline(math.log(2), ls=":", c="gray", label="ln 2 (policy = reference)")
ax[0].set_xlabel("step"); ax[0].set_title("DPO loss on held-out pairs"); ax[0].legend(fontsize=8)
ax[1].plot([m["step"] for m in val], [m["chosen_reward"] for m in val], marker="o", label="chosen")
ax[1].plot([m["step"] for m in val], [m["rejected_reward"] for m in val], marker="o", label="rejected")
ax[1].set_xlabel("step"); ax[1].set_title("mean implicit reward β log π/π_ref"); ax[1].legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# Read the right panel: DPO widens the *gap* between chosen and rejected, and usually does it by pushing
# both down — the loss only sees the difference, so probability mass leaves the rejected answers *and*
# the chosen ones, towards responses that are in neither. Nothing in the loss keeps the policy near the
# comparisons' distribution except β.

# %% [markdown]
# ## 4. GRPO: the group as the baseline — your turn
#
# A policy-gradient step needs an *advantage*: how much better this response was than expected for its
# prompt. PPO learns the expectation with a value model (the critic, as big as the policy). GRPO samples G
# responses to the same prompt and uses their mean as the expectation, and their spread as the scale:
#
# $$\hat A_i = \frac{r_i - \mathrm{mean}(r_1, \dots, r_G)}{\mathrm{std}(r_1, \dots, r_G) + \epsilon}$$
#
# Every token of response i gets $\hat A_i$; the rest is PPO's clipped loss, with the KL to the reference in
# the loss (the k3 estimator) instead of in the reward.
#
# **Your turn.** Write `my_group_advantages(rewards, group_size, eps=1e-4)`: rewards `(B·G,)`, the G
# responses of a prompt in consecutive rows; return `(B·G,)`. Use the population std (divide by G); a group
# whose rewards are all equal must get exactly 0 (it teaches nothing). Exercise `a5.group_advantages`,
# exercises/a5_beyond.md §3.

# %%
def my_group_advantages(rewards, group_size, eps=1e-4):
    """(B·G,) advantages: each reward standardised within its group of G consecutive rows; tied groups -> 0."""
    # BEGIN SOLUTION a5.group_advantages
    r = rewards.float().view(-1, group_size)                            # (B, G)
    adv = (r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, keepdim=True, correction=0) + eps)
    tied = (r == r[:, :1]).all(dim=1, keepdim=True)                     # (B, 1) exact, no rounding noise
    return torch.where(tied, torch.zeros_like(adv), adv).view(-1)       # (B·G,)
    # END SOLUTION

# %%
check("a5.group_advantages", my_group_advantages)

# %% [markdown]
# Here is one GRPO rollout by hand: G = 6 samples of the SFT model for each of three train prompts, the
# reward model's score of each, and your advantages. The gold score is shown for us only; GRPO sees the RM.

# %%
sft_model, tok = load_model(os.path.join(RUN, "sft"))
rm, _ = load_reward_model(os.path.join(RUN, "reward_model"))
G = 6
examples = make_prompts("train", 3, seed=7)
cand = sample_candidates(sft_model, rm, tok, [ex.conversation for ex in examples], G, max_new_tokens=32, seed=0)
adv = my_group_advantages(cand["scores"].reshape(-1), G).view(3, G)
for i, ex in enumerate(examples):
    print("prompt:", ex.conversation[-1]["content"][:90])
    for j in range(G):
        text = cand["responses"][i][j]
        gold = score(ex.conversation, text, bool(cand["stopped"][i, j]))
        print(f"   RM {cand['scores'][i, j].item():+.2f}  advantage {adv[i, j].item():+.2f}  gold {gold:.2f}  {text[:60]!r}")

# %% [markdown]
# The price of dropping the critic: G samples per prompt instead of one, and a baseline estimated from G
# rewards (its standard error shrinks only as 1/√G). What it saves: a second network as large as the
# policy, its loss, and the critic's warm-up (notebook 06 showed why PPO's value model must start from the RM).
#
# **The GRPO stage** (`python -m rlhf.grpo --preset small`), on the same SFT model and reward model as PPO:

# %%
grpo = run_dpo_or_grpo("grpo")
print(f"{grpo['iters']} iterations of groups of {grpo['group_size']}: RM score on its rollouts "
      f"{grpo['rm_score_train_first']:+.3f} -> {grpo['rm_score_train_last']:+.3f}; "
      f"tied groups at the end {grpo['tied_groups']:.1%}")
print(f"gold on val prompts: greedy SFT {grpo['sft_gold_score']:.3f} -> GRPO {grpo['gold_score']:.3f}; "
      f"sampled {grpo['sft_gold_score_sampled']:.3f} -> {grpo['gold_score_sampled']:.3f}; KL to SFT {grpo['kl']:.2f} nats")
display(Image(filename=grpo["plot"], width=900))

# %% [markdown]
# ## 5. Three methods, one judge
#
# The stages' own numbers above come from their val prompts. For the comparison, every model answers the
# same held-out *test* prompts, greedy and sampled, judged by the gold oracle with paired bootstrap CIs
# (`rlhf.evaluate.evaluate_run`, the pipeline's evaluation; SFT, best-of-N and PPO come from its cache), and
# KL(policy ‖ SFT) is measured exactly per token on the policy's own samples.

# %%
ecfg = eval_config(PipelineConfig(out=RUN, **PIPELINE_PRESETS[PRESET]["pipeline"]))
with quietly():
    results = ev.evaluate_run(RUN, ecfg, kl_pairs=(("ppo", "sft"), ("grpo", "sft"), ("dpo", "sft")), progress=False)
print(f"{results['prompts']['n']} test prompts     gold greedy   gold sampled   KL to SFT   sampled diff vs SFT [95% CI]   "
      "wins/ties/losses")
for s in ("sft", "best_of_n", "ppo", "grpo", "dpo"):
    st = results["stages"][s]
    kl = f"{st['kl']['mean']:6.2f}" if "kl" in st else "     -"
    greedy = "    -" if s == "best_of_n" else f"{st['greedy']['gold_score']:.3f}"   # best-of-N re-ranks samples
    line = f"{s:16} {greedy:>10} {st['sampled']['gold_score']:13.3f}   {kl}"
    if s != "sft":
        c = results["comparisons"][f"{s}_vs_sft"]["sampled"]
        d, gw = c["gold_diff"], c["gold"]
        line += f"      {d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]        {gw['wins']}/{gw['ties']}/{gw['losses']}"
    print(line)
path = plot_methods_vs_sft(results, os.path.join(RUN, "plots", "methods_vs_sft.png"), f"{PRESET} preset, live")
display(Image(filename=path, width=900))

# %% [markdown]
# Read it with the CIs: at SMALL size (a 2-layer policy, a reward model at about 62% accuracy) no method
# beats SFT on sampled test answers by more than the noise. When we ran it: PPO +0.010, DPO −0.014, GRPO
# −0.022 with its CI just below 0 (an earlier run on another CPU: +0.006, +0.001 and −0.015), although
# GRPO's own 100 val prompts had shown a greedy gain: a gain measured on 100 prompts needs its CI. What
# differs clearly is what each method paid in KL: PPO and GRPO, which sample from the policy and score with
# the RM under a KL penalty, stayed within about 0.4 nats of SFT; DPO, trained on fixed pairs, drifted about
# 1.6 nats for no gain. Best-of-N (SFT samples re-ranked by the RM, no training) gained +0.025 [−0.017,
# +0.064] at its KL bound log N − (N−1)/N = 0.64 nats for N = 4 (+0.054, outside the noise, in the earlier
# run).
#
# The documented default run (4 layers, 2,000 ranked prompts; `python -m rlhf.pipeline`, then
# `python -m rlhf.dpo` and `python -m rlhf.grpo` on its SFT model and comparisons), on the same 200 test prompts:

# %%
with open(os.path.join(RESULTS, "metrics_methods_default_run.json"), encoding="utf-8") as f:
    d = json.load(f)
for s in ("best_of_n", "ppo", "grpo", "dpo"):
    v = d["vs_sft"][s]
    kl = d["stages"][s].get("kl", {}).get("mean")
    greedy = "" if s == "best_of_n" else \
        f"greedy {v['greedy']['gold_diff']:+.3f} [{v['greedy']['ci'][0]:+.3f}, {v['greedy']['ci'][1]:+.3f}]"
    print(f"{s:10} vs SFT   {greedy:31}"
          f"   sampled {v['sampled']['gold_diff']:+.3f} [{v['sampled']['ci'][0]:+.3f}, {v['sampled']['ci'][1]:+.3f}]"
          + (f"   KL {kl:.2f} nats" if kl is not None else f"   KL <= {best_of_n_kl(8):.2f} nats (N = 8)"))
t = d["training"]["dpo"]
print(f"DPO: {t['steps']} steps, held-out loss {t['val_loss_init']:.3f} -> {t['val_loss']:.3f}, "
      f"implicit-reward accuracy {t['val_accuracy']:.1%}")
show_result("methods_vs_sft.png", width=900)

# %% [markdown]
# Reading the default run: **GRPO matches PPO greedy, not sampled** — gains over SFT of +0.04 greedy and +0.02
# sampled, both CIs just above 0, at less than half PPO's KL (0.22 vs 0.51 nats) and without a value model;
# PPO's sampled gain (+0.06) is the larger, GRPO's greedy one the same within noise. **DPO does worse than
# SFT** (greedy −0.09, CI below 0) after drifting 13.6 nats from it: its held-out loss ended *above* ln 2 —
# the default preset's 5,582 steps (two epochs) over-fit the 44,653 pairs of the RM stage's 2,000 ranked
# prompts, and the pairs are off-policy (demonstrations, the world's flawed answers and SFT samples), so
# nothing tied the policy to what it actually generates. A shorter DPO run or a larger β would stay closer;
# this project has not tuned it, and reports it as measured.
#
# One run is one draw. Trained again with two more seeds (`python -m rlhf.experiments seeds`, README), PPO's
# sampled gain holds in all three (+0.073 pooled) but its greedy gain averages +0.000; GRPO's sampled gain is
# +0.028, below PPO's in every seed, so GRPO's match with PPO (greedy) was this run's luck; DPO loses to SFT greedy in all three.
#
# ## 6. Summary
#
# - DPO: the KL-regularised objective's optimum defines an implicit reward β log π/π_ref; put it into the
#   Bradley–Terry likelihood and the partition function cancels — a classification loss on the policy, no RM,
#   no sampling. Your `dpo_loss` starts at ln 2 exactly.
# - GRPO: PPO's clipped loss with the group's mean (and std) as the baseline instead of a critic; your
#   `group_advantages` gives a tied group exactly 0.
# - Judged by the same oracle on the same prompts: the on-policy methods (PPO, GRPO) gain a little at a small
#   KL; off-policy DPO, untuned, drifts far and loses — at SMALL size, and at the default size.
# - The experiments that go further (over-optimisation, what the reward model needs, iterated RLHF) are in
#   `python -m rlhf.experiments` (README).
