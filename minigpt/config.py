"""GPTConfig: the six numbers (plus two switches) that fix a GPT's shape, and named presets.

    from minigpt.config import GPTConfig, model_preset
    cfg = model_preset("tiny", vocab_size=300)   # 2 layers, 2 heads, 32 wide, 64 context

Presets
- `tiny`  : unit tests and smoke runs (milliseconds per step on a laptop CPU).
- `small` : the shape of the pipeline's CPU default (4 layers, 128 wide; ~1M parameters + embeddings), with a
            256-token context (the pipeline trains it with 128).
- `gpt2`  : the 124M-parameter GPT-2 of Radford et al. (2019), for GPU users and for loading its weights.
"""

from dataclasses import dataclass, replace


@dataclass
class GPTConfig:
    vocab_size: int = 512       # number of token ids; normally set from the tokenizer (GPT-2's is 50257)
    block_size: int = 256       # longest sequence the model sees: the number of learned position embeddings
    n_layer: int = 4            # number of transformer blocks stacked in the residual stream
    n_head: int = 4             # attention heads per block; n_embd must be divisible by n_head
    n_embd: int = 128           # width of the residual stream (C); each head gets n_embd // n_head dims
    dropout: float = 0.0        # dropout on embeddings, attention weights and residual branches (0 for RLHF stages)
    bias: bool = True           # biases in Linear layers and LayerNorms, as GPT-2 has; False is a bit faster
    fused_attention: bool = True  # True: F.scaled_dot_product_attention; False: the explicit softmax(QK^T/sqrt(d))V
                                  # written out (same numbers to ~1e-6, easier to read and to step through)

    def __post_init__(self):
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if min(self.vocab_size, self.block_size, self.n_layer, self.n_head, self.n_embd) <= 0:
            raise ValueError(f"GPTConfig sizes must be positive: {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


MODEL_PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=64),
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=256),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),
}


def model_preset(name: str, **overrides) -> GPTConfig:
    """GPTConfig from a named preset, with keyword overrides: model_preset("tiny", vocab_size=300)."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(MODEL_PRESETS)}")
    cfg = GPTConfig(**MODEL_PRESETS[name])
    return replace(cfg, **overrides) if overrides else cfg
