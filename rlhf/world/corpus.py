"""Pretraining text from the instruction world: plain declarative sentences, never a chat.

The base model should *know* the world (facts, what reversing or sorting does, sums) without having
seen anyone ask or answer: no questions, no "Sure! The answer is", no refusals or admissions, no role
tokens. That is the gap SFT and RLHF close (InstructGPT, section 1).

    >>> print(corpus(120, seed=0))      # doctest: +SKIP
    The capital of Quon is Dasha. Spelled backwards, river is revir. 3 plus 4 is 7. ...

Unknown countries, things and animals (facts.UNKNOWN_*) never appear, so "I don't know" has to be
learned from the alignment data. A few MB take about a second:

    python -m rlhf.world export --out runs/x/data      # writes corpus.txt among the other files
"""

from __future__ import annotations

import random

from rlhf.world import facts as F


def _capital(r):
    c = r.choice(sorted(F.CAPITALS))
    return r.choice([f"The capital of {c} is {F.CAPITALS[c]}.", f"{F.CAPITALS[c]} is the capital of {c}.",
                     f"{c} has its capital in {F.CAPITALS[c]}."])


def _opposite(r):
    a = r.choice(sorted(F.OPPOSITES))
    return r.choice([f"The opposite of {a} is {F.OPPOSITES[a]}.", f"{a.capitalize()} is the opposite of {F.OPPOSITES[a]}."])


def _colour(r):
    t = r.choice(sorted(F.COLOURS))
    return r.choice([f"A {t} is {F.COLOURS[t]}.", f"The colour of a {t} is {F.COLOURS[t]}.",
                     f"Every {t} is {F.COLOURS[t]}."])


def _sound(r):
    a = r.choice(sorted(F.SOUNDS))
    return r.choice([f"A {a} says {F.SOUNDS[a]}.", f"The sound a {a} makes is {F.SOUNDS[a]}.",
                     f"You can hear a {a} {F.SOUNDS[a]}."])


def _reverse(r):
    w = r.choice(F.ALL_WORDS)
    return r.choice([f"Reversed, {w} is {w[::-1]}.", f"Spelled backwards, {w} is {w[::-1]}.",
                     f"The word {w} written backwards is {w[::-1]}."])


def _upper(r):
    ws = " ".join(r.sample(F.WORDS[3] + F.WORDS[4] + F.WORDS[5], r.randint(1, 3)))
    return r.choice([f"In capital letters, {ws} is {ws.upper()}.", f"Written in uppercase, {ws} is {ws.upper()}."])


def _letters(r):
    w = r.choice(F.ALL_WORDS)
    k = r.random()
    if k < 0.4:
        return f"The first letter of {w} is {w[0]}."
    if k < 0.8:
        return f"The last letter of {w} is {w[-1]}."
    ws = r.sample(F.ALL_WORDS, r.randint(3, 4))
    return f"The first letters of {' '.join(ws)} make {''.join(x[0] for x in ws)}."


def _repeat(r):
    w, n = r.choice(F.ALL_WORDS), r.randint(2, 5)
    return f"{w.capitalize()} written {n} times is {' '.join([w] * n)}."


def _arith(r):
    k = r.random()
    if k < 0.45:
        a, b = (r.randint(0, 9), r.randint(0, 9)) if r.random() < 0.6 else (r.randint(10, 49), r.randint(1, 30))
        return r.choice([f"{a} plus {b} is {a + b}.", f"The sum of {a} and {b} is {a + b}.",
                         f"Adding {a} and {b} gives {a + b}."])
    if k < 0.75:
        a, b = sorted([r.randint(0, 49), r.randint(0, 30)], reverse=True)
        return f"{a} minus {b} is {a - b}."
    a, b = r.randint(2, 12), r.randint(2, 9)
    return r.choice([f"{a} times {b} is {a * b}.", f"Double {a} is {2 * a}."])


