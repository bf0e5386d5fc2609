# %% [markdown]
# # 04 · Pretraining and supervised fine-tuning
#
# Stages 1 and 2 of the InstructGPT recipe (Ouyang et al., 2022):
#
# 1. **Pretraining** (`minigpt/train.py`): next-token prediction on the world's plain-text corpus.
#    The base model learns the facts, but has never seen an instruction answered.
# 2. **Supervised fine-tuning** (`rlhf/sft.py`): the same loss on labelers' demonstrations written
#    in a chat template, counted *only* on the assistant's tokens. The model learns to answer — and
#    to stop.
#
# Both run through the pipeline's `small` preset (`SMALL=1`, about a minute on 2 CPU cores) into a run
# directory in your temporary folder that notebooks 05–07 continue. You write the chat template's loss
# mask and the SFT loss yourself, and the SFT stage then trains with your code.
#
# 1. Setup
# 2. Pretraining a small model on the world corpus
# 3. What the base model knows, and what it does with a question
# 4. The chat template and the SFT loss mask (**your turn**)
# 5. The SFT loss (**your turn**)
# 6. Supervised fine-tuning
# 7. Base vs SFT, judged by the gold oracle
# 8. Loss curves
# 9. Summary

# %% [markdown]
# ## 1. Setup

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

import json
import torch.nn.functional as F
from IPython.display import Image, display
from minigpt.checkpoint import load_model
from minigpt.train import sample_text
from minigpt.trainer import read_metrics
from nbutil import RUN_DIR as RUN, default_run, summary
from rlhf.data import ROLE_TOKENS, collate_sft, format_chat, make_sft_example, render, render_prompt, special_id, stop_token_id
from rlhf.gold import GoldEvaluator
from rlhf.losses import masked_mean, sft_loss
from rlhf.sft import format_gold_table
from rlhf.world import make_demonstrations

# %% [markdown]
# ## 2. Pretraining
#
# The stages run through the pipeline (`python -m rlhf.pipeline --preset small` on the command line) into
# one run directory that the next notebooks continue. With `SMALL=1` that is the `small` preset: a 2-layer,
# 64-wide GPT pretrained for 400 steps on 800,000 characters of the world corpus (about 15 s on 2 CPU
# cores); with `SMALL=0` the `default` preset (4 layers, 128 wide: minutes). The pipeline exports the world's
# data, trains the BPE tokenizer of notebook 02 on the corpus, then the model; `pretrain/` holds
# `model.pt`, `tokenizer.bpe`, `metrics.jsonl`, `loss.png` and `summary.json`.

# %%
run_stages("pretrain")
pre = summary("pretrain")
with open(os.path.join(RUN, "pretrain", "config.json"), encoding="utf-8") as f:
    pre_cfg = json.load(f)
