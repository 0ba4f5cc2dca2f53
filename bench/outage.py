"""Mass-outage benchmark (issue 12): a few hundred RunTask placement failures at once, 5 slots,
capacity back after a while; today's design (the wait inside the invocation) against the delay
queue (one call per invocation, the wait in SQS). Part of `make bench` (bench/run.py); standalone:

    .tools/bench/bin/python bench/outage.py [--rust-bin target/release/ecs-rerun] [--jobs 283]
                                            [--back 4,10,30] [--spot fallback,plain] [--update-results]

Time is scaled down SCALE times (60: a minute becomes a second; the schedules, the function's
timeout, the event age, the visibility timeout and the record-age guard all divided by it). What
is *not* scaled: the function's and the endpoint's own run time (an invocation that takes 20 ms
here counts as 1.2 s of outage time), and SQS's DelaySeconds: whole seconds, so the function
rounds each hop's delay up to a whole real second, a scaled minute here (in AWS, under a second).

The machinery, all on 127.0.0.1 and stopped at the end:
  * the real x86_64 release `ecs-rerun` bootstrap, SLOTS processes (the function's reserved
    concurrency), each pulling invocations from its own fake Lambda Runtime API (this module);
  * the local endpoint: moto's server behind scripts/e2e/proxy.py (seeded by scripts/e2e/stack.py);
    the proxy answers every RunTask with Fargate's "Capacity is unavailable at this time" (a sticky
    script) until capacity is back, when this harness clears the script through the proxy's control
    API and calls reach moto, which starts the task;
  * a dispatcher (this module) that plays Lambda: its async queue for the EventBridge events (FIFO,
    maximum event age 1 h scaled: an event older when a slot would take it is dead-lettered unseen;
    a failed invocation is retried once, as the template's MaximumRetryAttempts 1), and, for the
    delay queue, the SQS event source mapping (batches of BATCH, at most SLOTS concurrent batches,
    ReportBatchItemFailures: delete what succeeded; visibility timeout and maxReceiveCount): every
    one of these numbers is read from template.yaml (scripts/template_values.py). Both sources share the SLOTS slots; a free slot alternates between them
    when both have work;
  * the delay queue: a minimal SQS in the harness (DelayQueue: SendMessage with DelaySeconds over
    HTTP, which the function reaches through AWS_ENDPOINT_URL_SQS; ECS and SNS stay on the proxy).
    moto's SQS honours DelaySeconds, but at 10-15 ms a call it cannot take a few hundred sends in
    a scaled minute.

The Spot outage (issue 21.6): the same machinery with the delay queue, FARGATE_SPOT RunTask records
(sample 18, each its own job, count 1), half of them of sample 18's family `spot-report`, half of
another family (`spot-digest`, not registered: no call of it may reach ECS). The proxy answers every
FARGATE_SPOT request with the capacity failure for the whole outage (SPOT_OUTAGE_MIN, 2 h: longer than
the capacity schedule's horizon) while FARGATE requests start (its `only_capacity_provider` action
option). Two runs: with the Spot -> FARGATE rule for `spot-report` (fallbackFromAttempt 2) in
ECS_RERUN_RULES before the capacity rules, and with the capacity rules alone.

Per job: arrival (all at once, t0 = the records' eventTime), the slot that took its event, every
RunTask call the proxy saw (the job is a user tag on the request, kept on every retry), the first
call that started a task (the rerun), and the episode's outcome from the function's own EMF metric
line (stdout). The waits the function chose come from its JSON log lines.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import datetime as dt
import hashlib
import heapq
import json
import math
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
RESULTS = ROOT / "bench" / "results.md"
sys.path.insert(0, str(ROOT / "scripts" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))
import run as run_bench  # noqa: E402  bench/run.py: its fake Runtime API handler

sys.path.insert(0, str(ROOT / "scripts"))
from template_values import TEMPLATE, stack_settings  # noqa: E402  the stack `make deploy` creates

STACK = stack_settings()
SCALE = 60.0                      # a scaled minute is a real second
JOBS = 283                        # containers-roadmap issue 1705: 283 failed at once
SLOTS = STACK.max_concurrency     # the template's ReservedConcurrency (and the event source's MaximumConcurrency)
BATCH = STACK.batch_size          # the template's BatchSize
BACK_MINUTES = (4, 10, 30)        # capacity back after, scaled minutes
MAX_ATTEMPTS = 3                  # ECS_RERUN_MAX_ATTEMPTS (the default)
MAX_EVENT_AGE_S = STACK.max_event_age_s   # the template's MaximumEventAgeInSeconds
ASYNC_RETRIES = STACK.async_retries       # the template's MaximumRetryAttempts
ASYNC_RETRY_DELAY_S = 60          # Lambda waits about a minute before retrying a failed async invocation
TODAY_TIMEOUT_S = 300             # the old design's function timeout (the waits lived in it)
QUEUE_TIMEOUT_S = STACK.timeout_s         # template.yaml's Timeout with the delay queue
VISIBILITY_S = STACK.visibility_s         # template.yaml: DelayQueue VisibilityTimeout
MAX_RECEIVE = STACK.max_receive           # template.yaml: maxReceiveCount
DEADLINE_RESERVE_S = 25           # ECS_RERUN_DEADLINE_RESERVE_MS default
HOP_AFTER_S = 5                   # ECS_RERUN_HOP_AFTER_MS default
TODAY_BASE_S, TODAY_MAX_S = 20, 120          # today's backoff: 20 s doubling, cap 120 s, equal jitter
CAPACITY_SCHEDULE = {"IntervalSeconds": 300, "BackoffRate": 2, "MaxDelaySeconds": 900, "JitterStrategy": "EQUAL"}
RUN_CAP_S = 80 * 60               # stop a run after 80 scaled minutes whatever is left (reported as unfinished)
POLL_S = 0.025                    # real seconds between two ReceiveMessage calls while a slot is free
HANG_S = 10.0                     # real seconds past its deadline after which an invocation is killed
FUNCTION_ARN = "arn:aws:lambda:us-east-1:111122223333:function:ecs-rerun"
ACCOUNT = "111122223333"
EVENT = ROOT / "events" / "03-fargate-capacity.json"
SPOT_EVENT = ROOT / "events" / "18-spot-capacity-fallback.json"   # FARGATE_SPOT, family spot-report
EVENTS = (EVENT, SPOT_EVENT)      # what the local stack must be seeded for (clusters, task definitions)
SPOT_OUTAGE_MIN = 120             # the Spot outage: FARGATE_SPOT has no capacity for 2 h (scaled)
SPOT = "FARGATE_SPOT"
ON_DEMAND = "FARGATE"
FALLBACK_FROM = 2                 # the rule's fallbackFromAttempt
OTHER_FAMILY = "spot-digest"      # the Spot jobs no fallback rule matches (never reach ECS: Spot fails)
FALLBACK_TAG = "ecs-rerun:fallback"
SPOT_CASES = {"fallback": "Spot → FARGATE rule (fallback from attempt 2)", "plain": "capacity rules only"}
CAPACITY = "Capacity is unavailable at this time. Please try again later or in a different availability zone"
JOB_TAG = "bench-job"


def say(msg: str) -> None:
    print(f"outage: {msg}", file=sys.stderr, flush=True)


def real(scaled_s: float) -> float:
    """Real seconds for scaled seconds."""
    return scaled_s / SCALE


def ms(scaled_s: float) -> str:
    return str(max(1, round(real(scaled_s) * 1000)))


def iso_ms(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---- the designs -----------------------------------------------------------------------------------
def scaled_schedule() -> dict:
    return {**CAPACITY_SCHEDULE, "IntervalSeconds": CAPACITY_SCHEDULE["IntervalSeconds"] / SCALE,
            "MaxDelaySeconds": CAPACITY_SCHEDULE["MaxDelaySeconds"] / SCALE}


def spot_family() -> str:
    return json.loads(SPOT_EVENT.read_text())["detail"]["requestParameters"]["taskDefinition"].split(":")[0]


def scaled_rules(fallback: bool = False) -> str:
    """The capacity schedule as rules; with `fallback`, first the docs' Spot → FARGATE rule for sample 18's
    family (the same schedule, attempt FALLBACK_FROM and later on FARGATE)."""
    s = scaled_schedule()
    rules = [{"onReason": "RESOURCE:*", "action": "retry", **s},
             {"onReason": "*Capacity is unavailable*", "action": "retry", **s}]
    if fallback:
        rules.insert(0, {"onReason": "*Capacity is unavailable*", "onCapacityProvider": SPOT,
                         "onTaskFamily": spot_family(), "action": "retry", **s,
                         "fallbackFromAttempt": FALLBACK_FROM,
                         "fallback": {"capacityProviderStrategy": [{"capacityProvider": ON_DEMAND}]}})
    return json.dumps(rules)


def equal_jitter_range(interval: float, rate: float, cap: float, call: int) -> tuple[float, float]:
    step = min(cap, interval * rate ** (call - 1))
    return step / 2, step


DESIGNS = {
    "today": {"label": "today: waits in the invocation", "timeout_s": TODAY_TIMEOUT_S,
              "waits": [equal_jitter_range(TODAY_BASE_S, 2, TODAY_MAX_S, c) for c in range(1, MAX_ATTEMPTS + 1)]},
    "queue": {"label": "delay queue: waits in SQS", "timeout_s": QUEUE_TIMEOUT_S,
              "waits": [equal_jitter_range(CAPACITY_SCHEDULE["IntervalSeconds"], CAPACITY_SCHEDULE["BackoffRate"],
                                           CAPACITY_SCHEDULE["MaxDelaySeconds"], c) for c in range(1, MAX_ATTEMPTS + 1)]},
}


def horizon_s(design: str) -> tuple[float, float]:
    """The shortest and longest sum of an episode's waits (before calls 1..MAX_ATTEMPTS)."""
    waits = DESIGNS[design]["waits"]
    return sum(lo for lo, _ in waits), sum(hi for _, hi in waits)


