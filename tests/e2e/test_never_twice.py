"""End to end, issue 10 ("never start a job twice, never start a stale one"): every path by which one
failed launch could become two running jobs, or a stale record a new one, checked by its outcome: the
tasks moto holds for the job, the function's outcome and the notifications in the SQS queue.

The original caller is played through the fault proxy (`start_as_caller`), so its RunTask lands in the
proxy's clientToken table exactly as ECS would keep it, and its tasks carry `createdAt`."""

import copy
import re
import uuid

import pytest

from e2e_support import (ATTEMPT_TAG, as_session, event, invoke, job_tasks, record, run_task_calls,
                         same_request, start_as_caller, tags_of, token_groups)
from stack import retime

CALL_TAG = "ecs-rerun:call"
THROTTLED = {"do": "error", "code": "ThrottlingException", "message": "Rate exceeded", "status": 400}
# Three days, however the notification writes it: "3 days", "3d", "72 h", "259200 s", "4320 min".
THREE_DAYS = re.compile(r"(\b3\s*d(ays?)?\b|\b72\s*h|\b259[0-9]{3}\b|\b4320\s*min)", re.IGNORECASE)


def recent(name_or_event, age_s: float = 10) -> dict:
    """The event as if its record were written `age_s` seconds ago (a caller's retry came after it)."""
    return retime(event(name_or_event) if isinstance(name_or_event, str) else name_or_event, age_s=age_s)


def with_token(name: str, **params) -> dict:
    """A sample event whose recorded request also carries `params` (e.g. a clientToken)."""
    ev = event(name)
    ev["detail"]["requestParameters"].update(params)
    return ev


# ---- A. stale records ---------------------------------------------------------------------------

def test_three_day_old_record_is_notified_not_rerun(fresh):
    """A record replayed days later (a dead-letter redrive): the tokens of its job are long gone, so a
    rerun could start the job a second time. No RunTask; one notification that says how old it was."""
    name = "01-agent-ec2.json"
    res = invoke(fresh, retime(event(name), age_s=3 * 86400), fresh=False)
    assert res.ok, res.error
    r = res.response
    assert r["outcome"] == "stale", r
    assert run_task_calls(res) == []
    assert job_tasks(fresh, record(name)) == []
    notes = fresh.notifications()
    assert len(notes) == 1, notes
    assert notes[0]["attributes"].get("outcome") == "stale", notes[0]["attributes"]
    text = f"{notes[0]['subject']}\n{notes[0]['raw_message']}"
    assert THREE_DAYS.search(text), f"the notification does not say the record was 3 days old:\n{text}"


# ---- B. the function's own session ----------------------------------------------------------------

@pytest.mark.parametrize("session, outcome, tasks", [
    ("ecs-rerun", "ignored", 0),                 # the function's own Lambda session (AWS_LAMBDA_FUNCTION_NAME)
    ("ecs-rerun-nightly", "recovered", 1),       # another caller whose session name only starts alike
], ids=["own-session", "other-session-same-prefix"])
def test_record_of_the_functions_own_session_is_ignored(fresh, session, outcome, tasks):
    """A failed call made by the function's own session is its own (the exact replay of a recorded call
    carries neither tag nor token prefix): ignored, even without ecs-rerun's tag or token prefix."""
    name = "01-agent-ec2.json"
    ev = as_session(event(name), session)
    assert not any(t["key"].startswith("ecs-rerun:") for t in ev["detail"]["requestParameters"]["tags"])
    assert not ev["detail"]["requestParameters"]["clientToken"].startswith("ecs-rerun-")
    res = invoke(fresh, ev)
    assert res.ok, res.error
    assert res.response["outcome"] == outcome, res.response
    assert len(job_tasks(fresh, record(name))) == tasks
    if outcome == "ignored":
        assert run_task_calls(res) == []
        assert fresh.notifications() == []


# ---- C. API-error records with a recorded clientToken ----------------------------------------------

API_ERRORS_WITH_TOKEN = {
    "server-exception": lambda: event("05-server-exception.json"),
    "throttling": lambda: with_token("04-throttling.json", clientToken=str(uuid.uuid4())),
}


@pytest.mark.parametrize("kind", sorted(API_ERRORS_WITH_TOKEN))
def test_api_error_whose_callers_retry_started_the_job_starts_nothing(fresh, kind):
    """The caller's SDK retried the throttled/5xx call with the same clientToken and it went through:
    the record is sent again as recorded, ECS answers with the caller's task, nothing new starts."""
    ev = recent(API_ERRORS_WITH_TOKEN[kind]())
    detail = record(ev)
    caller = start_as_caller(fresh, detail)                  # the caller's own retry, same token
    res = invoke(fresh, ev, fresh=False)
    assert res.ok, res.error
    assert res.response["outcome"] == "already_started", res.response
    tasks = job_tasks(fresh, detail)
    assert [t["taskArn"] for t in tasks] == [caller[0]["taskArn"]], "exactly the caller's task"


def test_api_error_is_sent_again_as_recorded_and_starts_the_job(fresh):
    """Nobody started it yet: the first re-issue is the recorded call itself (its token, every recorded
    parameter, referenceId and count included, no tag added), and it starts the job."""
    ev = recent(with_token("04-throttling.json", clientToken=str(uuid.uuid4()),
                           referenceId="nightly-pipeline-run-42"))
    detail = record(ev)
    res = invoke(fresh, ev, fresh=False)
    assert res.ok, res.error
    assert res.response["outcome"] == "recovered", res.response
    assert len(job_tasks(fresh, detail)) == 1
    calls = run_task_calls(res)
    assert calls and same_request(calls[0]["request"], detail["requestParameters"]), calls[:1]
    assert len(token_groups(calls)) == 1, [(e["clientToken"], e["tags"]) for e in calls]


