# %% [markdown]
# # 01 · A GPT from scratch
#
# The language model every later stage of the InstructGPT recipe stands on: GPT-2's architecture,
# written out by hand in `minigpt/model.py` (one file, top to bottom: attention → MLP → block → GPT)
# and sampled by `minigpt/generate.py`.
#
# This notebook *uses* those modules, re-does by hand what it wants to check, and asks you to write three
# pieces yourself ("your turn": a function, then a cell that grades it with the course's tests):
#
# 1. Setup
# 2. A model from a config
# 3. Causal self-attention: **your turn**, then compared with the model's
# 4. Causality: the future never leaks into the past; **your turn**: the block
# 5. The loss at initialisation is about ln(V)
# 6. A few steps of training: memorise one sentence
# 7. Generation with and without the KV cache
# 8. Sampling: temperature, top-k, top-p (**your turn**: the filters)
# 9. Batched prompts, left padding, and log-probs that a forward pass reproduces
# 10. Summary
#
# Run it with `SMALL=1` (default, seconds) or `SMALL=0` (a wider model, longer generation).

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

import torch.nn.functional as F
from minigpt import GPT
from minigpt.config import MODEL_PRESETS, model_preset
from minigpt.generate import generate, left_pad

# %% [markdown]
# ## 2. A model from a config
#
# A `GPTConfig` is six numbers and two switches. Presets name the sizes the project uses: `tiny`
# (tests), `small` (the CPU default), `gpt2` (124M, for GPU users). Here the vocabulary is the 256
# byte values plus a little room, so any text can be fed in as its UTF-8 bytes without a tokenizer
# (notebook 02 builds a real one).

# %%
print(MODEL_PRESETS)
cfg = model_preset("tiny" if SMALL else "small", vocab_size=260)
print(cfg)
model = GPT(cfg)
model.eval()  # no dropout (it is 0 anyway)
print(f"{model.num_params():,} parameters without the position embedding, {model.num_params(False):,} in all")

# %%
# Every tensor of the first block and the embeddings; C = n_embd, V = vocab_size.
for name, p in model.named_parameters():
    if ".h.0." in name or ".h." not in name:
        print(f"{name:35s} {tuple(p.shape)}")
print("LM head tied to the token embedding:", model.lm_head.weight is model.transformer.wte.weight)

# %% [markdown]
# ## 3. Causal self-attention: your turn
#
# Vaswani et al.'s equation 1, with a causal mask M (0 where a query may look at a key, −∞ in its future):
#
# $$\mathrm{Attn}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_{head}}} + M\right) V$$
#
# **Your turn.** Write `my_attention(q, k, v, attn_mask, dropout)`: the scores `(B, nh, T, S)` scaled by
# 1/√d; with no `attn_mask`, −∞ on the keys after each query (`tril`); otherwise *add* `attn_mask` (it
# already holds 0/−∞); softmax over the keys; `dropout` on the weights when given; the weighted sum of the
# values. The cell after it runs the course's graded tests of exercise `a1.attention` on your function
# (exercises/a1_gpt.md §4 explains it) and, once they pass, puts it into the model: `CausalSelfAttention`
# calls it whenever it does not use PyTorch's fused kernel.

# %%
def my_attention(q, k, v, attn_mask=None, dropout=None):
    """q: (B, nh, T, hs); k, v: (B, nh, S, hs) -> (B, nh, T, hs)."""
    # BEGIN SOLUTION a1.attention
    T, S, hs = q.size(2), k.size(2), q.size(-1)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)                  # (B, nh, T, S)
    if attn_mask is None:
        causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()
        att = att.masked_fill(~causal, float("-inf"))                # query i sees keys 0..i
    else:
        att = att + attn_mask
    att = F.softmax(att, dim=-1)                                     # each row sums to 1 over visible keys
    if dropout is not None:
        att = dropout(att)
    return att @ v
    # END SOLUTION


# %%
check("a1.attention", my_attention)

# %% [markdown]
# Now the whole module by hand around your function: one matmul makes q, k and v, the heads become a
# batch dimension, your attention mixes the values, and the output projection maps back. It must equal
# both of the model's paths: PyTorch's fused kernel and the written-out one (now yours).

