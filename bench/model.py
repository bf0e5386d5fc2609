"""Speed of the hand-written GPT on this machine: training tokens/s and MFU, generation with and without
the KV cache, tokenizer encode throughput. Prints figures; asserts nothing.

    python -m bench.model                 # ~30 s on 2 CPU cores
    python -m bench.model --threads=1       # on a busy shared machine (see --help)
    python -m bench.model --steps=10 --new_tokens=200 --device=cuda
    python -m bench.model --device=cuda --dtype=bfloat16 --compile --n_layer=12 --n_head=12 --n_embd=768 \
        --block_size=1024 --batch_size=16 --no_tokenizer      # GPT-2 small's shape, as the stages train on a GPU

MFU (model FLOPs utilisation, PaLM appendix B) = achieved training FLOP/s / peak FLOP/s, where the
achieved FLOP/s are GPT.flops_per_token() x tokens/s (6N + 12·L·C·T per token) and the peak is *measured*
here: the best FLOP/s of a large matmul (2·n^3 FLOPs) in the training precision (fp32, or bf16 with
--dtype=bfloat16, under which training runs with the stages' autocast), so the figure says how close the
model gets to what this machine's matmul kernel can do, not to a datasheet number.
Targets: training >= 60% of the measured fp32 matmul peak for a 4-layer, 256-wide, 256-context
model at batch 8; the KV cache >= 5x faster than recomputing at 200 new tokens.
"""

import argparse
import time

import torch

from minigpt.config import GPTConfig
from minigpt.configurator import CommandParser, bounded, utf8_console
from minigpt.model import GPT
from minigpt.trainer import autocast_context, pick_device


def sync(device):
    """Wait for the queued GPU work, so that a timer reads the work's time and not its launch."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device.startswith("mps"):
        torch.mps.synchronize()


def measure_matmul_peak(device, n=1024, repeats=10, dtype=torch.float32):
    """Best FLOP/s of an (n, n) @ (n, n) matmul in `dtype`: 2 n^3 FLOPs each. Best-of, because other
    processes on a shared machine only ever make a run slower."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def bench_training(config, batch_size, steps, device, dtype="float32", compile=False):
    torch.manual_seed(0)
    model = GPT(config).to(device)
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-4, betas=(0.9, 0.95),
                                     device_type=device.split(":")[0])
    train_model = torch.compile(model) if compile else model
    T = config.block_size
    x = torch.randint(0, config.vocab_size, (batch_size, T), device=device)
    y = torch.randint(0, config.vocab_size, (batch_size, T), device=device)

    def step():
        with autocast_context(device, dtype):
            _, loss = train_model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3 if compile else 2):  # warm-up (and compilation)
        step()
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    dt = sorted(times)[len(times) // 2]  # median step time (a shared machine makes single steps noisy)
    return batch_size * T / dt, dt, min(times), model


def bench_generation(model, new_tokens, prompt_len, device):
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len), device=device)
    model.eval()
    out = {}
    for use_cache in (True, False):
        model.generate(prompt, 5, temperature=0, use_cache=use_cache)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        seq = model.generate(prompt, new_tokens, temperature=0, use_cache=use_cache)
        sync(device)
        out[use_cache] = (seq, new_tokens / (time.perf_counter() - t0))
    same = torch.equal(out[True][0], out[False][0])
    return out[True][1], out[False][1], same


def bench_tokenizer():
    """encode (tiktoken with our merges) vs encode_slow (pure Python), in MB/s of UTF-8 input."""
    try:
        from minigpt.tokenizer import train_bpe
    except ImportError as e:
        return f"skipped (minigpt.tokenizer not available: {e})"
    try:
        from rlhf.world import corpus
        text = corpus(300_000, seed=0)
    except Exception:  # the world may not exist yet: any English-ish text will do
        words = "the quick brown fox jumps over the lazy dog while 12 cats sort 345 numbers".split()
        g = torch.Generator().manual_seed(0)
        text = " ".join(words[i] for i in torch.randint(0, len(words), (50_000,), generator=g).tolist())
    tok = train_bpe(text[:100_000], 512)
    results = {}
    for name, fn, sample in (("encode", tok.encode, text), ("encode_slow", tok.encode_slow, text[:50_000])):
        n_bytes = len(sample.encode("utf-8"))
        t0 = time.perf_counter()
        ids = fn(sample)
        results[name] = (n_bytes / (time.perf_counter() - t0) / 1e6, len(ids))
    agree = tok.encode(text[:50_000]) == tok.encode_slow(text[:50_000])
    fast, slow = results["encode"][0], results["encode_slow"][0]
    return (f"encode {fast:.2f} MB/s, encode_slow {slow:.3f} MB/s ({fast / slow:.0f}x); "
            f"vocab {tok.vocab_size}, agree on 50 kB: {agree}")


