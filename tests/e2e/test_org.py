"""End to end, issue 20 (organization mode): the real bootstrap, run with ECS_RERUN_MEMBER_ROLE and the member
account in ECS_RERUN_ALLOWED_ACCOUNTS, against moto holding the accounts apart (stack.py's organization mode:
the proxy names each call's account to moto, that of the key which signed it; a key from sts:AssumeRole is the
role's account's). The member account 444455556666 is seeded in us-east-1 and eu-west-1, and the central
account (111122223333) holds the same cluster and task definition family, so a call sent to the wrong account
or Region would start a task there and be seen.

Checked by reading moto back, per account and Region: where the tasks are; the notifications in the SQS queue
subscribed to the central topic; and the calls the proxy saw (their account and Region, the STS calls).

Stacks of this module (their own, stopped at the end): `org` has the delay queue (every wait is a hop through
moto's SQS, resumed by the pump), `no_role` runs without ECS_RERUN_MEMBER_ROLE.
"""

import copy
import uuid

import pytest

from e2e_support import EVENTS, EXPECTED, ROOT, event, invoke, run_episode, run_task_calls, tags_of, token_groups
from scenarios import ORG_SCENARIOS
from stack import ACCOUNT, FUNCTION, MEMBER_ACCOUNT, MEMBER_REGIONS, MEMBER_ROLE, ORG_MEMBERS, REGION, Stack

NAME = "19-member-account-agent.json"
SCENARIO = ORG_SCENARIOS[NAME]
AGENT_ONCE = SCENARIO["script"]
OTHER_REGION = {MEMBER_REGIONS[0]: MEMBER_REGIONS[1], MEMBER_REGIONS[1]: MEMBER_REGIONS[0]}


@pytest.fixture(scope="module")
def org_stack():
    with Stack(quiet=True, log_dir=ROOT / ".tools" / "e2e" / "pytest-org", delay_queue=True,
               members=ORG_MEMBERS) as s:
        yield s


@pytest.fixture
def org(org_stack):
    org_stack.reset()
    org_stack.notifications()
    return org_stack


@pytest.fixture(scope="module")
def no_role_stack():
    with Stack(quiet=True, log_dir=ROOT / ".tools" / "e2e" / "pytest-org-no-role", members=ORG_MEMBERS,
               member_role=None) as s:
        yield s


def member_event(region: str = MEMBER_REGIONS[0], new_id: bool = False) -> dict:
    """Sample 18 as the member account's forwarding rule delivers it from `region`: envelope `region` and the
    record's `awsRegion` (and the failure's container instance ARN) in that Region. `new_id`: another
    failed call of the same job (its own eventID and clientToken)."""
    ev = copy.deepcopy(event(NAME))
    ev["region"] = ev["detail"]["awsRegion"] = region
    for f in ev["detail"]["responseElements"]["failures"]:
        f["arn"] = f["arn"].replace(f":{MEMBER_REGIONS[0]}:", f":{region}:")
    if new_id:
        ev["id"] = str(uuid.uuid4())
        ev["detail"]["eventID"] = str(uuid.uuid4())
        ev["detail"]["requestParameters"]["clientToken"] = str(uuid.uuid4())
    return ev


def request() -> dict:
    return event(NAME)["detail"]["requestParameters"]


def where_tasks_are(stack) -> dict[tuple[str, str], int]:
    """How many tasks of sample 19's job moto holds in each place: the member's two Regions and the
    central account's (the only Region it is seeded in)."""
    places = [(MEMBER_ACCOUNT, r) for r in MEMBER_REGIONS] + [(ACCOUNT, REGION)]
    return {p: len(stack.job_tasks(request(), *p)) for p in places}


def assume_role_calls(calls: list[dict]) -> list[dict]:
    """The sts:AssumeRole calls among `calls` (a cold process also asks GetCallerIdentity: under the
    emulator the invocation names no account)."""
    return [c for c in calls if c.get("service") == "sts" and c.get("op") == "AssumeRole"]


def test_the_member_sample_is_a_member_accounts_record():
    ev = event(NAME)
    assert ev["account"] == ev["detail"]["recipientAccountId"] == MEMBER_ACCOUNT != ACCOUNT
    assert ev["region"] == ev["detail"]["awsRegion"] == MEMBER_REGIONS[0]
    assert EXPECTED[NAME] == {"dry_run": "would_retry", "local": SCENARIO["expect"]["outcome"]}
    assert (EVENTS / NAME).exists()


