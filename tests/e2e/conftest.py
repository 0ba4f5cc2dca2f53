"""The end-to-end stacks for the tests: moto's server, the fault proxy and `cargo lambda watch` serving
the real bootstrap, started once per session (on free 127.0.0.1 ports) and stopped at the end.
Each test starts from a freshly seeded endpoint. Nothing is skipped: a missing tool fails the run.

Both stacks have the launch store (a DynamoDB table in moto, ECS_RERUN_STORE_TABLE). `stack` has no delay
queue (each episode is one invocation) and lets the emulator run two invocations at once (concurrent
duplicate deliveries); `queue_stack` has the delay queue and its pump (issue 12), started on first use."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "e2e"))

from stack import Stack  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    with Stack(quiet=True, log_dir=ROOT / ".tools" / "e2e" / "pytest", concurrency=2) as s:
        yield s


@pytest.fixture
def fresh(stack):
    """The stack with moto's state, the proxy's scripts/log/tokens and the SQS queue emptied and re-seeded."""
    stack.reset()
    stack.notifications()
    return stack


@pytest.fixture(scope="session")
def queue_stack():
    with Stack(quiet=True, log_dir=ROOT / ".tools" / "e2e" / "pytest-delay-queue", delay_queue=True) as s:
        yield s


@pytest.fixture
def qfresh(queue_stack):
    """The queue-backed stack, reset and re-seeded (delay queue and dead-letter queue empty, the pump's
    record of deliveries forgotten, the proxy's time warp off), notifications drained."""
    queue_stack.reset()
    queue_stack.notifications()
    return queue_stack
