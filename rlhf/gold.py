"""The gold oracle's view of a policy during training: measured on held-out prompts, never trained on.

    evaluator = GoldEvaluator(n_prompts=200, seed=0, max_new_tokens=32)   # fixed val prompts of the world
    res = evaluator(model, tokenizer)                       # greedy: {"gold", "per_family", "per_h", "stop_rate", "rows"}
    res = evaluator(model, tokenizer, temperature=1.0)      # sampled (seeded: the same draws for every model)
    vs = evaluator.versus(policy, sft_model, tokenizer)     # greedy and sampled gold vs the reference, KL
    print(evaluator.format_versus(vs, "DPO"))

The training stages (rlhf.sft, rlhf.ppo, rlhf.dpo, rlhf.grpo) never import this module nor the oracle
(tests/test_layers.py checks it): the caller — the pipeline, or the stage's own `main()` — builds a
GoldEvaluator and hands it to `train_x(cfg, evaluator)`, so a reader of ppo.py can see that the policy
cannot touch the judge. What the stage receives is numbers for its logs, not a signal it optimises.

The oracle itself is rlhf.world.score(conversation, response, stopped) in [0, 1] with partial credit
(rlhf/world/oracle.py); a response that never said <|end|> is scored with stopped=False.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from rlhf.rollout import generate_responses, response_logits, sample_batches
from rlhf.stats import bootstrap_ci, paired_bootstrap_ci, win_rates
from rlhf.world import make_prompts, score


def gold_scores(rows: list[dict]) -> list[float]:
    """The oracle on rows that carry "prompt" (the conversation), "response" (text) and "stopped"."""
    return [float(score(r["prompt"], r["response"], stopped=r["stopped"])) for r in rows]


def kl_to_reference(model, ref_model, tokenizer, conversations: list, max_new_tokens: int,
                    batch_size: int = 64, seed: int = 0, temperature: float = 1.0) -> dict:
    """KL(pi || pi_ref) per response on samples y ~ pi (the penalty of InstructGPT eq. 2), in nats:

        KL = E_{x, y ~ pi} [ sum_t KL( pi(. | x, y_<t) || pi_ref(. | x, y_<t) ) ]
           = E_{x, y ~ pi} [ sum_t sum_v pi(v | ...) (log pi(v | ...) - log pi_ref(v | ...)) ]

    Both models give the whole next-token distribution at every position of a sample, so each position
    contributes its exact KL over the vocabulary (>= 0), and each response the sum of those: an unbiased
    estimate of the sequence KL that is never negative and has less variance than the sampled log-ratio
    sum_t log pi(y_t) - log pi_ref(y_t) (which can come out below 0 by chance; it is kept as
    "sampled_estimate"). Both models share the tokenizer (the policy descends from the reference).
    Returns {"mean", "ci", "per_token", "sampled_estimate", "estimator"}.
    """
    kls, sampled, n_tok = [], [], 0
    for _, s in sample_batches(model, tokenizer, conversations, max_new_tokens, temperature, batch_size, seed,
                               return_logprobs=True, per_prompt=True):
        with torch.no_grad():
            logp = response_logits(model, s.sequences, s.attention_mask, s.prompt_length, temperature).log_softmax(-1)
            ref = response_logits(ref_model, s.sequences, s.attention_mask, s.prompt_length, temperature).log_softmax(-1)
        exact = (logp.exp() * (logp - ref)).sum(-1).clamp(min=0.0) * s.response_mask   # (B, N), >= 0 up to rounding
        ref_lp = ref.gather(-1, s.response[..., None]).squeeze(-1)                     # (B, N)
        kls += exact.sum(-1).tolist()                                                   # (B,) one sample per response
        sampled += ((s.gen_logprobs - ref_lp) * s.response_mask).sum(-1).tolist()
        n_tok += int(s.response_mask.sum().item())
    mean, lo, hi = bootstrap_ci(kls, seed=seed)
    return {"mean": mean, "ci": [lo, hi], "per_token": float(np.sum(kls) / max(n_tok, 1)),
            "sampled_estimate": float(np.mean(sampled)) if sampled else float("nan"),
            "estimator": "exact per-token KL over the vocabulary, summed over each sampled response"}


class GoldEvaluator:
    """Gold score of a policy's answers to a fixed set of held-out world prompts (the val split by default:
    stages tune on val; the pipeline's final evaluation uses test)."""

    def __init__(self, n_prompts: int, seed: int = 0, max_new_tokens: int = 48, batch_size: int = 64,
                 split: str = "val"):
        self.examples = make_prompts(split, n_prompts, seed=seed)
        self.seed, self.max_new_tokens, self.batch_size = seed, max_new_tokens, batch_size

    @property
    def conversations(self) -> list:
        return [ex.conversation for ex in self.examples]

    def __call__(self, model, tokenizer, temperature: float = 0.0, seed: int | None = None) -> dict:
        """The oracle's verdict on `model`'s answers: greedy at temperature 0, else sampled with one random
        stream per prompt seeded by (seed, default self.seed; the prompt's index), so that two models are
        compared on common random numbers (identical models give identical answers).

        Returns {"gold": mean score in [0, 1], "per_family": {family: mean}, "per_h": {h: mean},
        "stop_rate": share of responses that ended with <|end|>, "n": number of prompts,
        "rows": [{"family", "h", "prompt", "gold_answer", "response", "stopped", "score"}]}.
        """
        replies = generate_responses(model, tokenizer, self.conversations, self.max_new_tokens, temperature,
                                     self.batch_size, self.seed if seed is None else seed, per_prompt=True)
        rows, by_family, by_h = [], defaultdict(list), defaultdict(list)
        for ex, r in zip(self.examples, replies):
            s = score(ex.conversation, r["response"], stopped=r["stopped"])
            by_family[ex.family].append(s)
            by_h[ex.h].append(s)
            rows.append({"family": ex.family, "h": ex.h, "prompt": ex.conversation[-1]["content"],
                         "gold_answer": ex.gold, "response": r["response"], "stopped": r["stopped"], "score": s})
        n = len(rows)
        return {"gold": sum(r["score"] for r in rows) / max(n, 1),
                "per_family": {k: sum(v) / len(v) for k, v in sorted(by_family.items())},
                "per_h": {k: sum(v) / len(v) for k, v in sorted(by_h.items())},
                "stop_rate": sum(r["stopped"] for r in rows) / max(n, 1), "n": n, "rows": rows}

    def versus(self, policy, reference, tokenizer, kl: bool = True) -> dict:
        """The oracle's verdict on `policy` against `reference` (the SFT model) on the same prompts.

        For greedy and sampled (temperature 1, the same seed for both models) answers: the mean gold score
        of each, the paired difference with its 95% bootstrap CI, win/tie/loss counts and the win rate over
        non-tied prompts, stop rates and per-family scores. With kl=True also KL(policy || reference) per
        response on sampled answers (kl_to_reference).
        """
        out: dict = {"n_prompts": len(self.examples)}
        for decoding, temperature in (("greedy", 0.0), ("sampled", 1.0)):
            pol = self(policy, tokenizer, temperature)
            ref = self(reference, tokenizer, temperature)
            a, b = [r["score"] for r in pol["rows"]], [r["score"] for r in ref["rows"]]
            diff, lo, hi = paired_bootstrap_ci(a, b, seed=self.seed)
            wr = win_rates(a, b, seed=self.seed)
            out[decoding] = {"gold": pol["gold"], "sft_gold": ref["gold"], "gold_diff": diff, "gold_diff_ci": [lo, hi],
                             "wins": wr["wins"], "ties": wr["ties"], "losses": wr["losses"],
                             "win_rate": wr["win_rate"], "stop_rate": pol["stop_rate"],
                             "sft_stop_rate": ref["stop_rate"], "per_family": pol["per_family"],
                             "sft_per_family": ref["per_family"], "samples": pol["rows"][:4]}
        if kl:
            k = kl_to_reference(policy, reference, tokenizer, self.conversations, self.max_new_tokens,
                                self.batch_size, self.seed)
            out["kl"] = k["mean"]
            out["kl_ci"] = k.get("ci")
        return out

    @staticmethod
    def format_versus(g: dict, name: str) -> str:
        """Two lines: greedy and sampled gold of `name` vs SFT, the difference with its CI, and the win counts."""
        lines = []
        for d in ("greedy", "sampled"):
            r = g[d]
            lines.append(f"  {d:<8} gold {name} {r['gold']:.3f} vs SFT {r['sft_gold']:.3f}: "
                         f"diff {r['gold_diff']:+.3f} [{r['gold_diff_ci'][0]:+.3f}, {r['gold_diff_ci'][1]:+.3f}], "
                         f"W/T/L {r['wins']}/{r['ties']}/{r['losses']} (non-tied win rate {_rate(r['win_rate'])}), "
                         f"stop {r['stop_rate']:.2f} vs {r['sft_stop_rate']:.2f}")
        if g.get("kl") is not None:
            lines.append(f"  KL({name} || SFT) = {g['kl']:.2f} nats per response (exact per-token KL on sampled answers)")
        return "\n".join(lines)


def _rate(x) -> str:
    """A win rate for printing: n/a when every pair tied (the rate is undefined then)."""
    return "n/a" if x is None else f"{x:.2f}"
