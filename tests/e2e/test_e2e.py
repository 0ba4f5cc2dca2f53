"""End to end: the real bootstrap under cargo-lambda's emulator, the AWS SDK over HTTP to moto through the
fault proxy. Every check reads the endpoint's state (the RunTask calls the proxy received, the tasks moto
holds, the notifications in the SQS queue subscribed to the topic), never the function's own logs.
The stack has the launch store (issue 13): successful records are guarded, tasks that failed to start
are rerun with their launch's request (tests/e2e/test_stopped_tasks.py for those in depth)."""

import pytest

import datetime as dt

from botocore.exceptions import ClientError

from e2e_support import (ATTEMPT_TAG, EXPECTED, MALFORMED, NOT_REPLAYED, OWN_TOKEN, event, invoke, is_original,
                         job_tasks, record, run_task_calls, same_request, same_task_definition, token_groups)
from scenarios import CAPACITY, SCENARIOS

FALLBACK_TAG = "ecs-rerun:fallback"
from stack import event_id_of


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_sample_event(fresh, name):
    """Each sample event (retimed to now): the outcome expected for it, the RunTask calls it should cause
    (count, tags, token, every original parameter), the tasks that now exist, and exactly the
    notification it reports. A task state change is sent after the record of its task's launch (`after`),
    and its rerun is checked against that record's request (`launch`), pinned to the revision it ran."""
    sc = SCENARIOS[name]
    expect = sc["expect"]
    detail = record(name)
    event_id = event_id_of(event(name))
    for before in sc.get("after", []):
        first = invoke(fresh, before)
        assert first.ok and first.response["outcome"] == "guarded", first.error or first.response
    pinned = detail.get("taskDefinitionArn") if sc.get("launch") else None
    if sc.get("launch"):
        detail = record(sc["launch"])
    res = invoke(fresh, name, sc["script"])
    assert res.ok, f"invocation failed: {res.error}"
    r = res.response
    assert r["event_id"] == event_id
    assert r["outcome"] == EXPECTED[name]["local"] == expect["outcome"], r
    for key in ("attempts", "tasks_started", "notified"):
        if key in expect:
            assert r[key] == expect[key], f"{key}: {r}"

    calls = run_task_calls(res)
    groups = token_groups(calls)
    if "counts" in expect:
        assert [g[0]["count"] for g in groups] == expect["counts"], [(e["tags"], e["count"]) for e in calls]
    original = detail.get("requestParameters") or {}
    # The recorded call, sent again as it was, can only come first; ecs-rerun's own attempts follow,
    # tagged with consecutive attempt numbers: 1.. or, after the recorded call (attempt 1), 2..
    replays = [g for g in groups if is_original(g[0], detail)]
    assert replays in ([], groups[:1]), "the recorded call may only be the first request"
    if "replays_original" in expect:
        assert bool(replays) == expect["replays_original"], [(e["clientToken"], e["tags"]) for e in calls]
    for e in (replays[0] if replays else []):
        assert same_request(e["request"], original), f"the recorded call, changed: {e['request']} vs {original}"
    own = groups[len(replays):]
    first = 2 if replays else 1
    assert [g[0]["tags"].get(ATTEMPT_TAG) for g in own] == [str(first + i) for i in range(len(own))]
    user_tags = {t["key"]: t["value"] for t in original.get("tags") or [] if not t["key"].lower().startswith("aws:")}
    for g in own:
        assert len({e["tags"].get(ATTEMPT_TAG) for e in g}) == 1, "a resent token carries the same tags"
        for e in g:
            assert OWN_TOKEN.match(e["clientToken"] or ""), e["clientToken"]
            assert len(e["clientToken"]) <= 64
            sent = e["request"]
            # A capacity fallback (issue 21) changes the placement, and nothing else, from its attempt on.
            fallback = expect.get("fallback")
            moved = fallback is not None and int(e["tags"].get(ATTEMPT_TAG)) >= fallback["from_attempt"]
            assert e["tags"].get(FALLBACK_TAG) == (fallback["tag"] if moved else None), e["tags"]
            for k, v in original.items():
                if k in NOT_REPLAYED:
                    continue
                if moved and k == "capacityProviderStrategy":
                    assert sent.get(k) == fallback[k], (k, sent.get(k))
                    continue
                if k == "taskDefinition" and pinned:
                    assert sent.get(k) == pinned, (k, sent.get(k), pinned)
                elif k == "taskDefinition":
                    assert same_task_definition(sent.get(k, ""), v), (k, sent.get(k), v)
                else:
                    assert sent.get(k) == v, f"parameter {k} not replayed as recorded: sent {sent.get(k)!r}, recorded {v!r}"
            for k, v in user_tags.items():
                assert e["tags"].get(k) == v, f"user tag {k} lost"

    started = job_tasks(fresh, detail) if original.get("taskDefinition") else []
    assert len(started) == r["tasks_started"], "tasks in the endpoint vs tasks_started"
    if "tasks_started" in expect:
        assert len(started) == expect["tasks_started"]
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
    first = invoke(fresh, name, SCENARIOS[name]["script"])
    assert first.ok and first.response["outcome"] == "recovered", first
    second = invoke(fresh, name)                     # nothing scripted: a new token would start a task
    assert second.ok, second.error
    assert [g[0]["clientToken"] for g in token_groups(run_task_calls(second))] == \
           [g[0]["clientToken"] for g in token_groups(run_task_calls(first))]
    assert all(e["action"] == "idempotent-replay" for e in run_task_calls(second)), run_task_calls(second)
    assert len(job_tasks(fresh, record(name))) == 1