# ---- D. API-error records without a clientToken (older SDKs) ---------------------------------------

@pytest.mark.parametrize("state", ["running", "stopped"])
def test_api_error_without_token_whose_callers_retry_started_the_job_starts_nothing(fresh, state):
    """No token to ask ECS with: a task of the same job (task definition, cluster, startedBy, group,
    overrides) created at or after the record, running or already stopped, is the caller's retry."""
    name = "04-throttling.json"
    ev = recent(name)
    detail = record(ev)
    assert "clientToken" not in detail["requestParameters"]
    caller = start_as_caller(fresh, detail)
    if state == "stopped":
        fresh.client("ecs").stop_task(cluster="batch", task=caller[0]["taskArn"], reason="Essential container exited")
    res = invoke(fresh, ev, fresh=False)
    assert res.ok, res.error
    assert res.response["outcome"] == "already_started", res.response
    assert [t["taskArn"] for t in job_tasks(fresh, detail)] == [caller[0]["taskArn"]]


def test_other_runs_of_the_job_do_not_count_as_started(fresh):
    """Tasks that are not the caller's retry of this call: yesterday's run (created before the record),
    and runs since with another command, startedBy or group. The job is rerun."""
    name = "04-throttling.json"
    ev = recent(name, age_s=30)
    detail = record(ev)
    params = detail["requestParameters"]
    earlier = start_as_caller(fresh, detail)[0]
    fresh.control.created(earlier["taskArn"], earlier["createdAt"].timestamp() - 86400)
    other_command = copy.deepcopy(params["overrides"])
    other_command["containerOverrides"][0]["command"] = ["report", "--date", "2025-04-29"]
    start_as_caller(fresh, detail, overrides=other_command)
    start_as_caller(fresh, detail, startedBy="someone-else")
    start_as_caller(fresh, detail, group="adhoc-reports")
    res = invoke(fresh, ev, fresh=False)
    assert res.ok, res.error
    assert res.response["outcome"] == "recovered", res.response
    assert len(job_tasks(fresh, detail)) == 5


# ---- E. the clientToken table: duplicates, sibling records, errors after start ----------------------

def test_duplicate_delivery_after_a_throttle_starts_only_the_missing_tasks(fresh):
    """Two deliveries of one record (5 asked, 2 ran): the first met a throttle on its first RunTask (every
    try of that SDK call), the second met none. 3 tasks were missing; 3 may exist, not 6."""
    name = "02-resource-memory-partial.json"
    first = invoke(fresh, name, {"ecs:RunTask": [{**THROTTLED, "whole_call": True}]})
    assert first.ok, first.error
    assert first.response["outcome"] == "recovered", first.response
    second = invoke(fresh, name)
    assert second.ok, second.error
    assert second.response["outcome"] in ("recovered", "already_started"), second.response
    tasks = job_tasks(fresh, record(name))
    assert len(tasks) == 3, [tags_of(t) for t in tasks]
    for t in tasks:
        assert {ATTEMPT_TAG, CALL_TAG} <= set(tags_of(t)), tags_of(t)


def test_throttled_try_and_final_answer_of_one_call_start_the_job_once(fresh):
    """One SDK call, two records: a throttled try, then the retry's 200 with an AGENT failure (same
    requestParameters and clientToken, other eventIDs). Processed one after the other, the job starts once."""
    final = recent("01-agent-ec2.json", age_s=20)
    # An application's call (an EventBridge rule would retry its own API errors: left to it).
    final["detail"]["userIdentity"].pop("invokedBy", None)
    final["detail"]["sourceIPAddress"] = "10.0.3.17"
    final["detail"]["requestParameters"]["startedBy"] = "nightly-cron"
    throttled = copy.deepcopy(final)
    d = throttled["detail"]
    d.update(eventID=str(uuid.uuid4()), requestID=str(uuid.uuid4()), errorCode="ThrottlingException",
             errorMessage="Rate exceeded", responseElements=None)
    throttled = retime(throttled, age_s=21)
    # The caller's retry, answered as the final record says: no task, an AGENT failure.
    fresh.control.script({"ecs:RunTask": [{"do": "fail", "reason": "AGENT"}]})
    answer = fresh.caller_client("ecs").run_task(**final["detail"]["requestParameters"])
    fresh.control.clear_script()
    assert answer["tasks"] == [] and answer["failures"], answer

    a = invoke(fresh, throttled, fresh=False)
    assert a.ok, a.error
    b = invoke(fresh, final, fresh=False)
    assert b.ok, b.error
    assert a.response["outcome"] in ("recovered", "already_started"), a.response
    assert b.response["outcome"] in ("recovered", "already_started"), b.response
    tasks = job_tasks(fresh, record(final))
    assert len(tasks) == 1, [tags_of(t) for t in tasks]
    calls = [e for e in run_task_calls(a) + run_task_calls(b) if ATTEMPT_TAG in e["tags"]]
    assert len({e["tags"].get(CALL_TAG) for e in calls}) == 1, "one ecs-rerun:call for both records"


@pytest.mark.parametrize("name", ["01-agent-ec2.json", "05-server-exception.json"])
def test_server_error_after_the_task_started_is_not_a_second_task(fresh, name):
    """ECS started the task, then answered 500 to every try of that SDK call: the next try resends the
    same token and ECS answers with that task. One task, not two."""
    res = invoke(fresh, name, {"ecs:RunTask": [{"do": "error_after_start", "code": "ServerException",
                                                "status": 500, "whole_call": True}]})
    assert res.ok, res.error
    assert res.response["outcome"] in ("recovered", "already_started"), res.response
    assert len(job_tasks(fresh, record(name))) == 1
