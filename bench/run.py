"""`make bench`: ecs-rerun's numbers, one table, written to bench/results.md.

bench/results.md links to bench/first-call.md (issue 14's hand-made trace analysis of the first AWS call),
which this script does not write: hand-written text belongs there, not in results.md.

    .tools/bench/bin/python bench/run.py [--runs 15] [--burst 1000] [--guarded 500] [--skip-core] [--skip-size]
        [--skip-cold] [--skip-burst] [--skip-guarded] [--skip-outage] [--skip-org | --only-org] [--rust-bin PATH]

A run with any --skip-* or --rust-bin is partial (a quick check): it writes bench/out/results-partial.md,
and only a full run rewrites bench/results.md. The organization-mode section (6.) is the exception: whenever it
ran, its section of bench/results.md is replaced (`--only-org` runs it alone and updates just that section). E.g. the guarded records alone, 100 of them:
    .tools/bench/bin/python bench/run.py --skip-core --skip-size --skip-cold --skip-burst --skip-outage --guarded 100

Benchmarks, not tests: they report and never fail on a number (the exit status is non-zero only
when something could not be measured at all, e.g. the binary did not start).

1. Core: `cargo bench --bench core` (criterion, benches/core.rs): median time per event of decode +
   classify + plan, and of parsing the event JSON alone, on the failure sample events (01-07) and a large
   one; and on the successful RunTask sample 09 (decode + the item the launch store would get, as JSON),
   labelled as a guarded record and kept out of the failures' median.
2. Size: the arm64 release bootstrap and zip that `make build` produces (cargo lambda build), against
   the budget (4 MB zipped).
3. Cold start: the real x86_64 release `ecs-rerun` bootstrap started against a fake Lambda Runtime API
   on 127.0.0.1 (this script) and the local AWS endpoint (moto behind scripts/e2e/proxy.py, seeded by
   scripts/e2e/stack.py), and the Python baseline (bench/baseline: boto3, parse + RunTask + SNS Publish)
   run the same way, alternately, --runs times each. Per run: spawn to ready (first GET .../next), the
   SNS GetTopicAttributes by which ecs-rerun reads the topic's size limit (started at init; answered
   before or after ready, the table says),
   the first event (event delivered to response; it includes the first AWS call), the first AWS call
   (event delivered to RunTask arriving at the endpoint: client set-up, signing, connection), a second,
   warm event, the process's peak RSS (VmHWM) and CPU time (wait4). Medians are reported. The cold
   start goes through a local TLS terminator (a throw-away CA appended to the system's bundle), so
   the first call pays a handshake as it does in AWS (--no-tls: plain HTTP), with one listener per
   service (AWS_ENDPOINT_URL_ECS, AWS_ENDPOINT_URL_SNS): in AWS ECS and SNS are different hosts, so a
   connection the init opened to SNS cannot carry the first RunTask; the burst uses plain HTTP.
   Every event is a job of its own (its own event IDs and clientToken, see `job_copy`) and is retimed to
   the moment it is handed over (`retimed`): the samples date from 2025, and ecs-rerun does not rerun a
   record older than ECS_RERUN_MAX_RECORD_AGE_S (1 hour). A cold-start run whose events did not each
   make their RunTask and Publish (outcome recovered) stops the bench rather than time something else.
4. Burst: --burst failure events (the samples, each copy a job of its own) handed back to back to one
   `ecs-rerun` process; the endpoint answers a fixed pattern of RunTask placement failures and
   successes. Events per second, CPU per event, and checks read from the endpoint's own log: RunTask
   calls are grouped by the call they rerun (the `ecs-rerun:call` tag, or the recorded clientToken the
   exact replay of an API-error record carries, untagged), each group must belong to one event and
   hold at most ECS_RERUN_MAX_ATTEMPTS calls, no job may get more tasks than its record missed, and the
   endpoint's counts must match the reports (attempts, tasks started).
4b. Guarded records (issue 13, the launch store): --guarded successful RunTask records (samples 09 and 14,
   each its own eventID, clientToken and task ARNs, retimed like the others) handed back to back to one
   `ecs-rerun` process run with ECS_RERUN_STORE_TABLE (the stack's table in moto's DynamoDB, reached
   through the proxy over plain HTTP; the cold start and the failure burst run without the store, as
   before issue 13). Events per second, CPU per event, delivered → response, peak RSS after; checks:
   every record came back `guarded`, and the table, read from moto directly, holds one item per task ARN.
5. Mass outage (bench/outage.py, issue 12): a few hundred placement failures at once, 5 slots, capacity
   back after 4, 10 and 30 minutes, time scaled down 60x; today's design (waits in the invocation) against
   the delay queue (waits in SQS); and a 2-hour Fargate Spot outage with and without a Spot -> FARGATE
   fallback rule (issue 21). Its own section of bench/results.md.
6. Organization mode (bench/org.py, issue 20): a member account's first event in a cold process (AssumeRole +
   RunTask in the member account) and a second one of that account from another Region (no STS call, counted at
   the proxy), against the Python baseline doing sts.assume_role + run_task. Its own section of bench/results.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import queue
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
RESULTS = ROOT / "bench" / "results.md"
sys.path.insert(0, str(ROOT / "scripts" / "e2e"))

SIZE_BUDGET_ZIP = 4_000_000              # the README's budget: under 4 MB zipped (decimal MB)
MAX_ATTEMPTS = 3
FUNCTION_ARN = "arn:aws:lambda:us-east-1:111122223333:function:ecs-rerun"
FAILURE_EVENTS = sorted((ROOT / "events").glob("0[1-7]-*.json"))
GUARDED_EVENTS = [ROOT / "events" / "09-successful-runtask.json", ROOT / "events" / "14-started-fargate.json"]
FIRST_CALL_DOC = "bench/first-call.md"   # issue 14's hand-made trace analysis; results.md links to it
LARGE_EVENT = ROOT / "bench" / "events" / "large.json"
SPOT_EVENT = ROOT / "events" / "18-spot-capacity-fallback.json"   # bench/outage.py's Spot outage
COLD_EVENT = ROOT / "events" / "01-agent-ec2.json"
CAPACITY = "Capacity is unavailable at this time. Please try again later or in a different availability zone"


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"      # CloudTrail's eventTime, EventBridge's time
CALL_TAG = "ecs-rerun:call"             # names the call a task reruns (src/marks.rs)
ATTEMPT_TAG = "ecs-rerun:attempt"


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    say("$ " + " ".join(argv))
    return subprocess.run(argv, cwd=ROOT, check=True, **kw)


# ---- the machine ---------------------------------------------------------------------------------
def machine() -> dict:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    rustc = subprocess.run(["rustc", "-V"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu, "nproc": os.cpu_count(), "memory": mem, "arch": platform.machine(),
            "kernel": platform.release(), "rustc": rustc, "python": platform.python_version(),
            "commit": commit + ("+changes" if dirty else "")}


class LoadSampler:
    """The 1-minute load average, sampled every few seconds while the timed parts run: the bench's own
    processes (moto, the proxy, the function, this script) account for about 1 of it; the rest is other
    work on the machine, which slows every figure, the baseline's as much as ecs-rerun's."""

    def __init__(self, every: float = 5.0):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._every = every
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self._every)

    def stop(self) -> dict:
        self._stop.set()
        vals = self.samples or [os.getloadavg()[0]]
        return {"median": statistics.median(vals), "max": max(vals)}


# ---- 1. core: criterion ----------------------------------------------------------------------------
def core_bench() -> dict[str, dict[str, float]]:
    run(["cargo", "bench", "--locked", "--bench", "core", "--", "--noplot"])
    crit = ROOT / "target" / "criterion"
    out: dict[str, dict[str, float]] = {}
    for group in ("parse", "core"):
        for est in sorted((crit / group).glob("*/new/estimates.json")):
            name = est.parent.parent.name
            out.setdefault(name, {})[group] = json.loads(est.read_text())["median"]["point_estimate"]
    return out


# ---- 2. size -----------------------------------------------------------------------------------------
def size() -> dict:
    zip_path = ROOT / "target" / "lambda" / "ecs-rerun" / "bootstrap.zip"
    boot = ROOT / "target" / "aarch64-unknown-linux-gnu" / "release" / "ecs-rerun"
    if not zip_path.exists():
        raise RuntimeError(f"{zip_path.relative_to(ROOT)} is missing: `make build` makes it")
    with zipfile.ZipFile(zip_path) as z:
        unzipped = sum(i.file_size for i in z.infolist())
    return {"zip": zip_path.stat().st_size, "bootstrap": unzipped, "zip_path": zip_path,
            "binary_path": boot if boot.exists() else None}


# ---- the fake Lambda Runtime API ---------------------------------------------------------------------
class RuntimeAPI(ThreadingHTTPServer):
    """Serves queued events on GET /2018-06-01/runtime/invocation/next and records what comes back."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass                                   # the function was killed mid-request: expected

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RuntimeHandler)
        self.events: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.first_next: float | None = None
        self.delivered: dict[str, float] = {}
        self.responses: dict[str, tuple[float, dict | None, str]] = {}
        self.done = threading.Event()
        self.expect = 0
        self.init_error: str | None = None
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def load(self, events: list[dict]) -> list[str]:
        ids = []
        for ev in events:
            rid = str(uuid.uuid4())
            ids.append(rid)
            self.events.put((rid, ev))
        self.expect += len(events)
        return ids

    def close(self) -> None:
        self.events.put(None)
        self.shutdown()
        self.server_close()


