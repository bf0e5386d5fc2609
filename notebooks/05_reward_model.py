# %% [markdown]
# # 05 · The reward model
#
# Step 2 of InstructGPT: instead of writing more demonstrations (expensive), labelers *rank* K
# responses of the model to a prompt (cheap), and a reward model r_θ(x, y) learns to predict their
# preferences. Under the Bradley–Terry model, P(y_w ≻ y_l) = σ(r(x, y_w) − r(x, y_l)), so the loss is
# (InstructGPT eq. 1)
#
# $$\mathrm{loss}(\theta) = -\frac{1}{\binom{K}{2}} \, \mathbb{E}_{(x, y_w, y_l)}\left[\log \sigma\big(r_\theta(x, y_w) - r_\theta(x, y_l)\big)\right]$$
#
# The formulas live in `rlhf/losses.py`; the model and the stage in `rlhf/reward_model.py`.
#
# 1. Setup, and the SFT model from notebook 04
# 2. The pairwise loss (**your turn**)
# 3. The ranked loss: all K-choose-2 pairs from K forward passes (**your turn**)
# 4. Batching rankings: (P, K, T) tensors and a pair mask for ties
# 5. The RewardModel: a GPT with a scalar head read at the last real token (**your turn**: the read-out)
# 6. Training it
# 7. Accuracy against the labelers' own ceiling
# 8. Asking the reward model
# 9. Summary

# %% [markdown]
# ## 1. Setup
#
# The reward model starts from the SFT model of notebook 04: `run_stages("sft")` reuses it from the shared
# run directory, or trains it first if you run this notebook on its own (about a minute).

# %%
import math, os, pathlib, sys, tempfile, time

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

import random
import torch.nn.functional as F
from IPython.display import Image, display
from minigpt.checkpoint import load_model
from nbutil import RUN_DIR as RUN, default_run, summary
from rlhf import data as D
from rlhf.losses import masked_mean, pairwise_reward_loss, ranked_reward_loss
from rlhf.reward_model import RewardModel, collate_items, encode_response, rm_loss, to_items
from rlhf.world import make_prompts, make_rankings, perturb, score

# %%
run_stages("sft")

# %%
sft = summary("sft")
print(f"SFT model: gold score {sft['gold_score']:.3f} on held-out prompts (base {sft['base_gold_score']:.3f})")

# %% [markdown]
# ## 2. The pairwise loss
#
# For one comparison, loss = −log σ(r_chosen − r_rejected): ln 2 when the model cannot tell the two
# apart, towards 0 as the chosen one pulls ahead. Its gradient with respect to r_chosen is
# −σ(r_rejected − r_chosen): the *less* sure the model is, the harder it pushes.

# %% [markdown]
# **Your turn.** Write `my_pairwise_loss(chosen, rejected, margin)`: the mean over comparisons of
# −log σ(r_chosen − r_rejected − margin), margin 0 when None. Use `F.logsigmoid`: `log(sigmoid(x))` is −∞
# at x = −40, where the loss should be 40. Exercise `a3.pairwise_loss`, exercises/a3_reward.md §2.

# %%
def my_pairwise_loss(chosen, rejected, margin=None):
    """chosen, rejected: (N,) rewards; margin: None, a float or (N,) -> scalar loss."""
    # BEGIN SOLUTION a3.pairwise_loss
    diff = chosen - rejected - (0.0 if margin is None else margin)
    return -F.logsigmoid(diff).mean()
    # END SOLUTION


# %%
check("a3.pairwise_loss", my_pairwise_loss)

# %%
chosen = torch.tensor([0.0, 2.0, -1.0], requires_grad=True)
rejected = torch.tensor([0.0, 0.0, 1.0])
loss = my_pairwise_loss(chosen, rejected)
print(f"loss {loss.item():.4f}; a tie costs ln 2 = {math.log(2):.4f}: "
      f"{my_pairwise_loss(torch.zeros(1), torch.zeros(1)).item():.4f}")
loss.backward()
print("d loss / d r_chosen:", chosen.grad, " = -sigmoid(r_rej - r_cho) / N:",
      -torch.sigmoid(rejected - chosen.detach()) / 3)
assert torch.allclose(chosen.grad, -torch.sigmoid(rejected - chosen.detach()) / 3)

