"""One-command experiments on a finished pipeline run (`python -m rlhf.pipeline` writes one):

    python -m rlhf.experiments NAME [--run=RUN] [--out=DIR] [--key=value ...]     # --help lists NAME's options

    overoptimisation  proxy RM and gold score against sqrt(KL) for PPO with a weak fixed β and for
                      best-of-N (Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization")
    rm_scaling        what the reward model needs: held-out accuracy (vs the labelers' ceiling) and the
                      right-vs-near-miss probe against the number of comparisons and the RM's size, and
                      PPO's gold gain with some of those RMs
    rounds            iterated RLHF: rounds of PPO -> fresh comparisons of the current policy -> RM update
    seeds             the headline table (base, SFT, best-of-N, PPO, GRPO, DPO) over training seeds: the
                      run's recipe trained again with other seeds, judged on the same test prompts

Each reads RUN's sft/, reward_model/, tokenizer/, data/ without changing them (seeds adds its judgements
of the run's models to the evaluation cache RUN/eval, as `python -m rlhf.evaluate RUN` does), and writes
OUT (default RUN/experiments/NAME): metrics.json, NAME.png and report.md with the reading of the measured
numbers.
"""