def main(argv=None):
    p = CommandParser(prog="python -m bench.model", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--steps", type=bounded(int, ">= 1"), default=5,
                   help="timed training steps (after 2 warm-up steps)")
    p.add_argument("--batch_size", type=bounded(int, ">= 1"), default=8, help="training batch size")
    p.add_argument("--n_layer", type=bounded(int, ">= 1"), default=4, help="transformer blocks")
    p.add_argument("--n_embd", type=bounded(int, ">= 1"), default=256, help="residual width")
    p.add_argument("--n_head", type=bounded(int, ">= 1"), default=4, help="attention heads")
    p.add_argument("--block_size", type=bounded(int, ">= 1"), default=256,
                   help="context length (training sequence length)")
    p.add_argument("--vocab_size", type=bounded(int, ">= 1"), default=512, help="vocabulary size (a small trained BPE)")
    p.add_argument("--new_tokens", type=bounded(int, ">= 1"), default=200, help="tokens generated per generation run")
    p.add_argument("--prompt_len", type=bounded(int, ">= 1"), default=16, help="prompt length for generation")
    p.add_argument("--explicit", action="store_true", help="also time the explicit (non-SDPA) attention")
    p.add_argument("--threads", type=bounded(int, ">= 0"), default=0,
                   help="torch CPU threads (0 = PyTorch's default); use 1 on a machine shared with other jobs, "
                   "where oversubscribed threads make small ops crawl")
    p.add_argument("--no_tokenizer", action="store_true", help="skip the tokenizer line")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="training precision: bfloat16 = the stages' bf16 autocast (their default on a GPU with "
                        "bf16 hardware)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (as the stages' --compile=True)")
    args = p.parse_args(argv)
    dev = str(pick_device(args.device))            # an unknown or unusable device: one line, as in the stages
    try:                                           # a shape GPTConfig refuses: one line, before any timing
        cfg = GPTConfig(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                        n_head=args.n_head, n_embd=args.n_embd, dropout=0.0)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"device {dev}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.startswith("cuda") else "") +
          f", torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}"
          + (", compiled" if args.compile else ""))
    n = 4096 if dev.startswith("cuda") else 1024
    mm_dtype = getattr(torch, args.dtype)
    peak = measure_matmul_peak(dev, n=n, dtype=mm_dtype)

    variants = [("SDPA", True)] + ([("explicit", False)] if args.explicit else [])
    model, results = None, []
    for name, fused in variants:
        c = GPTConfig(**{**cfg.__dict__, "fused_attention": fused})
        results.append((name,) + bench_training(c, args.batch_size, args.steps, dev, args.dtype, args.compile))
        model = model or results[-1][-1]
    peak = max(peak, measure_matmul_peak(dev, n=n, dtype=mm_dtype))  # again after training: the better of two
    print(f"measured {args.dtype} matmul peak ({n}x{n} @ {n}x{n}, best of 2 x 10): {peak / 1e9:.1f} GFLOP/s")
    for name, tps, dt, best, m in results:
        mfu = m.estimate_mfu(fwdbwd_per_iter=args.batch_size, dt=dt, peak_flops=peak, seq_len=args.block_size)
        best_mfu = m.estimate_mfu(args.batch_size, best, peak_flops=peak, seq_len=args.block_size)
        print(f"train ({name} attention) {args.n_layer}L/{args.n_embd}w/{args.block_size}ctx batch "
              f"{args.batch_size}: {tps:,.0f} tokens/s, median {dt * 1e3:.0f} ms/step (best {best * 1e3:.0f}), "
              f"MFU {100 * mfu:.1f}% of measured peak (best step {100 * best_mfu:.1f}%) ({model.num_params() / 1e6:.2f}M params, "
              f"{model.flops_per_token() / 1e6:.1f} MFLOPs/token)")

    cached, recompute, same = bench_generation(model, args.new_tokens, args.prompt_len, dev)
    print(f"generate {args.new_tokens} new tokens (batch 1, prompt {args.prompt_len}): KV cache "
          f"{cached:,.0f} tokens/s, recompute {recompute:,.0f} tokens/s -> {cached / recompute:.1f}x; "
          f"greedy tokens identical: {same}")

    if not args.no_tokenizer:
        print("tokenizer: " + bench_tokenizer())


if __name__ == "__main__":
    utf8_console()
    main()
