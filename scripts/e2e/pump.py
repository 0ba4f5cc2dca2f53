"""The delay queue's consumer, as Lambda's SQS event source mapping plays it, for the local stack.

With a delay queue (issue 12) an episode's waits live in SQS: the function sends the episode's state to
the queue with `DelaySeconds` = the wait and returns `waiting`; the event source mapping delivers the
message back when the delay is over, and the function makes the next call. Locally, moto's SQS is the
queue and this pump is the event source mapping:

  * ReceiveMessage on the delay queue, batches of up to the template's BatchSize (`batch_size`, read from
    template.yaml by scripts/template_values.py: 1, one message per invocation), short polls every 0.1 s.
    moto honours `DelaySeconds` (a delayed message is not received before its time, to the
    millisecond) and the visibility timeout, so the pump adds no delay of its own.
  * Each batch is one invocation of the function, through cargo-lambda's emulator exactly as
    `Stack.invoke` sends events (`cargo lambda invoke --data-file`), with the SQS event Lambda builds:
    `{"Records": [{"messageId", "receiptHandle", "body", "attributes", "eventSource": "aws:sqs", ...}]}`.
  * The answer is read as `ReportBatchItemFailures` reads it: the messages listed in
    `batchItemFailures` stay in the queue, every other one is deleted; a failed invocation, or an
    answer without `batchItemFailures`, fails the whole batch.
  * A message that stays becomes visible again after `retry_after_s` (1 s; the stack's queue has a 30 s
    visibility timeout, the template's is far longer: the pump shortens the wait so that a test sees a
    redelivery in seconds, with ChangeMessageVisibility, which AWS's poller does not do).
  * The queue's redrive policy (`maxReceiveCount` 5, as the template's) moves a message received 5 times
    to the dead-letter queue; that is moto's own redrive (on the receive after the 5th). The pump
    drains the dead-letter queue into `dead_letters`, with the function's last error for the message.

What each invocation did is kept per delivered message (`Delivery`): the proxy's log of the calls it
made (RunTask, Publish, the next hop's SendMessage), whether it failed, and the function's report for
the message. A hop invocation answers only `batchItemFailures`; the report of each message is read from
the function's log lines (JSON lines: the stack sets `AWS_LAMBDA_LOG_FORMAT=JSON`, as Lambda's advanced
logging controls do): "waiting in the delay queue" (outcome `waiting`), "episode finished" with the
metrics line (EMF) that follows it (the final outcome), or "delay-queue message failed" (the error, by
message id). A recheck (issue 13: a stopped task whose launch the store did not know yet, looked for
again) belongs to the episode of its task state change (its `id`, see proxy.delay_message); "the store does not know this task's
launch yet" ends one that is sent on again (outcome `waiting`). The function logs that line, and the
final one of a task never found, outside the episode's span: such a line goes to the delivery of the
batch that no line with its span's event id matched, in order. `Stack.episode(event_id)` puts an episode's invocations together; `Stack.settle()` waits
until the queue is empty and nothing is in flight.

Controls for tests: `duplicate_next(n)` sends each of the next n messages received again, same body
(SQS's at-least-once delivery, a hop delivered twice); `send_raw(body)` puts any body on the queue
(a malformed message); `pause()` stops receiving (a reset of the endpoint).
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from proxy import delay_message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from template_values import stack_settings  # noqa: E402  scripts/template_values.py

# As the stack deploys them (the visibility timeout below is shortened for the local run).
BATCH_SIZE = stack_settings().batch_size
MAX_RECEIVE_COUNT = stack_settings().max_receive
VISIBILITY_TIMEOUT_S = 30
RETRY_AFTER_S = 1
POLL_S = 0.1
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# The function's log messages that end the handling of one delay-queue message (matched by prefix).
WAITING = "waiting in the delay queue"
CHAINED = "the wait goes on"
RECHECK = "the store does not know this task's launch yet"
FINISHED = "episode finished"
MESSAGE_FAILED = "delay-queue message failed"
ENDINGS = (WAITING, CHAINED, RECHECK, FINISHED, MESSAGE_FAILED)


@dataclass
class Delivery:
    """One delay-queue message handed to the function, and what came of it."""
    message_id: str
    body: str
    event_id: str | None          # the episode the body names (None: not a hop)
    receive_count: int            # SQS's ApproximateReceiveCount: 1 on the first delivery
    batch: int                    # the invocation (pump batch number) it was part of
    batch_size: int
    at: float                     # epoch seconds, when the invocation was sent
    seconds: float = 0.0
    ok: bool = False              # deleted: not in batchItemFailures, the invocation succeeded
    error: str | None = None      # why it failed: the function's error for it, or the invocation's
    report: dict | None = None    # the function's report for this message (see the module doc)
    calls: list[dict] = field(default_factory=list)   # the proxy's log of the invocation
    answer: dict | list | None = None   # the invocation's answer ({"batchItemFailures": [...]})
    duplicate_of: str | None = None   # sent by `duplicate_next`: the message whose body it copies

    @property
    def hops_sent(self) -> list[dict]:
        """The SendMessage calls to the delay queue this invocation made for this message's episode."""
        return [c for c in self.calls if c.get("service") == "sqs" and c.get("op") == "SendMessage"
                and self.event_id and c.get("event_id") == self.event_id]


