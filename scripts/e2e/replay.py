"""Replay sample events end to end and show what ecs-rerun did.

    python scripts/e2e/replay.py [--fresh] [--expect events/expected.json] [--running | --no-delay-queue] EVENT_FILE...

Starts the local stack (moto, the fault proxy, `cargo lambda watch` serving the real bootstrap, and the
delay queue in moto's SQS with a pump playing Lambda's SQS event source mapping), sends each event with
`cargo lambda invoke --data-file`, waits until its episode has concluded (every hop through the delay
queue delivered back to the function, the queue empty), and prints: progress while it runs (each call
the function made, each hop sent to the queue and delivered back), one table row per event with its
final outcome, the notifications as delivered (read back from the SQS queue subscribed to the topic),
the tasks the endpoint now holds with their retry tags, and a one-line summary. Exits 1 if an
event's final outcome differs from the "local" entry for it in the expectations file.

The function runs with the launch store (ECS_RERUN_STORE_TABLE, a DynamoDB table in moto, issue 13): a
successful RunTask record is guarded, and a task state change of one of its tasks that failed to start
(sent after it: the files go in the order given) is rerun with the stored request or notified.

With --no-delay-queue the function runs without ECS_RERUN_DELAY_QUEUE_URL: one invocation sleeps through
the whole episode, as a deployment without the queue does.

With --running it uses the stack of a running `make stack` instead of starting one (`make invoke`); that
stack has no delay queue, so each episode is one invocation there.

With --fresh each record is retimed before it is sent: `time` and `detail.eventTime` are set to now
(UTC), keeping their offset. The sample records date from 2025, and ecs-rerun does not rerun a record
older than ECS_RERUN_MAX_RECORD_AGE_S (default 3600 s): without --fresh they all end `stale`, which
is what a replay of old records by hand should do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scenarios import scenario  # noqa: E402
from stack import (ACCOUNT, MEMBER_ROLE, ORG_MEMBERS, REGION, RETIME_NOTE, RunningStack, Stack, install_signal_handlers,  # noqa: E402
                   load_event)
from pump import MAX_RECEIVE_COUNT  # noqa: E402

TTY = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None


def c(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if TTY else text


def out(line: str = "") -> None:
    print(line, flush=True)


def describe_call(e: dict, t0: float, last: list, recorded_token: str | None = None) -> str:
    """One progress line for a call the function made (as the proxy saw it)."""
    at = e["t"] - t0
    gap = f", {e['t'] - last[0]:.2f}s after the previous call" if last[0] else ""
    last[0] = e["t"]
    if e.get("service") == "sqs" and e.get("op") == "SendMessage":
        status = e.get("status")
        res = "" if status == 200 else " → " + c(f"HTTP {status}", "31")
        return (f"   +{at:5.2f}s  " + c(f"⇢ hop: the episode waits in the delay queue, DelaySeconds={e.get('delay_seconds')}", "36")
                + f" (SQS SendMessage{gap}){res}")
    if e.get("op") == "RunTask":
        attempt = (e.get("tags") or {}).get("ecs-rerun:attempt")
        tok = (e.get("clientToken") or "-")
        if attempt is None and recorded_token and tok == recorded_token:
            what = "RunTask as recorded (the original call, its own token, no tag)"
        else:
            what = f"RunTask attempt {attempt or '?'}"
        tok = tok if len(tok) <= 24 else tok[:24] + "…"
        where = (f" in account {e['account']}, {e['region']}"
                 if e.get("account") and (e.get("account"), e.get("region")) != (ACCOUNT, REGION) else "")
        head = f"   +{at:5.2f}s  {what}{where}: count={e.get('count')} token={tok}{gap}"
        act, status, resp = e.get("action"), e.get("status"), e.get("response") or {}
        if act == "idempotent-replay":
            n = len(resp.get("tasks", [])) if isinstance(resp, dict) else 0
            res = f"token seen before: its answer returned ({n} task(s) it had started), nothing new started"
        elif act == "idempotency-conflict":
            res = c("ConflictException (token reused with other parameters)", "31")
        elif status is None:
            res = f"connection dropped (scripted; {e.get('tasks_started', 0)} task(s) started before)"
        elif status != 200:
            after = f", after {e['tasks_started']} task(s) started" if e.get("tasks_started") else ""
            res = c(f"HTTP {status} {resp.get('__type', '') if isinstance(resp, dict) else ''} (scripted{after})", "33")
        else:
            fails = sorted({f.get("reason", "?") for f in resp.get("failures", [])})
            res = f"{e.get('tasks_started', 0)} started"
            if fails:
                res += c(f", failures: {', '.join(fails)}", "33") + " (scripted)"
        return f"{head}\n{'':12}→ {res}"
    if e.get("service") == "sts" and e.get("op") == "AssumeRole":
        got = (f"credentials of account {e['assumed_account']}" if e.get("assumed_account")
               else c(f"HTTP {e.get('status')}", "31"))
        return f"   +{at:5.2f}s  STS AssumeRole {e.get('role_arn')} (session {e.get('session')}){gap} → {got}"
    if e.get("op") == "Publish":
        status = e.get("status")
        res = "published" if status == 200 else c(f"HTTP {status} (scripted failure)" if status else "dropped", "31")
        return f"   +{at:5.2f}s  SNS Publish {e.get('subject')!r}{gap} → {res}"
    if e.get("op") in ("ListTasks", "DescribeTasks") and e.get("status") == 200:
        req, resp = e.get("request") or {}, e.get("response") or {}
        if e["op"] == "ListTasks":
            filters = " ".join(f"{k}={req[k]!r}" for k in ("family", "startedBy", "desiredStatus") if req.get(k))
            return f"   +{at:5.2f}s  ListTasks {filters}{gap} → {len(resp.get('taskArns', []))} task(s)"
        return f"   +{at:5.2f}s  DescribeTasks {len(req.get('tasks', []))} task(s){gap}"
    return f"   +{at:5.2f}s  {e.get('service')}:{e.get('op')} → HTTP {e.get('status')}"


def describe_delivery(phase: str, deliveries: list, t0: float) -> None:
    """Progress lines for a batch of delay-queue messages the pump hands to the function."""
    for d in deliveries:
        if phase == "start":
            again = f", delivered again (receive {d.receive_count})" if d.receive_count > 1 else ""
            batch = f", in a batch of {d.batch_size}" if d.batch_size > 1 else ""
            out(f"   +{d.at - t0:5.2f}s  " + c(f"⇠ the delay queue delivers the hop{again}{batch}", "36")
                + f" (message {d.message_id[:8]}…)")
        elif not d.ok:
            err = (d.error or "?").splitlines()[0]
            out(f"{'':12}" + c(f"✗ this message failed: it stays in the queue and comes back ({err[:140]})", "31"))


def run_one(stack, path: Path, verbose: bool = True, fresh: bool = False):
    """Send one event; with a delay queue, wait until its episode concluded. Returns the first
    invocation's result and the episode (None without a delay queue)."""
    sc = scenario(path.name)
    stack.control.clear_script()
    if sc["script"]:
        stack.control.script(sc["script"])
    if verbose:
        out(c(f"▶ {path.name}", "1") + (f"  ({sc['title']})" if sc["title"] else ""))
    t0 = time.time()
    last = [0.0]
    event = load_event(path)
    detail = (event.get("detail") if isinstance(event, dict) else None) or {}
    token = (detail.get("requestParameters") or {}).get("clientToken") if isinstance(detail, dict) else None
    on_call = (lambda e: out(describe_call(e, t0, last, token))) if verbose else None
    pump = getattr(stack, "pump", None)
    if pump is not None:
        pump.on_call = on_call
        pump.on_delivery = (lambda phase, ds: describe_delivery(phase, ds, t0)) if verbose else None
    try:
        res = stack.invoke(path, on_call=on_call, fresh=fresh)
        episode = None
        if pump is not None:
            stack.settle(120)
            episode = stack.episode(res.event_id) if res.event_id else None
    finally:
        if pump is not None:
            pump.on_call = pump.on_delivery = None
        stack.control.clear_script()
    return res, episode