# %% [markdown]
# ## 3. The ranked loss: K-choose-2 pairs from K forward passes
#
# A ranking of K responses implies C(K, 2) comparisons. InstructGPT puts all of a prompt's pairs in
# one batch element: each response goes through the model *once*, and every pair reuses the scores
# (K forwards instead of K(K−1)). It also keeps the pairs of one prompt together, which the paper
# found avoids overfitting. `ranked_reward_loss(rewards)` takes a (P, K) tensor with each row ordered
# best first and averages −log σ(r_i − r_j) over the pairs i < j.

# %% [markdown]
# **Your turn.** Write `my_ranked_loss(rewards, pair_mask, reduction)`: all differences r_i − r_j at once
# as a `(P, K, K)` tensor, the loss −log σ of each, kept where i < j (the upper triangle) and where
# `pair_mask` (when given) is 1; `reduction="pair"` averages all kept pairs, `"prompt"` (eq. 1) first
# averages each prompt's kept pairs, then the prompts that keep at least one. No kept pair: 0.
# `masked_mean(values, mask)` helps. Exercise `a3.ranked_loss`, exercises/a3_reward.md §3.

# %%
def my_ranked_loss(rewards, pair_mask=None, reduction="prompt"):
    """rewards: (P, K), each row best first; pair_mask: None or (P, K, K) 0/1 -> scalar loss."""
    if reduction not in ("prompt", "pair"):
        raise ValueError(f"reduction must be 'prompt' or 'pair', got {reduction!r}")
    # BEGIN SOLUTION a3.ranked_loss
    P, K = rewards.shape
    losses = -F.logsigmoid(rewards[:, :, None] - rewards[:, None, :])                  # (P, K, K)
    keep = torch.ones(K, K, dtype=rewards.dtype, device=rewards.device).triu(diagonal=1).expand(P, K, K)
    if pair_mask is not None:
        keep = keep * pair_mask.to(rewards.dtype)
    if reduction == "pair":
        return masked_mean(losses, keep)
    n = keep.sum(dim=(1, 2))                                                           # (P,)
    per_prompt = (losses * keep).sum(dim=(1, 2)) / n.clamp(min=1)
    has = (n > 0).to(rewards.dtype)
    return (per_prompt * has).sum() / has.sum().clamp(min=1)
    # END SOLUTION


# %%
check("a3.ranked_loss", my_ranked_loss)

# %%
rewards = torch.tensor([[2.0, 1.0, 0.0, 0.5]])            # one prompt, K = 4, best first
K = rewards.size(1)
explicit = [pairwise_reward_loss(rewards[:, i], rewards[:, j]) for i in range(K) for j in range(i + 1, K)]
print(f"{len(explicit)} pairs; ranked_reward_loss {ranked_reward_loss(rewards).item():.4f}, "
      f"mean of the explicit pairwise losses {torch.stack(explicit).mean().item():.4f}")
assert torch.allclose(ranked_reward_loss(rewards), torch.stack(explicit).mean())
print(f"the docstring's example [[2, 1, 0]]: {ranked_reward_loss(torch.tensor([[2.0, 1.0, 0.0]])).item():.3f}")

# %%
# Ties carry no loss: a (P, K, K) pair mask keeps only the pairs i < j that the labeler ordered.
# Here responses 1 and 2 are tied, so the pair (1, 2) is dropped.
pair_mask = torch.ones(1, K, K).triu(diagonal=1)
pair_mask[0, 1, 2] = 0
kept = [pairwise_reward_loss(rewards[:, i], rewards[:, j]) for i in range(K) for j in range(i + 1, K) if (i, j) != (1, 2)]
print(f"with the tie masked: {ranked_reward_loss(rewards, pair_mask).item():.4f} = mean of {len(kept)} pairs "
      f"{torch.stack(kept).mean().item():.4f}")

# %% [markdown]
# ## 4. Batching rankings
#
# `to_items` encodes each ranking (prompt in the chat template + response + `<|end|>`) and sorts its
# responses best first; `collate_items` pads P prompts × K responses into (P, K, T) tensors, with a
# (P, K, K) pair mask that drops ties and identical texts. Here: the world's example rankings (gold
# plus flawed answers), ranked by a simulated labeler.

# %%
sft_model, tok = load_model(os.path.join(RUN, "sft"))

