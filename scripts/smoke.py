"""`make smoke`: prove a deployed ecs-rerun end to end, in your own account, without running anything.

It makes one RunTask call that can never start a task: EC2 launch type, on one of the stack's clusters, with
one of its task families, and a `memberOf` placement constraint on a custom attribute no container instance has
(`attribute:ecs-rerun.smoke == never-<nonce>`), `startedBy` "ecs-rerun-smoke". ECS answers it with a placement
failure (or, on a cluster without container instances or with a Fargate-only task definition, an API error);
either way CloudTrail records a failed RunTask, the stack's rule hands it to the function, and the function logs
one outcome line for it ("episode finished", with the record's CloudTrail eventID in its `event_id` span field).

The smoke finds the record's eventID by its request id in CloudTrail's event history (LookupEvents), then that
line in the function's log group (CloudWatch Logs FilterLogEvents), polling both for at most --timeout seconds
(CloudTrail's delivery is best effort and usually takes minutes). It prints the outcome and whether the function
published its notification, and exits 0 only for the expected one (EXPECTED below).

It never leaves a task running: should the RunTask start a task after all, it is stopped at once (StopTask), the
smoke says so and fails (it then proved nothing about the failure path).

Usage (what `make smoke` runs; AWS credentials and Region as for the AWS CLI):
    python scripts/smoke.py [--stack ecs-rerun] [--cluster NAME] [--family NAME] [--region R] [--timeout 600]
Needs: cloudformation:DescribeStacks, ecs:RunTask (+ iam:PassRole for the task definition's roles),
ecs:StopTask, ecs:ListClusters / ecs:ListTaskDefinitionFamilies (only when the stack lists none), sts:GetCallerIdentity,
cloudtrail:LookupEvents, logs:FilterLogEvents.

The delivery and the log are a seam (`Channel`): tests/e2e/test_smoke.py runs the same `run` against the local
stack, which has no CloudTrail: `LocalChannel` builds the CloudTrail-shaped EventBridge event from the smoke's own
request and answer, invokes the function through the Lambda emulator and reads its log file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

STARTED_BY = "ecs-rerun-smoke"
SMOKE_ATTRIBUTE = "ecs-rerun.smoke"
# The function's log messages that conclude the handling of a record (src/handler/episode.rs, src/handler/mod.rs).
FINISHED = "episode finished"
IGNORED = "event ignored"
EXPECTED = "not_retryable"
EXPECTED_WHY = (
    "a placement constraint no container instance can meet is a configuration failure, not a transient one: "
    "ECS reports it as ATTRIBUTE (a built-in rule: permanent) or as 'MemberOf placement constraint unsatisfied' "
    "(no rule matches: unknown), and an API error such as InvalidParameterException (no container instances, "
    "a Fargate-only task definition) is permanent too; each is notified at once and never retried, in a dry run "
    "as well. So: outcome not_retryable, one notification, no RunTask call by the function."
)
POLL_S = 15.0


class SmokeError(Exception):
    """Something the smoke cannot go on without; its text says what to do."""


@dataclass
class Target:
    """What the smoke aims at: the deployed function and where it may launch."""
    stack: str
    function_name: str
    log_group: str
    cluster: str
    family: str
    dry_run: bool = False
    topic_arn: str | None = None
    notes: list[str] = field(default_factory=list)   # how the cluster and family were chosen


@dataclass
class Provoked:
    """The smoke's RunTask call: what was sent and what came back."""
    request: dict
    at: dt.datetime                     # when it was sent (UTC)
    request_id: str | None
    response: dict | None = None        # the answer (HTTP 200): tasks and failures
    error_code: str | None = None       # or the API error
    error_message: str | None = None
    stopped: list[str] = field(default_factory=list)   # tasks it started after all, stopped at once

    @property
    def failed(self) -> bool:
        """CloudTrail records this call as a failed RunTask (the function's rule matches it)."""
        return self.error_code is not None or bool((self.response or {}).get("failures"))


@dataclass
class Outcome:
    """The function's concluding log line for the record."""
    event_id: str
    outcome: str
    notified: bool | None
    reason_class: str | None
    reason: str | None
    line: dict


class Channel(Protocol):
    """How the record reaches the function and how its outcome line is read back."""

    def event_id(self, provoked: Provoked, deadline: float, say: Callable[[str], None]) -> str:
        """The CloudTrail eventID of the record of `provoked` (once the function can have seen it)."""

    def outcome(self, event_id: str, since: dt.datetime, deadline: float,
                say: Callable[[str], None]) -> Outcome | None:
        """The function's outcome line for `event_id`, or None when none came before `deadline`."""


