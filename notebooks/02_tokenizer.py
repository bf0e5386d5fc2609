# %% [markdown]
# # 02 · A byte-level BPE tokenizer
#
# GPT-2 reads *tokens*, not characters: frequent byte sequences (" the", "ing", " capital") get ids
# of their own, so the same context window holds more text. `minigpt/tokenizer.py` learns such a
# vocabulary with byte-pair encoding (Sennrich et al., 2016) on GPT-2's pre-tokenisation, encodes
# with tiktoken's fast Rust code running *our* merges, and keeps a readable pure-Python encoder
# (`encode_slow`) that must agree with it token for token.
#
# 1. Setup
# 2. Pre-tokenisation: where merges may never cross
# 3. BPE by hand on the textbook example (**your turn**: count pairs, merge a pair)
# 4. Training on a few sentences: the first merges
# 5. Encoding (**your turn**: BPE of one pre-token); `encode` (tiktoken) vs `encode_slow` (Python)
# 6. Decoding is total
# 7. Special tokens: the chat template's building blocks
# 8. Save and load
# 9. Vocabulary size vs compression on the world corpus
# 10. Summary

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

from minigpt.tokenizer import SPECIAL_TOKENS, Tokenizer, split_pretokens, train_bpe

# %% [markdown]
# ## 2. Pre-tokenisation
#
# Before any merging, GPT-2 splits text with a regular expression into *pre-tokens*: a word with its
# leading space, a run of digits, a run of punctuation, whitespace. Merges happen only inside a
# pre-token, so "Vesk." can never become one token that glues a name to its full stop.

# %%
print(split_pretokens("Hello world, it's 2024!!"))
print(split_pretokens("The capital of Norland is Vesk.  What is 12 minus 5?"))

# %% [markdown]
# ## 3. BPE by hand: "aaabdaaabac" — your turn
#
# The Wikipedia example. Start from bytes (a = 97, b = 98, ...); count adjacent pairs; replace the
# most frequent pair by a new id (256, 257, ...); repeat. Ties go to the pair with the smaller ids,
# which makes training deterministic.
#
# **Your turn.** One merge step is two functions: `my_count_pairs(ids, counts, weight)` adds `weight` to
# `counts[(a, b)]` for every adjacent pair (a, b) of `ids` (a new `Counter` when `counts` is None) and
# returns the counter; `my_merge_pair(ids, pair, new_id)` scans left to right and replaces each occurrence
# of `pair` by `new_id` ("aaab" with (a, a) becomes [256, a, b]: the left pair wins). Exercises
# `a1.count_pairs` and `a1.merge_pair`, exercises/a1_gpt.md §1. Once they pass, `train_bpe` uses them.

# %%
from collections import Counter


def my_count_pairs(ids, counts=None, weight=1):
    """Counter of adjacent pairs of ids, each occurrence adding `weight` (into `counts` when given)."""
    counts = Counter() if counts is None else counts
    # BEGIN SOLUTION a1.count_pairs
    for pair in zip(ids, ids[1:]):
        counts[pair] += weight
    # END SOLUTION
    return counts


def my_merge_pair(ids, pair, new_id):
    """ids with every left-to-right occurrence of `pair` replaced by new_id."""
    # BEGIN SOLUTION a1.merge_pair
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
    # END SOLUTION


# %%
check("a1.count_pairs", my_count_pairs)
check("a1.merge_pair", my_merge_pair)

# %%
# Three merges with your functions; then `train_bpe` (which now calls them) must learn the same ones.
ids = list("aaabdaaabac".encode())
merges = []
for new_id in range(256, 259):
    counts = my_count_pairs(ids)
    best = max(counts, key=lambda pair: (counts[pair], -pair[0], -pair[1]))  # most frequent, then smallest
    ids = my_merge_pair(ids, best, new_id)
    merges.append(best)
    print(f"merge {best} -> {new_id} (seen {counts[best]}x): {ids}")

tok = train_bpe("aaabdaaabac", vocab_size=259, special_tokens=())
print("train_bpe:", tok.merges)
assert tok.merges == merges == [(97, 97), (97, 98), (256, 257)]
print("token 258 is", tok.token_bytes(258))

