"""End to end, issue 13 ("tasks that fail to start"): the real bootstrap with the launch store (a DynamoDB
table in moto, ECS_RERUN_STORE_TABLE; the function reaches it through the fault proxy) and all three
kinds of event: a successful RunTask record (guarded), an `ECS Task State Change` of a task that stopped
with TaskFailedToStart (rerun with the stored request, or notified), and, through the delay queue, a
stopped task whose launch the store does not know yet (looked for again).

Checked by outcome: the items in the table, the RunTask requests the proxy received (every field), the
tasks moto holds for the job, and the notifications in the SQS queue subscribed to the topic.

moto accepts the capacityProviderStrategy of sample 14 (FARGATE_SPOT weight 3, FARGATE base 1) and starts
the task; which provider it picks is moto's choice, so the strategy is checked in the request the
function sent, the started task by its revision, group, startedBy, overrides and tags."""

from __future__ import annotations

import copy
import time
import uuid

import pytest

from e2e_support import (ATTEMPT_TAG, OWN_TOKEN, ROOT, event, invoke, job_tasks, record, run_episode, run_task_calls,
                         tags_of, token_groups)
from proxy import prune
from stack import Stack, event_id_of, retime

CALL_TAG = "ecs-rerun:call"
STARTED = "14-started-fargate.json"           # a Fargate RunTask that started 2 tasks
THROTTLED = "15-stopped-pull-throttled.json"  # its 1st task: CannotPullContainerError toomanyrequests
NOT_FOUND = "16-stopped-image-not-found.json"  # its 2nd task: image not found (permanent)
SPOT = "17-spot-notice-running.json"           # its 2nd task, Spot notice while RUNNING
# Parameters of the stored request the rerun does not send as recorded: its own token, one task, the
# revision the stopped task ran, the recorded tags plus ecs-rerun's.
NOT_AS_RECORDED = {"clientToken", "count", "taskDefinition", "tags"}
NOT_RECORDED = "stopped before its start was recorded"
DAY_S = 24 * 3600
SLOW_MS = 1500      # a slow ECS or SNS call: long enough for a concurrent delivery to arrive meanwhile


def guard(stack, name: str = STARTED) -> dict:
    """Send a successful RunTask record; it must be guarded. Returns its record."""
    res = invoke(stack, name)
    assert res.ok and res.response["outcome"] == "guarded", res.error or res.response
    return record(name)


def stop_event(task_arn: str, like: str = THROTTLED) -> dict:
    """A TaskFailedToStart change for `task_arn` (one the function started), made from a sample: its own
    event id, the task's ARN wherever the sample names its task."""
    ev = copy.deepcopy(event(like))
    old = ev["detail"]["taskArn"]
    ev["id"] = str(uuid.uuid4())
    ev["resources"] = [task_arn]
    ev["detail"]["taskArn"] = task_arn
    for c in ev["detail"].get("containers") or []:
        c["taskArn"] = task_arn
        c["containerArn"] = c["containerArn"].replace(old.rsplit("/", 1)[-1], task_arn.rsplit("/", 1)[-1])
    return ev


def job_calls(stack) -> list[dict]:
    """Every RunTask call the proxy saw since the last reset, in order."""
    return [e for e in stack.control.log() if e.get("op") == "RunTask"]


def assert_rerun_as_recorded(call: dict, recorded: dict, revision: str, attempt: int) -> None:
    """The RunTask request the function sent is the stored request: every recorded parameter as
    recorded, nothing added, except its own token, count 1, the pinned revision and the tags."""
    sent = call["request"]
    for k, v in recorded.items():
        if k not in NOT_AS_RECORDED:
            assert sent.get(k) == v, f"{k}: sent {sent.get(k)!r}, recorded {v!r}"
    assert set(sent) - set(recorded) <= NOT_AS_RECORDED, f"not in the record: {set(sent) - set(recorded)}"
    assert sent["taskDefinition"] == revision, (sent["taskDefinition"], revision)
    assert sent["count"] == 1
    assert OWN_TOKEN.match(sent["clientToken"]) and sent["clientToken"] != recorded.get("clientToken")
    user = [(t["key"], t["value"]) for t in recorded.get("tags") or []]
    sent_tags = [(t["key"], t["value"]) for t in sent.get("tags") or []]
    assert sorted(sent_tags) == sorted(user + [(ATTEMPT_TAG, str(attempt)), (CALL_TAG, recorded["clientToken"])]), \
        sent_tags