def test_lost_answer_is_not_a_second_task(fresh):
    """RunTask started the task but the answer was lost (connection dropped) on every try the SDK made:
    the next attempt must resend the same token (ECS then returns the original result), not start another."""
    name = "04-throttling.json"
    res = invoke(fresh, name, {"ecs:RunTask": [{"do": "drop_after_start", "drop_replays": 10}]})
    # Whatever the function concludes, exactly one task may exist for this event, and it must say so.
    calls = run_task_calls(res)
    assert len({e["clientToken"] for e in calls}) == 1, [(e["clientToken"], e["action"]) for e in calls]
    assert len(job_tasks(fresh, record(name))) == 1
    assert res.ok or res.error


def test_lost_answer_then_retry_recovers_once(fresh):
    name = "04-throttling.json"
    res = invoke(fresh, name, {"ecs:RunTask": [{"do": "drop_after_start", "drop_replays": 3}]})
    assert res.ok, res.error
    assert res.response["outcome"] == "recovered", res.response
    assert res.response["tasks_started"] == 1
    assert len(job_tasks(fresh, record(name))) == 1
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
    res = invoke(fresh, name, {"ecs:RunTask": [{**fault, "sticky": True}]})
    assert res.ok, res.error
    r = res.response
    assert r["outcome"] == "gave_up" and r["notified"] is True, r
    assert r["attempts"] == 3
    notes = fresh.notifications()
    assert len(notes) == 1 and notes[0]["attributes"]["outcome"] == "gave_up"
    assert notes[0]["subject"] == r["subject"]


def test_fargate_capacity_then_success(fresh):
    name = "03-fargate-capacity.json"
    res = invoke(fresh, name, {"ecs:RunTask": [{"do": "fail", "reason": CAPACITY, "place": 1}]})
    assert res.ok, res.error
    assert res.response["outcome"] == "recovered" and res.response["tasks_started"] == 2, res.response
    assert [g[0]["count"] for g in token_groups(run_task_calls(res))] == [2, 1]
    assert len(job_tasks(fresh, record(name))) == 2


def test_publish_failure_fails_the_invocation_and_the_next_event_still_works(fresh):
    """If SNS cannot take the notification the invocation fails (in AWS: async retries, then the DLQ)."""
    res = invoke(fresh, "06-attribute.json",
                 {"sns:Publish": [{"do": "error", "status": 500, "code": "InternalError", "sticky": True}]})
    assert not res.ok, res.response
    assert "publish" in res.error.lower() or "sns" in res.error.lower(), res.error
    assert fresh.notifications() == []
    nxt = invoke(fresh, "06-attribute.json")
    assert nxt.ok and nxt.response["notified"] is True, nxt.error
    assert len(fresh.notifications()) == 1


