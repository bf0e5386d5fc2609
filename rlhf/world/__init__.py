"""rlhf.world: the synthetic instruction world — task families, gold oracle, corpus, simulated labelers.

    python -m rlhf.world sample --n 5               # prompts, gold answers, perturbed answers, scores
    python -m rlhf.world export --out runs/x/data   # corpus, demonstrations, prompts, rankings (JSONL)

See tasks.py (families and splits), oracle.py (the scoring rules with worked examples), corpus.py
(pretraining text) and labelers.py (demonstrations and Bradley-Terry rankings).
"""

from rlhf.world.tasks import (ADMISSION, FAMILIES, FAMILY, H_OF, REFUSAL, SPLITS, Example, Spec,
                              canonical_text, make_example, make_prompts, parse, split_of)
from rlhf.world.oracle import classify, score, score_details
from rlhf.world.corpus import corpus
from rlhf.world.labelers import (DEFAULT_TEMPERATURE, LabelerConfig, demonstrate, label_agreement,
                                 make_demonstrations, make_rankings, pairwise_agreement, perturb, rank)
