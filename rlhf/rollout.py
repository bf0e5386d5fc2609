"""Rollout: prompts -> responses -> log-probs and reward-model scores. The one path every stage uses.

PPO, GRPO, DPO, best-of-N, evaluation, SFT's gold samples, the reward model's comparison sampling and
chat all turn conversations into responses the same way, so they all go through this module:

    prompts = render_prompts(conversations, tokenizer, block_size, max_new_tokens)   # chat template
    g       = sampling_generator(model, seed, "rollout", it)   # on the model's device (CUDA needs that)
    s       = sample(model, prompts, max_new_tokens, temperature, stop_id, pad_id, g)   # cut at <|end|>
    texts   = s.texts(tokenizer)                                # [(reply text, stopped, n_tokens)]
    lp      = response_logprobs(model, s.sequences, s.attention_mask, s.prompt_length, temperature)
    r       = score_responses(reward_model, tokenizer, conversations, [t for t, _, _ in texts], stopped)
    reward  = rm_reward(reward_model, tokenizer)                # (conversations, Samples) -> (B,) for PPO/GRPO

Log-probs of a response come from the logits one position earlier, divided by the sampling
temperature, computed in float32 (docs/DESIGN.md, PPO checklist 1, 13):

    log π(y_t | x, y_<t) = log_softmax(z_{P-1+t} / τ)[y_t]       z = model(x ++ y), P = prompt columns

`sequence_logprobs` sums them over a response (DPO's log π(y|x)); it is the same computation with the
prompt boundary given per row by a mask instead of one column P.

The reward model judges TEXT. `score_responses` encodes (conversation, reply text, stopped) exactly as
the reward-model stage encodes its training comparisons (rlhf.data.encode_response: chat template,
reply, <|end|> when it stopped) and reads the score at the last real token. So a response gets one
score wherever it is judged — training, PPO's rewards, GRPO, best-of-N, evaluation — and two token
sequences that spell the same text get the same reward: a policy cannot earn reward by producing an
unusual tokenisation the RM never saw in training, and any run's RM can judge any model's answers.
The price is one decode + encode per response, which is small next to the forward passes.

Sampling generators: torch.multinomial needs a generator on the device of the probabilities, so every
generator here is made on the model's device (`sampling_generator`); minigpt.generate refuses one on
another device with a clear error instead of PyTorch's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from minigpt.generate import generate
from minigpt.trainer import make_generator
from rlhf import data as D
from rlhf.losses import token_logprobs


def model_device(model) -> torch.device:
    """The device of a model's parameters."""
    return next(model.parameters()).device


def sampling_generator(model, seed: int, *keys) -> torch.Generator:
    """A torch.Generator on the model's device, seeded by minigpt.trainer.make_generator's stable hash of
    (seed, *keys); with no keys it is seeded with `seed` itself. Same seed and keys -> same samples."""
    device = model_device(model)
    if keys:
        return make_generator(seed, *keys, device=device)
    return torch.Generator(device=device).manual_seed(seed)


MIN_PROMPT_TOKENS = 4   # the least room a prompt needs beside max_new_tokens in block_size (its chat shell)


def render_prompts(conversations: list, tokenizer, block_size: int, max_new_tokens: int) -> list[list[int]]:
    """Each conversation (ending with a user turn) in the chat template, ending with <|assistant|>, cut on
    the left (rlhf.data.render_prompt's rule) to leave room for max_new_tokens in block_size."""
    room = block_size - max_new_tokens
    if room < MIN_PROMPT_TOKENS:
        raise ValueError(f"block_size={block_size} leaves no room for a prompt with max_new_tokens={max_new_tokens}")
    return [D.render_prompt(c, tokenizer, max_len=room) for c in conversations]


# -----------------------------------------------------------------------------
# sampling


