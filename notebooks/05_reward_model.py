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
# 2. The pairwise loss by hand
# 3. The ranked loss: all K-choose-2 pairs from K forward passes
# 4. Batching rankings: (P, K, T) tensors and a pair mask for ties
# 5. The RewardModel: a GPT with a scalar head read at the last real token
# 6. Training it
# 7. Accuracy against the labelers' own ceiling
# 8. Asking the reward model
# 9. Summary

# %% [markdown]
# ## 1. Setup
#
# The reward model starts from the SFT model, so first we re-run notebook 04's two stages with the
# same SMALL settings (about 20 s; the stages' output is captured in `log`).

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

import random
from IPython.display import Image, display
from rlhf import data as D
from rlhf.losses import pairwise_reward_loss, ranked_reward_loss
from rlhf.reward_model import (RewardModel, collate_items, encode_response, last_token_values, rm_loss,
                               to_items)
from rlhf.world import make_prompts, make_rankings, perturb, score

RUN = tempfile.mkdtemp(prefix="minigpt-nb05-")   # every file this notebook writes goes here

# %%
run_stages("sft")

# %%
print(f"SFT model: gold score {sft['gold_score']:.3f} on held-out prompts (base {sft['base_gold_score']:.3f})")

# %% [markdown]
# ## 2. The pairwise loss
#
# For one comparison, loss = −log σ(r_chosen − r_rejected): ln 2 when the model cannot tell the two
# apart, towards 0 as the chosen one pulls ahead. Its gradient with respect to r_chosen is
# −σ(r_rejected − r_chosen): the *less* sure the model is, the harder it pushes.

# %%
chosen = torch.tensor([0.0, 2.0, -1.0], requires_grad=True)
rejected = torch.tensor([0.0, 0.0, 1.0])
loss = pairwise_reward_loss(chosen, rejected)
# BEGIN SOLUTION a3.pairwise_loss
by_hand = -torch.log(torch.sigmoid(chosen - rejected)).mean()
# END SOLUTION
print(f"pairwise_reward_loss {loss.item():.4f}   by hand {by_hand.item():.4f}")
print(f"a tie costs ln 2 = {math.log(2):.4f}: {pairwise_reward_loss(torch.zeros(1), torch.zeros(1)).item():.4f}")
loss.backward()
print("d loss / d r_chosen:", chosen.grad, " = -sigmoid(r_rej - r_cho) / N:",
      -torch.sigmoid(rejected - chosen.detach()) / 3)
assert torch.allclose(loss, by_hand)

# %% [markdown]
# ## 3. The ranked loss: K-choose-2 pairs from K forward passes
#
# A ranking of K responses implies C(K, 2) comparisons. InstructGPT puts all of a prompt's pairs in
# one batch element: each response goes through the model *once*, and every pair reuses the scores
# (K forwards instead of K(K−1)). It also keeps the pairs of one prompt together, which the paper
# found avoids overfitting. `ranked_reward_loss(rewards)` takes a (P, K) tensor with each row ordered
# best first and averages −log σ(r_i − r_j) over the pairs i < j.

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
from minigpt.checkpoint import load_model
sft_model, tok = load_model(sft_cfg.out_dir)

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
      "read at index", len(ids) - 1, "=", f"{last_token_values(per_token, mask).item():+.5f}")
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
display(Image(filename=os.path.join(rm_cfg.out_dir, "calibration.png"), width=380))

# %% [markdown]
# At SMALL size the reward model usually stays well short of the ceiling: a 2-layer model that
# trained on a few hundred rankings sees coarse differences only. The `default` preset (`SMALL=0`, or
# `python -m rlhf.reward_model --preset default`) is the run to judge it by; either way, the gap is
# the number to read before trusting PPO.

# %% [markdown]
# ## 8. Asking the reward model
#
# The trained model scores any (prompt, response) pair. Does it order a prompt's hand-made candidates
# as the gold oracle does? At SMALL size, only roughly: it picks up the coarse signals (stopping,
# form, refusing where asked) long before it can check a sum.

# %%
reward_model = RewardModel.load(rm_cfg.out_dir)
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
# - `pairwise_reward_loss` is −log σ(r_w − r_l): ln 2 at a tie; `ranked_reward_loss` is its mean over
#   all C(K, 2) pairs of a ranking, computed from K forward passes, with ties masked out.
# - `RewardModel` = SFT backbone + small-init scalar head, read at the last real token.
# - `train_reward_model` makes the comparisons (demonstration, a flawed answer, SFT samples and their
#   chatter-toggled twins, ranked by a noisy simulated labeler), trains, normalises demonstrations to 0, and reports held-out accuracy next to
#   the labelers' own agreement — the number to check before running PPO.
#
# Next: **06_ppo** — optimise the SFT policy against this reward, with a KL leash to the SFT model.
