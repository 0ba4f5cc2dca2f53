"""End to end: the real bootstrap under cargo-lambda's emulator, the AWS SDK over HTTP to moto through the
fault proxy. Every check reads the endpoint's state (the RunTask calls the proxy received, the tasks moto
holds, the notifications in the SQS queue subscribed to the topic), never the function's own logs."""

import json
import re
from pathlib import Path

import pytest

from scenarios import CAPACITY, SCENARIOS

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
EXPECTED = json.loads((EVENTS / "expected.json").read_text())
MALFORMED = ROOT / "tests" / "fixtures" / "malformed-event.json"
TOKEN = re.compile(r"^ecs-rerun-[0-9a-f]+$")
NOT_REPLAYED = {"count", "tags", "clientToken", "referenceId"}


def record(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())["detail"]


def invoke(stack, path: Path, script: dict | None = None):
    stack.control.clear_script()
    if script:
        stack.control.script(script)
    res = stack.invoke(path)
    stack.control.clear_script()
    return res


def run_task_calls(res) -> list[dict]:
    return [e for e in res.calls if e.get("op") == "RunTask"]


def first_call_per_attempt(calls: list[dict]) -> list[dict]:
    seen, out = set(), []
    for e in calls:
        attempt = e["tags"].get("ecs-rerun:attempt")
        if attempt not in seen:
            seen.add(attempt)
            out.append(e)
    return out


def tasks_of(stack, event_id: str) -> list[dict]:
    return [t for t in stack.tasks()
            if {x["key"]: x["value"] for x in t.get("tags") or []}.get("ecs-rerun:event-id") == event_id]


def same_task_definition(sent: str, original: str) -> bool:
    return sent == original or sent.rsplit("/", 1)[-1] == original.rsplit("/", 1)[-1]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_sample_event(fresh, name):
    """Each sample event: the outcome expected for it, the RunTask calls it should cause (count, tags,
    token, every original parameter), the tasks that now exist, and exactly the notification it reports."""
    sc = SCENARIOS[name]
    expect = sc["expect"]
    detail = record(name)
    event_id = detail["eventID"]
    res = invoke(fresh, EVENTS / name, sc["script"])
    assert res.ok, f"invocation failed: {res.error}"
    r = res.response
    assert r["event_id"] == event_id
    assert r["outcome"] == EXPECTED[name]["local"] == expect["outcome"], r
    for key in ("attempts", "tasks_started", "notified"):
        if key in expect:
            assert r[key] == expect[key], f"{key}: {r}"

    calls = run_task_calls(res)
    attempts = first_call_per_attempt(calls)
    if "counts" in expect:
        assert [e["count"] for e in attempts] == expect["counts"], [(e["tags"], e["count"]) for e in calls]
    assert [e["tags"].get("ecs-rerun:attempt") for e in attempts] == [str(i + 1) for i in range(len(attempts))]
    tokens = {}
    original = detail.get("requestParameters") or {}
    user_tags = {t["key"]: t["value"] for t in original.get("tags") or [] if not t["key"].lower().startswith("aws:")}
    for e in calls:
        assert TOKEN.match(e["clientToken"] or ""), e["clientToken"]
        assert len(e["clientToken"]) <= 64
        assert e["tags"]["ecs-rerun:event-id"] == event_id
        tokens.setdefault(e["tags"]["ecs-rerun:attempt"], set()).add(e["clientToken"])
        sent = e["request"]
        for k, v in original.items():
            if k in NOT_REPLAYED:
                continue
            if k == "taskDefinition":
                assert same_task_definition(sent.get(k, ""), v), (k, sent.get(k), v)
            else:
                assert sent.get(k) == v, f"parameter {k} not replayed as recorded: sent {sent.get(k)!r}, recorded {v!r}"
        for k, v in user_tags.items():
            assert e["tags"].get(k) == v, f"user tag {k} lost"
    assert all(len(t) == 1 for t in tokens.values()), f"one token per attempt: {tokens}"
    assert len(set().union(*tokens.values())) == len(tokens), "a new token for each attempt"

    started = tasks_of(fresh, event_id)
    assert len(started) == r["tasks_started"], "tasks in the endpoint vs tasks_started"
    notes = fresh.notifications()
    if r["notified"]:
        assert len(notes) == 1, notes
        n = notes[0]
        assert n["subject"] == r["subject"]
        assert n["attributes"]["outcome"] == r["outcome"]
        assert {"outcome", "reason_class", "cluster", "task_family"} <= set(n["attributes"])
        assert isinstance(n["message"], dict) and n["message"].get("event_id") == event_id
        assert n["raw_message"].startswith("{\n"), "pretty JSON"
    else:
        assert notes == [] and r["subject"] is None