# ---- the successful record -------------------------------------------------------------------------

def test_successful_runtask_is_stored_under_each_task_arn(fresh):
    """A successful RunTask record (14, two Fargate tasks; 09, one EC2 task) is guarded: the table holds
    one item per task ARN of its answer, with the recorded request, the job's call count 0 and an
    expiry 24 h ahead; nothing is called on ECS and nothing is notified."""
    for name in (STARTED, "09-successful-runtask.json"):
        t0 = time.time()
        res = invoke(fresh, name)
        assert res.ok and res.response["outcome"] == "guarded", res.error or res.response
        assert run_task_calls(res) == []
        detail = record(name)
        arns = [t["taskArn"] for t in detail["responseElements"]["tasks"]]
        for arn in arns:
            item = fresh.launch_item(arn)
            assert item is not None, f"no item for {arn}"
            assert t0 + DAY_S - 5 <= item["expiresAt"] <= time.time() + DAY_S + 5, item["expiresAt"] - t0
            launch = item["launch"]
            assert launch["calls"] == 0
            stored = prune(launch["origin"]["request"])   # the store keeps null members too
            for k, v in detail["requestParameters"].items():
                assert stored.get(k) == v, f"{name} {k}: stored {stored.get(k)!r}, recorded {v!r}"
    items = fresh.store_items()
    assert sorted(items) == sorted(t["taskArn"] for n in (STARTED, "09-successful-runtask.json")
                                   for t in record(n)["responseElements"]["tasks"]), sorted(items)
    assert fresh.notifications() == []
    assert fresh.tasks() == []


# ---- a task that failed to start -----------------------------------------------------------------------

def ec2_stop_event() -> dict:
    """A TaskFailedToStart change (pull throttled) for the EC2 task that record 09 started."""
    started = record("09-successful-runtask.json")["responseElements"]["tasks"][0]
    ev = stop_event(started["taskArn"])
    ev["detail"].update(clusterArn=started["clusterArn"], taskDefinitionArn=started["taskDefinitionArn"],
                        launchType="EC2", group="family:nightly-report", startedBy="events-rule/nightly-report")
    ev["detail"].pop("capacityProviderName", None)
    ev["detail"].pop("attachments", None)
    for c in ev["detail"]["containers"]:
        c["name"] = "app"
    return ev


