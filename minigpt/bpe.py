"""Byte-level BPE as pure functions: GPT-2's pre-tokeniser, the merge rules, and the merge-learning loop.

GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", section 2.2)
tokenises text in three steps:

1. split the text into pre-tokens with a regex (words with their leading space, numbers, runs of
   punctuation, whitespace), so that no merge ever joins e.g. a word and the full stop after it;
2. write each pre-token as UTF-8 bytes, ids 0..255: every string has an encoding, there is no <unk>;
3. apply the learned merges: repeatedly replace an adjacent pair by the token it merges into, the
   pair whose merge was learned earliest first.

Training (byte-pair encoding, Sennrich et al. 2016) learns the merges: count adjacent pairs over the
corpus, turn the most frequent pair into a new token, repeat until the vocabulary is full.

    from minigpt.bpe import learn_merges
    learn_merges("aaabdaaabac", n_merges=3)         # [(97, 97), (97, 98), (256, 257)]: aa, ab, aaab

This module holds no vocabulary object; `minigpt.tokenizer` wraps these functions in the `Tokenizer`
class (encode, decode, save/load) and `train_bpe`.

One subtlety (and the pairs `learn_merges` refuses to merge). tiktoken does not store merges as pairs:
it stores the *bytes* of each token with a rank and, inside a pre-token, repeatedly joins the adjacent
parts whose concatenation is the lowest-ranked token (`bpe_by_bytes` below). `Tokenizer.encode_slow`
applies merges as pairs (`Tokenizer._bpe`), as GPT-2's own encoder.py does. The two agree on every
input when every token t, merged from (p, q), satisfies

    bpe_by_bytes(bytes(t), tokens ranked below t) == [bytes(p), bytes(q)]            (*)

i.e. tiktoken's rule, run on t's own bytes with the tokens that existed before t, reaches exactly the
pair that t merges. (Proof sketch: inside any pre-token, the parts that tiktoken's rule ever puts side
by side were each built by the same rule from their own bytes, so if two adjacent parts x, y join into
a token t, running the rule on bytes(t) alone passes through [x, y]; a run has only one two-part
state, so (x, y) = (p, q) by (*): both encoders see the same candidate pairs with the same ranks.)
Two merges that produce the same bytes, e.g. (a, ab) and (aa, b), violate (*) for the second one;
so can a merge whose bytes tiktoken would split differently. `learn_merges` checks (*) before
accepting each merge and skips (forever) a pair that fails it. Learning merges from the corpus as it
stands seems to satisfy (*) by itself: the guard has not fired on any text we tried (source code, docs,
the world corpus, random a/b strings), but it is cheap and makes the guarantee explicit.
`Tokenizer.load` checks (*) again, and the tests compare `encode` with `encode_slow` on varied and
random text.
"""

from __future__ import annotations

import heapq
import warnings
from collections import Counter, defaultdict
from typing import Iterable

import regex  # the `regex` package (a tiktoken dependency): `re` has no \p{L} classes

# GPT-2's pre-tokenisation regex, as tiktoken writes it for r50k_base / gpt2. The original GPT-2
# release wrote  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+  ;
# the possessive `++` and the `\s++$` branch give the same split, faster.
# Branches: English contractions; letters with an optional leading space; digits likewise; other
# symbols likewise; whitespace not followed by a non-space (so " word" keeps its space); whitespace.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


# -----------------------------------------------------------------------------
# small helpers, each with a worked example

def split_pretokens(text: str, pattern: str = GPT2_SPLIT_PATTERN) -> list[str]:
    """Split text into GPT-2 pre-tokens; merges never cross their boundaries.

    >>> split_pretokens("Hello world, it's 2024!!")
    ['Hello', ' world', ',', ' it', "'s", ' 2024', '!!']
    """
    return regex.findall(pattern, text)


