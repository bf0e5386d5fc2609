"""Chat template, SFT datasets and JSONL loaders: how conversations become token ids and how data files
become Python records.

The chat template (InstructGPT trains on prompts + labeler demonstrations; a chat model needs to know who
is speaking and when a turn ends, so every message is wrapped in special tokens):

    <|system|> content <|end|>  <|user|> content <|end|>  <|assistant|> content <|end|>  ...

with no spaces between the pieces. Content is encoded as *ordinary text*: a user who types "<|end|>" gets
the bytes of that string, never the end-of-turn token, so nobody can forge a turn boundary. The model stops
by emitting <|end|> (the stop token); <|pad|> is only padding and is never the stop token (docs/DESIGN.md PPO
detail 14).

SFT loss mask (InstructGPT §3.5 trains the policy on the demonstration only, not on the prompt):

    ids       <|user|>  hi  <|end|>  <|assistant|>  hello  <|end|>
    loss_mask    0       0     0          0           1       1

i.e. loss = -(1/|M|) * sum_{t in M} log p(x_t | x_<t), M = assistant content tokens and their <|end|>.
Learning the <|end|> is how the model learns to stop.

File formats read here (one JSON object per line; the format is detected per file from the first record):
    demonstrations  {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}
                    {"instruction": ..., "input": ..., "output": ...}                       (Alpaca)
    prompts         {"messages": [... ending with a user turn]} or {"prompt": str or messages}
    pairs           {"prompt": str or messages, "chosen": str, "rejected": str}
                    {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}       (Anthropic HH-RLHF)
    rankings        {"prompt": str or messages, "responses": [str, ...], "ranks": [int, ...]}  (0 = best)
Every bad row raises DataError("path:line: what is wrong").

Quick look at a file (its format, record count and first record in the template):
    python -m rlhf.data FILE.jsonl
"""

import argparse
import json
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field

import torch

ROLES = ("system", "user", "assistant")
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END_TOKEN = "<|end|>"   # end of every turn; the stop token for generation
PAD_TOKEN = "<|pad|>"   # padding only; never the stop token
IGNORE_INDEX = -1       # targets with this value carry no loss (GPT.forward ignores -1)


class DataError(ValueError):
    """A bad data file or record. The message reads "path:line: what is wrong"."""

    def __init__(self, message, path=None, line=None):
        if path is not None:
            message = f"{path}:{line}: {message}" if line is not None else f"{path}: {message}"
        super().__init__(message)
        self.path = path  # the file, when known
        self.line = line  # 1-based line number, when known


# ----------------------------------------------------------------------------------------------------
# records

@dataclass
class Preference:
    """One comparison: after `prompt` (a conversation ending with a user turn), `chosen` beat `rejected`."""
    prompt: list      # [{"role": ..., "content": ...}, ...], last turn is the user's
    chosen: str       # the preferred final assistant reply
    rejected: str     # the other one
    meta: dict = field(default_factory=dict, compare=False)  # extra keys of the JSON row (family, h, ...)


@dataclass
class Ranking:
    """K responses to one prompt ranked by a labeler: ranks[i] = 0 is best; equal ranks are ties."""
    prompt: list      # conversation ending with a user turn
    responses: list   # K >= 2 strings
    ranks: list       # K ints >= 0
    meta: dict = field(default_factory=dict, compare=False)  # extra keys of the JSON row


def ranking_pairs(ranking):
    """All (chosen, rejected) Preferences a ranking implies; ties and identical texts give none.
    Ranking(p, ["a", "b", "c"], [1, 0, 1]) -> [Preference(p, "b", "a"), Preference(p, "b", "c")]."""
    pairs = []
    K = len(ranking.responses)
    for i in range(K):
        for j in range(i + 1, K):
            ri, rj = ranking.ranks[i], ranking.ranks[j]
            a, b = ranking.responses[i], ranking.responses[j]
            if ri == rj or a == b:
                continue
            chosen, rejected = (a, b) if ri < rj else (b, a)
            pairs.append(Preference(ranking.prompt, chosen, rejected, dict(ranking.meta)))
    return pairs


# ----------------------------------------------------------------------------------------------------
# the chat template