# ---- choosing the target -------------------------------------------------------------------------------------

def _listed(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def target_from_stack(cfn, ecs, stack_name: str, cluster: str | None = None,
                      family: str | None = None) -> Target:
    """The function, its log group, a cluster and a family of the stack `stack_name`, read from its outputs
    and parameters; `cluster`/`family` override the choice but must be among those the stack watches."""
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except Exception as err:   # botocore's ClientError, or no credentials / Region
        raise SmokeError(f"cannot read the stack {stack_name!r} ({err}); deploy it with `make deploy`, or name it "
                         f"with STACK=...") from err
    if not stacks:
        raise SmokeError(f"no stack {stack_name!r}")
    st = stacks[0]
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in st.get("Outputs") or []}
    params = {p["ParameterKey"]: p.get("ParameterValue", "") for p in st.get("Parameters") or []}
    arn = outputs.get("FunctionArn", "")
    if arn.count(":") < 6:
        raise SmokeError(f"the stack {stack_name!r} has no FunctionArn output ({arn!r}): is it an ecs-rerun stack?")
    function = arn.split(":")[6]
    notes = []

    clusters = _listed(params.get("Clusters"))
    if cluster:
        if clusters and cluster not in clusters:
            raise SmokeError(f"CLUSTER={cluster} is not one of the stack's Clusters ({', '.join(clusters)}): the "
                             f"function's rule would not see the call")
        notes.append(f"cluster {cluster}: given")
    elif clusters:
        cluster = clusters[0]
        notes.append(f"cluster {cluster}: the first of the stack's Clusters")
    else:
        arns = ecs.list_clusters(maxResults=1).get("clusterArns") or []
        if not arns:
            raise SmokeError("the stack watches every cluster but this account and Region have none: name one with "
                             "CLUSTER=...")
        cluster = arns[0].rsplit("/", 1)[-1]
        notes.append(f"cluster {cluster}: the stack watches every cluster; picked the first one (CLUSTER=... to choose)")

    families = _listed(params.get("TaskFamilies")) or ["*"]
    if family:
        if families != ["*"] and family not in families:
            raise SmokeError(f"FAMILY={family} is not one of the stack's TaskFamilies ({', '.join(families)})")
        notes.append(f"family {family}: given")
    elif families != ["*"]:
        family = families[0]
        notes.append(f"family {family}: the first of the stack's TaskFamilies")
    else:
        names = ecs.list_task_definition_families(status="ACTIVE", maxResults=1).get("families") or []
        if not names:
            raise SmokeError("the stack allows every task family but this account and Region have no active task "
                             "definition: name one with FAMILY=...")
        family = names[0]
        notes.append(f"family {family}: the stack allows every family; picked the first one (FAMILY=... to choose)")

    return Target(stack=stack_name, function_name=function, log_group=f"/aws/lambda/{function}", cluster=cluster,
                  family=family, dry_run=params.get("DryRun") == "true", topic_arn=outputs.get("TopicArn"),
                  notes=notes)


# ---- the call --------------------------------------------------------------------------------------------------

def impossible_request(target: Target, nonce: str) -> dict:
    """A RunTask request no container instance can take: EC2 launch type and a `memberOf` constraint on a
    custom attribute whose value is new for every smoke."""
    return {
        "cluster": target.cluster,
        "taskDefinition": target.family,
        "count": 1,
        "launchType": "EC2",
        "startedBy": STARTED_BY,
        "placementConstraints": [{"type": "memberOf",
                                  "expression": f"attribute:{SMOKE_ATTRIBUTE} == never-{nonce}"}],
        # Not "ecs-rerun-...": the function takes such tokens for its own retries and ignores them.
        "clientToken": f"smoke-{nonce}",
    }


def provoke(ecs, request: dict, say: Callable[[str], None]) -> Provoked:
    """Sends the RunTask; any task it started after all is stopped at once."""
    at = dt.datetime.now(dt.timezone.utc)
    try:
        answer = ecs.run_task(**request)
    except Exception as err:
        resp = getattr(err, "response", None)
        if not isinstance(resp, dict) or "Error" not in resp:
            raise SmokeError(f"RunTask got no answer: {err}") from err
        return Provoked(request, at, (resp.get("ResponseMetadata") or {}).get("RequestId"),
                        error_code=resp["Error"].get("Code"), error_message=resp["Error"].get("Message"))
    request_id = (answer.get("ResponseMetadata") or {}).get("RequestId")
    response = {k: v for k, v in answer.items() if k != "ResponseMetadata"}
    provoked = Provoked(request, at, request_id, response=response)
    for task in response.get("tasks") or []:
        arn = task.get("taskArn")
        if not arn:
            continue
        try:
            ecs.stop_task(cluster=request["cluster"], task=arn,
                          reason="ecs-rerun smoke: this task was never meant to start")
        except Exception as err:
            raise SmokeError(f"RunTask STARTED task {arn} and StopTask failed ({err}): stop it yourself, "
                             f"aws ecs stop-task --cluster {request['cluster']} --task {arn}") from err
        provoked.stopped.append(arn)
        say(f"!! RunTask STARTED task {arn} despite the impossible placement constraint: stopped it at once "
            f"(StopTask)")
    return provoked