# %%
attn = model.transformer.h[0].attn
B, T, C = 2, 8, cfg.n_embd
nh, hs = cfg.n_head, cfg.n_embd // cfg.n_head
x = torch.randn(B, T, C)

with torch.no_grad():
    q, k, v = attn.c_attn(x).split(C, dim=2)              # 3 x (B, T, C): one matmul makes all three
    q = q.view(B, T, nh, hs).transpose(1, 2)              # (B, nh, T, hs): heads become a batch dim
    k = k.view(B, T, nh, hs).transpose(1, 2)              # (B, nh, T, hs)
    v = v.view(B, T, nh, hs).transpose(1, 2)              # (B, nh, T, hs)
    y = my_attention(q, k, v)                             # (B, nh, T, hs)
    y_hand = attn.c_proj(y.transpose(1, 2).reshape(B, T, C))   # heads side by side again, then project

    y_model = attn(x)                                     # the model's module (fused SDPA kernel)
    attn.fused = False
    y_explicit = attn(x)                                  # the model's written-out path (yours now)
    attn.fused = True
    scores = (q @ k.transpose(-2, -1) / math.sqrt(hs)).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(),
                                                                 float("-inf"))
    weights = F.softmax(scores, dim=-1)                   # (B, nh, T, T), to look at below

print("max |hand - fused|    =", (y_hand - y_model).abs().max().item())
print("max |hand - explicit| =", (y_hand - y_explicit).abs().max().item())
assert torch.allclose(y_hand, y_model, atol=1e-5) and torch.allclose(y_hand, y_explicit, atol=1e-5)

# %%
# The attention pattern of head 0: lower-triangular. At initialisation the scores are tiny, so each
# query spreads its weight almost evenly over the keys it may see: row i is about 1/(i+1).
torch.set_printoptions(precision=2, sci_mode=False)
print(weights[0, 0])

import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(3.2, 3))
ax.imshow(weights[0, 0], cmap="Blues", vmin=0, vmax=1)
ax.set_xlabel("key position"); ax.set_ylabel("query position"); ax.set_title("attention weights, head 0")
plt.show()

# %% [markdown]
# ## 4. Causality
#
# Changing the last token must not change the logits at any earlier position (otherwise training
# would let the model read the answer it is asked to predict).

# %%
idx = torch.randint(0, cfg.vocab_size, (1, 16))
idx2 = idx.clone()
idx2[0, -1] = (idx[0, -1] + 1) % cfg.vocab_size
with torch.no_grad():
    a, _ = model(idx)
    b, _ = model(idx2)
print("earlier positions change by", (a[:, :-1] - b[:, :-1]).abs().max().item())
print("the last position changes by", (a[:, -1] - b[:, -1]).abs().max().item())
assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6)

# %% [markdown]
# ### Your turn: the block
#
# A GPT-2 block is *pre-LayerNorm*: each sub-layer reads a normalised copy of the residual stream and adds
# its output back, `x + Attn(LN₁(x))`, then `x + MLP(LN₂(x))`. Write it as the block's `forward` (it gets
# `self`, whose `ln_1`, `attn`, `ln_2`, `mlp` are built; pass `attn_mask` and `kv_cache` to the attention).
# Exercise `a1.block`, exercises/a1_gpt.md §5.

# %%
def my_block_forward(self, x, attn_mask=None, kv_cache=None):
    """x: (B, T, C) -> (B, T, C)."""
    # BEGIN SOLUTION a1.block
    x = x + self.attn(self.ln_1(x), attn_mask, kv_cache)
    x = x + self.mlp(self.ln_2(x))
    return x
    # END SOLUTION


# %%
check("a1.block", my_block_forward)

# %% [markdown]
# ## 5. The loss at initialisation is about ln(V)
#
# A freshly initialised model should be *unsure*: nearly uniform over the V tokens, so its
# cross-entropy is about ln V. GPT-2's init (every weight N(0, 0.02)) gives that. With a token
# embedding drawn N(0, 1) instead — PyTorch's default for `nn.Embedding` — the tied LM head produces
# large logits and a loss far above ln V: a model that starts out confidently wrong.

# %%
idx = torch.randint(0, cfg.vocab_size, (8, cfg.block_size))
targets = torch.randint(0, cfg.vocab_size, (8, cfg.block_size))
with torch.no_grad():
    _, loss = model(idx, targets)
