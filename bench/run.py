"""`make bench`: ecs-rerun's numbers, one table, written to bench/results.md.

    .tools/bench/bin/python bench/run.py [--runs 15] [--burst 1000] [--skip-core] [--skip-size]

Benchmarks, not tests: they report and never fail on a number (the exit status is non-zero only
when something could not be measured at all, e.g. the binary did not start).

1. Core: `cargo bench --bench core` (criterion, benches/core.rs): median time per event of decode +
   classify + plan, and of parsing the event JSON alone, on the failure sample events and a large one.
2. Size: the arm64 release bootstrap and zip that `make build` produces (cargo lambda build), against
   the budget (4 MB zipped).
3. Cold start: the real x86_64 release `ecs-rerun` bootstrap started against a fake Lambda Runtime API
   on 127.0.0.1 (this script) and the local AWS endpoint (moto behind scripts/e2e/proxy.py, seeded by
   scripts/e2e/stack.py), and the Python baseline (bench/baseline: boto3, parse + RunTask + SNS Publish)
   run the same way, alternately, --runs times each. Per run: spawn to ready (first GET .../next),
   the first event (event delivered to response; it includes the first AWS call), the first AWS call
   (event delivered to RunTask arriving at the endpoint: client set-up, signing, connection), a second,
   warm event, the process's peak RSS (VmHWM) and CPU time (wait4). Medians are reported. The cold
   start goes through a local TLS terminator (a throw-away CA appended to the system's bundle), so
   the first call pays a handshake as it does in AWS (--no-tls: plain HTTP); the burst uses plain HTTP.
4. Burst: --burst failure events (the samples, each with its own event ID) handed back to back to one
   `ecs-rerun` process; the endpoint answers a fixed pattern of RunTask placement failures and
   successes. Events per second, CPU per event, and a check that no event got more RunTask calls
   than ECS_RERUN_MAX_ATTEMPTS (from the endpoint's own log, by the event-id tag, and from the reports).
5. Mass outage (bench/outage.py, issue 12): a few hundred placement failures at once, 5 slots, capacity
   back after 4, 10 and 30 minutes, time scaled down 60x; today's design (waits in the invocation) against
   the delay queue (waits in SQS). Its own section of bench/results.md.
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
LARGE_EVENT = ROOT / "bench" / "events" / "large.json"
COLD_EVENT = ROOT / "events" / "01-agent-ec2.json"
CAPACITY = "Capacity is unavailable at this time. Please try again later or in a different availability zone"


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
            self.events.put((rid, json.dumps(ev).encode()))
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
        rid, body = item
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
    """Terminates TLS on 127.0.0.1 (certificate for localhost from a throw-away CA) and relays to `upstream`."""

    def __init__(self, upstream_port: int, workdir: Path):
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
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"https://localhost:{self.port}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
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
        self.sock.close()


# ---- running a function against the fake runtime --------------------------------------------------------
def with_ids(event: dict, n: int, tag: str) -> dict:
    """A copy of the event with its own EventBridge id and CloudTrail eventID (so no token is reused)."""
    ev = json.loads(json.dumps(event))
    ev["id"] = str(uuid.uuid4())
    ev["detail"]["eventID"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ecs-rerun-bench/{tag}/{n}/{uuid.uuid4()}"))
    return ev


def function_env(stack, endpoint: str, ca_bundle: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECS_RERUN_"))}
    env.update({
        "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
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


def drive(argv: list[str], env: dict, events: list[dict], stack, timeout: float, log: Path) -> dict:
    """Start a function process, hand it `events` one after the other, then kill it; timings and rusage."""
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
    calls = [e for e in stack.control.log(since) if e.get("op") in ("RunTask", "Publish")]
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
    ms = lambda a, b: None if a is None or b is None else (b - a) * 1000  # noqa: E731
    return {"ready": ms(r["t0"], r["ready"]), "cold_total": ms(r["t0"], resp1), "first_event": ms(d1, resp1),
            "first_call": ms(d1, call1), "warm_event": ms(d2, resp2), "warm_call": ms(d2, call2),
            "maxrss_mb": r["maxrss_kb"] / 1024, "cpu_ms": r["cpu_s"] * 1000,
            "outcome": (r["responses"][first][1] or {}).get("outcome"), "kind": r["responses"][first][2],
            "calls_first_event": [c.get("op") for c in r["calls"] if d1 <= c["t"] <= resp1]}


def cold_start(stack, endpoint: str, ca_bundle: Path | None, rust_bin: Path, runs: int) -> dict:
    event = json.loads(COLD_EVENT.read_text())
    env = function_env(stack, endpoint, ca_bundle)
    impls = {"rust": [str(rust_bin)],
             "python": [sys.executable, "-B", str(ROOT / "bench" / "baseline" / "bootstrap.py")]}
    out: dict[str, list[dict]] = {k: [] for k in impls}
    for i in range(runs + 1):                        # run 0 warms the page cache and moto; not counted
        for name, argv in impls.items():
            r = drive(argv, env, [with_ids(event, i, name), with_ids(event, i, name + "-warm")], stack, 60,
                      OUT / f"cold-{name}.log")
            if "error" in r:
                raise RuntimeError(f"cold start, {name}: {r['error']}")
            m = cold_metrics(r)
            if m["kind"] != "response":
                raise RuntimeError(f"cold start, {name}: the function reported an error: {r['responses']}")
            if i:
                out[name].append(m)
        say(f"cold start run {i}/{runs}: " + ", ".join(
            f"{n} {out[n][-1]['cold_total']:.1f} ms" for n in impls if i and out[n]))
    return out


def burst(stack, endpoint: str, ca_bundle: Path | None, rust_bin: Path, n: int) -> dict:
    samples = [json.loads(p.read_text()) for p in [*FAILURE_EVENTS, LARGE_EVENT]]
    events = [with_ids(samples[i % len(samples)], i, "burst") for i in range(n)]
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
    outcomes: dict[str, int] = {}
    for rep in reports:
        outcomes[rep.get("outcome", "error")] = outcomes.get(rep.get("outcome", "error"), 0) + 1
    per_event: dict[str, int] = {}
    max_tag = 0
    runtasks = [c for c in r["calls"] if c.get("op") == "RunTask"]
    for c in runtasks:
        tags = c.get("tags") or {}
        per_event[tags.get("ecs-rerun:event-id", "?")] = per_event.get(tags.get("ecs-rerun:event-id", "?"), 0) + 1
        with contextlib.suppress(ValueError):
            max_tag = max(max_tag, int(tags.get("ecs-rerun:attempt", 0)))
    span = max(t for t, _, _ in r["responses"].values()) - min(r["delivered"].values())
    return {"events": n, "seconds": span, "per_second": n / span, "cpu_ms_per_event": r["cpu_s"] * 1000 / n,
            "maxrss_mb": r["maxrss_kb"] / 1024, "outcomes": outcomes, "errors": len(errors),
            "runtask_calls": len(runtasks), "publish_calls": sum(1 for c in r["calls"] if c.get("op") == "Publish"),
            "max_calls_per_event": max(per_event.values(), default=0), "max_attempt_tag": max_tag,
            "max_reported_attempts": max((rep.get("attempts", 0) for rep in reports), default=0),
            "reported_attempts": sum(rep.get("attempts", 0) for rep in reports),
            "untagged_calls": per_event.get("?", 0),
            "runtask_answers": _count(f"{c.get('action')} {c.get('status')}" for c in runtasks),
            "unknown_reasons": _count(rep.get("reason", "")[:160] for rep in reports
                                      if rep.get("reason_class") == "unknown")}


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


def table(m: dict, core: dict | None, sz: dict | None, cold: dict | None, bst: dict | None, args) -> list[str]:
    rows = [("Measure", "ecs-rerun (Rust)", "Python baseline (boto3)", "Python ÷ Rust / note")]
    if core:
        names = [n for n in core if n != "large"] + (["large"] if "large" in core else [])
        for n in names:
            c, p = core[n].get("core"), core[n].get("parse")
            rows.append((f"Core per event, `{n}` (median)", f"{fmt_us(c)} (parse alone {fmt_us(p)})", "",
                         f"core / parse = {c / p:.2f}" if c and p else ""))
        small = [core[n]["core"] for n in names if n != "large" and "core" in core[n]]
        psmall = [core[n]["parse"] for n in names if n != "large" and "parse" in core[n]]
        if small:
            rows.append(("Core per event, median of the 7 sample failures", f"{fmt_us(statistics.median(small))} "
                         f"(parse alone {fmt_us(statistics.median(psmall))})", "",
                         f"core / parse = {statistics.median(small) / statistics.median(psmall):.2f}"))
    if cold:
        rs, py = cold["rust"], cold["python"]
        n = len(rs)
        tls = "TLS" if args.tls else "plain HTTP"
        for key, label in [("ready", "Cold start: spawn → ready (init done, first GET /next)"),
                           ("cold_total", "Cold start: spawn → first event handled"),
                           ("first_event", "First event: delivered → response (RunTask + Publish)"),
                           ("first_call", f"First AWS call: event delivered → RunTask at endpoint ({tls})"),
                           ("warm_event", "Warm event (2nd, same process): delivered → response"),
                           ("warm_call", "Warm AWS call: event delivered → RunTask at endpoint")]:
            a, b = med(rs, key), med(py, key)
            rows.append((f"{label}, median of {n}", fmt_ms(a), fmt_ms(b), ratio(a, b)))
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
        ok = (bst["max_calls_per_event"] <= MAX_ATTEMPTS and bst["max_attempt_tag"] <= MAX_ATTEMPTS
              and bst["max_reported_attempts"] <= MAX_ATTEMPTS and bst["runtask_calls"] == bst["reported_attempts"]
              and bst["errors"] == 0)
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(bst["outcomes"].items()))
        rows.append((f"Burst: {bst['events']} failure events, one process", f"{bst['per_second']:.0f} events/s "
                     f"({bst['seconds']:.1f} s)", "", f"endpoint-bound (moto); outcomes: {outcomes}"))
        rows.append(("Burst: function CPU per event; peak RSS after the burst",
                     f"{bst['cpu_ms_per_event']:.2f} ms; {bst['maxrss_mb']:.1f} MB", "", ""))
        rows.append((f"Burst: RunTask calls ≤ ECS_RERUN_MAX_ATTEMPTS ({MAX_ATTEMPTS}) per event",
                     f"{'yes' if ok else 'NO'}: max {bst['max_calls_per_event']} calls per event, "
                     f"max attempt tag {bst['max_attempt_tag']}", "",
                     f"{bst['runtask_calls']} RunTask calls at the endpoint = {bst['reported_attempts']} "
                     f"attempts reported; {bst['publish_calls']} Publish"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return [line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows[1:])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="cold-start runs per implementation (default 15)")
    ap.add_argument("--burst", type=int, default=1000, help="events in the burst (default 1000)")
    ap.add_argument("--no-tls", dest="tls", action="store_false",
                    help="cold start over plain HTTP (default: through a local TLS terminator, as in AWS)")
    ap.add_argument("--skip-core", action="store_true")
    ap.add_argument("--skip-size", action="store_true")
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--skip-burst", action="store_true")
    ap.add_argument("--skip-outage", action="store_true")
    ap.add_argument("--rust-bin", type=Path, help="use this ecs-rerun binary instead of building the release one")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.glob("*.log"):
        f.unlink()
    m = machine()

    core = None if args.skip_core else core_bench()
    sz = None if args.skip_size else size()

    cold = bst = outage = None
    if not (args.skip_cold and args.skip_burst and args.skip_outage):
        rust_bin = args.rust_bin
        if rust_bin is None:
            run(["cargo", "build", "--locked", "--release", "--bin", "ecs-rerun"])
            rust_bin = ROOT / "target" / "release" / "ecs-rerun"
        from stack import Stack  # scripts/e2e/stack.py: moto + the fault proxy, seeded for the sample events

        with Stack(event_files=[*FAILURE_EVENTS, LARGE_EVENT], with_lambda=False, log_dir=OUT, quiet=True) as stack:
            front = TlsFront(int(stack.proxy.url.rsplit(":", 1)[1]), OUT) if args.tls else None
            try:
                if not args.skip_cold:
                    cold = cold_start(stack, front.url if front else stack.proxy.url,
                                      front.ca_bundle if front else None, rust_bin, args.runs)
            finally:
                if front:
                    front.close()
            if not args.skip_burst:         # plain HTTP: the burst measures throughput, not handshakes
                stack.reset()
                bst = burst(stack, stack.proxy.url, None, rust_bin, args.burst)
            if not args.skip_outage:        # bench/outage.py: resets the stack before each of its runs
                import outage as outage_bench
                outage = outage_bench.run_all(stack, rust_bin)

    lines = table(m, core, sz, cold, bst, args)
    print("\n".join(lines))
    (OUT / "raw.json").write_text(json.dumps({"machine": m, "core_ns": core, "cold": cold, "burst": bst,
                                              "outage": outage,
                                              "size": {k: str(v) for k, v in (sz or {}).items()}}, indent=1))
    header = [
        "# ecs-rerun benchmarks",
        "",
        f"`make bench`, {m['date']}, commit {m['commit']}. Machine: {m['cpu']}, {m['nproc']} CPUs, {m['memory']} "
        f"RAM, {m['arch']} Linux {m['kernel']}; {m['rustc']}; Python {m['python']}.",
        "",
        "Method (bench/run.py): core = criterion medians (benches/core.rs): decode + classify + plan on the "
        "parsed event, and JSON parsing alone. Cold start = the x86_64 release `ecs-rerun` and the Python "
        "baseline (bench/baseline: boto3, parse + RunTask + SNS Publish) each started against a fake Lambda "
        "Runtime API and the local endpoint (moto behind scripts/e2e/proxy.py) on 127.0.0.1, "
        f"{'through a local TLS terminator (throw-away CA added to the system bundle)' if args.tls else 'plain HTTP'}, "
        "alternately, after one uncounted run each, "
        "one cold and one warm event per process; peak memory = the process's VmHWM, CPU from wait4. Size = the arm64 zip of "
        "`make build`. Burst = events handed back to back to one process, the endpoint answering a fixed "
        "pattern of RunTask placement failures and successes; the attempts check reads the endpoint's log.",
        "",
    ]
    if outage:
        import outage as outage_bench
        section = outage_bench.section(outage, outage[0]["jobs"])
        print("\n".join(section))
        lines = [*lines, "", *section]
    partial = (args.skip_core or args.skip_size or args.skip_cold or args.skip_burst or args.skip_outage
               or args.rust_bin)
    target = OUT / "results-partial.md" if partial else RESULTS   # only a full run updates bench/results.md
    target.write_text("\n".join(header + lines) + "\n")
    say(f"wrote {target.relative_to(ROOT)} (raw numbers: {(OUT / 'raw.json').relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
