"""Store the graded tests' expected values: run each case of tests/snapshot_cases.py on the reference.

    python tools/make_snapshots.py            # rewrite tests/_snapshots/<group>.pt for every group
    python tools/make_snapshots.py --check    # recompute and compare with the stored values; write nothing

Run it in the solution repository after changing an exercise's reference code or a case; in a student
copy it stops at the first blank. The graded tests then compare against these values, so the test
files hold no working reference implementation.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from minigpt.checkpoint import atomic_torch_save  # noqa: E402
from minigpt.configurator import CommandParser, utf8_console  # noqa: E402
from tests.grading import SNAPSHOT_DIR  # noqa: E402
from tests.snapshot_cases import CASES, build  # noqa: E402


# How close a recomputed value must be to the stored one to count as unchanged. float32 kernels differ in
# their last bits from one CPU to another (measured: 1e-7 relative on attention outputs), so a stricter
# check would flag every snapshot as stale on a new machine; a real change to the reference moves far more.
TOLERANCES = {torch.float64: dict(rtol=1e-9, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.is_floating_point():
            return torch.allclose(a, b, **TOLERANCES.get(a.dtype, dict(rtol=1e-2, atol=1e-3)))
        return torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def main(argv=None) -> int:
    parser = CommandParser(prog="python tools/make_snapshots.py",
                           description="Store the graded tests' expected values from the reference code.")
    parser.add_argument("--check", action="store_true", help="compare with the stored values; write nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        built = {group: build(group) for group in CASES}
    except NotImplementedError as e:
        raise SystemExit(f"error: {e}: snapshots come from the solution repository, not a student copy")
    stale = []
    for group, cases in built.items():
        path = os.path.join(SNAPSHOT_DIR, f"{group}.pt")
        if args.check:
            stored = torch.load(path, weights_only=True) if os.path.exists(path) else {}
            stale += [f"{group}/{name}" for name in cases if name not in stored or not _same(cases[name], stored[name])]
            continue
        atomic_torch_save(cases, path)
        print(f"{os.path.relpath(path, ROOT)}: {len(cases)} cases")
    if args.check:
        if stale:
            print("stale or missing: " + ", ".join(stale), file=sys.stderr)
            return 1
        print(f"all {sum(len(c) for c in built.values())} cases match the stored values")
    return 0


if __name__ == "__main__":
    utf8_console()
    sys.exit(main(sys.argv[1:]))