class _RuntimeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle + the client's delayed ACK
    # hold the body back ~40 ms, which would be counted against the function.
    disable_nagle_algorithm = True
    server: RuntimeAPI

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"{}", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        now = time.time()
        if not self.path.endswith("/runtime/invocation/next"):
            return self._reply(404)
        srv = self.server
        with srv.lock:
            if srv.first_next is None:
                srv.first_next = now
        item = srv.events.get()
        if item is None:                       # shutting down: park the caller until it is killed
            srv.events.put(None)
            time.sleep(3600)
            return
        rid, event = item
        body = json.dumps(retimed(event)).encode()   # recorded "now", as a live event would be
        deadline_ms = int((time.time() + 900) * 1000)
        headers = {"Lambda-Runtime-Aws-Request-Id": rid, "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                   "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                   "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"}
        with srv.lock:
            srv.delivered[rid] = time.time()
        self._reply(200, body, headers)

    def do_POST(self) -> None:  # noqa: N802
        now = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        srv = self.server
        m = re.search(r"/runtime/invocation/([^/]+)/(response|error)$", self.path)
        if self.path.endswith("/runtime/init/error"):
            srv.init_error = body.decode("utf-8", "replace")
            srv.done.set()
        elif m:
            try:
                payload = json.loads(body) if body else None
            except ValueError:
                payload = None
            with srv.lock:
                srv.responses[m.group(1)] = (now, payload, m.group(2))
                if len(srv.responses) >= srv.expect:
                    srv.done.set()
        self._reply(202, b'{"status":"OK"}')


