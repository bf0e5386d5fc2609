"""Sampling from a GPT: greedy, temperature, top-k, top-p; batched prompts; stop tokens; log-probs.

Each step turns the logits of the last position into a distribution and draws the next token:

    p(x_t | x_<t) = softmax(z_t / tau)              temperature tau (tau -> 0: argmax, "greedy")
    top-k:  keep the k largest z_t, renormalise      (Fan et al., 2018)
    top-p:  keep the smallest set of tokens whose probability mass is >= p, renormalise
            ("nucleus sampling", Holtzman et al., 2020)

Prompts of different lengths are left-padded into one (B, P) block, so every row's last prompt token
sits in column P-1 and all rows decode in lock-step; positions come from the attention mask, so the
padding shifts nothing. A row stops at its first stop token (eos id); later tokens are padding.

`logprobs` are log softmax(z_t / tau)[x_t] of the *unfiltered* distribution (top-k/top-p only choose
which tokens may be drawn). That is exactly what a training forward pass recomputes over the same
tokens, padding and positions, which PPO's ratio exp(log pi - log pi_old) needs (equal to ~1e-6):

    gen = generate(model, prompts, 50, temperature=0.7, return_logprobs=True)
    logits, _ = model(gen.sequences, attention_mask=gen.attention_mask)
    lp = torch.log_softmax(logits[:, gen.prompt_length - 1:-1] / 0.7, -1)  # logits one position earlier
    lp = lp.gather(-1, gen.response[..., None])[..., 0] * gen.response_mask   # == gen.logprobs

With the KV cache (use_cache=True) each new token costs one position of compute instead of the
whole sequence; greedy decoding gives the same tokens either way (tests/test_generate.py).
Speed: python -m bench.model
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Generation:
    sequences: Tensor        # (B, P+N) long: left-padded prompts, then new tokens (pad_token_id after a stop)
    attention_mask: Tensor   # (B, P+N) long: 1 on real prompt tokens and on response tokens up to and including the first stop
    prompt_length: int       # P, width of the left-padded prompt block
    response: Tensor         # (B, N) the new tokens (pad_token_id after the stop)
    response_mask: Tensor    # (B, N) float 1.0 up to and including the first stop token
    logprobs: Tensor | None  # (B, N) float log_softmax(logits / temperature)[chosen]; un-filtered by top-k/p; 0 where masked
    stopped: Tensor          # (B,) bool: the response contains a stop token


def left_pad(prompts, pad_token_id=0, device=None):
    """Left-pad a list of token-id lists into (ids, mask), both (B, P) long.

    left_pad([[5, 6, 7], [8]], pad_token_id=0) -> ids [[5, 6, 7], [0, 0, 8]], mask [[1, 1, 1], [0, 0, 1]]
    """
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), P), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, P - len(p):] = torch.as_tensor(p, dtype=torch.long)
            mask[i, P - len(p):] = 1
    return ids.to(device), mask.to(device)


def filter_logits(logits, top_k=None, top_p=None):
    """Set to -inf every logit outside the top-k and then outside the top-p nucleus. logits: (B, V).

    filter_logits(tensor([[2., 1., 0., -1.]]), top_k=2) -> [[2., 1., -inf, -inf]]
    probabilities [.5, .3, .2] with top_p=0.6 keep the first two: .5 < .6, then .5 + .3 >= .6.
    """
    # BEGIN SOLUTION a1.filter_logits
    if top_k is not None and top_k < logits.size(-1):
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        kth = torch.topk(logits, top_k, dim=-1).indices                   # (B, k) exactly k survivors
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, kth, True)
        logits = logits.masked_fill(~keep, float("-inf"))
    if top_p is not None and top_p < 1.0:
        if not 0.0 < top_p:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = F.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(-1) - probs       # probability of the tokens ranked strictly higher
        drop_sorted = mass_before >= top_p          # already covered p without this token; never drops rank 0
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits
    # END SOLUTION


def check_generator(generator, device) -> None:
    """torch.multinomial needs its generator on the device of the probabilities: say so plainly (PyTorch's
    own message names neither the generator's origin nor the fix). `generator`: None, one, or a list."""
    if isinstance(generator, (list, tuple)):
        for g in generator:
            check_generator(g, device)
        return
    if generator is not None and torch.device(generator.device).type != torch.device(device).type:
        raise ValueError(f"the sampling generator is on {generator.device} but the model is on {device}: "
                         f"create it with torch.Generator(device=<the model's device>)")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One decoding step: (next token (B,), log_softmax(logits / tau) (B, V)) from last-position logits (B, V).

    temperature 0 is greedy (argmax; log-probs at temperature 1). Otherwise the token is drawn from
    softmax(filter_logits(logits / tau)), while the returned log-probs are of the *unfiltered*
    distribution: what a training forward pass recomputes (PPO's ratio needs them equal).
    `generator` is one torch.Generator for the whole batch, or a list of B of them: one random stream
    per row, so that a row's sample depends on its own stream only (not on the other rows, nor on the
    batch size): "common random numbers" when two models answer the same prompts.
    """
    # BEGIN SOLUTION a1.sample_next
    if temperature == 0:
        return torch.argmax(logits, dim=-1), F.log_softmax(logits, dim=-1)
    logits = logits / temperature
    probs = F.softmax(filter_logits(logits, top_k, top_p), dim=-1)
    # END SOLUTION
    if isinstance(generator, (list, tuple)):                                       # one stream per row
        next_tok = torch.cat([torch.multinomial(probs[b:b + 1], 1, generator=g)[:, 0]
                              for b, g in enumerate(generator)])                    # (B,)
    else:
        next_tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)    # (B,)
    return next_tok, F.log_softmax(logits, dim=-1)


@torch.no_grad()
def generate(model, prompts, max_new_tokens: int, temperature=1.0, top_k=None, top_p=None,
             eos_token_id=None, pad_token_id: int = 0, use_cache=True, generator=None,
             return_logprobs=False, attention_mask=None) -> Generation:
    """Sample up to `max_new_tokens` per prompt; see the module docstring and `Generation`.

    prompts: list of token-id lists (left-padded here), or a (B, P) / (P,) LongTensor, optionally with
    its (B, P) `attention_mask` if it is already left-padded. temperature=0 is greedy (log-probs then
    use temperature 1). eos_token_id: an id or a list of ids that end a row. `generator` seeds sampling
    (one for the batch, or a list with one per row: see sample_next); it must live on the model's device
    (torch.Generator(device=...)), as torch.multinomial requires.
    The model is put in eval mode (no dropout) for the call and restored afterwards. When the prompt
    plus new tokens exceed block_size the cache cannot hold them, and the recompute path (which keeps
    the last block_size tokens) is used instead.
    """
    device = model.device if hasattr(model, "device") else next(model.parameters()).device
    check_generator(generator, device)
    if isinstance(prompts, Tensor):
        ids = prompts.to(device=device, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask.to(device).long()
    else:
        if len(prompts) == 0:
            raise ValueError("generate: no prompts")
        ids, mask = left_pad(prompts, pad_token_id, device)
    if (mask.sum(-1) == 0).any():
        raise ValueError("generate: every prompt needs at least one token")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    B, P = ids.shape
    if isinstance(generator, (list, tuple)) and len(generator) != B:
        raise ValueError(f"generate: {len(generator)} generators for {B} rows (one per row, or a single one)")
    N = max_new_tokens
    stop_ids = [] if eos_token_id is None else (
        [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    stop_ids_t = torch.tensor(stop_ids, dtype=torch.long, device=device)
    block_size = model.config.block_size
    use_cache = use_cache and P + N <= block_size

    was_training = model.training
    model.eval()
    try:
        seq, seq_mask = ids, mask
        new_tokens, new_mask, new_logprobs = [], [], []
        done = torch.zeros(B, dtype=torch.bool, device=device)   # row has emitted a stop token
        cache = model.make_kv_cache(B, P + N) if use_cache else None
        step_ids = seq  # what the next forward pass sees
        for _ in range(N):
            if use_cache:
                h = model.hidden_states(step_ids, attention_mask=seq_mask, kv_cache=cache)  # (B, T, C)
            else:  # recompute everything; crop to the last block_size positions if needed
                h = model.hidden_states(seq[:, -block_size:], attention_mask=seq_mask[:, -block_size:])
            logits = model.lm_head(h[:, -1, :]).float()                 # (B, V) next-token logits

            next_tok, logp_all = sample_next(logits, temperature, top_k, top_p, generator)   # (B,), (B, V)
            logp = logp_all.gather(-1, next_tok[:, None]).squeeze(-1)   # (B,)

            alive = ~done
            next_tok = torch.where(alive, next_tok, torch.full_like(next_tok, pad_token_id))
            new_tokens.append(next_tok)
            new_mask.append(alive.long())
            new_logprobs.append(torch.where(alive, logp, torch.zeros_like(logp)))
            if len(stop_ids):
                done = done | (alive & torch.isin(next_tok, stop_ids_t))

            seq = torch.cat([seq, next_tok[:, None]], dim=1)            # (B, T+1)
            seq_mask = torch.cat([seq_mask, alive.long()[:, None]], dim=1)
            step_ids = next_tok[:, None]                                # only the new token goes through
            if done.all():
                break
    finally:
        model.train(was_training)

    n = len(new_tokens)
    response = torch.full((B, N), pad_token_id, dtype=torch.long, device=device)
    response_mask = torch.zeros((B, N), dtype=torch.float32, device=device)
    logprobs = torch.zeros((B, N), dtype=torch.float32, device=device)
    if n:
        response[:, :n] = torch.stack(new_tokens, 1)
        response_mask[:, :n] = torch.stack(new_mask, 1).float()
        logprobs[:, :n] = torch.stack(new_logprobs, 1)
    return Generation(
        sequences=torch.cat([ids, response], dim=1),
        attention_mask=torch.cat([mask, response_mask.long()], dim=1),
        prompt_length=P,
        response=response,
        response_mask=response_mask,
        logprobs=logprobs if return_logprobs else None,
        stopped=done,
    )