def test_publish_refused_fails_the_invocation(fresh):
    res = invoke(fresh, "03-fargate-capacity.json",
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
    nxt = invoke(fresh, "09-successful-runtask.json")
    assert nxt.ok and nxt.response["outcome"] == "guarded", nxt.error or nxt.response


def test_endpoint_models_what_the_function_reads(fresh):
    """The endpoint (moto behind the proxy) as ecs-rerun reads it: ListTasks filters, the task fields of
    DescribeTasks, and ECS's clientToken table, including an error answer after the tasks started."""
    ecs = fresh.caller_client("ecs")
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    job = {"cluster": "batch", "taskDefinition": "nightly-report:7", "launchType": "EC2",
           "startedBy": "AWS Step Functions",
           "overrides": {"containerOverrides": [{"name": "app", "command": ["report", "--date", "x"]}]}}
    a = ecs.run_task(**job, count=1, clientToken="tok-a")["tasks"]
    b = ecs.run_task(cluster="batch", taskDefinition="etl-worker:12", launchType="EC2", group="g1")["tasks"]
    arn_a, arn_b = a[0]["taskArn"], b[0]["taskArn"]

    def listed(**kw):
        return set(ecs.list_tasks(cluster="batch", **kw)["taskArns"])
    assert listed(family="nightly-report") == {arn_a}
    assert listed(family="etl-worker") == {arn_b}
    assert listed(family="nightly-report", startedBy="AWS Step Functions", desiredStatus="RUNNING") == {arn_a}
    assert listed(family="nightly-report", startedBy="someone-else") == set()
    assert listed(desiredStatus="STOPPED") == set()
    fresh.client("ecs").stop_task(cluster="batch", task=arn_b, reason="done")
    assert listed(desiredStatus="STOPPED") == {arn_b}
    assert listed(desiredStatus="RUNNING") == {arn_a}

    tasks = {t["taskArn"]: t for t in ecs.describe_tasks(cluster="batch", tasks=[arn_a, arn_b])["tasks"]}
    ta, tb = tasks[arn_a], tasks[arn_b]
    assert ta["createdAt"] >= before and tb["createdAt"] >= before, (ta.get("createdAt"), tb.get("createdAt"))
    assert ta["createdAt"] == a[0]["createdAt"]
    assert (ta["group"], ta["startedBy"], ta["overrides"]) == ("family:nightly-report", "AWS Step Functions",
                                                               job["overrides"])
    assert tb["group"] == "g1" and "startedBy" not in tb
    assert ta["taskDefinitionArn"].endswith("task-definition/nightly-report:7")

    # The token table: same parameters -> the stored answer, nothing new; other parameters -> conflict.
    again = ecs.run_task(**job, count=1, clientToken="tok-a")["tasks"]
    assert [(t["taskArn"], t["createdAt"]) for t in again] == [(arn_a, a[0]["createdAt"])]
    with pytest.raises(ClientError) as conflict:
        ecs.run_task(**{**job, "startedBy": "other"}, count=1, clientToken="tok-a")
    assert conflict.value.response["Error"]["Code"] == "ConflictException"
    assert conflict.value.response["resourceIds"] == [arn_a]

    # An error that started nothing leaves the token unused; one that started tasks answers with them.
    fresh.control.script({"ecs:RunTask": [{"do": "error", "code": "ThrottlingException", "status": 400},
                                          {"do": "error_after_start", "code": "ServerException", "status": 500}]})
    for token in ("tok-b", "tok-c"):
        with pytest.raises(ClientError):
            ecs.run_task(**job, count=1, clientToken=token)
    b2 = ecs.run_task(**job, count=1, clientToken="tok-b")["tasks"]          # starts now
    c2 = ecs.run_task(**job, count=1, clientToken="tok-c")["tasks"]          # started by the failed try
    started = {t["taskArn"] for t in fresh.job_tasks(job)}
    assert len(started) == 3 and {b2[0]["taskArn"], c2[0]["taskArn"]} <= started
