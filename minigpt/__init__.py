"""minigpt: a small GPT-2 written out by hand — model, tokenizer, sampler, training skeleton.

    from minigpt import GPT, GPTConfig
"""

__all__ = ["GPT", "GPTConfig", "load_pretrained"]


def __getattr__(name):
    # Lazy imports (PEP 562): `import minigpt.tokenizer` should not pay for torch.
    if name == "GPTConfig":
        from minigpt.config import GPTConfig
        return GPTConfig
    if name in ("GPT", "load_pretrained"):
        from minigpt import model
        return getattr(model, name)
    raise AttributeError(f"module 'minigpt' has no attribute {name!r}")