def special_id(tokenizer, name):
    """The id of a special token such as "<|end|>"; a clear error if the tokenizer lacks it."""
    try:
        return tokenizer.special_tokens[name]
    except KeyError:
        raise ValueError(f"tokenizer has no special token {name!r}; train it with "
                         f"minigpt.tokenizer.SPECIAL_TOKENS") from None


def stop_token_id(tokenizer):
    """<|end|>: the token a reply ends with, and where generation stops."""
    return special_id(tokenizer, END_TOKEN)


def pad_token_id(tokenizer):
    """<|pad|>: fills batches; never attended to, never the stop token."""
    return special_id(tokenizer, PAD_TOKEN)


def check_conversation(conversation, what="conversation"):
    """Raise DataError unless `conversation` is a list of {"role", "content"} dicts with known roles."""
    if not isinstance(conversation, list) or not conversation:
        raise DataError(f"{what} must be a non-empty list of messages")
    for i, m in enumerate(conversation):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{what}[{i}] must be a dict with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(f"{what}[{i}] has unknown role {m['role']!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(m["content"], str):
            raise DataError(f"{what}[{i}] content must be a string, got {type(m['content']).__name__}")


def format_chat(conversation, add_generation_prompt=False):
    """The template as a string, for reading and debugging (not for encoding: content is ordinary text).
    [{"role": "user", "content": "hi"}] -> "<|user|>hi<|end|>" (+ "<|assistant|>" with add_generation_prompt)."""
    check_conversation(conversation)
    s = "".join(ROLE_TOKENS[m["role"]] + m["content"] + END_TOKEN for m in conversation)
    return s + (ROLE_TOKENS["assistant"] if add_generation_prompt else "")


def _blocks(conversation, tokenizer, train_on):
    """One (ids, mask) pair per message: [role] + content + [<|end|>]; mask 1 on supervised tokens."""
    if train_on not in ("all", "last"):
        raise ValueError(f"train_on must be 'all' or 'last', got {train_on!r}")
    end = stop_token_id(tokenizer)
    last = len(conversation) - 1
    blocks = []
    for i, m in enumerate(conversation):
        content = tokenizer.encode(m["content"])  # ordinary text: "<|end|>" typed by a user stays text
        ids = [special_id(tokenizer, ROLE_TOKENS[m["role"]])] + content + [end]
        supervised = m["role"] == "assistant" and (train_on == "all" or i == last)
        mask = [0] + [int(supervised)] * (len(content) + 1)
        blocks.append((ids, mask))
    return blocks


def _fit(blocks, roles, has_response, max_len):
    """Truncate a list of per-message blocks to at most max_len tokens (the rule is in `render`)."""
    total = sum(len(ids) for ids, _ in blocks)
    if max_len is None or total <= max_len:
        return blocks
    if max_len < 3:
        raise ValueError(f"max_len must be at least 3 (user turn shell + assistant token), got {max_len}")
    n_ctx = len(blocks) - 1 if has_response else len(blocks)  # blocks[:n_ctx] are the context
    # 1. keep the longest suffix of whole messages that starts with a non-assistant message and fits
    suffix = total
    for i in range(n_ctx):
        if roles[i] != "assistant" and suffix <= max_len:
            return blocks[i:]
        suffix -= len(blocks[i][0])
    # 2. only the last user (or system) message and the response remain; left-truncate that message
    last_ctx = [i for i in range(n_ctx) if roles[i] != "assistant"]
    resp = [blocks[-1]] if has_response else []
    resp_len = sum(len(ids) for ids, _ in resp)
    if not last_ctx:  # nothing to shorten: the response alone is longer than the context
        ids, mask = blocks[-1]
        return [(ids[:max_len], mask[:max_len])]
    u_ids, u_mask = blocks[last_ctx[-1]]
    room = max_len - resp_len - 2  # content tokens of the user message that still fit
    if room >= 0:
        content = u_ids[1:-1]
        content = content[max(0, len(content) - room):]  # its latest `room` content tokens
        user = ([u_ids[0]] + content + [u_ids[-1]], [0] * (len(content) + 2))
        return [user] + resp
    # 3. the response itself is longer than the context: empty user shell, then right-truncate the response
    ids, mask = blocks[-1]
    keep = max_len - 2
    return [([u_ids[0], u_ids[-1]], [0, 0]), (ids[:keep], mask[:keep])]


def render(conversation, tokenizer, max_len=None, train_on="all"):
    """Token ids and SFT loss mask of a conversation in the chat template.

    render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], tok)
      -> ids  [<|user|>, h, i, <|end|>, <|assistant|>, y, o, <|end|>]   (with a byte-level vocabulary)
         mask [0,        0, 0, 0,       0,             1, 1, 1]
    The mask is 1 exactly on assistant content tokens and their <|end|> (role tokens are 0).
    train_on="all" supervises every assistant turn, "last" only the final one (the response).

    Truncation when max_len is given and the conversation is longer (the "response" is the final message
    when it is an assistant turn):
      1. drop the oldest messages first, whole, keeping the longest tail that fits and that starts with a
         user or system message (never with an assistant turn whose question was cut);
      2. if even the last user message + the response do not fit, keep only those two and left-truncate
         the user's content (its latest tokens stay, next to the response; its role and end tokens stay);
      3. the response is never cut, end token included, unless it is itself longer than the context
         (with an empty user turn, `<|user|><|end|>`, of 2 tokens): then it is right-truncated and loses
         its <|end|>, so the example no longer teaches stopping — callers may prefer to drop such
         examples (`SFTDataset` does).
    """
    check_conversation(conversation)
    blocks = _blocks(conversation, tokenizer, train_on)
    roles = [m["role"] for m in conversation]
    blocks = _fit(blocks, roles, roles[-1] == "assistant", max_len)
    ids = [t for b, _ in blocks for t in b]
    mask = [t for _, b in blocks for t in b]
    return ids, mask


def render_prompt(conversation, tokenizer, max_len=None):
    """Ids to feed generation: the conversation (ending with a user turn) followed by <|assistant|>.
    [{"role": "user", "content": "hi"}] -> [<|user|>, h, i, <|end|>, <|assistant|>].
    Longer than max_len: the same rule as `render`, with the trailing <|assistant|> as the response."""
    check_conversation(conversation)
    blocks = _blocks(conversation, tokenizer, "all")
    blocks.append(([special_id(tokenizer, ROLE_TOKENS["assistant"])], [0]))
    roles = [m["role"] for m in conversation] + ["assistant"]
    blocks = _fit(blocks, roles, True, max_len)
    return [t for b, _ in blocks for t in b]


def decode_response(ids, tokenizer):
    """Generated ids -> (text up to the first <|end|>, stopped). [y, o, <|end|>, <|pad|>] -> ("yo", True)."""
    ids = [int(t) for t in ids]
    end = stop_token_id(tokenizer)
    if end in ids:
        return tokenizer.decode(ids[:ids.index(end)]), True
    return tokenizer.decode(ids), False


def encode_response(conversation: list[dict], response: str, tokenizer, max_len: int, stopped: bool = True) -> list[int]:
    """Token ids the RM reads: the prompt in the chat template, then the response (+ <|end|> if it stopped).

    This is what generation produces (render_prompt ends with <|assistant|>), so the RM scores training
    comparisons and PPO rollouts alike (rlhf.rollout.score_responses). Too long: the response keeps at most
    max(max_len − prompt, max_len // 2) tokens and the prompt is truncated by `render`'s rule to fit the rest.
    """
    resp = tokenizer.encode(response) + ([stop_token_id(tokenizer)] if stopped else [])
    prompt = render_prompt(conversation, tokenizer)
    if len(prompt) + len(resp) > max_len:
        resp = resp[: max(max_len - len(prompt), max_len // 2)]
        prompt = render_prompt(conversation, tokenizer, max_len=max_len - len(resp))
    return prompt + resp


def encode_response_with_mask(conversation, response, tokenizer, max_len, stopped=True):
    """(ids, response_mask) of prompt + response: exactly encode_response's ids (the tokens the reward
    model reads for this pair: chat template, <|end|> when the response stopped, the same truncation
    rule), with the mask 1 on the response part. DPO's log π(y|x) sums over that part."""
    ids = encode_response(conversation, response, tokenizer, max_len, stopped)
    n_resp = len(tokenizer.encode(response)) + int(stopped)
    n_resp = min(n_resp, max(max_len - len(render_prompt(conversation, tokenizer)), max_len // 2), len(ids) - 1)
    return ids, [0] * (len(ids) - n_resp) + [1] * n_resp


# ----------------------------------------------------------------------------------------------------
# collators and SFT datasets

def _pad(seqs, pad_id, left):
    if len(seqs) == 0:
        raise ValueError("cannot pad an empty batch")
    seqs = [[int(t) for t in s] for s in seqs]
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)        # (B, T) 1 = real token
    for b, s in enumerate(seqs):
        if not s:
            continue
        sl = slice(T - len(s), T) if left else slice(0, len(s))
        ids[b, sl] = torch.tensor(s, dtype=torch.long)
        mask[b, sl] = 1
    return ids, mask


def pad_left(seqs, pad_id):
    """Left-pad (prompts for generation, so every row's next token is at the same column).
    pad_left([[5, 6], [7]], 0) -> ids [[5, 6], [0, 7]], mask [[1, 1], [0, 1]]  (LongTensors (B, T))."""
    return _pad(seqs, pad_id, left=True)


def pad_right(seqs, pad_id):
    """Right-pad (training batches, responses). pad_right([[5, 6], [7]], 0) -> [[5, 6], [7, 0]], [[1, 1], [1, 0]]."""
    return _pad(seqs, pad_id, left=False)


def sft_targets(ids, loss_mask):
    """Next-token inputs/targets for one rendered example: x = ids[:-1], y[t] = ids[t+1] where
    loss_mask[t+1] else IGNORE_INDEX (-1). ids [u, h, e, a, y, e], mask [0, 0, 0, 0, 1, 1]
    -> x [u, h, e, a, y], y [-1, -1, -1, y, e]."""
    x = list(ids[:-1])
    y = [t if m else IGNORE_INDEX for t, m in zip(ids[1:], loss_mask[1:])]
    return x, y


@dataclass
class SFTExample:
    """One supervised example as tensors, aligned so that logits at position t predict targets[t]."""
    idx: torch.Tensor        # (T,) long, input ids = rendered ids[:-1]
    targets: torch.Tensor    # (T,) long, ids[t+1] where supervised else -1
    loss_mask: torch.Tensor  # (T,) float, 1.0 where targets != -1


def make_sft_example(ids, loss_mask):
    x, y = sft_targets(ids, loss_mask)
    y = torch.tensor(y, dtype=torch.long)
    return SFTExample(torch.tensor(x, dtype=torch.long), y, (y != IGNORE_INDEX).float())


def collate_sft(examples, pad_id):
    """Right-pad SFTExamples into a batch dict: idx (B, T), targets (B, T) padded with -1,
    loss_mask (B, T) float, attention_mask (B, T) long."""
    idx, attn = pad_right([e.idx.tolist() for e in examples], pad_id)           # (B, T)
    targets, _ = pad_right([e.targets.tolist() for e in examples], IGNORE_INDEX)  # (B, T)
    return {"idx": idx, "targets": targets, "loss_mask": (targets != IGNORE_INDEX).float(),
            "attention_mask": attn}


class SFTDataset(torch.utils.data.Dataset):
    """Conversations rendered once into SFTExamples. Examples that do not end with a supervised <|end|>
    (nothing to learn, or a response that lost its end token to truncation) are dropped; `n_dropped`
    counts them.

        ds = SFTDataset(load_demonstrations("demos.jsonl"), tok, max_len=256)
        loader = DataLoader(ds, batch_size=16, shuffle=True, collate_fn=ds.collate)
    """

    def __init__(self, conversations, tokenizer, max_len=None, train_on="all"):
        end = stop_token_id(tokenizer)
        self.pad_id = pad_token_id(tokenizer)
        self.examples, self.n_dropped = [], 0
        for conv in conversations:
            # max_len + 1 rendered tokens give max_len inputs (x = ids[:-1]) and max_len targets
            ids, mask = render(conv, tokenizer, None if max_len is None else max_len + 1, train_on)
            if sum(mask) == 0 or ids[-1] != end or mask[-1] != 1:
                self.n_dropped += 1
                continue
            self.examples.append(make_sft_example(ids, mask))

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]

    def collate(self, examples):
        return collate_sft(examples, self.pad_id)


def pack(rendered, block_size):
    """Greedily pack rendered (ids, loss_mask) examples, whole, into rows of at most block_size tokens
    (first fit, in order; an example longer than block_size gets its own row, cut). Packing wastes less
    compute on padding; attention is not blocked between examples sharing a row (a simplification: the
    role tokens separate them and a boundary token has mask 0, so no target crosses examples).
    pack([([1, 2], [0, 1]), ([3], [0]), ([4, 5], [0, 1])], 3) -> [([1, 2, 3], [0, 1, 0]), ([4, 5], [0, 1])]."""
    rows = []
    for ids, mask in rendered:
        ids, mask = list(ids[:block_size]), list(mask[:block_size])
        for row in rows:
            if len(row[0]) + len(ids) <= block_size:
                row[0].extend(ids)
                row[1].extend(mask)
                break
        else:
            rows.append((ids, mask))
    return rows


# ----------------------------------------------------------------------------------------------------
# JSONL writing

def to_row(obj):
    """A record as the JSON object the loaders read: Preference / Ranking -> their row, a conversation
    (list of messages) -> {"messages": ...}, a dict -> itself."""
    if isinstance(obj, Preference):
        return {**obj.meta, "prompt": obj.prompt, "chosen": obj.chosen, "rejected": obj.rejected}
    if isinstance(obj, Ranking):
        return {**obj.meta, "prompt": obj.prompt, "responses": list(obj.responses), "ranks": list(obj.ranks)}
    if isinstance(obj, list):
        return {"messages": obj}
    if isinstance(obj, dict):
        return obj
    raise TypeError(f"cannot write a {type(obj).__name__} as a JSONL row")


def _line(obj):
    return (json.dumps(to_row(obj), ensure_ascii=False) + "\n").encode("utf-8")


def write_jsonl(path, rows):
    """Write rows (dicts, conversations, Preference/Ranking records) atomically: a temp file in the same
    directory, fsync, then os.replace — a crash leaves the old file or the new one, never half of one."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for row in rows:
                f.write(_line(row))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def append_jsonl(path, row):
    """Append one row as a single os.write of the whole line (O_APPEND), then fsync. The line is built in
    memory first, so a crash can lose the row but never leave half a line; a file whose last line lacks
    its newline (edited by hand) gets one first, so the new row is never glued onto it."""
    path = os.fspath(path)
    data = _line(row)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size > 0:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    data = b"\n" + data
        while data:  # os.write may (rarely) write less than asked
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------------
# JSONL reading

def read_jsonl(path):
    """[(line_number, dict), ...] for the non-blank lines of a JSONL file; DataError naming the line of
    the first that is not a JSON object; DataError for a missing or empty file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror}", path) from None
    rows = []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise DataError("not valid UTF-8", path, n) from None
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON ({e.msg} at column {e.colno})", path, n) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path, n)
        rows.append((n, obj))
    if not rows:
        raise DataError("empty file (no JSON records)", path)
    return rows


def detect_format(row):
    """Which format a record is, from its keys: "messages", "alpaca", "rankings", "pairs", "hh", "prompt"."""
    if "messages" in row:
        return "messages"
    if "instruction" in row or "output" in row:
        return "alpaca"
    if "responses" in row or "ranks" in row:
        return "rankings"
    if "chosen" in row or "rejected" in row:
        return "pairs" if "prompt" in row else "hh"
    if "prompt" in row:
        return "prompt"
    raise DataError(f"unknown record format with keys {sorted(row)}; expected one of: messages; "
                    "instruction/input/output; prompt/chosen/rejected; chosen/rejected (HH-RLHF); "
                    "prompt/responses/ranks; prompt")


def _field(row, key, types, what=None):
    if key not in row:
        raise DataError(f"missing field {key!r}")
    v = row[key]
    if not isinstance(v, types) or isinstance(v, bool):
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise DataError(f"field {what or key!r} must be {names}, got {type(v).__name__}")
    return v


def _messages(value, what):
    """Validate a messages list; return a clean copy with only role/content."""
    check_conversation(value, what)
    for i, m in enumerate(value):
        if m["role"] == "system" and i > 0:
            raise DataError(f"{what}[{i}]: a system message may only come first")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _prompt(row):
    """The "prompt" field: a string (one user turn) or a messages list ending with a user turn."""
    p = _field(row, "prompt", (str, list))
    conv = [{"role": "user", "content": p}] if isinstance(p, str) else _messages(p, "prompt")
    if conv[-1]["role"] != "user":
        raise DataError(f"prompt must end with a user turn, ends with {conv[-1]['role']!r}")
    return conv


def _reply(row, key):
    """A final reply: a string, or a list of exactly one assistant message (the conversational form)."""
    v = _field(row, key, (str, list))
    if isinstance(v, list):
        msgs = _messages(v, key)
        if len(msgs) != 1 or msgs[0]["role"] != "assistant":
            raise DataError(f"field {key!r} as a list must hold exactly one assistant message")
        v = msgs[0]["content"]
    return v


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_hh(text):
    """An HH-RLHF transcript -> conversation. "\\n\\nHuman: hi\\n\\nAssistant: yo" ->
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}] (contents stripped)."""
    parts = _HH_TURN.split(text)  # [before, role, content, role, content, ...]
    if parts[0].strip():
        raise DataError(f"HH transcript must start with '\\n\\nHuman:', starts with {parts[0][:30]!r}")
    if len(parts) < 3:
        raise DataError("HH transcript has no '\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    role = {"Human": "user", "Assistant": "assistant"}
    return [{"role": role[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def hh_transcript(conversation):
    """Conversation (user/assistant only) -> HH-RLHF transcript string; the inverse of parse_hh."""
    names = {"user": "Human", "assistant": "Assistant"}
    if any(m["role"] not in names for m in conversation):
        raise ValueError("HH transcripts have only Human and Assistant turns")
    return "".join(f"\n\n{names[m['role']]}: {m['content']}" for m in conversation)


def _meta(row, keys):
    return {k: v for k, v in row.items() if k not in keys}


def _parse_pairs(row):
    pref = Preference(_prompt(row), _reply(row, "chosen"), _reply(row, "rejected"),
                      _meta(row, ("prompt", "chosen", "rejected")))
    if pref.chosen == pref.rejected:
        raise DataError("chosen and rejected are identical")
    return pref


def _parse_hh(row):
    chosen = parse_hh(_field(row, "chosen", str))
    rejected = parse_hh(_field(row, "rejected", str))
    for name, conv in (("chosen", chosen), ("rejected", rejected)):
        if conv[-1]["role"] != "assistant" or len(conv) < 2:
            raise DataError(f"HH {name} transcript must end with an Assistant reply after a Human turn")
    if chosen[:-1] != rejected[:-1]:
        raise DataError("HH chosen and rejected transcripts differ before their final Assistant reply")
    if chosen[-1]["content"] == rejected[-1]["content"]:
        raise DataError("chosen and rejected are identical")
    return Preference(chosen[:-1], chosen[-1]["content"], rejected[-1]["content"],
                      _meta(row, ("chosen", "rejected")))


def _parse_rankings(row):
    prompt = _prompt(row)
    responses = _field(row, "responses", list)
    ranks = _field(row, "ranks", list)
    if len(responses) != len(ranks):
        raise DataError(f"{len(responses)} responses but {len(ranks)} ranks")
    if len(responses) < 2:
        raise DataError(f"a ranking needs at least 2 responses, got {len(responses)}")
    for i, (r, k) in enumerate(zip(responses, ranks)):
        if not isinstance(r, str):
            raise DataError(f"responses[{i}] must be a string, got {type(r).__name__}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise DataError(f"ranks[{i}] must be an integer >= 0 (0 = best), got {k!r}")
    return Ranking(prompt, list(responses), list(ranks), _meta(row, ("prompt", "responses", "ranks")))


def _parse_demo_messages(row):
    conv = _messages(_field(row, "messages", list), "messages")
    if conv[-1]["role"] != "assistant":
        raise DataError(f"a demonstration must end with an assistant turn, ends with {conv[-1]['role']!r}")
    return conv


def _parse_alpaca(row):
    instruction = _field(row, "instruction", str)
    extra = _field(row, "input", str) if "input" in row else ""
    output = _field(row, "output", str)
    user = instruction + ("\n\n" + extra if extra else "")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _parse_prompt_messages(row):
    conv = _messages(_field(row, "messages", list), "messages")
    if conv[-1]["role"] != "user":
        raise DataError(f"a prompt must end with a user turn, ends with {conv[-1]['role']!r}")
    return conv


_PARSERS = {  # loader -> {format: row -> record}
    "load_demonstrations": {"messages": _parse_demo_messages, "alpaca": _parse_alpaca},
    "load_preferences": {"pairs": _parse_pairs, "hh": _parse_hh},
    "load_rankings": {"rankings": _parse_rankings},
    "load_prompts": {"messages": _parse_prompt_messages, "prompt": _prompt,
                     "pairs": lambda r: _parse_pairs(r).prompt, "hh": lambda r: _parse_hh(r).prompt,
                     "rankings": lambda r: _parse_rankings(r).prompt},
}


def _load(path, loader, strict):
    rows = read_jsonl(path)
    parsers = _PARSERS[loader]
    n0, first = rows[0]
    try:
        fmt = detect_format(first)
    except DataError as e:
        raise DataError(str(e), path, n0) from None
    if fmt not in parsers:
        raise DataError(f"this is a {fmt!r} file; {loader} reads {' or '.join(repr(f) for f in parsers)}",
                        path, n0)
    records, bad = [], []
    for n, row in rows:
        try:
            records.append(parsers[fmt](row))
        except DataError as e:
            err = DataError(str(e), path, n)
            if strict:
                raise err from None
            bad.append(err)
    if bad:
        warnings.warn(f"skipped {len(bad)} bad records of {len(rows)}; first: {bad[0]}")
    if not records:
        raise DataError(f"no valid records ({len(bad)} bad)", path)
    return records


def load_demonstrations(path, strict=True):
    """SFT conversations (each ending with an assistant turn) from a `messages` or Alpaca JSONL file.
    Alpaca {"instruction": I, "input": X, "output": O} -> [user: I + "\\n\\n" + X (or just I), assistant: O].
    strict=False skips bad records with one warning instead of raising (for large third-party files)."""
    return _load(path, "load_demonstrations", strict)


def load_preferences(path, strict=True):
    """Preference records from a pairs file (prompt/chosen/rejected) or an Anthropic HH-RLHF file
    (chosen/rejected transcripts: their shared turns are the prompt, their last Assistant replies the two
    answers). Identical chosen/rejected is an error (it carries no signal). Extra keys go to `.meta`."""
    return _load(path, "load_preferences", strict)


def load_rankings(path, strict=True):
    """Ranking records (prompt / K responses / ranks, 0 = best, equal = tie). `ranking_pairs` expands one."""
    return _load(path, "load_rankings", strict)


def load_prompts(path, strict=True):
    """Prompt conversations (each ending with a user turn) from a prompts file ({"messages"} or {"prompt"}),
    or the prompts of a pairs, HH-RLHF or rankings file."""
    return _load(path, "load_prompts", strict)


def load_any(path, strict=True):
    """(format, records) of whatever supported JSONL file `path` is; a `messages` file whose first
    conversation ends with a user turn is read as prompts, otherwise as demonstrations."""
    n0, first = read_jsonl(path)[0]
    try:
        fmt = detect_format(first)
    except DataError as e:
        raise DataError(str(e), path, n0) from None
    loader = {"messages": "load_demonstrations", "alpaca": "load_demonstrations", "pairs": "load_preferences",
              "hh": "load_preferences", "rankings": "load_rankings", "prompt": "load_prompts"}[fmt]
    msgs = first.get("messages")
    if fmt == "messages" and isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) \
            and msgs[-1].get("role") == "user":
        loader = "load_prompts"
    return fmt, _load(path, loader, strict)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m rlhf.data",
                                 description="Load a JSONL data file, report its format and show a record.")
    ap.add_argument("path", help="a demonstrations / prompts / pairs / HH-RLHF / rankings JSONL file")
    ap.add_argument("--n", type=int, default=1, help="how many records to print")
    args = ap.parse_args(argv)
    try:
        fmt, records = load_any(args.path)
    except DataError as e:
        raise SystemExit(f"error: {e}")
    print(f"{args.path}: {len(records)} records, format {fmt!r}")
    for r in records[:args.n]:
        if isinstance(r, list):
            print(format_chat(r))
        else:
            print(json.dumps(to_row(r), ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
