"""End to end, issue 12 ("attempts as delayed, durable steps"): the real bootstrap with a delay queue in
moto's SQS (ECS_RERUN_DELAY_QUEUE_URL, ECS_RERUN_HOP_AFTER_MS=50, so every wait of the local backoff goes
through the queue, rounded up to 1 s) and a pump that plays Lambda's SQS event source mapping
(scripts/e2e/pump.py: batches of the template's BatchSize, partial batch failures, redelivery, maxReceiveCount 5, then
the dead-letter queue). The stack (`queue_stack`, `qfresh`) is conftest.py's.

Checked by outcome: the tasks moto holds for the job, the notifications in the SQS queue subscribed to
the topic, the final outcome of the episode, and what stays in (or leaves) the delay queue. One stack
with the queue for the whole session, reset before each test."""

import json
import time

import pytest

from e2e_support import (EXPECTED, ROOT, is_original, job_tasks, record, run_episode, run_task_calls,
                         token_groups)
from scenarios import SCENARIOS

# 01 .. 05 and 18 (Spot, moved by a fallback rule): the failed records that are rerun (15, a task that failed to
# start, needs 14 first: test_stopped_tasks.py)
RERUN = [n for n in sorted(SCENARIOS) if SCENARIOS[n]["expect"].get("counts") and not SCENARIOS[n].get("after")]
MEMORY = "RESOURCE:MEMORY"


def test_rerun_samples_are_the_ones_with_calls():
    assert RERUN == ["01-agent-ec2.json", "02-resource-memory-partial.json", "03-fargate-capacity.json",
                     "04-throttling.json", "05-server-exception.json", "18-spot-capacity-fallback.json"]


@pytest.mark.parametrize("name", RERUN)
def test_sample_event_through_hops_ends_as_without_the_queue(qfresh, name):
    """Each sample that is rerun reaches, through the delay queue, the outcome, RunTask requests, tasks and
    notification it reaches when one invocation sleeps through its waits (test_e2e.py::test_sample_event,
    the same expectations). Every sample waits at least half the 200 ms base before its first call, more
    than the 50 ms threshold: so the first invocation answers `waiting` and makes no RunTask call."""
    sc = SCENARIOS[name]
    expect = sc["expect"]
    detail = record(name)
    ep = run_episode(qfresh, name, sc["script"])

    assert ep.first is not None and ep.first.ok, ep.first and ep.first.error
    assert ep.first.response["outcome"] == "waiting", ep.first.response
    assert ep.first.response["event_id"] == detail["eventID"]
    assert run_task_calls(ep.first) == [], "the first call waits in the queue"
    assert ep.deliveries, "no hop was delivered"
    assert all(d.ok for d in ep.deliveries), [(d.receive_count, d.error) for d in ep.deliveries]
    assert ep.dead_letters == []
    sent = [c for c in ep.calls if c.get("op") == "SendMessage"]
    assert len(sent) == len(ep.deliveries), "one message per hop, each delivered once"
    assert all(c["delay_seconds"] == 1 for c in sent), [c["delay_seconds"] for c in sent]   # <= 1 s, rounded up
    # The queue honours the delay: no hop comes back (and no call goes out) before its DelaySeconds.
    for hop, d in zip(sent, ep.deliveries):
        assert d.at - hop["t"] >= hop["delay_seconds"] - 0.05, (d.at - hop["t"], hop["delay_seconds"])
    assert [r["outcome"] for r in ep.reports[:-1]] == ["waiting"] * len(ep.deliveries)

    final = ep.final
    assert len(ep.finals) == 1, ep.reports
    assert final["outcome"] == expect["outcome"] == EXPECTED[name]["local"], final
    for key in ("attempts", "tasks_started", "notified"):
        if key in expect:
            assert final[key] == expect[key], f"{key}: {final}"

    groups = token_groups(run_task_calls(ep))
    assert [g[0]["count"] for g in groups] == expect["counts"], [(e["clientToken"], e["count"]) for g in groups for e in g]
    if expect.get("replays_original"):
        assert is_original(groups[0][0], detail), "the recorded call comes first, through the queue too"
    tasks = job_tasks(qfresh, detail)
    assert len(tasks) == expect["tasks_started"] == final["tasks_started"]

    notes = qfresh.notifications()
    if expect.get("notified"):
        assert len(notes) == 1, notes
        assert notes[0]["attributes"]["outcome"] == final["outcome"]
        assert notes[0]["subject"] == final["subject"]
        assert notes[0]["message"]["event_id"] == detail["eventID"]
    else:
        assert notes == []


def test_hop_delivered_twice_starts_nothing_twice(qfresh):
    """SQS delivers a hop twice (the copy is sent again, same body): both deliveries make the same call
    with the same token, and the episode forks, each fork making the next call with the next token.
    5 asked, 2 ran: 3 tasks are missing, and 3 tasks exist in the end, not more."""
    name = "02-resource-memory-partial.json"
    sc = SCENARIOS[name]
    qfresh.pump.duplicate_next(1)
    ep = run_episode(qfresh, name, sc["script"])

    copies = [d for d in ep.deliveries if d.duplicate_of]
    assert len(copies) == 1, [(d.message_id, d.duplicate_of) for d in ep.deliveries]
    original = next(d for d in ep.deliveries if d.message_id == copies[0].duplicate_of)
    assert copies[0].body == original.body, "the same hop, delivered twice"
    assert all(d.ok for d in ep.deliveries), [(d.receive_count, d.error) for d in ep.deliveries]

    tasks = job_tasks(qfresh, record(name))
    assert len(tasks) == sc["expect"]["tasks_started"] == 3, [t["tags"] for t in tasks]
    assert [g[0]["count"] for g in token_groups(run_task_calls(ep))] == sc["expect"]["counts"]
    # Each fork concludes; the one whose call ECS answered with the tasks the other had started sees
    # them as started before its call (already_started).
    outcomes = sorted(r["outcome"] for r in ep.finals)
    assert outcomes in (["recovered"], ["already_started", "recovered"]), ep.reports
    assert qfresh.notifications() == []


