"""The iteration loop of the on-policy RL stages (PPO, GRPO): the plumbing around the algorithm.

    run = IterationRun(cfg, info, policy, optimizer, desc="ppo", extra_state=lambda: {...})
    state = run.start()                       # resume from out_dir/ckpt.pt, or a fresh metrics.jsonl
    it, interrupted, final = run.loop(one_iteration, evaluate, postfix)
    records = run.records()

`one_iteration(it) -> stats` is the algorithm (rollout -> rewards -> advantages -> update); everything
else lives here once: resume (ckpt.pt holds the policy, the optimizer, the iteration and whatever
`extra_state()` adds, e.g. PPO's value model and β), metrics.jsonl, the tqdm bar, Ctrl-C (finish the
iteration, save, stop), evaluation and checkpoints every eval_interval iterations and at the end, and
the rule that only rank 0 writes files under DDP. Iterations are seeded by their number, so a resumed
run repeats the uninterrupted one exactly (on CPU).
"""

from __future__ import annotations

import os
import time
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from minigpt import checkpoint as ckpt_io
from minigpt.distributed import DistInfo
from minigpt.files import make_dir
from minigpt.trainer import (MetricsLogger, StopOnInterrupt, load_training_state, no_checkpoint_error,
                             read_metrics, save_training_state)


def data_parallel(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """`model` wrapped for DDP when several processes run (torchrun), else `model` itself."""
    if not info.enabled:
        return model
    return DDP(model, device_ids=[info.local_rank] if device.type == "cuda" else None)


class IterationRun:
    """Resume, logging, checkpoints, progress and interruption of an iterative RL stage (see the module
    docstring). cfg needs out_dir, resume, progress, max_iters and eval_interval."""

    def __init__(self, cfg, info: DistInfo, policy: torch.nn.Module, optimizer: torch.optim.Optimizer, desc: str,
                 extra_state: Callable[[], dict] | None = None):
        self.cfg, self.info, self.policy, self.optimizer, self.desc = cfg, info, policy, optimizer, desc
        self.extra_state = extra_state or dict
        self.logger = MetricsLogger(os.path.join(cfg.out_dir, "metrics.jsonl"), enabled=info.is_main)
        self.first = 0          # the first iteration this process runs (> 0 after a resume)

    def log(self, *args) -> None:
        if self.info.is_main:
            print(*args, flush=True)

    def start(self) -> dict | None:
        """Restore ckpt.pt when cfg.resume (the returned state holds the extra_state entries), else start a
        fresh metrics.jsonl; write config.json. Returns the state or None."""
        cfg = self.cfg
        state = load_training_state(cfg.out_dir, self.policy, self.optimizer, cfg=cfg) if cfg.resume else None
        if cfg.resume and state is None:
            raise no_checkpoint_error(cfg.out_dir)
        if state is not None:
            self.first = state["step"]
            self.logger.truncate(self.first)
            self.log(f"resumed {cfg.out_dir}/ckpt.pt at iteration {self.first}")
        else:
            if self.info.is_main:
                make_dir(cfg.out_dir, "--out_dir")
            self.logger.reset()
        if self.info.is_main:
            ckpt_io.write_config(cfg.out_dir, cfg)
        return state

    def save(self, it: int) -> None:
        """ckpt.pt: the policy as "model" (so load_model can read an unfinished run), the optimizer, the
        iteration and extra_state()."""
        if self.info.is_main:
            save_training_state(self.cfg.out_dir, self.policy, self.optimizer, it, self.cfg, self.extra_state())

    def loop(self, one_iteration: Callable[[int], dict], evaluate: Callable[[], dict],
             postfix: Callable[[dict, dict], dict] | None = None) -> tuple[int, bool, dict]:
        """Iterations first..max_iters-1: every eval_interval iterations `evaluate()` (its record joins the
        iteration's) and a checkpoint, then `one_iteration(it)` (its stats, already averaged over processes,
        are logged with the iteration's seconds). At the end, or on Ctrl-C: a last evaluation (when finished)
        and a checkpoint. Returns (iterations done, interrupted, the final evaluation)."""
        cfg, is_main = self.cfg, self.info.is_main
        bar = tqdm(total=cfg.max_iters, initial=self.first, desc=self.desc, dynamic_ncols=True,
                   disable=not (cfg.progress and is_main and self.first < cfg.max_iters))
        last_eval, it = {}, self.first
        with StopOnInterrupt(verbose=is_main) as stop:
            for it in range(self.first, cfg.max_iters):
                t0 = time.time()
                record = {"iter": it, "step": it}   # "step": what MetricsLogger.truncate keys on at resume
                if cfg.eval_interval > 0 and it % cfg.eval_interval == 0:
                    last_eval = evaluate()
                    record.update(last_eval)
                    self.save(it)
                stats = one_iteration(it)
                record.update(stats, seconds=time.time() - t0)
                self.logger.log(record)
                bar.update(1)
                if postfix is not None:
                    bar.set_postfix(**postfix(stats, last_eval))
                if stop.requested:
                    it += 1
                    break
            else:
                it = cfg.max_iters
        bar.close()
        interrupted = it < cfg.max_iters
        final = {}
        if not interrupted:
            final = evaluate()
            if is_main:
                self.logger.log({"iter": it, "step": it, **final, **self.extra_state_for_log()})
        self.save(it)
        if interrupted and is_main:
            print(f"interrupted: saved {cfg.out_dir}/ckpt.pt at iteration {it}; continue with --resume", flush=True)
        return it, interrupted, final

    def extra_state_for_log(self) -> dict:
        """The numbers of extra_state() (e.g. PPO's β) for the final metrics.jsonl record."""
        return {k: v for k, v in self.extra_state().items() if isinstance(v, (int, float))}

    def records(self) -> list[dict]:
        return read_metrics(self.logger.path)
