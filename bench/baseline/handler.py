"""The Python baseline: what the published ECS rerun templates deploy, cut to the same minimum.

Parse the EventBridge/CloudTrail event, re-issue the RunTask call for the tasks that did not start,
publish one SNS notification. boto3 clients are built once, at import (the Lambda init phase), as the
templates and AWS's own guidance do. No classification, no backoff, no idempotency token: this is a
lower bound for a Python retrier, not a feature-for-feature port.

Configuration, as the Rust function: ECS_RERUN_TOPIC_ARN; the endpoint, region and credentials
through boto3's standard chain (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, ...).

Organization mode (bench/org.py), as the Rust function: with ECS_RERUN_MEMBER_ROLE set, a record of another
account than the function's (its ARN's) is rerun in that account and the record's Region, with the
credentials of sts:AssumeRole on that account's member role, kept per account (at most one AssumeRole per
account and process, as ecs-rerun does) and one ECS client per (account, Region).
"""

import json
import os

import boto3

TOPIC_ARN = os.environ["ECS_RERUN_TOPIC_ARN"]
MEMBER_ROLE = os.environ.get("ECS_RERUN_MEMBER_ROLE")
ecs = boto3.client("ecs")
sns = boto3.client("sns")
sts = boto3.client("sts") if MEMBER_ROLE else None
_member_credentials: dict[str, dict] = {}
_member_ecs: dict[tuple[str, str], object] = {}

# CloudTrail records the request with the API's own (camelCase) names; these are RunTask's parameters.
RUN_TASK_PARAMS = {
    "cluster", "taskDefinition", "count", "launchType", "capacityProviderStrategy", "networkConfiguration",
    "overrides", "placementConstraints", "placementStrategy", "platformVersion", "propagateTags",
    "enableECSManagedTags", "enableExecuteCommand", "group", "startedBy", "referenceId", "tags",
    "volumeConfigurations",
}


def _prune(value):
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune(v) for v in value if v is not None]
    return value


def _ecs_for(event, context):
    """The function's own ECS client, or a member account's (assumed once per account) in the record's Region."""
    own = (getattr(context, "invoked_function_arn", None) or "").split(":")[4:5]
    account, region = event.get("account"), event.get("region")
    if not MEMBER_ROLE or not own or account == own[0]:
        return ecs
    if account not in _member_credentials:
        partition = "aws-cn" if region.startswith("cn-") else "aws"
        _member_credentials[account] = sts.assume_role(
            RoleArn=f"arn:{partition}:iam::{account}:role/{MEMBER_ROLE}", RoleSessionName="ecs-rerun-baseline",
            DurationSeconds=3600)["Credentials"]
    if (account, region) not in _member_ecs:
        c = _member_credentials[account]
        _member_ecs[(account, region)] = boto3.client(
            "ecs", region_name=region, aws_access_key_id=c["AccessKeyId"],
            aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
    return _member_ecs[(account, region)]


def handler(event, context):
    detail = event["detail"]
    request = _prune({k: v for k, v in (detail.get("requestParameters") or {}).items() if k in RUN_TASK_PARAMS})
    started = len((detail.get("responseElements") or {}).get("tasks") or [])
    missing = max(int(request.get("count", 1)) - started, 1)
    request["count"] = missing
    request["tags"] = (request.get("tags") or []) + [{"key": "ecs-rerun:attempt", "value": "1"}]
    response = _ecs_for(event, context).run_task(**request)
    tasks = len(response.get("tasks", []))
    outcome = "recovered" if tasks >= missing else "gave_up"
    sns.publish(
        TopicArn=TOPIC_ARN,
        Subject=f"[ecs-rerun baseline] {outcome}: {request.get('taskDefinition', '?')}"[:100],
        Message=json.dumps({"event_id": detail.get("eventID"), "outcome": outcome, "tasks_started": tasks,
                            "failures": response.get("failures", [])}),
    )
    return {"event_id": detail.get("eventID"), "outcome": outcome, "attempts": 1, "tasks_started": tasks}
