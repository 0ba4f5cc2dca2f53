"""Organization mode (issue 20): the first event of a member account in a cold process, and a second one of that
account from another Region, ecs-rerun against the Python baseline. Run by bench/run.py (`--skip-org` leaves it
out; `--only-org` runs nothing else).

The stack is scripts/e2e/stack.py's in organization mode (moto behind the fault proxy, no Lambda emulator): the
member account 444455556666 seeded in us-east-1 and eu-west-1 for sample 19 (an AGENT failure of a member's
EC2 task), the proxy naming each call's account to moto. Both implementations run with ECS_RERUN_MEMBER_ROLE and
the member account allowed, against bench/run.py's fake Lambda Runtime API (whose function ARN names the central
account 111122223333), over plain HTTP to one endpoint (the STS, ECS and SNS calls all go through the proxy,
which logs them with the account and Region each ran in). Per process, two events, each a job of its own:

1. sample 19 from us-east-1, delivered to a cold process: ecs-rerun asks STS AssumeRole for the member role,
   then reruns the task in the member account (RunTask) and publishes (ECS_RERUN_NOTIFY_ON_RECOVERY, as the
   baseline always publishes); the baseline (bench/baseline/handler.py) does sts.assume_role + run_task with
   a boto3 ECS client built for the member's credentials, then publishes.
2. the same job's record from eu-west-1, to the now warm process: the credentials are kept per account, so no
   STS call, and a RunTask in eu-west-1.

Each run is checked (stops the bench otherwise): outcome recovered, the first event made exactly one
AssumeRole and its RunTask in the member account in us-east-1, the second no STS call and its RunTask there in
eu-west-1, no RunTask anywhere else. Medians over --runs runs each, alternately, after one uncounted run each.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import run as run_bench  # noqa: E402  bench/run.py: the fake Runtime API, drive, function_env, job_copy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "e2e"))
from stack import ACCOUNT, MEMBER_ACCOUNT, MEMBER_REGIONS, ORG_MEMBERS, Stack, org_function_env  # noqa: E402

EVENT = ROOT / "events" / "19-member-account-agent.json"
HEADING = "## Organization mode: a member account's first event (issue 20)"


def in_region(event: dict, region: str) -> dict:
    """The member's record as its forwarding rule delivers it from `region`."""
    ev = json.loads(json.dumps(event))
    ev["region"] = ev["detail"]["awsRegion"] = region
    return ev


def metrics(r: dict) -> dict:
    """One run's timings (ms) and the calls of each event, with where they ran."""
    first, second = r["ids"]
    d1, d2 = r["delivered"][first], r["delivered"][second]
    resp1, resp2 = r["responses"][first][0], r["responses"][second][0]
    during = lambda a, b: [c for c in r["calls"] if a <= c["t"] <= b]  # noqa: E731
    c1, c2 = during(d1, resp1), during(d2, resp2)
    at = lambda calls, op: next((c["t"] for c in calls if c.get("op") == op), None)  # noqa: E731
    ms = lambda a, b: None if a is None or b is None else (b - a) * 1000  # noqa: E731
    where = lambda calls: sorted({(c.get("account"), c.get("region")) for c in calls if c.get("op") == "RunTask"})  # noqa: E731
    return {
        "cold_total": ms(r["t0"], resp1), "ready": ms(r["t0"], r["ready"]), "first_event": ms(d1, resp1),
        "to_assume_role": ms(d1, at(c1, "AssumeRole")), "to_run_task": ms(d1, at(c1, "RunTask")),
        "second_event": ms(d2, resp2), "second_to_run_task": ms(d2, at(c2, "RunTask")),
        "maxrss_mb": r["maxrss_kb"] / 1024, "cpu_ms": r["cpu_s"] * 1000,
        "outcomes": [(r["responses"][i][1] or {}).get("outcome") for i in (first, second)],
        "sts_first": sum(c.get("service") == "sts" for c in c1), "sts_second": sum(c.get("service") == "sts" for c in c2),
        "assume_first": sum(c.get("op") == "AssumeRole" for c in c1),
        "run_task_first": where(c1), "run_task_second": where(c2),
        "calls_first": [c.get("op") for c in c1], "calls_second": [c.get("op") for c in c2],
    }


def check(name: str, m: dict) -> None:
    want1, want2 = [(MEMBER_ACCOUNT, MEMBER_REGIONS[0])], [(MEMBER_ACCOUNT, MEMBER_REGIONS[1])]
    problems = []
    if m["outcomes"] != ["recovered", "recovered"]:
        problems.append(f"outcomes {m['outcomes']}")
    if m["assume_first"] != 1:
        problems.append(f"{m['assume_first']} AssumeRole calls in the first event")
    if m["sts_second"]:
        problems.append(f"{m['sts_second']} STS calls in the second event")
    if m["run_task_first"] != want1 or m["run_task_second"] != want2:
        problems.append(f"RunTask in {m['run_task_first']} then {m['run_task_second']}, expected {want1} then {want2}")
    if problems:
        raise RuntimeError(f"organization mode, {name}: " + "; ".join(problems)
                           + f" (calls: {m['calls_first']} then {m['calls_second']})")


