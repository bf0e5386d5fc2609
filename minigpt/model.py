"""A GPT-2 language model written out by hand, in one file that reads top to bottom.

    LayerNorm -> CausalSelfAttention -> MLP -> Block -> GPT (+ KVCache, GPT-2 import/export)

The architecture is GPT-2 (Radford et al., 2019), i.e. the Transformer decoder of Vaswani et al.
(2017) with pre-LayerNorm blocks:

    x = x + Attn(LN_1(x))          Attn(Q, K, V) = softmax(Q K^T / sqrt(d_head) + M) V     (Vaswani eq. 1)
    x = x + MLP(LN_2(x))           MLP(x) = W_2 GELU_tanh(W_1 x + b_1) + b_2
    logits = LN_f(x) W_te^T        (the LM head is tied to the token embedding)

where M is 0 where a query may look at a key (the key is not in its future and is not padding) and
-inf elsewhere. Two reference implementations to read alongside: OpenAI's gpt-2 `model.py`
(TensorFlow) and Hugging Face's `modeling_gpt2.py`, whose checkpoint layout `from_hf_gpt2` reads.

Beyond nanoGPT this model also takes an `attention_mask` (1 = token, 0 = padding) and explicit
`position_ids`, so a left-padded batch of prompts gives each prompt the logits it would get alone,
and a `KVCache` for incremental decoding (see minigpt/generate.py).

    python -m bench.model          # tokens/s, MFU, KV-cache speed-up
    python -m pytest tests/test_model.py -q
"""

import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from minigpt.config import GPTConfig
from minigpt.files import atomic_write, atomic_write_text
from minigpt.generate import generate as _generate

try:  # optional: only needed to read a Hugging Face model.safetensors (pytorch_model.bin works without it)
    from safetensors.torch import load_file as _load_safetensors
except ImportError:
    _load_safetensors = None


class KVCache:
    """Keys and values of every layer for the tokens seen so far, so each new token costs O(T), not O(T^2).

    Pre-allocated once: k[l] and v[l] are (B, n_head, max_len, head_dim); `length` is how many positions
    are filled. GPT.forward writes the new positions of each layer and advances `length` at the end.
    """

    def __init__(self, n_layer, batch_size, n_head, max_len, head_dim, device=None, dtype=None):
        shape = (batch_size, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.max_len = max_len
        self.length = 0  # number of positions already stored

    def update(self, layer, k, v):
        """Store this step's (B, nh, T, hs) keys/values for `layer`; return all keys/values so far (B, nh, S, hs)."""
        # BEGIN SOLUTION a1.kv_cache
        T = k.size(2)
        start, end = self.length, self.length + T
        if end > self.max_len:
            raise ValueError(f"KVCache is full: {end} positions > max_len={self.max_len}")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]
        # END SOLUTION


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, dropout=None) -> Tensor:
    """Scaled dot-product attention written out: softmax(q k^T / sqrt(hs) + mask) v (Vaswani et al. 2017, eq. 1).

    q: (B, nh, T, hs); k, v: (B, nh, S, hs). attn_mask None means causal with S == T (query i sees keys
    0..i); otherwise a float mask (B or 1, 1, T, S), 0 where a query may attend and -inf where it may
    not. dropout (an nn.Dropout, or None) is applied to the attention weights. Returns (B, nh, T, hs).
    """
    # BEGIN SOLUTION a1.attention
    T, S, hs = q.size(2), k.size(2), q.size(-1)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))   # (B, nh, T, S)
    if attn_mask is None:
        causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()
        att = att.masked_fill(~causal, float("-inf"))
    else:
        att = att + attn_mask                                  # -inf on keys it may not see
    att = F.softmax(att, dim=-1)                               # each row sums to 1 over visible keys
    if dropout is not None:
        att = dropout(att)
    return att @ v                                             # (B, nh, T, hs)
    # END SOLUTION


class CausalSelfAttention(nn.Module):
    """Multi-head masked self-attention: each position mixes the values of the positions it may see."""

    def __init__(self, config: GPTConfig, layer_idx: int = 0):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # Q, K, V in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)      # output projection
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.fused = config.fused_attention  # may be flipped per module; both paths give the same numbers
        self.layer_idx = layer_idx

    def forward(self, x, attn_mask=None, kv_cache=None):
        # x: (B, T, C). attn_mask: None (plain causal, no cache) or the additive mask M of the formula,
        # float (B or 1, 1, T, S): 0 where the query may attend to the key, -inf where it may not.
        B, T, C = x.size()
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)      # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)        # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)        # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)        # (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)         # (B, nh, S, hs), S = past + T

        if self.fused:
            # One fused kernel (flash / memory-efficient / math, chosen by PyTorch).
            dropout_p = self.dropout if self.training else 0.0
            if attn_mask is None:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        else:
            # The same computation written out: scores, mask, softmax, weighted sum of values.
            y = attention(q, k, v, attn_mask, self.attn_dropout)        # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)              # re-assemble heads: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network: expand 4x, tanh-approximated GELU (as GPT-2), project back."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        # BEGIN SOLUTION a1.mlp
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)
        # END SOLUTION


