"""Speed of one PPO iteration on a finished run: seconds per phase (rollout, score, update) and what
dropping the all-padding columns (rlhf.ppo.trim_padding) saves in the update. Prints figures; asserts nothing.

    python -m bench.ppo --run=runs/default          # after `python -m rlhf.pipeline` (its sft/ and reward_model/)
    python -m bench.ppo --run=runs/default --iters=5 --threads=1

A rollout pads prompts to the batch's longest and responses to the batch's longest response; a
micro-batch of the update then holds columns that are padding in every one of its rows. The "full"
figure runs the same micro-batches of the same rollout without trimming them, so the ratio is the
update's speed-up from trimming each micro-batch (the losses and gradients are the same: tests/test_ppo.py);
the rollout's own cut to its longest response helps both figures, and the scoring forwards too.
"""

import argparse
import os
import time
from dataclasses import replace

import torch

from minigpt.train import configure_optimizer, make_generator
from rlhf import data as D
from rlhf import ppo


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.ppo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="runs/default", help="pipeline run directory with sft/ and reward_model/")
    ap.add_argument("--iters", type=int, default=3, help="PPO iterations timed (after one warm-up iteration)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    sft_dir, rm_dir = os.path.join(args.run, "sft"), os.path.join(args.run, "reward_model")
    for d in (sft_dir, rm_dir):
        if not os.path.exists(os.path.join(d, "model.pt")):
            raise SystemExit(f"error: {d}/model.pt not found; run `python -m rlhf.pipeline --out {args.run}` first")
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = replace(ppo.PPOConfig(), sft_dir=sft_dir, rm_dir=rm_dir, progress=False)
    policy, ref, rm, value, tok = ppo.build_models(cfg, "cpu")
    model = ppo.ActorCritic(policy, value, cfg.temperature)
    opt = configure_optimizer(model, cfg, "cpu")
    stop_id, pad_id = D.stop_token_id(tok), D.pad_token_id(tok)
    pool = ppo.load_prompt_pool(cfg)
    max_prompt = policy.config.block_size - cfg.max_new_tokens
    gen = make_generator(0, "bench-ppo")
    t = {"rollout + score": 0.0, "update": 0.0, "update, untrimmed": 0.0}
    pad_share = []
    for it in range(args.iters + 1):
        prompts = [D.render_prompt(pool[(it * cfg.batch_size + i) % len(pool)], tok, max_len=max_prompt)
                   for i in range(cfg.batch_size)]
        t0 = time.perf_counter()
        ro = ppo.collect_rollout(policy, ref, rm, value, prompts, cfg, cfg.init_kl_coef, stop_id, pad_id, gen)
        t1 = time.perf_counter()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        ppo.ppo_update(model, opt, ro, cfg, gen)
        t2 = time.perf_counter()
        model.load_state_dict(state)                       # the untrimmed pass starts from the same weights
        trim, ppo.trim_padding = ppo.trim_padding, (lambda batch: batch)
        try:
            ppo.ppo_update(model, opt, ro, cfg, gen)
        finally:
            ppo.trim_padding = trim
        t3 = time.perf_counter()
        if it == 0:
            continue                                       # warm-up
        t["rollout + score"] += t1 - t0
        t["update"] += t2 - t1
        t["update, untrimmed"] += t3 - t2
        used = sum(int(ppo.trim_padding({**ro.select(rows), "prompt_length": ro.prompt_length})["attention_mask"].numel())
                   for rows in torch.arange(cfg.batch_size).split(cfg.micro_batch_size))
        pad_share.append(1 - used / ro.attention_mask.numel())
    n = args.iters
    print(f"PPO iteration, {cfg.batch_size} episodes, {cfg.ppo_epochs} epochs x {cfg.n_minibatches} minibatches, "
          f"{torch.get_num_threads()} threads, run {args.run}:")
    for k, v in t.items():
        print(f"  {k:<20} {v / n:6.2f} s/iteration")
    print(f"  columns dropped per micro-batch: {sum(pad_share) / n:.0%} of the rollout's (B, P+N) grid")
    print(f"  update speed-up from trimming: {t['update, untrimmed'] / t['update']:.2f}x")
    per_iter = (t["rollout + score"] + t["update"]) / n
    print(f"  => {cfg.max_iters} iterations ~ {per_iter * cfg.max_iters:.0f} s (without evaluations)")


if __name__ == "__main__":
    main()