@pytest.mark.parametrize("launch, stop", [
    (STARTED, THROTTLED),                       # Fargate, capacity provider strategy, awsvpc
    ("09-successful-runtask.json", "ec2"),      # EC2, placement strategy, enableExecuteCommand
], ids=["fargate-14-15", "ec2-09"])
def test_pull_throttled_task_is_rerun_with_its_stored_request(fresh, launch, stop):
    """A task of a guarded launch stopped, its image pull throttled (15 for 14's first task; the same for
    09's EC2 task): one RunTask with the launch's stored request (capacity provider strategy or launch
    type, network configuration, placement, overrides, group, startedBy, tags, propagateTags,
    enableECSManagedTags, platformVersion...), pinned to the revision the task ran, count 1; exactly
    one new task, which is stored in turn (call 1 of the job); nothing notified."""
    recorded = guard(fresh, launch)["requestParameters"]
    ev = event(stop) if stop != "ec2" else ec2_stop_event()
    stopped = ev["detail"]
    res = invoke(fresh, ev)
    assert res.ok, res.error
    r = res.response
    assert (r["outcome"], r["attempts"], r["tasks_started"], r["notified"]) == ("recovered", 1, 1, False), r
    assert r["event_id"] == ev["id"]

    calls = run_task_calls(res)
    assert len(calls) == 1, [(c["clientToken"], c["action"]) for c in calls]
    assert_rerun_as_recorded(calls[0], recorded, stopped["taskDefinitionArn"], attempt=1)

    tasks = job_tasks(fresh, {"requestParameters": recorded})
    assert len(tasks) == 1, [t["taskArn"] for t in tasks]
    task = tasks[0]
    assert task["taskArn"] == calls[0]["response"]["tasks"][0]["taskArn"]
    assert task["taskDefinitionArn"] == stopped["taskDefinitionArn"]
    assert task["startedBy"] == recorded["startedBy"]
    assert task["group"] == recorded.get("group", stopped["group"])
    assert task["overrides"]["containerOverrides"] == recorded["overrides"]["containerOverrides"]
    assert tags_of(task)[ATTEMPT_TAG] == "1" and tags_of(task)["team"] == "data"
    item = fresh.launch_item(task["taskArn"])
    assert item is not None and item["launch"]["calls"] == 1, item
    assert fresh.notifications() == []


def test_permanent_reason_is_notified_once_and_nothing_launched(fresh):
    """The second task of 14 stopped because its image does not exist (16): no RunTask, no task, one
    notification (not_retryable) about that task's state change."""
    guard(fresh)
    res = invoke(fresh, NOT_FOUND)
    assert res.ok, res.error
    r = res.response
    assert (r["outcome"], r["attempts"], r["notified"]) == ("not_retryable", 0, True), r
    assert run_task_calls(res) == []
    assert fresh.tasks() == []
    notes = fresh.notifications()
    assert len(notes) == 1, [n["subject"] for n in notes]
    assert notes[0]["attributes"]["outcome"] == "not_retryable"
    assert notes[0]["subject"] == r["subject"]
    assert notes[0]["message"]["event_id"] == event(NOT_FOUND)["id"]
    assert "not found" in notes[0]["raw_message"]


def test_spot_notice_while_running_is_ignored(fresh):
    """A Spot interruption notice for a task still RUNNING (17): nothing called, started or notified."""
    guard(fresh)
    res = invoke(fresh, SPOT)
    assert res.ok and res.response["outcome"] == "ignored", res.error or res.response
    assert [c for c in res.calls if c.get("op") in ("RunTask", "Publish")] == []
    assert fresh.tasks() == [] and fresh.notifications() == []


def test_attempts_count_across_invocations_then_one_gave_up(fresh):
    """Each rerun fails to start in turn (a TaskFailedToStart change for the task the function just
    started): the reruns are attempts 1, 2, 3 of one job (same call tag, pinned revision, a new token
    each); the fourth stop ends the job in one `gave_up` notification and no 4th RunTask."""
    recorded = guard(fresh)["requestParameters"]
    revision = record(THROTTLED)["taskDefinitionArn"]
    ev = event(THROTTLED)
    for attempt in (1, 2, 3):
        res = invoke(fresh, ev)
        assert res.ok, res.error
        assert (res.response["outcome"], res.response["tasks_started"]) == ("recovered", 1), res.response
        calls = run_task_calls(res)
        assert len(calls) == 1, [(c["tags"], c["action"]) for c in calls]
        assert_rerun_as_recorded(calls[0], recorded, revision, attempt)
        started = calls[0]["response"]["tasks"][0]["taskArn"]
        # ECS stops the new task too, before it ran.
        fresh.client("ecs").stop_task(cluster="jobs", task=started, reason="TaskFailedToStart")
        ev = stop_event(started)
    last = invoke(fresh, ev)
    assert last.ok, last.error
    assert (last.response["outcome"], last.response["notified"]) == ("gave_up", True), last.response
    assert run_task_calls(last) == []

    calls = job_calls(fresh)
    assert len(calls) == 3, [(c["tags"], c["action"]) for c in calls]
    assert [c["tags"][ATTEMPT_TAG] for c in calls] == ["1", "2", "3"]
    assert len({c["clientToken"] for c in calls}) == 3
    tasks = job_tasks(fresh, {"requestParameters": recorded})
    assert sorted(tags_of(t)[ATTEMPT_TAG] for t in tasks) == ["1", "2", "3"]
    notes = fresh.notifications()
    assert len(notes) == 1, [n["subject"] for n in notes]
    assert notes[0]["attributes"]["outcome"] == "gave_up"
    assert notes[0]["message"]["event_id"] == ev["id"]