def function_env(stack, design: str, dq: "DelayQueue | None", fallback: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECS_RERUN_", "RUST_LOG"))}
    env.update({
        "AWS_ENDPOINT_URL": stack.proxy.url, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_LAMBDA_FUNCTION_NAME": "ecs-rerun", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/ecs-rerun",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench-outage", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_LAMBDA_LOG_FORMAT": "JSON", "RUST_LOG": "warn,ecs_rerun=info",
        "ECS_RERUN_TOPIC_ARN": stack.topic_arn, "ECS_RERUN_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "ECS_RERUN_ALLOWED_ACCOUNTS": ACCOUNT,
        "ECS_RERUN_DEADLINE_RESERVE_MS": ms(DEADLINE_RESERVE_S),
        # The record-age guard (1 h) scaled; the variable's floor is 60 s.
        "ECS_RERUN_MAX_RECORD_AGE_S": str(max(60, round(real(3600)))),
    })
    if design == "today":
        env["ECS_RERUN_BASE_DELAY_MS"] = ms(TODAY_BASE_S)
        env["ECS_RERUN_MAX_DELAY_MS"] = ms(TODAY_MAX_S)
    else:
        env["ECS_RERUN_DELAY_QUEUE_URL"] = dq.url
        env["AWS_ENDPOINT_URL_SQS"] = dq.endpoint       # the delay queue; ECS and SNS stay on the proxy
        env["ECS_RERUN_HOP_AFTER_MS"] = ms(HOP_AFTER_S)
        env["ECS_RERUN_RULES"] = scaled_rules(fallback)
    return env


# ---- the jobs --------------------------------------------------------------------------------------
def make_events(n: int, t0: float, spot: bool = False) -> list[dict]:
    """n failed RunTask records of one outage, each its own job: own event IDs, own clientToken,
    count 1, a user tag naming the job; eventTime = t0 (with milliseconds, so that the record-age
    guard's clock is not off by up to a scaled minute). `spot`: FARGATE_SPOT records of sample 18,
    the even jobs of its family, the odd ones of OTHER_FAMILY."""
    base = json.loads((SPOT_EVENT if spot else EVENT).read_text())
    out = []
    for i in range(n):
        ev = copy.deepcopy(base)
        ev["id"] = str(uuid.uuid4())
        ev["time"] = iso_ms(t0)
        d = ev["detail"]
        d["eventTime"] = iso_ms(t0)
        d["eventID"] = str(uuid.uuid4())
        d["requestID"] = str(uuid.uuid4())
        rp = d["requestParameters"]
        rp["clientToken"] = str(uuid.uuid4())
        rp["count"] = 1
        if spot and i % 2:
            rp["taskDefinition"] = f"{OTHER_FAMILY}:1"
        rp["tags"] = [*rp.get("tags", []), {"key": JOB_TAG, "value": str(i)}]
        d["responseElements"] = {"tasks": [], "failures": [{"reason": CAPACITY}]}
        out.append(ev)
    return out


# ---- Lambda: slots, each a bootstrap process with its own Runtime API --------------------------------
class Slot:
    def __init__(self, idx: int, lam: "Lambda"):
        self.idx = idx
        self.lam = lam
        self.inbox: queue.Queue = queue.Queue()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _RuntimeHandler)
        self.server.daemon_threads = True
        self.server.slot = self                       # type: ignore[attr-defined]
        self.server.handle_error = lambda *a: None    # type: ignore[method-assign]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.proc: subprocess.Popen | None = None
        self.current: dict | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def spawn(self) -> None:
        env = {**self.lam.env, "AWS_LAMBDA_RUNTIME_API": self.address}
        self.proc = subprocess.Popen(self.lam.argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self.lam.read_output, args=(self.idx, self.proc.stdout), daemon=True).start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    def close(self) -> None:
        self.kill()
        self.inbox.put(None)
        self.server.shutdown()
        self.server.server_close()


