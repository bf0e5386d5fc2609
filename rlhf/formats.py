"""JSONL data files and their records: the formats the stages read and write, parsed and checked.

One JSON object per line; the format is detected per file from the first record:
    demonstrations  {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}
                    {"instruction": ..., "input": ..., "output": ...}                       (Alpaca)
    prompts         {"messages": [... ending with a user turn]} or {"prompt": str or messages}
    pairs           {"prompt": str or messages, "chosen": str, "rejected": str}
                    {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}       (Anthropic HH-RLHF)
    rankings        {"prompt": str or messages, "responses": [str, ...], "ranks": [int, ...]}  (0 = best)
Every bad row raises DataError("path:line: what is wrong"). Text may not contain the chat template's
special-token strings ("<|user|>", "<|end|>", ...): the template adds them, and a literal one inside a
reply would read as a turn boundary to a human and as plain characters to the tokenizer.

Loaders return plain records: conversations (lists of {"role", "content"} messages), `Preference` and
`Ranking`; `write_jsonl` / `append_jsonl` write them back in the same formats. How a conversation becomes
token ids (the chat template) is rlhf.data's job, which re-exports the names here that callers use.

Quick look at a file (its format, record count and first record in the template):
    python -m rlhf.data FILE.jsonl
"""

import json
import os
import re
import sys
from dataclasses import dataclass, field

from minigpt.files import atomic_write
from minigpt.tokenizer import SPECIAL_TOKENS

ROLES = ("system", "user", "assistant")  # the roles a message may have (rlhf.data gives each its token)


class DataError(ValueError):
    """A bad data file or record. The message reads "path:line: what is wrong"."""

    def __init__(self, message, path=None, line=None):
        if path is not None:
            message = f"{path}:{line}: {message}" if line is not None else f"{path}: {message}"
        super().__init__(message)
        self.path = path  # the file, when known
        self.line = line  # 1-based line number, when known


# ----------------------------------------------------------------------------------------------------
# conversations and records

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
    def write(f):
        for row in rows:
            f.write(_line(row))
    atomic_write(path, write)


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


def _texts(record):
    """(where, text) for every string a parsed record holds: message contents, replies, responses."""
    if isinstance(record, list):  # a conversation
        return [(f"message {i} ({m['role']})", m["content"]) for i, m in enumerate(record)]
    if isinstance(record, Preference):
        return _texts(record.prompt) + [("chosen", record.chosen), ("rejected", record.rejected)]
    return _texts(record.prompt) + [(f"responses[{i}]", r) for i, r in enumerate(record.responses)]


def check_no_special_tokens(record):
    """Raise DataError if any text of a parsed record contains a special-token string such as "<|end|>"."""
    for where, text in _texts(record):
        if "<|" in text:
            for tok in SPECIAL_TOKENS:
                if tok in text:
                    raise DataError(f"{where} contains the special token {tok!r}; the chat template adds "
                                    "these itself, so remove it from the text")


def _load(path, loader, strict, skip_bad=None):
    """Parse every row of `path` with the parser of its format. A bad row raises DataError (file:line), unless
    strict=False (skip them all) or skip_bad=N (skip up to N): skipped rows get one summary line."""
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
    allowed = (0 if strict else len(rows)) if skip_bad is None else skip_bad
    records, bad = [], []
    for n, row in rows:
        try:
            record = parsers[fmt](row)
            check_no_special_tokens(record)
            records.append(record)
        except DataError as e:
            bad.append(DataError(str(e), path, n))
            if len(bad) > allowed:
                hint = f" ({len(bad)} bad records so far; --skip_bad=N skips up to N)" if skip_bad else ""
                raise DataError(f"{e}{hint}", path, n) from None
    if bad:
        print(f"{path}: skipped {len(bad)} bad records of {len(rows):,}; first: {bad[0]}", file=sys.stderr)
    if not records:
        raise DataError(f"no valid records ({len(bad)} bad)", path)
    return records


def load_demonstrations(path, strict=True, skip_bad=None):
    """SFT conversations (each ending with an assistant turn) from a `messages` or Alpaca JSONL file.
    Alpaca {"instruction": I, "input": X, "output": O} -> [user: I + "\\n\\n" + X (or just I), assistant: O].
    strict=False skips bad records, skip_bad=N up to N of them, with one summary line on stderr instead of
    raising (for large third-party files; the project's own formats stay strict by default)."""
    return _load(path, "load_demonstrations", strict, skip_bad)


def load_preferences(path, strict=True, skip_bad=None):
    """Preference records from a pairs file (prompt/chosen/rejected) or an Anthropic HH-RLHF file
    (chosen/rejected transcripts: their shared turns are the prompt, their last Assistant replies the two
    answers). Identical chosen/rejected is an error (it carries no signal). Extra keys go to `.meta`."""
    return _load(path, "load_preferences", strict, skip_bad)


def load_rankings(path, strict=True, skip_bad=None):
    """Ranking records (prompt / K responses / ranks, 0 = best, equal = tie). `ranking_pairs` expands one."""
    return _load(path, "load_rankings", strict, skip_bad)


def load_prompts(path, strict=True, skip_bad=None):
    """Prompt conversations (each ending with a user turn) from a prompts file ({"messages"} or {"prompt"}),
    or the prompts of a pairs, HH-RLHF or rankings file."""
    return _load(path, "load_prompts", strict, skip_bad)


def load_any(path, strict=True, skip_bad=None):
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
    return fmt, _load(path, loader, strict, skip_bad)


COMPARISON_FORMATS = ("pairs", "hh", "rankings")


def load_comparison_files(data: str, val_data: str, skip_bad=None, who: str = "this stage"):
    """(format, records, held-out records or None) of a stage's --data and --val_data, both comparisons
    (pairs, HH-RLHF or rankings); a file of another format is a one-line SystemExit naming its flag, not an
    AttributeError where the stage first reads a record's fields."""
    out = []
    for flag, path in (("--data", data), ("--val_data", val_data)):
        if not path:
            out.append((None, None))
            continue
        fmt, records = load_any(path, skip_bad=skip_bad)
        if fmt not in COMPARISON_FORMATS:
            raise SystemExit(f"error: {flag}={path} is a {fmt!r} file; {who} needs comparisons "
                             f"(prompt/chosen/rejected, HH-RLHF or rankings)")
        out.append((fmt, records))
    (fmt, records), (_, val) = out
    return fmt, records, val
