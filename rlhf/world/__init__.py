"""rlhf.world: the synthetic instruction world — task families, gold oracle, corpus, simulated labelers.

    python -m rlhf.world sample --n 5 [--family reverse]  # prompts, gold and perturbed answers, scores
    python -m rlhf.world export --out runs/x/data         # corpus, demonstrations, prompts, rankings
    python -m rlhf.world agreement --temperature 0.5      # simulated labelers vs the gold order

    facts.py     the fictional fact table and small vocabularies
    tasks.py     14 task families (helpful / honest / harmless), templates that generate *and* parse,
                 make_prompts with hash-based train / val / test splits
    oracle.py    score(conversation, response, stopped) -> [0, 1]: the rules, with worked examples
    corpus.py    plain declarative pretraining text of the same world (no chat, no assistant style)
    labelers.py  imperfect demonstrations (LabelerConfig) and Bradley-Terry rankings (rank)
"""

from rlhf.world.tasks import (ADMISSION, DEFAULT_WEIGHTS, FAMILIES, FAMILY, H_OF, REFUSAL, SPLITS, Example,
                              Spec, canonical_text, make_example, make_prompts, parse, split_of)
from rlhf.world.oracle import classify, score, score_details
from rlhf.world.corpus import corpus
from rlhf.world.labelers import (DEFAULT_TEMPERATURE, DEFAULT_TIE_TOL, PERTURBATIONS, LabelerConfig,
                                 demonstrate, label_agreement, make_demonstrations, make_rankings,
                                 pairwise_agreement, perturb, rank, twin)

__all__ = ["ADMISSION", "DEFAULT_WEIGHTS", "FAMILIES", "FAMILY", "H_OF", "REFUSAL", "SPLITS", "Example",
           "Spec", "canonical_text", "make_example", "make_prompts", "parse", "split_of", "classify",
           "score", "score_details", "corpus", "DEFAULT_TEMPERATURE", "DEFAULT_TIE_TOL", "PERTURBATIONS",
           "LabelerConfig", "demonstrate", "label_agreement", "make_demonstrations", "make_rankings",
           "pairwise_agreement", "perturb", "rank", "twin"]
