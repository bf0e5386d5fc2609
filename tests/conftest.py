import os
import sys

import pytest

# Make `import minigpt` / `import rlhf` work from a plain clone without installing the package.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.course import blocked_reason, find_blank  # noqa: E402  (needs ROOT on sys.path)

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


# ----------------------------------------------------------------------------------------------------
# the course: a test that merely uses an unwritten exercise is "blocked", not failed (tests/course.py)

def _texts(excinfo, report):
    """Where a blank's message can hide: the exception and its chain (pytest.warns re-raises "DID NOT WARN"
    over it), a subprocess's captured stderr/stdout, and the test's captured output (doctest prints it)."""
    texts, e, seen = [excinfo.exconly()], excinfo.value, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        texts.append(str(e))
        for attr in ("stderr", "stdout", "output"):
            v = getattr(e, attr, None)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            if isinstance(v, str):
                texts.append(v)
        e = e.__cause__ or e.__context__
    texts += [content for _, content in report.sections]
    return texts


def _blocker(excinfo, report):
    """The exercise whose blank raised, if the failure comes from one."""
    return next(filter(None, map(find_blank, _texts(excinfo, report))), None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failure raised by another exercise's blank becomes a skip that names it; a graded test of the
    blank's own exercise still fails (with the blank's message: what to write and where to read)."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.excinfo is None:
        return
    blocker = _blocker(call.excinfo, report)
    graded = {m.args[0] for m in item.iter_markers("exercise")}
    if blocker and blocker not in graded:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, blocked_reason(blocker))


def pytest_collection_modifyitems(session, config, items):
    """Run the notebooks first: under pytest-xdist they are one group on one worker (they share a run
    directory) and the longest unit of the suite, so starting them first keeps the wall time short."""
    items.sort(key=lambda item: 0 if item.nodeid.startswith("tests/test_notebooks.py::test_notebook_runs") else 1)