def summarize_response(res, episode=None) -> dict:
    if episode is not None and episode.final is not None:
        return dict(episode.final, hops=episode.hops)
    r = res.response
    if isinstance(r, list):           # a handler that answers a list per invocation
        r = r[0] if len(r) == 1 else {"outcome": ",".join(x.get("outcome", "?") for x in r)}
    if not res.ok or not isinstance(r, dict):
        return {"outcome": "error", "attempts": "-", "tasks_started": "-", "subject": None,
                "notified": False, "reason": res.error}
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("events", nargs="+", type=Path)
    ap.add_argument("--expect", type=Path, help="expectations: {file: {local: outcome}}")
    ap.add_argument("--running", action="store_true", help="use the stack of a running `make stack`")
    ap.add_argument("--no-delay-queue", dest="delay_queue", action="store_false",
                    help="no delay queue: one invocation sleeps through each episode's waits")
    ap.add_argument("--json", action="store_true", help="also print each function response as a JSON line")
    ap.add_argument("--fresh", action="store_true",
                    help="retime each record to now (time, detail.eventTime) so that it is not stale")
    args = ap.parse_args(argv)
    expected = json.loads(args.expect.read_text()) if args.expect else {}
    install_signal_handlers()

    started = time.monotonic()
    if args.running:
        stack = RunningStack.find()
        ctx = None
    else:
        out(c("Starting the local stack (moto + fault proxy + cargo lambda watch"
              + (" + delay queue and its pump" if args.delay_queue else "") + ") …", "2"))
        ctx = Stack(event_files=args.events, delay_queue=args.delay_queue, members=ORG_MEMBERS)
        stack = ctx.__enter__()
        out(c("Function settings for this local run: ECS_RERUN_BASE_DELAY_MS=200 ECS_RERUN_MAX_DELAY_MS=1000 "
              "(production: unset, each failure class on its own schedule), ECS_RERUN_MAX_ATTEMPTS=3, AWS_LAMBDA_FUNCTION_NAME=ecs-rerun, "
              f"ECS_RERUN_STORE_TABLE={stack.seeded.get('store_table')} (the launch store, in moto's DynamoDB), "
              f"ECS_RERUN_MEMBER_ROLE={MEMBER_ROLE} ECS_RERUN_ALLOWED_ACCOUNTS="
              f"{stack.function_env['ECS_RERUN_ALLOWED_ACCOUNTS']} (organization mode: member account(s) "
              + ", ".join(f"{a} in {' and '.join(r)}" for a, r in ORG_MEMBERS.items()) + " seeded)", "2"))
        if args.delay_queue:
            out(c(f"Delay queue: ECS_RERUN_DELAY_QUEUE_URL={stack.function_queue_url()} "
                  f"ECS_RERUN_HOP_AFTER_MS={stack.function_env['ECS_RERUN_HOP_AFTER_MS']} (production: 5000): every "
                  "wait goes through moto's SQS (DelaySeconds rounded up to 1 s); a pump plays the event source "
                  f"mapping (batches of {stack.pump.batch_size}, partial batch failures, maxReceiveCount {MAX_RECEIVE_COUNT}). "
                  "--no-delay-queue: waits "
                  "inside the invocation", "2"))
    if args.fresh:
        out(c(RETIME_NOTE[0].upper() + RETIME_NOTE[1:] + ".", "2"))
    try:
        stack.notifications()          # start from an empty queue
        results = []
        for path in args.events:
            t_event = time.monotonic()
            res, episode = run_one(stack, path, fresh=args.fresh)
            r = summarize_response(res, episode)
            want = (expected.get(path.name) or {}).get("local")
            r["_expected"] = want
            r["_match"] = want is None or want == r.get("outcome")
            results.append((path, res, r, episode))
            mark = c("✓", "32") if r["_match"] else c("✗", "31")
            unexpected = "" if r["_match"] else c(f" (expected {want})", "31")
            hops = ""
            if episode is not None and episode.hops:
                failed = sum(1 for d in episode.deliveries if not d.ok)
                hops = f", {episode.hops} hop(s) through the delay queue" + (f" ({failed} failed, delivered again)" if failed else "")
            if episode is not None and episode.final is None and res.ok:
                r["_match"] = False
                out(f"   {c('✗', '31')} the episode did not conclude: " + ", ".join(
                    str(x.get("outcome")) for x in episode.reports))
            elif res.ok:
                out(f"   {mark} {r.get('outcome')}{unexpected}: {r.get('attempts')} attempt(s), {r.get('tasks_started')} "
                    f"task(s) started, notified={r.get('notified')}{hops} ({time.monotonic() - t_event:.2f}s)")
                if not r["_match"] and r.get("reason"):
                    out(f"     reason: {r['reason']}")
            else:
                out(f"   {mark} invocation failed (in AWS: retried, then the dead-letter queue): "
                    + c(res.error.splitlines()[-1] if res.error else "?", "31"))
                for line in (res.error or "").splitlines():
                    if line.strip() and "Was this behavior unexpected" not in line and "cargo-lambda/discussions" not in line:
                        out(f"      {line}")
            if args.json and res.response is not None:
                out(json.dumps(res.response))
        notes = stack.notifications()
        tasks = stack.tasks()
        member_tasks = {(a, r): stack.tasks(a, r) for a, regions in getattr(stack, "members", {}).items()
                        for r in regions}
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)

    # ---- the table ------------------------------------------------------------------------------
    out()
    rows = [("scenario", "decision", "attempts", "tasks started", "notification subject")]
    for path, res, r, _ in results:
        title = scenario(path.name)["title"]
        name = path.stem if not title else f"{path.stem[:2]} {title}"
        decision = str(r.get("outcome"))
        if not r["_match"]:
            decision += f" (expected {r['_expected']})"
        rows.append((name, decision, str(r.get("attempts")), str(r.get("tasks_started")),
                     str(r.get("subject") or "—")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for i, row in enumerate(rows):
        line = "  ".join(col.ljust(widths[j]) for j, col in enumerate(row[:4])) + "  " + row[4]
        if i == 0:
            out(c(line, "1"))
            out("-" * min(len(line) + 10, 160))
        else:
            ok = results[i - 1][2]["_match"]
            out(line if ok else c(line, "31"))

    out()
    out(c(f"Notifications delivered to the SQS queue subscribed to the topic ({len(notes)}):", "1"))
    for n in notes:
        attrs = " ".join(f"{k}={v}" for k, v in sorted(n["attributes"].items()))
        out(f"  • {n['subject']}")
        out(f"    attributes: {attrs}")
        body = n["raw_message"] or ""
        lines = body.splitlines()
        for line in lines[:12]:
            out("    │ " + line)
        if len(lines) > 12:
            out(f"    │ … ({len(lines) - 12} more lines)")
    if not notes:
        out("  (none)")

    out()
    out(c(f"Tasks the endpoint now holds ({len(tasks)}):", "1"))
    for t in sorted(tasks, key=lambda t: (t.get("clusterArn", ""), str(t.get("createdAt", "")))):
        tags = {x["key"]: x["value"] for x in t.get("tags") or []}
        rerun = ", ".join(f"{k}={v}" for k, v in tags.items() if k.startswith("ecs-rerun:")) or "no ecs-rerun tags"
        others = ", ".join(f"{k}={v}" for k, v in tags.items() if not k.startswith("ecs-rerun:"))
        cluster = t["clusterArn"].rsplit("/", 1)[-1]
        td = t["taskDefinitionArn"].rsplit("/", 1)[-1]
        out(f"  {cluster}/{t['taskArn'].rsplit('/', 1)[-1][:8]}  {td:18} {t.get('lastStatus', ''):8} "
            f"{t.get('startedBy') or '-':28} {rerun}" + (f"  [{others}]" if others else ""))
    if not tasks:
        out("  (none)")
    for (account, region), held in member_tasks.items():
        out(c(f"Tasks in member account {account}, {region} ({len(held)}):", "1"))
        for t in held:
            tags = {x["key"]: x["value"] for x in t.get("tags") or []}
            rerun = ", ".join(f"{k}={v}" for k, v in tags.items() if k.startswith("ecs-rerun:")) or "no ecs-rerun tags"
            out(f"  {t['clusterArn'].rsplit('/', 1)[-1]}/{t['taskArn'].rsplit('/', 1)[-1][:8]}  "
                f"{t['taskDefinitionArn'].rsplit('/', 1)[-1]:18} {t.get('lastStatus', ''):8} {rerun}")
        if not held:
            out("  (none)")

    bad = [p.name for p, _, r, _ in results if not r["_match"]]
    failed_invocations = sum(1 for _, res, _, _ in results if not res.ok)
    calls = sum(1 for _, res, _, ep in results for e in (ep or res).calls if e.get("op") == "RunTask")
    hops = sum(ep.hops for _, _, _, ep in results if ep is not None)
    counts: dict[str, int] = {}
    for _, _, r, _ in results:
        counts[str(r.get("outcome"))] = counts.get(str(r.get("outcome")), 0) + 1
    summary = (f"{len(results)} events in {time.monotonic() - started:.1f}s: "
               + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
               + f"; {calls} RunTask calls, {len(tasks)} tasks, {len(notes)} notifications"
               + (f", {hops} hops through the delay queue" if any(ep is not None for *_, ep in results) else "")
               + (f", {failed_invocations} failed invocations" if failed_invocations else ""))
    out()
    if bad:
        if not args.fresh and all(r.get("outcome") == "stale" for p, _, r, _ in results if p.name in bad):
            out(c("hint: the records are older than ECS_RERUN_MAX_RECORD_AGE_S; --fresh retimes them to now", "33"))
        out(c(f"FAIL {summary}; unexpected outcome for: {', '.join(bad)}", "31;1"))
        return 1
    out(c(f"OK   {summary}; every outcome as expected", "32;1"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: everything started was stopped", file=sys.stderr)
        sys.exit(130)
    except RuntimeError as e:
        print(textwrap.fill(f"error: {e}", 100), file=sys.stderr)
        sys.exit(2)
