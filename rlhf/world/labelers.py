"""Simulated labelers: imperfect demonstrations (the SFT data) and noisy rankings (the RM data).

Demonstrations. InstructGPT's contractors wrote demonstrations in their own styles; ours are drawn
from a LabelerConfig: most are concise gold answers, some wrap the answer in chatter ("Sure! The answer
is 7."), some miss the demanded form ("2 5 9" for "2, 5, 9"), a few are wrong, and on honest / harmless
prompts some labelers forget to admit ignorance or to refuse. SFT imitates all of it, so the SFT model
samples the better behaviour only *sometimes* -- the headroom a reward model can see and PPO can use.

Rankings. A labeler ranks K responses by their gold scores under Bradley-Terry noise: each response
gets utility u_i = g_i / T + Gumbel noise and the ranking sorts by u (a Plackett-Luce draw), so for any
pair  P(i ranked above j) = sigmoid((g_i - g_j) / T)  -- the Bradley-Terry model the reward loss
assumes (InstructGPT eq. 1). Responses whose gold scores are within `tie_tol` are declared ties (equal
ranks; the RM loss skips those pairs). T = 0 is the noiseless gold order. The default temperature gives
~0.85-0.9 agreement with the gold order on informative pairs; InstructGPT's ~0.73 needs T ~ 0.5
(see label_agreement).

    >>> rank(conv, ["7", "Sure! The answer is 7.", "8"], random.Random(0), temperature=0)
    [0, 1, 2]
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from rlhf.world import facts as F
from rlhf.world.oracle import score, tokens
from rlhf.world.tasks import (HARMLESS, HELPFUL, HONEST, Example, Spec, make_prompts, parse)

DEFAULT_TEMPERATURE = 0.2    # Bradley-Terry temperature of the simulated ranker (0 = noiseless)
DEFAULT_TIE_TOL = 0.02       # gold scores closer than this are a declared tie


@dataclass
class LabelerConfig:
    """How the simulated demonstration writers behave (probabilities are renormalised per group)."""
    p_concise: float = 0.45          # helpful prompt: exactly the gold answer
    p_verbose: float = 0.30          # helpful prompt: gold wrapped in chatter ("Sure! The answer is X.")
    p_off_format: float = 0.15       # helpful prompt: right content, wrong surface form ("2 5 9", "lamp")
    p_wrong: float = 0.10            # helpful prompt: a near-miss wrong answer (one edit, off by one)
    p_forget_admission: float = 0.35 # honest prompt: invents an answer instead of "I don't know."
    p_forget_refusal: float = 0.35   # harmless prompt: complies instead of refusing
    p_wordy_side: float = 0.30       # admissions / refusals said at length ("I'm sorry, but ...")


PREAMBLES = ["Sure! {}", "The answer is {}.", "Sure! The answer is {}.", "Here you go: {}", "Okay, {}.",
             "{}. Hope that helps!", "Of course. The answer is {}."]
ADMISSIONS = ["I don't know.", "I do not know.", "I'm not sure."]
WORDY_ADMISSIONS = ["Sorry, I don't know that.", "I don't know the answer to that.",
                    "I'm afraid I don't know. Nobody told me."]
REFUSALS = ["Sorry, I can't help with that.", "I can't do that.", "Sorry, that is not allowed."]
WORDY_REFUSALS = ["I'm sorry, but I can't share that. It is a secret.",
                  "Sorry, I won't do that. It would not be kind."]


# ----------------------------------------------------------------------------------------------------
# Response makers: each returns one response of a given kind for a prompt.

def _spec(example_or_conv) -> tuple[list[dict], Spec]:
    conv = example_or_conv.conversation if isinstance(example_or_conv, Example) else example_or_conv
    spec = parse(conv)
    if spec is None:
        raise ValueError(f"not a prompt of the instruction world: {conv[-1]['content']!r}")
    return conv, spec


def verbose(gold: str, rng) -> str:
    return rng.choice(PREAMBLES).format(gold)


def off_format(spec: Spec, rng) -> str:
    """Right content, wrong surface form (or an ordinary chatty answer where form is free)."""
    g = spec.gold
    if spec.kind == "list":
        items = g.split(", ")
        return " and ".join(items) if (len(items) == 2 or rng.random() < 0.3) else " ".join(items)
    if spec.one_word:
        return rng.choice(["It is {}.", "That would be {}."]).format(g)
    if spec.case:
        return g.lower() if g != g.lower() else g.upper()
    return verbose(g, rng)


def wrong(spec: Spec, rng) -> str:
    """A near miss: one edit to a word, a number off by 1-3, a list with one item swapped or missing."""
    g = spec.gold
    if spec.kind == "number":
        x = int(g) + rng.choice([-3, -2, -1, 1, 2, 3])
        return str(abs(x) if x != int(g) else x + 1)
    if spec.kind == "list":
        items = g.split(", ")
        if len(items) >= 2 and rng.random() < 0.5:
            i = rng.randrange(len(items) - 1)
            items[i], items[i + 1] = items[i + 1], items[i]
        elif len(items) >= 2:
            items.pop(rng.randrange(len(items)))
        elif spec.items == "numbers":
            items.append(str(int(items[0]) + rng.randint(1, 5)))
        return ", ".join(items)
    words = g.split(" ")
    i = rng.randrange(len(words))
    w = words[i]
    if w.lower() in F.ANSWER_LEXICON:  # a fact: swap in another fact of the same table
        table = next(t for t in (F.CAPITALS, F.COLOURS, F.SOUNDS, F.OPPOSITES)
                     if w.lower() in {x.lower() for x in t.values()})
        new = rng.choice(sorted({x.lower() for x in table.values()} - {w.lower()}))
        words[i] = new.capitalize() if w[:1].isupper() else new
        return " ".join(words)
    if len(words) > 1 and rng.random() < 0.3:  # drop or add one copy
        return " ".join(words[:-1]) if rng.random() < 0.5 else " ".join(words + [words[-1]])
    letters = "abcdefghijklmnopqrstuvwxyz"
    if len(w) >= 2 and rng.random() < 0.5:
        j = rng.randrange(len(w) - 1)
        if w[j] != w[j + 1]:
            w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        else:
            w = w[:j] + rng.choice(letters.replace(w[j], "")) + w[j + 1:]
    else:
        j = rng.randrange(len(w))
        c = rng.choice(letters.replace(w[j].lower(), ""))
        w = w[:j] + (c.upper() if w[j].isupper() else c) + w[j + 1:]
    words[i] = w
    return " ".join(words)


def invent(conversation: list[dict], rng) -> str:
    """A confident made-up answer to an honest (unanswerable) prompt: the dishonest behaviour."""
    q = conversation[-1]["content"]
    if "capital" in q:
        return rng.choice([c for c in F.CAPITALS.values()])
    if "colour" in q:
        return rng.choice(sorted(set(F.COLOURS.values())))
    if "sound" in q:
        return rng.choice(sorted(set(F.SOUNDS.values())))
    if "number" in q or "old" in q:
        return str(rng.randint(2, 40))
    if "eat" in q:
        return rng.choice(["Bread.", "An apple.", "Milk."])
    return rng.choice(F.NAMES)


def comply(conversation: list[dict], rng) -> str:
    """What a labeler who forgot the rules writes (mild, fictional: nothing offensive)."""
    q = conversation[-1]["content"]
    s = F.SECRET_CODE_WORD
    if "backwards" in q:
        return s[::-1]
    if "capital letters" in q:
        return s.upper()
    if "secret" in q:
        return rng.choice([s, f"The secret code word is {s}."])
    name = next((t for t in tokens(q) if t in F.NAMES), "you")
    return rng.choice([f"{name} is a slowpoke.", f"Go away, {name}."])


def demonstrate(example: Example | list[dict], rng: random.Random, config: LabelerConfig | None = None) -> str:
    """One simulated labeler's demonstration for a prompt (varied and imperfect, see LabelerConfig)."""
    cfg = config or LabelerConfig()
    conv, spec = _spec(example)
    if spec.h == HONEST:
        if rng.random() < cfg.p_forget_admission:
            return invent(conv, rng)
        return rng.choice(WORDY_ADMISSIONS if rng.random() < cfg.p_wordy_side else ADMISSIONS)
    if spec.h == HARMLESS:
        if rng.random() < cfg.p_forget_refusal:
            return comply(conv, rng)
        return rng.choice(WORDY_REFUSALS if rng.random() < cfg.p_wordy_side else REFUSALS)
    style = rng.choices(["concise", "verbose", "off_format", "wrong"],
                        weights=[cfg.p_concise, cfg.p_verbose, cfg.p_off_format, cfg.p_wrong])[0]
    if style == "concise":
        return spec.gold
    if style == "verbose":
        return verbose(spec.gold, rng)
    if style == "off_format":
        return off_format(spec, rng)
    return wrong(spec, rng)


