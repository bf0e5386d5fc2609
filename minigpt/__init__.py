"""minigpt: a small GPT-2 written out by hand — model, tokenizer, sampler, training skeleton.

    from minigpt import GPT, GPTConfig
"""

from minigpt.config import GPTConfig

__all__ = ["GPT", "GPTConfig", "load_pretrained"]


def __getattr__(name):
    if name in ("GPT", "load_pretrained"):
        from minigpt import model  # local import: PEP 562 lazy import, so `import minigpt.tokenizer` skips torch
        return getattr(model, name)
    raise AttributeError(f"module 'minigpt' has no attribute {name!r}")
