"""The reward model r_θ(x, y): a GPT backbone with a scalar head, read at the last real token.

InstructGPT (Ouyang et al. 2022, §3.5) starts the reward model from the SFT model, removes the
unembedding layer and puts a scalar output in its place; the score of prompt x and response y is that
output at the last token of x ++ y:

    h = GPT(x ++ y)            (T, C)   final hidden states
    r_θ(x, y) = w · h[t*] + b           t* = the last real (non-padding) token

Trained by rlhf/reward_model.py (the stage); read by PPO, GRPO, best-of-N and evaluation through
rlhf.rollout.score_responses, which encodes a reply's text exactly as the stage encodes its
comparisons. This module is the model only, so that those readers depend on it and not on the stage.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import torch
import torch.nn as nn
from torch import Tensor

from minigpt import checkpoint as ckpt_io
from minigpt.config import GPTConfig
from minigpt.model import GPT


def last_token_values(values: Tensor, attention_mask: Tensor) -> Tensor:
    """values[b, t*] at each row's last real token t* = the largest t with attention_mask[b, t] = 1.

    values, attention_mask: (B, T) → (B,). Works for right padding, left padding and both (a left-
    padded prompt followed by a response and right padding, as generation returns it).
    Example: values [[1, 2, 3, 4]], mask [[0, 1, 1, 0]] → [3].  A row with no real token reads t = 0.
    """
    # BEGIN SOLUTION a3.last_token_values
    T = values.shape[1]
    positions = torch.arange(T, device=values.device).expand_as(values)          # (B, T)
    last = (positions * attention_mask.long()).max(dim=1).values                 # (B,)
    return values.gather(1, last[:, None]).squeeze(1)                            # (B,)
    # END SOLUTION


class RewardModel(nn.Module):
    """A GPT backbone (its LM head unused) and a scalar head: r(x, y) read at the last real token."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.backbone = GPT(config)
        self.head = nn.Linear(config.n_embd, 1)
        # Small init: at the start every response scores ~0 and no comparison is pre-judged.
        nn.init.normal_(self.head.weight, mean=0.0, std=0.1 / math.sqrt(config.n_embd))
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Per-token scalar (B, T): the head applied to every position's final hidden state."""
        h = self.backbone.hidden_states(idx, attention_mask=attention_mask)     # (B, T, C)
        return self.head(h).squeeze(-1)                                          # (B, T)

    def score(self, idx: Tensor, attention_mask: Tensor) -> Tensor:
        """The reward of each sequence, (B,): the per-token scalar at its last real token."""
        return last_token_values(self(idx, attention_mask), attention_mask)

    @torch.no_grad()
    def normalize_(self, offset: float) -> None:
        """Subtract `offset` from every reward (through the head's bias), e.g. the mean demo reward."""
        self.head.bias -= offset

    @classmethod
    def from_pretrained_gpt(cls, gpt: GPT) -> "RewardModel":
        """A RewardModel whose backbone is a copy of `gpt` (dropout off) and whose head is fresh."""
        model = cls(replace(gpt.config, dropout=0.0))
        model.backbone.load_state_dict(gpt.state_dict())
        return model

    @classmethod
    def from_sft(cls, run_dir: str, device="cpu"):
        """(RewardModel initialised from the GPT in run_dir, its tokenizer)."""
        gpt, tokenizer = ckpt_io.load_model(run_dir)
        return cls.from_pretrained_gpt(gpt).to(device), tokenizer

    def save(self, run_dir: str, tokenizer=None, extra: dict | None = None) -> str:
        """run_dir/model.pt (+ tokenizer.bpe): {"model": state_dict, "config": GPTConfig, "kind": ...}."""
        return ckpt_io.save_model(run_dir, self, tokenizer, extra={"kind": "reward_model", **(extra or {})})

    @classmethod
    def load(cls, run_dir: str, device="cpu") -> "RewardModel":
        """The RewardModel saved in run_dir (model.pt, or ckpt.pt of an unfinished run), in eval mode."""
        path = os.path.join(run_dir, ckpt_io.MODEL_FILE)
        if not os.path.exists(path):
            path = os.path.join(run_dir, ckpt_io.RESUME_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{run_dir}: no reward model ({ckpt_io.MODEL_FILE}); run rlhf.reward_model first")
        obj = ckpt_io.safe_load(path)
        if not any(k.startswith("backbone.") for k in obj["model"]):
            kind = (obj.get("kind") or "GPT language model").replace("_", " ")
            raise ckpt_io.CheckpointError(f"{path} holds a {kind} checkpoint, not a reward model "
                                          f"(point at the run directory of rlhf.reward_model)")
        model = cls(GPTConfig(**obj.get("model_config", obj.get("config"))))
        model.load_state_dict(obj["model"])
        return model.to(device).eval()


def load_reward_model(rm_dir: str | None, device="cpu"):
    """(RewardModel, tokenizer) from a reward-model run directory, or (None, None) when it has no model.pt."""
    if not rm_dir or not os.path.exists(os.path.join(rm_dir, ckpt_io.MODEL_FILE)):
        return None, None
    return RewardModel.load(rm_dir, device), ckpt_io.load_tokenizer(rm_dir)