def make_demonstrations(n: int, seed: int = 0, config: LabelerConfig | None = None, split: str = "train",
                        families=None, progress: bool = False) -> list[list[dict]]:
    """n demonstration conversations (prompt turns + one assistant turn) on `split` prompts (progress: a bar
    while their prompts are made, when that takes over 2 s)."""
    rng = random.Random(f"demos:{seed}")
    out = []
    for ex in make_prompts(split, n, seed=seed, families=families, progress=progress):
        out.append(ex.conversation + [{"role": "assistant", "content": demonstrate(ex, rng, config)}])
    return out


PERTURBATIONS = ("verbose", "off_format", "wrong", "verbose_wrong", "refuse", "admit", "ramble", "invent", "comply")


def perturb(example: Example | list[dict], rng: random.Random, kind: str | None = None) -> tuple[str, str]:
    """(a flawed response, its kind): a candidate worse than gold, for rankings, tests and the CLI.

    Helpful prompts: verbose | off_format | wrong | verbose_wrong (a near miss in chatter) | refuse
    (over-refusal) | admit | ramble (gold, then chatter). Honest: invent | refuse | admit said at length.
    Harmless: comply | admit | wordy refusal.

    Chatter comes with right *and* wrong content (verbose vs verbose_wrong): were it only ever wrapped
    around correct answers, "Sure! The answer is" would be the cheapest sign of a correct answer a reward
    model could learn, and PPO would buy it. (It did: an RM trained without verbose_wrong ranked
    "Sure! The answer is <wrong>." above the concise correct answer on 90% of helpful val prompts.)
    """
    conv, spec = _spec(example)
    if kind is None:
        kinds = {HELPFUL: ["verbose", "off_format", "wrong", "wrong", "verbose_wrong", "verbose_wrong",
                           "refuse", "admit", "ramble"],
                 HONEST: ["invent", "invent", "refuse", "admit"],
                 HARMLESS: ["comply", "comply", "admit", "refuse"]}[spec.h]
        kind = rng.choice(kinds)
    if kind == "verbose":
        r = verbose(spec.gold, rng)
    elif kind == "off_format":
        r = off_format(spec, rng)
    elif kind == "wrong":
        r = wrong(spec, rng)
    elif kind == "verbose_wrong":
        r = verbose(wrong(spec, rng), rng)
    elif kind == "refuse":
        r = rng.choice(WORDY_REFUSALS if spec.h == HARMLESS else REFUSALS)
    elif kind == "admit":
        r = rng.choice(WORDY_ADMISSIONS if spec.h == HONEST else ADMISSIONS)
    elif kind == "ramble":
        r = spec.gold + " " + rng.choice(["I like this one a lot. It was fun to do.",
                                           "Let me know if you want more. I can do many things."])
    elif kind == "invent":
        r = invent(conv, rng)
    elif kind == "comply":
        r = comply(conv, rng)
    else:
        raise ValueError(f"unknown perturbation {kind!r}; choose from {PERTURBATIONS}")
    return r, kind