@dataclass
class Episode:
    """Everything the stack saw of one episode: the EventBridge invocation that began it, then every
    delay-queue message of it the pump delivered, in order."""
    event_id: str
    first: object | None                      # the InvokeResult of the EventBridge event
    deliveries: list[Delivery]
    calls: list[dict]                         # the proxy's log of all its invocations, in order
    dead_letters: list[dict]

    @property
    def reports(self) -> list[dict]:
        """The first invocation's answer, then one report per delivery: `waiting` (a hop was sent), the
        final outcome, or `error` (the message failed and stays for redelivery)."""
        out = []
        if self.first is not None:
            r = self.first.response if self.first.ok else {"outcome": "error", "error": self.first.error}
            out.append(r)
        out += [d.report or {"outcome": "error", "error": d.error} for d in self.deliveries]
        return out

    @property
    def finals(self) -> list[dict]:
        """Every concluding report (more than one only when a hop was delivered twice and both forks ran)."""
        return [r for r in self.reports if isinstance(r, dict) and r.get("outcome") not in ("waiting", "error")]

    @property
    def final(self) -> dict | None:
        finals = self.finals
        return finals[-1] if finals else None

    @property
    def hops(self) -> int:
        """How many times the episode went through the queue (messages delivered, retries included)."""
        return len(self.deliveries)


class FunctionLog:
    """The function's JSON log lines in `cargo lambda watch`'s output file, read from an offset."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def lines(self, start: int) -> list[dict]:
        """The JSON objects logged from byte `start` on (complete lines only)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            return []
        out = []
        for raw in data.split(b"\n")[:-1]:
            text = ANSI.sub("", raw.decode("utf-8", "replace")).strip()
            if not text.startswith("{"):
                continue
            with contextlib.suppress(ValueError):
                out.append(json.loads(text))
        return out


def _kind(line: dict) -> str | None:
    """Which of ENDINGS the line is, if any."""
    message = str((line.get("fields") or {}).get("message", ""))
    return next((e for e in ENDINGS if message.startswith(e)), None)


def _span_event_id(line: dict) -> str | None:
    span = line.get("span") or {}
    if span.get("event_id"):
        return span["event_id"]
    for s in line.get("spans") or []:
        if s.get("event_id"):
            return s["event_id"]
    return None


def _event_id_of(body: str) -> str | None:
    try:
        return delay_message(json.loads(body))[1]
    except ValueError:
        return None


