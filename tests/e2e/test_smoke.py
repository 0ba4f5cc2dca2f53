"""`make smoke` (scripts/smoke.py) against the local stack.

The local stack has no CloudTrail, so the smoke's `LocalChannel` delivers the record itself: it builds the
CloudTrail-shaped EventBridge event from the smoke's own RunTask request and answer, invokes the function through
the emulator, and reads the outcome line from the function's JSON log (the queue-backed stack logs JSON, as
Lambda's advanced logging controls make the function do). moto ignores RunTask's placementConstraints (it would
start the task), so the fault proxy answers the smoke's call the way ECS answers an impossible `memberOf`
constraint; the last test leaves moto's answer alone and checks that the started task is stopped at once.

The target (function, cluster, family) is read from a CloudFormation stack in moto that has the deployed stack's
parameters and outputs, as `make smoke` reads the real one.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import smoke  # noqa: E402
from stack import ACCOUNT, FUNCTION, REGION  # noqa: E402

CLUSTER = "batch"        # seeded with two EC2 container instances (events/06-attribute.json)
FAMILY = "gpu-train"

# The deployed stack as describe-stacks shows it: the parameters and outputs the smoke reads. CloudFormation
# shows a CommaDelimitedList parameter as the comma-separated string it was given; moto shows a Python list's
# repr for that type, so the stand-in declares them as String (same ParameterValue as the real stack's).
STACK_TEMPLATE = """
Parameters:
  Clusters: {Type: String}
  TaskFamilies: {Type: String}
  DryRun: {Type: String}
Resources:
  Marker: {Type: AWS::SQS::Queue, Properties: {QueueName: ecs-rerun-smoke-marker}}
Outputs:
  FunctionArn: {Value: "arn:aws:lambda:%(region)s:%(account)s:function:%(function)s"}
  TopicArn: {Value: "%(topic)s"}
