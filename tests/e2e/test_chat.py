"""End to end with ECS_RERUN_NOTIFICATION_FORMAT=chat (template parameter NotificationFormat=chat): the notification
that reaches the SQS queue subscribed to the topic is a custom notification of Amazon Q Developer in chat
applications, valid against tests/fixtures/chat-notification.schema.json (transcribed from the admin guide,
aws-facts.md section 15.3), with the subject and message attributes of the text format."""

import copy
import json

import jsonschema
import pytest

from e2e_support import ROOT, event, invoke, record
from stack import Stack, event_id_of

SCHEMA = json.loads((ROOT / "tests" / "fixtures" / "chat-notification.schema.json").read_text())


@pytest.fixture(scope="module")
def chat_stack():
    with Stack(quiet=True, log_dir=ROOT / ".tools" / "e2e" / "pytest-chat",
               function_env={"ECS_RERUN_NOTIFICATION_FORMAT": "chat"}) as s:
        yield s


def test_chat_notification_is_a_valid_custom_notification(chat_stack):
    chat_stack.reset()
    chat_stack.notifications()
    res = invoke(chat_stack, "06-attribute.json")
    assert res.ok, res.error
    assert res.response["outcome"] == "not_retryable" and res.response["notified"] is True, res.response
    notes = chat_stack.notifications()
    assert len(notes) == 1, notes
    note = notes[0]
    body = json.loads(note["raw_message"])

    validator = jsonschema.Draft202012Validator(SCHEMA)
    validator.check_schema(SCHEMA)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
    assert errors == [], errors

    # Subject and attributes are those of the text format (subscriptions filter on them).
    assert note["subject"] == "[ecs-rerun] cannot retry gpu-train on batch: ATTRIBUTE"
    assert note["attributes"] == {"outcome": "not_retryable", "reason_class": "permanent", "cluster": "batch",
                                  "task_family": "gpu-train", "caller": "other"}
    event_id = event_id_of(event("06-attribute.json"))
    region = record("06-attribute.json")["awsRegion"]
    content, metadata = body["content"], body["metadata"]
    assert body["id"] == event_id
    assert note["subject"] in content["title"]
    for fact in ("gpu-train", "batch", "ATTRIBUTE", event_id):
        assert fact in content["description"], (fact, content["description"])
    assert content["keywords"] == ["not_retryable", "permanent", "batch", "gpu-train"]
    assert any(f"https://{region}.console.aws.amazon.com/cloudtrail/home?region={region}#/events/{event_id}" in s
               for s in content["nextSteps"]), content["nextSteps"]
    assert any(f"/ecs/v2/clusters/batch/tasks?region={region}" in s for s in content["nextSteps"])
    assert metadata["threadId"].startswith("ecs-rerun-") and metadata["eventType"] == "ecs-rerun-not-retryable"

    # The schema is not vacuous: each of these breaks of the body is refused.
    def broken(change):
        out = copy.deepcopy(body)
        change(out)
        return out
    for bad in (broken(lambda b: b.update(version="2.0")),
                broken(lambda b: b.update(source="ecs-rerun")),
                broken(lambda b: b.update(summary="a top-level key the schema does not know")),
                broken(lambda b: b["content"].update(textType="markdown")),
                broken(lambda b: b["content"].update(body="a content key the schema does not know")),
                broken(lambda b: b["content"].pop("description")),
                broken(lambda b: b.pop("content")),
                broken(lambda b: b["metadata"]["additionalContext"].update(calls=3))):
        assert not validator.is_valid(bad), bad
