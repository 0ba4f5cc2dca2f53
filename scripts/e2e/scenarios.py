"""What the local endpoint does when ecs-rerun re-issues each sample event's RunTask, and what must follow.

`script` goes to the fault proxy before the event is sent (see proxy.py for the actions): it decides how
the re-issued RunTask calls (and the SNS Publish) are answered. A RunTask call with nothing scripted
passes through to moto, which starts the tasks. `expect` is checked by the end-to-end tests against the
function's response, the tasks moto now holds and the notifications in the SQS queue; the outcome
the replay checks is the "local" entry of events/expected.json.

`counts` are the `count` of the first RunTask call of each clientToken, in order. `replays_original`:
the record is an API error with a recorded clientToken, so the first RunTask is the recorded call
itself (its token, every recorded parameter, no ecs-rerun tag) and ecs-rerun's own attempts, if any,
are numbered from 2. The events are sent retimed to now (stack.retime): the samples date from 2025.

With the launch store (issue 13; the stack has it unless `store=False`) a successful RunTask record is
`guarded`. A task state change is about a task of a launch: `after` lists the events sent first on a fresh
endpoint (the record of that launch, which puts its request in the store; `make replay` sends the files in
order, so 14 precedes 15 and 16 there too), and `launch` names the record whose request the rerun sends
(pinned to the revision the event names, count 1, ecs-rerun's own token and tags).
"""

# An event after which nothing is called, started or notified.
NOTHING = {"attempts": 0, "tasks_started": 0, "counts": [], "notified": False}


def nothing(title: str, outcome: str) -> dict:
    """A scenario that ends in `outcome` without any RunTask call, task or notification."""
    return {"title": title, "script": {}, "expect": {"outcome": outcome, **NOTHING}}


CAPACITY = "Capacity is unavailable at this time. Please try again later or in a different availability zone"