class _RuntimeHandler(run_bench._RuntimeHandler):
    """bench/run.py's Runtime API handler (HTTP/1.1, TCP_NODELAY, replies), serving one slot."""

    def do_GET(self) -> None:  # noqa: N802
        slot: Slot = self.server.slot  # type: ignore[attr-defined]
        if not self.path.endswith("/runtime/invocation/next"):
            return self._reply(404)
        slot.lam.idle.put(slot)
        item = slot.inbox.get()
        if item is None:                 # shutting down: no answer (the process is being killed)
            slot.inbox.put(None)
            self.close_connection = True
            return
        rid, body, deadline = item
        headers = {"Lambda-Runtime-Aws-Request-Id": rid, "Lambda-Runtime-Deadline-Ms": str(int(deadline * 1000)),
                   "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                   "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"}
        self._reply(200, body, headers)

    def do_POST(self) -> None:  # noqa: N802
        now = time.time()
        slot: Slot = self.server.slot  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        m = re.search(r"/runtime/invocation/([^/]+)/(response|error)$", self.path)
        if self.path.endswith("/runtime/init/error"):
            slot.lam.init_errors.append(body.decode("utf-8", "replace"))
        elif m:
            try:
                payload = json.loads(body) if body else None
            except ValueError:
                payload = None
            slot.lam.done.put((slot.idx, m.group(1), m.group(2), payload, now))
        self._reply(202, b'{"status":"OK"}')


class Lambda:
    """SLOTS bootstrap processes and what they print (EMF metric lines, JSON log lines)."""

    def __init__(self, argv: list[str], env: dict, log: Path):
        self.argv, self.env = argv, env
        self.idle: queue.Queue = queue.Queue()
        self.done: queue.Queue = queue.Queue()
        self.init_errors: list[str] = []
        self.lock = threading.Lock()
        self.emf: list[tuple[float, dict]] = []           # (time, EMF line)
        self.waits: list[tuple] = []                      # (time, event_id, fields, slot) of the wait log lines
        self.problems: list[str] = []                     # WARN / ERROR lines (first few kept)
        self.log = open(log, "w")
        self.slots = [Slot(i, self) for i in range(SLOTS)]

    def start(self) -> None:
        for s in self.slots:
            s.spawn()

    def read_output(self, idx: int, stream) -> None:
        for raw in stream:
            now = time.time()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.lock:
                self.log.write(f"[{idx}] {line}\n")
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if "_aws" in obj:
                with self.lock:
                    self.emf.append((now, obj))
                continue
            fields = obj.get("fields") or {}
            msg = fields.get("message", "")
            if msg.startswith("waiting"):
                span = obj.get("span") or {}
                eid = span.get("event_id") or next((s.get("event_id") for s in obj.get("spans") or []
                                                    if s.get("event_id")), None)
                with self.lock:
                    self.waits.append((now, eid, fields, idx))
            elif obj.get("level") in ("WARN", "ERROR") and "DELAY_QUEUE_URL is not set" not in msg:
                with self.lock:
                    if len(self.problems) < 20:
                        self.problems.append(line[:400])

    def close(self) -> None:
        for s in self.slots:
            s.close()
        self.log.close()


# ---- one run -----------------------------------------------------------------------------------------
class DelayQueue(ThreadingHTTPServer):
    """The delay queue: a minimal SQS standard queue in the harness. The function reaches it through
    AWS_ENDPOINT_URL_SQS and sends with SendMessage (the SDK's JSON protocol, or the query protocol)
    and DelaySeconds (0..900, whole seconds, as SQS); the harness's event source mapping receives and
    deletes in-process. A message becomes visible DelaySeconds after it was sent; a received one is
    invisible for the visibility timeout, then visible again; one received MAX_RECEIVE times and
    still not deleted moves to the dead-letter list on the next receive (SQS's redrive policy).

    Why not moto's SQS: it honours DelaySeconds, but each call takes 10-15 ms on this machine (one
    Python process), so at 60x the 283 SendMessage calls of the first minute alone would hold the
    endpoint for about 4 scaled minutes - longer than a first wait."""

    daemon_threads = True
    NAME = "ecs-rerun-delay"

    def __init__(self, visibility_s: float):
        super().__init__(("127.0.0.1", 0), _SqsHandler)
        self.visibility = visibility_s
        self.lock = threading.Lock()
        self.messages: dict[str, dict] = {}
        self.heap: list[tuple[float, int, str]] = []    # (visible at, seq, id); stale entries skipped
        self.seq = 0
        self.dead: list[dict] = []
        self.sent: list[dict] = []                      # every SendMessage: time, delay
        self.deliveries: list[dict] = []                # every delivery: time, due, receive count
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def handle_error(self, request, client_address) -> None:
        pass

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.endpoint}/{ACCOUNT}/{self.NAME}"

    def send(self, body: str, delay: int) -> str:
        now = time.time()
        mid = str(uuid.uuid4())
        with self.lock:
            self.seq += 1
            msg = {"id": mid, "body": body, "sent": now, "due": now + delay, "visible_at": now + delay,
                   "receives": 0, "receipt": None}
            self.messages[mid] = msg
            heapq.heappush(self.heap, (msg["visible_at"], self.seq, mid))
            self.sent.append({"t": now, "delay": delay, "bytes": len(body)})
        return mid

    def receive(self, n: int, now: float) -> list[dict]:
        out = []
        with self.lock:
            while self.heap and self.heap[0][0] <= now and len(out) < n:
                visible_at, _, mid = heapq.heappop(self.heap)
                msg = self.messages.get(mid)
                if msg is None or msg["visible_at"] != visible_at:
                    continue                                # deleted, or an older entry
                if msg["receives"] >= MAX_RECEIVE:
                    self.dead.append(self.messages.pop(mid))
                    continue
                msg["receives"] += 1
                msg["receipt"] = str(uuid.uuid4())
                msg["visible_at"] = now + self.visibility
                self.seq += 1
                heapq.heappush(self.heap, (msg["visible_at"], self.seq, mid))
                self.deliveries.append({"t": now, "due": msg["due"], "receives": msg["receives"]})
                out.append({"MessageId": mid, "ReceiptHandle": msg["receipt"], "Body": msg["body"],
                            "Attributes": {"ApproximateReceiveCount": str(msg["receives"]),
                                           "SentTimestamp": str(int(msg["sent"] * 1000))}})
        return out

    def delete(self, messages: list[dict]) -> None:
        with self.lock:
            for m in messages:
                msg = self.messages.get(m["MessageId"])
                if msg is not None and msg["receipt"] == m["ReceiptHandle"]:
                    del self.messages[m["MessageId"]]

    def depth(self) -> int:
        with self.lock:
            return len(self.messages)

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _SqsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        q: DelayQueue = self.server  # type: ignore[assignment]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = self.headers.get("X-Amz-Target", "")
        as_json = target.startswith("AmazonSQS.")
        if as_json:
            op, params = target.split(".", 1)[1], json.loads(raw or b"{}")
        else:
            form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode(), keep_blank_values=True).items()}
            op, params = form.get("Action", "?"), form

        def error(code: str, message: str) -> None:
            if as_json:
                return self._reply(400, json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message})
                                   .encode(), "application/x-amz-json-1.0")
            xml = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
                   f"</Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
            return self._reply(400, xml.encode(), "text/xml")

        if op != "SendMessage":
            return error("UnsupportedOperation", f"the bench's delay queue only takes SendMessage, not {op}")
        if str(params.get("QueueUrl", "")).rstrip("/").rsplit("/", 1)[-1] != q.NAME:
            return error("AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist.")
        delay = int(params.get("DelaySeconds") or 0)
        if not 0 <= delay <= 900:
            return error("InvalidParameterValue", f"Value {delay} for parameter DelaySeconds is invalid.")
        body = str(params.get("MessageBody", ""))
        mid = q.send(body, delay)
        md5 = hashlib.md5(body.encode()).hexdigest()
        if as_json:
            return self._reply(200, json.dumps({"MD5OfMessageBody": md5, "MessageId": mid}).encode(),
                               "application/x-amz-json-1.0")
        xml = (f"<SendMessageResponse><SendMessageResult><MD5OfMessageBody>{md5}</MD5OfMessageBody><MessageId>"
               f"{mid}</MessageId></SendMessageResult><ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId>"
               f"</ResponseMetadata></SendMessageResponse>")
        return self._reply(200, xml.encode(), "text/xml")


