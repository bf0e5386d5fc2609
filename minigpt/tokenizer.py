"""Byte-level BPE: a hand-written trainer, a readable reference encoder, and a tiktoken-backed fast path.

GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", section 2.2)
tokenises text in three steps:

1. split the text into pre-tokens with a regex (words with their leading space, numbers, runs of
   punctuation, whitespace), so that no merge ever joins e.g. a word and the full stop after it;
2. write each pre-token as UTF-8 bytes, ids 0..255: every string has an encoding, there is no <unk>;
3. apply the learned merges: repeatedly replace an adjacent pair by the token it merges into, the
   pair whose merge was learned earliest first.

Training (byte-pair encoding, Sennrich et al. 2016) learns the merges: count adjacent pairs over the
corpus, turn the most frequent pair into a new token, repeat until the vocabulary is full.

    from minigpt.tokenizer import train_bpe, Tokenizer
    tok = train_bpe(text, vocab_size=2048)          # 256 bytes + merges + SPECIAL_TOKENS
    ids = tok.encode("hello world")                 # fast: tiktoken (Rust) running our merges
    assert ids == tok.encode_slow("hello world")    # the same tokens from ~20 lines of Python
    assert tok.decode(ids) == "hello world"
    tok.save("tokenizer.bpe"); tok = Tokenizer.load("tokenizer.bpe")

Run:  python -m minigpt.tokenizer --input=corpus.txt --vocab_size=1024 --out=tokenizer.bpe
      (without --input it trains on text from the synthetic world, rlhf.world.corpus)

One subtlety (and the pairs `train_bpe` refuses to merge). tiktoken does not store merges as pairs: it
stores the *bytes* of each token with a rank and, inside a pre-token, repeatedly joins the adjacent
parts whose concatenation is the lowest-ranked token (`bpe_by_bytes` below). Our `encode_slow`
applies merges as pairs (`Tokenizer._bpe`), as GPT-2's own encoder.py does. The two agree on every
input when every token t, merged from (p, q), satisfies

    bpe_by_bytes(bytes(t), tokens ranked below t) == [bytes(p), bytes(q)]            (*)

i.e. tiktoken's rule, run on t's own bytes with the tokens that existed before t, reaches exactly the
pair that t merges. (Proof sketch: inside any pre-token, the parts that tiktoken's rule ever puts side
by side were each built by the same rule from their own bytes, so if two adjacent parts x, y join into
a token t, running the rule on bytes(t) alone passes through [x, y]; a run has only one two-part
state, so (x, y) = (p, q) by (*): both encoders see the same candidate pairs with the same ranks.)
Two merges that produce the same bytes, e.g. (a, ab) and (aa, b), violate (*) for the second one;
so can a merge whose bytes tiktoken would split differently. `train_bpe` checks (*) before accepting
each merge and skips (forever) a pair that fails it. Learning merges from the corpus as it stands
seems to satisfy (*) by itself: the guard has not fired on any text we tried (source code, docs, the
world corpus, random a/b strings), but it is cheap and makes the guarantee explicit. `Tokenizer.load`
checks (*) again, and the tests compare `encode` with `encode_slow` on varied and random text.
"""

from __future__ import annotations

import base64
import heapq
import json
import os
import tempfile
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable

import regex  # the `regex` package (a tiktoken dependency): `re` has no \p{L} classes
import tiktoken

# The special tokens every minigpt-rlhf tokenizer carries (ids come after the merges, in this order).
# <|endoftext|> separates documents in pretraining; the others build the chat template (rlhf.data).
SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")

# GPT-2's pre-tokenisation regex, as tiktoken writes it for r50k_base / gpt2. The original GPT-2
# release wrote  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+  ;
# the possessive `++` and the `\s++$` branch give the same split, faster.
# Branches: English contractions; letters with an optional leading space; digits likewise; other
# symbols likewise; whitespace not followed by a non-space (so " word" keeps its space); whitespace.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