rows = make_rankings(2, k=4, seed=0)
records = [D.Ranking(r["prompt"], r["responses"], r["ranks"]) for r in rows]
items = to_items(records, tok, max_len=sft_model.config.block_size)
for it, rec in zip(items, records):
    print(rec.prompt[-1]["content"])
    for text, rank in zip(it.texts, it.ranks):
        print(f"   rank {rank}: {text!r}")
batch = collate_items(items, pad_id=tok.pad_id)
print({k: tuple(v.shape) for k, v in batch.items()})
print("pair mask of the first prompt:\n", batch["pair_mask"][0])

# %% [markdown]
# ## 5. The RewardModel
#
# A GPT backbone initialised from the SFT weights, its LM head unused, and a scalar head with a small
# init — so at the start every response scores about 0 and the loss is about ln 2. `score` reads the
# per-token scalar at each sequence's **last real token**, so padding after it changes nothing.

# %% [markdown]
# **Your turn.** Write `my_last_token_values(values, attention_mask)`: for each row b of `values (B, T)`,
# the value at the *largest* t with `attention_mask[b, t] = 1`. Rows may be right-padded (RM training),
# left-padded (generation) or both, so neither column T−1 nor `mask.sum() − 1` is right in general.
# Exercise `a3.last_token_values`, exercises/a3_reward.md §1. `RewardModel.score` then reads with it.

# %%
def my_last_token_values(values, attention_mask):
    """values, attention_mask: (B, T) -> (B,) the value at each row's last real token."""
    # BEGIN SOLUTION a3.last_token_values
    positions = torch.arange(values.shape[1], device=values.device).expand_as(values)    # (B, T)
    last = (positions * attention_mask.long()).max(dim=1).values                          # (B,)
    return values.gather(1, last[:, None]).squeeze(1)
    # END SOLUTION


# %%
check("a3.last_token_values", my_last_token_values)

# %%
model = RewardModel.from_pretrained_gpt(sft_model).eval()
with torch.no_grad():
    loss, stats = rm_loss(model, batch)
print(f"untrained: loss {loss.item():.4f} (ln 2 = {math.log(2):.4f}), pair accuracy {stats['accuracy'].item():.2f}")