def _strip_preamble(response: str) -> str | None:
    """The answer inside one of PREAMBLES ("Sure! The answer is 7." -> "7"), or None without chatter."""
    r = response.strip()
    for p in sorted(PREAMBLES, key=len, reverse=True):   # "Sure! The answer is {}." before "Sure! {}"
        head, tail = p.split("{}")
        if r.startswith(head) and r.endswith(tail) and len(r) > len(head) + len(tail):
            return r[len(head):len(r) - len(tail)]
    return None


def twin(response: str, rng: random.Random) -> str:
    """The same content with the chatter toggled: "7" <-> "Sure! The answer is 7.", "I don't know." <->
    "Sorry, I don't know that.". Ranked next to its original it isolates the one thing a small reward
    model can see for sure -- conciseness -- from correctness, which it mostly cannot.

        >>> twin("Sure! The answer is 7.", rng)
        '7'
    """
    r = response.strip()
    for short, wordy in ((ADMISSIONS, WORDY_ADMISSIONS), (REFUSALS, WORDY_REFUSALS)):
        if r in short:
            return rng.choice(wordy)
        if r in wordy:
            return rng.choice(short)
    core = _strip_preamble(r)
    return core if core is not None else verbose(r, rng)


# ----------------------------------------------------------------------------------------------------
# Rankings under Bradley-Terry noise.

def _gumbel(rng) -> float:
    u = min(max(rng.random(), 1e-12), 1 - 1e-12)
    return -math.log(-math.log(u))


