"""Speed of one PPO iteration on a finished run: seconds per phase (rollout, score, update) and what
dropping the all-padding columns (rlhf.rollout.trim_padding) saves in the update. Prints figures; asserts nothing.

    python -m bench.ppo --run=runs/default          # after `python -m rlhf.pipeline` (its sft/ and reward_model/)
    python -m bench.ppo --run=runs/default --iters=5 --threads=1
    python -m bench.ppo --run=runs/default --device=cuda   # on a GPU (bf16 autocast, as PPO trains there)

A rollout pads prompts to the batch's longest and responses to the batch's longest response; a
micro-batch of the update then holds columns that are padding in every one of its rows. The same
update (same rollout, same starting weights, same shuffles) is timed three ways: as PPO runs it
(each micro-batch trimmed), without the per-micro-batch trim, and with the responses padded back to
max_new_tokens and nothing trimmed (how the update ran before either cut). The losses and gradients
are the same in all three (tests/test_ppo.py); only the compute differs.
"""

import copy
import os
import time
from dataclasses import fields, replace

import torch
import torch.nn.functional as F

from minigpt.checkpoint import one_line_errors
from minigpt.configurator import CommandParser, bounded, utf8_console
from minigpt.trainer import autocast_context, configure_optimizer, make_generator, pick_device
from rlhf import data as D
from rlhf import ppo
from rlhf.rl_update import load_prompt_pool
from rlhf.rollout import render_prompts, rm_reward, trim_padding


def pad_to(ro: ppo.Rollout, width: int, pad_id: int) -> ppo.Rollout:
    """The rollout with its response columns padded (mask 0) up to `width`, as generate() returns them."""
    extra = width - ro.response_mask.shape[1]
    per_token = {f.name: F.pad(getattr(ro, f.name), (0, extra)) for f in fields(ro)
                 if isinstance(getattr(ro, f.name), torch.Tensor) and getattr(ro, f.name).shape == ro.response_mask.shape}
    return replace(ro, sequences=F.pad(ro.sequences, (0, extra), value=pad_id),
                   attention_mask=F.pad(ro.attention_mask, (0, extra)), **per_token)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer reads the work's time and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_update(model, opt, ro, cfg, seed: int, trim: bool, ctx=None) -> float:
    """Seconds of one ppo_update from the model's current weights, which are restored afterwards."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = copy.deepcopy(opt.state_dict())
    keep = ppo.trim_padding          # the name ppo_update calls
    if not trim:
        ppo.trim_padding = lambda batch: batch
    try:
        sync(ro.sequences.device)
        t0 = time.perf_counter()
        ppo.ppo_update(model, opt, ro, cfg, torch.Generator().manual_seed(seed), ctx=ctx)
        sync(ro.sequences.device)
        return time.perf_counter() - t0
    finally:
        ppo.trim_padding = keep
        model.load_state_dict(state)
        opt.load_state_dict(opt_state)


def main(argv=None):
    ap = CommandParser(prog="python -m bench.ppo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="runs/default", help="pipeline run directory with sft/ and reward_model/")
    ap.add_argument("--iters", type=bounded(int, ">= 1"), default=3,
                    help="PPO iterations timed (after one warm-up iteration)")
    ap.add_argument("--threads", type=bounded(int, ">= 0"), default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu (the figures in README), cuda, cuda:N, mps or auto")
    args = ap.parse_args(argv)
    device = pick_device(args.device)      # first: a device this machine lacks is a one-line error
    sft_dir, rm_dir = os.path.join(args.run, "sft"), os.path.join(args.run, "reward_model")
    for d in (sft_dir, rm_dir):
        if not os.path.exists(os.path.join(d, "model.pt")):
            raise SystemExit(f"error: {d}/model.pt not found; run `python -m rlhf.pipeline --out {args.run}` first")
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = replace(ppo.PPOConfig(), sft_dir=sft_dir, rm_dir=rm_dir, progress=False)
    with one_line_errors():                # a run whose reward_model/ holds another stage's model: one line
        policy, ref, rm, value, tok = ppo.build_models(cfg, device)
    model = ppo.ActorCritic(policy, value, cfg.temperature)
    opt = configure_optimizer(model, cfg, device.type)
    stop_id, pad_id = D.stop_token_id(tok), D.pad_token_id(tok)
    pool = load_prompt_pool(cfg.prompts, cfg.n_prompts, cfg.prompt_seed)
    reward_fn = rm_reward(rm, tok, cfg.micro_batch_size)
    gen = make_generator(0, "bench-ppo", device=device)             # sampling needs it on the model's device
    ctx = autocast_context(device, cfg.dtype)                       # PPO's precision on this device
    t = {"rollout + score": 0.0, "update": 0.0, "update, micro-batches untrimmed": 0.0,
         "update, full width": 0.0}
    pad_share = []
    for it in range(args.iters + 1):
        convs = [pool[(it * cfg.batch_size + i) % len(pool)] for i in range(cfg.batch_size)]
        prompts = render_prompts(convs, tok, policy.config.block_size, cfg.max_new_tokens)
        t0 = time.perf_counter()
        ro = ppo.collect_rollout(policy, ref, value, reward_fn, convs, prompts, cfg, cfg.init_kl_coef, stop_id, pad_id,
                                 gen, ctx=ctx)
        sync(device)
        t_roll = time.perf_counter() - t0
        times = [timed_update(model, opt, ro, cfg, it, trim=True, ctx=ctx),
                 timed_update(model, opt, ro, cfg, it, trim=False, ctx=ctx),
                 timed_update(model, opt, pad_to(ro, cfg.max_new_tokens, pad_id), cfg, it, trim=False, ctx=ctx)]
        ppo.ppo_update(model, opt, ro, cfg, torch.Generator().manual_seed(it), ctx=ctx)   # move on, as PPO would
        if it == 0:
            continue                                                               # warm-up
        for k, v in zip(t, [t_roll, *times]):
            t[k] += v
        full = cfg.batch_size * (ro.prompt_length + cfg.max_new_tokens)
        used = sum(int(trim_padding({**ro.select(rows), "prompt_length": ro.prompt_length})["attention_mask"].numel())
                   for rows in torch.arange(cfg.batch_size).split(cfg.micro_batch_size))
        pad_share.append(1 - used / full)
    n = args.iters
    print(f"PPO iteration, {cfg.batch_size} episodes, {cfg.ppo_epochs} epochs x {cfg.n_minibatches} minibatches, "
          f"{torch.get_num_threads()} threads, {device}, run {args.run}:")
    for k, v in t.items():
        print(f"  {k:<32} {v / n:6.2f} s/iteration")
    print(f"  columns dropped: {sum(pad_share) / n:.0%} of the (B, P + max_new_tokens) grid generate() returns")
    print(f"  update speed-up: {t['update, full width'] / t['update']:.2f}x against the full width, "
          f"{t['update, micro-batches untrimmed'] / t['update']:.2f}x from the per-micro-batch trim alone")
    per_iter = (t["rollout + score"] + t["update"]) / n
    print(f"  => {cfg.max_iters} iterations ~ {per_iter * cfg.max_iters:.0f} s (without evaluations)")


if __name__ == "__main__":
    utf8_console()
    main()