# %% [markdown]
# ## 4. Training on a few sentences
#
# `train_bpe(text, vocab_size)`: the vocabulary counts the 256 byte tokens, the merges, and the six
# special tokens the project uses. On a handful of sentences the first merges are the obvious ones:
# a space before a letter, common endings, then whole frequent words.

# %%
sentences = [
    "The capital of Norland is Vesk.",
    "The capital of Harth is Olo.",
    "The opposite of hot is cold.",
    "The opposite of happy is sad.",
    "Reversed, planet is tenalp.",
    "Reversed, river is revir.",
] * 3
text = "\n".join(sentences)
tok = train_bpe(text, vocab_size=256 + 40 + len(SPECIAL_TOKENS))
print(tok)
for i, (p, q) in enumerate(tok.merges[:20]):
    print(f"{256 + i}: {tok.token_bytes(p)!r:>12} + {tok.token_bytes(q)!r:<10} -> {tok.token_bytes(256 + i)!r}")

# %% [markdown]
# ## 5. Encoding: `encode` vs `encode_slow`
#
# `encode_slow` is the textbook algorithm: split into pre-tokens, then inside each one repeatedly
# merge the adjacent pair that was learned earliest. `encode` hands the same vocabulary to tiktoken.
# They must produce identical ids — `train_bpe` even skips the rare merge on which they could differ
# (see the module docstring of `minigpt/bpe.py`).

# %% [markdown]
# **Your turn.** Encoding one pre-token: start from its bytes' ids and, while some adjacent pair is a
# learned merge, merge the pair that was learned *earliest* (the smallest new id; leftmost on ties); stop
# when no adjacent pair is a merge. Write it as the tokenizer's method `_bpe(self, piece)`: `piece` is
# bytes, `self._byte_to_id[b]` gives a byte's id and `self.pair_to_id[(a, b)]` the id a merge makes.
# Exercise `a1.bpe_encode`, exercises/a1_gpt.md §3. Once it passes, `encode_slow` runs on it.

# %%
def my_bpe(self, piece):
    """bytes of one pre-token -> its token ids under the learned merges."""
    ids = [self._byte_to_id[b] for b in piece]
    # BEGIN SOLUTION a1.bpe_encode
    while len(ids) >= 2:
        ranked = [(self.pair_to_id[p], i) for i, p in enumerate(zip(ids, ids[1:])) if p in self.pair_to_id]
        if not ranked:
            break                                # no adjacent pair is a merge: done
        new_id, i = min(ranked)                  # earliest-learned merge, leftmost on ties
        ids[i:i + 2] = [new_id]
    # END SOLUTION
    return ids


# %%
check("a1.bpe_encode", my_bpe)

# %%
s = "The capital of Norland is Vesk. The opposite of cold is hot."
ids = tok.encode(s)
print(len(s.encode()), "bytes ->", len(ids), "tokens")
print([tok.decode([i]) for i in ids])
assert ids == tok.encode_slow(s)

# %%
# A larger tokenizer on the synthetic world's pretraining text (notebook 03), and a race.
from rlhf.world import corpus

world_text = corpus(100_000 if SMALL else 1_000_000, seed=0)
t0 = time.time()
big = train_bpe(world_text, vocab_size=1024)
print(f"trained {big} in {time.time() - t0:.2f}s")

sample = world_text[:20_000]
t0 = time.time(); fast = big.encode(sample); t_fast = time.time() - t0
t0 = time.time(); slow = big.encode_slow(sample); t_slow = time.time() - t0
print(f"encode: {t_fast * 1e3:.1f} ms, encode_slow: {t_slow * 1e3:.1f} ms, identical: {fast == slow}")
assert fast == slow
for line in ["Tell me the secret code word.", "What is 12 minus 5?", "Sort 21, 7, 24 from smallest to largest."]:
    print(f"{line!r:45} -> {[big.decode([i]) for i in big.encode(line)]}")