def test_failed_publish_on_a_hop_is_redelivered_and_notifies_once(qfresh):
    """The concluding hop cannot publish (SNS answers 500 to every try of the call): that message fails,
    stays in the queue and is delivered again; the same last call is repeated with the same token and
    starts nothing new, and the one notification goes out. 5 asked, 2 ran, call 1 starts 1 of the 3
    missing, calls 2 and 3 none: given up, 1 task in moto, one notification."""
    name = "02-resource-memory-partial.json"
    script = {"ecs:RunTask": [{"do": "fail", "reason": MEMORY, "place": 1},
                              {"do": "fail", "reason": MEMORY, "sticky": True}],
              "sns:Publish": [{"do": "error", "status": 500, "code": "InternalError",
                               "message": "SNS is having a bad day", "whole_call": True}]}
    ep = run_episode(qfresh, name, script)

    assert ep.first.response["outcome"] == "waiting", ep.first.response
    failed = [d for d in ep.deliveries if not d.ok]
    assert len(failed) == 1, [(d.receive_count, d.ok, d.error) for d in ep.deliveries]
    assert "publish" in (failed[0].error or "").lower(), failed[0].error
    assert failed[0].answer == {"batchItemFailures": [{"itemIdentifier": failed[0].message_id}]}, failed[0].answer
    again = [d for d in ep.deliveries if d.message_id == failed[0].message_id and d.ok]
    assert [d.receive_count for d in again] == [2], "delivered again once, and then it went through"
    assert ep.dead_letters == []

    assert [r["outcome"] for r in ep.finals] == ["gave_up"], ep.reports
    assert len(job_tasks(qfresh, record(name))) == 1
    assert [g[0]["count"] for g in token_groups(run_task_calls(ep))] == [3, 2, 2]
    notes = qfresh.notifications()
    assert len(notes) == 1, [n["subject"] for n in notes]
    assert notes[0]["attributes"]["outcome"] == "gave_up"
    assert notes[0]["message"]["event_id"] == record(name)["eventID"]


def test_malformed_messages_fail_alone_then_are_dead_lettered(qfresh, monkeypatch):
    """Three bodies that are not hops of this function (not JSON, another JSON document, a hop of another
    format version) share a batch with a real hop: the real one goes on (its episode recovers), each
    malformed one is listed in batchItemFailures, delivered 5 times, then moved to the dead-letter queue;
    the function's error for each says what is wrong with it. Nothing is started or notified for them."""
    name = "01-agent-ec2.json"
    qfresh.control.script(SCENARIOS[name]["script"])
    # The stack delivers one message per invocation (BatchSize 1); an operator may raise it, and a malformed
    # message must then still fail alone: this test plays a batch of four.
    monkeypatch.setattr(qfresh.pump, "batch_size", 4)
    with qfresh.pump.pause():
        first = qfresh.invoke(ROOT / "events" / name)
        assert first.ok and first.response["outcome"] == "waiting", first.error or first.response
        hop = next(c["body"] for c in first.calls if c.get("op") == "SendMessage")
        assert isinstance(hop, dict) and hop["version"] == 1
        bad = {"not-json": "this is not a hop {",
               "not-a-hop": json.dumps({"Records": [], "hello": "world"}),
               "other-version": json.dumps({**hop, "version": 99})}
        ids = {qfresh.pump.send_raw(body): kind for kind, body in bad.items()}
        time.sleep(1.2)         # the hop's 1 s delay ends while the pump waits: one batch holds all four
    try:
        qfresh.settle(40)
    finally:
        qfresh.control.clear_script()

    ep = qfresh.episode(first.event_id)
    hops = [d for d in ep.deliveries if d.message_id not in ids]      # the other-version copy names it too
    assert ep.final and ep.final["outcome"] == "recovered", ep.reports
    assert hops and all(d.ok for d in hops), [(d.receive_count, d.error) for d in hops]
    assert hops[0].batch_size == 4, "the real hop and the three malformed ones in one batch"
    assert len(job_tasks(qfresh, record(name))) == 1

    deliveries = qfresh.pump.deliveries
    for mid, kind in ids.items():
        mine = [d for d in deliveries if d.message_id == mid]
        assert [d.receive_count for d in mine] == [1, 2, 3, 4, 5], (kind, [d.receive_count for d in mine])
        for d in mine:
            assert not d.ok
            assert {"itemIdentifier": mid} in d.answer["batchItemFailures"], (kind, d.answer)
            assert "not an ecs-rerun delay-queue message" in (d.error or ""), (kind, d.error)
        if kind == "other-version":
            assert "version 99" in mine[-1].error, mine[-1].error
    every_call = {c["seq"]: c for d in deliveries for c in d.calls}
    assert sorted(s for s, c in every_call.items() if c.get("op") in ("RunTask", "Publish")) == \
           [c["seq"] for c in run_task_calls(ep)], "no call made for a malformed message"
    dead = {x["message_id"]: x for x in qfresh.pump.dead_letters}
    assert set(dead) == set(ids), (dead, ids)
    for mid, kind in ids.items():
        assert dead[mid]["body"] == bad[kind]
        assert dead[mid]["receives"] == 5
    notes = qfresh.notifications()
    assert notes == [], [n["subject"] for n in notes]