def count_pairs(ids: list[int], counts: Counter | None = None, weight: int = 1) -> Counter:
    """Count adjacent pairs (each occurrence adds `weight`).

    >>> count_pairs([1, 2, 3, 1, 2])
    Counter({(1, 2): 2, (2, 3): 1, (3, 1): 1})
    """
    counts = Counter() if counts is None else counts
    # BEGIN SOLUTION a1.count_pairs
    for pair in zip(ids, ids[1:]):
        counts[pair] += weight
    # END SOLUTION
    return counts


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids`, scanning left to right, by `new_id`.

    >>> merge_pair([97, 97, 97, 98], (97, 97), 256)   # "aaab": the left "aa" wins
    [256, 97, 98]
    """
    # BEGIN SOLUTION a1.merge_pair
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
    # END SOLUTION


def bpe_by_bytes(piece: bytes, ranks: dict[bytes, int], max_rank: int | None = None) -> list[bytes]:
    """tiktoken's merge rule: join the adjacent parts whose concatenation has the lowest rank.

    Starts from single bytes; at each step joins the adjacent pair whose joined bytes are a token of
    rank < max_rank (all ranks when None) with the lowest rank, leftmost on ties; stops when no
    adjacent pair joins into a token.

    >>> ranks = {bytes([i]): i for i in range(256)} | {b"aa": 256, b"ab": 257, b"aaab": 258}
    >>> bpe_by_bytes(b"aaab", ranks)
    [b'aaab']
    >>> bpe_by_bytes(b"aaab", ranks, max_rank=258)   # the pair that token 258 merges
    [b'aa', b'ab']
    """
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) >= 2:
        best_rank, best_i = None, None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (max_rank is None or rank < max_rank):
                if best_rank is None or rank < best_rank:
                    best_rank, best_i = rank, i
        if best_i is None:
            break
        parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def to_encodable(text: str) -> str:
    """Lone surrogates cannot be UTF-8 encoded; like tiktoken, replace them by U+FFFD.

    >>> to_encodable("a\\ud800b")
    'a\\ufffdb'
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# -----------------------------------------------------------------------------
# learning the merges

def learn_merges(text: str, n_merges: int, special_tokens: Iterable[str] = (),
                 pattern: str = GPT2_SPLIT_PATTERN, verbose: bool = False) -> list[tuple[int, int]]:
    """Learn up to `n_merges` merges from `text`; merge i makes token 256 + i (byte ids in identity order).

    The textbook example (Wikipedia, "Byte pair encoding"): "aaabdaaabac" merges
    aa -> 256 (4 occurrences), then ab -> 257 (2, tied with (256, a) and chosen by the smaller ids),
    then (256, 257) = "aaab" -> 258:
    >>> learn_merges("aaabdaaabac", 3)
    [(97, 97), (97, 98), (256, 257)]

    special_tokens: strings cut out of `text` before counting (document separators, not text to learn);
                    their number only enters the "ran out of pairs" warning's vocabulary size.

    How (and why it takes seconds, not hours):
    - Special-token strings in `text` are replaced by a space first.
    - The text is split into pre-tokens and only the *unique* pre-tokens are kept, each with its
      frequency: " the" appearing 5,000 times is one word of weight 5,000.
    - Pair counts are kept up to date incrementally: merging (p, q) only touches the words that
      contain it (an index pair -> words), and a heap gives the most frequent pair in O(log n).
    - Ties in frequency go to the pair with the smaller ids, so training is deterministic.
    - A pair whose merged bytes tiktoken would reach differently (condition (*) in the module
      docstring, e.g. bytes already in the vocabulary) is skipped, so encode == encode_slow.
    If the text runs out of pairs, fewer merges come back (with a warning).
    """
    if n_merges < 0:
        raise ValueError(f"n_merges must be >= 0, got {n_merges}")
    special_tokens = tuple(special_tokens)

    # 1. unique pre-tokens and their frequencies
    if special_tokens:
        text = regex.sub("|".join(regex.escape(s) for s in special_tokens), " ", text)
    word_counts = Counter(regex.findall(pattern, to_encodable(text)))
    words: list[list[int]] = [list(w.encode("utf-8")) for w in word_counts]  # byte ids (identity order)
    freqs: list[int] = list(word_counts.values())

    # BEGIN SOLUTION a1.learn_merges
    # 2. initial pair counts, which words hold each pair, and a max-heap of (-count, p, q)
    pair_counts: Counter = Counter()
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, (w, f) in enumerate(zip(words, freqs)):
        for pair in zip(w, w[1:]):
            pair_counts[pair] += f
            where[pair].add(wi)
    heap = [(-c, p, q) for (p, q), c in pair_counts.items()]
    heapq.heapify(heap)

    vocab = {i: bytes([i]) for i in range(256)}
    ranks = {tok: i for i, tok in vocab.items()}
    merges: list[tuple[int, int]] = []
    skipped: set[tuple[int, int]] = set()
    while len(merges) < n_merges:
        # 3. the most frequent pair; heap entries whose count has changed since are stale, drop them
        best = None
        while heap:
            neg_count, p, q = heapq.heappop(heap)
            if pair_counts.get((p, q)) == -neg_count and (p, q) not in skipped:
                best = (p, q)
                break
        if best is None:
            warnings.warn(f"train_bpe: the text ran out of pairs after {len(merges)} of {n_merges} merges; "
                          f"vocab_size will be {256 + len(merges) + len(special_tokens)}")
            break
        p, q = best
        new_id = 256 + len(merges)
        new_bytes = vocab[p] + vocab[q]
        # 4. condition (*): tiktoken's rule must reach exactly (p, q) on these bytes
        if bpe_by_bytes(new_bytes, ranks) != [vocab[p], vocab[q]]:
            skipped.add(best)
            if verbose:
                print(f"skip ({p}, {q}) = {new_bytes!r}: tiktoken would build it differently")
            continue
        merges.append(best)
        vocab[new_id] = new_bytes
        ranks[new_bytes] = new_id
        if verbose:
            print(f"merge {len(merges)}/{n_merges}: ({p}, {q}) -> {new_id} {new_bytes!r} "
                  f"count {pair_counts[best]}")

        # 5. rewrite the words that contain the pair and update the counts of the pairs they hold
        changed = set()
        for wi in where.pop(best, ()):
            w, f = words[wi], freqs[wi]
            new_w = merge_pair(w, best, new_id)
            if len(new_w) == len(w):
                continue  # stale index entry: the pair left this word in an earlier merge
            for pair in zip(w, w[1:]):
                pair_counts[pair] -= f
                changed.add(pair)
            for pair in zip(new_w, new_w[1:]):
                pair_counts[pair] += f
                where[pair].add(wi)
                changed.add(pair)
            words[wi] = new_w
        for pair in changed:
            c = pair_counts[pair]
            if c > 0:
                heapq.heappush(heap, (-c, pair[0], pair[1]))
            else:
                del pair_counts[pair]
    return merges
    # END SOLUTION
