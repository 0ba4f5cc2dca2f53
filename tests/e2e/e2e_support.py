"""Helpers shared by the end-to-end test modules: sample records, invoking the function through the
stack, reading the RunTask calls the proxy saw, and the tasks of one job that moto holds."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from proxy import fingerprint
from stack import ACCOUNT, FUNCTION

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
EXPECTED = json.loads((EVENTS / "expected.json").read_text())
MALFORMED = ROOT / "tests" / "fixtures" / "malformed-event.json"
# ecs-rerun's own clientTokens (ECS: at most 64 characters, ASCII 33-126).
OWN_TOKEN = re.compile(r"^ecs-rerun-[0-9A-Za-z_-]+$")
ATTEMPT_TAG = "ecs-rerun:attempt"
NOT_REPLAYED = {"count", "tags", "clientToken", "referenceId"}


def event(name: str) -> dict:
    """A sample event (as stored: retimed only when it is sent)."""
    return json.loads((EVENTS / name).read_text())


def record(name_or_event) -> dict:
    """The CloudTrail record (`detail`) of a sample event or of an event."""
    ev = event(name_or_event) if isinstance(name_or_event, str) else name_or_event
    return ev["detail"]


def invoke(stack, ev, script: dict | None = None, fresh: bool = True):
    """Send a sample event (file name or path) or an event (dict), with `script` for the proxy."""
    stack.control.clear_script()
    if script:
        stack.control.script(script)
    if isinstance(ev, str):
        ev = EVENTS / ev
    res = stack.invoke(ev, fresh=fresh)
    stack.control.clear_script()
    return res


def run_task_calls(res) -> list[dict]:
    return [e for e in res.calls if e.get("op") == "RunTask"]


def token_groups(calls: list[dict]) -> list[list[dict]]:
    """The RunTask calls grouped by clientToken, in the order each token was first sent: one group per
    request ECS sees as one (a resend of the same token is the same request)."""
    groups: dict[str, list[dict]] = {}
    for e in calls:
        groups.setdefault(e.get("clientToken") or f"<none {e['seq']}>", []).append(e)
    return list(groups.values())


def same_request(sent: dict, recorded: dict) -> bool:
    """The request ECS would see as the same call (see proxy.fingerprint), token included."""
    return (sent.get("clientToken") == recorded.get("clientToken")
            and fingerprint(sent) == fingerprint(recorded))


def is_original(call: dict, detail: dict) -> bool:
    """The call is the recorded one sent again: the recorded token, untagged by ecs-rerun."""
    token = (detail.get("requestParameters") or {}).get("clientToken")
    return bool(token) and call.get("clientToken") == token and ATTEMPT_TAG not in call["tags"]


def same_task_definition(sent: str, original: str) -> bool:
    return sent == original or sent.rsplit("/", 1)[-1] == original.rsplit("/", 1)[-1]


def job_tasks(stack, detail: dict) -> list[dict]:
    """The tasks moto holds for the job of this record (its cluster and task definition family, in any
    state). After `fresh`, those are the scenario's: the caller's run(s) a test started and the function's."""
    return stack.job_tasks(detail["requestParameters"])


def tags_of(task: dict) -> dict:
    return {x["key"]: x["value"] for x in task.get("tags") or []}


def start_as_caller(stack, detail: dict, **changes) -> list[dict]:
    """RunTask through the proxy as the original caller would have sent it (its clientToken included,
    if it recorded one): as the caller's own SDK retry that went through. Returns the tasks started."""
    params = copy.deepcopy(detail["requestParameters"])
    params.update(changes)
    params = {k: v for k, v in params.items() if v is not None}
    answer = stack.caller_client("ecs").run_task(**params)
    assert answer["tasks"], answer
    return answer["tasks"]


def with_detail(ev: dict, **changes) -> dict:
    """A copy of an event with some members of its record replaced (None removes one)."""
    ev = copy.deepcopy(ev)
    for k, v in changes.items():
        if v is None:
            ev["detail"].pop(k, None)
        else:
            ev["detail"][k] = v
    return ev


def as_session(ev: dict, session: str = FUNCTION, role: str = "ecs-rerun-function-role") -> dict:
    """A copy of an event whose call was made by the role session `session` (by default the function's
    own Lambda session: its session name is the function name)."""
    ev = copy.deepcopy(ev)
    ui = ev["detail"]["userIdentity"]
    ui.update(type="AssumedRole", arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}",
              principalId=f"AROAEXAMPLEROLEID:{session}", accountId=ACCOUNT)
    ui.pop("invokedBy", None)
    issuer = ui.setdefault("sessionContext", {}).setdefault("sessionIssuer", {})
    issuer.update(type="Role", principalId="AROAEXAMPLEROLEID", arn=f"arn:aws:iam::{ACCOUNT}:role/{role}",
                  accountId=ACCOUNT, userName=role)
    return ev


def run_episode(stack, ev, script: dict | None = None, fresh: bool = True, timeout: float = 30):
    """With the delay queue: send a sample event (file name or path) or an event (dict) with `script`
    for the proxy (kept for the whole episode, every hop), wait until the queue has settled (the episode
    concluded, nothing in flight) and return what the stack saw of the episode (stack.episode)."""
    stack.control.clear_script()
    if script:
        stack.control.script(script)
    if isinstance(ev, str):
        ev = EVENTS / ev
    try:
        res = stack.invoke(ev, fresh=fresh)
        assert res.event_id, "not an EventBridge event with a record"
        stack.settle(timeout)
    finally:
        stack.control.clear_script()
    return stack.episode(res.event_id)