# ---- reading the function's log lines ----------------------------------------------------------------------------

def line_event_id(line: dict) -> str | None:
    """The event id a JSON log line of the function is about: its episode span's or its own field."""
    fields = line.get("fields") or {}
    if fields.get("event_id"):
        return str(fields["event_id"])
    for span in [line.get("span") or {}] + list(line.get("spans") or []):
        if isinstance(span, dict) and span.get("event_id"):
            return str(span["event_id"])
    return None


def outcome_of(lines, event_id: str) -> Outcome | None:
    """The concluding line ("episode finished" or "event ignored") for `event_id` among JSON log lines."""
    for line in lines:
        if not isinstance(line, dict) or line_event_id(line) != event_id:
            continue
        fields = line.get("fields") or {}
        message = str(fields.get("message", ""))
        if message == FINISHED:
            notified = fields.get("notified")
            return Outcome(event_id, str(fields.get("outcome")), notified if isinstance(notified, bool) else None,
                           fields.get("reason_class"), fields.get("reason"), line)
        if message == IGNORED:
            return Outcome(event_id, "ignored", False, None, fields.get("reason"), line)
    return None


def _json_lines(messages) -> list[dict]:
    out = []
    for m in messages:
        with contextlib.suppress(ValueError, TypeError):
            value = json.loads(m)
            if isinstance(value, dict):
                out.append(value)
    return out


# ---- the deployed stack: CloudTrail's event history, CloudWatch Logs ---------------------------------------------

class AwsChannel:
    """The real path: CloudTrail -> EventBridge -> the function; read back through CloudTrail and CloudWatch Logs."""

    def __init__(self, cloudtrail, logs, log_group: str, poll_s: float = POLL_S,
                 sleep: Callable[[float], None] = time.sleep):
        self.cloudtrail = cloudtrail
        self.logs = logs
        self.log_group = log_group
        self.poll_s = poll_s
        self.sleep = sleep

    def event_id(self, provoked: Provoked, deadline: float, say) -> str:
        if not provoked.request_id:
            raise SmokeError("RunTask's answer carried no request id: the record cannot be found in CloudTrail")
        start = provoked.at - dt.timedelta(minutes=5)
        say(f"waiting for CloudTrail's record of request {provoked.request_id} (LookupEvents; usually a few minutes)")
        while True:
            found = self._lookup(provoked.request_id, start)
            if found:
                return found
            if time.monotonic() + self.poll_s > deadline:
                raise SmokeError(f"CloudTrail recorded no RunTask with request id {provoked.request_id} in time. "
                                 f"Without the record the function cannot see the call: check that CloudTrail "
                                 f"logs management events in this Region (the stack's CreateTrail=true makes a trail)")
            self.sleep(self.poll_s)

    def _lookup(self, request_id: str, start: dt.datetime) -> str | None:
        kw = {"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "RunTask"}],
              "StartTime": start, "MaxResults": 50}
        for _ in range(10):   # at most 500 RunTask records since the call: enough for one account's burst
            page = self.cloudtrail.lookup_events(**kw)
            for ev in page.get("Events") or []:
                with contextlib.suppress(ValueError, TypeError):
                    record = json.loads(ev.get("CloudTrailEvent") or "{}")
                    if record.get("requestID") == request_id and record.get("eventID"):
                        return record["eventID"]
            if not page.get("NextToken"):
                return None
            kw["NextToken"] = page["NextToken"]
        return None

    def outcome(self, event_id: str, since: dt.datetime, deadline: float, say) -> Outcome | None:
        say(f"waiting for the function's outcome line for event {event_id} in {self.log_group}")
        start_ms = int((since - dt.timedelta(minutes=1)).timestamp() * 1000)
        while True:
            kw = {"logGroupName": self.log_group, "startTime": start_ms, "filterPattern": f'"{event_id}"'}
            messages = []
            try:
                while True:
                    page = self.logs.filter_log_events(**kw)
                    messages += [e.get("message", "") for e in page.get("events") or []]
                    if not page.get("nextToken"):
                        break
                    kw["nextToken"] = page["nextToken"]
            except Exception as err:
                code = ((getattr(err, "response", None) or {}).get("Error") or {}).get("Code")
                if code != "ResourceNotFoundException":
                    raise SmokeError(f"cannot read {self.log_group}: {err}") from err
            found = outcome_of(_json_lines(messages), event_id)
            if found or time.monotonic() + self.poll_s > deadline:
                return found
            self.sleep(self.poll_s)