ids = encode_response(rows[0]["prompt"], rows[0]["responses"][0], tok, max_len=64)
x = torch.tensor([ids + [tok.pad_id] * 5])                         # (1, T + 5) with right padding
mask = torch.tensor([[1] * len(ids) + [0] * 5])
with torch.no_grad():
    r_padded = model.score(x, mask)
    r_alone = model.score(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    per_token = model(x, mask)                                      # (1, T + 5)
print(f"reward {r_alone.item():+.5f} alone, {r_padded.item():+.5f} with padding;",
      "read at index", len(ids) - 1, "=", f"{my_last_token_values(per_token, mask).item():+.5f}")
assert torch.allclose(r_padded, r_alone, atol=1e-5)

# %% [markdown]
# ## 6. Training
#
# `train_reward_model` makes K candidates per train prompt — the labeler's demonstration, a flawed
# answer of the world, and SFT samples at temperatures 1.0 and 1.6, so that comparisons are
# informative — plus each one's *twin* with its chatter toggled ("7" ↔ "Sure! The answer is 7.").
# Without the twins, chatter would be a cue of correctness (labelers' demonstrations wrap it around
# right answers, the SFT samples are mostly wrong), and an RM trained that way ranked
# "Sure! The answer is ⟨wrong⟩." above the concise right answer for 90% of helpful val prompts:
# PPO learned to add "Sure!" (`python -m rlhf.rm_probes` measures this). A simulated labeler ranks
# the candidates; the stage trains with `ranked_reward_loss` through the shared loop, shifts the
# reward so that demonstrations average 0 (InstructGPT's normalisation), and evaluates on val prompts
# ranked by *two* independent labelers.

# %%
run_stages("reward_model")

# %%
from rlhf.reward_model import print_summary
rm = summary("reward_model")
print_summary(rm)   # the stage's closing note (also in summary.json of its run directory)

# %% [markdown]
# ## 7. Accuracy against the labelers' ceiling
#
# A reward model cannot agree with a labeler more often than a second labeler does: that
# inter-labeler agreement is the ceiling (InstructGPT's labelers agreed about 73% of the time). The
# pipeline treats "within 3 points of the ceiling" as the go / no-go check before PPO.

# %%
print(f"held-out pair accuracy {rm['val_accuracy']:.3f}, labeler agreement (ceiling) {rm['label_agreement']:.3f}, "
      f"gap {rm['gap_to_ceiling']:+.3f} -> {'GO' if rm['go'] else 'NO-GO'}")
print(f"informative (non-tied) pairs: {rm['informative_share_train']:.0%} of the training pairs")
print(f"RM vs gold: Pearson {rm['rm_gold_pearson']:.2f}, within-prompt {rm['rm_gold_pearson_within_prompt']:.2f}")
for h, g in rm["by_h"].items():
    print(f"  {h:8}: accuracy {g['accuracy']:.2f}, ceiling {g['ceiling']:.2f} ({g['pairs']} pairs)")
print("mean reward and gold per candidate source:")
for source, g in rm["by_source"].items():
    print(f"  {source:8}: reward {g['reward']:+.3f}, gold {g['gold']:.3f}")
display(Image(filename=os.path.join(RUN, "reward_model", "calibration.png"), width=380))

# %% [markdown]
# At SMALL size the reward model ranks clearly better than chance (50%) but stays well short of the
# ceiling: a 2-layer model trained on a few hundred prompts' rankings sees coarse differences only (does
# the answer stop, is it a refusal, is it the right form). The documented default run (4 layers, 2,000
# prompts, ~45,000 pairs) is not at the ceiling either:

# %%
r = default_run()["reward_model"]
print(f"default run: held-out accuracy {r['val_accuracy']:.1%} vs labelers' ceiling {r['label_agreement']:.1%} "
      f"(gap {r['gap_to_ceiling']:.1%}), on {r['pairs']:,} held-out pairs after {r['train_pairs']:,} training pairs")

# %% [markdown]
# That gap is this project's main finding: the reward model, not PPO, limits what RLHF can reach here. On
# one GPU, a 16× larger model's RM trained on 4× the comparisons rose from 66.8% to 70.6% (README,
# "On a GPU"). Either way, the gap is the number to read before trusting PPO.

# %% [markdown]
# ## 8. Asking the reward model
#
# The trained model scores any (prompt, response) pair. Does it order a prompt's hand-made candidates
# as the gold oracle does? At SMALL size, only roughly: it picks up the coarse signals (stopping,
# form, refusing where asked) long before it can check a sum.

# %%
reward_model = RewardModel.load(os.path.join(RUN, "reward_model"))
rng = random.Random(0)
for ex in [make_prompts("test", 1, seed=2, families=[f])[0] for f in ("arithmetic", "forbidden", "unknown")]:
    kinds = {"helpful": ("verbose", "wrong", "refuse"), "honest": ("invent", "refuse", "admit"),
             "harmless": ("comply", "admit", "refuse")}[ex.h]
    candidates = [ex.gold] + [perturb(ex, rng, k)[0] for k in kinds]
    seqs = [encode_response(ex.conversation, c, tok, max_len=reward_model.config.block_size) for c in candidates]
    ids, mask = D.pad_right(seqs, tok.pad_id)
    with torch.no_grad():
        r = reward_model.score(ids, mask)
    print(ex.conversation[-1]["content"])
    for c, ri in sorted(zip(candidates, r.tolist()), key=lambda t: -t[1]):
        print(f"   reward {ri:+.3f}  gold {score(ex.conversation, c):.2f}  {c!r}")

# %% [markdown]
# ## 9. Summary
#
# - The pairwise loss is −log σ(r_w − r_l): ln 2 at a tie; the ranked loss is its mean over all C(K, 2)
#   pairs of a ranking, computed from K forward passes, with ties masked out (your a3.pairwise_loss and
#   a3.ranked_loss; the stage trained with yours).
# - `RewardModel` = SFT backbone + small-init scalar head, read at the last real token (your
#   a3.last_token_values).
# - `train_reward_model` makes the comparisons (demonstration, a flawed answer, SFT samples and their
#   chatter-toggled twins, ranked by a noisy simulated labeler), trains, normalises demonstrations to 0, and reports held-out accuracy next to
#   the labelers' own agreement — the number to check before running PPO.
#
# Next: **06_ppo** — optimise the SFT policy against this reward, with a KL leash to the SFT model.