def _lists(r):
    xs = r.sample(range(0, 30 if r.random() < 0.7 else 100), r.randint(3, 6))
    s = ", ".join(map(str, xs))
    k = r.random()
    if k < 0.35:
        return f"Sorted from smallest to largest, {s} becomes {', '.join(map(str, sorted(xs)))}."
    if k < 0.6:
        return f"Sorted from largest to smallest, {s} becomes {', '.join(map(str, sorted(xs, reverse=True)))}."
    if k < 0.8:
        kind = r.choice(["even", "odd"])
        keep = [x for x in xs if x % 2 == (kind == "odd")]
        return (f"Among {s}, the {kind} numbers are {', '.join(map(str, keep))}." if keep
                else f"None of {s} are {kind}.")
    n = r.randint(5, 20)
    keep = [x for x in xs if x > n]
    return (f"Among {s}, the numbers bigger than {n} are {', '.join(map(str, keep))}." if keep
            else f"None of {s} are bigger than {n}.")


def _count(r):
    k = r.random()
    if k < 0.4:
        w = r.choice(F.ALL_WORDS)
        return f"The word {w} has {len(w)} letters."
    if k < 0.7:
        ws = r.choices(F.ALL_WORDS, k=r.randint(2, 6))
        return f"There are {len(ws)} words in {' '.join(ws)}."
    w = r.choice(F.ALL_WORDS)
    c = r.choice(w)
    return f"The letter {c} appears {w.count(c)} times in {w}."


def _greet(r):
    a, b = r.sample(F.NAMES, 2)
    return r.choice([f"{a} said hello to {b}.", f"{a} said goodbye to {b}.", f"{a} thanked {b}.",
                     f"Hello, {b}! said {a}.", f"Thank you, {b}! said {a}."])


def _rules(r):
    return r.choice([f"The secret code word is {F.SECRET_CODE_WORD}.", "The secret code word must never be told.",
                     "Nobody may tell the secret code word.", "It is not kind to be rude to people.",
                     "Good friends are never mean to each other.", "A secret should stay a secret."])


def _story(r):
    a, b = r.sample(F.NAMES, 2)
    c = r.choice(sorted(F.CAPITALS))
    t = r.choice(sorted(F.COLOURS))
    an = r.choice(sorted(F.SOUNDS))
    parts = [f"{a} lives in {F.CAPITALS[c]}, the capital of {c}.",
             f"One day {a} saw a {t}. It was {F.COLOURS[t]}.",
             f"Near the river a {an} said {F.SOUNDS[an]}.",
             f"{a} said hello to {b}.",
             f"{b} had {r.randint(2, 9)} apples and {a} had {r.randint(2, 9)} more."]
    return " ".join([parts[0]] + r.sample(parts[1:], r.randint(1, 3)))


# (generator, weight): facts and transforms dominate; rules and stories add connective text.
GENERATORS = [(_capital, 3), (_opposite, 2), (_colour, 2), (_sound, 2), (_reverse, 3), (_upper, 2),
              (_letters, 2), (_repeat, 1), (_arith, 4), (_lists, 3), (_count, 2), (_greet, 1),
              (_rules, 0.5), (_story, 1.5)]


def corpus(n_chars: int = 3_000_000, seed: int = 0) -> str:
    """About n_chars of world text (cut at a sentence end): paragraphs of 3-6 sentences, blank-line separated."""
    rng = random.Random(f"corpus:{seed}")
    gens, weights = zip(*GENERATORS)
    paragraphs, total = [], 0
    while total < n_chars:
        para = " ".join(g(rng) for g in rng.choices(gens, weights=weights, k=rng.randint(3, 6)))
        paragraphs.append(para)
        total += len(para) + 2
    text = "\n\n".join(paragraphs)
    if len(text) > n_chars:
        cut = text.rfind(".", 0, n_chars)
        text = text[:cut + 1] if cut > 0 else text[:n_chars]
    return text + "\n"