@pytest.mark.parametrize("region", MEMBER_REGIONS)
def test_member_record_reruns_in_its_account_and_region_only(org, region):
    """AGENT once, then the agent is back: both calls go through the delay queue and run in the member
    account, in the record's Region, with the member role's credentials; the task exists there only, none
    in the other Region, none in the central account. A recovery notifies no one (ECS_RERUN_NOTIFY_ON_RECOVERY
    unset)."""
    ep = run_episode(org, member_event(region), AGENT_ONCE)

    assert ep.first is not None and ep.first.ok, ep.first and ep.first.error
    assert ep.first.response["outcome"] == "waiting", ep.first.response
    assert run_task_calls(ep.first) == [], "the first call waits in the queue"
    assert ep.deliveries and all(d.ok for d in ep.deliveries), [(d.receive_count, d.error) for d in ep.deliveries]
    final = ep.final
    assert final["outcome"] == SCENARIO["expect"]["outcome"] == EXPECTED[NAME]["local"], final
    assert final["tasks_started"] == 1 and final["attempts"] == 2, final

    runs = [c for c in ep.calls if c.get("op") == "RunTask"]
    assert [g[0]["count"] for g in token_groups(runs)] == SCENARIO["expect"]["counts"]
    # Every ECS call of the episode, made from the hops the queue delivered, ran in the member's place.
    ecs = [c for c in ep.calls if c.get("service") == "ecs"]
    assert ecs and {(c["account"], c["region"]) for c in ecs} == {(MEMBER_ACCOUNT, region)}, \
        [(c["op"], c["account"], c["region"]) for c in ecs]
    # The launch store and the queue stay central, in the function's own account and Region.
    central = [c for c in ep.calls if c.get("service") in ("sqs", "dynamodb")]
    assert central and {(c["account"], c["region"]) for c in central} == {(ACCOUNT, REGION)}

    assert where_tasks_are(org) == {(MEMBER_ACCOUNT, region): 1, (MEMBER_ACCOUNT, OTHER_REGION[region]): 0,
                                    (ACCOUNT, REGION): 0}
    (task,) = org.job_tasks(request(), MEMBER_ACCOUNT, region)
    assert f":{region}:{MEMBER_ACCOUNT}:" in task["taskArn"], task["taskArn"]
    assert tags_of(task)["ecs-rerun:attempt"] == "2"
    assert org.notifications() == []

    # The credentials were the member role's, asked of STS (once per process: maybe by an earlier test).
    keys = org.control.state()["keys"]
    assert [k["role_arn"] for k in keys.values()] == [f"arn:aws:iam::{MEMBER_ACCOUNT}:role/{MEMBER_ROLE}"]
    assert {k["account"] for k in keys.values()} == {MEMBER_ACCOUNT}


def test_second_region_of_the_account_asks_sts_nothing(org):
    """One AssumeRole per account, whatever the Region: after a record from us-east-1, one from eu-west-1 is
    rerun there with the kept credentials; the second episode makes no AssumeRole call, and the proxy has learned one
    temporary key in all (for the whole life of the function process)."""
    first = run_episode(org, member_event(MEMBER_REGIONS[0], new_id=True), AGENT_ONCE)
    second = run_episode(org, member_event(MEMBER_REGIONS[1], new_id=True), AGENT_ONCE)
    assert first.final["outcome"] == second.final["outcome"] == "recovered", (first.reports, second.reports)
    assert len(assume_role_calls(first.calls)) <= 1, assume_role_calls(first.calls)
    assert assume_role_calls(second.calls) == [], assume_role_calls(second.calls)
    assert len(org.control.state()["keys"]) == 1, org.control.state()["keys"]
    assert where_tasks_are(org) == {(MEMBER_ACCOUNT, MEMBER_REGIONS[0]): 1,
                                    (MEMBER_ACCOUNT, MEMBER_REGIONS[1]): 1, (ACCOUNT, REGION): 0}


def test_duplicate_delivery_of_a_member_record_starts_one_task(org):
    """EventBridge delivers the member's record twice: the second episode sends the same tokens in the same
    account and Region (the proxy's token table is per account, Region and cluster) and starts nothing."""
    ev = member_event(MEMBER_REGIONS[1])
    a = run_episode(org, ev, AGENT_ONCE)
    assert a.final["outcome"] == "recovered", a.reports
    since = org.control.log()[-1]["seq"]
    b = run_episode(org, ev)                       # nothing scripted: a new token would start a task
    # (an episode gathers every delivery of its event id: the second one's calls are those after `since`)
    first_runs = [c for c in a.calls if c.get("op") == "RunTask"]
    again = [c for c in b.calls if c.get("op") == "RunTask" and c["seq"] > since]
    assert b.reports[-1]["outcome"] in ("recovered", "already_started"), b.reports
    assert again, "the duplicate sends its calls again"
    assert {c["clientToken"] for c in again} <= {c["clientToken"] for c in first_runs}, (first_runs, again)
    assert all(c["action"] == "idempotent-replay" for c in again), [c["action"] for c in again]
    assert {(c["account"], c["region"]) for c in again} == {(MEMBER_ACCOUNT, MEMBER_REGIONS[1])}
    assert where_tasks_are(org) == {(MEMBER_ACCOUNT, MEMBER_REGIONS[0]): 0,
                                    (MEMBER_ACCOUNT, MEMBER_REGIONS[1]): 1, (ACCOUNT, REGION): 0}


