"""The stored cases of the graded tests: seeded inputs, and the call that turns them into outputs.

`python tools/make_snapshots.py` runs each case through tests/adapters.py on the reference solution and
stores inputs and outputs in tests/_snapshots/<group>.pt; the graded tests load them (tests/grading.py)
and never recompute a reference. A case is (build inputs from a seeded generator, call the adapter).
"""

from __future__ import annotations

import contextlib

import torch

from minigpt.config import GPTConfig
from minigpt.model import GPT, MLP, Block, CausalSelfAttention
from tests import adapters

f64 = torch.float64


def randn(g, *shape, scale=1.0):
    return scale * torch.randn(*shape, generator=g, dtype=f64)


def bern(g, *shape, p=0.6):
    m = (torch.rand(*shape, generator=g) < p).to(f64)
    m.view(-1)[0] = 1.0  # at least one valid position
    return m


def right_padded(lengths, T):
    return torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in lengths], dtype=f64)


def _sft_inputs(g):
    B, T, V = 3, 6, 11
    mask = right_padded([6, 4, 2], T)
    mask[0, :2] = 0.0  # prompt tokens of row 0 carry no loss
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[mask == 0] = -1  # ignore-index targets under the mask are allowed
    return dict(logits=randn(g, B, T, V, scale=2.0), targets=targets, loss_mask=mask)


def _ranked_inputs(g):
    rewards = randn(g, 3, 4)
    pair_mask = torch.ones(3, 4, 4, dtype=f64).triu(1)
    pair_mask[0, 1, 2] = 0.0               # a tie in prompt 0
    pair_mask[1, :, 3] = 0.0               # prompt 1 has only 3 responses (column 3 is padding)
    pair_mask[2] = 0.0
    pair_mask[2, 0, 1] = 1.0               # prompt 2 keeps one pair
    return dict(rewards=rewards, pair_mask=pair_mask)


def _ppo_inputs(g):
    return dict(logprobs=randn(g, 4, 6, scale=0.3), old_logprobs=randn(g, 4, 6, scale=0.3),
                advantages=randn(g, 4, 6), mask=right_padded([6, 5, 3, 1], 6), clip_range=0.2)


def _value_inputs(g):
    return dict(values=randn(g, 3, 5), old_values=randn(g, 3, 5), returns=randn(g, 3, 5),
                mask=right_padded([5, 3, 2], 5), clip_range=0.3)


def _gae_inputs(g, gamma, lam):
    mask = right_padded([7, 4, 1, 5], 7)
    rewards, values = randn(g, 4, 7), randn(g, 4, 7)
    rewards[mask == 0], values[mask == 0] = 1e3, -1e3  # garbage in padding must not leak in
    return dict(rewards=rewards, values=values, mask=mask, gamma=gamma, lam=lam)


# ---------------------------------------------------------------------------------------------------- A1

TINY = dict(vocab_size=19, block_size=16, n_layer=2, n_head=2, n_embd=8)  # a GPT small enough to store


def state_of(module_cls, seed, **config):
    """A random state_dict of module_cls(GPTConfig(**config)) with visible (not init-sized) weights."""
    torch.manual_seed(seed)
    m = module_cls(GPTConfig(**config))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.dim() >= 2 else 0.2))
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


CALLS: list = []  # (sublayer, attn_mask, kv_cache) of every stand-in call, for the wiring tests


@contextlib.contextmanager
def standins(*names):
    """Replace the sublayers an exercise builds on by simple fixed functions, so that it is graded on its
    own code (a bug in your attention does not fail your block). names: "attention", "mlp", "block".
    Each call is recorded in CALLS, so a test can check what the exercise passed down."""
    saved = {cls: cls.forward for cls in (CausalSelfAttention, MLP, Block)}
    CALLS.clear()

    def attention(self, x, attn_mask=None, kv_cache=None):
        CALLS.append(("attention", attn_mask, kv_cache))
        return 0.5 * x.flip(-1)

    def block(self, x, attn_mask=None, kv_cache=None):
        CALLS.append(("block", attn_mask, kv_cache))
        return x * 1.5 + 0.1 * (self.attn.layer_idx + 1)

    if "attention" in names:
        CausalSelfAttention.forward = attention
    if "mlp" in names:
        MLP.forward = lambda self, x: torch.tanh(x) - 0.25 * x
    if "block" in names:
        Block.forward = block
    try:
        yield
    finally:
        for cls, fwd in saved.items():
            cls.forward = fwd


