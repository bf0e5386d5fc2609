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
# Both are the stage functions the pipeline calls (`train_world_pretrain`, `train_sft`), run here with
# small overrides of their `tiny` preset so that this notebook takes seconds. Their run directories
# go to a temporary folder.
#
# 1. Setup
# 2. Pretraining a tiny model on the world corpus
# 3. What the base model knows, and what it does with a question
# 4. The chat template and the SFT loss mask
# 5. The SFT loss by hand
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
sys.path[:0] = [str(ROOT), str(ROOT / "notebooks")]

import torch
from nbutil import SMALL, check, run_stages, show_result   # shared by the notebooks: notebooks/nbutil.py
torch.manual_seed(0)
print(f"SMALL={SMALL}, torch {torch.__version__}")

import torch.nn.functional as F
from IPython.display import Image, display
from minigpt.checkpoint import load_model, read_summary
from minigpt.train import sample_text
from minigpt.trainer import read_metrics
from rlhf.gold import GoldEvaluator
from rlhf.pretrain import PRESETS as PRETRAIN_PRESETS, WorldPretrainConfig, train_world_pretrain
from rlhf.data import collate_sft, format_chat, make_sft_example, render, render_prompt, stop_token_id
from rlhf.losses import sft_loss
from rlhf.sft import PRESETS as SFT_PRESETS, SFTConfig, format_gold_table, gold_evaluator, train_sft
from rlhf.world import make_demonstrations, make_prompts

RUN = tempfile.mkdtemp(prefix="minigpt-nb04-")   # every file this notebook writes goes here
print("run directory:", RUN)

# %% [markdown]
# ## 2. Pretraining
#
# `WorldPretrainConfig` (minigpt's `TrainConfig` plus the size of the world corpus) holds the loop's
# fields (steps, batch, learning-rate schedule, ...) and the model's shape; `PRESETS` names two sizes. With `SMALL=1` we take the `tiny` preset and make it a little
# bigger and longer, enough for the model to pick up the corpus (~15 s on 2 cores); with `SMALL=0`
# the `default` preset (a few minutes). `train_world_pretrain` generates the world's corpus and hands
# it to minigpt's `train_pretrain`, which trains a BPE tokenizer first, then the model, and writes `model.pt`, `tokenizer.bpe`, `metrics.jsonl`, `loss.png` and `summary.json`.

# %%
# <SMALL_STAGES>
preset = {**PRETRAIN_PRESETS["tiny"], **SMALL_PRETRAIN} if SMALL else PRETRAIN_PRESETS["default"]
pre_cfg = WorldPretrainConfig(**{**preset, "out_dir": os.path.join(RUN, "pretrain"), "progress": False})
print(pre_cfg)
pre = train_world_pretrain(pre_cfg)

# %%
print(sorted(os.listdir(pre_cfg.out_dir)))
print(f"val loss {pre['val_loss']:.3f} (perplexity {pre['val_ppl']:.1f}), {pre['tokens_per_s']:,.0f} tokens/s, "
      f"{pre['seconds']:.1f}s")
assert read_summary(pre_cfg.out_dir)["stage"] == "pretrain"   # summary.json marks the stage finished

# %% [markdown]
# ## 3. What the base model knows
#
# Continuing plain text, the base model writes world-like sentences, facts included (more or less,
# at this size). But given a *question* in the chat template it has no idea that an answer is
# expected, nor that a turn should end: it has never seen `<|assistant|>` used.

# %%
base, tok = load_model(pre_cfg.out_dir)
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
# ## 4. The chat template and the loss mask
#
# Every message is wrapped in special tokens, `<|user|>` … `<|end|>` `<|assistant|>` … `<|end|>`,
# with content encoded as ordinary text. `render(conversation, tokenizer)` returns the ids and the
# SFT **loss mask**: 1 exactly on the assistant's content tokens and its `<|end|>` — so the prompt is
# context, never a target, and learning the `<|end|>` is how the model learns to stop.
# `render_prompt` ends with `<|assistant|>`: what generation is fed.

# %%
conv = make_demonstrations(1, seed=3)[0]
print(format_chat(conv))
ids, mask = render(conv, tok)
print(f"{'token':>16}  mask")
for i, m in zip(ids, mask):
    print(f"{tok.decode([i])!r:>16}  {m}")