print({k: pre_cfg[k] for k in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size", "max_iters", "batch_size")})
print(f"{pre['n_params']:,} parameters; val loss {pre['val_loss']:.3f} (perplexity {pre['val_ppl']:.1f}), "
      f"{pre['tokens_per_s']:,.0f} tokens/s, {pre['seconds']:.0f}s")

# %% [markdown]
# ## 3. What the base model knows
#
# Continuing plain text, the base model writes world-like sentences, facts included (more or less,
# at this size). But given a *question* in the chat template it has no idea that an answer is
# expected, nor that a turn should end: it has never seen `<|assistant|>` used.

# %%
base, tok = load_model(os.path.join(RUN, "pretrain"))
print(tok)
for s in sample_text(base, tok, ["The capital of Norland is", "Reversed, planet is", "Sorted from smallest"],
                     max_new_tokens=16, temperature=0):
    print(repr(s))

# %%
judge = GoldEvaluator(5, seed=0, max_new_tokens=16)   # 5 val prompts, the gold oracle's verdict
result = judge(base, tok)
for r in result["rows"]:
    print(f"{r['prompt']!r:45} -> {r['response']!r:40} stopped={r['stopped']}  gold score {r['score']:.2f}")

# %% [markdown]
# ## 4. The chat template and the loss mask — your turn
#
# Every message is wrapped in special tokens, `<|user|>` … `<|end|>` `<|assistant|>` … `<|end|>`,
# with content encoded as ordinary text. `render(conversation, tokenizer)` returns the ids and the
# SFT **loss mask**: 1 exactly on the assistant's content tokens and its `<|end|>` — so the prompt is
# context, never a target, and learning the `<|end|>` is how the model learns to stop.
#
# **Your turn.** Write `my_blocks(conversation, tokenizer, train_on)`: one `(ids, mask)` pair per message,
# `ids = [role token] + content + [<|end|>]` where the role token is `special_id(tokenizer, ROLE_TOKENS[role])`,
# the content is `tokenizer.encode(text)` (ordinary text: a user typing "<|end|>" must not end a turn) and
# `<|end|>` is `stop_token_id(tokenizer)`; the mask is 0 on the role token and 1 on content and `<|end|>`
# of a supervised message: an assistant message, every one with `train_on="all"`, only the last message
# with `train_on="last"`. `render` joins your blocks and truncates long conversations. Exercise
# `a2.render`, exercises/a2_sft.md §4.

# %%
def my_blocks(conversation, tokenizer, train_on="all"):
    """[(ids, mask)] per message of the conversation (a list of {"role", "content"})."""
    # BEGIN SOLUTION a2.render
    end = stop_token_id(tokenizer)
    blocks = []
    for i, m in enumerate(conversation):
        content = tokenizer.encode(m["content"])
        ids = [special_id(tokenizer, ROLE_TOKENS[m["role"]])] + content + [end]
        supervised = m["role"] == "assistant" and (train_on == "all" or i == len(conversation) - 1)
        blocks.append((ids, [0] + [int(supervised)] * (len(content) + 1)))
    return blocks
    # END SOLUTION


# %%
check("a2.render", my_blocks)

# %%
conv = make_demonstrations(1, seed=3)[0]
print(format_chat(conv))
ids, mask = render(conv, tok)              # your blocks, joined
print(f"{'token':>16}  mask")
for i, m in zip(ids, mask):
    print(f"{tok.decode([i])!r:>16}  {m}")
supervised = [i for i, m in zip(ids, mask) if m]
assert supervised == tok.encode(conv[-1]["content"]) + [stop_token_id(tok)]
print("prompt for generation ends with:", [tok.decode([i]) for i in render_prompt(conv[:-1], tok)[-3:]])

# %% [markdown]
# ## 5. The SFT loss — your turn
#
# `make_sft_example` aligns inputs and targets (x = ids[:-1], y[t] = ids[t+1] where supervised,
# else −1) and `collate_sft` right-pads a batch. The loss is the mean negative log-likelihood over
# supervised positions only:
#
# $$L_{SFT} = -\frac{\sum_{b,t} m_{bt} \log \pi_\theta(y_{bt} \mid x_{b,\le t})}{\sum_{b,t} m_{bt}}$$
#
# **Your turn.** Write `my_sft_loss(logits, targets, loss_mask)`: logits `(B, T, V)` already aligned with
# targets `(B, T)`; targets under mask 0 may be −1 (so do not index with them as they are); average over the
# mask with `masked_mean(values, mask)`. Exercise `a2.sft_loss`, exercises/a2_sft.md §6. The SFT stage
# below trains with it.

# %%
def my_sft_loss(logits, targets, loss_mask):
    """Mean next-token NLL over positions with loss_mask 1: a scalar."""
    # BEGIN SOLUTION a2.sft_loss
    logprobs = F.log_softmax(logits, dim=-1)                                        # (B, T, V)
    nll = -logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)      # (B, T)
    return masked_mean(nll, loss_mask.to(nll.dtype))
    # END SOLUTION


# %%
check("a2.sft_loss", my_sft_loss)

# %%
# Your loss on a real batch equals PyTorch's cross-entropy that ignores the -1 targets.
demos = make_demonstrations(4, seed=0)
batch = collate_sft([make_sft_example(*render(c, tok)) for c in demos], pad_id=tok.pad_id)
print({k: tuple(v.shape) for k, v in batch.items()})
with torch.no_grad():
    logits, _ = base(batch["idx"], attention_mask=batch["attention_mask"])          # (B, T, V)
ours = my_sft_loss(logits, batch["targets"], batch["loss_mask"])
ref = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=-1)
print(f"my_sft_loss {ours.item():.4f}   cross_entropy(ignore_index=-1) {ref.item():.4f}")
assert torch.allclose(ours, ref, atol=1e-5)
print(f"{int(batch['loss_mask'].sum())} of {int(batch['attention_mask'].sum())} real tokens carry loss")

