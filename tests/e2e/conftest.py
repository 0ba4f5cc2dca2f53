"""The end-to-end stack for the tests: moto's server, the fault proxy and `cargo lambda watch` serving
the real bootstrap, started once per session (on free 127.0.0.1 ports) and stopped at the end.
Each test starts from a freshly seeded endpoint. Nothing is skipped: a missing tool fails the run."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "e2e"))

from stack import Stack  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    with Stack(quiet=True, log_dir=ROOT / ".tools" / "e2e" / "pytest") as s:
        yield s


@pytest.fixture
def fresh(stack):
    """The stack with moto's state, the proxy's scripts/log/tokens and the SQS queue emptied and re-seeded."""
    stack.reset()
    stack.notifications()
    return stack