class Block(nn.Module):
    """One pre-LayerNorm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: GPTConfig, layer_idx: int = 0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask=None, kv_cache=None):
        # BEGIN SOLUTION a1.block
        x = x + self.attn(self.ln_1(x), attn_mask, kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x
        # END SOLUTION


class GPT(nn.Module):
    """Token + position embeddings, n_layer Blocks, final LayerNorm, LM head tied to the token embedding."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),   # token embedding (also the LM head)
            wpe=nn.Embedding(config.block_size, config.n_embd),   # learned position embedding
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf, 2017): the head that reads a token out is the embedding that wrote it in.
        self.lm_head.weight = self.transformer.wte.weight

        # GPT-2 initialisation: every weight N(0, 0.02), biases 0. The embedding must be small too: with
        # N(0, 1) the tied head gives huge logits and the loss at init is ~89 instead of ln(V).
        self.apply(self._init_weights)
        # The projections that write into the residual stream are scaled by 1/sqrt(2 * n_layer) (GPT-2
        # paper, sec. 2.3): 2 * n_layer branches add to the stream, so its variance stays O(1) with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def device(self):
        return self.transformer.wte.weight.device

    # ------------------------------------------------------------------ forward
    def hidden_states(self, idx, attention_mask=None, position_ids=None, kv_cache=None):
        """Residual stream after the final LayerNorm, (B, T, C): what the LM head, reward and value heads read.

        idx: (B, T) token ids. attention_mask: (B, S) with 1 = token, 0 = padding, where S = T, or past + T
        when a kv_cache holds `past` earlier positions. position_ids: (B, T); default from the mask,
        (cumsum(mask) - 1).clamp(min=0), so left padding does not shift positions; else past..past+T-1.
        """
        B, T = idx.size()
        past = kv_cache.length if kv_cache is not None else 0
        S = past + T
        if S > self.config.block_size:
            raise ValueError(f"sequence of {S} tokens is longer than block_size={self.config.block_size}")
        if attention_mask is not None and tuple(attention_mask.shape) != (B, S):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, S)}")

        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, T)
            else:
                position_ids = torch.arange(past, S, device=idx.device).unsqueeze(0)         # (1, T)

        attn_mask = None  # None = plain causal (the fast path of the fused kernel)
        if attention_mask is not None or past > 0:
            q_pos = torch.arange(past, S, device=idx.device)          # absolute index of each query
            k_pos = torch.arange(S, device=idx.device)                 # absolute index of each key
            allowed = k_pos[None, :] <= q_pos[:, None]                 # (T, S) causal: no peeking ahead
            allowed = allowed.unsqueeze(0)                             # (1, T, S)
            if attention_mask is not None:
                allowed = allowed & attention_mask.bool()[:, None, :]  # (B, T, S): padding is never a key
                # A padding query would have no visible key at all (softmax of all -inf = NaN), so let
                # every position see itself. Real tokens never see padding; padding outputs are ignored.
                allowed = allowed | (k_pos[None, None, :] == q_pos[None, :, None])
            # As an additive float mask (0 / -inf): PyTorch's CPU SDPA kernel is ~100x slower with a
            # boolean mask over the (non-contiguous) KV-cache slices than with a float one.
            attn_mask = torch.zeros(allowed.shape, dtype=self.transformer.wte.weight.dtype, device=idx.device)
            attn_mask = attn_mask.masked_fill(~allowed, float("-inf")).unsqueeze(1)  # (B or 1, 1, T, S)

        # BEGIN SOLUTION a1.gpt_forward
        tok_emb = self.transformer.wte(idx)                            # (B, T, C)
        pos_emb = self.transformer.wpe(position_ids)                   # (B or 1, T, C)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x, attn_mask, kv_cache)
        # END SOLUTION
        if kv_cache is not None:
            kv_cache.length = S
        return self.transformer.ln_f(x)                                # (B, T, C)

    def forward(self, idx, targets=None, attention_mask=None, position_ids=None, kv_cache=None):
        """Logits (B, T, V) for every position, and the mean cross-entropy against `targets` (B, T)
        (-1 = ignore) when given, else None."""
        x = self.hidden_states(idx, attention_mask, position_ids, kv_cache)
        # BEGIN SOLUTION a1.gpt_forward
        logits = self.lm_head(x)                                       # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1),
                                   ignore_index=-1)
        # END SOLUTION
        return logits, loss

    def make_kv_cache(self, batch_size, max_len=None):
        """An empty KVCache sized for this model (max_len defaults to block_size)."""
        c = self.config
        return KVCache(c.n_layer, batch_size, c.n_head, max_len or c.block_size, c.n_embd // c.n_head,
                       device=self.device, dtype=self.transformer.wte.weight.dtype)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, eos_token_id=None,
                 use_cache=True, generator=None):
        """Prompt (B, T) plus up to max_new_tokens sampled tokens, (B, T + N). temperature=0 is greedy.

        A thin wrapper over minigpt.generate.generate. A row that emits eos_token_id stops; later
        columns of that row are filled with the (first) eos id, and trailing columns where every row
        had stopped are dropped, so a single prompt comes back ending at its eos token.
        """
        if idx.dim() == 1:
            idx = idx.unsqueeze(0)
        eos_ids = [] if eos_token_id is None else (
            [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        pad = eos_ids[0] if eos_ids else 0
        out = _generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        eos_token_id=eos_token_id, pad_token_id=pad, use_cache=use_cache, generator=generator)
        n_kept = int(out.response_mask.sum(0).nonzero().max().item()) + 1 if out.response_mask.any() else 0
        return out.sequences[:, : out.prompt_length + n_kept]

    # ------------------------------------------------------------------ accounting
    def num_params(self, non_embedding=True):
        """Number of parameters. non_embedding=True leaves out the position embedding; the token
        embedding stays in, because as the tied LM head it does matmul work (as in nanoGPT/Kaplan)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len=None):
        """Training FLOPs per token (forward + backward) = 6N + 12 * n_layer * n_embd * T.

        6N: each parameter does a multiply-add (2 FLOPs) forward and twice that backward (Kaplan et al.
        2020, sec. 2.1). 12·L·C·T: the attention scores QK^T and the weighted sum AV, 2·T·C FLOPs each per
        token and layer forward, x3 for backward (PaLM appendix B). T defaults to block_size.
        """
        c = self.config
        T = seq_len or c.block_size
        return 6 * self.num_params() + 12 * c.n_layer * c.n_embd * T

    def estimate_mfu(self, fwdbwd_per_iter, dt, peak_flops=312e12, seq_len=None):
        """Model FLOPs utilisation: achieved FLOP/s over `peak_flops` (default A100 bf16, 312 TFLOP/s;
        bench/model.py passes this machine's measured fp32 matmul peak). One fwd+bwd = seq_len tokens."""
        T = seq_len or self.config.block_size
        flops_per_iter = self.flops_per_token(T) * T * fwdbwd_per_iter
        return flops_per_iter / dt / peak_flops

    def configure_optimizers(self, weight_decay, learning_rate, betas=(0.9, 0.95), device_type="cpu"):
        """AdamW with two groups: weight decay on every >= 2-D tensor (matmul weights and the embeddings),
        none on 1-D tensors (biases, LayerNorm gains), which only shift or scale and need no shrinking."""
        params = [p for p in self.parameters() if p.requires_grad]  # tied weight listed once
        # BEGIN SOLUTION a2.optimizer_groups
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # END SOLUTION
        extra = {"fused": True} if device_type == "cuda" else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    # ------------------------------------------------------------------ GPT-2 checkpoints
    # Hugging Face's GPT-2 uses a "Conv1D" that stores its weight as (in, out), the transpose of nn.Linear.
    _HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

    @classmethod
    def from_hf_gpt2(cls, state_dict, config: GPTConfig):
        """A GPT holding the weights of a Hugging Face GPT2LMHeadModel (or GPT2Model) state dict."""
        model = cls(config)
        ours = model.state_dict()
        sd = {}
        for key, tensor in state_dict.items():
            if key == "lm_head.weight":
                continue  # tied to wte; checked below
            name = key if key.startswith("transformer.") else "transformer." + key
            if name.split(".")[-2:] in (["attn", "bias"], ["attn", "masked_bias"]):
                continue  # transformer.h.N.attn.bias: HF's causal-mask buffer, not a parameter
            if name not in ours:
                raise ValueError(f"from_hf_gpt2: unexpected key {key!r}")
            if name.endswith(cls._HF_TRANSPOSED):
                tensor = tensor.t()
            if tuple(tensor.shape) != tuple(ours[name].shape):
                raise ValueError(f"from_hf_gpt2: {key!r} has shape {tuple(tensor.shape)}, "
                                 f"expected {tuple(ours[name].shape)} for {config}")
            sd[name] = tensor
        missing = [k for k in ours if k != "lm_head.weight" and k not in sd]
        if missing:
            raise ValueError(f"from_hf_gpt2: missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if "lm_head.weight" in state_dict and not torch.equal(state_dict["lm_head.weight"],
                                                               sd["transformer.wte.weight"]):
            raise ValueError("from_hf_gpt2: lm_head.weight differs from transformer.wte.weight, "
                             "but this model ties them")
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
        with torch.no_grad():
            model.load_state_dict(sd, strict=True)
        return model

    def to_hf_gpt2(self):
        """This model's weights as a Hugging Face GPT2LMHeadModel state dict (Conv1D weights (in, out)), copied
        to the CPU wherever the model is, so that a file saved from it loads on any machine."""
        out = {}
        for name, tensor in self.state_dict().items():
            if name == "lm_head.weight":
                continue
            t = tensor.detach().to("cpu", copy=True)
            out[name] = t.t().contiguous() if name.endswith(self._HF_TRANSPOSED) else t
        out["lm_head.weight"] = out["transformer.wte.weight"].clone()
        return out


# ---------------------------------------------------------------------- loading GPT-2 from disk
def config_from_hf(hf: dict, **overrides) -> GPTConfig:
    """GPTConfig from a Hugging Face GPT-2 `config.json` dict; refuses variants this model does not compute."""
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"config.json: activation_function={act!r}; only the tanh GELU of GPT-2 is supported")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(flag, False):
            raise ValueError(f"config.json: {flag}=true is not supported")
    if not hf.get("scale_attn_weights", True):
        raise ValueError("config.json: scale_attn_weights=false is not supported")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if abs(eps - 1e-5) > 1e-12:
        raise ValueError(f"config.json: layer_norm_epsilon={eps}; this model uses 1e-5")
    kw = dict(vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
              n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=0.0, bias=True)
    kw.update(overrides)
    return GPTConfig(**kw)


def config_to_hf(config: GPTConfig) -> dict:
    """The Hugging Face GPT2Config fields (as a config.json dict) that describe this GPTConfig."""
    return dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=config.vocab_size,
                n_positions=config.block_size, n_ctx=config.block_size, n_layer=config.n_layer,
                n_head=config.n_head, n_embd=config.n_embd, activation_function="gelu_new",
                layer_norm_epsilon=1e-5, resid_pdrop=config.dropout, embd_pdrop=config.dropout,
                attn_pdrop=config.dropout, tie_word_embeddings=True)