def run_once(stack, rust_bin: Path, design: str, back_min: float, jobs: int, spot: str | None = None) -> dict:
    """One outage: `jobs` failures at t0, capacity back at t0 + back_min scaled minutes. `spot` (a key of
    SPOT_CASES, with the delay queue): the Spot outage, only FARGATE_SPOT without capacity."""
    stack.reset()
    dq = DelayQueue(real(VISIBILITY_S)) if design == "queue" else None
    timeout = real(DESIGNS[design]["timeout_s"])
    log_name = f"outage-spot-{spot}.log" if spot else f"outage-{design}-{back_min:g}.log"
    lam = Lambda([str(rust_bin)], function_env(stack, design, dq, fallback=spot == "fallback"), OUT / log_name)
    esm_running = 0                                      # the event source mapping's invocations in flight
    try:
        lam.start()
        ready = time.time() + 30
        free: list[Slot] = []
        while len(free) < SLOTS and time.time() < ready:      # every process up (first GET /next)
            with contextlib.suppress(queue.Empty):
                free.append(lam.idle.get(timeout=0.5))
            if lam.init_errors:
                raise RuntimeError(f"the function failed to start: {lam.init_errors[0]}")
        if len(free) < SLOTS:
            raise RuntimeError(f"only {len(free)} of {SLOTS} bootstrap processes came up in 30 s")
        stack.control.clear_script()
        outage = {"do": "fail", "reason": CAPACITY, "place": 0, "sticky": True}
        if spot:       # a Spot outage: FARGATE requests pass through to moto and start
            outage["only_capacity_provider"] = SPOT
        stack.control.script({"ecs:RunTask": [outage]})
        since = (stack.control.log() or [{"seq": 0}])[-1]["seq"]

        t0 = math.ceil(time.time() * 10) / 10 + 0.2
        events = make_events(jobs, t0, spot=bool(spot))
        by_event = {ev["detail"]["eventID"]: i for i, ev in enumerate(events)}
        while time.time() < t0:
            time.sleep(0.01)
        t_back = t0 + real(back_min * 60)
        back_at: float | None = None
        # Lambda's async queue: (not before, job, attempt); FIFO.
        async_q: collections.deque = collections.deque((t0, i, 0) for i in range(jobs))
        inflight: dict[str, dict] = {}                   # request id -> invocation
        invocations: list[dict] = []
        picked: dict[int, float] = {}                    # job -> first time a slot took its event
        dead: dict[int, tuple[str, float]] = {}          # job -> (why Lambda dead-lettered it, when)
        prefer_sqs = False
        sqs_batches = 0
        next_check = 0.0
        cap = t0 + real(RUN_CAP_S)
        finished = False

        def hand(slot: Slot, kind: str, body: dict, jobs_in: list[int], msgs: list[dict], attempt: int = 0) -> None:
            rid = str(uuid.uuid4())
            now = time.time()
            inv = {"rid": rid, "kind": kind, "slot": slot.idx, "start": now, "deadline": now + timeout,
                   "jobs": jobs_in, "messages": msgs, "attempt": attempt, "end": None, "status": None}
            inflight[rid] = inv
            invocations.append(inv)
            slot.current = inv
            slot.inbox.put((rid, json.dumps(body).encode(), inv["deadline"]))

        def ended() -> set[int]:
            with lam.lock:
                done = {by_event[o.get("event_id")] for _, o in lam.emf
                        if o.get("event_id") in by_event and o.get("Outcome") not in ("waiting", "ignored")}
            return done | set(dead)

        while time.time() < cap:
            now = time.time()
            if back_at is None and now >= t_back:
                stack.control.clear_script()
                back_at = time.time()
            busy = False
            # Invocations that ended.
            while True:
                try:
                    idx, rid, kind, payload, t = lam.done.get_nowait()
                except queue.Empty:
                    break
                busy = True
                inv = inflight.pop(rid, None)
                if inv is None:
                    continue
                inv.update(end=t, status=kind)
                if lam.slots[idx].current is inv:
                    lam.slots[idx].current = None
                if inv["kind"] == "event":
                    if kind == "error":
                        job, attempt = inv["jobs"][0], inv["attempt"]
                        if attempt < ASYNC_RETRIES:
                            async_q.append((t + real(ASYNC_RETRY_DELAY_S), job, attempt + 1))
                        else:
                            dead[job] = ("function error", t)
                elif dq is not None:
                    esm_running -= 1
                    failed = set() if kind == "error" else {
                        f.get("itemIdentifier") for f in (payload or {}).get("batchItemFailures", [])}
                    ok = [m for m in inv["messages"] if m["MessageId"] not in failed]
                    inv["failed_items"] = len(inv["messages"]) - len(ok)
                    if kind != "error" and ok:
                        dq.delete(ok)
            # Idle slots.
            while True:
                try:
                    free.append(lam.idle.get_nowait())
                except queue.Empty:
                    break
            # Hung invocations: Lambda would have stopped them at the deadline.
            for s in lam.slots:
                inv = s.current
                if inv is not None and now > inv["deadline"] + HANG_S:
                    say(f"slot {s.idx}: invocation {inv['rid']} still running {HANG_S:.0f}s past its deadline; killed")
                    s.kill()
                    s.current = None
                    lam.done.put((s.idx, inv["rid"], "error", None, now))
                    s.spawn()
            # Hand out work: a free slot alternates between the two sources when both have some.
            while free:
                took = False
                for src in (("sqs", "event") if prefer_sqs else ("event", "sqs")):
                    if src == "event":
                        while async_q and async_q[0][0] <= now:
                            _, job, attempt = async_q.popleft()
                            if now - t0 > real(MAX_EVENT_AGE_S):
                                dead[job] = ("older than the maximum event age", now)
                                continue
                            picked.setdefault(job, now)
                            hand(free.pop(0), "event", events[job], [job], [], attempt)
                            took = True
                            break
                    elif dq is not None and esm_running < SLOTS:
                        msgs = dq.receive(BATCH, now)
                        if not msgs:
                            continue
                        esm_running += 1
                        sqs_batches += 1
                        records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                                    "body": m["Body"], "attributes": m.get("Attributes", {}),
                                    "messageAttributes": {}, "md5OfBody": m.get("MD5OfBody", ""),
                                    "eventSource": "aws:sqs", "awsRegion": "us-east-1",
                                    "eventSourceARN": f"arn:aws:sqs:us-east-1:{ACCOUNT}:ecs-rerun-delay"}
                                   for m in msgs]
                        hand(free.pop(0), "sqs", {"Records": records}, [], msgs)
                        took = True
                    if took:
                        break
                prefer_sqs = not prefer_sqs
                if not took:
                    break
                busy = True
            # Finished: every job ended, or nothing is left anywhere that could still move.
            if now >= next_check:
                next_check = now + 0.25
                if not inflight and not async_q:
                    if len(ended()) >= jobs:
                        finished = True
                    elif dq is None or dq.depth() == 0:
                        time.sleep(0.3)                    # the last EMF lines may still be on their way
                        finished = lam.done.empty() and (dq is None or dq.depth() == 0)
                    if finished:
                        break
            if not busy:
                time.sleep(0.002)
        t_end = time.time()
        if back_at is None:
            stack.control.clear_script()
            back_at = t_back
        time.sleep(0.2)
        log = stack.control.log(since)
        calls = [e for e in log if e.get("op") == "RunTask"]
        publishes = [e for e in log if e.get("op") == "Publish"]
        dlq = list(dq.dead) if dq else []
        left = dq.depth() if dq else 0
        sent = list(dq.sent) if dq else []
        deliveries = list(dq.deliveries) if dq else []
        with lam.lock:
            emf, waits, problems = list(lam.emf), list(lam.waits), list(lam.problems)
    finally:
        lam.close()
        if dq is not None:
            dq.close()
    return {"design": design, "spot": spot, "back_min": back_min, "jobs": jobs, "t0": t0, "t_back": t_back, "back_at": back_at,
            "t_end": t_end, "finished": finished, "events": events, "by_event": by_event, "picked": picked,
            "dead": dead, "calls": calls, "publishes": len(publishes), "emf": emf, "waits": waits,
            "problems": problems, "invocations": invocations, "sqs_batches": sqs_batches,
            "sent": sent, "deliveries": deliveries,
            "dlq": dlq, "queue_left": left, "timeout": timeout}


# ---- what a run shows ------------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]