# ---- an optional TLS front for the endpoint -----------------------------------------------------------
class TlsFront:
    """Terminates TLS on 127.0.0.1 (certificate for localhost from a throw-away CA) and relays to `upstream`.

    One listener per service in `services`: in AWS each service is its own host, so a client cannot
    carry a call to ECS over a connection it opened to SNS; with one local endpoint for all it could
    (the SDK pools connections by host and port). `urls[service]`; `connections[service]` counts the
    connections each listener accepted."""

    def __init__(self, upstream_port: int, workdir: Path, services: tuple[str, ...] = ("ecs", "sns")):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = dt.datetime.now(dt.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ecs-rerun bench CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
              .not_valid_after(now + dt.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(ca_key, hashes.SHA256()))
        workdir.mkdir(parents=True, exist_ok=True)
        pem = serialization.Encoding.PEM
        (workdir / "tls-cert.pem").write_bytes(cert.public_bytes(pem))
        (workdir / "tls-key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                                serialization.NoEncryption()))
        # The trust store the functions get: the system's bundle (as in Lambda) plus the bench CA.
        system = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
        self.ca_bundle = workdir / "ca-bundle.pem"
        self.ca_bundle.write_bytes((system.read_bytes() if system.exists() else b"") + ca.public_bytes(pem))
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(workdir / "tls-cert.pem", workdir / "tls-key.pem")
        self.upstream = upstream_port
        self.closed = False
        self.socks: dict[str, socket.socket] = {}
        self.urls: dict[str, str] = {}
        self.connections: dict[str, int] = {}
        for name in services:
            sock = socket.create_server(("127.0.0.1", 0))
            self.socks[name] = sock
            self.urls[name] = f"https://localhost:{sock.getsockname()[1]}"
            self.connections[name] = 0
            threading.Thread(target=self._accept, args=(name, sock), daemon=True).start()

    def _accept(self, name: str, sock: socket.socket) -> None:
        while not self.closed:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self.connections[name] += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self.ctx.wrap_socket(conn, server_side=True)
            up = socket.create_connection(("127.0.0.1", self.upstream))
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, ssl.SSLError):
            conn.close()
            return

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except (OSError, ssl.SSLError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=pump, args=(up, tls), daemon=True)
        t.start()
        pump(tls, up)
        t.join(timeout=60)
        for s in (tls, up):
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self.closed = True
        for sock in self.socks.values():
            sock.close()


# ---- running a function against the fake runtime --------------------------------------------------------
def retimed(event: dict) -> dict:
    """The event as if just recorded: `detail.eventTime` and the envelope's `time` set to now (UTC,
    whole seconds), as scripts/e2e does with --fresh. The samples date from 2025, and ecs-rerun does not
    rerun a record older than ECS_RERUN_MAX_RECORD_AGE_S (1 hour): it notifies it as `stale` instead."""
    now = dt.datetime.now(dt.timezone.utc).strftime(TIME_FORMAT)
    return {**event, "time": now, "detail": {**event["detail"], "eventTime": now}}


def job_copy(event: dict, n: int, tag: str) -> dict:
    """A copy of a sample record that is a job of its own: its own EventBridge id, CloudTrail eventID
    and requestID, and its own `requestParameters.clientToken`. ecs-rerun derives its tokens and the
    `ecs-rerun:call` tag from the recorded token, not from the eventID: copies sharing a token would be
    one call to it, and ECS's token table (the proxy models it) would answer every later copy with the
    first one's tasks. A record without a token (an SDK from before 2023-11, sample 04) stays without
    one and gets its own `startedBy` instead: before rerunning it the function looks for the caller's
    own retry, a task of the same definition, startedBy, group and overrides created around the record,
    and would count an earlier copy's task as that."""
    ev = json.loads(json.dumps(event))
    ev["id"] = str(uuid.uuid4())
    d = ev["detail"]
    d["eventID"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ecs-rerun-bench/{tag}/{n}/{uuid.uuid4()}"))
    d["requestID"] = str(uuid.uuid4())
    rp = d["requestParameters"]
    if rp.get("clientToken"):
        rp["clientToken"] = str(uuid.uuid4())
    else:
        rp["startedBy"] = f"{rp.get('startedBy') or 'bench'}/{tag}-{n}"
    return ev


def job_key(event: dict) -> str:
    """What identifies the copy's job in the endpoint's log: its clientToken, else its startedBy."""
    rp = event["detail"]["requestParameters"]
    return rp.get("clientToken") or "startedBy:" + rp["startedBy"]


def call_of(entry: dict) -> str:
    """The call a RunTask at the endpoint belongs to: its `ecs-rerun:call` tag (the function's own
    attempts), else its clientToken (the exact replay of an API-error record carries the recorded
    token and no tag)."""
    return (entry.get("tags") or {}).get(CALL_TAG) or entry.get("clientToken") or "?"


def function_env(stack, endpoint: str | dict[str, str], ca_bundle: Path | None) -> dict:
    """The environment of both implementations. `endpoint`: one URL for every service, or one per
    service ({"ecs": url, "sns": url}, as AWS_ENDPOINT_URL_ECS / _SNS, which the Rust SDK and botocore
    both read). Short fixed waits (ECS_RERUN_BASE/MAX_DELAY_MS 0): without them every failure class gets
    its own production schedule (seconds to minutes between attempts)."""
    urls = endpoint if isinstance(endpoint, dict) else {}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECS_RERUN_"))}
    env.update({f"AWS_ENDPOINT_URL_{svc.upper()}": url for svc, url in urls.items()})
    env.update({
        "AWS_ENDPOINT_URL": urls.get("ecs") or next(iter(urls.values()), None) or endpoint,
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_LAMBDA_FUNCTION_NAME": "ecs-rerun", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/ecs-rerun",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench", "AWS_EC2_METADATA_DISABLED": "true",
        "ECS_RERUN_TOPIC_ARN": stack.topic_arn, "ECS_RERUN_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "ECS_RERUN_BASE_DELAY_MS": "0", "ECS_RERUN_MAX_DELAY_MS": "0",
        "ECS_RERUN_ALLOWED_ACCOUNTS": "111122223333",
        # The baseline publishes on every event; so does ecs-rerun with this (it notifies on recovery).
        "ECS_RERUN_NOTIFY_ON_RECOVERY": "true",
        "RUST_LOG": "warn", "PYTHONDONTWRITEBYTECODE": "1",
    })
    if ca_bundle:
        env["SSL_CERT_FILE"] = str(ca_bundle)       # rustls-native-certs (the SDK's trust store)
        env["AWS_CA_BUNDLE"] = str(ca_bundle)       # botocore
    return env


def drive(argv: list[str], env: dict, events: list[dict], stack, timeout: float, log: Path,
          services: tuple[str, ...] = ("ecs", "sns")) -> dict:
    """Start a function process, hand it `events` one after the other, then kill it; timings and rusage.
    `calls`: the endpoint's log entries of `services` made meanwhile."""
    api = RuntimeAPI()
    ids = api.load(events)
    env = {**env, "AWS_LAMBDA_RUNTIME_API": api.address}
    since = (stack.control.log() or [{"seq": 0}])[-1]["seq"]
    with open(log, "ab") as logf:
        t0 = time.time()
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    peak_kb = 0
    try:
        finished = api.done.wait(timeout)
    finally:
        # Peak RSS from the kernel's high-water mark of the process (VmHWM, reset at exec), read before
        # the kill: wait4's ru_maxrss would also count the forked copy of this (large) Python process.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            peak_kb = int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{proc.pid}/status").read_text()).group(1))
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = -9
        api.close()
    calls = [e for e in stack.control.log(since) if e.get("service") in services]
    result = {"t0": t0, "ready": api.first_next, "ids": ids, "delivered": dict(api.delivered),
              "responses": dict(api.responses), "calls": calls, "maxrss_kb": peak_kb,
              "cpu_s": usage.ru_utime + usage.ru_stime, "finished": finished, "init_error": api.init_error}
    if not finished:
        result["error"] = (api.init_error or f"only {len(api.responses)} of {len(events)} events answered "
                           f"in {timeout:.0f}s (log: {log.relative_to(ROOT)})")
    return result


def cold_metrics(r: dict) -> dict:
    """The timings of one cold-start run (2 events: the cold one, then a warm one), in milliseconds."""
    first, second = r["ids"]
    d1, d2 = r["delivered"][first], r["delivered"][second]
    resp1, resp2 = r["responses"][first][0], r["responses"][second][0]
    runtasks = [c["t"] for c in r["calls"] if c.get("op") == "RunTask"]
    call1 = next((t for t in runtasks if d1 <= t <= resp1), None)
    call2 = next((t for t in runtasks if d2 <= t <= resp2), None)
    init_calls = [c for c in r["calls"] if c["t"] < d1]
    topic = next((c["t"] for c in r["calls"] if c.get("op") == "GetTopicAttributes"), None)
    ms = lambda a, b: None if a is None or b is None else (b - a) * 1000  # noqa: E731
    return {"ready": ms(r["t0"], r["ready"]), "cold_total": ms(r["t0"], resp1), "first_event": ms(d1, resp1),
            "first_call": ms(d1, call1), "warm_event": ms(d2, resp2), "warm_call": ms(d2, call2),
            "topic_call": ms(r["t0"], topic), "topic_before_ready": topic is not None and topic <= r["ready"],
            "topic_before_call1": topic is not None and call1 is not None and topic <= call1,
            "maxrss_mb": r["maxrss_kb"] / 1024, "cpu_ms": r["cpu_s"] * 1000,
            "outcome": (r["responses"][first][1] or {}).get("outcome"),
            "warm_outcome": (r["responses"][second][1] or {}).get("outcome"),
            "kind": r["responses"][first][2], "warm_kind": r["responses"][second][2],
            "calls_init": [c.get("op") for c in init_calls],
            "calls_first_event": [c.get("op") for c in r["calls"] if d1 <= c["t"] <= resp1],
            "calls_warm_event": [c.get("op") for c in r["calls"] if d2 <= c["t"] <= resp2]}


def check_cold_run(name: str, m: dict) -> None:
    """Stop unless both events of the run were reruns that reached the endpoint (a RunTask and a Publish
    each, outcome recovered): a stale or ignored record answers in microseconds and would be timed instead."""
    for which, kind, outcome, calls in (("first", m["kind"], m["outcome"], m["calls_first_event"]),
                                        ("warm", m["warm_kind"], m["warm_outcome"], m["calls_warm_event"])):
        if kind != "response" or outcome != "recovered" or "RunTask" not in calls or "Publish" not in calls:
            raise RuntimeError(f"cold start, {name}, {which} event: {kind}, outcome {outcome!r}, endpoint calls "
                               f"{calls}: expected a RunTask and a Publish (outcome recovered)")


def cold_start(stack, endpoint: str | dict[str, str], ca_bundle: Path | None, rust_bin: Path, runs: int,
               front: "TlsFront | None" = None) -> dict:
    event = json.loads(COLD_EVENT.read_text())
    env = function_env(stack, endpoint, ca_bundle)
    impls = {"rust": [str(rust_bin)],
             "python": [sys.executable, "-B", str(ROOT / "bench" / "baseline" / "bootstrap.py")]}
    out: dict[str, list[dict]] = {k: [] for k in impls}
    for i in range(runs + 1):                        # run 0 warms the page cache and moto; not counted
        for name, argv in impls.items():
            conns = dict(front.connections) if front else {}
            r = drive(argv, env, [job_copy(event, i, name), job_copy(event, i, name + "-warm")], stack, 60,
                      OUT / f"cold-{name}.log")
            if "error" in r:
                raise RuntimeError(f"cold start, {name}: {r['error']}")
            m = cold_metrics(r)
            check_cold_run(name, m)
            if front:                                # each service reached through its own listener
                m["connections"] = {k: v - conns.get(k, 0) for k, v in front.connections.items()}
                if not all(m["connections"].values()):
                    raise RuntimeError(f"cold start, {name}: connections per service {m['connections']}: "
                                       "AWS_ENDPOINT_URL_<SERVICE> not honoured?")
            if i:
                out[name].append(m)
        say(f"cold start run {i}/{runs}: " + ", ".join(
            f"{n} {out[n][-1]['cold_total']:.1f} ms" for n in impls if i and out[n]))
    return out


def burst(stack, endpoint: str, ca_bundle: Path | None, rust_bin: Path, n: int) -> dict:
    samples = [json.loads(p.read_text()) for p in [*FAILURE_EVENTS, LARGE_EVENT]]
    events = [job_copy(samples[i % len(samples)], i, "burst") for i in range(n)]
    jobs = {job_key(ev): i for i, ev in enumerate(events)}
    # What each record missed: the tasks it asked for minus those it got (an API error got none).
    missing = []
    for ev in events:
        d = ev["detail"]
        asked = int(d["requestParameters"].get("count") or 1)
        got = 0 if d.get("errorCode") else len((d.get("responseElements") or {}).get("tasks") or [])
        missing.append(max(asked - got, 0))
    # The endpoint's RunTask answers, in order, regardless of event: failures and successes mixed so
    # that some events recover at attempt 1, 2 or 3 and some exhaust their attempts (4+ failures in a row).
    pattern = [("fail", 1), ("pass", 1), ("fail", 2), ("pass", 1), ("pass", 1), ("fail", 4), ("pass", 1),
               ("fail", 3), ("pass", 1)]
    actions = []
    while len(actions) < n * MAX_ATTEMPTS:
        for do, k in pattern:
            actions += [{"do": "fail", "reason": CAPACITY, "place": 0} if do == "fail" else {"do": "pass"}] * k
    stack.control.clear_script()
    stack.control.script({"ecs:RunTask": actions})
    r = drive([str(rust_bin)], function_env(stack, endpoint, ca_bundle), events, stack, 900, OUT / "burst-rust.log")
    stack.control.clear_script()
    if "error" in r:
        raise RuntimeError(f"burst: {r['error']}")
    reports = [r["responses"][i][1] or {} for i in r["ids"]]
    errors = [i for i in r["ids"] if r["responses"][i][2] != "response"]
    outcomes = _count(rep.get("outcome", "error") for rep in reports)

    # RunTask calls grouped by the call they rerun; each group traced back to the event (job) it came from.
    runtasks = [c for c in r["calls"] if c.get("op") == "RunTask"]
    groups: dict[str, list[dict]] = {}
    for c in runtasks:
        groups.setdefault(call_of(c), []).append(c)

    def job_of(c: dict) -> int | None:
        if call_of(c) in jobs:
            return jobs[call_of(c)]
        started_by = (c.get("request") or {}).get("startedBy")
        return jobs.get(f"startedBy:{started_by}") if started_by else None

    group_jobs = {k: {job_of(c) for c in cs} for k, cs in groups.items()}
    mixed = sorted(k for k, js in group_jobs.items() if len(js) != 1 or None in js)
    groups_of_job: dict[int, set[str]] = {}
    for k, js in group_jobs.items():
        for j in js - {None}:
            groups_of_job.setdefault(j, set()).add(k)
    split = sorted(j for j, ks in groups_of_job.items() if len(ks) > 1)
    calls_of_job = [0] * n
    started_of_job = [0] * n
    for c in runtasks:
        j = job_of(c)
        if j is not None:
            calls_of_job[j] += 1
            started_of_job[j] += int(c.get("tasks_started") or 0)
    over_missing = [j for j in range(n) if started_of_job[j] > missing[j]]
    report_mismatch = [j for j in range(n) if started_of_job[j] != int(reports[j].get("tasks_started") or 0)
                       or calls_of_job[j] != int(reports[j].get("attempts") or 0)]
    max_tag = 0
    for c in runtasks:
        with contextlib.suppress(ValueError):
            max_tag = max(max_tag, int((c.get("tags") or {}).get(ATTEMPT_TAG, 0)))
    span = max(t for t, _, _ in r["responses"].values()) - min(r["delivered"].values())
    ops = _count(c.get("op") for c in r["calls"])
    # Delivered -> response per event, by sample: what the look-up of the untokened records costs.
    names = [p.stem for p in [*FAILURE_EVENTS, LARGE_EVENT]]
    by_sample: dict[str, list[float]] = {}
    for i, rid in enumerate(r["ids"]):
        by_sample.setdefault(names[i % len(names)], []).append((r["responses"][rid][0] - r["delivered"][rid]) * 1000)
    untokened = [i for i, ev in enumerate(events) if not ev["detail"]["requestParameters"].get("clientToken")]
    ms_untokened = [(r["responses"][r["ids"][i]][0] - r["delivered"][r["ids"][i]]) * 1000 for i in untokened]
    ms_tokened = [(r["responses"][rid][0] - r["delivered"][rid]) * 1000 for i, rid in enumerate(r["ids"])
                  if i not in set(untokened) and reports[i].get("attempts")]
    return {"events": n, "seconds": span, "per_second": n / span, "cpu_ms_per_event": r["cpu_s"] * 1000 / n,
            "maxrss_mb": r["maxrss_kb"] / 1024, "outcomes": outcomes, "errors": len(errors),
            "runtask_calls": len(runtasks), "publish_calls": ops.get("Publish", 0), "ops": ops,
            "calls": len(groups), "jobs_with_calls": sum(1 for k in calls_of_job if k),
            "max_calls_per_call": max((len(cs) for cs in groups.values()), default=0),
            "max_calls_per_event": max(calls_of_job, default=0), "max_attempt_tag": max_tag,
            "exact_replays": sum(1 for c in runtasks if CALL_TAG not in (c.get("tags") or {})),
            "untokened_events": len(untokened),
            "ms_per_event_by_sample": {k: statistics.median(v) for k, v in by_sample.items()},
            "ms_untokened_median": statistics.median(ms_untokened) if ms_untokened else None,
            "ms_tokened_retried_median": statistics.median(ms_tokened) if ms_tokened else None,
            "groups_not_one_event": len(mixed), "events_in_several_groups": len(split),
            "events_over_missing": len(over_missing), "report_mismatches": len(report_mismatch),
            "tasks_started": sum(started_of_job), "tasks_missing": sum(missing),
            "reported_tasks_started": sum(int(rep.get("tasks_started") or 0) for rep in reports),
            "max_reported_attempts": max((rep.get("attempts", 0) for rep in reports), default=0),
            "reported_attempts": sum(rep.get("attempts", 0) for rep in reports),
            "runtask_answers": _count(f"{c.get('action')} {c.get('status')}" for c in runtasks),
            # moto places EC2 tasks on the stack's seeded container instances, which fill up during the burst:
            # it then answers a "pass" with fewer tasks than asked and no failure (ECS never does), which the
            # function rightly treats as an unknown failure (not_retryable).
            "short_passes": sum(1 for c in runtasks if c.get("action") == "pass" and c.get("status") == 200
                                and int(c.get("tasks_started") or 0) < int(c.get("count") or 1)),
            "unknown_outcomes": sum(1 for rep in reports if rep.get("reason_class") == "unknown"),
            "unknown_reasons": _count(rep.get("reason", "")[:160] for rep in reports
                                      if rep.get("reason_class") == "unknown")}


def guarded_copy(event: dict, n: int) -> dict:
    """A successful-RunTask sample as a launch of its own: `job_copy` (own event IDs and clientToken) and
    its own task ARNs (the recorded task IDs replaced by fresh ones everywhere in the record, containers
    included), so that each copy's tasks get items of their own in the store."""
    ev = job_copy(event, n, "guarded")
    text = json.dumps(ev)
    for task in ev["detail"]["responseElements"]["tasks"]:
        old = task["taskArn"].rsplit("/", 1)[1]
        text = text.replace(old, uuid.uuid4().hex)
    return json.loads(text)


def guarded_burst(stack, endpoint: str, rust_bin: Path, n: int) -> dict:
    """The launch store's cost (issue 13): `n` successful-RunTask records (samples 09 and 14, each a launch
    of its own, `guarded_copy`) handed back to back to one process run with ECS_RERUN_STORE_TABLE; each
    must come back `guarded`, and the table (read from moto directly) must hold one item per task ARN."""
    from stack import STORE_TABLE

    samples = [json.loads(p.read_text()) for p in GUARDED_EVENTS]
    events = [guarded_copy(samples[i % len(samples)], i) for i in range(n)]
    arns = [t["taskArn"] for ev in events for t in ev["detail"]["responseElements"]["tasks"]]
    env = {**function_env(stack, endpoint, None), "ECS_RERUN_STORE_TABLE": STORE_TABLE}
    before = set(stack.store_items())
    r = drive([str(rust_bin)], env, events, stack, 900, OUT / "guarded-rust.log",
              services=("ecs", "sns", "sqs", "dynamodb"))
    if "error" in r:
        raise RuntimeError(f"guarded burst: {r['error']}")
    reports = [r["responses"][i][1] or {} for i in r["ids"]]
    kinds = _count(r["responses"][i][2] for i in r["ids"])
    outcomes = _count(rep.get("outcome", "error") for rep in reports)
    latencies = sorted((r["responses"][i][0] - r["delivered"][i]) * 1000 for i in r["ids"])
    first = min(r["delivered"].values())
    last = max(t for t, _, _ in r["responses"].values())
    items = stack.store_items()
    new = {k: v for k, v in items.items() if k not in before}
    puts = [c for c in r["calls"] if c.get("service") == "dynamodb" and c.get("op") == "PutItem"]
    return {"events": n, "task_arns": len(arns), "distinct_task_arns": len(set(arns)),
            "seconds": last - first, "per_second": n / (last - first),
            "cpu_ms_per_event": r["cpu_s"] * 1000 / n, "cpu_s": r["cpu_s"], "maxrss_mb": r["maxrss_kb"] / 1024,
            "ms_median": statistics.median(latencies), "ms_p90": latencies[int(0.9 * (n - 1))],
            "ms_max": latencies[-1], "kinds": kinds, "outcomes": outcomes,
            "all_guarded": outcomes == {"guarded": n} and kinds == {"response": n},
            "ops": _count(f"{c.get('service')}:{c.get('op')}" for c in r["calls"]),
            "put_items": len(puts), "put_statuses": _count(str(c.get("status")) for c in puts),
            "items_new": len(new), "items_missing": len(set(arns) - set(new)),
            "items_extra": len(set(new) - set(arns)),
            "items_without_launch": sum(1 for k in set(arns) & set(new) if not new[k].get("launch"))}


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


# ---- the table -----------------------------------------------------------------------------------------
def med(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else (f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms")


def fmt_us(ns: float | None) -> str:
    return "n/a" if ns is None else f"{ns / 1000:.2f} µs"


def fmt_mb(b: float) -> str:
    return f"{b / 1e6:.2f} MB"


def ratio(a: float | None, b: float | None) -> str:
    return "" if not a or not b else f"{b / a:.1f}×"


def table(m: dict, core: dict | None, sz: dict | None, cold: dict | None, bst: dict | None, args,
          grd: dict | None = None) -> list[str]:
    rows = [("Measure", "ecs-rerun (Rust)", "Python baseline (boto3)", "Python ÷ Rust / note")]
    if core:
        failures = [p.stem for p in FAILURE_EVENTS if p.stem in core]       # 01-07: the failure samples
        guarded = [p.stem for p in GUARDED_EVENTS if p.stem in core]         # 09: a successful RunTask
        names = failures + (["large"] if "large" in core else []) + guarded
        for n in names:
            c, p = core[n].get("core"), core[n].get("parse")
            label = (f"Core per event, `{n}` (guarded successful RunTask: decode + the stored item as JSON; "
                     "median)" if n in guarded else f"Core per event, `{n}` (median)")
            rows.append((label, f"{fmt_us(c)} (parse alone {fmt_us(p)})", "",
                         f"core / parse = {c / p:.2f}" if c and p else ""))
        small = [core[n]["core"] for n in failures if "core" in core[n]]
        psmall = [core[n]["parse"] for n in failures if "parse" in core[n]]
        if small:
            rows.append((f"Core per event, median of the {len(small)} sample failures (01–07)",
                         f"{fmt_us(statistics.median(small))} (parse alone {fmt_us(statistics.median(psmall))})", "",
                         f"core / parse = {statistics.median(small) / statistics.median(psmall):.2f}"))
    if cold:
        rs, py = cold["rust"], cold["python"]
        n = len(rs)
        tls = "TLS" if args.tls else "plain HTTP"
        for key, label in [("ready", "Cold start: spawn → ready (init done, first GET /next)"),
                           ("topic_call", "SNS GetTopicAttributes (the topic's size limit): spawn → answered"),
                           ("cold_total", "Cold start: spawn → first event handled"),
                           ("first_event", "First event: delivered → response (RunTask + Publish)"),
                           ("first_call", f"First AWS call: event delivered → RunTask at endpoint ({tls})"),
                           ("warm_event", "Warm event (2nd, same process): delivered → response"),
                           ("warm_call", "Warm AWS call: event delivered → RunTask at endpoint")]:
            a, b = med(rs, key), med(py, key)
            if a is None and b is None:
                continue
            note = ratio(a, b)
            if key == "topic_call":
                before_ready = sum(1 for x in rs if x.get("topic_before_ready"))
                before_call = sum(1 for x in rs if x.get("topic_before_call1"))
                note = (f"ecs-rerun only (started at init), so that every notification fits the topic; answered "
                        f"before ready in {before_ready} of {n} runs, before the first RunTask arrived in "
                        f"{before_call} of {n}")
            rows.append((f"{label}, median of {n}", fmt_ms(a), "none" if b is None else fmt_ms(b), note))
        a, b = med(rs, "maxrss_mb"), med(py, "maxrss_mb")
        rows.append((f"Peak memory (max RSS) over both events, median of {n}", f"{a:.1f} MB", f"{b:.1f} MB",
                     ratio(a, b)))
        a, b = med(rs, "cpu_ms"), med(py, "cpu_ms")
        rows.append((f"CPU time (user + sys) of the whole run, median of {n}", fmt_ms(a), fmt_ms(b), ratio(a, b)))
    if sz:
        ok = "within" if sz["zip"] < SIZE_BUDGET_ZIP else "OVER"
        rows.append(("Size: arm64 release bootstrap (unzipped)", fmt_mb(sz["bootstrap"]), "", ""))
        rows.append(("Size: bootstrap.zip (`make build`)", fmt_mb(sz["zip"]), "",
                     f"{ok} the 4 MB budget ({sz['zip'] / SIZE_BUDGET_ZIP:.0%} of it)"))
    if bst:
        ok = (bst["max_calls_per_call"] <= MAX_ATTEMPTS and bst["max_calls_per_event"] <= MAX_ATTEMPTS
              and bst["max_attempt_tag"] <= MAX_ATTEMPTS and bst["max_reported_attempts"] <= MAX_ATTEMPTS
              and bst["groups_not_one_event"] == 0 and bst["events_in_several_groups"] == 0
              and bst["runtask_calls"] == bst["reported_attempts"] and bst["report_mismatches"] == 0
              and bst["errors"] == 0)
        never_twice = bst["events_over_missing"] == 0 and bst["tasks_started"] == bst["reported_tasks_started"]
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(bst["outcomes"].items()))
        ops = bst["ops"]
        lookups = (f"; {bst['untokened_events']} records without a clientToken first looked for the caller's "
                   f"own retry: {ops.get('ListTasks', 0)} ListTasks, {ops.get('DescribeTasks', 0)} DescribeTasks "
                   f"(delivered → response, median: {fmt_ms(bst['ms_untokened_median'])} for those, "
                   f"{fmt_ms(bst['ms_tokened_retried_median'])} for the other events that called RunTask)"
                   if bst["untokened_events"] else "")
        rows.append((f"Burst: {bst['events']} failure events, one process", f"{bst['per_second']:.0f} events/s "
                     f"({bst['seconds']:.1f} s)", "", f"endpoint-bound (moto); outcomes: {outcomes}"
                     + (f"; not_retryable includes {bst['unknown_outcomes']} events whose call moto answered with "
                        f"fewer EC2 tasks than asked and no failure ({bst['short_passes']} such answers: its seeded "
                        "container instances fill up; ECS never answers so)" if bst.get("unknown_outcomes") else "")))
        rows.append(("Burst: function CPU per event; peak RSS after the burst",
                     f"{bst['cpu_ms_per_event']:.2f} ms; {bst['maxrss_mb']:.1f} MB", "", ""))
        rows.append((f"Burst: RunTask calls ≤ ECS_RERUN_MAX_ATTEMPTS ({MAX_ATTEMPTS}) per failed call",
                     f"{'yes' if ok else 'NO'}: max {bst['max_calls_per_call']} calls per call, "
                     f"max attempt tag {bst['max_attempt_tag']}", "",
                     f"{bst['runtask_calls']} RunTask calls at the endpoint (grouped by `ecs-rerun:call` tag, or "
                     f"token for the {bst['exact_replays']} untagged exact replays of API-error records) into "
                     f"{bst['calls']} calls, each of one event ({bst['groups_not_one_event']} not), "
                     f"= {bst['reported_attempts']} attempts reported; {bst['publish_calls']} Publish{lookups}"))
        rows.append(("Burst: tasks started ≤ tasks the record missed, per event",
                     f"{'yes' if never_twice else 'NO'}: {bst['tasks_started']} tasks started for "
                     f"{bst['tasks_missing']} missing", "",
                     f"{bst['events_over_missing']} events over; {bst['reported_tasks_started']} reported started; "
                     f"endpoint: {', '.join(f'{k} {v}' for k, v in sorted(bst['runtask_answers'].items()))}"))
    if grd:
        ok = (grd["all_guarded"] and grd["items_missing"] == 0 and grd["items_extra"] == 0
              and grd["items_new"] == grd["distinct_task_arns"] == grd["task_arns"]
              and grd["items_without_launch"] == 0)
        others = ", ".join(f"{k} {v}" for k, v in sorted(grd["ops"].items()))
        rows.append((f"Guarded records (launch store, issue 13): {grd['events']} successful RunTask records "
                     f"(samples 09, 14), one process", f"{grd['per_second']:.0f} events/s ({grd['seconds']:.1f} s)", "",
                     f"endpoint-bound (moto's DynamoDB); one conditional PutItem per task ARN "
                     f"({grd['task_arns']} tasks); endpoint calls: {others}"))
        rows.append(("Guarded records: function CPU per event; peak RSS after them",
                     f"{grd['cpu_ms_per_event']:.2f} ms; {grd['maxrss_mb']:.1f} MB", "", ""))
        rows.append(("Guarded records: delivered → response, median (p90, max)",
                     f"{fmt_ms(grd['ms_median'])} ({fmt_ms(grd['ms_p90'])}, {fmt_ms(grd['ms_max'])})", "",
                     "one or two PutItem round trips to moto each"))
        rows.append(("Guarded records: every one `guarded`, one item per task ARN in the table",
                     f"{'yes' if ok else 'NO'}: outcomes "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(grd['outcomes'].items()))}; "
                     f"{grd['items_new']} items for {grd['task_arns']} task ARNs", "",
                     f"read from moto: {grd['items_missing']} missing, {grd['items_extra']} extra, "
                     f"{grd['items_without_launch']} without the stored launch; PutItem answers: "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(grd['put_statuses'].items()))}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return [line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows[1:])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="cold-start runs per implementation (default 15)")
    ap.add_argument("--burst", type=int, default=1000, help="events in the burst (default 1000)")
    ap.add_argument("--guarded", type=int, default=500,
                    help="successful-RunTask records for the launch-store cost (default 500)")
    ap.add_argument("--no-tls", dest="tls", action="store_false",
                    help="cold start over plain HTTP (default: through a local TLS terminator, as in AWS)")
    ap.add_argument("--skip-core", action="store_true")
    ap.add_argument("--skip-size", action="store_true")
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--skip-burst", action="store_true")
    ap.add_argument("--skip-guarded", action="store_true")
    ap.add_argument("--skip-outage", action="store_true")
    ap.add_argument("--skip-org", action="store_true", help="leave out the organization-mode runs (bench/org.py)")
    ap.add_argument("--only-org", action="store_true",
                    help="only the organization-mode runs: updates their section of bench/results.md")
    ap.add_argument("--rust-bin", type=Path, help="use this ecs-rerun binary instead of building the release one")
    args = ap.parse_args()
    if args.only_org:
        if args.skip_org:
            ap.error("--only-org and --skip-org exclude each other")
        args.skip_core = args.skip_size = args.skip_cold = args.skip_burst = args.skip_guarded = True
        args.skip_outage = True
    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.glob("*.log"):
        f.unlink()
    m = machine()

    core = None
    if not args.skip_core:
        load = LoadSampler()
        core = core_bench()                 # its compile comes first: sampled with it, the median is what counts
        m["load_core"] = load.stop()
    sz = None if args.skip_size else size()

    cold = bst = grd = outage = org = None
    rust_bin = args.rust_bin
    if rust_bin is None and not (args.skip_cold and args.skip_burst and args.skip_guarded and args.skip_outage
                                 and args.skip_org):
        run(["cargo", "build", "--locked", "--release", "--bin", "ecs-rerun"])
        rust_bin = ROOT / "target" / "release" / "ecs-rerun"
    if not (args.skip_cold and args.skip_burst and args.skip_guarded and args.skip_outage):
        from stack import Stack  # scripts/e2e/stack.py: moto + the fault proxy, seeded for the sample events

        load = LoadSampler()
        # sample 18: the outage bench's Spot jobs (its cluster with FARGATE and FARGATE_SPOT, its family)
        with Stack(event_files=[*FAILURE_EVENTS, LARGE_EVENT, SPOT_EVENT], with_lambda=False, log_dir=OUT,
                   quiet=True) as stack:
            front = TlsFront(int(stack.proxy.url.rsplit(":", 1)[1]), OUT) if args.tls else None
            try:
                if not args.skip_cold:
                    cold = cold_start(stack, front.urls if front else stack.proxy.url,
                                      front.ca_bundle if front else None, rust_bin, args.runs, front)
            finally:
                if front:
                    front.close()
            if not args.skip_burst:         # plain HTTP: the burst measures throughput, not handshakes
                stack.reset()
                bst = burst(stack, stack.proxy.url, None, rust_bin, args.burst)
            if not args.skip_guarded:       # plain HTTP too; a fresh, empty table
                stack.reset()
                grd = guarded_burst(stack, stack.proxy.url, rust_bin, args.guarded)
            m["load"] = load.stop()
            if not args.skip_outage:        # bench/outage.py: resets the stack before each of its runs
                import outage as outage_bench
                outage = outage_bench.run_all(stack, rust_bin)
    if not args.skip_org:                   # bench/org.py: its own stack, in organization mode
        import org as org_bench
        org = org_bench.run_all(rust_bin, args.runs)

    lines = table(m, core, sz, cold, bst, args, grd)
    print("\n".join(lines))
    (OUT / "raw.json").write_text(json.dumps({"machine": m, "core_ns": core, "cold": cold, "burst": bst, "guarded": grd,
                                              "outage": outage, "org": org,
                                              "size": {k: str(v) for k, v in (sz or {}).items()}}, indent=1))
    header = [
        "# ecs-rerun benchmarks",
        "",
        f"`make bench`, {m['date']}, commit {m['commit']}. Machine: {m['cpu']}, {m['nproc']} CPUs, {m['memory']} "
        f"RAM, {m['arch']} Linux {m['kernel']}; {m['rustc']}; Python {m['python']}."
        + "".join(f" Load average (1 min) during {what}: median {m[k]['median']:.1f}, max {m[k]['max']:.1f}."
                  for k, what in (("load_core", "the core bench (with its compile)"),
                                  ("load", "the cold start, bursts and guarded records")) if m.get(k))
        + (" The bench's own processes account for about 1; other work on the machine slows every figure."
           if m.get("load") or m.get("load_core") else ""),
        "",
        "Method (bench/run.py): core = criterion medians (benches/core.rs): decode + classify + plan on the "
        "parsed event (planned a minute after its record, so the retry path is timed, not the stale exit), "
        "and JSON parsing alone. Cold start = the x86_64 release `ecs-rerun` and the Python "
        "baseline (bench/baseline: boto3, parse + RunTask + SNS Publish) each started against a fake Lambda "
        "Runtime API and the local endpoint (moto behind scripts/e2e/proxy.py) on 127.0.0.1, "
        f"{'through a local TLS terminator (throw-away CA added to the system bundle; one listener per service, as ECS and SNS are different hosts in AWS)' if args.tls else 'plain HTTP'}, "
        "alternately, after one uncounted run each, "
        "one cold and one warm event per process, each a rerun that makes its RunTask and Publish (checked); "
        "peak memory = the process's VmHWM, CPU from wait4. Size = the arm64 zip of "
        "`make build`. Burst = events handed back to back to one process, the endpoint answering a fixed "
        "pattern of RunTask placement failures and successes; the checks read the endpoint's log. "
        "Every event is a job of its own (own event IDs and clientToken; a record without a token, "
        "own startedBy) and is retimed to the moment it is handed over (`time`, `detail.eventTime`): "
        "the samples date from 2025 and ecs-rerun does not rerun a record older than an hour. "
        "Waits between attempts: ECS_RERUN_BASE_DELAY_MS = ECS_RERUN_MAX_DELAY_MS = 0. "
        "The cold start and the failure burst run without the launch store (ECS_RERUN_STORE_TABLE unset), as "
        "before issue 13; guarded records = successful RunTask records (samples 09 and 14, each its own "
        "eventID, clientToken and task ARNs, retimed) handed back to back to one process run with "
        "ECS_RERUN_STORE_TABLE (moto's DynamoDB, plain HTTP), each checked `guarded`, the table read back.",
        "",
        f"The first AWS call of a cold start, where its time went (issue 14, a hand-made trace analysis, not "
        f"rewritten by this script): [{FIRST_CALL_DOC.split('/')[-1]}]({FIRST_CALL_DOC.split('/')[-1]}).",
        "",
    ]
    if outage:
        import outage as outage_bench
        section = outage_bench.section(outage, outage[0]["jobs"])
        print("\n".join(section))
        lines = [*lines, "", *section]
    partial = (args.skip_core or args.skip_size or args.skip_cold or args.skip_burst or args.skip_guarded
               or args.skip_outage or args.skip_org or args.rust_bin)
    target = OUT / "results-partial.md" if partial else RESULTS   # only a full run updates bench/results.md
    target.write_text("\n".join(header + lines) + "\n")
    say(f"wrote {target.relative_to(ROOT)} (raw numbers: {(OUT / 'raw.json').relative_to(ROOT)})")
    if org:                                 # its own section, replaced in bench/results.md whenever it ran
        section = org_bench.section(org)
        print("\n".join(section))
        org_bench.write_section(section, RESULTS)
        say(f"wrote its section of {RESULTS.relative_to(ROOT)}: {org_bench.HEADING[3:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