def _attention_inputs(g):
    config = dict(TINY)
    return dict(config=config, state=state_of(CausalSelfAttention, 1, **config), x=randn(g, 2, 5, 8).float())


def _padded_attention_inputs(g):
    inputs = _attention_inputs(g)
    allowed = torch.ones(5, 5).tril().bool().unsqueeze(0).repeat(2, 1, 1)       # (B, T, S) causal
    allowed[1, :, :2] = False                                                     # row 1: two left-pad keys
    allowed[1, torch.arange(5), torch.arange(5)] = True                           # every query sees itself
    inputs["attn_mask"] = torch.zeros(2, 1, 5, 5).masked_fill(~allowed.unsqueeze(1), float("-inf"))
    return inputs


def _gpt_inputs(g, with_mask=False):
    config = dict(TINY)
    idx = torch.randint(0, 19, (2, 7), generator=g)
    targets = torch.randint(0, 19, (2, 7), generator=g)
    targets[0, :3] = -1                                                           # ignored positions
    out = dict(config=config, state=state_of(GPT, 2, **config), idx=idx, targets=targets)
    if with_mask:
        out["attention_mask"] = torch.tensor([[1] * 7, [0, 0] + [1] * 5])
    return out


def _gpt_forward(i):
    with standins("block"):
        return adapters.run_gpt_forward(**i)


def _block_forward(i):
    with standins("attention", "mlp"):
        return adapters.run_block(**i)


BPE_TEXT = ("the cat sat on the mat; the cat ate the rat. aaabdaaabac " * 3 + "héllo wörld, 123 456!")


def _kv_inputs(g):
    B, nh, max_len, hs = 2, 2, 6, 3
    steps, advance, length = [], [], 0
    for T in (3, 1, 2):                          # a prompt of 3, then one token, then two
        for layer in range(2):
            steps.append((layer, randn(g, B, nh, T, hs), randn(g, B, nh, T, hs)))
            advance.append(length if layer == 0 else length + T)
        length += T
    return dict(n_layer=2, shape=(B, nh, max_len, hs), steps=steps, advance=advance)


# ---------------------------------------------------------------------------------------------------- A3

class TableModel(torch.nn.Module):
    """A stand-in model with no transformer: value (RM) or logits (LM) read from a table by token id and
    position, so that the RL exercises are graded without depending on your GPT (assignment 1)."""

    def __init__(self, vocab_size, block_size, out_dim, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.tok = torch.nn.Parameter(torch.randn(vocab_size, out_dim, generator=g, dtype=f64))
        self.pos = torch.nn.Parameter(0.3 * torch.randn(block_size, out_dim, generator=g, dtype=f64))
        self.out_dim = out_dim

    def forward(self, idx, attention_mask=None):
        if attention_mask is None:                                                    # (B, T) or (1, T) positions
            pos = torch.arange(idx.shape[1])[None, :]
        else:                                                                         # as the GPT: from the mask
            pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        h = self.tok[idx] + self.pos[pos] + 0.5 * self.tok[idx.roll(1, dims=1)]      # (B, T, out)
        if attention_mask is not None:                                                # padding reads differently
            h = h + 0.7 * (1 - attention_mask.to(h.dtype))[..., None]
        if self.out_dim == 1:
            return h.squeeze(-1)                                                      # (B, T) RM values
        return h, None                                                                # (B, T, V) LM logits


def _rm_batch(g):
    P, K, T = 3, 4, 6
    idx = torch.randint(0, 11, (P, K, T), generator=g)
    lengths = torch.tensor([[6, 4, 5, 2], [3, 6, 2, 4], [5, 5, 1, 0]])
    attention_mask = (torch.arange(T)[None, None, :] < lengths[:, :, None]).long()
    attention_mask[0, 1] = torch.tensor([0, 0, 1, 1, 1, 1])                      # a left-padded response too
    pair_mask = torch.ones(P, K, K).triu(1)
    pair_mask[2, :, 3] = 0.0                      # prompt 2 has 3 responses
    pair_mask[0, 1, 2] = 0.0                      # a tie
    return dict(batch=dict(idx=idx, attention_mask=attention_mask, pair_mask=pair_mask))


def _rm_loss(i):
    return adapters.run_rm_loss(TableModel(11, 8, 1, seed=5), i["batch"])


# ---------------------------------------------------------------------------------------------------- A5

def _seq_inputs(g):
    idx = torch.randint(0, 13, (3, 8), generator=g)
    attention_mask = torch.tensor([[1] * 8, [0, 0] + [1] * 6, [1] * 4 + [0] * 4])   # right, left, right padding
    response_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0, 0, 0]],
                                 dtype=f64)
    return dict(idx=idx, attention_mask=attention_mask, response_mask=response_mask, temperature=0.7)