SCENARIOS: dict[str, dict] = {
    "01-agent-ec2.json": {
        "title": "AGENT: agent back by the 2nd try",
        "script": {"ecs:RunTask": [{"do": "fail", "reason": "AGENT"}]},
        "expect": {"outcome": "recovered", "attempts": 2, "tasks_started": 1, "counts": [1, 1]},
    },
    "02-resource-memory-partial.json": {
        "title": "RESOURCE:MEMORY, 2 of 5 ran: 1 more, then 2",
        "script": {"ecs:RunTask": [{"do": "fail", "reason": "RESOURCE:MEMORY", "place": 1}]},
        "expect": {"outcome": "recovered", "attempts": 2, "tasks_started": 3, "counts": [3, 2]},
    },
    "03-fargate-capacity.json": {
        "title": "Fargate capacity never comes back",
        "script": {"ecs:RunTask": [{"do": "fail", "reason": CAPACITY, "sticky": True}]},
        "expect": {"outcome": "gave_up", "attempts": 3, "tasks_started": 0, "counts": [2, 2, 2],
                   "notified": True},
    },
    "04-throttling.json": {
        # No clientToken recorded (an older SDK): ListTasks/DescribeTasks find no task the caller's own
        # retry started, so ecs-rerun reruns it.
        "title": "ThrottlingException, no token: not started since, rerun",
        "script": {},
        "expect": {"outcome": "recovered", "attempts": 1, "tasks_started": 1, "counts": [1]},
    },
    "05-server-exception.json": {
        # A recorded clientToken: the recorded call is sent again as it was; the scripted 500 fails that
        # try, the next try resends the same token and ECS starts the task.
        "title": "ServerException: the call as recorded, a 500, then it starts",
        "script": {"ecs:RunTask": [{"do": "error", "code": "ServerException", "status": 500,
                                    "message": "Service Unavailable. Please try again later."}]},
        "expect": {"outcome": "recovered", "tasks_started": 1, "counts": [1], "replays_original": True},
    },
    "06-attribute.json": {
        "title": "ATTRIBUTE: no instance can ever take it",
        "script": {},
        "expect": {"outcome": "not_retryable", "attempts": 0, "tasks_started": 0, "counts": [],
                   "notified": True},
    },
    "07-redacted-environment.json": {
        "title": "AGENT, but environment was redacted",
        "script": {},
        "expect": {"outcome": "not_retryable", "attempts": 0, "tasks_started": 0, "counts": [],
                   "notified": True},
    },
    "08-own-retry.json": nothing("ecs-rerun's own re-issue failed", "ignored"),
    "09-successful-runtask.json": nothing("RunTask that succeeded: guarded", "guarded"),
    "11-batch-placement.json": {
        # AWS Batch places the job again itself; a RunTask from outside would start an orphan.
        "title": "AWS Batch placement failure: left to Batch",
        "script": {},
        "expect": {"outcome": "left", **NOTHING},
    },
    "12-step-functions.json": {
        # A Step Functions state's own Retry decides; a person is told why ecs-rerun did not rerun it.
        "title": "Step Functions, throttled: notified, not rerun",
        "script": {},
        "expect": {"outcome": "not_retryable", "attempts": 0, "tasks_started": 0, "counts": [],
                   "notified": True},
    },
    "13-scheduler-throttled.json": {
        # EventBridge Scheduler resends a call that got an API error under its own retry policy.
        "title": "Scheduler, throttled: left to the Scheduler",
        "script": {},
        "expect": {"outcome": "left", **NOTHING},
    },
    "14-started-fargate.json": nothing("Fargate RunTask that started 2 tasks: guarded", "guarded"),
    "15-stopped-pull-throttled.json": {
        "title": "task of 14 failed to start, pull throttled: rerun",
        "script": {},
        "after": ["14-started-fargate.json"],
        "launch": "14-started-fargate.json",
        "expect": {"outcome": "recovered", "attempts": 1, "tasks_started": 1, "counts": [1], "notified": False},
    },
    "16-stopped-image-not-found.json": {
        "title": "task of 14 failed to start, image not found",
        "script": {},
        "after": ["14-started-fargate.json"],
        "launch": "14-started-fargate.json",
        "expect": {"outcome": "not_retryable", "attempts": 0, "tasks_started": 0, "counts": [],
                   "notified": True},
    },
    "17-spot-notice-running.json": nothing("Spot notice while running: ignored", "ignored"),
    "18-spot-capacity-fallback.json": {
        # The local stack's ECS_RERUN_RULES (stack.FALLBACK_RULES) moves spot-report from Fargate Spot to
        # FARGATE from attempt 2: Spot has no capacity (every Spot request fails), FARGATE starts both tasks.
        "title": "Fargate Spot without capacity: attempt 2 on FARGATE (capacity fallback rule)",
        "script": {"ecs:RunTask": [{"do": "fail", "reason": CAPACITY, "sticky": True,
                                    "only_capacity_provider": "FARGATE_SPOT"}]},
        "expect": {"outcome": "recovered_on_fallback", "attempts": 2, "tasks_started": 2, "counts": [2, 2],
                   "notified": True,
                   "fallback": {"from_attempt": 2, "tag": "FARGATE_SPOT:FARGATE",
                                "capacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}]}},
    },
    "10-not-runtask.json": nothing("StopTask, not RunTask", "ignored"),
}


# Records of a member account of the organization (issue 20): played by a stack in organization mode
# (`Stack(members=ORG_MEMBERS)`, as `make replay` runs), which reruns them in that account and Region with
# the member role; `account` names where the tasks must appear. Kept apart from SCENARIOS, whose stacks
# have no member account (tests/e2e/test_org.py plays these).
ORG_SCENARIOS: dict[str, dict] = {
    "19-member-account-agent.json": {
        "title": "member account, AGENT: rerun there with the member role",
        "script": {"ecs:RunTask": [{"do": "fail", "reason": "AGENT"}]},
        "account": "444455556666",
        "expect": {"outcome": "recovered", "attempts": 2, "tasks_started": 1, "counts": [1, 1]},
    },
}


def scenario(file_name: str) -> dict:
    return SCENARIOS.get(file_name) or ORG_SCENARIOS.get(file_name) or {"title": "", "script": {}, "expect": {}}