"""


def deploy_stand_in(stack, clusters: str = f"{CLUSTER},web", families: str = f"{FAMILY},etl-worker") -> str:
    cfn = stack.client("cloudformation")
    body = STACK_TEMPLATE % {"region": REGION, "account": ACCOUNT, "function": FUNCTION, "topic": stack.topic_arn}
    cfn.create_stack(StackName="ecs-rerun", TemplateBody=body, Parameters=[
        {"ParameterKey": "Clusters", "ParameterValue": clusters},
        {"ParameterKey": "TaskFamilies", "ParameterValue": families},
        {"ParameterKey": "DryRun", "ParameterValue": "false"}])
    return "ecs-rerun"


def smoke_run(stack):
    """The smoke as `make smoke` runs it, with the local channel; what it printed and its result."""
    name = deploy_stand_in(stack)
    target = smoke.target_from_stack(stack.client("cloudformation"), stack.client("ecs"), name)
    identity = stack.client("sts").get_caller_identity()
    said: list[str] = []
    result = smoke.run(target, stack.caller_client("ecs"), smoke.LocalChannel(stack, identity, REGION),
                       timeout_s=120, say=said.append)
    return result, said


def running(stack) -> list[dict]:
    return [t for t in stack.job_tasks({"cluster": CLUSTER, "taskDefinition": FAMILY})
            if t.get("lastStatus") != "STOPPED" or t.get("desiredStatus") != "STOPPED"]


def test_target_is_read_from_the_stack(qfresh):
    name = deploy_stand_in(qfresh)
    target = smoke.target_from_stack(qfresh.client("cloudformation"), qfresh.client("ecs"), name)
    assert (target.function_name, target.log_group) == (FUNCTION, f"/aws/lambda/{FUNCTION}")
    assert (target.cluster, target.family, target.dry_run) == (CLUSTER, FAMILY, False)
    assert target.topic_arn == qfresh.topic_arn
    chosen = smoke.target_from_stack(qfresh.client("cloudformation"), qfresh.client("ecs"), name,
                                     cluster="web", family="etl-worker")
    assert (chosen.cluster, chosen.family) == ("web", "etl-worker")
    with pytest.raises(smoke.SmokeError, match="not one of the stack's Clusters"):
        smoke.target_from_stack(qfresh.client("cloudformation"), qfresh.client("ecs"), name, cluster="other")
    with pytest.raises(smoke.SmokeError, match="cannot read the stack 'missing'"):
        smoke.target_from_stack(qfresh.client("cloudformation"), qfresh.client("ecs"), "missing")


# How ECS answers the smoke's RunTask: a placement failure per container instance (HTTP 200; the short code, or
# the text no rule names), or an API error (a cluster without container instances).
ANSWERS = {
    "placement-failure": ({"do": "fail", "reason": "ATTRIBUTE"}, "permanent"),
    "memberof-unsatisfied": ({"do": "fail", "reason": "MemberOf placement constraint unsatisfied."}, "unknown"),
    "api-error": ({"do": "error", "code": "InvalidParameterException", "status": 400,
                   "message": "No Container Instances were found in your cluster."}, "permanent"),
}


@pytest.mark.parametrize("answer", ANSWERS, ids=list(ANSWERS))
def test_smoke_sees_the_expected_outcome_and_the_notification(qfresh, answer):
    action, reason_class = ANSWERS[answer]
    qfresh.control.script({"ecs:RunTask": [action]})
    try:
        result, said = smoke_run(qfresh)
    finally:
        qfresh.control.clear_script()
    text = "\n".join(said)

    assert result.ok, text
    assert result.outcome.outcome == smoke.EXPECTED == "not_retryable"
    assert result.outcome.notified is True
    assert result.outcome.reason_class == reason_class
    assert f"expected: outcome {smoke.EXPECTED}" in text and "notification published: yes" in text

    # The function read the record the smoke built from its own call: one RunTask (the smoke's), none by the
    # function, and that call carried the impossible constraint.
    run_tasks = [e for e in qfresh.control.log() if e.get("op") == "RunTask"]
    assert len(run_tasks) == 1, run_tasks
    assert run_tasks[0]["request"]["startedBy"] == smoke.STARTED_BY
    assert run_tasks[0]["request"]["placementConstraints"][0]["type"] == "memberOf"

    notes = [n for n in qfresh.notifications() if n["message"].get("event_id") == result.event_id]
    assert len(notes) == 1, notes
    assert notes[0]["message"]["outcome"] == "not_retryable"
    assert running(qfresh) == []


def test_smoke_stops_a_task_that_started_after_all(qfresh):
    # No scripted answer: moto ignores placementConstraints and starts the task.
    result, said = smoke_run(qfresh)
    text = "\n".join(said)

    assert not result.ok
    assert len(result.provoked.stopped) == 1, text
    assert "stopped it at once" in text and "proved nothing" in text
    assert qfresh.job_tasks({"cluster": CLUSTER, "taskDefinition": FAMILY}), "moto started no task"
    assert running(qfresh) == []
    assert qfresh.invocations == [], "a call that started its task must not be delivered as a failure"


# ---- the deployed path's reading side (CloudTrail LookupEvents, CloudWatch Logs FilterLogEvents), against
# botocore's Stubber: real clients that check every request against the API model, with scripted answers.

def stubbed(service: str):
    import boto3
    from botocore.stub import Stubber

    client = boto3.client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def trail_event(request_id: str, event_id: str) -> dict:
    record = {"eventName": "RunTask", "requestID": request_id, "eventID": event_id}
    return {"EventId": event_id, "EventName": "RunTask", "CloudTrailEvent": json.dumps(record)}


def test_aws_channel_finds_the_record_by_request_id_and_its_outcome_line():
    import datetime as dt

    from botocore.stub import ANY

    provoked = smoke.Provoked({"cluster": CLUSTER}, dt.datetime.now(dt.timezone.utc), "req-smoke",
                              response={"tasks": [], "failures": [{"reason": "ATTRIBUTE"}]})
    trail, trail_stub = stubbed("cloudtrail")
    lookup = {"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "RunTask"}],
              "StartTime": ANY, "MaxResults": 50}
    trail_stub.add_response("lookup_events", {"Events": []}, lookup)                  # not recorded yet
    trail_stub.add_response("lookup_events", {"Events": [trail_event("req-other", "ev-other")], "NextToken": "t"},
                            lookup)
    trail_stub.add_response("lookup_events", {"Events": [trail_event("req-smoke", "ev-smoke")]},
                            {**lookup, "NextToken": "t"})
    logs, logs_stub = stubbed("logs")
    query = {"logGroupName": "/aws/lambda/f", "startTime": ANY, "filterPattern": '"ev-smoke"'}
    logs_stub.add_client_error("filter_log_events", "ResourceNotFoundException", expected_params=query)
    finished = {"fields": {"message": "episode finished", "outcome": "not_retryable", "notified": True,
                           "reason_class": "permanent", "reason": "ATTRIBUTE"},
                "span": {"event_id": "ev-smoke", "cluster": CLUSTER}}
    other = {"fields": {"message": "episode finished", "outcome": "recovered"}, "span": {"event_id": "ev-other"}}
    logs_stub.add_response("filter_log_events", {"events": [{"message": "START RequestId: 1"}],
                                                 "nextToken": "n"}, query)
    logs_stub.add_response("filter_log_events", {"events": [{"message": json.dumps(other)},
                                                            {"message": json.dumps(finished)}]},
                           {**query, "nextToken": "n"})
    channel = smoke.AwsChannel(trail, logs, "/aws/lambda/f", poll_s=0, sleep=lambda s: None)
    said: list[str] = []
    with trail_stub, logs_stub:
        deadline = time.monotonic() + 60
        event_id = channel.event_id(provoked, deadline, said.append)
        out = channel.outcome(event_id, provoked.at, deadline, said.append)
        trail_stub.assert_no_pending_responses()
        logs_stub.assert_no_pending_responses()
    assert event_id == "ev-smoke"
    assert (out.outcome, out.notified, out.reason_class) == ("not_retryable", True, "permanent")


def test_aws_channel_says_what_to_check_when_cloudtrail_never_records_the_call():
    import datetime as dt

    provoked = smoke.Provoked({"cluster": CLUSTER}, dt.datetime.now(dt.timezone.utc), "req-smoke")
    trail, trail_stub = stubbed("cloudtrail")
    trail_stub.add_response("lookup_events", {"Events": []})
    channel = smoke.AwsChannel(trail, None, "/aws/lambda/f", poll_s=5, sleep=lambda s: None)
    with trail_stub, pytest.raises(smoke.SmokeError, match="CreateTrail=true"):
        channel.event_id(provoked, time.monotonic() + 1, lambda s: None)