# %% [markdown]
# ## 6. Supervised fine-tuning
#
# The SFT stage loads the pretrained model, renders the simulated labelers' demonstrations (imperfect on
# purpose: see notebook 03) with `render`, trains with `sft_loss` through the shared loop
# `minigpt.trainer.fit` — both of them yours now, if you ran the cells above — and scores greedy answers
# to held-out *val* prompts with the gold oracle, before and after, through an evaluator the pipeline
# hands it: the training code itself never imports the judge.

# %%
run_stages("sft")
sft = summary("sft")
print(f"{sft['steps']} steps on {sft['n_train_demos']:,} demonstrations in {sft['seconds']:.0f}s; val loss "
      f"{sft['val_loss']:.3f}; gold score on {sft['n_eval_prompts']} val prompts: base {sft['base_gold_score']:.3f} "
      f"-> SFT {sft['gold_score']:.3f}")

# %% [markdown]
# ## 7. Base vs SFT
#
# The same held-out prompts, answered greedily by both models, scored by the gold oracle.

# %%
sft_model, _ = load_model(os.path.join(RUN, "sft"))
judge = GoldEvaluator(100 if SMALL else 300, seed=1, max_new_tokens=24)
g_base = judge(base, tok)
g_sft = judge(sft_model, tok)
print(format_gold_table(g_base, g_sft))
print("per H (sft):", {h: round(v, 3) for h, v in g_sft["per_h"].items()})

# %%
for rb, rs in list(zip(g_base["rows"], g_sft["rows"]))[:8]:
    print(f"{rb['prompt']!r}  (gold {rb['gold_answer']!r})")
    print(f"    base: {rb['response']!r:40} {rb['score']:.2f}")
    print(f"    sft : {rs['response']!r:40} {rs['score']:.2f}")

# %% [markdown]
# The fine-tuned model answers in turn and stops; the base model almost never does. At SMALL size SFT learns the
# *form* first: when we ran it, it stopped on 90% of prompts, refused about half the forbidden requests and
# admitted about half the unknowns (forbidden 0.46, unknown 0.53), and counted some words right (0.41); the
# contents of most other answers stay wrong. The documented default run (4 layers, 128 wide,
# 900 SFT steps on 6,000 demonstrations, `python -m rlhf.pipeline`, ~15 minutes on 2 CPU cores) gets much
# further; its figure, gold score per stage on 200 held-out test prompts:

# %%
m = default_run()
print(f"default run, test prompts: base {m['base']['gold_score']:.3f} -> SFT {m['sft']['gold_score']:.3f} (greedy)")
show_result("gold_by_stage.png")

# %% [markdown]
# SFT mostly *unlocks* what pretraining stored. The default base model completes "Spelled
# backwards, horse is" correctly for all 58 words of the world, yet after 300 SFT steps on 1,500
# demonstrations its gold score on "Reverse the word …" prompts was 0.13 (0.295 over all families,
# val prompts). The default now trains 900 steps on 6,000 demonstrations: 0.402 over all families on 200 val
# prompts in the documented default run (0.447 in the headline run, same recipe) — the cheapest gain of the
# whole pipeline, bought before any RLHF. Either way SFT imitates the
# labelers' flaws too, which is the headroom the reward model and PPO work with.

# %% [markdown]
# ## 8. Loss curves

# %%
for stage in ("pretrain", "sft"):
    records = read_metrics(os.path.join(RUN, stage, "metrics.jsonl"))
    val = [(r["step"], round(r["loss"], 3)) for r in records if r.get("split") == "val"]
    print(f"{stage}: validation loss by step {val}")
    display(Image(filename=os.path.join(RUN, stage, "loss.png"), width=480))

# %% [markdown]
# ## 9. Summary
#
# - Pretraining trains the tokenizer and the base model on plain text; its loss starts at about ln V and
#   its samples read like the corpus, but it does not answer questions.
# - The chat template wraps turns in special tokens; your `_blocks` supervises exactly the assistant's
#   content and its `<|end|>` (exercise a2.render).
# - Your `sft_loss` is next-token cross-entropy averaged over those tokens only (exercise a2.sft_loss).
# - SFT turns the base model into one that answers in turn and stops, and the gold oracle measures the
#   change on held-out prompts — the first alignment number.
#
# Next: **05_reward_model** — learn what labelers prefer from comparisons.