def summarize(r: dict) -> dict:
    t0, n = r["t0"], r["jobs"]
    sc = lambda t: (t - t0) * SCALE  # noqa: E731  real time -> scaled seconds since the outage began
    per_job: dict[int, dict] = {i: {"calls": [], "started": 0, "rerun": None} for i in range(n)}
    untagged = 0
    for c in r["calls"]:
        job = (c.get("tags") or {}).get(JOB_TAG)
        if job is None or not job.isdigit() or int(job) not in per_job:
            untagged += 1
            continue
        j = per_job[int(job)]
        j["calls"].append(c)
        started = int(c.get("tasks_started") or 0)
        j["started"] += started
        if started and j["rerun"] is None:
            j["rerun"] = c["t"]
    outcomes: dict[int, str] = {}
    for _, o in r["emf"]:
        job = r["by_event"].get(o.get("event_id"))
        if job is not None and o.get("Outcome") not in ("waiting", "ignored"):
            outcomes.setdefault(job, o.get("Outcome"))
    first_wait: dict[int, float] = {}             # the wait the function chose before call 1 (scaled s)
    for _, eid, f, _ in r["waits"]:
        job = r["by_event"].get(eid)
        if job is None or int(f.get("call", 0)) != 1 or job in first_wait:
            continue
        first_wait[job] = (float(f["delay_s"]) if "delay_s" in f else float(f.get("wait_ms", 0)) / 1000) * SCALE
    rounding = [(float(f["delay_s"]) * 1000 - float(f["wait_ms"])) / 1000 * SCALE
                for _, _, f, _ in r["waits"] if "delay_s" in f and "wait_ms" in f]
    late = [(d["t"] - d["due"]) * SCALE for d in r["deliveries"] if d["receives"] == 1]
    back = sc(r["back_at"])
    reruns = [i for i, j in per_job.items() if j["rerun"] is not None]
    delays = [(sc(per_job[i]["rerun"]) - back) / 60 for i in reruns]
    firsts = {i: sc(min(c["t"] for c in j["calls"])) for i, j in per_job.items() if j["calls"]}
    pickup = {i: sc(t) for i, t in r["picked"].items()}
    # Which invocations spent a wait inside (the function logged "waiting before ..." and slept),
    # and which jobs' events waited for a slot while every slot was busy and one of them was asleep
    # in another job's wait: those first attempts waited for another job's episode.
    invs = [v for v in r["invocations"] if v["end"] is not None]
    asleep_s = 0.0
    for t, _, f, idx in r["waits"]:
        if f.get("message", "").startswith("waiting before") and float(f.get("wait_ms", 0)) > 0:
            asleep_s += float(f["wait_ms"]) / 1000
            for v in invs:
                if v["slot"] == idx and v["start"] <= t <= v["end"] + 0.05:
                    v["slept"] = True
                    break
    marks = sorted([(v["start"], 1, int(bool(v.get("slept")))) for v in invs]
                   + [(v["end"], -1, -int(bool(v.get("slept")))) for v in invs])
    blocked: list[tuple[float, float]] = []          # all slots busy, one of them asleep in a wait
    nbusy = nslept = 0
    since = None
    for t, d, ds in marks:
        nbusy += d
        nslept += ds
        now_blocked = nbusy >= SLOTS and nslept > 0
        if now_blocked and since is None:
            since = t
        elif not now_blocked and since is not None:
            blocked.append((since, t))
            since = None
    waited_until = {**{i: t for i, t in r["picked"].items()}, **{i: t for i, (_, t) in r["dead"].items()
                                                               if i not in r["picked"]}}
    behind = [i for i, until in waited_until.items()
              if any(min(until, b) - max(t0, a) > 0.001 for a, b in blocked)]
    span_s = max((v["end"] for v in invs), default=t0) - t0
    excess = [firsts[i] - first_wait[i] for i in firsts if i in first_wait]
    count = collections.Counter(outcomes.values())
    dead = collections.Counter(why for why, _ in r["dead"].values())
    durs = [(v["end"] - v["start"]) * SCALE for v in r["invocations"] if v["end"] is not None]
    event_durs = [(v["end"] - v["start"]) * SCALE for v in r["invocations"]
                  if v["end"] is not None and v["kind"] == "event"]
    over = sum(1 for v in r["invocations"] if v["end"] is not None and v["end"] > v["deadline"])
    return {
        "design": r["design"], "spot": r["spot"], "back_min": r["back_min"], "jobs": n, "finished": r["finished"],
        "t0": t0,
        "reruns": len(reruns), "gave_up": count.get("gave_up", 0), "stale": count.get("stale", 0),
        "outcomes": dict(count), "dead_too_old": dead.get("older than the maximum event age", 0),
        "dead_error": dead.get("function error", 0), "dlq": len(r["dlq"]), "queue_left": r["queue_left"],
        "unfinished": n - len(set(outcomes) | set(r["dead"])),
        "delay_median": statistics.median(delays) if delays else None, "delay_p90": pct(delays, 90),
        "delay_max": max(delays) if delays else None,
        "last_rerun_min": max((sc(per_job[i]["rerun"]) / 60 for i in reruns), default=None),
        "pickup_median_s": statistics.median(pickup.values()) if pickup else None,
        "pickup_max_s": max(pickup.values(), default=None),
        "first_call_median_s": statistics.median(firsts.values()) if firsts else None,
        "first_call_max_s": max(firsts.values(), default=None),
        "first_excess_median_s": statistics.median(excess) if excess else None,
        "first_excess_max_s": max(excess, default=None),
        "behind_other_episode": len(behind), "picked": len(pickup),
        "asleep_share": asleep_s / (SLOTS * span_s) if span_s > 0 else 0.0,
        "slept_invocations": sum(1 for v in invs if v.get("slept")),
        "invocations": len(r["invocations"]), "sqs_batches": r["sqs_batches"],
        "inv_max_s": max(durs, default=None), "inv_median_s": statistics.median(durs) if durs else None,
        "event_invocations": len(event_durs), "event_inv_max_s": max(event_durs, default=None),
        "event_inv_median_s": statistics.median(event_durs) if event_durs else None,
        "over_deadline": over, "runtask_calls": len(r["calls"]), "untagged_calls": untagged,
        "max_calls_per_job": max((len(j["calls"]) for j in per_job.values()), default=0),
        "started_twice": sum(1 for j in per_job.values() if j["started"] > 1),
        "batch_item_failures": sum(v.get("failed_items", 0) for v in r["invocations"]),
        "hops": len(r["sent"]), "redeliveries": sum(1 for d in r["deliveries"] if d["receives"] > 1),
        "hop_late_median_s": statistics.median(late) if late else None, "hop_late_max_s": max(late, default=None), "hop_rounding_mean_s": statistics.mean(rounding) if rounding else None,
        "publishes": r["publishes"], "wall_s": r["t_end"] - t0, "back_late_ms": (r["back_at"] - r["t_back"]) * 1000,
        "problems": r["problems"][:5],
        **({"groups": spot_groups(r, per_job, outcomes)} if r["spot"] else {}),
    }


def placement(call: dict) -> str:
    """Where a RunTask call asked to run: its capacity providers, else its launch type, else `default`."""
    req = call.get("request") or {}
    names = [i.get("capacityProvider", "?") for i in req.get("capacityProviderStrategy") or []]
    return ",".join(names) or req.get("launchType") or "default"


def spot_groups(r: dict, per_job: dict[int, dict], outcomes: dict[int, str]) -> dict[str, dict]:
    """The Spot outage, per task family (the rule's, and the other): where each job's calls went and
    when, where its task started, and its outcome."""
    sc = lambda t: (t - r["t0"]) * SCALE  # noqa: E731
    family = {i: ev["detail"]["requestParameters"]["taskDefinition"].split(":")[0] for i, ev in enumerate(r["events"])}
    out = {}
    for fam in sorted(set(family.values()), key=lambda f: f != spot_family()):
        jobs = [i for i in per_job if family[i] == fam]
        started_on: collections.Counter = collections.Counter()
        first_fargate_call: collections.Counter = collections.Counter()
        at, spot_after, fargate_calls, untagged_fallbacks = [], 0, 0, 0
        times: dict[int, list[float]] = collections.defaultdict(list)    # call k -> scaled s after t0
        gaps: dict[int, list[float]] = collections.defaultdict(list)     # call k -> scaled s since call k-1 (t0)
        for i in jobs:
            calls = sorted(per_job[i]["calls"], key=lambda c: c["t"])
            where = [placement(c) for c in calls]
            for c, w in zip(calls, where):
                if int(c.get("tasks_started") or 0):
                    started_on[w] += 1
                    if w == ON_DEMAND:
                        at.append(sc(c["t"]) / 60)
                if w == ON_DEMAND:
                    fargate_calls += 1
                    untagged_fallbacks += (c.get("tags") or {}).get(FALLBACK_TAG) != f"{SPOT}:{ON_DEMAND}"
            if ON_DEMAND in where:
                k = where.index(ON_DEMAND)
                first_fargate_call[k + 1] += 1
                spot_after += SPOT in where[k:]
            prev = r["t0"]
            for k, c in enumerate(calls, 1):
                times[k].append(sc(c["t"]))
                gaps[k].append((c["t"] - prev) * SCALE)
                prev = c["t"]
        out[fam] = {
            "jobs": len(jobs), "started_on": dict(started_on),
            "outcomes": dict(collections.Counter(outcomes.get(i, "unfinished") for i in jobs)),
            "fallback_median_min": statistics.median(at) if at else None, "fallback_p90_min": pct(at, 90),
            "fallback_min_min": min(at, default=None), "fallback_max_min": max(at, default=None),
            "first_fargate_call": dict(first_fargate_call), "spot_after_fallback": spot_after,
            "fargate_calls": fargate_calls, "fallback_calls_without_tag": untagged_fallbacks,
            "max_calls": max((len(per_job[i]["calls"]) for i in jobs), default=0),
            "started_twice": sum(1 for i in jobs if per_job[i]["started"] > 1),
            "call_median_min": {k: statistics.median(v) / 60 for k, v in sorted(times.items())},
            "gap_range_s": {k: (min(v), max(v)) for k, v in sorted(gaps.items())},
        }
    return out


