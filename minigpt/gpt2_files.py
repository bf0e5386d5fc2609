"""GPT-2's own BPE vocabulary from local files (never downloaded), as a minigpt `Tokenizer`.

Two formats hold the same 50,257 tokens:
- OpenAI's release (also Hugging Face's): `encoder.json` {token: id} + `vocab.bpe` (one merge a line),
  both spelling bytes as printable characters (`bytes_to_unicode`: a space is 'Ġ');
- tiktoken's `r50k_base.tiktoken`: one "base64(token bytes) rank" a line, no merges (they are
  recovered with tiktoken's rule, `minigpt.bpe.bpe_by_bytes`).

    from minigpt.gpt2_files import load_gpt2_tokenizer
    from minigpt.tokenizer import SPECIAL_TOKENS
    tok = load_gpt2_tokenizer("gpt2/")                          # encoder.json + vocab.bpe, or one .tiktoken
    tok.encode("hello world")                                   # [31373, 995], as GPT-2
    chat = load_gpt2_tokenizer("gpt2/", extra_special_tokens=SPECIAL_TOKENS)   # + chat tokens from 50257
"""

from __future__ import annotations

import base64
import json
import os
import warnings
from typing import Iterable

from minigpt.bpe import GPT2_SPLIT_PATTERN, bpe_by_bytes
from minigpt.tokenizer import Tokenizer


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