def _seq_logprobs(i):
    return adapters.run_sequence_logprobs(TableModel(13, 8, 13, seed=6), **i)


CASES = {
    "a1": {
        "count_pairs": (lambda g: dict(ids=torch.randint(0, 5, (40,), generator=g).tolist()),
                        lambda i: sorted(adapters.run_count_pairs(**i).items())),
        "merge_pair": (lambda g: dict(ids=[1, 1, 1, 2, 1, 1, 3, 1, 1, 1, 1] + torch.randint(0, 4, (30,), generator=g).tolist(),
                                      pair=(1, 1), new_id=99),
                       lambda i: adapters.run_merge_pair(**i)),
        "learn_merges": (lambda g: dict(text=BPE_TEXT, n_merges=25), lambda i: adapters.run_learn_merges(**i)),
        "bpe_encode": (lambda g: dict(merges=adapters.run_learn_merges(BPE_TEXT, 25),
                                      text="the rat sat; aaab héllo 4561 cats"),
                       lambda i: adapters.run_bpe_encode(**i)),
        "attention/causal": (_attention_inputs, lambda i: adapters.run_attention(**i)),
        "attention/padded": (_padded_attention_inputs, lambda i: adapters.run_attention(**i)),
        "mlp": (lambda g: dict(config=dict(TINY), state=state_of(MLP, 3, **TINY), x=randn(g, 2, 4, 8).float()),
                lambda i: adapters.run_mlp(**i)),
        "block": (lambda g: dict(config=dict(TINY), state=state_of(Block, 4, **TINY), x=randn(g, 2, 4, 8).float()),
                  _block_forward),
        "gpt_forward": (_gpt_inputs, _gpt_forward),
        "gpt_forward/padded": (lambda g: _gpt_inputs(g, with_mask=True), _gpt_forward),
        "filter_logits/top_k": (lambda g: dict(logits=randn(g, 3, 9).float(), top_k=3),
                                lambda i: adapters.run_filter_logits(**i)),
        "filter_logits/top_p": (lambda g: dict(logits=randn(g, 3, 9, scale=2.0).float(), top_p=0.7),
                                lambda i: adapters.run_filter_logits(**i)),
        "filter_logits/both": (lambda g: dict(logits=randn(g, 3, 9, scale=2.0).float(), top_k=4, top_p=0.5),
                               lambda i: adapters.run_filter_logits(**i)),
        "kv_cache": (_kv_inputs, lambda i: adapters.run_kv_cache(**i)),
        "sample_next/logprobs": (lambda g: dict(logits=randn(g, 3, 6, scale=2.0).float(), temperature=0.7, top_k=3),
                                 lambda i: adapters.run_sample_next(**i)[1]),
    },
    "a2": {
        "masked_mean/all": (lambda g: dict(x=randn(g, 4, 7), mask=bern(g, 4, 7)),
                            lambda i: adapters.run_masked_mean(**i)),
        "masked_mean/rows": (lambda g: dict(x=randn(g, 4, 7), mask=right_padded([7, 3, 1, 5], 7), dim=1),
                             lambda i: adapters.run_masked_mean(**i)),
        "sft_loss/padded": (_sft_inputs, lambda i: adapters.run_sft_loss(**i)),
        "lr_at": (lambda g: dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110),
                  lambda i: torch.tensor([adapters.run_lr_at(s, **i) for s in range(0, 125)], dtype=f64)),
        "lr_at/decay_iters": (lambda g: dict(learning_rate=3e-4, min_lr=3e-5, warmup_iters=5, max_iters=200,
                                             lr_decay_iters=50),
                              lambda i: torch.tensor([adapters.run_lr_at(s, **i) for s in range(0, 60)], dtype=f64)),
    },
    "a3": {
        "pairwise/plain": (lambda g: dict(chosen=randn(g, 8), rejected=randn(g, 8)),
                           lambda i: adapters.run_pairwise_reward_loss(**i)),
        "pairwise/margin": (lambda g: dict(chosen=randn(g, 8), rejected=randn(g, 8),
                                           margin=torch.rand(8, generator=g, dtype=f64)),
                            lambda i: adapters.run_pairwise_reward_loss(**i)),
        "ranked/full_k5": (lambda g: dict(rewards=randn(g, 3, 5)), lambda i: adapters.run_ranked_reward_loss(**i)),
        "ranked/masked_prompt": (_ranked_inputs, lambda i: adapters.run_ranked_reward_loss(**i)),
        "ranked/masked_pair": (lambda g: dict(_ranked_inputs(g), reduction="pair"),
                               lambda i: adapters.run_ranked_reward_loss(**i)),
        "last_token_values": (lambda g: dict(values=randn(g, 4, 6), attention_mask=torch.tensor(
            [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]])),
            lambda i: adapters.run_last_token_values(**i)),
        "rm_loss": (_rm_batch, _rm_loss),
    },
    "a4": {
        "shift_to_response": (lambda g: dict(logits=randn(g, 2, 7, 5), prompt_length=3, temperature=0.7),
                              lambda i: adapters.run_shift_to_response(**i)),
        "token_logprobs": (lambda g: dict(logits=randn(g, 3, 5, 7, scale=2.0),
                                          tokens=torch.randint(0, 7, (3, 5), generator=g)),
                           lambda i: adapters.run_token_logprobs(**i)),
        "entropy": (lambda g: dict(logits=randn(g, 2, 3, 6, scale=2.0)), lambda i: adapters.run_entropy_from_logits(**i)),
        "kl_shaped_rewards": (lambda g: dict(scores=randn(g, 4), logprobs=randn(g, 4, 6), ref_logprobs=randn(g, 4, 6),
                                             mask=right_padded([6, 3, 1, 0], 6), kl_coef=0.2),
                              lambda i: adapters.run_kl_shaped_rewards(**i)),
        "gae/discounted": (lambda g: _gae_inputs(g, 0.9, 0.8), lambda i: adapters.run_gae(**i)),
        "gae/undiscounted": (lambda g: _gae_inputs(g, 1.0, 0.95), lambda i: adapters.run_gae(**i)),
        "whiten/shift": (lambda g: dict(x=3 + randn(g, 4, 6, scale=5.0), mask=right_padded([6, 3, 1, 4], 6)),
                         lambda i: adapters.run_masked_whiten(**i)),
        "whiten/keep_mean": (lambda g: dict(x=3 + randn(g, 4, 6, scale=5.0), mask=right_padded([6, 3, 1, 4], 6),
                                            shift_mean=False),
                             lambda i: adapters.run_masked_whiten(**i)),
        "policy_loss": (_ppo_inputs, lambda i: adapters.run_ppo_policy_loss(**i)),
        "value_loss": (_value_inputs, lambda i: adapters.run_ppo_value_loss(**i)),
        "adaptive_kl": (lambda g: dict(init_kl_coef=0.1, target=6.0, horizon=10000,
                                       updates=[(12.0, 1000), (6.6, 1000), (0.0, 1000), (5.0, 3000), (30.0, 500)]),
                        lambda i: torch.tensor(adapters.run_adaptive_kl_controller(**i), dtype=f64)),
    },
    "a5": {
        "dpo_loss": (lambda g: dict(policy_chosen_logps=randn(g, 6), policy_rejected_logps=randn(g, 6),
                                    ref_chosen_logps=randn(g, 6), ref_rejected_logps=randn(g, 6), beta=0.5),
                     lambda i: adapters.run_dpo_loss(**i)),
        "group_advantages": (lambda g: dict(rewards=torch.cat([randn(g, 8), torch.full((4,), 0.7, dtype=f64)]),
                                            group_size=4),
                             lambda i: adapters.run_group_advantages(**i)),
        "kl_k3": (lambda g: dict(logprobs=randn(g, 3, 5), ref_logprobs=randn(g, 3, 5)),
                  lambda i: adapters.run_kl_k3(**i)),
        "sequence_logprobs": (_seq_inputs, _seq_logprobs),
    },
}


def build(group: str) -> dict:
    """{case: {"inputs", "outputs"}} of a group, computed with the code the adapters point at."""
    out = {}
    for k, (name, (make_inputs, call)) in enumerate(sorted(CASES[group].items())):
        g = torch.Generator().manual_seed(1000 + k)
        inputs = make_inputs(g)
        out[name] = {"inputs": inputs, "outputs": _detach(call({k: v for k, v in inputs.items()}))}
    return out


def _detach(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (tuple, list)):
        return tuple(_detach(v) for v in x)
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    return x
