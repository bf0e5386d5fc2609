"""Multi-process data parallelism with torch.distributed: setup, teardown, sharding, reductions.

`torchrun` starts one process per device and sets RANK / LOCAL_RANK / WORLD_SIZE in each one's
environment. Every process holds a full copy of the model, computes gradients on its own slice of the
global batch, and DistributedDataParallel averages the gradients across processes during backward, so
all copies take the same optimizer step. Backend: nccl between GPUs, gloo on the CPU.

    torchrun --standalone --nproc_per_node=2 -m minigpt.train --preset tiny

Without torchrun (no RANK in the environment) everything here degrades to a single process: rank 0
of a world of size 1, and the reductions are identities.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0          # this process's index among all processes
    local_rank: int = 0    # its index on this machine (picks the GPU)
    world_size: int = 1    # number of processes
    enabled: bool = False  # True when launched by torchrun and a process group is initialised
    device: str = "cpu"    # where collectives run: nccl only reduces CUDA tensors ("cuda:LOCAL_RANK"), gloo CPU ones

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files, prints and shows progress bars."""
        return self.rank == 0


def setup_distributed(device_type: str = "cpu") -> DistInfo:
    """Initialise the process group when launched by torchrun (else return a single-process DistInfo).

    device_type "cuda" → nccl and torch.cuda.set_device(local_rank); "cpu" → gloo. MPS is refused: gloo
    cannot reduce MPS tensors and PyTorch has no MPS backend for torch.distributed.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "RANK" not in os.environ:
        return DistInfo()
    if device_type not in ("cpu", "cuda"):
        raise SystemExit(f"error: torchrun needs --device=cuda (nccl) or --device=cpu (gloo), not {device_type}: "
                         f"torch.distributed has no backend for {device_type} tensors")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ["WORLD_SIZE"])
    if device_type == "cuda" and local_rank >= torch.cuda.device_count():   # one GPU per process
        n = torch.cuda.device_count()
        raise SystemExit(f"error: torchrun started a process for GPU {local_rank} (LOCAL_RANK), but this machine "
                         f"has {n} CUDA GPU(s): use --nproc_per_node={n} or fewer")
    device = f"cuda:{local_rank}" if device_type == "cuda" else "cpu"
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, enabled=True, device=device)


def teardown_distributed() -> None:
    """Destroy the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op on a single process)."""
    if info.enabled:
        dist.barrier()


def all_reduce_mean(values: list[float], info: DistInfo) -> list[float]:
    """Each number of `values` averaged over processes (`values` itself on a single process)."""
    return _all_reduce(values, info, dist.ReduceOp.SUM, mean=True)


def all_reduce_max(values: list[float], info: DistInfo) -> list[float]:
    """Each number of `values` maxed over processes (e.g. a 'stop now' flag)."""
    return _all_reduce(values, info, dist.ReduceOp.MAX)


def mean_over_processes(stats: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Every number of `stats` averaged over the processes (validation means, the RL stages' logged stats)."""
    keys = sorted(stats)
    return dict(zip(keys, all_reduce_mean([stats[k] for k in keys], info)))


def _all_reduce(values: list[float], info: DistInfo, op, mean: bool = False) -> list[float]:
    """The numbers travel as one float64 tensor made on info.device: nccl reduces only CUDA tensors, so a
    tensor made on the CPU (torch.tensor's default) would fail there at the first reduction."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)   # (len(values),)
    dist.all_reduce(t, op=op)
    return (t / info.world_size if mean else t).tolist()


def shard(batch, rank: int, world_size: int):
    """This process's contiguous slice of a global batch along dim 0.

    Works on a tensor or on (nested) tuples / lists / dicts of tensors; other values pass through.
    Example: a (8, T) batch on 2 processes → rows 0..3 on rank 0, rows 4..7 on rank 1.
    """
    if world_size == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        n = batch.shape[0]
        if n % world_size != 0:
            raise ValueError(f"global batch of {n} rows does not split evenly over {world_size} processes")
        per = n // world_size
        return batch[rank * per:(rank + 1) * per]
    if isinstance(batch, dict):
        return {k: shard(v, rank, world_size) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(v, rank, world_size) for v in batch)
    return batch
