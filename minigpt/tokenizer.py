"""The `Tokenizer` class (a byte-level BPE vocabulary: tiktoken fast path, readable reference encoder,
save/load), `train_bpe`, and a command line that trains one on a text file.

The BPE algorithm itself (pre-tokenisation, merge rules, the merge-learning loop, and condition (*)
that keeps `encode` and `encode_slow` identical) lives in `minigpt/bpe.py`; GPT-2's own vocabulary
files are read by `minigpt/gpt2_files.py`.

    from minigpt.tokenizer import train_bpe, Tokenizer
    tok = train_bpe(text, vocab_size=2048)          # 256 bytes + merges + SPECIAL_TOKENS
    ids = tok.encode("hello world")                 # fast: tiktoken (Rust) running our merges
    assert ids == tok.encode_slow("hello world")    # the same tokens from ~20 lines of Python
    assert tok.decode(ids) == "hello world"
    tok.save("tokenizer.bpe"); tok = Tokenizer.load("tokenizer.bpe")

Run:  python -m minigpt.tokenizer --input=corpus.txt --vocab_size=1024 --out=tokenizer.bpe
      (python -m rlhf.world export --out DIR writes the instruction world's text to DIR/corpus.txt)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Iterable

import regex  # the `regex` package (a tiktoken dependency): `re` has no \p{L} classes
import tiktoken

from minigpt.bpe import GPT2_SPLIT_PATTERN, bpe_by_bytes, learn_merges, to_encodable
from minigpt.bpe import count_pairs, merge_pair, split_pretokens  # noqa: F401  (re-exported for callers)
from minigpt.configurator import parse_config, utf8_console
from minigpt.files import atomic_write_text, check_output_file, read_text_file

# The special tokens every minigpt-rlhf tokenizer carries (ids come after the merges, in this order).
# <|endoftext|> separates documents in pretraining; the others build the chat template (rlhf.data).
SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")

FORMAT_HEADER = "minigpt-bpe v1"  # first line of a saved tokenizer file
REPLACEMENT = "\ufffd".encode("utf-8")  # what decode shows for an id it does not know


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
        text = to_encodable(text)
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
        # BEGIN SOLUTION a1.bpe_encode
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
        # END SOLUTION
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

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """ids -> text; total: unknown ids and invalid UTF-8 become U+FFFD, it never raises.

        E.g. decode(encode("héllo")) == "héllo", and with our byte ids
            decode([104, 10**9, 0xC3]) == "h\ufffd\ufffd"   ('h', an unknown id, half of a 2-byte character)
        skip_special=True drops special-token ids: what a model's reply *says*, e.g. for a sampled
        [H, i, <|user|>, !] -> "Hi!" rather than "Hi<|user|>!".
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
                if skip_special and i in self._special_by_id:
                    continue
                tok = self._special_by_id.get(i, REPLACEMENT)
            out.append(tok)
        return b"".join(out).decode("utf-8", errors="replace")

    # --- checks ----------------------------------------------------------------------------------
    def inconsistent_merges(self) -> list[int]:
        """Indices of merges that break condition (*) of minigpt.bpe (empty: encode == encode_slow).

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
        atomic_write_text(path, "\n".join(lines) + "\n")

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

    The merges come from `minigpt.bpe.learn_merges` (special-token strings in `text` are cut out
    first; pairs that break condition (*) are skipped; see there for how it is fast). The special
    tokens get the ids right after the merges. If the text runs out of pairs the vocabulary is
    smaller than asked (with a warning).
    """
    special_tokens = tuple(special_tokens)
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise ValueError(f"vocab_size {vocab_size} is smaller than 256 bytes + {len(special_tokens)} special tokens")
    merges = learn_merges(text, n_merges, special_tokens, pattern=pattern, verbose=verbose)
    specials = {s: 256 + len(merges) + k for k, s in enumerate(special_tokens)}
    return Tokenizer(merges, specials, pattern=pattern)


# -----------------------------------------------------------------------------
# command line: train a tokenizer on a text file and save it

@dataclass
class TokenizerConfig:
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"vocab_size": ">= 262"}   # 256 bytes + the 6 special tokens
    input: str = ""           # text file to train on (required; python -m rlhf.world export writes corpus.txt)
    vocab_size: int = 1024    # 256 bytes + merges + the 6 special tokens
    out: str = "tokenizer.bpe"  # where to save (text format, see Tokenizer.save)
    verbose: bool = False     # print every merge as it is learned


def main(argv: list[str] | None = None) -> Tokenizer:
    cfg = parse_config(TokenizerConfig, argv, {}, prog="python -m minigpt.tokenizer")
    if not cfg.input:
        raise SystemExit("error: no training text: pass --input=FILE "
                         "(python -m rlhf.world export writes the instruction world's corpus.txt)")
    text = read_text_file(cfg.input, "--input")     # a binary or empty file, a directory: one line
    check_output_file(cfg.out, "--out")              # before training, not a traceback when saving
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
    utf8_console()
    main()
