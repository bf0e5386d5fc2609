"""Helpers of the graded tests: stored expected values and failure messages that teach.

The graded tests hold no working reference code. They compare a student's function with values the
reference produced once (tests/_snapshots/*.pt, written by `python tools/make_snapshots.py` from the
cases in tests/snapshot_cases.py), and with properties (shapes, masks, invariances, gradcheck). Every
assertion says what is wrong in the student's terms: which output, which position, expected and got,
and where the handout explains it.
"""

from __future__ import annotations

import os

import torch

from tests.course import BY_ID

SNAPSHOT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_snapshots")
_cache: dict[str, dict] = {}


def snapshot(group: str) -> dict:
    """The stored cases of one group (e.g. "a4"): {case name: {"inputs": {...}, "outputs": ...}}."""
    if group not in _cache:
        path = os.path.join(SNAPSHOT_DIR, f"{group}.pt")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing: run `python tools/make_snapshots.py` in the solution repo")
        _cache[group] = torch.load(path, weights_only=True)
    return _cache[group]


def case(group: str, name: str) -> tuple[dict, object]:
    """(inputs, expected outputs) of one stored case, inputs copied so a test may modify them."""
    c = snapshot(group)[name]
    inputs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in c["inputs"].items()}
    return inputs, c["outputs"]


def _fmt(x) -> str:
    return f"{x:.6g}" if isinstance(x, float) else repr(x)


def where(exercise: str) -> str:
    return f"(see {BY_ID[exercise].pointer})"


def expect_close(got, expected, what: str, exercise: str, hint: str = "", atol: float = 1e-6,
                 rtol: float = 1e-5, dims: str = "") -> None:
    """Assert got ≈ expected with a message a student can act on.

    what: the quantity ("advantages", "the loss"); dims: names of the axes for the position ("b, t").
    """
    suffix = (f" Hint: {hint}" if hint else "") + f" {where(exercise)}"
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{what}: expected a tensor, got {type(got).__name__}.{suffix}")
    expected = torch.as_tensor(expected)
    if tuple(got.shape) != tuple(expected.shape):
        raise AssertionError(f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}.{suffix}")
    g, e = got.detach().to(torch.float64).cpu(), expected.detach().to(torch.float64).cpu()
    bad = ~torch.isclose(g, e, atol=atol, rtol=rtol, equal_nan=False)
    if not bool(bad.any()):
        return
    if g.dim() == 0:
        raise AssertionError(f"{what}: got {_fmt(g.item())}, expected {_fmt(e.item())}.{suffix}")
    first = tuple(int(i) for i in bad.nonzero()[0])
    label = f"[{dims}] = " if dims else ""
    raise AssertionError(
        f"{what}: wrong at {label}{list(first)}: got {_fmt(g[first].item())}, expected {_fmt(e[first].item())} "
        f"({int(bad.sum())} of {bad.numel()} entries wrong).{suffix}")


def expect(condition: bool, message: str, exercise: str) -> None:
    """Assert a property, with the message and the handout pointer."""
    if not condition:
        raise AssertionError(f"{message} {where(exercise)}")


def on_meta(x: torch.Tensor) -> torch.Tensor:
    """x on PyTorch's "meta" device (shapes and dtypes, no data): a stand-in for a GPU in the tests below."""
    return torch.empty_like(x, device="meta")


# what PyTorch says when a CPU tensor and a "meta" one are mixed, or one is filled from the other
DEVICE_ERRORS = ("expected device", "same device", "copy out of meta")


def is_device_error(e: Exception) -> bool:
    return any(k in str(e) for k in DEVICE_ERRORS)


def expect_on_inputs_device(run, what: str, exercise: str) -> None:
    """run() calls the student's function on inputs from on_meta. A tensor the code creates on the CPU
    (torch.zeros(n) with no device=) and mixes with them, or fills with their values, fails there as it
    fails on a GPU, where it would crash the stage (the notebooks train on a GPU when there is one). Code
    that needs the data itself (.item(), a boolean index) cannot run on "meta"; it is not judged here. An
    unwritten exercise's NotImplementedError passes through (the test is then "blocked")."""
    try:
        out = run()
    except RuntimeError as e:             # NotImplementedError is a RuntimeError: a blank's message names no device
        text = str(e)
        if is_device_error(e):
            raise AssertionError(
                f"{what}: a tensor your code made on the CPU met inputs on another device ({text}). On a GPU this "
                f"crashes the stage that runs your code: make new tensors on the inputs' device (device=x.device, "
                f"or the *_like functions). {where(exercise)}") from None
        if isinstance(e, NotImplementedError) and "meta" not in text.lower():
            raise                         # an unwritten exercise (or another NotImplementedError): not ours to judge
        return                            # code that needs the data: nothing to judge on "meta"
    except TypeError as e:
        if "numpy" not in str(e):
            raise
        raise AssertionError(f"{what}: your code turns a tensor into a NumPy array, which fails for a tensor on a GPU "
                             f"too ({e}); stay with torch operations. {where(exercise)}") from None
    outs = out if isinstance(out, (tuple, list)) else (out,)
    devices = {str(x.device) for x in outs if isinstance(x, torch.Tensor)}
    expect(devices <= {"meta"}, f"{what}: the result is on {sorted(devices)}, not on its inputs' device: make it "
           f"from the inputs (device=x.device, or the *_like functions).", exercise)