def load_pretrained(path, **overrides) -> GPT:
    """A GPT from a local Hugging Face GPT-2 directory: `config.json` plus `model.safetensors` (used when the
    safetensors package is installed) or `pytorch_model.bin`. Nothing is downloaded, and the .bin file
    is read with torch.load(weights_only=True), which refuses to unpickle arbitrary objects."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: not found (expected a Hugging Face GPT-2 directory)")
    with open(cfg_path, encoding="utf-8") as f:
        try:
            hf_cfg = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path}:{e.lineno}: invalid JSON ({e.msg})") from None
    config = config_from_hf(hf_cfg, **overrides)

    st_path, bin_path = os.path.join(path, "model.safetensors"), os.path.join(path, "pytorch_model.bin")
    state_dict = None
    if os.path.isfile(st_path) and _load_safetensors is not None:
        state_dict = _load_safetensors(st_path, device="cpu")
    if state_dict is None:
        if not os.path.isfile(bin_path):
            hint = " (model.safetensors needs `pip install safetensors`)" if os.path.isfile(st_path) else ""
            raise FileNotFoundError(f"{path}: no pytorch_model.bin or readable model.safetensors{hint}")
        state_dict = torch.load(bin_path, map_location="cpu", weights_only=True)
    return GPT.from_hf_gpt2(state_dict, config)


def save_pretrained(model: GPT, path):
    """Write `config.json` + `pytorch_model.bin` in the Hugging Face GPT-2 layout (atomic writes)."""
    atomic_write_text(os.path.join(path, "config.json"), json.dumps(config_to_hf(model.config), indent=2))
    state_dict = model.to_hf_gpt2()
    atomic_write(os.path.join(path, "pytorch_model.bin"), lambda f: torch.save(state_dict, f))


__all__ = ["GPT", "GPTConfig", "KVCache", "load_pretrained", "save_pretrained", "config_from_hf",
           "config_to_hf"]