def test_same_event_twice_starts_its_tasks_once(fresh):
    """A duplicate delivery re-sends the same tokens; ECS (the proxy) answers with the original results."""
    name = "01-agent-ec2.json"
    event_id = record(name)["eventID"]
    first = invoke(fresh, EVENTS / name, SCENARIOS[name]["script"])
    assert first.ok and first.response["outcome"] == "recovered", first
    second = invoke(fresh, EVENTS / name)            # nothing scripted: a new token would start a task
    assert second.ok, second.error
    assert [e["clientToken"] for e in first_call_per_attempt(run_task_calls(second))] == \
           [e["clientToken"] for e in first_call_per_attempt(run_task_calls(first))]
    assert all(e["action"] == "idempotent-replay" for e in run_task_calls(second)), run_task_calls(second)
    assert len(tasks_of(fresh, event_id)) == 1


def test_lost_answer_is_not_a_second_task(fresh):
    """RunTask started the task but the answer was lost (connection dropped) on every try the SDK made:
    the next attempt must resend the same token (ECS then returns the original result), not start another."""
    name = "04-throttling.json"
    event_id = record(name)["eventID"]
    res = invoke(fresh, EVENTS / name, {"ecs:RunTask": [{"do": "drop_after_start", "drop_replays": 10}]})
    # Whatever the function concludes, exactly one task may exist for this event, and it must say so.
    calls = run_task_calls(res)
    assert len({e["clientToken"] for e in calls}) == 1, [(e["clientToken"], e["action"]) for e in calls]
    assert len(tasks_of(fresh, event_id)) == 1
    assert res.ok or res.error


def test_lost_answer_then_retry_recovers_once(fresh):
    name = "04-throttling.json"
    event_id = record(name)["eventID"]
    res = invoke(fresh, EVENTS / name, {"ecs:RunTask": [{"do": "drop_after_start", "drop_replays": 3}]})
    assert res.ok, res.error
    assert res.response["outcome"] == "recovered", res.response
    assert res.response["tasks_started"] == 1
    assert len(tasks_of(fresh, event_id)) == 1
    assert len({e["clientToken"] for e in run_task_calls(res)}) == 1


@pytest.mark.parametrize("fault", [
    {"do": "error", "code": "ThrottlingException", "message": "Rate exceeded", "status": 400},
    {"do": "error", "code": "ServerException", "message": "Internal error", "status": 500},
    {"do": "drop"},
    {"do": "fail", "reason": "AGENT"},
    {"do": "fail", "reason": "RESOURCE:MEMORY", "place": 0},
], ids=["throttling", "5xx", "no-answer", "agent", "resource-memory"])
def test_persistent_fault_ends_in_one_notification(fresh, fault):
    """A transient fault that never clears: every attempt used, then one notification; nothing lost."""
    name = "01-agent-ec2.json"
    res = invoke(fresh, EVENTS / name, {"ecs:RunTask": [{**fault, "sticky": True}]})
    assert res.ok, res.error
    r = res.response
    assert r["outcome"] == "gave_up" and r["notified"] is True, r
    assert r["attempts"] == 3
    notes = fresh.notifications()
    assert len(notes) == 1 and notes[0]["attributes"]["outcome"] == "gave_up"
    assert notes[0]["subject"] == r["subject"]


def test_fargate_capacity_then_success(fresh):
    name = "03-fargate-capacity.json"
    event_id = record(name)["eventID"]
    res = invoke(fresh, EVENTS / name, {"ecs:RunTask": [{"do": "fail", "reason": CAPACITY, "place": 1}]})
    assert res.ok, res.error
    assert res.response["outcome"] == "recovered" and res.response["tasks_started"] == 2, res.response
    assert [e["count"] for e in first_call_per_attempt(run_task_calls(res))] == [2, 1]
    assert len(tasks_of(fresh, event_id)) == 2


def test_publish_failure_fails_the_invocation_and_the_next_event_still_works(fresh):
    """If SNS cannot take the notification the invocation fails (in AWS: async retries, then the DLQ)."""
    res = invoke(fresh, EVENTS / "06-attribute.json",
                 {"sns:Publish": [{"do": "error", "status": 500, "code": "InternalError", "sticky": True}]})
    assert not res.ok, res.response
    assert "publish" in res.error.lower() or "sns" in res.error.lower(), res.error
    assert fresh.notifications() == []
    nxt = invoke(fresh, EVENTS / "06-attribute.json")
    assert nxt.ok and nxt.response["notified"] is True, nxt.error
    assert len(fresh.notifications()) == 1


def test_publish_refused_fails_the_invocation(fresh):
    res = invoke(fresh, EVENTS / "03-fargate-capacity.json",
                 {"ecs:RunTask": [{"do": "fail", "reason": CAPACITY, "sticky": True}],
                  "sns:Publish": [{"do": "error", "status": 403, "code": "AuthorizationError",
                                   "message": "not authorized to perform SNS:Publish", "sticky": True}]})
    assert not res.ok, res.response
    assert fresh.notifications() == []


def test_malformed_event_fails_clearly_and_the_next_is_processed(fresh):
    res = invoke(fresh, MALFORMED)
    assert not res.ok, res.response
    assert res.error and ("decode" in res.error.lower() or "malformed" in res.error.lower()
                          or "invalid" in res.error.lower()), res.error
    assert run_task_calls(res) == []
    nxt = invoke(fresh, EVENTS / "09-successful-runtask.json")
    assert nxt.ok and nxt.response["outcome"] == "ignored", nxt.error
