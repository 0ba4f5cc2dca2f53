"""The Python baseline: what the published ECS rerun templates deploy, cut to the same minimum.

Parse the EventBridge/CloudTrail event, re-issue the RunTask call for the tasks that did not start,
publish one SNS notification. boto3 clients are built once, at import (the Lambda init phase), as the
templates and AWS's own guidance do. No classification, no backoff, no idempotency token: this is a
lower bound for a Python retrier, not a feature-for-feature port.

Configuration, as the Rust function: ECS_RERUN_TOPIC_ARN; the endpoint, region and credentials
through boto3's standard chain (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, ...).
"""

import json
import os

import boto3

TOPIC_ARN = os.environ["ECS_RERUN_TOPIC_ARN"]
ecs = boto3.client("ecs")
sns = boto3.client("sns")

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


def handler(event, context):
    detail = event["detail"]
    request = _prune({k: v for k, v in (detail.get("requestParameters") or {}).items() if k in RUN_TASK_PARAMS})
    started = len((detail.get("responseElements") or {}).get("tasks") or [])
    missing = max(int(request.get("count", 1)) - started, 1)
    request["count"] = missing
    request["tags"] = (request.get("tags") or []) + [{"key": "ecs-rerun:attempt", "value": "1"}]
    response = ecs.run_task(**request)
    tasks = len(response.get("tasks", []))
    outcome = "recovered" if tasks >= missing else "gave_up"
    sns.publish(
        TopicArn=TOPIC_ARN,
        Subject=f"[ecs-rerun baseline] {outcome}: {request.get('taskDefinition', '?')}"[:100],
        Message=json.dumps({"event_id": detail.get("eventID"), "outcome": outcome, "tasks_started": tasks,
                            "failures": response.get("failures", [])}),
    )
    return {"event_id": detail.get("eventID"), "outcome": outcome, "attempts": 1, "tasks_started": tasks}
