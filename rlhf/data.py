"""Chat template, SFT datasets and collators: how conversations become token ids and training batches.

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

Reading and writing data files (demonstrations, prompts, pairs, HH-RLHF, rankings) and their records
(`Preference`, `Ranking`, `DataError`) live in rlhf.formats; the names callers use are re-exported here, so
rlhf.data stays the package's one door to data.

Quick look at a file (its format, record count and first record in the template):
    python -m rlhf.data FILE.jsonl
"""

import json
import sys
from dataclasses import dataclass

import torch

from minigpt.configurator import CommandParser, bounded, utf8_console
from rlhf.formats import (  # re-exported: rlhf.data is the package's data door
    DataError, Preference, Ranking, append_jsonl, check_conversation, load_any, load_demonstrations,
    load_comparison_files, load_preferences, load_prompts, load_rankings, ranking_pairs, to_row, write_jsonl)

__all__ = [
    # chat template
    "ROLE_TOKENS", "END_TOKEN", "PAD_TOKEN", "IGNORE_INDEX", "special_id", "stop_token_id", "pad_token_id",
    "format_chat", "render", "render_prompt", "decode_response", "encode_response", "encode_response_with_mask",
    # collators and SFT datasets
    "pad_left", "pad_right", "sft_targets", "SFTExample", "make_sft_example", "collate_sft", "SFTDataset", "pack",
    # re-exported from rlhf.formats
    "DataError", "Preference", "Ranking", "ranking_pairs", "check_conversation", "to_row", "write_jsonl",
    "append_jsonl", "load_demonstrations", "load_preferences", "load_rankings", "load_prompts", "load_any",
    "load_comparison_files",
    # the CLI
    "main",
]

ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END_TOKEN = "<|end|>"   # end of every turn; the stop token for generation
PAD_TOKEN = "<|pad|>"   # padding only; never the stop token
IGNORE_INDEX = -1       # targets with this value carry no loss (GPT.forward ignores -1)


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
    # BEGIN SOLUTION a2.render
    last = len(conversation) - 1
    blocks = []
    for i, m in enumerate(conversation):
        content = tokenizer.encode(m["content"])  # ordinary text: "<|end|>" typed by a user stays text
        ids = [special_id(tokenizer, ROLE_TOKENS[m["role"]])] + content + [end]
        supervised = m["role"] == "assistant" and (train_on == "all" or i == last)
        mask = [0] + [int(supervised)] * (len(content) + 1)
        blocks.append((ids, mask))
    return blocks
    # END SOLUTION


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
    """Generated ids -> (text up to the first <|end|>, stopped). [y, o, <|end|>, <|pad|>] -> ("yo", True).
    Other special tokens sampled before <|end|> are dropped: [y, <|user|>, o] -> ("yo", False)."""
    ids = [int(t) for t in ids]
    end = stop_token_id(tokenizer)
    if end in ids:
        return tokenizer.decode(ids[:ids.index(end)], skip_special=True), True
    return tokenizer.decode(ids, skip_special=True), False


def encode_response(conversation: list[dict], response: str, tokenizer, max_len: int,
                    stopped: bool = True) -> list[int]:
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
    # BEGIN SOLUTION a2.padding
    for b, s in enumerate(seqs):
        if not s:
            continue
        sl = slice(T - len(s), T) if left else slice(0, len(s))
        ids[b, sl] = torch.tensor(s, dtype=torch.long)
        mask[b, sl] = 1
    # END SOLUTION
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
    # BEGIN SOLUTION a2.sft_targets
    x = list(ids[:-1])
    y = [t if m else IGNORE_INDEX for t, m in zip(ids[1:], loss_mask[1:])]
    # END SOLUTION
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
# the CLI: a quick look at a data file

def main(argv=None):
    ap = CommandParser(prog="python -m rlhf.data",
                       description="Load a JSONL data file, report its format and show a record.")
    ap.add_argument("path", help="a demonstrations / prompts / pairs / HH-RLHF / rankings JSONL file")
    ap.add_argument("--n", type=bounded(int, ">= 1"), default=1, help="how many records to print")
    ap.add_argument("--skip_bad", type=bounded(int, ">= 0"), default=None,
                    help="a file from elsewhere: skip up to this many records that are JSON but not of its "
                         "format (one summary line); a line that is not JSON at all still stops the load")
    args = ap.parse_args(argv)
    try:
        fmt, records = load_any(args.path, skip_bad=args.skip_bad)
    except DataError as e:
        raise SystemExit(f"error: {e}")
    print(f"{args.path}: {len(records)} records, format {fmt!r}")
    for r in records[:args.n]:
        if isinstance(r, list):
            print(format_chat(r))
        else:
            print(json.dumps(to_row(r), ensure_ascii=False, indent=1))


if __name__ == "__main__":
    utf8_console()
    main(sys.argv[1:])
