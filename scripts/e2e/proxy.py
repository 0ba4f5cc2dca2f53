"""A small scripted reverse proxy between ecs-rerun and moto's server.

moto is a good stand-in for ECS, SNS and SQS, but for RunTask it never answers with placement
`failures` (it answers `"failures": []` or an HTTP 500) and it ignores `clientToken`. This proxy
sits in front of moto and, for the calls a test or the replay has scripted, answers the way ECS
and SNS do when things go wrong; every other call passes through to moto unchanged.

What it adds to moto:
  * Scripted RunTask outcomes: placement failures (`AGENT`, `RESOURCE:MEMORY` with some tasks placed,
    Fargate "Capacity is unavailable ..."), API errors (ThrottlingException, ServerException, any
    HTTP status), a response lost after the tasks were started (the connection is dropped), or a delay.
  * Scripted SNS Publish errors (e.g. an HTTP 500 InternalError, a 403 AuthorizationError).
  * RunTask idempotency as ECS documents it (ECS_Idempotency.html): a `clientToken` seen before with
    the same parameters returns the original response (tasks *and* failures) without starting
    anything; the same token with different parameters is a ConflictException listing the task ARNs.
    Tokens are scoped per cluster. Calls that ended in an error (4xx/5xx) do not consume the token.
  * Subnet-id translation: the sample events name subnets that cannot exist in moto (moto picks its own
    ids), so the ids in `awsvpcConfiguration.subnets` are mapped to subnets seeded in moto.
  * A log of every call it saw (decoded request, what it did, decoded response), for assertions.

Control API, on the same port, JSON in and out (the function never calls these paths):
  POST /__control/reset                 forget scripts, log and idempotency records
  POST /__control/config                {"subnets": {"event-id": "moto-id"}, "container_instances": {"cluster": [arn]}}
  POST /__control/script                {"ecs:RunTask": [action, ...], "sns:Publish": [action, ...]}
                                        appends to each operation's queue; one action is used per call
                                        (an action with "sticky": true stays and answers every later call)
  GET  /__control/log?since=N           the calls seen, from sequence number N on
  GET  /__control/state                 remaining scripts, known tokens
Actions (a call with no scripted action passes through):
  {"do": "pass"}                                            forward to moto
  {"do": "fail", "reason": "AGENT", "place": 0}             place `place` tasks in moto, report the rest as failed
        optional "arn", "detail"; for short ECS codes (AGENT, RESOURCE:*, ATTRIBUTE, LOCATION) one failure
        per container instance of the cluster is reported (as ECS does); for other text one per missing task
  {"do": "error", "code": "ThrottlingException", "message": "Rate exceeded", "status": 400}
  {"do": "drop"}                                            close the connection without an answer, nothing done
  {"do": "drop_after_start"}                                forward to moto (tasks start), then drop the answer;
        with "drop_replays": N the next N calls with the same token are dropped too (the SDK's own retries)
  any action may carry "delay_ms": N (wait before acting: a slow endpoint / a client timeout)

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
SHORT_ECS_REASONS = re.compile(r"^(AGENT|ATTRIBUTE|LOCATION|MISSING|INACTIVE|RESOURCE:[A-Z]+)$")
CONTROL = "/__control/"


def _cluster_name(cluster: str | None) -> str:
    if not cluster:
        return "default"
    return cluster.rsplit("/", 1)[-1] if cluster.startswith("arn:") else cluster


class ProxyState:
    """Everything the proxy remembers; guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()
        self.subnets: dict[str, str] = {}
        self.container_instances: dict[str, list[str]] = {}

    def reset(self) -> None:
        self.scripts: dict[str, list[dict]] = {}
        self.log: list[dict] = []
        self.tokens: dict[tuple[str, str], dict] = {}
        self.seq = 0

    def next_action(self, op: str) -> dict:
        queue = self.scripts.get(op) or []
        if not queue:
            return {"do": "pass"}
        action = queue[0]
        if not action.get("sticky"):
            queue.pop(0)
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
                       if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")}
            headers["Host"] = up.netloc
            headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, dict(resp.getheaders()), data
        finally:
            conn.close()

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
        status, headers, data = self._forward(body)
        if service in ("ecs", "sns"):
            with self.server.state.lock:
                self.server.state.record({"t": time.time(), "service": service, "op": op,
                                          "action": "pass", "status": status})
        self._send(status, data, headers)

    def _identify(self, body: bytes) -> tuple[str, str, dict]:
        target = self.headers.get("X-Amz-Target", "")
        if target.startswith(ECS_TARGET_PREFIX):
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                params = {}
            return "ecs", target[len(ECS_TARGET_PREFIX):], params
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
                return self._send_json(200, {"ok": True})
            if name == "script":
                for op, actions in payload.items():
                    if isinstance(actions, dict):
                        actions = [actions]
                    st.scripts.setdefault(op, []).extend(actions)
                return self._send_json(200, {"ok": True, "scripts": st.scripts})
            if name == "clear-script":
                st.scripts = {}
                return self._send_json(200, {"ok": True})
            if name == "log":
                since = int(urllib.parse.parse_qs(path.query).get("since", ["0"])[0])
                return self._send_json(200, [e for e in st.log if e["seq"] > since])
            if name == "state":
                return self._send_json(200, {
                    "scripts": st.scripts,
                    "tokens": [{"cluster": c, "clientToken": t, "tasks": len(r["response"].get("tasks", []))}
                               for (c, t), r in st.tokens.items()],
                    "subnets": st.subnets, "container_instances": st.container_instances})
        self._send_json(404, {"error": f"unknown control path {name}"})

    # ---- ECS RunTask --------------------------------------------------------------------------
    def _ecs_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": str(uuid.uuid4())}

    def _run_task(self, params: dict) -> None:
        st = self.server.state
        cluster = _cluster_name(params.get("cluster"))
        token = params.get("clientToken")
        fingerprint = json.dumps({k: v for k, v in params.items() if k != "clientToken"}, sort_keys=True)
        entry = {"t": time.time(), "service": "ecs", "op": "RunTask", "cluster": cluster,
                 "clientToken": token, "count": params.get("count", 1),
                 "taskDefinition": params.get("taskDefinition"),
                 "tags": {t.get("key"): t.get("value") for t in params.get("tags") or []},
                 "request": params}

        with st.lock:
            known = st.tokens.get((cluster, token)) if token else None
            action = None if known else st.next_action("ecs:RunTask")
        if known:
            if known.get("drop_replays", 0) > 0:
                with st.lock:
                    known["drop_replays"] -= 1
                entry.update(action="idempotent-replay dropped (scripted)", status=None, response=None,
                             tasks_started=0)
                self._log(entry)
                return self._drop()
            if known["fingerprint"] == fingerprint:
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

        entry["action"] = action.get("do", "pass")
        if action.get("delay_ms"):
            time.sleep(action["delay_ms"] / 1000.0)
        do = entry["action"]
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
        place = requested if do in ("pass", "drop_after_start") else min(int(action.get("place", 0)), requested)
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
        if do == "fail":
            response["failures"] = self._failures(action, cluster, requested - len(response["tasks"]))
        if token:
            with st.lock:
                st.tokens[(cluster, token)] = {"fingerprint": fingerprint, "response": response,
                                               "drop_replays": int(action.get("drop_replays", 0))}
        if do == "drop_after_start":
            entry.update(status=None, response=response, tasks_started=len(response["tasks"]))
            self._log(entry)
            return self._drop()
        entry.update(status=200, response=response, tasks_started=len(response["tasks"]))
        self._log(entry)
        self._send_json_ecs(200, response)

    def _failures(self, action: dict, cluster: str, missing: int) -> list[dict]:
        reason = action.get("reason", "AGENT")
        extra = {"detail": action["detail"]} if action.get("detail") else {}
        if action.get("arn"):
            return [{"arn": action["arn"], "reason": reason, **extra}]
        if SHORT_ECS_REASONS.match(reason):
            arns = self.server.state.container_instances.get(cluster) or [
                f"arn:aws:ecs:{self.server.region}:{self.server.account}:container-instance/{cluster}/"
                + uuid.uuid4().hex]
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
        entry = {"t": time.time(), "service": "sns", "op": "Publish", "topic": params.get("TopicArn"),
                 "subject": params.get("Subject"), "attributes": attrs, "request": params}
        with st.lock:
            action = st.next_action("sns:Publish")
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
