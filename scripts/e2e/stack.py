"""The local end-to-end stack: moto's server, the fault proxy, and cargo-lambda's Lambda emulator.

    function (bootstrap, run by `cargo lambda watch`) --AWS_ENDPOINT_URL--> fault proxy --> moto_server
    harness (this module, boto3) ------------------------------------------------------> moto_server

Everything binds 127.0.0.1 on free ports and is stopped again when the stack is closed, also on
Ctrl-C / SIGTERM / SIGHUP (children also get SIGTERM if this process dies, via PR_SET_PDEATHSIG).

Sample events are retimed before they are sent (`retime`): their CloudTrail records date from 2025,
and ecs-rerun does not rerun a record older than ECS_RERUN_MAX_RECORD_AGE_S (default 3600 s), so
`time` and `detail.eventTime` are set to now, keeping their offset (`invoke(..., fresh=False)` sends
an event as it is, e.g. to test that very rule).

With `delay_queue=True` (issue 12) the stack also has the delay queue and its dead-letter queue in moto's
SQS, the function runs with ECS_RERUN_DELAY_QUEUE_URL (the queue's URL at the fault proxy, the endpoint the
function uses) and ECS_RERUN_HOP_AFTER_MS=50, so every wait of the local backoff (at least 100 ms) goes
through the queue, and a pump (pump.py) plays Lambda's SQS event source mapping: it delivers each message
back to the function when its delay is over. `settle()` waits until the queue is empty and nothing is in
flight; `episode(event_id)` gathers an episode's invocations and reports.

With `store=True` (the default; issue 13) the stack has the launch store: a DynamoDB table in moto
(hash key `pk` (S), TTL on `expiresAt`, as the function expects it) created at every seed, and the function
runs with ECS_RERUN_STORE_TABLE naming it. It reaches DynamoDB through the fault proxy like every other
service (DynamoDB's JSON protocol passes through untouched, and is logged). Then a successful RunTask
record is guarded, a task that failed to start is rerun with its stored request, and each episode's
notification is claimed once. `store_items()` / `launch_item(task_arn)` read the table back.
`concurrency=N` lets the emulator run N invocations at once (`cargo lambda watch --concurrency`), for
tests of concurrent duplicate deliveries (`Stack.invoke` itself sends one at a time; `invoke_concurrently`
does not wait for the others).

Task state changes (`ECS Task State Change`) are retimed too: `detail.stoppedAt` is set to now and the
other times of the event keep their offset to it; their `id` is the episode's `event_id`, as for the function.

Organization mode (issue 20; `members=`): moto keeps accounts and Regions apart. moto runs without
MOTO_ACCOUNT_ID (which would put every call in one account); the fault proxy names each call's account to
moto (`x-moto-account-id`: the account of the key that signed it, see proxy.py) and the harness's own
clients name theirs the same way (`client(service, account, region)`). With `members={account: [regions]}`
the stack also seeds, in each of those accounts and Regions, the clusters, task definitions and container
instances of the sample records of that account (EC2 ones: the subnets map is the home account's), and the
function runs with ECS_RERUN_MEMBER_ROLE=MEMBER_ROLE and those accounts in ECS_RERUN_ALLOWED_ACCOUNTS, so a
member's record is rerun there with the credentials of an sts:AssumeRole (moto needs no role for it).
The home account is seeded with every record's cluster and family too, members' included, so a call sent
to the wrong account would find something to start there. `make replay` and `make stack` run this way
(ORG_MEMBERS); the other end-to-end stacks do not, unless a test asks for it.

Usage as a program (what `make stack` runs):
    python scripts/e2e/stack.py up      start, seed, print the addresses, run until interrupted;
                                        writes .tools/e2e/stack.json so `make invoke` can find it
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import datetime as dt
import json
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy import FaultProxy  # noqa: E402
from pump import MAX_RECEIVE_COUNT, VISIBILITY_TIMEOUT_S, Episode, Pump  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = ROOT / ".tools" / "e2e"
STACK_FILE = STATE_DIR / "stack.json"
REGION = "us-east-1"
ACCOUNT = "111122223333"          # the account of the sample events; moto runs as this account
TOPIC_NAME = "ecs-rerun-notifications"
QUEUE_NAME = "ecs-rerun-notifications"
FUNCTION = "ecs-rerun"
DELAY_QUEUE_NAME = "ecs-rerun-delay"
DEAD_LETTER_QUEUE_NAME = "ecs-rerun-delay-dlq"
STORE_TABLE = "ecs-rerun-launches"
TASK_CHANGE = "ECS Task State Change"
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# Organization mode: a member account, served in two Regions, reached through this role.
MEMBER_ACCOUNT = "444455556666"
MEMBER_REGIONS = ("us-east-1", "eu-west-1")
MEMBER_ROLE = "ecs-rerun-member"
ORG_MEMBERS = {MEMBER_ACCOUNT: list(MEMBER_REGIONS)}

# Short backoff for the local run (production defaults are 20 s / 120 s): `make replay` takes seconds.
# AWS_LAMBDA_FUNCTION_NAME is what Lambda sets, and the session name of the function's own calls
# (arn:aws:sts::ACCOUNT:assumed-role/ROLE/<function name>): records of that session are ecs-rerun's own.
# The capacity fallback of sample 18 (issue 21): its family only, so no other sample changes. Spot → FARGATE
# from attempt 2 of 3.
FALLBACK_RULES = json.dumps([{
    "onReason": "*Capacity is unavailable*", "onCapacityProvider": "FARGATE_SPOT", "onTaskFamily": "spot-report",
    "action": "retry", "fallbackFromAttempt": 2,
    "fallback": {"capacityProviderStrategy": [{"capacityProvider": "FARGATE"}]},
}])
LOCAL_FUNCTION_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
    "ECS_RERUN_RULES": FALLBACK_RULES,
    "ECS_RERUN_MAX_ATTEMPTS": "3",
    "ECS_RERUN_BASE_DELAY_MS": "200",
    "ECS_RERUN_MAX_DELAY_MS": "1000",
    "ECS_RERUN_ALLOWED_ACCOUNTS": ACCOUNT,
    "RUST_LOG": "info",
}
# With the delay queue: every wait of the local backoff goes through it. Equal jitter on the 200 ms base
# makes the first wait 100-200 ms (sample 05's is 100.x ms), so the threshold sits below the shortest
# wait, not on it. JSON log lines (as Lambda's advanced logging controls set them) let the pump read the
# report of each delay-queue message, which a hop invocation does not answer (it answers batchItemFailures).
DELAY_QUEUE_FUNCTION_ENV = {
    "ECS_RERUN_HOP_AFTER_MS": "50",
    "AWS_LAMBDA_LOG_FORMAT": "JSON",
}


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
RETIME_NOTE = ("records retimed: `time` and `detail.eventTime` (a task state change's `detail.stoppedAt`) set "
               "to now (UTC), keeping their offset, because the sample records date from 2025 and ecs-rerun does "
               "not rerun a record older than ECS_RERUN_MAX_RECORD_AGE_S (default 3600 s)")


def _parse_time(text) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.timezone.utc)
    except ValueError:
        return None


def retime(event, age_s: float = 0, now: dt.datetime | None = None):
    """A copy of an EventBridge event whose CloudTrail record happened `age_s` seconds before `now`
    (default: the current time): `detail.eventTime` = now - age, `time` moved by the same amount, so
    the offset between them is kept. A task state change is moved so that its `detail.stoppedAt` is
    now - age, its `time` and every other `detail.*At` time by the same amount. Anything that is not
    such an event is returned unchanged."""
    if not isinstance(event, dict):
        return event
    out = copy.deepcopy(event)
    detail = out.get("detail") if isinstance(out.get("detail"), dict) else None
    now = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).replace(microsecond=0)
    target = now - dt.timedelta(seconds=age_s)
    stopped_at = _parse_time(detail.get("stoppedAt")) if detail and out.get("detail-type") == TASK_CHANGE else None
    if stopped_at is not None:
        shift = target - stopped_at
        for k, v in list(detail.items()):
            at = _parse_time(v) if k.endswith("At") else None
            if at is not None:
                detail[k] = (at + shift).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        env_time = _parse_time(out.get("time"))
        if env_time is not None:
            out["time"] = (env_time + shift).strftime(TIME_FORMAT)
        return out
    event_time = _parse_time(detail.get("eventTime")) if detail else None
    env_time = _parse_time(out.get("time"))
    if event_time is not None:
        detail["eventTime"] = target.strftime(TIME_FORMAT)
        if env_time is not None:
            out["time"] = (target + (env_time - event_time)).strftime(TIME_FORMAT)
    elif env_time is not None:
        out["time"] = target.strftime(TIME_FORMAT)
    return out


def load_event(path) -> dict | None:
    """The JSON of an event file, or None when it is not JSON (a malformed-event fixture)."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError:
        return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the harness dies, even by SIGKILL (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it listened on {port}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def tool(name: str) -> str:
    """A tool installed into the venv this harness runs from (.tools/venv/bin)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: run `make tools`")
    return found


def tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


class ControlClient:
    """The proxy's control API over HTTP (works for an in-process or another process's proxy)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def _call(self, name: str, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(f"{self.url}/__control/{name}", data=data,
                                     method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def reset(self):
        return self._call("reset", {})

    def config(self, **cfg):
        return self._call("config", cfg)

    def script(self, scripts: dict):
        return self._call("script", scripts)

    def clear_script(self):
        return self._call("clear-script", {})

    def created(self, task_arn: str, created_at: float):
        """Set the `createdAt` the proxy reports for a task (epoch seconds)."""
        return self._call("created", {"taskArn": task_arn, "createdAt": created_at})

    def log(self, since: int = 0) -> list[dict]:
        return self._call(f"log?since={since}")

    def state(self):
        return self._call("state")


@dataclass
class InvokeResult:
    event_file: str
    ok: bool                       # the emulator reported success
    response: dict | list | None   # the function's JSON response
    error: str | None              # the emulator's error report for a failed invocation
    seconds: float
    calls: list[dict] = field(default_factory=list)   # what the proxy saw during the invocation
    event_id: str | None = None    # the CloudTrail record's eventID of an EventBridge event


def org_function_env(members: dict[str, list[str]], role: str | None = MEMBER_ROLE) -> dict[str, str]:
    """The function's settings for organization mode: the member role (None: unset) and the allowed accounts
    (the stack's own and the members)."""
    env = {"ECS_RERUN_ALLOWED_ACCOUNTS": ",".join([ACCOUNT, *members])}
    if role:
        env["ECS_RERUN_MEMBER_ROLE"] = role
    return env


def event_account(path) -> str | None:
    """The account of an event file's envelope (None when it is not an event)."""
    ev = load_event(path)
    return ev.get("account") if isinstance(ev, dict) else None


def sample_requests(event_files) -> list[dict]:
    """What the given event files name, as RunTask requests to seed for: the requestParameters of every
    RunTask record; the revision each of its started tasks ran (`responseElements.tasks[].taskDefinitionArn`:
    a task of it that fails to start is rerun pinned to that revision); and the task of every task state
    change (its cluster, revision and containers)."""
    out = []
    for f in event_files:
        try:
            ev = json.loads(Path(f).read_text())
            detail = ev.get("detail") or {}
        except (ValueError, AttributeError):
            continue
        if detail.get("eventName") == "RunTask" and isinstance(detail.get("requestParameters"), dict):
            req = detail["requestParameters"]
            out.append(req)
            for t in (detail.get("responseElements") or {}).get("tasks") or []:
                if isinstance(t, dict) and t.get("taskDefinitionArn"):
                    out.append({**req, "taskDefinition": t["taskDefinitionArn"]})
        elif ev.get("detail-type") == TASK_CHANGE and detail.get("taskDefinitionArn"):
            fargate = detail.get("launchType") == "FARGATE"
            out.append({"cluster": detail.get("clusterArn") or "default",
                        "taskDefinition": detail["taskDefinitionArn"],
                        **({"launchType": "FARGATE", "networkConfiguration": {"awsvpcConfiguration": {}}}
                           if fargate else {}),
                        "overrides": {"containerOverrides": [{"name": c["name"]} for c in detail.get("containers") or []
                                                             if isinstance(c, dict) and c.get("name")]},
                        "_awsvpc": fargate})
    return out


def dotenv_value(value: str) -> str:
    """A value as an env file holds it: single-quoted (literal) when it has more than word characters, as the
    JSON of ECS_RERUN_RULES does; a single quote inside cannot be written that way, so it is refused."""
    if re.fullmatch(r"[\w.:/,@+=-]*", value):
        return value
    if "'" in value:
        raise ValueError(f"an env-file value with a single quote: {value!r}")
    return f"'{value}'"


class Stack:
    def __init__(self, event_files=(), with_lambda: bool = True, function_env: dict | None = None,
                 log_dir: Path = STATE_DIR, quiet: bool = False, delay_queue: bool = False,
                 store: bool = True, concurrency: int = 1, members: dict[str, list[str]] | None = None,
                 member_role: str | None = MEMBER_ROLE):
        """`members` ({account: [Region, ...]}): organization mode (see the module's doc); `member_role`
        None runs it without ECS_RERUN_MEMBER_ROLE (members' records are then only notified).
        `function_env` comes last and may override any of it."""
        self.event_files = [str(f) for f in event_files] or [str(p) for p in sorted((ROOT / "events").glob("[0-9]*.json"))]
        self.members = {a: list(r) for a, r in (members or {}).items()}
        function_env = {**(org_function_env(self.members, member_role) if self.members else {}),
                        **(function_env or {})}
        self.with_lambda = with_lambda
        self.delay_queue = delay_queue
        self.store = store
        self.concurrency = concurrency
        self.function_env = {**LOCAL_FUNCTION_ENV, **(DELAY_QUEUE_FUNCTION_ENV if delay_queue else {}),
                             **(function_env or {})}
        self.log_dir = Path(log_dir)
        self.quiet = quiet
        self.procs: dict[str, subprocess.Popen] = {}
        self.proxy: FaultProxy | None = None
        self.moto_url = ""
        self.lambda_port = 0
        self.topic_arn = f"arn:aws:sns:{REGION}:{ACCOUNT}:{TOPIC_NAME}"
        self.queue_url = ""
        self.seeded: dict = {}
        self._clients: dict = {}
        self.delay_queue_url = ""          # in moto, for the harness
        self.dead_letter_url = ""
        self.pump: Pump | None = None
        self.invoke_lock = threading.RLock()   # one invocation at a time: each one's proxy log is its own
        self.invocations: list[InvokeResult] = []   # the EventBridge events sent (episode beginnings)

    # ---- lifecycle ------------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def __enter__(self) -> "Stack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env or tool_env(), cwd=ROOT, start_new_session=True,
                                preexec_fn=_die_with_parent)
        log.close()
        self.procs[name] = proc
        return proc

    def start(self) -> None:
        t0 = time.monotonic()
        port = free_port()
        env = tool_env()
        # No MOTO_ACCOUNT_ID: it would override the account of every call; the proxy and the harness's
        # clients name each call's account instead (x-moto-account-id).
        env.pop("MOTO_ACCOUNT_ID", None)
        proc = self._spawn("moto", [tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)], env)
        wait_for_port(port, 30, proc, "moto_server")
        self.moto_url = f"http://127.0.0.1:{port}"
        self.proxy = FaultProxy(self.moto_url, 0, region=REGION, account=ACCOUNT).start()
        self.control = ControlClient(self.proxy.url)
        self.seed()
        self.say(f"stack: moto {self.moto_url}, fault proxy {self.proxy.url} (seeded in {time.monotonic() - t0:.1f}s)")
        if self.with_lambda:
            self.start_lambda()
            if self.delay_queue:
                arn = self.client("sqs").get_queue_attributes(
                    QueueUrl=self.delay_queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
                self.pump = Pump(self, self.delay_queue_url, self.dead_letter_url, arn, REGION).start()
                self.say(f"stack: delay queue {self.delay_queue_url} (function: {self.function_queue_url()}), "
                         f"pump: batches of {self.pump.batch_size}, maxReceiveCount {MAX_RECEIVE_COUNT}, "
                         f"dead letters from {self.dead_letter_url}")

    def function_queue_url(self) -> str:
        """The delay queue's URL as the function gets it: at the fault proxy, the endpoint it uses."""
        return f"{self.proxy.url}/{ACCOUNT}/{DELAY_QUEUE_NAME}"

    def function_env_all(self) -> dict[str, str]:
        queue = {"ECS_RERUN_DELAY_QUEUE_URL": self.function_queue_url()} if self.delay_queue else {}
        if self.store:
            queue["ECS_RERUN_STORE_TABLE"] = STORE_TABLE
        return {
            "AWS_ENDPOINT_URL": self.proxy.url,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": CREDS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDS["aws_secret_access_key"],
            "ECS_RERUN_TOPIC_ARN": self.topic_arn,
            **queue,
            **self.function_env,
        }

    def start_lambda(self) -> None:
        self.lambda_port = free_port()
        env_file = self.log_dir / "function.env"
        fenv = self.function_env_all()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env_file.write_text("".join(f"{k}={dotenv_value(v)}\n" for k, v in fenv.items()))
        env = tool_env()
        env.update(fenv)   # also in the emulator's own environment, in case a variable is only inherited
        argv = ["cargo", "lambda", "watch", "--bin", FUNCTION, "--ignore-changes", "--quiet",
                "--invoke-address", "127.0.0.1", "--invoke-port", str(self.lambda_port),
                "--env-file", str(env_file)]
        if self.concurrency > 1:
            argv += ["--concurrency", str(self.concurrency)]
        t0 = time.monotonic()
        proc = self._spawn("lambda", argv, env)
        wait_for_port(self.lambda_port, 300, proc, "cargo lambda watch")
        self.say(f"stack: Lambda emulator on 127.0.0.1:{self.lambda_port} "
                 f"(cargo lambda watch, up in {time.monotonic() - t0:.1f}s; function log: {self.log_dir / 'lambda.log'})")

    def stop(self) -> None:
        if self.pump is not None:
            self.pump.stop()
            self.pump = None
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
        self.procs.clear()
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None

    # ---- AWS clients: straight to moto, or through the proxy as another caller of ECS ------------
    def client(self, service: str, account: str = ACCOUNT, region: str = REGION):
        """A client straight to moto: what the harness uses to seed and read the endpoint (one per
        service, account and Region, kept: building a boto3 client costs tens of milliseconds)."""
        cache = self.__dict__.setdefault("_clients", {})
        key = service if (account, region) == (ACCOUNT, REGION) else (service, account, region)
        if key not in cache:
            cache[key] = self.new_client(service, account, region)
        return cache[key]

    def new_client(self, service: str, account: str = ACCOUNT, region: str = REGION):
        """A client straight to moto of its own (for another thread), its calls made in `account`
        (moto's x-moto-account-id header) and `region`."""
        c = boto3.client(service, endpoint_url=self.moto_url, region_name=region,
                         config=Config(retries={"max_attempts": 1}), **CREDS)

        def name_account(request, **_):
            request.headers["x-moto-account-id"] = account
        c.meta.events.register("before-sign.*.*", name_account)
        return c

    def caller_client(self, service: str = "ecs"):
        """A client through the fault proxy, as the function sees ECS: a test plays the original caller
        with it (its RunTask lands in the proxy's clientToken table and its tasks get `createdAt`)."""
        cache = self.__dict__.setdefault("_clients", {})
        if ("caller", service) not in cache:
            cache[("caller", service)] = boto3.client(
                service, endpoint_url=self.control.url, region_name=REGION,
                config=Config(retries={"total_max_attempts": 1}), **CREDS)   # no SDK retry: one call, one try
        return cache[("caller", service)]

    # ---- seeding --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything (moto's state, the proxy's scripts/log/tokens, what the pump delivered) and
        seed again; the pump does not receive meanwhile."""
        with self.pump.pause() if self.pump else contextlib.nullcontext():
            urllib.request.urlopen(urllib.request.Request(f"{self.moto_url}/moto-api/reset", data=b"", method="POST"),
                                   timeout=10).read()
            self.control.reset()
            self.seed()
            self.invocations.clear()
            if self.pump:
                self.pump.forget()

    def seed(self) -> None:
        ec2, ecs, sns, sqs = (self.client(s) for s in ("ec2", "ecs", "sns", "sqs"))
        # moto advances a task's lastStatus (RUNNING, DEACTIVATING, ... STOPPED) on every describe;
        # keep started tasks RUNNING, as a real task that started would be while we look at it.
        body = json.dumps({"model_name": "ecs::task", "transition": {"progression": "manual", "times": 10**9}})
        urllib.request.urlopen(urllib.request.Request(f"{self.moto_url}/moto-api/state-manager/set-transition",
                                                      data=body.encode(), method="POST"), timeout=10).read()
        requests = sample_requests(self.event_files)
        subnet_map, clusters, families, instances = self._seed_ecs(ec2, ecs, requests, ACCOUNT, REGION)
        member_instances: dict[str, list[str]] = {}
        for account, regions in self.members.items():
            own = sample_requests([f for f in self.event_files if event_account(f) == account])
            for region in regions:
                _, _, _, found = self._seed_ecs(self.client("ec2", account, region),
                                                self.client("ecs", account, region), own, account, region)
                member_instances.update({f"{account}:{region}:{c}": arns for c, arns in found.items()})
        # The topic the function publishes to, with a (non-raw) SQS subscription to read notifications back.
        self.topic_arn = sns.create_topic(Name=TOPIC_NAME)["TopicArn"]
        self.queue_url = sqs.create_queue(QueueName=QUEUE_NAME)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn)
        if self.delay_queue:
            # The delay queue and its dead-letter queue, as the template has them (maxReceiveCount 5).
            self.dead_letter_url = sqs.create_queue(QueueName=DEAD_LETTER_QUEUE_NAME)["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=self.dead_letter_url,
                                               AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            self.delay_queue_url = sqs.create_queue(QueueName=DELAY_QUEUE_NAME, Attributes={
                "VisibilityTimeout": str(VISIBILITY_TIMEOUT_S),
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                             "maxReceiveCount": MAX_RECEIVE_COUNT})})["QueueUrl"]

        if self.store:
            # The launch store as the function expects it: string hash key `pk`, TTL attribute `expiresAt`.
            ddb = self.client("dynamodb")
            ddb.create_table(TableName=STORE_TABLE, BillingMode="PAY_PER_REQUEST",
                             KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                             AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
            ddb.update_time_to_live(TableName=STORE_TABLE,
                                    TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"})

        self.control.config(subnets=subnet_map, container_instances={**instances, **member_instances})
        self.seeded = {"clusters": sorted(clusters), "task_definitions": {k: v["revision"] for k, v in families.items()},
                       "container_instances": instances, "subnets": subnet_map, "topic": self.topic_arn,
                       "queue": self.queue_url, "delay_queue": self.delay_queue_url or None,
                       "store_table": STORE_TABLE if self.store else None, "members": self.members}

    def _seed_ecs(self, ec2, ecs, requests: list[dict], account: str, region: str):
        """Seed one account and Region (clients bound to it) for `requests`: a VPC and two subnets, the
        clusters, task definitions and container instances. Returns (the event subnets mapped onto these
        subnets, clusters, families, the container instances of each EC2 cluster)."""
        # A VPC with DNS hostnames (moto answers 500 for awsvpc tasks without them) and two subnets; the
        # subnet ids the events name are mapped onto these by the proxy.
        vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{region}{az}")
                   ["Subnet"]["SubnetId"] for i, az in enumerate("ab")]
        event_subnets = sorted({s for r in requests
                                for s in ((r.get("networkConfiguration") or {}).get("awsvpcConfiguration") or {})
                                .get("subnets", [])})
        subnet_map = {s: subnets[i % len(subnets)] for i, s in enumerate(event_subnets)}

        # Clusters and task definitions named by the events; every container gets its own memory
        # (moto answers 500 without it). Revisions are registered up to the one the event names.
        clusters: dict[str, dict] = {}
        families: dict[str, dict] = {}
        for r in requests:
            name = _name_of(r.get("cluster") or "default")
            c = clusters.setdefault(name, {"ec2": False, "fargate": False})
            awsvpc = bool((r.get("networkConfiguration") or {}).get("awsvpcConfiguration")) or bool(r.get("_awsvpc"))
            if awsvpc or r.get("launchType") == "FARGATE" or r.get("capacityProviderStrategy"):
                c["fargate"] = True
            else:
                c["ec2"] = True
            family, _, rev = _name_of(r["taskDefinition"]).partition(":")
            f = families.setdefault(family, {"revision": 1, "containers": [], "awsvpc": False})
            f["revision"] = max(f["revision"], int(rev or 1))
            f["awsvpc"] |= awsvpc
            for co in (r.get("overrides") or {}).get("containerOverrides") or []:
                if co.get("name") and co["name"] not in f["containers"]:
                    f["containers"].append(co["name"])
        for name, c in clusters.items():
            kw = {"capacityProviders": ["FARGATE", "FARGATE_SPOT"]} if c["fargate"] else {}
            ecs.create_cluster(clusterName=name, **kw)
        for family, f in families.items():
            containers = [{"name": n, "image": f"public.ecr.aws/docker/library/busybox:latest",
                           "cpu": 16, "memory": 32, "essential": i == 0}
                          for i, n in enumerate(f["containers"] or ["app"])]
            kw = {"networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE", "EC2"],
                  "cpu": "256", "memory": "512"} if f["awsvpc"] else {}
            for _ in range(f["revision"]):
                ecs.register_task_definition(family=family, containerDefinitions=containers, **kw)

        # Container instances for the EC2 clusters: moto needs a (moto) EC2 instance's identity document.
        # moto's built-in AMIs survive a reset; listing them takes over a second, so once per Region is enough.
        images = self.__dict__.setdefault("_images", {})
        image = images[region] = images.get(region) or ec2.describe_images()["Images"][0]["ImageId"]
        instances: dict[str, list[str]] = {}
        for name, c in clusters.items():
            if not c["ec2"]:
                continue
            for i in range(2):
                inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="m5.xlarge",
                                         SubnetId=subnets[i % 2])["Instances"][0]
                doc = {"instanceId": inst["InstanceId"], "region": region, "instanceType": "m5.xlarge",
                       "availabilityZone": inst["Placement"]["AvailabilityZone"], "accountId": account,
                       "imageId": image}
                ci = ecs.register_container_instance(cluster=name, instanceIdentityDocument=json.dumps(doc))
                instances.setdefault(name, []).append(ci["containerInstance"]["containerInstanceArn"])


        return subnet_map, clusters, families, instances

    # ---- driving the function -------------------------------------------------------------------
    def invoke(self, event, on_call=None, timeout: float = 120, fresh: bool = True,
               name: str | None = None) -> InvokeResult:
        """Send one event to the emulator with `cargo lambda invoke --data-file`. `event` is an event
        file or an event (a dict). With `fresh` (the default) the record is retimed to now first
        (see `retime`); fresh=False sends it with the times it has. One invocation at a time (the
        pump's too), so that the calls the proxy saw meanwhile are this invocation's."""
        with self.__dict__.setdefault("invoke_lock", threading.RLock()):
            res = self._invoke(event, on_call, timeout, fresh, name)
        if res.event_id is not None and hasattr(self, "invocations"):
            self.invocations.append(res)
        return res

    def _invoke(self, event, on_call, timeout: float, fresh: bool, name: str | None) -> InvokeResult:
        event_file = event if not isinstance(event, dict) else None
        data = event if isinstance(event, dict) else load_event(event)
        event_id = event_id_of(data)
        if isinstance(data, dict) and (fresh or event_file is None):
            if fresh:
                data = retime(data)
            name = name or (Path(event_file).name if event_file else f"event-{event_id or 'x'}.json")
            sent = Path(self.log_dir) / "sent" / name
            sent.parent.mkdir(parents=True, exist_ok=True)
            sent.write_text(json.dumps(data, indent=2))
        else:
            sent = Path(event_file)
        event_file = event_file or sent
        log = self.control.log()
        since = log[-1]["seq"] if log else 0
        stop = threading.Event()
        seen: list[dict] = []

        def follow():
            nonlocal since
            while True:
                for e in self.control.log(since):
                    since = e["seq"]
                    seen.append(e)
                    if on_call:
                        on_call(e)
                if stop.is_set():
                    return
                stop.wait(0.1)

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        argv = ["cargo", "lambda", "invoke", FUNCTION, "--invoke-address", "127.0.0.1",
                "--invoke-port", str(self.lambda_port), "--data-file", str(sent), "--output-format", "json"]
        env = tool_env()
        if os.environ.get("E2E_DRIVER") == "replay-bin":
            # Diagnostic only: the same handler through target/debug/ecs-rerun-replay, without the emulator.
            argv = [str(ROOT / "target" / "debug" / "ecs-rerun-replay"), str(sent)]
            env.update(self.function_env_all())
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
                               stdin=subprocess.DEVNULL)
        finally:
            stop.set()
            follower.join()
        secs = time.monotonic() - t0
        if os.environ.get("E2E_DRIVER") == "replay-bin":
            line = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
            if line.get("outcome") == "error":
                return InvokeResult(str(event_file), False, None, line.get("error"), secs, seen, event_id)
            return InvokeResult(str(event_file), True, line, None, secs, seen, event_id)
        if p.returncode == 0:
            try:
                resp = json.loads(p.stdout)
            except ValueError:
                return InvokeResult(str(event_file), False, None, f"response is not JSON: {p.stdout!r}", secs, seen, event_id)
            return InvokeResult(str(event_file), True, resp, None, secs, seen, event_id)
        err = (p.stderr.strip() or p.stdout.strip() or f"exit status {p.returncode}")
        return InvokeResult(str(event_file), False, None, err, secs, seen, event_id)

    # ---- reading the endpoint's state back --------------------------------------------------------
    def tasks(self, account: str = ACCOUNT, region: str = REGION) -> list[dict]:
        """Every task moto holds in `account` and `region` (default: the stack's own)."""
        ecs = self.client("ecs", account, region)
        out = []
        for cluster in ecs.list_clusters()["clusterArns"]:
            arns = ecs.list_tasks(cluster=cluster)["taskArns"]
            for i in range(0, len(arns), 100):
                out += ecs.describe_tasks(cluster=cluster, tasks=arns[i:i + 100], include=["TAGS"])["tasks"]
        return out

    def job_tasks(self, request: dict, account: str = ACCOUNT, region: str = REGION) -> list[dict]:
        """The tasks in moto of the job a RunTask request names: same cluster and task definition family
        (after `reset`, a test's tasks of that family are those of its scenario), in every state, in
        `account` and `region` (default: the stack's own)."""
        cluster = _name_of(request.get("cluster") or "default")
        family = _name_of(request["taskDefinition"]).split(":", 1)[0]
        ecs = self.client("ecs", account, region)
        if cluster not in [_name_of(c) for c in ecs.list_clusters()["clusterArns"]]:
            return []
        arns = ecs.list_tasks(cluster=cluster, family=family)["taskArns"]   # moto: every state
        out = []
        for i in range(0, len(arns), 100):
            out += ecs.describe_tasks(cluster=cluster, tasks=arns[i:i + 100], include=["TAGS"])["tasks"]
        return out

    def notifications(self) -> list[dict]:
        """Drain the SQS queue subscribed to the topic: one dict per SNS notification, in arrival order."""
        sqs = self.client("sqs")
        out = []
        while True:
            msgs = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=0).get("Messages", [])
            if not msgs:
                return out
            for m in msgs:
                env = json.loads(m["Body"])
                try:
                    message = json.loads(env.get("Message", ""))
                except ValueError:
                    message = env.get("Message")
                out.append({"subject": env.get("Subject"), "message": message, "raw_message": env.get("Message"),
                            "attributes": {k: v.get("Value") for k, v in (env.get("MessageAttributes") or {}).items()},
                            "timestamp": env.get("Timestamp")})
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def invoke_concurrently(self, events, fresh: bool = True, timeout: float = 120) -> list[InvokeResult]:
        """Send several events at the same time (one thread each, not holding the invocation lock: their
        calls in the proxy's log interleave, so each result's `calls` is everything seen meanwhile).
        With `concurrency` >= len(events) the emulator runs them at once; returns them in order."""
        out: list = [None] * len(events)
        barrier = threading.Barrier(len(events))

        def one(i, ev):
            barrier.wait()
            out[i] = self._invoke(ev, None, timeout, fresh, f"concurrent-{i}-{event_id_of(ev) or 'x'}.json")
        threads = [threading.Thread(target=one, args=(i, ev)) for i, ev in enumerate(events)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    # ---- the launch store ---------------------------------------------------------------------------
    def store_items(self) -> dict[str, dict]:
        """Every item of the launch store, by `pk`, as plain values: strings, numbers (int), and the
        `launch` JSON decoded."""
        ddb = self.client("dynamodb")
        items, kw = [], {}
        while True:
            page = ddb.scan(TableName=STORE_TABLE, ConsistentRead=True, **kw)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                break
            kw = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
        return {i["pk"]["S"]: _plain(i) for i in items}

    def launch_item(self, task_arn: str) -> dict | None:
        """The store's item for a task ARN (see `store_items`), or None."""
        item = self.client("dynamodb").get_item(TableName=STORE_TABLE, Key={"pk": {"S": task_arn}},
                                                ConsistentRead=True).get("Item")
        return _plain(item) if item else None

    # ---- the delay queue ---------------------------------------------------------------------------
    def settle(self, timeout: float = 30.0) -> float:
        """With the delay queue: wait until every episode in it has concluded (the queue empty, no batch
        in flight), at most `timeout` seconds (TimeoutError says what is left). Without: nothing to wait for."""
        return self.pump.settle(timeout) if self.pump else 0.0

    def episode(self, event_id: str) -> Episode:
        """What the stack saw of one episode: its EventBridge invocation (the last one sent for that
        record), every delay-queue message of it the pump delivered, their reports, calls and dead letters."""
        firsts = [r for r in self.invocations if r.event_id == event_id]
        first = firsts[-1] if firsts else None
        pump = self.pump
        deliveries = [d for d in (pump.deliveries if pump else []) if d.event_id == event_id]
        calls: dict[int, dict] = {}
        for group in ([first.calls] if first else []) + [d.calls for d in deliveries]:
            for c in group:
                calls.setdefault(c["seq"], c)
        dead = [x for x in (pump.dead_letters if pump else []) if x.get("event_id") == event_id]
        return Episode(event_id, first, deliveries, [calls[k] for k in sorted(calls)], dead)

    def describe(self) -> dict:
        return {"moto": self.moto_url, "proxy": self.proxy.url if self.proxy else None,
                "lambda_port": self.lambda_port, "topic": self.topic_arn, "queue": self.queue_url,
                "delay_queue": self.delay_queue_url or None,
                "pid": os.getpid(), "region": REGION, "account": ACCOUNT, "function": FUNCTION,
                "members": self.members}


class RunningStack:
    """A stack started by another process (`make stack`), found through .tools/e2e/stack.json."""

    def __init__(self, info: dict):
        self.info = info
        self.moto_url = info["moto"]
        self.lambda_port = info["lambda_port"]
        self.topic_arn = info["topic"]
        self.queue_url = info["queue"]
        self.control = ControlClient(info["proxy"])
        self.event_files = []
        self.log_dir = STATE_DIR
        self.members = info.get("members") or {}

    @classmethod
    def find(cls) -> "RunningStack":
        if not STACK_FILE.exists():
            raise RuntimeError("no running stack: start one with `make stack` in another terminal")
        info = json.loads(STACK_FILE.read_text())
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            raise RuntimeError(f"the stack in {STACK_FILE} (pid {info['pid']}) is gone: start one with `make stack`")
        return cls(info)

    client = Stack.client
    new_client = Stack.new_client
    caller_client = Stack.caller_client
    invoke = Stack.invoke
    _invoke = Stack._invoke
    tasks = Stack.tasks
    job_tasks = Stack.job_tasks
    notifications = Stack.notifications


def _plain(item: dict) -> dict:
    """A DynamoDB item as plain values; a `launch` attribute (the stored launch, JSON) decoded."""
    out = {}
    for k, v in item.items():
        if "S" in v:
            out[k] = json.loads(v["S"]) if k == "launch" else v["S"]
        elif "N" in v:
            out[k] = int(v["N"]) if v["N"].lstrip("-").isdigit() else float(v["N"])
        else:
            out[k] = v
    return out


def event_id_of(event) -> str | None:
    """The episode's event id, as the function reads it: a CloudTrail record's `detail.eventID`, a task
    state change's own `id`; None for anything else."""
    if not isinstance(event, dict) or not isinstance(event.get("detail"), dict):
        return None
    if event["detail"].get("eventID"):
        return event["detail"]["eventID"]
    return event.get("id") if event.get("detail-type") == TASK_CHANGE else None


def _name_of(arn_or_name: str) -> str:
    return arn_or_name.rsplit("/", 1)[-1] if arn_or_name.startswith("arn:") else arn_or_name


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP end the program like Ctrl-C does, so `finally:` blocks stop what was started."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)
    # A shell starts background jobs with SIGINT ignored; Ctrl-C / kill -INT must still stop the stack.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str]) -> int:
    if argv[:1] != ["up"]:
        print(__doc__, file=sys.stderr)
        return 2
    install_signal_handlers()
    try:
        with Stack(members=ORG_MEMBERS) as stack:
            STACK_FILE.write_text(json.dumps(stack.describe(), indent=2))
            print(json.dumps(stack.describe(), indent=2), flush=True)
            print("stack is up: `make invoke EVENT=events/01-agent-ec2.json` in another terminal; Ctrl-C stops it",
                  file=sys.stderr, flush=True)
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            STACK_FILE.unlink()
        print("stack: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
