"""The experiments' command line: `python -m rlhf.experiments NAME [--key=value ...]`.

    python -m rlhf.experiments --help                                   # the experiments
    python -m rlhf.experiments overoptimisation --help                  # one experiment's options
    python -m rlhf.experiments rm_scaling --run=runs/default --out=runs/exp/rm_scaling

NAME is a module of this package, rlhf.experiments.NAME, whose `main(argv) -> dict` gets the rest of
the command line (parsed there by minigpt.configurator.parse_config). Modules are imported only when
chosen, so one experiment's absence or import cost never touches the others.
"""

from __future__ import annotations

import importlib
import sys

from minigpt.configurator import utf8_console

EXPERIMENTS = {
    "overoptimisation": "proxy RM and gold score vs sqrt(KL): PPO at a weak fixed β, and best-of-N (Gao et al. 2022)",
    "rm_scaling": "RM accuracy, ceiling and right-vs-near-miss probe vs comparisons and RM size; PPO with some RMs",
    "rounds": "iterated RLHF: rounds of PPO -> fresh comparisons of the current policy -> reward-model update",
    "seeds": "the headline table (base, SFT, best-of-N, PPO, GRPO, DPO) over training seeds, with the spread",
}
USAGE = "usage: python -m rlhf.experiments NAME [--run=RUN] [--out=DIR] [--key=value ...] [--help]"


def help_text() -> str:
    w = max(map(len, EXPERIMENTS))
    return "\n".join([USAGE, "", "One-command experiments on a finished `python -m rlhf.pipeline` run.", "",
                      "experiments:"] + [f"  {k:<{w}}  {v}" for k, v in EXPERIMENTS.items()] +
                     ["", "python -m rlhf.experiments NAME --help lists NAME's options (and its presets)."])


def main(argv: list[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(help_text())
        return None
    if not argv or argv[0].startswith("-"):
        raise SystemExit(f"error: name an experiment first ({', '.join(EXPERIMENTS)}); "
                         f"python -m rlhf.experiments --help lists them")
    name = argv[0].replace("-", "_")
    if name not in EXPERIMENTS:
        raise SystemExit(f"error: unknown experiment {argv[0]!r}; choose one of: {', '.join(EXPERIMENTS)}")
    module_name = f"rlhf.experiments.{name}"
    try:
        # local import: each experiment loads only when chosen (and may not exist yet in a checkout)
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise SystemExit(f"error: experiment {name!r} is not available here ({module_name} is missing)") from None
    return module.main(argv[1:])


if __name__ == "__main__":
    utf8_console()
    main()