print(f"loss at init {loss.item():.3f}   ln(V) = ln({cfg.vocab_size}) = {math.log(cfg.vocab_size):.3f}")
assert abs(loss.item() - math.log(cfg.vocab_size)) < 0.1

bad = GPT(cfg)
torch.nn.init.normal_(bad.transformer.wte.weight, mean=0.0, std=1.0)  # the mistake
with torch.no_grad():
    _, bad_loss = bad(idx, targets)
print(f"with an N(0, 1) embedding: {bad_loss.item():.1f}")

# %% [markdown]
# ## 6. A few steps of training: memorise one sentence
#
# Not pretraining yet (that is notebook 04, with `minigpt.train`): just enough gradient steps on one
# sentence, fed as bytes, to give the model something to say. The targets are the inputs shifted by
# one: position t predicts token t+1.

# %%
text = "The capital of Norland is Vesk. Reversed, planet is tenalp. "
data = torch.tensor(list(text.encode("utf-8")) * 4)[: cfg.block_size + 1]
x, y = data[:-1][None], data[1:][None]                     # (1, T): inputs and next-token targets

torch.manual_seed(0)
model = GPT(cfg)
optimizer = model.configure_optimizers(weight_decay=0.0, learning_rate=3e-3, betas=(0.9, 0.95))
model.train()
t0 = time.time()
losses = []
for step in range(150):
    _, loss = model(x, y)
    losses.append(loss.item())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if step % 50 == 0:
        print(f"step {step:3d}  loss {loss.item():.3f}")
model.eval()
print(f"final loss {loss.item():.3f} after {time.time() - t0:.1f}s")
assert loss.item() < 0.5
fig, ax = plt.subplots(figsize=(5, 2.6))
ax.plot(losses)
ax.axhline(math.log(cfg.vocab_size), ls=":", c="gray", label="ln V (uniform guess)")
ax.set_xlabel("step"); ax.set_ylabel("cross-entropy"); ax.legend(); ax.set_title("memorising one sentence")
plt.show()


# %% [markdown]
# ## 7. Generation with and without the KV cache
#
# Generating token by token, the plain way re-runs the model over the whole sequence at each step
# (O(T²) work per token in attention, O(T) in the MLPs). The KV cache keeps every layer's keys and
# values, so each new token goes through the model alone. Greedy decoding (`temperature=0`) must give
# the *same* tokens either way.

# %%
def to_text(ids):
    return bytes([i for i in ids if i < 256]).decode("utf-8", errors="replace")

prompt = torch.tensor([list("The capital".encode())])
n_new = 40 if SMALL else cfg.block_size - prompt.size(1)
with torch.no_grad():
    t0 = time.time(); cached = model.generate(prompt, n_new, temperature=0, use_cache=True); t_cache = time.time() - t0
    t0 = time.time(); plain = model.generate(prompt, n_new, temperature=0, use_cache=False); t_plain = time.time() - t0
print(repr(to_text(cached[0].tolist())))
print(f"identical tokens: {torch.equal(cached, plain)}; {n_new} tokens: cache {t_cache*1e3:.0f} ms, "
      f"recompute {t_plain*1e3:.0f} ms")
assert torch.equal(cached, plain)

# %% [markdown]
# For a model this small, Python overhead dominates and the two timings are close; the cache's
# speed-up grows with the model's width and the sequence length (`python -m bench.model` measures it).

# %% [markdown]
# ## 8. Sampling: temperature, top-k, top-p
#
# `temperature` divides the logits (below 1: sharper; above 1: flatter); `top_k` keeps the k most
# likely tokens; `top_p` keeps the smallest set whose probability reaches p. A `torch.Generator`
# makes samples reproducible.

# %% [markdown]
# ### Your turn: top-k and top-p
#
# Write `my_filter_logits(logits, top_k, top_p)` for logits `(B, V)`: first keep exactly the `top_k` largest
# logits of each row, then keep the smallest set of the most likely tokens whose probability reaches
# `top_p` (the most likely token always stays); every other logit becomes −∞. `None` means no filter.
# Exercise `a1.filter_logits`, exercises/a1_gpt.md §7. Once it passes, `generate` samples with it.