# ---- the local stack (tests/e2e): no CloudTrail, so the smoke delivers the record itself -----------------------

def cloudtrail_event(provoked: Provoked, identity: dict, region: str, event_id: str | None = None) -> dict:
    """The EventBridge event ("AWS API Call via CloudTrail") CloudTrail would emit for `provoked`, made by the
    caller `identity` (sts:GetCallerIdentity's answer); see events/06-attribute.json."""
    account = identity["Account"]
    arn = identity["Arn"]
    when = provoked.at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if ":assumed-role/" in arn:
        role, _, session = arn.split(":assumed-role/", 1)[1].partition("/")
        role_id = identity["UserId"].split(":", 1)[0]
        user = {"type": "AssumedRole", "principalId": identity["UserId"], "arn": arn, "accountId": account,
                "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": role_id,
                                                     "arn": f"arn:aws:iam::{account}:role/{role}",
                                                     "accountId": account, "userName": role},
                                   "attributes": {"creationDate": when, "mfaAuthenticated": "false"}}}
    else:
        user = {"type": "IAMUser", "principalId": identity["UserId"], "arn": arn, "accountId": account,
                "userName": arn.rsplit("/", 1)[-1]}
    detail = {
        "eventVersion": "1.09", "userIdentity": user, "eventTime": when,
        "eventSource": "ecs.amazonaws.com", "eventName": "RunTask", "awsRegion": region,
        "sourceIPAddress": "127.0.0.1", "userAgent": "ecs-rerun-smoke",
        "requestParameters": provoked.request,
        "responseElements": json.loads(json.dumps(provoked.response, default=str)) if provoked.response else None,
        "requestID": provoked.request_id or str(uuid.uuid4()), "eventID": event_id or str(uuid.uuid4()),
        "readOnly": False, "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": account,
        "eventCategory": "Management",
    }
    if provoked.error_code:
        detail["errorCode"] = provoked.error_code
        detail["errorMessage"] = provoked.error_message or ""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.ecs", "account": account, "time": when, "region": region, "resources": [],
            "detail": detail}


class LocalChannel:
    """The local stack (scripts/e2e/stack.py, with JSON function logs): the smoke's record is built from its own
    request and answer and sent to the Lambda emulator; the outcome is read from the emulator's log file."""

    def __init__(self, stack, identity: dict, region: str):
        self.stack = stack
        self.identity = identity
        self.region = region
        sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))
        from pump import FunctionLog   # the emulator's output file, JSON lines among others

        self.log = FunctionLog(Path(stack.log_dir) / "lambda.log")
        self.offset = 0
        self.invocation = None

    def event_id(self, provoked: Provoked, deadline: float, say) -> str:
        event = cloudtrail_event(provoked, self.identity, self.region)
        self.offset = self.log.size()
        say(f"local stack: delivering the record (eventID {event['detail']['eventID']}) to the emulator")
        self.invocation = self.stack.invoke(event, fresh=False, timeout=max(1.0, deadline - time.monotonic()))
        if not self.invocation.ok:
            raise SmokeError(f"the function failed on the record: {self.invocation.error}")
        return event["detail"]["eventID"]

    def outcome(self, event_id: str, since: dt.datetime, deadline: float, say) -> Outcome | None:
        while True:
            found = outcome_of(self.log.lines(self.offset), event_id)
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


# ---- the whole smoke -------------------------------------------------------------------------------------------

@dataclass
class Result:
    """What the smoke found; `ok` is its verdict."""
    target: Target
    provoked: Provoked
    event_id: str | None = None
    outcome: Outcome | None = None
    ok: bool = False


