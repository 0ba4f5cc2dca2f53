"""A small scripted reverse proxy between ecs-rerun and moto's server.

moto is a good stand-in for ECS, SNS and SQS, but for RunTask it never answers with placement
`failures` (it answers `"failures": []` or an HTTP 500), it ignores `clientToken`, and its tasks carry
no `createdAt`. This proxy sits in front of moto and, for the calls a test or the replay has scripted,
answers the way ECS and SNS do when things go wrong; every other call passes through to moto.

What it adds to moto:
  * Scripted RunTask outcomes: placement failures (`AGENT`, `RESOURCE:MEMORY` with some tasks placed,
    Fargate "Capacity is unavailable ..."), API errors (ThrottlingException, ServerException, any
    HTTP status) with or without tasks started before the error, a response lost after the tasks were
    started (the connection is dropped), or a delay.
  * Scripted SNS Publish errors (e.g. an HTTP 500 InternalError, a 403 AuthorizationError).
  * ECS's clientToken table (ECS_Idempotency.html), per (account, Region, cluster, token), whoever calls (the function,
    or a test playing the original caller through this proxy):
      - the token's first answer that started tasks or came back 200 (tasks and/or failures) is stored;
      - the same token with the same parameters gets that stored answer again, and nothing starts;
      - the same token with other parameters gets a ConflictException whose `resourceIds` are the
        task ARNs the token started;
      - calls with the same token that overlap are handled one after the other (the later one gets
        the stored answer), so concurrent deliveries cannot start a token's tasks twice;
      - an error answer may or may not have started tasks (`error_after_start` vs `error`): one that
        started tasks is stored (ECS answers a retry with those tasks), one that started nothing is not
        (the token is still unused, as ECS keeps it).
    "Same parameters" compares the JSON request without `clientToken`, with `count` defaulting to 1,
    null members dropped and `tags` in key order.
  * `createdAt` on tasks (moto has none): the time the proxy saw moto start the task, added to RunTask
    answers (so a replayed answer shows the original time) and to DescribeTasks answers for the tasks
    it knows; `/__control/created` sets it for a task (a run from before the failed call). DescribeTasks
    also drops moto's `"startedBy": ""` for tasks started without one, as ECS leaves the member out.
  * Subnet-id translation: the sample events name subnets that cannot exist in moto (moto picks its own
    ids), so the ids in `awsvpcConfiguration.subnets` are mapped to subnets seeded in moto.
  * Accounts (issue 20): every call is forwarded with moto's `x-moto-account-id` header naming the
    account it runs in, the way AWS decides it: the account of the access key that signed it. A key
    from an STS AssumeRole answer the proxy passed on belongs to the RoleArn's account (learned from
    that answer, and kept across `reset`, as the function keeps its credentials while moto forgets
    its IAM on /moto-api/reset); any other key is the stack's own account's; a call that already
    carries the header keeps it. Every logged call names its `account` and `region` (the Region of
    its signature). STS calls are logged (`service` "sts": the operation, for AssumeRole the
    `role_arn`, `session` and the `assumed_account`).
  * A log of every ECS and SNS call it saw (decoded request, what it did, decoded response), and of the
    function's SQS calls (SendMessage to the delay queue: the queue, `DelaySeconds`, the decoded body,
    its `kind` (hop or recheck) and the episode's `event_id` it carries, see `delay_message`); SQS calls
    pass through unscripted.
  * DynamoDB (the launch store, JSON protocol, X-Amz-Target DynamoDB_20120810.*) passes through
    untouched, body and headers as sent (its x-amz-crc32 too); each call is logged: the operation, the
    table, the key (`pk`) it names, the HTTP status and the error type of a failed call (a conditional
    PutItem refused is `ConditionalCheckFailedException`).
  * A time warp for the delay queue, off unless configured: with `{"sqs_delay_cap_s": N}` a SendMessage
    whose `DelaySeconds` is above N goes to moto with N; the log keeps the delay the function asked
    for (`delay_seconds`) and the one applied (`delay_applied`). It lets a test see rechecks of
    60..480 s come back in a second or two, and check the delays the function chose.

moto's ListTasks honours `cluster`, `family`, `startedBy` and `desiredStatus` (checked by
tests/e2e/test_e2e.py::test_endpoint_models_what_the_function_reads); without `desiredStatus` it lists
tasks in every state where ECS lists only RUNNING ones, and it has no paging (all ARNs, no nextToken).

Control API, on the same port, JSON in and out (the function never calls these paths):
  POST /__control/reset                 forget scripts, log, the token table and task times
  POST /__control/config                {"subnets": {"event-id": "moto-id"}, "container_instances": {"cluster": [arn]},
                                         (a cluster of another account or Region: "ACCOUNT:REGION:cluster")
                                         "sqs_delay_cap_s": N or null}   (the cap is forgotten on reset)
  POST /__control/script                {"ecs:RunTask": [action, ...], "sns:Publish": [action, ...]}
                                        appends to each operation's queue; one action is used per call
                                        (an action with "sticky": true stays and answers every later call)
  POST /__control/clear-script          forget the scripts
  POST /__control/created               {"taskArn": arn, "createdAt": epoch seconds}
  GET  /__control/log?since=N           the calls seen, from sequence number N on
  GET  /__control/state                 remaining scripts, known tokens, the temporary keys learned (and whose)
Actions (a call with no scripted action passes through):
  {"do": "pass"}                                            forward to moto
  {"do": "fail", "reason": "AGENT", "place": 0}             place `place` tasks in moto, report the rest as failed
        optional "arn", "detail"; for short ECS codes (AGENT, RESOURCE:*, ATTRIBUTE, LOCATION) one failure
        per container instance of the cluster is reported (as ECS does); for other text one per missing task
  {"do": "error", "code": "ThrottlingException", "message": "Rate exceeded", "status": 400}
        nothing started; the token stays unused
  {"do": "error_after_start", "code": "ServerException", "status": 500}
        forward to moto (the tasks start), store that answer under the token, then answer the error
  {"do": "drop"}                                            close the connection without an answer, nothing done
  {"do": "drop_after_start"}                                forward to moto (tasks start), then drop the answer;
        with "drop_replays": N the next N calls with the same token are dropped too (the SDK's own retries)
  any action may carry "delay_ms": N (wait before acting: a slow endpoint / a client timeout)
  any action may carry "only_capacity_provider": "FARGATE_SPOT": a call whose capacityProviderStrategy does not
        name that provider passes through to moto instead (with "sticky": a Spot outage while FARGATE starts)
  any action may carry "whole_call": true: it then answers every try of the one SDK call that took it
        (the SDK's own retries, same `amz-sdk-invocation-id` header), not only the first; after
        `error_after_start` those retries get the error again instead of the stored answer (RunTask
        and SNS Publish)
  {"do": "error", ..., "whole_call": true} thus fails one SDK call of the function as a whole, however
        many times its SDK retries it, and the function's next call (a new invocation id) is not scripted

Run standalone: python proxy.py --upstream http://127.0.0.1:5000 [--port 0]
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import re
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ECS_TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
SQS_TARGET_PREFIX = "AmazonSQS."
DYNAMODB_TARGET_PREFIX = "DynamoDB_20120810."
SHORT_ECS_REASONS = re.compile(r"^(AGENT|ATTRIBUTE|LOCATION|MISSING|INACTIVE|RESOURCE:[A-Z]+)$")
CONTROL = "/__control/"


def _cluster_name(cluster: str | None) -> str:
    if not cluster:
        return "default"
    return cluster.rsplit("/", 1)[-1] if cluster.startswith("arn:") else cluster


def prune(v):
    """A JSON value without its null members, at any depth."""
    if isinstance(v, dict):
        return {k: prune(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [prune(x) for x in v]
    return v


def fingerprint(params: dict) -> str:
    """What ECS compares when a clientToken comes back: the request without the token, `count`
    defaulting to 1, null members dropped, tags in key order."""
    p = prune({k: v for k, v in params.items() if k != "clientToken"})
    p["count"] = int(p.get("count") or 1)
    if isinstance(p.get("tags"), list):
        p["tags"] = sorted(p["tags"], key=lambda t: (str(t.get("key")), str(t.get("value"))))
    return json.dumps(p, sort_keys=True)


class ProxyState:
    """Everything the proxy remembers; guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()
        self.subnets: dict[str, str] = {}
        self.container_instances: dict[str, list[str]] = {}
        # access key id -> {"account", "role_arn", "session"}, learned from AssumeRole answers
        self.keys: dict[str, dict] = {}

    def reset(self) -> None:
        self.scripts: dict[str, list[dict]] = {}
        self.log: list[dict] = []
        self.tokens: dict[tuple[str, str, str, str], dict] = {}   # (account, region, cluster, token)
        self.token_locks: dict[tuple[str, str, str, str], threading.Lock] = {}   # one call of a token at a time
        self.created: dict[str, float] = {}       # taskArn -> createdAt (epoch seconds)
        self.whole_calls: dict[str, dict] = {}    # amz-sdk-invocation-id -> the action for all its tries
        self.delay_cap_s: int | None = None       # the time warp of SendMessage's DelaySeconds (off)
        self.seq = 0

    def next_action(self, op: str, invocation: str | None = None) -> dict:
        if invocation and invocation in self.whole_calls:
            return dict(self.whole_calls[invocation], retry_of_scripted_call=True)
        queue = self.scripts.get(op) or []
        if not queue:
            return {"do": "pass"}
        action = queue[0]
        if not action.get("sticky"):
            queue.pop(0)
        if action.get("whole_call") and invocation:
            self.whole_calls[invocation] = dict(action)
        return dict(action)

    def record(self, entry: dict) -> dict:
        self.seq += 1
        entry["seq"] = self.seq
        self.log.append(entry)
        return entry


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Answers go out in two writes (headers, body): with Nagle and delayed ACK each call would wait ~40 ms.
    disable_nagle_algorithm = True
    server: "FaultProxy"

    # ---- plumbing ---------------------------------------------------------------------------
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        if self.server.verbose:
            sys.stderr.write("proxy: " + (format % args) + "\n")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() in ("content-length", "transfer-encoding", "connection", "server", "date"):
                continue
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj, default=str).encode(), {"Content-Type": "application/json"})

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        up = urllib.parse.urlsplit(self.server.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "content-length", "transfer-encoding", "connection",
                                            "x-moto-account-id")}
            headers["Host"] = up.netloc
            headers["Content-Length"] = str(len(body))
            headers["x-moto-account-id"] = self._account()
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, dict(resp.getheaders()), data
        finally:
            conn.close()

    # ---- the account and Region of a call ---------------------------------------------------------
    def _credential(self) -> tuple[str | None, str | None]:
        """The access key id and the Region of the call's SigV4 signature."""
        m = re.search(r"Credential=([^/]+)/[^/]+/([^/]+)/", self.headers.get("Authorization", ""))
        return (m.group(1), m.group(2)) if m else (None, None)

    def _account(self) -> str:
        """The account the call runs in: the header if it names one, else its access key's account."""
        named = self.headers.get("x-moto-account-id")
        if named:
            return named
        key, _ = self._credential()
        with self.server.state.lock:
            learned = self.server.state.keys.get(key or "")
        return learned["account"] if learned else self.server.account

    def _place(self) -> dict:
        return {"account": self._account(), "region": self._credential()[1] or self.server.region}

    # ---- dispatch -----------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_PUT(self) -> None:  # noqa: N802
        self._handle()

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle()

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle()

    def _handle(self) -> None:
        body = self._read_body()
        if self.path.startswith(CONTROL):
            return self._control(body)
        service, op, params = self._identify(body)
        key = f"{service}:{op}"
        if key == "ecs:RunTask":
            return self._run_task(params)
        if key == "sns:Publish":
            return self._sns_publish(body, params)
        warp = None
        if key == "sqs:SendMessage":
            with self.server.state.lock:
                cap = self.server.state.delay_cap_s
            asked = int(params.get("DelaySeconds") or 0)
            if cap is not None and asked > cap:
                warp = cap
                body = json.dumps({**params, "DelaySeconds": cap}).encode()
        status, headers, data = self._forward(body)
        entry = {"t": time.time(), "service": service, "op": op, "action": "pass", "status": status,
                 **self._place()}
        if service == "sts":
            entry.update(_sts_entry(op, params, status, data))
            if entry.get("access_key") and entry.get("assumed_account"):
                with self.server.state.lock:
                    self.server.state.keys[entry["access_key"]] = {
                        "account": entry["assumed_account"], "role_arn": entry["role_arn"], "session": entry["session"]}
        if service == "ecs":
            entry["request"] = params
            if status == 200 and op in ("DescribeTasks", "ListTasks"):
                answer = _maybe_json(data)
                if isinstance(answer, dict):
                    if op == "DescribeTasks":
                        self._complete_tasks(answer.get("tasks") or [])
                        data = json.dumps(answer).encode()
                    entry["response"] = answer
        if service == "sqs":
            entry.update(_sqs_entry(op, params))
            if op == "SendMessage":
                entry["delay_applied"] = entry["delay_seconds"] if warp is None else warp
        if service == "dynamodb":
            entry.update(_dynamodb_entry(params, status, data))
        if service in ("ecs", "sns", "sqs", "dynamodb", "sts"):
            with self.server.state.lock:
                self.server.state.record(entry)
        self._send(status, data, headers)

    def _complete_tasks(self, tasks: list[dict]) -> None:
        """What moto leaves out of a task and ECS has: createdAt (as the proxy saw it start); no
        `startedBy` member at all for a task started without one."""
        with self.server.state.lock:
            for t in tasks:
                created = self.server.state.created.get(t.get("taskArn", ""))
                if created is not None and t.get("createdAt") is None:
                    t["createdAt"] = created
                if t.get("startedBy") == "":
                    del t["startedBy"]

    def _identify(self, body: bytes) -> tuple[str, str, dict]:
        target = self.headers.get("X-Amz-Target", "")
        if target.startswith(ECS_TARGET_PREFIX):
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                params = {}
            return "ecs", target[len(ECS_TARGET_PREFIX):], params
        if target.startswith(SQS_TARGET_PREFIX):          # SQS's JSON protocol (the Rust SDK's)
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                params = {}
            return "sqs", target[len(SQS_TARGET_PREFIX):], params
        if target.startswith(DYNAMODB_TARGET_PREFIX):     # DynamoDB's JSON protocol: read, never changed
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                params = {}
            return "dynamodb", target[len(DYNAMODB_TARGET_PREFIX):], params
        ctype = self.headers.get("Content-Type", "")
        if "x-www-form-urlencoded" in ctype:
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            flat = {k: v[0] for k, v in form.items()}
            auth = self.headers.get("Authorization", "")
            m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", auth)
            service = m.group(1) if m else ("sns" if "TopicArn" in flat else "query")
            return service, flat.get("Action", "?"), flat
        if target:
            return target.split(".", 1)[0].lower(), target.split(".", 1)[-1], {}
        return "other", self.command, {}

    # ---- control API --------------------------------------------------------------------------
    def _control(self, body: bytes) -> None:
        st = self.server.state
        path = urllib.parse.urlsplit(self.path)
        name = path.path[len(CONTROL):]
        try:
            payload = json.loads(body) if body else {}
        except ValueError as e:
            return self._send_json(400, {"error": f"bad JSON: {e}"})
        with st.lock:
            if name == "reset":
                st.reset()
                return self._send_json(200, {"ok": True})
            if name == "config":
                st.subnets.update(payload.get("subnets", {}))
                for cluster, arns in payload.get("container_instances", {}).items():
                    st.container_instances[cluster] = list(arns)
                if "sqs_delay_cap_s" in payload:
                    cap = payload["sqs_delay_cap_s"]
                    st.delay_cap_s = None if cap is None else int(cap)
                return self._send_json(200, {"ok": True})
            if name == "script":
                for op, actions in payload.items():
                    if isinstance(actions, dict):
                        actions = [actions]
                    st.scripts.setdefault(op, []).extend(actions)
                return self._send_json(200, {"ok": True, "scripts": st.scripts})
            if name == "clear-script":
                st.scripts = {}
                st.whole_calls = {}
                return self._send_json(200, {"ok": True})
            if name == "created":
                st.created[payload["taskArn"]] = float(payload["createdAt"])
                return self._send_json(200, {"ok": True})
            if name == "log":
                since = int(urllib.parse.parse_qs(path.query).get("since", ["0"])[0])
                return self._send_json(200, [e for e in st.log if e["seq"] > since])
            if name == "state":
                return self._send_json(200, {
                    "scripts": st.scripts,
                    "tokens": [{"account": a, "region": g, "cluster": c, "clientToken": t,
                                "tasks": len(r["response"].get("tasks", [])),
                                "taskArns": [x.get("taskArn") for x in r["response"].get("tasks", [])],
                                "failures": len(r["response"].get("failures", []))}
                               for (a, g, c, t), r in st.tokens.items()],
                    "subnets": st.subnets, "container_instances": st.container_instances,
                    "keys": st.keys})
        self._send_json(404, {"error": f"unknown control path {name}"})

    # ---- ECS RunTask --------------------------------------------------------------------------
    def _ecs_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": str(uuid.uuid4())}

    def _run_task(self, params: dict) -> None:
        """One RunTask; calls with the same (cluster, clientToken) are handled one after the other, as ECS
        does not start a token's tasks twice when its calls overlap (the second gets the first's answer)."""
        arrived = time.time()
        cluster = _cluster_name(params.get("cluster"))
        token = params.get("clientToken")
        place = self._place()
        if not token:
            return self._run_task_one(params, cluster, token, arrived, place)
        with self.server.state.lock:
            lock = self.server.state.token_locks.setdefault((place["account"], place["region"], cluster, token),
                                                            threading.Lock())
        with lock:
            return self._run_task_one(params, cluster, token, arrived, place)

    def _run_task_one(self, params: dict, cluster: str, token: str | None, arrived: float, where: dict) -> None:
        st = self.server.state
        invocation = self.headers.get("amz-sdk-invocation-id")
        fp = fingerprint(params)
        token_key = (where["account"], where["region"], cluster, token)
        entry = {"t": arrived, "service": "ecs", "op": "RunTask", "cluster": cluster, **where,
                 "clientToken": token, "count": params.get("count", 1),
                 "taskDefinition": params.get("taskDefinition"),
                 "tags": {t.get("key"): t.get("value") for t in params.get("tags") or []},
                 "request": params, "invocation": invocation,
                 "sdk_attempt": self.headers.get("amz-sdk-request")}

        with st.lock:
            known = st.tokens.get(token_key) if token else None
            action = None if known else st.next_action("ecs:RunTask", invocation)
        if known:
            if known.get("drop_replays", 0) > 0:
                with st.lock:
                    known["drop_replays"] -= 1
                entry.update(action="idempotent-replay dropped (scripted)", status=None, response=None,
                             tasks_started=0)
                self._log(entry)
                return self._drop()
            if known.get("error") and invocation and invocation == known.get("error_invocation"):
                status, err = known["error"]
                entry.update(action="idempotent-replay answered with the scripted error again (same SDK call)",
                             status=status, response=err, tasks_started=0)
                self._log(entry)
                return self._send_json_ecs(status, err)
            if known["fingerprint"] == fp:
                entry.update(action="idempotent-replay", status=200, response=known["response"],
                             tasks_started=0)
                self._log(entry)
                return self._send_json_ecs(200, known["response"])
            arns = [t["taskArn"] for t in known["response"].get("tasks", [])]
            err = {"__type": "ConflictException", "message":
                   "The specified client token has already been used with different parameters.",
                   "resourceIds": arns}
            entry.update(action="idempotency-conflict", status=400, response=err, tasks_started=0)
            self._log(entry)
            return self._send_json_ecs(400, err)

        only = action.get("only_capacity_provider")
        if only and only not in [i.get("capacityProvider") for i in params.get("capacityProviderStrategy") or []]:
            action = {"do": "pass"}
        entry["action"] = action.get("do", "pass")
        if action.get("retry_of_scripted_call"):
            entry["action"] += " (again: a retry of the same SDK call)"
        if action.get("delay_ms"):
            time.sleep(action["delay_ms"] / 1000.0)
        do = action.get("do", "pass")
        if do == "error":
            status = int(action.get("status", 400))
            err = {"__type": action.get("code", "ServerException"),
                   "message": action.get("message", "Scripted error")}
            entry.update(status=status, response=err, tasks_started=0)
            self._log(entry)
            return self._send_json_ecs(status, err)
        if do == "drop":
            entry.update(status=None, response=None, tasks_started=0)
            self._log(entry)
            return self._drop()

        requested = int(params.get("count", 1) or 1)
        starts = do in ("pass", "drop_after_start", "error_after_start")
        place = requested if starts else min(int(action.get("place", 0)), requested)
        response: dict = {"tasks": [], "failures": []}
        if place > 0:
            upstream_params = copy.deepcopy(params)
            upstream_params["count"] = place
            self._translate_subnets(upstream_params)
            status, headers, data = self._forward(json.dumps(upstream_params).encode())
            if status != 200:
                entry.update(action=f"{do} (moto answered {status})", status=status,
                             response=_maybe_json(data), tasks_started=0)
                self._log(entry)
                return self._send(status, data, headers)
            response = json.loads(data)
            response.setdefault("failures", [])
            now = round(time.time(), 3)
            with st.lock:
                for t in response.get("tasks", []):
                    t.setdefault("createdAt", now)
                    st.created[t["taskArn"]] = t["createdAt"]
        if do == "fail":
            response["failures"] = self._failures(action, cluster, requested - len(response["tasks"]), where)
        error = None
        if do == "error_after_start":
            error = (int(action.get("status", 500)),
                     {"__type": action.get("code", "ServerException"),
                      "message": action.get("message", "Scripted error after the tasks started")})
        if token:
            with st.lock:
                st.tokens[token_key] = {
                    "fingerprint": fp, "response": response,
                    "drop_replays": int(action.get("drop_replays", 0)),
                    "error": error, "error_invocation": invocation if action.get("whole_call") else None}
        if do == "drop_after_start":
            entry.update(status=None, response=response, tasks_started=len(response["tasks"]))
            self._log(entry)
            return self._drop()
        if error:
            entry.update(status=error[0], response=error[1], tasks_started=len(response["tasks"]),
                         started_answer=response)
            self._log(entry)
            return self._send_json_ecs(*error)
        entry.update(status=200, response=response, tasks_started=len(response["tasks"]))
        self._log(entry)
        self._send_json_ecs(200, response)

    def _failures(self, action: dict, cluster: str, missing: int, where: dict) -> list[dict]:
        reason = action.get("reason", "AGENT")
        extra = {"detail": action["detail"]} if action.get("detail") else {}
        if action.get("arn"):
            return [{"arn": action["arn"], "reason": reason, **extra}]
        if SHORT_ECS_REASONS.match(reason):
            instances = self.server.state.container_instances
            home = (where["account"], where["region"]) == (self.server.account, self.server.region)
            arns = (instances.get(f"{where['account']}:{where['region']}:{cluster}")
                    or (instances.get(cluster) if home else None)
                    or [f"arn:aws:ecs:{where['region']}:{where['account']}:container-instance/{cluster}/"
                        + uuid.uuid4().hex])
            return [{"arn": a, "reason": reason, **extra} for a in arns]
        return [{"reason": reason, **extra} for _ in range(max(missing, 1))]

    def _translate_subnets(self, params: dict) -> None:
        vpc = (params.get("networkConfiguration") or {}).get("awsvpcConfiguration")
        if vpc and vpc.get("subnets"):
            vpc["subnets"] = [self.server.state.subnets.get(s, s) for s in vpc["subnets"]]

    def _send_json_ecs(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), self._ecs_headers())

    def _log(self, entry: dict) -> None:
        with self.server.state.lock:
            self.server.state.record(entry)

    # ---- SNS Publish --------------------------------------------------------------------------
    def _sns_publish(self, body: bytes, params: dict) -> None:
        st = self.server.state
        attrs = {}
        for k, v in params.items():
            m = re.match(r"MessageAttributes\.entry\.(\d+)\.Name$", k)
            if m:
                attrs[v] = params.get(f"MessageAttributes.entry.{m.group(1)}.Value.StringValue")
        entry = {"t": time.time(), "service": "sns", "op": "Publish", **self._place(), "topic": params.get("TopicArn"),
                 "subject": params.get("Subject"), "attributes": attrs, "request": params}
        with st.lock:
            action = st.next_action("sns:Publish", self.headers.get("amz-sdk-invocation-id"))
        entry["action"] = action.get("do", "pass")
        if action.get("delay_ms"):
            time.sleep(action["delay_ms"] / 1000.0)
        if entry["action"] == "error":
            status = int(action.get("status", 500))
            code = action.get("code", "InternalError")
            msg = action.get("message", "Scripted SNS failure")
            kind = "Receiver" if status >= 500 else "Sender"
            xml = (f'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>{kind}</Type>'
                   f"<Code>{code}</Code><Message>{msg}</Message></Error>"
                   f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
            entry.update(status=status, response={"code": code, "message": msg})
            self._log(entry)
            return self._send(status, xml.encode(), {"Content-Type": "text/xml"})
        if entry["action"] in ("drop",):
            entry.update(status=None, response=None)
            self._log(entry)
            return self._drop()
        status, headers, data = self._forward(body)
        entry.update(status=status, response=data.decode("utf-8", "replace")[:500])
        self._log(entry)
        self._send(status, data, headers)


def _sqs_entry(op: str, params: dict) -> dict:
    """What the log keeps of an SQS call: the queue, and for SendMessage the delay and the body (decoded
    when it is JSON) with the `event_id` of the episode a delay-queue message carries."""
    out: dict = {"queue": params.get("QueueUrl")}
    if op == "SendMessage":
        body = params.get("MessageBody")
        decoded = _maybe_json(body.encode()) if isinstance(body, str) else body
        kind, event_id = delay_message(decoded)
        out.update(delay_seconds=int(params.get("DelaySeconds") or 0), body=decoded, event_id=event_id, kind=kind)
    return out


def delay_message(body) -> tuple[str | None, str | None]:
    """What a delay-queue message (decoded JSON) is, and the episode it belongs to: ("hop", its
    `origin.event_id`), ("recheck", the stopped task's `event_id`: its state change's id; an older
    format carried the whole event, whose `id` it is), or (None, None) for anything else."""
    if not isinstance(body, dict):
        return None, None
    if isinstance(body.get("origin"), dict):
        return "hop", body["origin"].get("event_id")
    if isinstance(body.get("recheck"), dict):
        return "recheck", body["recheck"].get("event_id") or body["recheck"].get("id")
    return None, None


def _sts_entry(op: str, params: dict, status: int, data: bytes) -> dict:
    """What the log keeps of an STS call: for AssumeRole the role, the session name and, when it was
    granted, the temporary key's id and the account it belongs to (read from the answer)."""
    if op != "AssumeRole":
        return {}
    out: dict = {"role_arn": params.get("RoleArn"), "session": params.get("RoleSessionName")}
    text = data.decode("utf-8", "replace")
    key = re.search(r"<AccessKeyId>([^<]+)</AccessKeyId>", text)
    arn = re.search(r"<Arn>arn:[^:]+:sts::(\d{12}):assumed-role/[^<]+</Arn>", text)
    if status == 200 and key and arn:
        out.update(access_key=key.group(1), assumed_account=arn.group(1))
    return out


def _dynamodb_entry(params: dict, status: int, data: bytes) -> dict:
    """What the log keeps of a DynamoDB call: the table, the `pk` it names (a BatchWriteItem's: every
    item's), the status and, for a failed call, the error type."""
    keys: list[str] = []
    table = params.get("TableName")
    for source in (params.get("Key"), params.get("Item")):
        if isinstance(source, dict) and isinstance(source.get("pk"), dict):
            keys.append(source["pk"].get("S"))
    for name, requests in (params.get("RequestItems") or {}).items():
        table = table or name
        for r in requests:
            item = ((r.get("PutRequest") or {}).get("Item") or (r.get("DeleteRequest") or {}).get("Key") or {})
            if isinstance(item.get("pk"), dict):
                keys.append(item["pk"].get("S"))
    out: dict = {"table": table, "keys": keys, "request": params}
    if status != 200:
        answer = _maybe_json(data)
        kind = answer.get("__type", "") if isinstance(answer, dict) else ""
        out["error"] = kind.rsplit("#", 1)[-1]
    return out


def _maybe_json(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")[:500]


class FaultProxy(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: str, port: int = 0, host: str = "127.0.0.1",
                 region: str = "us-east-1", account: str = "111122223333", verbose: bool = False):
        super().__init__((host, port), Handler)
        self.upstream = upstream
        self.state = ProxyState()
        self.region = region
        self.account = account
        self.verbose = verbose
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FaultProxy":
        self._thread = threading.Thread(target=self.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="moto server URL")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    proxy = FaultProxy(args.upstream, args.port, verbose=args.verbose)
    print(proxy.url, flush=True)
    try:
        proxy.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
