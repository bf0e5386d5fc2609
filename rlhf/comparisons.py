"""Comparison data from simulated labelers: the world's labelers rank candidate replies to a prompt.

    rows = simulate_rankings("train", 2000, [("sft", sft_model, [1.0, 1.6])], tokenizer, LabelingConfig())
    # rows[i] = {"prompt": conversation, "responses": [K texts], "ranks": [K ints, 0 = best], ...}

InstructGPT (Ouyang et al. 2022, §3.4) had labelers rank K = 4..9 outputs of several models per prompt.
Here a prompt's candidates are the labeler's own demonstration, flawed answers of the world
(world.perturb), one sample per (policy, temperature), and — so that chatter is no cue of correctness —
each candidate again with its chatter toggled (world.twin). A simulated labeler ranks them under
Bradley–Terry noise (rlhf.world.labelers). The reward-model stage trains on these rows; DPO trains on
their non-tied pairs. Both stages import this module; neither imports the other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from minigpt.model import GPT
from rlhf import world
from rlhf.rollout import generate_responses, sampling_generator


@dataclass
class LabelingConfig:
    """How comparisons are simulated (rlhf.reward_model.RMConfig has the same fields and can stand in)."""
    data_seed: int = 0               # seed of prompts, demonstrations, sampling and labels
    include_demo: bool = True        # the labeler's demonstration is one of the K candidates
    n_perturbed: int = 1             # extra candidates per prompt: the world's flawed answers (world.perturb)
    twins: bool = True               # every candidate also appears with its chatter toggled (world.twin): K doubles
    max_new_tokens: int = 32         # length limit of sampled candidates (no stop token by then = not stopped)
    gen_batch_size: int = 256        # prompts per generation batch (bigger batches sample faster on a CPU)
    label_temperature: float = -1.0  # labelers' Bradley-Terry noise; < 0 = the world's default
    progress: bool = True            # progress bars while sampling


@torch.no_grad()
def sample_responses(model: GPT, tokenizer, conversations: list[list[dict]], temperature: float,
                     max_new_tokens: int, seed, batch_size: int = 64, desc: str = "sample",
                     progress: bool = True) -> list[tuple[str, bool]]:
    """One sampled reply per conversation: [(text up to the first <|end|>, stopped), ...] (rlhf.rollout),
    each batch with its own generator seeded by (seed, batch start), so a batch's samples do not depend
    on the batch size of earlier batches' runs."""
    out = []
    for start in tqdm(range(0, len(conversations), batch_size), desc=desc, leave=False, dynamic_ncols=True,
                      disable=not progress):
        g = sampling_generator(model, 0, seed, start)
        replies = generate_responses(model, tokenizer, conversations[start:start + batch_size], max_new_tokens,
                                     temperature, batch_size, generator=g)
        out += [(r["response"], r["stopped"]) for r in replies]
    return out


def simulate_rankings(split: str, n_prompts: int, policies: list[tuple[str, GPT, list[float]]], tokenizer,
                      cfg: LabelingConfig, n_labelers: int = 1, gold: Callable | None = None) -> list[dict]:
    """Rows of a rankings JSONL file for n_prompts prompts of `split` of the instruction world.

    Candidates of each prompt: the labeler's demonstration (cfg.include_demo), cfg.n_perturbed flawed
    answers of the world (world.perturb), and one sample per (policy, temperature); with cfg.twins each
    of them also appears with its chatter toggled ("7" <-> "Sure! The answer is 7."), so that chatter,
    which labelers' demonstrations wrap around *correct* answers, is no cue of correctness. A simulated
    labeler ranks them (0 = best, equal = tie). Extra keys kept for
    evaluation only (never used in training): family, h, source, stopped, ranks_2 (a second independent
    labeler's ranking, n_labelers = 2, which measures the ceiling) and, when the caller hands in the
    judge `gold(conversation, response, stopped) -> [0, 1]` (rlhf.gold.score), gold: its scores.
    """
    examples = world.make_prompts(split, n_prompts, seed=cfg.data_seed, progress=cfg.progress)
    convs = [ex.conversation for ex in examples]
    cands: list[list[tuple[str, bool, str]]] = [[] for _ in examples]   # (text, stopped, source)
    if cfg.include_demo:
        rng = random.Random(f"rm-demo:{cfg.data_seed}:{split}")
        for c, ex in zip(cands, examples):
            c.append((world.demonstrate(ex, rng), True, "demo"))
    rng = random.Random(f"rm-perturb:{cfg.data_seed}:{split}")
    for c, ex in zip(cands, examples):
        for _ in range(cfg.n_perturbed):
            c.append((world.perturb(ex, rng)[0], True, "perturbed"))
    for name, model, temps in policies:
        for k, t in enumerate(temps):
            samples = sample_responses(model, tokenizer, convs, t, cfg.max_new_tokens, (cfg.data_seed, split, name, k),
                                       cfg.gen_batch_size, desc=f"{split}: {name} T={t:g}", progress=cfg.progress)
            for c, (text, stopped) in zip(cands, samples):
                c.append((text, stopped, f"{name}@{t:g}"))
    if cfg.twins:   # same content, chatter toggled: chatter then says nothing about correctness
        rng = random.Random(f"rm-twin:{cfg.data_seed}:{split}")
        for c in cands:
            c += [(world.twin(text, rng), stopped, f"{source}+twin") for text, stopped, source in list(c)]
    label_kw = {} if cfg.label_temperature < 0 else {"temperature": cfg.label_temperature}
    labelers = [random.Random(f"rm-label:{cfg.data_seed}:{split}:{i}") for i in range(n_labelers)]
    rows = []
    for ex, c in zip(examples, cands):
        responses = [text for text, _, _ in c]
        stopped = [s for _, s, _ in c]
        row = {"prompt": ex.conversation, "responses": responses,
               "ranks": [int(r) for r in world.rank(ex.conversation, responses, labelers[0], stopped=stopped,
                                                    **label_kw)],
               "family": ex.family, "h": ex.h, "source": [s for _, _, s in c], "stopped": stopped}
        if gold is not None:
            row["gold"] = [round(gold(ex.conversation, r, stopped=s), 6) for r, s in zip(responses, stopped)]
        if n_labelers > 1:
            row["ranks_2"] = [int(r) for r in world.rank(ex.conversation, responses, labelers[1], stopped=stopped,
                                                         **label_kw)]
        rows.append(row)
    return rows