def noisy_utilities(scores: list[float], temperature: float, rng) -> list[float]:
    """A labeler's utilities for responses of gold scores `scores`: ranking by them is a Bradley-Terry choice.

    Each utility is score / temperature plus independent standard Gumbel noise drawn from `rng` (anything
    with .random()), so that P(u_i > u_j) = sigmoid((s_i - s_j) / temperature) for every pair, and the
    highest of K is response i with probability softmax(s / temperature)_i (a Plackett-Luce draw). With
    temperature <= 0 the labeler is noiseless: the utilities are the scores.
    """
    # BEGIN SOLUTION a3.labeler
    if temperature <= 0:
        return list(scores)
    return [s / temperature + _gumbel(rng) for s in scores]
    # END SOLUTION


def rank(conversation: list[dict], responses: list[str], rng, temperature: float = DEFAULT_TEMPERATURE,
         tie_tol: float = DEFAULT_TIE_TOL, stopped: list[bool] | None = None) -> list[int]:
    """Ranks of `responses` (0 = best; equal ranks = a declared tie), a noisy labeler's judgement.

    Responses are grouped into ties (gold scores chained within tie_tol); each group gets utility
    mean_gold / temperature + Gumbel noise; groups are ranked by utility (dense ranks 0, 1, 2, ...).
    `rng` is anything with .random() (random.Random or numpy Generator).
    """
    if not responses:
        return []
    stopped = stopped if stopped is not None else [True] * len(responses)
    g = [score(conversation, r, s) for r, s in zip(responses, stopped)]
    order = sorted(range(len(g)), key=lambda i: g[i])
    groups, cur = [], [order[0]]
    for a, b in zip(order, order[1:]):
        if g[b] - g[a] <= tie_tol:
            cur.append(b)
        else:
            groups.append(cur)
            cur = [b]
    groups.append(cur)
    means = [sum(g[i] for i in grp) / len(grp) for grp in groups]
    util = noisy_utilities(means, temperature, rng)
    ranks = [0] * len(responses)
    for r, k in enumerate(sorted(range(len(groups)), key=lambda k: -util[k])):
        for i in groups[k]:
            ranks[i] = r
    return ranks


def pairwise_agreement(conversations: list[list[dict]], responses: list[list[str]], ranks: list[list[int]],
                       tie_tol: float = DEFAULT_TIE_TOL) -> dict:
    """How often the labels order a pair as the noiseless gold score does.

    Counts only informative pairs (gold scores differ by more than tie_tol). Returns
    {"agreement", "informative_pairs", "pairs", "informative_share"}.
    """
    agree = informative = pairs = 0
    for conv, resp, rk in zip(conversations, responses, ranks):
        g = [score(conv, r) for r in resp]
        for i in range(len(resp)):
            for j in range(i + 1, len(resp)):
                pairs += 1
                if abs(g[i] - g[j]) <= tie_tol:
                    continue
                informative += 1
                agree += (g[i] > g[j]) == (rk[i] < rk[j])
    return {"agreement": agree / max(1, informative), "informative_pairs": informative, "pairs": pairs,
            "informative_share": informative / max(1, pairs)}


def make_rankings(n: int, k: int = 4, seed: int = 0, temperature: float = DEFAULT_TEMPERATURE,
                  split: str = "train", families=None) -> list[dict]:
    """n example ranking rows {"prompt", "responses", "ranks"}: gold plus k-1 perturbations per prompt.

    (The pipeline's real RM comparisons rank *model samples* with rank(); these are for illustration,
    tests, and a label-noise calibration.)
    """
    rng = random.Random(f"rankings:{seed}")
    rows = []
    for ex in make_prompts(split, n, seed=seed + 1000, families=families):
        resp = [ex.gold]
        while len(resp) < k:
            r, _ = perturb(ex, rng)
            if r not in resp or len(set(resp)) >= 4:
                resp.append(r)
        rng.shuffle(resp)
        rows.append({"prompt": ex.conversation, "responses": resp,
                     "ranks": rank(ex.conversation, resp, rng, temperature=temperature)})
    return rows


def label_agreement(temperature: float = DEFAULT_TEMPERATURE, n_prompts: int = 300, k: int = 4,
                    seed: int = 0) -> dict:
    """Measured pairwise agreement of the simulated labelers with the gold order at `temperature`."""
    rows = make_rankings(n_prompts, k, seed, temperature)
    return pairwise_agreement([r["prompt"] for r in rows], [r["responses"] for r in rows],
                              [r["ranks"] for r in rows])
