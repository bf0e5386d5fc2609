"""bench.memory: the estimate of a training step's peak memory, made on fake tensors.

The counter is checked against bytes worked out by hand, the estimate against what a model and AdamW must
hold (parameters and two moments per parameter), and on a GPU against torch.cuda's own measurement.

    python -m pytest tests/test_memory.py -q
    python -m pytest tests/test_memory.py -m gpu -q      # on a CUDA GPU: estimate vs measured
"""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from bench import memory
from minigpt.config import GPTConfig
from minigpt.trainer import has_bf16_hardware

SMALL = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64)


def test_live_bytes_counts_what_is_alive_and_its_peak():
    """Real tensors, bytes by hand: float32 is 4 bytes; a view shares its storage; a freed tensor stops counting."""
    with memory.LiveBytes() as m:
        a = torch.ones(1000)                 # 4,000 bytes
        b = a * 2                            # 8,000 alive
        view = b[:10]                        # the same storage: still 8,000
        del b, view                          # 4,000
        c = torch.ones(500, dtype=torch.float64)   # 4,000 + 4,000
    assert (m.peak, m.now) == (8000, 8000), (m.peak, m.now)
    del a, c


def test_the_estimate_holds_the_model_and_adamw_after_the_steps():
    """After the steps what stays alive is exactly the parameters and AdamW's two moments (float32 each)
    and its one-number step counter per parameter tensor; the peak holds gradients and activations too."""
    counter = memory.LiveBytes()
    with FakeTensorMode(), counter:
        model, opt = memory.train_steps(SMALL, batch_size=4, device="cpu", dtype="float32")
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    assert counter.now == 3 * 4 * n + 4 * len(params), (counter.now, n, len(params))
    assert counter.peak > 4 * 4 * n, "the peak should also hold a gradient per parameter and the activations"


def test_activations_grow_with_the_batch_and_shrink_under_bf16():
    """The micro-batch's activations are linear in its rows once they outweigh the optimizer step (the same
    peak moment, more rows), and bf16 autocast keeps the matmul outputs in 2 bytes instead of 4."""
    p8, p16, p32 = (memory.estimate(SMALL, b) for b in (8, 16, 32))
    assert p8 < p16 < p32 and abs((p32 - p16) - 2 * (p16 - p8)) <= 0.01 * (p32 - p16), (p8, p16, p32)
    big = GPTConfig(n_layer=2, n_head=4, n_embd=128, block_size=128, vocab_size=256)
    assert memory.estimate(big, 8, "bfloat16") < 0.8 * memory.estimate(big, 8, "float32")


def test_the_command_prints_a_presets_pretraining_steps(capsys):
    memory.main(["--preset", "tiny"])
    out = capsys.readouterr().out
    assert "pretrain " in out and "pretrain_large" in out and "float32" in out and "GiB" in out, out
    with pytest.raises(SystemExit, match="--preset=huge: choose one of"):
        memory.main(["--preset", "huge"])
    with pytest.raises(SystemExit, match="must be divisible"):
        memory.main(["--n_embd=30", "--n_head=4"])
    with pytest.raises(SystemExit, match="--n_layer with --preset: a preset sets the shapes"):   # was ignored
        memory.main(["--preset", "tiny", "--n_layer=2"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_the_estimate_is_close_to_what_cuda_measures(dtype):
    """The fake-tensor estimate against torch.cuda.max_memory_allocated for the same steps on the GPU
    (bf16 on the CPU's autocast against CUDA's). Within 15%: kernels differ (cuBLAS and SDPA workspaces)."""
    if dtype == "bfloat16" and not has_bf16_hardware("cuda"):
        pytest.skip("this GPU has no bf16 hardware")
    config = GPTConfig(n_layer=4, n_head=4, n_embd=256, block_size=256, vocab_size=1024)
    est, real = memory.estimate(config, 16, dtype), memory.measure_cuda(config, 16, "cuda", dtype)
    assert abs(est - real) <= 0.15 * real, f"estimate {est / 2**20:.0f} MiB, measured {real / 2**20:.0f} MiB"