supervised = [i for i, m in zip(ids, mask) if m]
assert supervised == tok.encode(conv[-1]["content"]) + [stop_token_id(tok)]
print("prompt for generation ends with:", [tok.decode([i]) for i in render_prompt(conv[:-1], tok)[-3:]])

# %% [markdown]
# ## 5. The SFT loss by hand
#
# `make_sft_example` aligns inputs and targets (x = ids[:-1], y[t] = ids[t+1] where supervised,
# else −1) and `collate_sft` right-pads a batch. The loss is the mean negative log-likelihood over
# supervised positions only:
#
# $$L_{SFT} = -\frac{\sum_{b,t} m_{bt} \log \pi_\theta(y_{bt} \mid x_{b,\le t})}{\sum_{b,t} m_{bt}}$$
#
# `rlhf.losses.sft_loss` computes it; here it is again with `F.cross_entropy(ignore_index=-1)`.

# %%
demos = make_demonstrations(4, seed=0)
batch = collate_sft([make_sft_example(*render(c, tok)) for c in demos], pad_id=tok.pad_id)
print({k: tuple(v.shape) for k, v in batch.items()})
with torch.no_grad():
    logits, _ = base(batch["idx"], attention_mask=batch["attention_mask"])          # (B, T, V)
ours = sft_loss(logits, batch["targets"], batch["loss_mask"])
ref = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=-1)
print(f"sft_loss {ours.item():.4f}   cross_entropy(ignore_index=-1) {ref.item():.4f}")
assert torch.allclose(ours, ref, atol=1e-5)
print(f"{int(batch['loss_mask'].sum())} of {int(batch['attention_mask'].sum())} real tokens carry loss")

# %% [markdown]
# ## 6. Supervised fine-tuning
#
# `train_sft` loads the pretrained run, renders the simulated labelers' demonstrations (imperfect on
# purpose: see notebook 03), trains with `sft_loss` through the shared loop
# `minigpt.trainer.fit`, and scores greedy answers to held-out *val* prompts with the gold oracle,
# before and after — through the evaluator we hand it (`gold_evaluator(sft_cfg, GoldEvaluator)`): the
# training code itself never imports the judge.

# %%
preset = {**SFT_PRESETS["tiny"], **SMALL_SFT} if SMALL else SFT_PRESETS["default"]
sft_cfg = SFTConfig(**{**preset, "out_dir": os.path.join(RUN, "sft"), "init_from": pre_cfg.out_dir,
                       "progress": False})
sft = train_sft(sft_cfg, gold_evaluator(sft_cfg, GoldEvaluator))

# %% [markdown]
# ## 7. Base vs SFT
#
# The same held-out prompts, answered greedily by both models, scored by the gold oracle.

# %%
sft_model, _ = load_model(sft_cfg.out_dir)
judge = GoldEvaluator(100 if SMALL else 300, seed=1, max_new_tokens=sft_cfg.max_new_tokens)
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
# At SMALL size the fine-tuned model mostly learns the *form* — answer briefly, stop, refuse the
# forbidden, admit the unknown — and gets few contents right; the base model almost never stops.
# The `default` preset (`SMALL=0`, or `python -m rlhf.pretrain --preset default` then
# `python -m rlhf.sft --preset default`) trains a 4-layer model for minutes: run it to see how far
# SFT gets. Either way SFT imitates the labelers' flaws too, which is the headroom the reward model
# and PPO work with.
#
# SFT mostly *unlocks* what pretraining stored. The default base model completes "Spelled
# backwards, horse is" correctly for all 58 words of the world, yet after 300 SFT steps on 1,500
# demonstrations its gold score on "Reverse the word …" prompts was 0.13 (0.295 over all families,
# val prompts). The default now trains 900 steps on 6,000 demonstrations: reverse 0.67, all families
# 0.447 — the cheapest gain of the whole pipeline, bought before any RLHF.

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
# - `train_world_pretrain(WorldPretrainConfig)` trains the tokenizer and the base model on plain text; its loss
#   starts at about ln V and its samples read like the corpus.
# - The chat template wraps turns in special tokens; `render` supervises exactly the assistant's
#   content and its `<|end|>`.
# - `sft_loss` is next-token cross-entropy averaged over those tokens only.
# - `train_sft(SFTConfig)` turns the base model into one that answers in turn and stops, and the
#   gold oracle measures the change on held-out prompts — the first alignment number.
#
# Next: **05_reward_model** — learn what labelers prefer from comparisons.