def run(target: Target, ecs, channel: Channel, timeout_s: float = 600,
        say: Callable[[str], None] = print) -> Result:
    """Provoke the failed RunTask, wait (at most `timeout_s`) for the function's outcome for it, report."""
    deadline = time.monotonic() + timeout_s
    say(f"ecs-rerun smoke: stack {target.stack}, function {target.function_name}, log group {target.log_group}")
    for note in target.notes:
        say(f"  {note}")
    if target.dry_run:
        say("  the stack runs with DryRun=true (it never calls RunTask; the expected outcome is the same)")
    say(f"expected: outcome {EXPECTED}, notification published. Why: {EXPECTED_WHY}")

    request = impossible_request(target, uuid.uuid4().hex[:16])
    say(f"RunTask on cluster {target.cluster}, family {target.family}, launch type EC2, startedBy {STARTED_BY}, "
        f"placement constraint memberOf {request['placementConstraints'][0]['expression']!r}")
    provoked = provoke(ecs, request, say)
    result = Result(target, provoked)
    if provoked.error_code:
        say(f"RunTask failed as planned with an API error: {provoked.error_code}: {provoked.error_message} "
            f"(request id {provoked.request_id})")
    elif provoked.response and provoked.response.get("failures"):
        reasons = "; ".join(str(f.get("reason")) for f in provoked.response["failures"])
        say(f"RunTask failed as planned: {reasons} (request id {provoked.request_id})")
    if provoked.stopped:
        say(f"FAILED: RunTask started {len(provoked.stopped)} task(s), stopped again at once; no task is left "
            f"running, but the smoke proved nothing about the failure path (is {SMOKE_ATTRIBUTE} set on an instance?)")
        return result
    if not provoked.failed:
        say("FAILED: RunTask neither started a task nor reported a failure; nothing for the function to handle")
        return result

    result.event_id = channel.event_id(provoked, deadline, say)
    say(f"CloudTrail eventID {result.event_id}")
    result.outcome = channel.outcome(result.event_id, provoked.at, deadline, say)
    out = result.outcome
    if out is None:
        say(f"FAILED: no outcome line for event {result.event_id} within {timeout_s:.0f}s. Look at the stack's "
            f"RuleDeadLetterQueueUrl and OnFailureQueueUrl outputs, and at the function's log group")
        return result
    say(f"outcome: {out.outcome} (reason class {out.reason_class}; {out.reason})")
    say(f"notification published: {'yes' if out.notified else 'no'}"
        + (f" (topic {target.topic_arn})" if out.notified and target.topic_arn else ""))
    result.ok = out.outcome == EXPECTED and bool(out.notified)
    say("smoke: OK, the deployed function saw the failed RunTask, did not retry it and notified"
        if result.ok else f"FAILED: expected outcome {EXPECTED} with a notification")
    return result


def samconfig_defaults(path: Path) -> dict:
    """The stack name and Region `make deploy` used: samconfig.toml's default environment, if there is one."""
    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as err:
        raise SmokeError(f"{path} is not valid TOML: {err}") from err
    default = config.get("default") or {}
    out = {}
    for section in ("global", "deploy"):
        params = (default.get(section) or {}).get("parameters") or {}
        out.update({k: params[k] for k in ("stack_name", "region") if isinstance(params.get(k), str)})
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="Provoke one failed RunTask that never starts a task and check what the "
                                             "deployed ecs-rerun did with it.")
    ap.add_argument("--stack", default=None, help="the CloudFormation stack (default: samconfig.toml's stack_name, "
                                                  "else ecs-rerun)")
    ap.add_argument("--cluster", default=None, help="a cluster the stack watches (default: its first)")
    ap.add_argument("--family", default=None, help="a task family the stack may run (default: its first)")
    ap.add_argument("--region", default=None, help="the AWS Region (default: samconfig.toml's, else as the AWS CLI)")
    ap.add_argument("--samconfig", default="samconfig.toml", type=Path, help="where `make deploy` read its settings")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for the outcome (default 600)")
    args = ap.parse_args(argv)
    import boto3   # here, so that --help works without it

    try:
        deployed = samconfig_defaults(args.samconfig)
    except SmokeError as err:
        print(f"smoke: {err}", file=sys.stderr)
        return 2
    args.stack = args.stack or deployed.get("stack_name") or "ecs-rerun"
    session = boto3.Session(region_name=args.region or deployed.get("region"))
    if not session.region_name:
        print("smoke: no AWS Region: pass REGION=... (or set AWS_REGION / the AWS CLI's region)", file=sys.stderr)
        return 2
    try:
        target = target_from_stack(session.client("cloudformation"), session.client("ecs"), args.stack,
                                   args.cluster or None, args.family or None)
        channel = AwsChannel(session.client("cloudtrail"), session.client("logs"), target.log_group)
        result = run(target, session.client("ecs"), channel, args.timeout, lambda s: print(s, flush=True))
    except SmokeError as err:
        print(f"smoke: {err}", file=sys.stderr)
        return 1
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