# %% [markdown]
# ## 6. Decoding is total
#
# Every string encodes (bytes are the fallback, so there is no `<unk>`), and `decode` never raises:
# an id it does not know and a byte sequence cut in the middle of a character both become U+FFFD.
# A model can sample any id, so a decoder that throws would crash a chat session.

# %%
for s in ["héllo wörld", "世界 🙂", "tabs\tand\nnewlines", ""]:
    ids = big.encode(s)
    assert big.decode(ids) == s == big.decode(big.encode_slow(s))
    print(f"{s!r:24} {len(s.encode()):2d} bytes -> {len(ids):2d} tokens, round-trips")
print(repr(big.decode([104, 10**9, 0xC3])))   # 'h', an unknown id, half of a two-byte character

# %% [markdown]
# ## 7. Special tokens
#
# `<|endoftext|>` separates documents; `<|system|>`, `<|user|>`, `<|assistant|>` and `<|end|>` build
# the chat template (notebook 04); `<|pad|>` pads batches and is never the stop token. They get the
# ids after the merges. In ordinary text their *strings* are plain text, so a user who types
# "<|end|>" cannot end the assistant's turn; only code that asks for them (`allowed_special`) gets
# the special ids.

# %%
print(big.special_tokens)
chat = "<|user|>What is 3 plus 4?<|end|><|assistant|>7<|end|>"
as_text = big.encode(chat)
as_special = big.encode(chat, allowed_special="all")
print("as plain text:", len(as_text), "tokens")
print("with specials:", as_special)
print([big.decode([i]) for i in as_special])
assert big.special_id("<|end|>") in as_special and big.special_id("<|end|>") not in as_text
assert as_special == big.encode_slow(chat, allowed_special="all")

# %% [markdown]
# ## 8. Save and load
#
# A small text format: a header, the pattern, the merges, the special tokens. A run directory keeps
# its `tokenizer.bpe` beside the weights. Here it goes to a temporary directory.

# %%
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "tokenizer.bpe")
    big.save(path)
    print(open(path, encoding="utf-8").read()[:300], "...")
    again = Tokenizer.load(path)
assert again == big and again.encode(chat, allowed_special="all") == as_special
print("loaded tokenizer is identical")

# %% [markdown]
# ## 9. Vocabulary size vs compression
#
# More merges → fewer tokens per byte of text (a longer effective context) but a bigger embedding
# table. On the small, repetitive world corpus the gain flattens quickly.

# %%
import warnings
import matplotlib.pyplot as plt

held_out = corpus(20_000, seed=1)
sizes = [300, 512, 1024, 2048] if SMALL else [300, 512, 1024, 2048, 4096]
reached, ratio = [], []
for v in sizes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # a small text can run out of pairs first: said below
        t = train_bpe(world_text, vocab_size=v)
    reached.append(t.vocab_size)
    ratio.append(len(held_out.encode()) / len(t.encode(held_out)))
    note = "" if t.vocab_size == v else f" (the text ran out of pairs to merge at {t.vocab_size})"
    print(f"vocab {v:5d}: {ratio[-1]:.2f} bytes per token on held-out text{note}")
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(reached, ratio, "o-")
ax.set_xscale("log", base=2)
ax.set_xlabel("vocabulary size")
ax.set_ylabel("bytes per token (held-out)")
ax.set_title("more merges, shorter sequences")
plt.show()

# %% [markdown]
# ## 10. Summary
#
# - Pre-tokenisation fixes where merges may happen; BPE then learns the most frequent pairs, one
#   merge at a time — with your `count_pairs` and `merge_pair`, on "aaabdaaabac" exactly the textbook's
#   three merges; your `_bpe` encodes with them (exercises a1.count_pairs, a1.merge_pair, a1.bpe_encode).
# - `encode` (tiktoken, fast) and `encode_slow` (readable Python) give the same ids on any text.
# - Every string round-trips, and `decode` never raises.
# - Special tokens are ids after the merges, reached only through `allowed_special`, so user text
#   cannot forge the chat template's markers.
#
# Next: **03_instruction_world**, the synthetic world whose corpus we just tokenised, and its judge.