# %%
def my_filter_logits(logits, top_k=None, top_p=None):
    """logits: (B, V) -> (B, V), -inf outside the kept tokens."""
    # BEGIN SOLUTION a1.filter_logits
    if top_k is not None and top_k < logits.size(-1):
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        kth = torch.topk(logits, top_k, dim=-1).indices                  # (B, k)
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, kth, True)
        logits = logits.masked_fill(~keep, float("-inf"))
    if top_p is not None and top_p < 1.0:
        if not 0.0 < top_p:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        drop_sorted = probs.cumsum(-1) - probs >= top_p    # the tokens ranked above already reach p
        logits = logits.masked_fill(torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted), float("-inf"))
    return logits
    # END SOLUTION


# %%
check("a1.filter_logits", my_filter_logits)

# %%
for kw in [dict(temperature=0.5), dict(temperature=1.5), dict(temperature=1.5, top_k=3),
           dict(temperature=1.5, top_p=0.5)]:
    g = torch.Generator().manual_seed(0)
    out = model.generate(prompt, 30, generator=g, **kw)
    print(f"{str(kw):40s} {to_text(out[0].tolist())!r}")

# %% [markdown]
# ## 9. Batched prompts, left padding, and log-probs
#
# RLHF samples many prompts at once. `minigpt.generate.generate` left-pads them into one block, so
# every row's last prompt token sits in the same column, and computes positions from the attention
# mask, so padding shifts nothing. It returns a `Generation` with the new tokens, their masks, and
# (when asked) the log-probability of each sampled token.
#
# The check PPO depends on: a plain forward pass over the same sequences, with the same mask and
# temperature, reading the logits *one position earlier*, must reproduce those log-probs.

# %%
ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
print(ids, mask, sep="\n")

# %%
prompts = [list(s.encode()) for s in ["The capital", "Reversed, pla", "Vesk"]]
eos = ord(".")                                    # stop each row at its first full stop
g = torch.Generator().manual_seed(0)
gen = generate(model, prompts, 30, temperature=0.8, eos_token_id=eos, pad_token_id=0,
               generator=g, return_logprobs=True)
P = gen.prompt_length
for row in range(len(prompts)):
    n = int(gen.response_mask[row].sum())
    print(f"{to_text(prompts[row])!r:18} -> {to_text(gen.response[row, :n].tolist())!r}  stopped={bool(gen.stopped[row])}")

with torch.no_grad():
    logits, _ = model(gen.sequences, attention_mask=gen.attention_mask)      # (B, P+N, V)
logp = F.log_softmax(logits[:, P - 1:-1] / 0.8, dim=-1)                       # predicts tokens P..P+N-1
logp = logp.gather(-1, gen.response[..., None])[..., 0] * gen.response_mask   # (B, N)
diff = (logp - gen.logprobs).abs().max().item()
print(f"max |recomputed - generated| log-prob = {diff:.1e}")
assert diff < 1e-5

# %%
# Each prompt alone gives the same greedy tokens as in the padded batch.
batch = generate(model, prompts, 20, temperature=0, pad_token_id=0)
for row, p in enumerate(prompts):
    alone = generate(model, [p], 20, temperature=0, pad_token_id=0)
    assert torch.equal(alone.response[0], batch.response[row])
print("padded batch == each prompt alone")

# %% [markdown]
# ## 10. Summary
#
# - `GPTConfig` + `GPT` are GPT-2: token and position embeddings, pre-LayerNorm blocks of causal
#   self-attention and a tanh-GELU MLP, a final LayerNorm, and an LM head tied to the embedding.
# - Your attention equals the model's fused (SDPA) kernel; no position sees its future; your block and
#   your top-k/top-p filter pass the course's graded tests (exercises a1.attention, a1.block,
#   a1.filter_logits) and the model ran on them for the rest of the notebook.
# - GPT-2's small init gives a loss of about ln V at the start; an N(0, 1) embedding does not.
# - Greedy decoding with the KV cache gives exactly the tokens of the recompute path.
# - Batched, left-padded prompts behave as if each were alone, and the log-probs returned by
#   generation are what a forward pass recomputes — the identity PPO's probability ratio relies on.
#
# Next: **02_tokenizer** replaces raw bytes by a byte-level BPE vocabulary.