FORMAT_HEADER = "minigpt-bpe v1"  # first line of a saved tokenizer file
REPLACEMENT = "\ufffd".encode("utf-8")  # what decode shows for an id it does not know


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
    for pair in zip(ids, ids[1:]):
        counts[pair] += weight
    return counts


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids`, scanning left to right, by `new_id`.

    >>> merge_pair([97, 97, 97, 98], (97, 97), 256)   # "aaab": the left "aa" wins
    [256, 97, 98]
    """
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


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


def _to_encodable(text: str) -> str:
    """Lone surrogates cannot be UTF-8 encoded; like tiktoken, replace them by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# -----------------------------------------------------------------------------
# the tokenizer

class Tokenizer:
    """A byte-level BPE vocabulary: 256 byte tokens, merges (merge i makes id 256 + i), special tokens.

    merges:         list of (p, q) id pairs; merge i creates token 256 + i = bytes(p) + bytes(q).
    special_tokens: {text: id}; ids must not collide with the byte/merge ids (usually right after them).
    pattern:        the pre-tokenisation regex.
    byte_order:     byte_order[i] is the byte value of token i for i < 256 (identity for our own
                    tokenizers; GPT-2's vocabulary lists the printable bytes first).
    """

    def __init__(self, merges: Iterable[tuple[int, int]], special_tokens: dict[str, int] | None = None,
                 pattern: str = GPT2_SPLIT_PATTERN, byte_order: list[int] | None = None,
                 name: str = "minigpt-bpe"):
        self.merges = [(int(p), int(q)) for p, q in merges]
        self.special_tokens = dict(special_tokens or {})
        self.pattern = pattern
        self.byte_order = list(range(256)) if byte_order is None else [int(b) for b in byte_order]
        self.name = name
        if sorted(self.byte_order) != list(range(256)):
            raise ValueError("byte_order must be a permutation of 0..255")

        # id -> bytes for every non-special token, and its inverse (tiktoken's "mergeable ranks")
        self.vocab: dict[int, bytes] = {i: bytes([b]) for i, b in enumerate(self.byte_order)}
        self.pair_to_id: dict[tuple[int, int], int] = {}
        for i, (p, q) in enumerate(self.merges):
            new_id = 256 + i
            if not (0 <= p < new_id and 0 <= q < new_id):
                raise ValueError(f"merge {i} ({p}, {q}) uses an id that does not exist yet")
            self.vocab[new_id] = self.vocab[p] + self.vocab[q]
            self.pair_to_id[(p, q)] = new_id
        self.ranks: dict[bytes, int] = {tok: i for i, tok in self.vocab.items()}
        if len(self.ranks) != len(self.vocab):
            dup = next(i for i, tok in self.vocab.items() if self.ranks[tok] != i)
            raise ValueError(f"merge {dup - 256} makes {self.vocab[dup]!r}, which is already token "
                             f"{self.ranks[self.vocab[dup]]}")
        n = len(self.vocab)
        ids = list(self.special_tokens.values())
        if len(set(ids)) != len(ids) or any(i < n for i in ids):
            raise ValueError(f"special token ids {ids} must be distinct and >= {n} (bytes + merges)")
        self._special_by_id = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        self._byte_to_id = [0] * 256
        for i, b in enumerate(self.byte_order):
            self._byte_to_id[b] = i
        self._compiled = regex.compile(self.pattern)
        # The fast path: tiktoken's Rust BPE with exactly our tokens and ranks.
        self._enc = tiktoken.Encoding(self.name, pat_str=self.pattern, mergeable_ranks=self.ranks,
                                      special_tokens=self.special_tokens)

    # --- sizes and conveniences ----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids (max id + 1): 256 + len(merges) + len(special_tokens) when ids are dense."""
        return max([len(self.vocab) - 1, *self.special_tokens.values()]) + 1

    @property
    def n_merges(self) -> int:
        return len(self.merges)

    @property
    def eos_id(self) -> int | None:
        """Id of <|endoftext|> (None if this vocabulary has none)."""
        return self.special_tokens.get("<|endoftext|>")

    @property
    def pad_id(self) -> int | None:
        """Id of <|pad|> (None if this vocabulary has none)."""
        return self.special_tokens.get("<|pad|>")

    def special_id(self, text: str) -> int:
        """Id of a special token: special_id("<|end|>") -> e.g. 1029. KeyError names the known ones."""
        if text not in self.special_tokens:
            raise KeyError(f"{text!r} is not a special token of this tokenizer; "
                           f"known: {sorted(self.special_tokens)}")
        return self.special_tokens[text]

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={len(self.special_tokens)})")

    def __eq__(self, other) -> bool:
        return (isinstance(other, Tokenizer) and self.merges == other.merges
                and self.special_tokens == other.special_tokens and self.pattern == other.pattern
                and self.byte_order == other.byte_order)

    def __getstate__(self):  # pickle the definition, rebuild the tiktoken object on load
        return {"merges": self.merges, "special_tokens": self.special_tokens, "pattern": self.pattern,
                "byte_order": self.byte_order, "name": self.name}

    def __setstate__(self, state):
        self.__init__(**state)

    # --- encoding --------------------------------------------------------------------------------
    def _allowed(self, allowed_special) -> set[str]:
        if allowed_special == "all":
            return set(self.special_tokens)
        if isinstance(allowed_special, str):  # a single name is a common slip: accept it
            allowed_special = {allowed_special}
        allowed = set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(f"allowed_special names unknown special tokens {sorted(unknown)}; "
                             f"known: {sorted(self.special_tokens)}")
        return allowed

    def encode(self, text: str, allowed_special: str | Iterable[str] = ()) -> list[int]:
        """Text -> ids with tiktoken (fast). Special-token strings are plain text unless allowed.

        allowed_special: "all", or a set of special-token strings to map to their ids. E.g.
            tok.encode("<|end|>")                          -> several ids spelling "<|", "end", "|>"
            tok.encode("<|end|>", allowed_special="all")   -> [tok.special_id("<|end|>")]
        """
        return self._enc.encode(text, allowed_special=self._allowed(allowed_special), disallowed_special=())

    def encode_batch(self, texts: list[str], allowed_special: str | Iterable[str] = ()) -> list[list[int]]:
        """encode for many texts (tiktoken uses its threads)."""
        return self._enc.encode_batch(texts, allowed_special=self._allowed(allowed_special),
                                      disallowed_special=())

    def encode_slow(self, text: str, allowed_special: str | Iterable[str] = ()) -> list[int]:
        """Text -> ids in pure Python; the reference that `encode` must match token for token.

        1. cut out allowed special tokens; 2. split the rest into pre-tokens with the regex;
        3. BPE each pre-token's UTF-8 bytes (`_bpe`).
        """
        text = _to_encodable(text)
        allowed = self._allowed(allowed_special)
        chunks = [text]
        if allowed:  # split on the allowed specials, keeping them: "a<|end|>b" -> ["a", "<|end|>", "b"]
            alternation = "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True))
            chunks = regex.split(f"({alternation})", text)
        ids: list[int] = []
        for k, chunk in enumerate(chunks):
            if k % 2 == 1:  # odd positions of split-with-a-group are the separators
                ids.append(self.special_tokens[chunk])
                continue
            for piece in self._compiled.findall(chunk):
                ids.extend(self._bpe(piece.encode("utf-8")))
        return ids

    def _bpe(self, piece: bytes) -> list[int]:
        """BPE one pre-token: start from its bytes, merge the earliest-learned adjacent pair, repeat.

        With merges [(97, 97) -> 256, (97, 98) -> 257, (256, 257) -> 258]:
          b"aaab": [97, 97, 97, 98] -> [256, 97, 98] -> [256, 257] -> [258]
        """
        ids = [self._byte_to_id[b] for b in piece]
        while len(ids) >= 2:
            # the adjacent pair with the lowest rank (= id of the token it makes), leftmost on ties
            best_id, best_i = None, None
            for i in range(len(ids) - 1):
                new_id = self.pair_to_id.get((ids[i], ids[i + 1]))
                if new_id is not None and (best_id is None or new_id < best_id):
                    best_id, best_i = new_id, i
            if best_id is None:
                break  # no adjacent pair is a merge: done
            ids[best_i:best_i + 2] = [best_id]
        return ids

    # --- decoding --------------------------------------------------------------------------------
    def token_bytes(self, i: int) -> bytes:
        """The bytes of one id: token_bytes(104) == b'h' (our byte order). ValueError if unknown."""
        if i in self.vocab:
            return self.vocab[i]
        if i in self._special_by_id:
            return self._special_by_id[i]
        raise ValueError(f"token id {i} is not in this vocabulary (size {self.vocab_size})")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """ids -> the raw bytes they stand for (may be cut mid-character). ValueError on unknown ids."""
        return b"".join(self.token_bytes(int(i)) for i in _as_list(ids))

    def decode(self, ids: Iterable[int]) -> str:
        """ids -> text; total: unknown ids and invalid UTF-8 become U+FFFD, it never raises.

        E.g. decode(encode("héllo")) == "héllo", and with our byte ids
            decode([104, 10**9, 0xC3]) == "h\ufffd\ufffd"   ('h', an unknown id, half of a 2-byte character)
        """
        out = []
        for i in _as_list(ids):
            try:
                i = int(i)
            except (TypeError, ValueError, OverflowError):
                out.append(REPLACEMENT)
                continue
            tok = self.vocab.get(i)
            if tok is None:
                tok = self._special_by_id.get(i, REPLACEMENT)
            out.append(tok)
        return b"".join(out).decode("utf-8", errors="replace")

    # --- checks ----------------------------------------------------------------------------------
    def inconsistent_merges(self) -> list[int]:
        """Indices of merges that break condition (*) of the module docstring (empty: encode == encode_slow).

        For token t = 256 + i merged from (p, q): tiktoken's rule on bytes(t), using only tokens
        ranked below t, must end at exactly [bytes(p), bytes(q)].
        """
        bad = []
        for i, (p, q) in enumerate(self.merges):
            if bpe_by_bytes(self.vocab[256 + i], self.ranks, max_rank=256 + i) != [self.vocab[p], self.vocab[q]]:
                bad.append(i)
        return bad

    # --- save / load -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write a small text file (atomically: temp file in the same folder, then rename).

            minigpt-bpe v1
            name "minigpt-bpe"
            pattern "'(?:[sdmt]|ll|ve|re)| ?\\\\p{L}++| ..."     (JSON strings)
            bytes 00 01 02 ... ff                              (token i < 256 is this byte, hex)
            specials 2
            "<|endoftext|>" 259
            "<|end|>" 260
            merges 3
            97 97  # b'aa'                                      (line k makes token 256 + k)
            97 98  # b'ab'
            256 257  # b'aaab'
        """
        lines = [FORMAT_HEADER, f"name {json.dumps(self.name)}", f"pattern {json.dumps(self.pattern)}",
                 "bytes " + " ".join(f"{b:02x}" for b in self.byte_order),
                 f"specials {len(self.special_tokens)}"]
        lines += [f"{json.dumps(s)} {i}" for s, i in self.special_tokens.items()]
        lines.append(f"merges {len(self.merges)}")
        lines += [f"{p} {q}  # {self.vocab[256 + k]!r}" for k, (p, q) in enumerate(self.merges)]
        _atomic_write_text(path, "\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Read a file written by `save`. A corrupt file raises ValueError("<path>:<line>: what is wrong")."""
        path = os.fspath(path)
        with open(path, "r", encoding="utf-8") as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        pos = 0  # index of the next line to read

        def fail(msg: str, line_no: int | None = None):
            raise ValueError(f"{path}:{line_no if line_no is not None else pos}: {msg}")

        def take(keyword: str) -> str:
            nonlocal pos
            if pos >= len(lines):
                fail(f"file ends early: expected a '{keyword}' line", len(lines))
            line = lines[pos]
            pos += 1
            if not line.startswith(keyword + " "):
                fail(f"expected a '{keyword} ...' line, got {line[:60]!r}")
            return line[len(keyword) + 1:]

        def take_count(keyword: str) -> int:
            value = take(keyword)
            if not value.strip().isdigit():
                fail(f"'{keyword}' needs a count, got {value!r}")
            return int(value)

        if not lines or lines[0].strip() != FORMAT_HEADER:
            raise ValueError(f"{path}:1: not a minigpt tokenizer file (expected first line {FORMAT_HEADER!r})")
        pos = 1
        try:
            name = json.loads(take("name"))
            pattern = json.loads(take("pattern"))
        except json.JSONDecodeError as e:
            fail(f"bad JSON string: {e}")
        if not isinstance(name, str) or not isinstance(pattern, str):
            fail("name and pattern must be JSON strings")
        try:
            regex.compile(pattern)
        except regex.error as e:
            fail(f"pattern does not compile: {e}")
        try:
            byte_order = [int(h, 16) for h in take("bytes").split()]
        except ValueError:
            fail("bytes line must hold 256 hex numbers")
        if sorted(byte_order) != list(range(256)):
            fail("bytes line must list each of the 256 byte values once")

        specials: dict[str, int] = {}
        for _ in range(take_count("specials")):
            pos += 1
            if pos > len(lines):
                fail("file ends inside the specials block", len(lines))
            text, _, id_str = lines[pos - 1].rpartition(" ")
            try:
                s = json.loads(text)
            except json.JSONDecodeError:
                fail(f"special token must be a JSON string, got {text!r}")
            if not isinstance(s, str) or not id_str.isdigit() or s in specials:
                fail(f"expected '\"<|name|>\" id' (names unique), got {lines[pos - 1]!r}")
            specials[s] = int(id_str)

        n_merges = take_count("merges")
        first_merge_line = pos + 1
        merges = []
        for k in range(n_merges):
            pos += 1
            if pos > len(lines):
                fail(f"file ends after {k} of {n_merges} merges", len(lines))
            fields = lines[pos - 1].split("#", 1)[0].split()
            if len(fields) != 2 or not all(f.isdigit() for f in fields):
                fail(f"a merge line is two token ids, got {lines[pos - 1]!r}")
            p, q = int(fields[0]), int(fields[1])
            if p >= 256 + k or q >= 256 + k:
                fail(f"merge makes token {256 + k} from ({p}, {q}): ids must already exist")
            merges.append((p, q))
        if pos < len(lines) and any(line.strip() for line in lines[pos:]):
            fail("unexpected text after the last merge", pos + 1)
        try:
            tok = cls(merges, specials, pattern=pattern, byte_order=byte_order, name=name)
        except ValueError as e:
            fail(str(e), first_merge_line - 1)
        bad = tok.inconsistent_merges()
        if bad:
            fail(f"merge {bad[0]} is not what tiktoken's rule reaches for its bytes (encode would differ "
                 f"from encode_slow)", first_merge_line + bad[0])
        return tok


def _as_list(ids) -> list:
    """Accept lists, tuples, numpy arrays and torch tensors (without importing torch)."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
        return ids if isinstance(ids, list) else [ids]
    return list(ids)


def _atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write to a temp file in the same folder, then os.replace: readers never see half a file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# -----------------------------------------------------------------------------
# training

def train_bpe(text: str, vocab_size: int, special_tokens: Iterable[str] = SPECIAL_TOKENS,
              pattern: str = GPT2_SPLIT_PATTERN, verbose: bool = False) -> Tokenizer:
    """Learn vocab_size - 256 - len(special_tokens) merges from `text`; return the Tokenizer.

    The textbook example (Wikipedia, "Byte pair encoding"): "aaabdaaabac" merges
    aa -> 256 (4 occurrences), then ab -> 257 (2, tied with (256, a) and chosen by the smaller ids),
    then (256, 257) = "aaab" -> 258:
    >>> train_bpe("aaabdaaabac", 259, special_tokens=()).merges
    [(97, 97), (97, 98), (256, 257)]

    How (and why it takes seconds, not hours):
    - Special-token strings in `text` are document separators, not text to learn: cut out first.
    - The text is split into pre-tokens and only the *unique* pre-tokens are kept, each with its
      frequency: " the" appearing 5,000 times is one word of weight 5,000.
    - Pair counts are kept up to date incrementally: merging (p, q) only touches the words that
      contain it (an index pair -> words), and a heap gives the most frequent pair in O(log n).
    - Ties in frequency go to the pair with the smaller ids, so training is deterministic.
    - A pair whose merged bytes tiktoken would reach differently (condition (*) in the module
      docstring, e.g. bytes already in the vocabulary) is skipped, so encode == encode_slow.
    If the text runs out of pairs the vocabulary is smaller than asked (with a warning).
    """
    special_tokens = tuple(special_tokens)
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise ValueError(f"vocab_size {vocab_size} is smaller than 256 bytes + {len(special_tokens)} special tokens")

    # 1. unique pre-tokens and their frequencies
    if special_tokens:
        text = regex.sub("|".join(regex.escape(s) for s in special_tokens), " ", text)
    word_counts = Counter(regex.findall(pattern, _to_encodable(text)))
    words: list[list[int]] = [list(w.encode("utf-8")) for w in word_counts]  # byte ids (identity order)
    freqs: list[int] = list(word_counts.values())

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

    specials = {s: 256 + len(merges) + k for k, s in enumerate(special_tokens)}
    return Tokenizer(merges, specials, pattern=pattern)


# -----------------------------------------------------------------------------
# GPT-2's own vocabulary from local files (never downloaded)

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters (for vocab.bpe/encoder.json).

    Printable Latin-1 bytes stand for themselves; the other 68 (control bytes, space, ...) are shifted
    to chr(256), chr(257), ... in byte order. So a space is 'Ġ' (chr(288)) and a newline is 'Ċ'.
    >>> bytes_to_unicode()[ord(" ")], bytes_to_unicode()[ord("A")]
    ('Ġ', 'A')
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    mapping, n = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


def load_gpt2_tokenizer(path: str | os.PathLike, extra_special_tokens: Iterable[str] = ()) -> Tokenizer:
    """GPT-2's BPE from local files: a folder (or either file) with `encoder.json` + `vocab.bpe`, or a
    `.tiktoken` file (one "base64(token) rank" per line, e.g. r50k_base.tiktoken). Never downloads.

    <|endoftext|> is 50256 as in GPT-2; `extra_special_tokens` (e.g. the chat tokens) get the next ids
    (a model using them needs a larger embedding). Bad files raise ValueError naming file and line.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "encoder.json")) and os.path.exists(os.path.join(path, "vocab.bpe")):
            tok = _load_data_gym(os.path.join(path, "vocab.bpe"), os.path.join(path, "encoder.json"))
        else:
            found = sorted(f for f in os.listdir(path) if f.endswith(".tiktoken"))
            if len(found) != 1:
                raise ValueError(f"{path}: expected encoder.json + vocab.bpe, or one .tiktoken file; found {found}")
            tok = _load_tiktoken_file(os.path.join(path, found[0]))
    elif path.endswith(".tiktoken"):
        tok = _load_tiktoken_file(path)
    elif os.path.basename(path) in ("encoder.json", "vocab.bpe"):
        folder = os.path.dirname(path)
        tok = _load_data_gym(os.path.join(folder, "vocab.bpe"), os.path.join(folder, "encoder.json"))
    else:
        raise ValueError(f"{path}: expected a folder, encoder.json, vocab.bpe or a .tiktoken file")
    bad = tok.inconsistent_merges()
    if bad:
        warnings.warn(f"{path}: {len(bad)} merges (first: {bad[0]}) break condition (*); encode_slow may "
                      f"differ from encode on rare inputs")
    extra = [s for s in extra_special_tokens if s not in tok.special_tokens]
    if extra:
        specials = dict(tok.special_tokens)
        for s in extra:
            specials[s] = max([tok.vocab_size - 1, *specials.values()]) + 1
        tok = Tokenizer(tok.merges, specials, pattern=tok.pattern, byte_order=tok.byte_order, name=tok.name)
    return tok


def _load_data_gym(vocab_bpe: str, encoder_json: str) -> Tokenizer:
    """encoder.json {token-as-unicode: id} + vocab.bpe ("#version" line, then "first second" merges)."""
    if not os.path.exists(vocab_bpe) or not os.path.exists(encoder_json):
        raise ValueError(f"{os.path.dirname(vocab_bpe) or '.'}: need both vocab.bpe and encoder.json")
    with open(encoder_json, "r", encoding="utf-8") as f:
        try:
            encoder = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{encoder_json}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise ValueError(f"{encoder_json}:1: expected a JSON object of token -> integer id")
    unicode_to_byte = {c: b for b, c in bytes_to_unicode().items()}

    byte_order = [None] * 256
    for ch, b in unicode_to_byte.items():
        i = encoder.get(ch)
        if i is None or not 0 <= i < 256:
            raise ValueError(f"{encoder_json}:1: byte token {ch!r} must have an id below 256, has {i}")
        byte_order[i] = b

    merges = []
    with open(vocab_bpe, "r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if line.startswith("#version") or not line.strip():
                continue
            parts = line.split(" ")
            if len(parts) != 2 or parts[0] not in encoder or parts[1] not in encoder:
                raise ValueError(f"{vocab_bpe}:{line_no}: expected two known tokens 'first second', got {line!r}")
            new_id = 256 + len(merges)
            if encoder.get(parts[0] + parts[1]) != new_id:
                raise ValueError(f"{vocab_bpe}:{line_no}: merge makes {parts[0] + parts[1]!r}, which encoder.json "
                                 f"gives id {encoder.get(parts[0] + parts[1])}, not {new_id}")
            merges.append((encoder[parts[0]], encoder[parts[1]]))
    n = 256 + len(merges)
    specials = {s: i for s, i in encoder.items() if i >= n}
    if len(encoder) != n + len(specials):
        raise ValueError(f"{encoder_json}:1: {len(encoder)} entries, but vocab.bpe accounts for {n} tokens "
                         f"+ {len(specials)} specials")
    try:
        return Tokenizer(merges, specials, pattern=GPT2_SPLIT_PATTERN, byte_order=byte_order, name="gpt2")
    except ValueError as e:
        raise ValueError(f"{vocab_bpe}:1: {e}") from None


def _load_tiktoken_file(path: str) -> Tokenizer:
    """A .tiktoken file: "base64(token bytes) rank" per line. Merges are recovered with tiktoken's
    rule: the pair token t merges is what `bpe_by_bytes` reaches on bytes(t) with lower-ranked tokens."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                token_b64, rank = line.split()
                ranks[base64.b64decode(token_b64, validate=True)] = int(rank)
            except ValueError:
                raise ValueError(f"{path}:{line_no}: expected 'base64-token rank', got {line[:60]!r}") from None
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    if [r for _, r in by_rank] != list(range(len(by_rank))) or \
            sorted(t[0] for t, r in by_rank[:256] if len(t) == 1) != list(range(256)):
        raise ValueError(f"{path}:1: ranks must be 0..N-1 with the 256 single bytes first")
    byte_order = [t[0] for t, _ in by_rank[:256]]
    merges = []
    for token, rank in by_rank[256:]:
        parts = bpe_by_bytes(token, ranks, max_rank=rank)
        if len(parts) != 2:
            raise ValueError(f"{path}:{rank + 1}: token {token!r} (rank {rank}) is not a merge of two "
                             f"lower-ranked tokens")
        merges.append((ranks[parts[0]], ranks[parts[1]]))
    return Tokenizer(merges, {"<|endoftext|>": len(by_rank)}, pattern=GPT2_SPLIT_PATTERN,
                     byte_order=byte_order, name=os.path.basename(path).removesuffix(".tiktoken"))


# -----------------------------------------------------------------------------
# command line: train a tokenizer on a text file and save it

@dataclass
class TokenizerConfig:
    input: str = ""           # text file to train on; empty: rlhf.world.corpus(n_chars) synthetic text
    n_chars: int = 300_000    # characters of world corpus when no --input (a few hundred KB trains in seconds)
    vocab_size: int = 1024    # 256 bytes + merges + the 6 special tokens
    out: str = "tokenizer.bpe"  # where to save (text format, see Tokenizer.save)
    seed: int = 0             # seed of the synthetic corpus
    verbose: bool = False     # print every merge as it is learned


def main(argv: list[str] | None = None) -> Tokenizer:
    import time

    from minigpt.configurator import parse_config

    cfg = parse_config(TokenizerConfig, argv, {}, prog="python -m minigpt.tokenizer")
    if cfg.input:
        with open(cfg.input, "r", encoding="utf-8", errors="replace") as f:
            text = f.read()
    else:
        from rlhf.world import corpus
        text = corpus(cfg.n_chars, seed=cfg.seed)
    t0 = time.time()
    tok = train_bpe(text, cfg.vocab_size, verbose=cfg.verbose)
    dt = time.time() - t0
    tok.save(cfg.out)
    ids = tok.encode(text)
    print(f"trained {tok} on {len(text):,} characters in {dt:.1f}s; saved to {cfg.out}")
    print(f"compression: {len(text.encode('utf-8')) / max(1, len(ids)):.2f} bytes per token")
    sample = text[:200]
    print("first tokens:", " | ".join(repr(tok.decode([i]))[1:-1] for i in tok.encode(sample)[:40]))
    return tok


if __name__ == "__main__":
    main()
