"""Stage 1 on the instruction world: pretrain a GPT on the world's plain-text corpus.

    python -m rlhf.pretrain --preset default                       # 2-5 min on 2 CPU cores
    python -m rlhf.pretrain --preset tiny --out_dir=/tmp/tiny       # a smoke run of seconds
    python -m rlhf.pretrain --out_dir=runs/default/pretrain --resume         # continue an interrupted run
    torchrun --standalone --nproc_per_node=2 -m rlhf.pretrain --preset tiny   # data parallel (DDP)

The training itself is minigpt.train.train_pretrain (next-token prediction, Radford et al. 2019 eq. 1);
this module only supplies the text: the world's corpus (rlhf.world.corpus), which states the world's
facts in plain prose but never in the instruction format, so the base model knows facts yet does not
follow instructions — the gap InstructGPT's later stages close. With --data it trains on that file
instead, exactly as `python -m minigpt.train --data=FILE` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from minigpt.configurator import parse_config, utf8_console
from minigpt.train import PRESETS as LM_PRESETS
from minigpt.train import TrainConfig, load_text, train_pretrain
from minigpt.trainer import run_entry_point
from rlhf.world import corpus


@dataclass
class WorldPretrainConfig(TrainConfig):
    """Pretraining on the instruction world's corpus (or on --data)."""
    corpus_chars: int = 3_000_000    # size of the world corpus to generate (ignored with --data); default
                                     # preset's tuning: 0.4M overfit (24 epochs)
    corpus_seed: int = 0             # seed of the world corpus


PRESETS: dict[str, dict] = {
    "tiny": dict(LM_PRESETS["tiny"], corpus_chars=20_000),   # CI smoke run: a few seconds
    "small": dict(LM_PRESETS["small"], corpus_chars=800_000),   # the course's student-scale run
    "default": dict(LM_PRESETS["default"]),                  # the CPU default: 2-5 minutes on 2 cores
}


def world_text(cfg: WorldPretrainConfig) -> str:
    """The training text: --data's file, or the world's corpus of cfg.corpus_chars characters."""
    return load_text(cfg) if cfg.data else corpus(cfg.corpus_chars, seed=cfg.corpus_seed)


def train_world_pretrain(cfg: WorldPretrainConfig) -> dict:
    """minigpt.train.train_pretrain on world_text(cfg)."""
    return train_pretrain(cfg, text=world_text(cfg))


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(WorldPretrainConfig, argv, PRESETS, prog="python -m rlhf.pretrain")
    return run_entry_point(train_world_pretrain, cfg)


if __name__ == "__main__":
    utf8_console()
    main()