def truncate_after_stop(response: Tensor, stop_id: int, pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Keep each response up to and including its first stop token; pad the rest (PPO checklist 3).

    response (B, N) -> (response (B, N) with pad_id after the stop, mask (B, N) float, stopped (B,) bool).
    Example: [[a, END, b]] -> [[a, END, PAD]], mask [[1, 1, 0]], stopped [True];
             [[a, b, c]]   -> unchanged, mask [[1, 1, 1]], stopped [False].
    """
    # BEGIN SOLUTION a4.truncate_after_stop
    is_stop = response == stop_id                                                # (B, N)
    stops_before = is_stop.long().cumsum(dim=1) - is_stop.long()                 # stop tokens strictly before t
    mask = (stops_before == 0)                                                   # up to and including the first stop
    response = torch.where(mask, response, torch.full_like(response, pad_id))
    # END SOLUTION
    return response, mask.float(), is_stop.any(dim=1)


def used_columns(attention_mask: Tensor, prompt_length: int, response_mask: Tensor) -> tuple[int, int]:
    """(k, n): the first prompt column some row uses, and the length of the longest response.

    Prompts are left-padded to the longest of the whole batch and responses right-padded to max_new_tokens,
    so a micro-batch often has columns that are padding in every row; columns [k, P+n) hold all its
    tokens. Response masks are prefixes (1 up to the stop token), so n = the largest row sum (at least 1).
    Example: mask [[0, 0, 1, 1 | 1, 0, 0], [0, 1, 1, 1 | 1, 1, 0]] with P = 4 -> (1, 2).
    """
    used = attention_mask[:, :prompt_length].bool().any(0)                      # (P,)
    k = int(used.long().argmax())                                               # first True (every prompt has a token)
    n = max(1, int(response_mask.sum(1).max()))
    return k, n


def trim_padding(batch: dict) -> dict:
    """The micro-batch without the columns no row uses (used_columns): sequences and attention_mask keep
    [k, P+n), prompt_length becomes P-k, and every per-token (b, N) tensor keeps its first n columns.

    Nothing a kept position computes changes: positions come from the mask (PPO checklist 2), attention
    is causal and masked, and dropped response columns are masked out of every loss. Only the compute
    does: a rollout's padding is about 40% of its (b, P+N) grid with the default settings."""
    P, rmask = batch["prompt_length"], batch["response_mask"]
    k, n = used_columns(batch["attention_mask"], P, rmask)
    out = dict(batch, prompt_length=P - k)
    for key, v in batch.items():
        if key in ("sequences", "attention_mask"):
            out[key] = v[:, k:P + n]                                              # (b, P-k+n)
        elif isinstance(v, Tensor) and v.dim() >= 2 and v.shape[:2] == rmask.shape:
            out[key] = v[:, :n]                                                   # (b, n, ...)
    return out


@dataclass
class Samples:
    """Sampled responses to a batch of prompts. B rows, P prompt columns, N = the longest response."""
    sequences: Tensor            # (B, P+N) long: left-padded prompt, then the response (pad after its stop)
    attention_mask: Tensor       # (B, P+N) long: 1 on real prompt and response tokens
    prompt_length: int           # P
    response: Tensor             # (B, N) long: the response up to and including its first <|end|>, then pad
    response_mask: Tensor        # (B, N) float: 1 on response tokens up to and including the first <|end|>
    stopped: Tensor              # (B,) bool: the response said <|end|>
    gen_logprobs: Tensor | None  # (B, N) the generator's log-probs (0 where masked), when asked for

    def texts(self, tokenizer) -> list[tuple[str, bool, int]]:
        """(reply text without <|end|> or other special tokens, stopped, response tokens including <|end|>)."""
        out = []
        for ids, n, stopped in zip(self.response.tolist(), self.response_mask.sum(1).long().tolist(),
                                   self.stopped.tolist()):
            ids = ids[:n - 1] if stopped else ids[:n]
            out.append((tokenizer.decode(ids, skip_special=True), bool(stopped), int(n)))
        return out


@torch.no_grad()
def sample(model, prompts: list[list[int]], max_new_tokens: int, temperature: float, stop_id: int, pad_id: int,
           generator: torch.Generator | None = None, top_k: int | None = None,
           return_logprobs: bool = False) -> Samples:
    """Sample (temperature 0: greedy) a response to each prompt with the KV-cache generator, left-padded
    prompts (PPO checklist 2), cut after the first <|end|> (checklist 3); response columns after the
    longest response are dropped (they are padding in every row)."""
    gen = generate(model, prompts, max_new_tokens, temperature=temperature, top_k=top_k, eos_token_id=stop_id,
                   pad_token_id=pad_id, generator=generator, return_logprobs=return_logprobs)
    P = gen.prompt_length
    response, response_mask, stopped = truncate_after_stop(gen.response, stop_id, pad_id)   # (B, N) x2, (B,)
    N = used_columns(gen.attention_mask, P, response_mask)[1]
    response, response_mask = response[:, :N], response_mask[:, :N]
    logprobs = gen.logprobs[:, :N] * response_mask if return_logprobs else None
    return Samples(sequences=torch.cat([gen.sequences[:, :P], response], dim=1),                  # (B, P+N)
                   attention_mask=torch.cat([gen.attention_mask[:, :P], response_mask.long()], dim=1),
                   prompt_length=P, response=response, response_mask=response_mask, stopped=stopped,
                   gen_logprobs=logprobs)


def sample_batches(model, tokenizer, conversations: list, max_new_tokens: int, temperature: float = 0.0,
                   batch_size: int = 64, seed: int = 0, generator: torch.Generator | None = None,
                   top_k: int | None = None, return_logprobs: bool = False, progress: str | None = None,
                   per_prompt: bool = False):
    """Yield (conversations, Samples) batch by batch: render_prompts, then `sample` with one generator for
    the whole call (`generator`, else sampling_generator(model, seed)), or with per_prompt=True one
    random stream per prompt, seeded by (seed, the prompt's index): common random numbers, so a prompt's
    sample depends neither on the batch it lands in nor on the other prompts' answers, and two models
    that agree on a prompt draw the same reply (evaluation's paired comparisons need that)."""
    prompts = render_prompts(conversations, tokenizer, model.config.block_size, max_new_tokens)
    end, pad = D.stop_token_id(tokenizer), D.pad_token_id(tokenizer)
    g = generator if generator is not None else sampling_generator(model, seed)
    starts = range(0, len(conversations), batch_size)
    if progress:
        starts = tqdm(starts, desc=progress, leave=False, unit="batch")
    for i in starts:
        rows = range(i, min(i + batch_size, len(conversations)))
        if per_prompt:
            g = [sampling_generator(model, seed, "prompt", j) for j in rows]
        yield conversations[i:i + batch_size], sample(model, prompts[i:i + batch_size], max_new_tokens, temperature,
                                                      end, pad, g, top_k=top_k, return_logprobs=return_logprobs)


def generate_responses(model, tokenizer, conversations: list, max_new_tokens: int, temperature: float = 0.0,
                       batch_size: int = 64, seed: int = 0, generator: torch.Generator | None = None,
                       top_k: int | None = None, progress: str | None = None, per_prompt: bool = False) -> list[dict]:
    """Answer each conversation: [{"response": text before <|end|>, "stopped": bool, "n_tokens": int}], in
    order; greedy at temperature 0, else sampled with one seeded generator, or one stream per prompt
    (per_prompt=True: see sample_batches)."""
    out = []
    for _, s in sample_batches(model, tokenizer, conversations, max_new_tokens, temperature, batch_size, seed,
                               generator, top_k, progress=progress, per_prompt=per_prompt):
        out += [{"response": t, "stopped": st, "n_tokens": n} for t, st, n in s.texts(tokenizer)]
    return out


# -----------------------------------------------------------------------------
# log-probs


def shift_to_response(logits: Tensor, prompt_length: int, temperature: float = 1.0) -> Tensor:
    """The logits that predict the response tokens, in float32 and divided by the sampling temperature:
    logits[:, P-1:-1] / τ, (B, P+N, V) -> (B, N, V). Row t predicts response token t (checklist 1)."""
    # BEGIN SOLUTION a4.response_logprobs
    return logits[:, prompt_length - 1:-1].float() / max(temperature, 1e-8)
    # END SOLUTION


def response_logits(model, sequences: Tensor, attention_mask: Tensor, prompt_length: int,
                    temperature: float = 1.0) -> Tensor:
    """shift_to_response of the model's logits over prompt + response, (B, N, V). Positions come from the
    mask (left padding is fine)."""
    logits, _ = model(sequences, attention_mask=attention_mask)                  # (B, P+N, V)
    return shift_to_response(logits, prompt_length, temperature)                 # (B, N, V)


def response_logprobs(model, sequences: Tensor, attention_mask: Tensor, prompt_length: int,
                      temperature: float = 1.0) -> Tensor:
    """log π(y_t | x, y_<t) of every response token, (B, N), by one forward pass (PPO checklist 1, 2, 13).
    Not masked: callers multiply by the response mask."""
    logits = response_logits(model, sequences, attention_mask, prompt_length, temperature)
    return token_logprobs(logits, sequences[:, prompt_length:])                  # (B, N)


def sequence_logprobs(model, idx: Tensor, attention_mask: Tensor, response_mask: Tensor,
                      temperature: float = 1.0) -> Tensor:
    """log π(y|x) = Σ_t log π(y_t | x, y_<t), summed over the response tokens of each row, (B,).

    idx, attention_mask (B, T) prompt + response (right padding); response_mask (B, T), 1 on the response
    tokens (their <|end|> included), 0 on the prompt and on padding. It is response_logprobs with the
    prompt boundary at column 1 (position 0, always prompt, is never a target) and the mask choosing
    each row's response. Example: prompt [u, a], response [y, e], one pad p: idx [u, a, y, e, p],
    response_mask [0, 0, 1, 1, 0] -> log p(y | u a) + log p(e | u a y).
    """
    # BEGIN SOLUTION a5.sequence_logprobs
    logp = response_logprobs(model, idx, attention_mask, 1, temperature)        # (B, T-1): logp of idx[:, t+1]
    mask = response_mask[:, 1:].to(logp.dtype)                                  # (B, T-1)
    # END SOLUTION
    # torch.where, not a product: a padded position's value never leaks, not even as NaN * 0.
    return torch.where(mask > 0, logp, torch.zeros_like(logp)).sum(-1)          # (B,)


# -----------------------------------------------------------------------------
# reward-model scores (of text: see the module docstring)


@torch.no_grad()
def score_responses(reward_model, tokenizer, conversations: list, responses: list[str], stopped: list[bool],
                    batch_size: int = 64) -> list[float]:
    """The reward model's r(x, y) of each (conversation, reply text): the ids the RM stage trains on
    (rlhf.data.encode_response), right-padded, read at the last real token."""
    pad = D.pad_token_id(tokenizer)
    seqs = [D.encode_response(c, r, tokenizer, reward_model.config.block_size, stopped=s)
            for c, r, s in zip(conversations, responses, stopped)]
    device = model_device(reward_model)
    out = []
    for i in range(0, len(seqs), batch_size):
        ids, mask = D.pad_right(seqs[i:i + batch_size], pad)                    # (B, T) right-padded
        out += reward_model.score(ids.to(device), mask.to(device)).float().tolist()
    return out


def score_samples(reward_model, tokenizer, conversations: list, samples: Samples, batch_size: int = 64) -> Tensor:
    """score_responses of a batch of Samples, as a (B,) float tensor on the samples' device."""
    texts = samples.texts(tokenizer)
    scores = score_responses(reward_model, tokenizer, conversations, [t for t, _, _ in texts],
                             [s for _, s, _ in texts], batch_size)
    return torch.tensor(scores, dtype=torch.float32, device=samples.sequences.device)


def rm_reward(reward_model, tokenizer, batch_size: int = 64):
    """The reward function RL stages call, (conversations, Samples) -> (B,) scores: the reward model's
    judgement of each reply's text (score_samples). PPO and GRPO take any such function, so a test can
    hand them a toy reward of the token ids instead."""
    def reward(conversations: list, samples: Samples) -> Tensor:
        return score_samples(reward_model, tokenizer, conversations, samples, batch_size)
    return reward