def test_member_record_given_up_is_notified_on_the_central_topic(org):
    """The agent never comes back in the member account: three calls there, then one notification, published
    to the central topic with the function's own credentials and delivered to its subscribed queue; it names
    the account and the Region."""
    region = MEMBER_REGIONS[1]
    ep = run_episode(org, member_event(region), {"ecs:RunTask": [{"do": "fail", "reason": "AGENT", "sticky": True}]})
    assert ep.final["outcome"] == "gave_up", ep.reports
    assert {(c["account"], c["region"]) for c in ep.calls if c.get("op") == "RunTask"} == {(MEMBER_ACCOUNT, region)}
    publish = [c for c in ep.calls if c.get("op") == "Publish"]
    assert len(publish) == 1 and (publish[0]["account"], publish[0]["topic"]) == (ACCOUNT, org.topic_arn), publish
    (note,) = org.notifications()
    assert note["attributes"]["outcome"] == "gave_up"
    assert note["message"]["event_id"] == event(NAME)["detail"]["eventID"]
    assert MEMBER_ACCOUNT in note["raw_message"] and region in note["raw_message"], note["raw_message"]
    assert sum(where_tasks_are(org).values()) == 0


def test_record_of_the_functions_own_retry_in_the_member_account_is_ignored(org):
    """The function's failed retry in the member account comes back (through that account's forwarding rule)
    as a record made by the session it assumed: `assumed-role/<member role>/<session>`, with the request it
    sent (its ecs-rerun tags and token). Built from what the proxy saw (the call, and the role and session
    STS was asked for), it is recognised as the function's own: ignored, nothing started, no notification."""
    region = MEMBER_REGIONS[0]
    ep = run_episode(org, member_event(region), AGENT_ONCE)
    failed_retry = next(c for c in ep.calls if c.get("op") == "RunTask" and c["response"].get("failures"))
    ((key, session),) = org.control.state()["keys"].items()
    assert session["role_arn"].endswith(f":role/{MEMBER_ROLE}") and session["session"] == FUNCTION
    before = where_tasks_are(org)

    ev = member_event(region, new_id=True)
    detail = ev["detail"]
    detail["requestParameters"] = failed_retry["request"]
    detail["responseElements"] = {"tasks": [], "failures": failed_retry["response"]["failures"]}
    ui = detail["userIdentity"]
    ui.update(type="AssumedRole", accountId=MEMBER_ACCOUNT, accessKeyId=key,
              arn=f"arn:aws:sts::{MEMBER_ACCOUNT}:assumed-role/{MEMBER_ROLE}/{session['session']}",
              principalId=f"AROAEXAMPLEMEMBER:{session['session']}")
    ui.pop("invokedBy", None)
    ui["sessionContext"]["sessionIssuer"].update(arn=session["role_arn"], userName=MEMBER_ROLE,
                                                 accountId=MEMBER_ACCOUNT)
    res = invoke(org, ev)
    assert res.ok, res.error
    assert res.response["outcome"] == "ignored", res.response
    assert run_task_calls(res) == [] and assume_role_calls(res.calls) == []
    assert where_tasks_are(org) == before
    org.settle()
    assert org.notifications() == []


def test_without_member_role_a_member_record_is_notified_and_nothing_starts(no_role_stack):
    """ECS_RERUN_MEMBER_ROLE unset: the member account is allowed, but there is no way into it, and a member's
    task is never run with the central account's credentials: notified (naming the account), no AssumeRole, no
    RunTask, no task anywhere."""
    s = no_role_stack
    s.reset()
    s.notifications()
    assert "ECS_RERUN_MEMBER_ROLE" not in s.function_env_all()
    res = invoke(s, member_event(MEMBER_REGIONS[0]), AGENT_ONCE)
    assert res.ok, res.error
    assert res.response["outcome"] == "not_retryable", res.response
    assert f"no role for account {MEMBER_ACCOUNT}" in res.response["reason"], res.response["reason"]
    assert run_task_calls(res) == [] and assume_role_calls(res.calls) == []
    assert sum(where_tasks_are(s).values()) == 0
    (note,) = s.notifications()
    assert note["attributes"]["outcome"] == "not_retryable"
    assert MEMBER_ACCOUNT in note["raw_message"]