# ---- duplicate deliveries ------------------------------------------------------------------------------

def test_same_stop_event_twice_starts_one_task(fresh):
    """EventBridge delivers 15 twice, one after the other: the second rerun sends the same token, ECS
    answers with the task the first started; one task, no notification."""
    guard(fresh)
    ev = retime(event(THROTTLED))
    first = invoke(fresh, ev, fresh=False)
    second = invoke(fresh, ev, fresh=False)
    assert first.ok and second.ok, (first.error, second.error)
    assert first.response["outcome"] == "recovered", first.response
    calls = job_calls(fresh)
    assert len(token_groups(calls)) == 1, [(c["clientToken"], c["action"]) for c in calls]
    assert all(c["action"] == "idempotent-replay" for c in run_task_calls(second)), run_task_calls(second)
    assert len(fresh.tasks()) == 1
    assert fresh.notifications() == []


def test_same_permanent_stop_event_twice_notifies_once(fresh):
    """16 delivered twice, one after the other: one notification; the second delivery finds it claimed
    and sent, and publishes nothing."""
    guard(fresh)
    ev = retime(event(NOT_FOUND))
    first = invoke(fresh, ev, fresh=False)
    second = invoke(fresh, ev, fresh=False)
    assert first.ok and second.ok, (first.error, second.error)
    assert first.response["notified"] is True and second.response["notified"] is False, second.response
    assert second.response["outcome"] == "not_retryable"
    assert [c for c in second.calls if c.get("op") == "Publish"] == []
    assert len(fresh.notifications()) == 1


def twice_at_once(fresh, ev, slow):
    """Delivers `ev` twice at the same moment while the endpoint's `slow` operation takes SLOW_MS,
    so that the two invocations overlap; returns both results."""
    fresh.control.script({slow: [{"do": "pass", "delay_ms": SLOW_MS}]})
    try:
        return fresh.invoke_concurrently([ev, ev], fresh=False)
    finally:
        fresh.control.clear_script()


def test_same_stop_event_twice_at_once(fresh):
    """15 delivered twice at the same moment (the emulator runs both invocations at once; the first
    RunTask takes 1.5 s, so the second arrives while it is in flight): one task, no notification."""
    guard(fresh)
    results = twice_at_once(fresh, retime(event(THROTTLED)), slow="ecs:RunTask")
    assert all(r.ok for r in results), [r.error for r in results]
    calls = job_calls(fresh)
    assert len(calls) == 2, [(c["clientToken"], c["action"]) for c in calls]
    assert abs(calls[1]["t"] - calls[0]["t"]) < SLOW_MS / 1000, "the two deliveries did not overlap"
    assert len(token_groups(calls)) == 1, [(c["clientToken"], c["action"]) for c in calls]
    assert sorted(r.response["outcome"] for r in results) in (["recovered", "recovered"],
                                                               ["already_started", "recovered"]), \
        [r.response for r in results]
    assert len(fresh.tasks()) == 1
    assert fresh.notifications() == []


