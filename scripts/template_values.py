"""What the deployed stack does, read from template.yaml: the local harnesses play it with these numbers.

The e2e pump (scripts/e2e/pump.py) and the mass-outage bench (bench/outage.py) stand in for Lambda's SQS event
source and async invocation. They read the batch size, the concurrency, the queue's visibility timeout and
maxReceiveCount, the function's timeout and the async retry settings from here, so that they measure the setup
`make deploy` creates and cannot drift from it. Only the template's defaults are read (a stack deployed with other
parameter values behaves accordingly).

PyYAML is enough: the CloudFormation tags (!Ref, !If, ...) become {"Fn::...": ...} dicts, and only plain values
and the one !If of the event source's concurrency are evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """A SafeLoader that keeps CloudFormation's short-form intrinsics as {"Ref": x} / {"Fn::If": [...]}."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@dataclass(frozen=True)
class StackSettings:
    """The numbers of the default stack that a local stand-in for Lambda must play."""

    batch_size: int            # DelayHop: BatchSize
    max_concurrency: int       # DelayHop: ScalingConfig.MaximumConcurrency (= the reservation when there is one)
    reserved_concurrency: int  # ReservedConcurrency's default (0 = none)
    timeout_s: int             # the function's Timeout
    visibility_s: int          # DelayQueue: VisibilityTimeout
    max_receive: int           # DelayQueue: RedrivePolicy.maxReceiveCount
    max_event_age_s: int       # EcsRerunEventInvokeConfig: MaximumEventAgeInSeconds
    async_retries: int         # EcsRerunEventInvokeConfig: MaximumRetryAttempts


def load(path: Path = TEMPLATE) -> dict:
    """template.yaml as plain data."""
    return yaml.load(path.read_text(), Loader=_CfnLoader)


def stack_settings(path: Path = TEMPLATE) -> StackSettings:
    """The default stack's event-source, queue and timeout settings."""
    t = load(path)
    params, res = t["Parameters"], t["Resources"]
    function = res["EcsRerunFunction"]["Properties"]
    (hop,) = [e["Properties"] for e in function["Events"].values() if e["Type"] == "SQS"]
    reserved = int(params["ReservedConcurrency"]["Default"])
    concurrency = hop["ScalingConfig"]["MaximumConcurrency"]
    # !If [ReserveConcurrency, !Ref ReservedConcurrency, !Ref DelayQueueMaxConcurrency]: the one intrinsic here
    if isinstance(concurrency, dict):
        cond, yes, no = concurrency["Fn::If"]
        assert cond == "ReserveConcurrency", f"unexpected condition {cond} on MaximumConcurrency"
        concurrency = params[(yes if reserved > 0 else no)["Ref"]]["Default"]
    queue = res["DelayQueue"]["Properties"]
    invoke = res["EcsRerunEventInvokeConfig"]["Properties"]
    return StackSettings(
        batch_size=int(hop["BatchSize"]),
        max_concurrency=int(concurrency),
        reserved_concurrency=reserved,
        timeout_s=int(function["Timeout"]),
        visibility_s=int(queue["VisibilityTimeout"]),
        max_receive=int(queue["RedrivePolicy"]["maxReceiveCount"]),
        max_event_age_s=int(invoke["MaximumEventAgeInSeconds"]),
        async_retries=int(invoke["MaximumRetryAttempts"]),
    )


if __name__ == "__main__":
    print(stack_settings())
