import os
import sys

import pytest

# Make `import minigpt` / `import rlhf` work from a plain clone without installing the package.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The tests use tiny models: one thread is faster than two fighting over small matmuls,
# and it keeps the suite's timing stable on a shared 2-core machine.
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same random state."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture(scope="module")
def tok():
    """The RL-stage tests' tokenizer (tests/tiny_rl.py); test modules that need another define their own."""
    from tests.tiny_rl import tiny_tokenizer
    return tiny_tokenizer()