def test_same_permanent_stop_event_twice_at_once_notifies_once(fresh):
    """16 delivered twice at the same moment, SNS slow (1.5 s), so the second delivery claims the
    notification while the first is publishing it: the claim (a conditional PutItem) lets one publish;
    the other fails while the claim is pending and, delivered again (as Lambda retries a failed
    asynchronous invocation), finds it sent. One notification."""
    guard(fresh)
    ev = retime(event(NOT_FOUND))
    results = twice_at_once(fresh, ev, slow="sns:Publish")
    log = fresh.control.log()
    publish = [e for e in log if e.get("op") == "Publish"]
    claims = [e for e in log if e.get("op") == "PutItem" and any(k.startswith("notice|") for k in e["keys"])]
    assert len(publish) == 1 and len(claims) == 2, ([e["op"] for e in publish], claims)
    # The Publish is logged with the time it arrived; it was answered SLOW_MS later.
    assert claims[1]["t"] < publish[0]["t"] + SLOW_MS / 1000, "the second claim came after the publish ended"
    for r in results:
        assert r.ok or "another delivery is publishing" in (r.error or ""), r.error
    assert sum(1 for r in results if r.ok and r.response["notified"]) == 1, [r.response for r in results]
    for r in results:
        if not r.ok:
            again = invoke(fresh, ev, fresh=False)
            assert again.ok and again.response["notified"] is False, again.error or again.response
    assert len(fresh.notifications()) == 1
    assert fresh.tasks() == []


# ---- the launch not stored yet: rechecks through the delay queue ---------------------------------------

def test_stop_before_the_record_is_rerun_once_the_record_arrives(qfresh):
    """15 arrives before 14 (CloudTrail is late): the store does not know the task, so the function sends
    a recheck to the delay queue (60 s; the proxy's time warp lets it come back after 1 s) and 14 arrives
    meanwhile. The recheck finds the launch and reruns the task with 14's request: one task."""
    qfresh.control.config(sqs_delay_cap_s=1)
    recorded = record(STARTED)["requestParameters"]
    with qfresh.pump.pause():
        first = qfresh.invoke(retime(event(THROTTLED)), fresh=False)
        assert first.ok and first.response["outcome"] == "waiting", first.error or first.response
        sent = [c for c in first.calls if c.get("op") == "SendMessage"]
        assert [(c["kind"], c["delay_seconds"]) for c in sent] == [("recheck", 60)], sent
        assert run_task_calls(first) == []
        guard(qfresh)
    qfresh.settle(60)
    ep = qfresh.episode(event_id_of(event(THROTTLED)))
    assert ep.final and ep.final["outcome"] == "recovered", ep.reports
    assert ep.dead_letters == []
    calls = run_task_calls(ep)
    assert len(token_groups(calls)) == 1, [(c["clientToken"], c["action"]) for c in calls]
    assert_rerun_as_recorded(calls[0], recorded, record(THROTTLED)["taskDefinitionArn"], attempt=1)
    assert len(job_tasks(qfresh, {"requestParameters": recorded})) == 1
    assert qfresh.notifications() == []


def test_stop_whose_record_never_arrives_is_notified_once(qfresh):
    """15 and no 14 ever: looked for again 4 times through the delay queue, 60, 120, 240 and 480 s later
    (the delays the function asked for; the time warp shortens each to 1 s), then one notification that
    the task stopped before its start was recorded. No RunTask, no task."""
    qfresh.control.config(sqs_delay_cap_s=1)
    ep = run_episode(qfresh, THROTTLED, timeout=60)
    assert ep.first.ok and ep.first.response["outcome"] == "waiting", ep.first.error or ep.first.response
    sent = [c for c in ep.calls if c.get("op") == "SendMessage"]
    assert [(c["kind"], c["delay_seconds"], c["delay_applied"]) for c in sent] == \
           [("recheck", d, 1) for d in (60, 120, 240, 480)], sent
    assert len(ep.deliveries) == 4 and all(d.ok for d in ep.deliveries), [(d.ok, d.error) for d in ep.deliveries]
    assert [r["outcome"] for r in ep.reports] == ["waiting"] * 4 + ["not_retryable"], ep.reports
    assert run_task_calls(ep) == []
    assert qfresh.tasks() == []
    notes = qfresh.notifications()
    assert len(notes) == 1, [n["subject"] for n in notes]
    assert notes[0]["attributes"]["outcome"] == "not_retryable"
    assert notes[0]["message"]["event_id"] == event(THROTTLED)["id"]
    assert NOT_RECORDED in notes[0]["raw_message"], notes[0]["raw_message"][:400]