# ---- the section of bench/results.md ---------------------------------------------------------------------
def fmt_min(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} min"


def fmt_s(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


def section(summaries: list[dict], jobs: int) -> list[str]:
    spot = [s for s in summaries if s.get("spot")]
    everything, summaries = summaries, [s for s in summaries if not s.get("spot")]
    lo_q, hi_q = horizon_s("queue")
    lo_t, hi_t = horizon_s("today")
    w = {d: ", ".join(f"{lo:g}–{hi:g} s" for lo, hi in DESIGNS[d]["waits"]) for d in DESIGNS}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    when = dt.datetime.fromtimestamp(min(s.get("t0", time.time()) for s in everything), dt.timezone.utc) \
        .strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Mass outage (issue 12)",
        "",
        f"bench/outage.py, {when}, commit {commit}{'+changes' if dirty else ''}, {os.cpu_count()} CPUs. "
        f"The stack it plays is template.yaml's (sha-256 {hashlib.sha256(TEMPLATE.read_bytes()).hexdigest()[:12]}, "
        f"its defaults read by scripts/template_values.py). Time scaled down {SCALE:g}× (a minute of outage is a second here). {jobs} RunTask "
        f"placement failures (Fargate \"Capacity is unavailable at this time\", sample 03, each its own job: own "
        f"clientToken, count 1) arrive at once; the real release bootstrap runs in {SLOTS} processes (the "
        f"reserved concurrency), each pulling from its own fake Lambda Runtime API; a dispatcher plays Lambda's "
        f"async queue (FIFO, maximum event age {MAX_EVENT_AGE_S // 60} min: older events are dead-lettered unseen; "
        f"one retry of a failed invocation) and, for the delay queue, the SQS event source mapping: batches of "
        f"{BATCH}, at most {SLOTS} at once, ReportBatchItemFailures, visibility {VISIBILITY_S} s, maxReceiveCount "
        f"{MAX_RECEIVE}; both share the {SLOTS} slots. The delay queue is a minimal SQS in the harness "
        f"(SendMessage with DelaySeconds over HTTP, the function's AWS_ENDPOINT_URL_SQS): moto's SQS honours "
        f"DelaySeconds but takes 10–15 ms a call here, so the first minute's {jobs} sends alone would hold it "
        f"for about 4 scaled minutes. The endpoint "
        f"(moto behind scripts/e2e/proxy.py) answers every RunTask with the capacity failure until capacity is "
        f"back (the harness then clears the proxy's sticky script), after which the task starts. "
        f"**Today**: no queue, each invocation sleeps its waits (ECS_RERUN_BASE/MAX_DELAY {TODAY_BASE_S}/"
        f"{TODAY_MAX_S} s: {w['today']}), timeout {TODAY_TIMEOUT_S} s. **Delay queue**: ECS_RERUN_DELAY_QUEUE_URL "
        f"set, capacity schedule IntervalSeconds {CAPACITY_SCHEDULE['IntervalSeconds']}, BackoffRate "
        f"{CAPACITY_SCHEDULE['BackoffRate']}, MaxDelaySeconds {CAPACITY_SCHEDULE['MaxDelaySeconds']}, EQUAL "
        f"({w['queue']}; horizon {lo_q / 60:g}–{hi_q / 60:g} min) through ECS_RERUN_RULES, timeout "
        f"{QUEUE_TIMEOUT_S} s. Both: {MAX_ATTEMPTS} attempts, deadline reserve, hop threshold and record-age "
        f"guard scaled the same way. All figures below are in outage (scaled) time. Not scaled: the function's "
        f"and the endpoint's own run time (1 ms here counts as {SCALE / 1000:g} s), and SQS's whole-second "
        f"DelaySeconds (the function rounds each hop up to a whole second, i.e. up to one scaled minute late "
        f"here, under a second in AWS).",
        "",
        "Columns: *rerun* = jobs whose task started; *dead-lettered* = events older than the maximum age before "
        "a slot took them (+ failed invocations, + delay-queue DLQ); *capacity back → rerun* = from the moment "
        "RunTask succeeds again to the call that started the job's task; *arrival → slot* = until a slot took "
        "the job's event; *arrival → first call* = until the job's first RunTask (its own first wait included); "
        "*first attempts behind another job's episode* = jobs whose event waited for a slot while all slots were "
        "busy and at least one of them was asleep in another job's wait (an invocation that logged \"waiting "
        "before retry\" and slept), counted from the function's log lines and the slots' timelines; *slot time "
        "asleep* = the share of the slots' time spent sleeping through waits inside invocations.",
        "",
    ]
    head = ("Capacity back after", "Design", "Rerun", "Gave up", "Stale", "Dead-lettered", "Unfinished",
            "Capacity back → rerun: median / p90 / max", "Last rerun", "Arrival → slot: median / max",
            "Arrival → first call: median / max", "First attempts behind another job's episode",
            "Slot time asleep")
    rows = [head]
    for s in summaries:
        dl = s["dead_too_old"] + s["dead_error"] + s["dlq"]
        dl_txt = str(dl) + (f" ({s['dead_too_old']} too old, {s['dead_error']} errors, {s['dlq']} DLQ)"
                            if s["dead_error"] or s["dlq"] else "")
        rows.append((
            f"{s['back_min']:g} min", DESIGNS[s["design"]]["label"], f"{s['reruns']} / {s['jobs']}",
            str(s["gave_up"]), str(s["stale"]), dl_txt, str(s["unfinished"]),
            f"{fmt_min(s['delay_median'])} / {fmt_min(s['delay_p90'])} / {fmt_min(s['delay_max'])}",
            fmt_min(s["last_rerun_min"]), f"{fmt_s(s['pickup_median_s'])} / {fmt_s(s['pickup_max_s'])}",
            f"{fmt_s(s['first_call_median_s'])} / {fmt_s(s['first_call_max_s'])}",
            f"{s['behind_other_episode']} of {s['picked'] + s['dead_too_old']}", f"{s['asleep_share']:.0%}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    lines += [line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows[1:]), ""]
    # Ratios and checks.
    by = {(s["design"], s["back_min"]): s for s in summaries}
    notes = []
    for b in sorted({s["back_min"] for s in summaries}):
        t, q = by.get(("today", b)), by.get(("queue", b))
        if not (t and q):
            continue
        parts = [f"reruns {q['reruns']} vs {t['reruns']}"]
        if min(t["reruns"], q["reruns"]) < max(t["reruns"], q["reruns"]) / 2:
            parts.append("the delays to rerun are not compared: one design reran less than half as many jobs")
        elif t["delay_median"] and q["delay_median"]:
            parts.append(f"median capacity back → rerun today ÷ queue = {t['delay_median'] / q['delay_median']:.1f}×")
            if t["delay_max"] and q["delay_max"]:
                parts.append(f"max {t['delay_max'] / q['delay_max']:.1f}×")
        if t["first_call_median_s"] and q["first_call_median_s"]:
            parts.append(f"median arrival → first call today ÷ queue = "
                         f"{t['first_call_median_s'] / q['first_call_median_s']:.2f}×")
        if q["reruns"] < t["reruns"]:
            parts.append("the delay queue reruns fewer: every episode starts at the outage and its "
                         f"{MAX_ATTEMPTS} calls span {horizon_s('queue')[0] / 60:g}–{horizon_s('queue')[1] / 60:g} "
                         f"min, while today most events wait for a slot and begin their episodes (at most "
                         f"{horizon_s('today')[1]:g} s of waits) only later, many after capacity is back")
        notes.append(f"- Capacity back after {b:g} min (queue vs today): " + "; ".join(parts) + ".")
    for s in summaries:
        if s["design"] != "queue":
            continue
        shorter = s["back_min"] * 60 < lo_q
        verdict = []
        if shorter:
            verdict.append(f"outage shorter than the horizon ({lo_q / 60:g} min): "
                           f"{'every job rerun' if s['reruns'] == s['jobs'] else 'NOT every job rerun'} "
                           f"({s['reruns']} / {s['jobs']})")
        else:
            verdict.append(f"outage not shorter than the horizon ({lo_q / 60:g}–{hi_q / 60:g} min): "
                           f"{s['reruns']} / {s['jobs']} rerun, {s['gave_up']} gave up")
        verdict.append(f"{'no' if s['behind_other_episode'] == 0 else s['behind_other_episode']} first attempt(s) "
                       f"behind another job's episode ({s['slept_invocations']} invocations slept; the longest wait "
                       f"for a slot, {fmt_s(s['pickup_max_s'])}, is the function's and the endpoint's own run time, "
                       f"not scaled: {s['invocations']} invocations of median {s['inv_median_s'] / SCALE * 1000:.0f} "
                       f"ms real, longest {s['inv_max_s'] / SCALE * 1000:.0f} ms, through {SLOTS} slots)")
        if s["hop_late_max_s"] is not None:
            verdict.append(f"{s['hops']} hops through the delay queue, delivered to a slot {fmt_s(s['hop_late_median_s'])} "
                           f"(median) and at most {fmt_s(s['hop_late_max_s'])} after their DelaySeconds ran out, "
                           f"{s['redeliveries']} redelivered, {s['batch_item_failures']} batch item failures, "
                           f"{s['dlq']} in the dead-letter queue")
        if s["hop_rounding_mean_s"] is not None:
            verdict.append(f"each hop's delay rounded up to a whole real second adds {fmt_s(s['hop_rounding_mean_s'])} "
                           f"on average (a scale artefact)")
        if s["first_excess_max_s"] is not None:
            verdict.append(f"first call − arrival − the job's own first delay: median "
                           f"{fmt_s(s['first_excess_median_s'])}, max {fmt_s(s['first_excess_max_s'])}")
        notes.append(f"- Check, delay queue, capacity back after {s['back_min']:g} min: " + "; ".join(verdict) + ".")
    for s in summaries:
        bad = []
        if s["started_twice"]:
            bad.append(f"{s['started_twice']} job(s) started twice")
        if s["max_calls_per_job"] > MAX_ATTEMPTS:
            bad.append(f"a job got {s['max_calls_per_job']} RunTask calls (> {MAX_ATTEMPTS})")
        if s["over_deadline"]:
            bad.append(f"{s['over_deadline']} invocation(s) answered after their (scaled) deadline")
        if s["unfinished"]:
            bad.append(f"{s['unfinished']} job(s) without an outcome when the run stopped")
        if s["untagged_calls"]:
            bad.append(f"{s['untagged_calls']} RunTask call(s) without the job tag")
        if bad:
            notes.append(f"- Note, {s['design']}, capacity back after {s['back_min']:g} min: " + "; ".join(bad) + ".")
    for s in spot:
        bad = []
        if s["max_calls_per_job"] > MAX_ATTEMPTS:
            bad.append(f"a job got {s['max_calls_per_job']} RunTask calls (> {MAX_ATTEMPTS})")
        if s["over_deadline"]:
            bad.append(f"{s['over_deadline']} invocation(s) answered after their (scaled) deadline")
        if s["untagged_calls"]:
            bad.append(f"{s['untagged_calls']} RunTask call(s) without the job tag")
        if s["dead_too_old"] + s["dead_error"] + s["dlq"]:
            bad.append(f"{s['dead_too_old'] + s['dead_error'] + s['dlq']} event(s) or hop(s) dead-lettered")
        if bad:
            notes.append(f"- Note, Spot outage, {SPOT_CASES[s['spot']]}: " + "; ".join(bad) + ".")
    if not summaries:                 # the Spot runs alone: the heading and method, no empty table
        lines = lines[:3]
    notes.append("- Every job: at most " + f"{max(s['max_calls_per_job'] for s in everything)} RunTask calls "
                 f"(limit {MAX_ATTEMPTS}), tasks started twice: {sum(s['started_twice'] for s in everything)}. "
                 f"Wall time of the {len(everything)} runs: {sum(s['wall_s'] for s in everything):.0f} s.")
    return lines + notes + (spot_section(spot) if spot else [])


def spot_section(spot: list[dict]) -> list[str]:
    """The Spot outage's rows (issue 21.6): per run and task family."""
    lo_q, hi_q = horizon_s("queue")
    fam = spot_family()
    w = ", ".join(f"{lo:g}–{hi:g} s" for lo, hi in DESIGNS["queue"]["waits"])
    lines = [
        "",
        "### Spot outage with a capacity fallback (issue 21)",
        "",
        f"The same machinery, delay queue, {spot[0]['jobs']} FARGATE_SPOT RunTask records (sample 18, each its own "
        f"job: own clientToken, count 1) at once: the even jobs of sample 18's family `{fam}`, the odd ones of "
        f"`{OTHER_FAMILY}`. Fargate Spot has no capacity for {SPOT_OUTAGE_MIN // 60} hours (scaled), longer than "
        f"the capacity schedule's horizon ({lo_q / 60:g}–{hi_q / 60:g} min): the proxy answers every FARGATE_SPOT "
        f"request with \"Capacity is unavailable at this time\" (its `only_capacity_provider` action option) while "
        f"FARGATE requests reach moto and start. **{SPOT_CASES['fallback']}**: ECS_RERUN_RULES holds, before the "
        f"capacity rules of the delay-queue runs above, `{{\"onReason\": \"*Capacity is unavailable*\", "
        f"\"onCapacityProvider\": \"{SPOT}\", \"onTaskFamily\": \"{fam}\", \"action\": \"retry\", "
        f"\"fallbackFromAttempt\": {FALLBACK_FROM}, \"fallback\": {{\"capacityProviderStrategy\": "
        f"[{{\"capacityProvider\": \"{ON_DEMAND}\"}}]}}}}` with the same schedule ({w}); "
        f"`{OTHER_FAMILY}` matches only the capacity rules. **{SPOT_CASES['plain']}**: the same outage and jobs "
        f"without that rule. {MAX_ATTEMPTS} attempts. Placement = the capacity providers of the RunTask request "
        f"the endpoint received; times from the moment the outage began (the records' eventTime).",
        "",
    ]
    head = ("Rules", "Task family", "Jobs", f"Started on {ON_DEMAND}", f"Started on {SPOT}", "Outcomes",
            f"Outage start → started on {ON_DEMAND}: median / p90 / max", f"First {ON_DEMAND} call",
            "Calls 1 / 2 / 3: median after the outage began", "Gap before call 1 / 2 / 3 (min–max)",
            "Max calls", "Started twice")
    rows = [head]
    for s in spot:
        for f, g in s["groups"].items():
            calls = " / ".join(fmt_min(v) for v in g["call_median_min"].values()) or "none"
            gaps = " / ".join(f"{lo / 60:.1f}–{hi / 60:.1f}" for lo, hi in g["gap_range_s"].values()) + " min"
            rows.append((
                SPOT_CASES[s["spot"]], f"`{f}`", str(g["jobs"]), str(g["started_on"].get(ON_DEMAND, 0)),
                str(g["started_on"].get(SPOT, 0)),
                ", ".join(f"{n} {o}" for o, n in sorted(g["outcomes"].items())),
                f"{fmt_min(g['fallback_median_min'])} / {fmt_min(g['fallback_p90_min'])} / "
                f"{fmt_min(g['fallback_max_min'])}" if g["fallback_median_min"] is not None else "none",
                ", ".join(f"call {k}: {n}" for k, n in sorted(g["first_fargate_call"].items())) or "none",
                calls, gaps, str(g["max_calls"]), str(g["started_twice"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    lines += [line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows[1:]), ""]
    by = {s["spot"]: s["groups"] for s in spot}
    notes = []
    rule = by.get("fallback", {}).get(fam)
    if rule:
        n = rule["jobs"]
        on_fargate = rule["started_on"].get(ON_DEMAND, 0)
        notes.append(
            f"- Check, {SPOT_CASES['fallback']}, `{fam}`: {'every job' if on_fargate == n else 'NOT every job'} "
            f"started on {ON_DEMAND} ({on_fargate} / {n}), its first {ON_DEMAND} call being call "
            f"{', '.join(f'{k} ({c} jobs)' for k, c in sorted(rule['first_fargate_call'].items())) or 'none'} "
            f"(the rule says {FALLBACK_FROM}); {rule['fallback_median_min'] or 0:.1f} min after the outage began "
            f"(median; first {rule['fallback_min_min'] or 0:.1f}, last {rule['fallback_max_min'] or 0:.1f} min); "
            f"{rule['spot_after_fallback']} job(s) back on {SPOT} after a {ON_DEMAND} call; "
            f"{rule['fallback_calls_without_tag']} {ON_DEMAND} call(s) without the tag "
            f"`{FALLBACK_TAG}={SPOT}:{ON_DEMAND}`; started twice: {rule['started_twice']}.")
    for f, g in by.get("fallback", {}).items():
        if f == fam:
            continue
        plain = by.get("plain", {}).get(f)
        same = (f"calls at {' / '.join(fmt_min(v) for v in g['call_median_min'].values())} after the outage "
                f"began (medians) with the rule set, {' / '.join(fmt_min(v) for v in plain['call_median_min'].values())} "
                f"without it" if plain else "no run without the rule to compare")
        notes.append(
            f"- Check, {SPOT_CASES['fallback']}, `{f}` (no rule matches it): {g['fargate_calls']} {ON_DEMAND} "
            f"call(s), {g['started_on'].get(SPOT, 0)} started; the Spot schedule unchanged: {same}; "
            f"at most {g['max_calls']} calls; outcomes: "
            + ", ".join(f"{n} {o}" for o, n in sorted(g["outcomes"].items())) + ".")
    plain_rule = by.get("plain", {}).get(fam)
    if plain_rule and rule:
        notes.append(
            f"- Comparison, `{fam}`: with the rule {rule['started_on'].get(ON_DEMAND, 0)} / {rule['jobs']} started "
            f"(on {ON_DEMAND}, median {rule['fallback_median_min'] or 0:.1f} min after the outage began); without it "
            f"{sum(plain_rule['started_on'].values())} / {plain_rule['jobs']} started, outcomes "
            + ", ".join(f"{n} {o}" for o, n in sorted(plain_rule["outcomes"].items()))
            + f" (the outage outlasts the schedule's {lo_q / 60:g}–{hi_q / 60:g} min; Spot comes back after "
              f"{SPOT_OUTAGE_MIN // 60} h).")
    return lines + notes


# ---- entry points ----------------------------------------------------------------------------------------
def run_all(stack, rust_bin: Path, jobs: int = JOBS, backs=BACK_MINUTES, designs=("today", "queue"),
            spot=tuple(SPOT_CASES)) -> list[dict]:
    OUT.mkdir(parents=True, exist_ok=True)
    seeded = {Path(f).resolve() for f in stack.event_files}
    if spot and SPOT_EVENT.resolve() not in seeded:
        raise RuntimeError(f"the Spot outage needs the stack seeded with {SPOT_EVENT.relative_to(ROOT)} "
                           f"(Stack(event_files=[..., outage.SPOT_EVENT]))")
    out = []
    for b in backs:
        for d in designs:
            t = time.time()
            r = run_once(stack, rust_bin, d, b, jobs)
            s = summarize(r)
            out.append(s)
            say(f"{d:5} back after {b:g} min: rerun {s['reruns']}/{jobs}, gave up {s['gave_up']}, stale {s['stale']}, "
                f"dead-lettered {s['dead_too_old'] + s['dead_error'] + s['dlq']}, unfinished {s['unfinished']}, "
                f"back→rerun median {fmt_min(s['delay_median'])} max {fmt_min(s['delay_max'])}, "
                f"slot wait max {fmt_s(s['pickup_max_s'])}, longest invocation {fmt_s(s['inv_max_s'])} "
                f"({time.time() - t:.0f} s wall)")
            for p in s["problems"]:
                say(f"  function said: {p[:300]}")
    for case in spot:
        t = time.time()
        s = summarize(run_once(stack, rust_bin, "queue", SPOT_OUTAGE_MIN, jobs, spot=case))
        out.append(s)
        for f, g in s["groups"].items():
            say(f"spot  {case:8} {f}: started on {g['started_on']}, outcomes {g['outcomes']}, on {ON_DEMAND} after "
                f"median {fmt_min(g['fallback_median_min'])} max {fmt_min(g['fallback_max_min'])}, "
                f"calls at {[round(v, 1) for v in g['call_median_min'].values()]} min")
        say(f"spot  {case:8} ({time.time() - t:.0f} s wall)")
        for p in s["problems"]:
            say(f"  function said: {p[:300]}")
    return out


def splice(text: str, section_lines: list[str]) -> str:
    """bench/results.md with its mass-outage section replaced (or added at the end)."""
    head = text.split("\n## Mass outage", 1)[0].rstrip("\n")
    return head + "\n\n" + "\n".join(section_lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rust-bin", type=Path, help="the ecs-rerun binary (default: build the release one)")
    ap.add_argument("--jobs", type=int, default=JOBS)
    ap.add_argument("--back", default=",".join(str(b) for b in BACK_MINUTES),
                    help="capacity back after, scaled minutes, comma-separated")
    ap.add_argument("--designs", default="today,queue")
    ap.add_argument("--spot", default=",".join(SPOT_CASES),
                    help=f"the Spot outage's runs, comma-separated ({', '.join(SPOT_CASES)}; empty: none)")
    ap.add_argument("--update-results", action="store_true",
                    help="replace the mass-outage section of bench/results.md with this run's")
    args = ap.parse_args()
    rust_bin = args.rust_bin
    if rust_bin is None:
        subprocess.run(["cargo", "build", "--locked", "--release", "--bin", "ecs-rerun"], cwd=ROOT, check=True)
        rust_bin = ROOT / "target" / "release" / "ecs-rerun"
    from stack import Stack  # scripts/e2e/stack.py

    OUT.mkdir(parents=True, exist_ok=True)
    spot = [c for c in args.spot.split(",") if c]
    if unknown := set(spot) - set(SPOT_CASES):
        ap.error(f"--spot: unknown run(s) {', '.join(sorted(unknown))} (known: {', '.join(SPOT_CASES)})")
    with Stack(event_files=list(EVENTS), with_lambda=False, log_dir=OUT, quiet=True) as stack:
        summaries = run_all(stack, rust_bin, args.jobs, [float(b) for b in args.back.split(",") if b],
                            [d for d in args.designs.split(",") if d], spot)
    lines = section(summaries, args.jobs)
    print("\n".join(lines))
    (OUT / "outage.json").write_text(json.dumps(summaries, indent=1))
    (OUT / "outage.md").write_text("\n".join(lines) + "\n")
    if args.update_results:
        RESULTS.write_text(splice(RESULTS.read_text(), lines))
        say(f"updated {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