def run_all(rust_bin: Path, runs: int) -> dict:
    """Start the organization-mode stack, run both implementations `runs` times (+1 uncounted), stop it."""
    event = json.loads(EVENT.read_text())
    impls = {"rust": [str(rust_bin)],
             "python": [sys.executable, "-B", str(ROOT / "bench" / "baseline" / "bootstrap.py")]}
    out: dict = {"runs": {k: [] for k in impls}, "t0": time.time()}
    with Stack(event_files=[EVENT], with_lambda=False, log_dir=run_bench.OUT, quiet=True,
               members=ORG_MEMBERS) as stack:
        env = {**run_bench.function_env(stack, stack.proxy.url, None), **org_function_env(ORG_MEMBERS)}
        for i in range(runs + 1):
            for name, argv in impls.items():
                events = [run_bench.job_copy(in_region(event, MEMBER_REGIONS[0]), i, f"org-{name}"),
                          run_bench.job_copy(in_region(event, MEMBER_REGIONS[1]), i, f"org-{name}-2")]
                r = run_bench.drive(argv, env, events, stack, 60, run_bench.OUT / f"org-{name}.log",
                                    services=("ecs", "sns", "sts"))
                if "error" in r:
                    raise RuntimeError(f"organization mode, {name}: {r['error']}")
                m = metrics(r)
                check(name, m)
                if i:
                    out["runs"][name].append(m)
            if i:
                run_bench.say(f"org run {i}/{runs}: " + ", ".join(
                    f"{n} {out['runs'][n][-1]['first_event']:.1f} ms" for n in impls))
        out["central_tasks"] = len(stack.tasks(ACCOUNT))
    if out["central_tasks"]:
        raise RuntimeError(f"organization mode: {out['central_tasks']} task(s) started in the central account")
    return out


def section(res: dict) -> list[str]:
    rows = res["runs"]
    med = lambda impl, key: statistics.median(r[key] for r in rows[impl])  # noqa: E731
    ratio = lambda key: med("python", key) / med("rust", key)  # noqa: E731
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    when = dt.datetime.fromtimestamp(res["t0"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n = len(rows["rust"])
    table = [
        ("", "ecs-rerun (Rust)", "Python baseline (boto3)", "Python ÷ Rust"),
        ("spawn → first event answered (cold total)", *(f"{med(i, 'cold_total'):.1f} ms" for i in ("rust", "python")),
         f"{ratio('cold_total'):.1f}×"),
        ("first event: delivered → answered", *(f"{med(i, 'first_event'):.1f} ms" for i in ("rust", "python")),
         f"{ratio('first_event'):.1f}×"),
        ("first event: delivered → AssumeRole at the endpoint",
         *(f"{med(i, 'to_assume_role'):.1f} ms" for i in ("rust", "python")), f"{ratio('to_assume_role'):.1f}×"),
        ("first event: delivered → RunTask at the endpoint (member account)",
         *(f"{med(i, 'to_run_task'):.1f} ms" for i in ("rust", "python")), f"{ratio('to_run_task'):.1f}×"),
        ("second event, other Region: delivered → answered",
         *(f"{med(i, 'second_event'):.1f} ms" for i in ("rust", "python")), f"{ratio('second_event'):.1f}×"),
        ("STS calls: first event / second event",
         *(f"{max(r['sts_first'] for r in rows[i])} / {max(r['sts_second'] for r in rows[i])} (max of {n} runs)"
           for i in ("rust", "python")), ""),
        ("peak RSS (VmHWM)", *(f"{med(i, 'maxrss_mb'):.1f} MB" for i in ("rust", "python")),
         f"{ratio('maxrss_mb'):.1f}×"),
        ("CPU time of the process (2 events)", *(f"{med(i, 'cpu_ms'):.0f} ms" for i in ("rust", "python")),
         f"{ratio('cpu_ms'):.1f}×"),
    ]
    widths = [max(len(r[j]) for r in table) for j in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return [
        HEADING,
        "",
        f"bench/org.py (`.tools/bench/bin/python bench/run.py --only-org`), {when}, commit {commit}"
        f"{'+changes' if dirty else ''}, {os.cpu_count()} CPUs; medians of {n} runs per implementation, alternately, "
        "after one uncounted run each. The x86_64 release `ecs-rerun` and the Python baseline (bench/baseline: "
        "boto3, `sts.assume_role` once per account, an ECS client per account and Region, RunTask, SNS Publish) "
        "each started against the fake Lambda Runtime API (function ARN in the central account 111122223333), both "
        "with ECS_RERUN_MEMBER_ROLE, reaching moto behind scripts/e2e/proxy.py over plain HTTP (no TLS, unlike the "
        "cold start above: STS, ECS and SNS through one endpoint). Per process: sample 19 (a failed RunTask of "
        f"member account {MEMBER_ACCOUNT}) from {MEMBER_REGIONS[0]}, cold: AssumeRole + RunTask in the member "
        f"account + Publish; then the same job's record from {MEMBER_REGIONS[1]}, warm. Checked on every run: both "
        "recovered, one AssumeRole in the first event, no STS call in the second, each RunTask in the member "
        f"account and the record's Region, no task in the central account (it holds {res['central_tasks']}).",
        "",
        line(table[0]),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        *map(line, table[1:]),
    ]


def write_section(lines: list[str], results: Path) -> None:
    """Put the section into `results` (bench/results.md): in place of the one there, or at the end."""
    text = results.read_text() if results.exists() else "# ecs-rerun benchmarks\n"
    start = text.find(HEADING)
    block = "\n".join(lines) + "\n"
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        end = text.find("\n## ", start + len(HEADING))
        text = text[:start] + block + (text[end + 1:] if end >= 0 else "")
    results.write_text(text)