def test_recheck_delivered_twice_starts_one_task(qfresh):
    """SQS delivers the recheck of 15 twice (a copy, same body), after 14 arrived: both deliveries find
    the launch and rerun the task with the same token; one task, nothing notified."""
    qfresh.control.config(sqs_delay_cap_s=1)
    with qfresh.pump.pause():
        first = qfresh.invoke(retime(event(THROTTLED)), fresh=False)
        assert first.ok and first.response["outcome"] == "waiting", first.error or first.response
        guard(qfresh)
        qfresh.pump.duplicate_next(1)
    qfresh.settle(60)
    ep = qfresh.episode(event_id_of(event(THROTTLED)))
    copies = [d for d in ep.deliveries if d.duplicate_of]
    assert len(copies) == 1 and '"recheck"' in copies[0].body, [(d.body[:60], d.duplicate_of) for d in ep.deliveries]
    assert ep.finals and all(f["outcome"] in ("recovered", "already_started") for f in ep.finals), ep.reports
    assert len(token_groups(run_task_calls(ep))) == 1, [(c["clientToken"], c["action"]) for c in run_task_calls(ep)]
    assert len(job_tasks(qfresh, record(STARTED))) == 1
    assert qfresh.notifications() == []


def test_recheck_delivered_twice_never_found_notifies_once(qfresh):
    """The first recheck of 15 (no 14 ever) is delivered twice: the episode forks, each fork looks again
    on its own schedule and concludes; one notification all the same (claimed once per task)."""
    qfresh.control.config(sqs_delay_cap_s=1)
    qfresh.pump.duplicate_next(1)
    ep = run_episode(qfresh, THROTTLED, timeout=90)
    assert [d for d in ep.deliveries if d.duplicate_of], "the recheck was not delivered twice"
    assert [f["outcome"] for f in ep.finals] == ["not_retryable", "not_retryable"], ep.reports
    assert sorted(f["notified"] for f in ep.finals) == [False, True], ep.finals
    assert run_task_calls(ep) == []
    notes = qfresh.notifications()
    assert len(notes) == 1, [n["subject"] for n in notes]
    assert NOT_RECORDED in notes[0]["raw_message"]


# ---- without the store (the feature is opt-in) -----------------------------------------------------------

@pytest.fixture(scope="module")
def bare_stack():
    """A stack whose function has no ECS_RERUN_STORE_TABLE (and moto no table)."""
    with Stack(quiet=True, log_dir=ROOT / ".tools" / "e2e" / "pytest-no-store", store=False) as s:
        yield s


def test_without_the_store_nothing_is_guarded_or_rerun(bare_stack):
    """A deployment without the table: the successful record (14) and the stopped task (15) are both
    ignored; no DynamoDB call, no RunTask, no task, no notification."""
    bare_stack.reset()
    bare_stack.notifications()
    assert bare_stack.client("dynamodb").list_tables()["TableNames"] == []
    for name in (STARTED, THROTTLED):
        res = invoke(bare_stack, name)
        assert res.ok and res.response["outcome"] == "ignored", res.error or res.response
        assert "ECS_RERUN_STORE_TABLE" in res.response["reason"] or name == THROTTLED, res.response
        assert [c for c in res.calls if c.get("service") == "dynamodb" or c.get("op") in ("RunTask", "Publish")] == []
    assert bare_stack.tasks() == [] and bare_stack.notifications() == []