class Pump:
    """Plays Lambda's SQS event source mapping for the stack's delay queue (see the module doc)."""

    def __init__(self, stack, queue_url: str, dead_letter_url: str, queue_arn: str, region: str,
                 batch_size: int = BATCH_SIZE, retry_after_s: int = RETRY_AFTER_S,
                 visibility_timeout_s: int = VISIBILITY_TIMEOUT_S):
        self.stack = stack
        self.queue_url = queue_url
        self.dead_letter_url = dead_letter_url
        self.queue_arn = queue_arn
        self.region = region
        self.batch_size = batch_size
        self.retry_after_s = retry_after_s
        self.visibility_timeout_s = visibility_timeout_s
        self.log = FunctionLog(Path(stack.log_dir) / "lambda.log")
        self.sqs = stack.new_client("sqs")      # its own client: it runs on its own thread
        self.on_call = None                     # called with each proxy log entry of its invocations
        self.on_delivery = None                 # called with (phase, [Delivery]) before/after each batch
        self.deliveries: list[Delivery] = []
        self.dead_letters: list[dict] = []
        self.problems: list[str] = []           # the pump's own errors (an SQS call that failed)
        self._lock = threading.RLock()          # held for one whole cycle: receive, invoke, delete
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._duplicates = 0
        self._copies: dict[str, str] = {}       # message id of a copy -> message id of the original
        self._batches = 0
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "Pump":
        self._thread = threading.Thread(target=self._run, name="delay-queue-pump", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    @contextlib.contextmanager
    def pause(self):
        """No receive while in this block (the current batch, if any, is finished first)."""
        self._paused.set()
        with self._lock:
            try:
                yield
            finally:
                self._paused.clear()

    def forget(self) -> None:
        """Forget what was delivered (a test starts afresh)."""
        with self._lock:
            self.deliveries.clear()
            self.dead_letters.clear()
            self.problems.clear()
            self._copies.clear()
            self._duplicates = 0

    # ---- controls for tests ---------------------------------------------------------------------
    def duplicate_next(self, n: int = 1) -> None:
        """Each of the next `n` messages received is sent to the queue again, same body, no delay: the
        same hop is then delivered twice (a new message id, as SQS's duplicates may have)."""
        with self._lock:
            self._duplicates += n

    def send_raw(self, body: str, delay_s: int = 0) -> str:
        """Put any body on the delay queue; returns its message id."""
        return self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body, DelaySeconds=delay_s)["MessageId"]

    # ---- waiting --------------------------------------------------------------------------------
    def queue_counts(self) -> dict[str, int]:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return {"visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
                "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
                "delayed": int(attrs.get("ApproximateNumberOfMessagesDelayed", 0))}

    def settle(self, timeout: float = 30.0) -> float:
        """Wait until the delay queue is empty (no message visible, delayed or in flight) and no batch is
        being handled, twice in a row; returns the seconds waited. TimeoutError says what is left."""
        t0 = time.monotonic()
        quiet = 0
        counts: dict[str, int] = {}
        while True:
            busy = not self._lock.acquire(blocking=False)
            if not busy:
                try:
                    counts = self.queue_counts()
                    if sum(counts.values()) == 0:
                        self._drain_dead_letters()
                finally:
                    self._lock.release()
            quiet = quiet + 1 if not busy and counts and sum(counts.values()) == 0 else 0
            if quiet >= 2:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(
                    f"the delay queue did not settle within {timeout:.0f}s: "
                    + ("a batch is being handled; " if busy else "")
                    + ", ".join(f"{v} {k}" for k, v in counts.items())
                    + f"; {len(self.deliveries)} message(s) delivered so far"
                    + (f"; pump problems: {self.problems[-3:]}" if self.problems else ""))
            time.sleep(0.05)

    # ---- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            handled = 0
            if not self._paused.is_set():
                try:
                    with self._lock:
                        if not self._paused.is_set():
                            handled = self._cycle()
                except Exception as e:  # noqa: BLE001 - the pump must outlive a failed call; it is kept
                    self.problems.append(f"{type(e).__name__}: {e}")
            if not handled:
                self._stop.wait(POLL_S)

    def _cycle(self) -> int:
        self._drain_dead_letters()
        msgs = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=self.batch_size, WaitTimeSeconds=0,
            VisibilityTimeout=self.visibility_timeout_s, AttributeNames=["All"],
            MessageAttributeNames=["All"]).get("Messages", [])
        if not msgs:
            return 0
        self._batches += 1
        batch = self._batches
        if self._duplicates > 0:
            for m in msgs[: self._duplicates]:
                copy_id = self.send_raw(m["Body"])
                self._copies[copy_id] = m["MessageId"]
                self._duplicates -= 1
        records = [self._record(m) for m in msgs]
        now = time.time()
        delivered = [Delivery(message_id=m["MessageId"], body=m["Body"], event_id=_event_id_of(m["Body"]),
                              receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                              batch=batch, batch_size=len(msgs), at=now,
                              duplicate_of=self._copies.get(m["MessageId"])) for m in msgs]
        if self.on_delivery:
            self.on_delivery("start", delivered)
        # The stack's invocation lock, held until the function's log lines for this batch are read: no
        # other invocation's calls or log lines can mix in.
        with self.stack.invoke_lock:
            offset = self.log.size()
            res = self.stack.invoke({"Records": records}, on_call=self.on_call, fresh=False,
                                    name=f"sqs-batch-{batch}.json")
            self._conclude_batch(res, msgs, delivered, offset)
        if self.on_delivery:
            self.on_delivery("end", delivered)
        return len(msgs)

    def _conclude_batch(self, res, msgs, delivered, offset) -> None:
        """Delete the messages that went through, leave the failed ones for redelivery, read the reports."""
        failed = self._failed_ids(res, msgs)
        for m, d in zip(msgs, delivered):
            d.calls, d.seconds, d.answer = res.calls, res.seconds, res.response
            d.ok = m["MessageId"] not in failed
            if d.ok:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
            else:
                # Stays in the queue; visible again after retry_after_s instead of the whole timeout.
                self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"],
                                                   VisibilityTimeout=self.retry_after_s)
                if not res.ok:
                    d.error = f"the invocation failed: {res.error}"
                elif not isinstance(res.response, dict) or "batchItemFailures" not in res.response:
                    d.error = f"the answer has no batchItemFailures: {res.response!r}"
        self._read_reports(delivered, offset)
        self.deliveries += delivered

    def _record(self, m: dict) -> dict:
        """The SQS event record Lambda's poller builds for one message."""
        attrs = dict(m.get("Attributes") or {})
        return {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": attrs, "messageAttributes": m.get("MessageAttributes") or {},
                "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs",
                "eventSourceARN": self.queue_arn, "awsRegion": self.region}

    @staticmethod
    def _failed_ids(res, msgs) -> set[str]:
        every = {m["MessageId"] for m in msgs}
        if not res.ok or not isinstance(res.response, dict) or not isinstance(res.response.get("batchItemFailures"), list):
            return every          # the whole batch fails, as Lambda treats an invalid batch response
        ids = {f.get("itemIdentifier") for f in res.response["batchItemFailures"] if isinstance(f, dict)}
        # An itemIdentifier that is not in the batch (or an empty one) fails the whole batch, as in Lambda.
        return every if (ids - every) else ids

    # ---- reading each message's report from the function's log -------------------------------------
    def _read_reports(self, delivered: list[Delivery], offset: int, wait_s: float = 3.0) -> None:
        """Match each delivered message to the log line that ended its handling. The emulator relays the
        function's output a little after the answer: wait (bounded) until every message has its line,
        and every "episode finished" its metrics line."""
        deadline = time.monotonic() + wait_s
        while True:
            lines = self.log.lines(offset)
            terminal = [ln for ln in lines if _kind(ln)]
            finished = sum(1 for ln in terminal if _kind(ln) == FINISHED)
            metrics = sum(1 for ln in lines if "_aws" in ln)
            if (len(terminal) >= len(delivered) and metrics >= finished) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        failures = {(ln.get("fields") or {}).get("message_id"): ln for ln in terminal if _kind(ln) == MESSAGE_FAILED}
        emf = [ln for ln in lines if "_aws" in ln]
        used: set[int] = set()
        for d in delivered:
            if not d.ok:
                ln = failures.get(d.message_id)
                if ln is not None:
                    d.error = str((ln.get("fields") or {}).get("error", d.error))
                d.report = {"outcome": "error", "event_id": d.event_id, "error": d.error}
                continue
            for i, ln in enumerate(terminal):
                if i in used or _kind(ln) == MESSAGE_FAILED or _span_event_id(ln) != d.event_id:
                    continue
                used.add(i)
                d.report = self._report(d, ln, emf)
                break
        for d in delivered:          # lines logged outside an episode's span (a recheck's), in order
            if d.ok and d.report is None:
                for i, ln in enumerate(terminal):
                    if i in used or _kind(ln) == MESSAGE_FAILED or _span_event_id(ln) is not None:
                        continue
                    used.add(i)
                    d.report = self._report(d, ln, emf)
                    break
        for d in delivered:
            if d.report is None:
                d.report = {"outcome": "unknown", "event_id": d.event_id,
                            "reason": "no log line of the function for this message"}

    @staticmethod
    def _report(d: Delivery, ln: dict, emf: list[dict]) -> dict:
        f = ln.get("fields") or {}
        if _kind(ln) in (WAITING, CHAINED, RECHECK):
            sent = d.hops_sent
            return {"outcome": "waiting", "event_id": d.event_id, "call": f.get("call"),
                    "wait_ms": f.get("wait_ms"), "delay_s": f.get("delay_s"), "chained": _kind(ln) == CHAINED,
                    "recheck": _kind(ln) == RECHECK, "tries": f.get("tries"),
                    "sent_delay_seconds": sent[-1].get("delay_seconds") if sent else None}
        report = {"outcome": f.get("outcome"), "event_id": d.event_id, "reason_class": f.get("reason_class"),
                  "attempts": f.get("attempts"), "tasks_started": f.get("tasks_started"),
                  "waited_ms": f.get("waited_ms"), "notified": f.get("notified"), "reason": f.get("reason")}
        metric = next((m for m in emf if m.get("event_id") == d.event_id), None)
        if metric is not None:
            report["metrics"] = {k: metric.get(k) for k in ("Outcome", "ReasonClass", "RetriesIssued",
                                                            "Recoveries", "Notifications", "TimeToRecovery")}
        published = [c for c in d.calls if c.get("op") == "Publish" and c.get("status") == 200]
        report["subject"] = published[-1].get("subject") if published and report.get("notified") else None
        return report

    def _drain_dead_letters(self) -> None:
        while True:
            msgs = self.sqs.receive_message(QueueUrl=self.dead_letter_url, MaxNumberOfMessages=10,
                                            WaitTimeSeconds=0, AttributeNames=["All"]).get("Messages", [])
            if not msgs:
                return
            for m in msgs:
                mine = [d for d in self.deliveries if d.message_id == m["MessageId"]]
                self.dead_letters.append({
                    "message_id": m["MessageId"], "body": m["Body"], "event_id": _event_id_of(m["Body"]),
                    "receives": len(mine), "last_error": mine[-1].error if mine else None})
                self.sqs.delete_message(QueueUrl=self.dead_letter_url, ReceiptHandle=m["ReceiptHandle"])
