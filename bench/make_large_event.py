"""Writes bench/events/large.json: the "large" sample event of the benchmarks.

It is events/02-resource-memory-partial.json (EC2, RESOURCE:MEMORY, some tasks placed) blown up to
the size a busy batch system sends: count 10 (2 placed, 8 failures), 10 container overrides with
commands and resource requirements, placement constraints and strategies, and 45 tags (with the two
tags a retry adds, 47: under ECS's limit of 50, so it is still replayable).

    python bench/make_large_event.py      # deterministic: same output every time
"""

import copy
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "events" / "02-resource-memory-partial.json"
OUT = ROOT / "bench" / "events" / "large.json"


def main() -> None:
    ev = json.loads(SRC.read_text())
    ev["id"] = "3f0c9a52-7d1e-4b8a-9c6f-large0000001"
    d = ev["detail"]
    d["eventID"] = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    rp = d["requestParameters"]
    rp["count"] = 10
    rp["startedBy"] = "nightly-etl-scheduler"
    rp["propagateTags"] = "TASK_DEFINITION"
    rp["overrides"] = {
        "containerOverrides": [
            {
                "name": f"worker-{i}",
                "command": ["etl", "--shard", f"{i}", "--of", "10", "--since", "2025-04-30T00:00:00Z",
                            "--batch-size", "5000", "--retries", "3"],
                "cpu": 256,
                "memory": 1024,
                "memoryReservation": 768,
                "resourceRequirements": [{"type": "GPU", "value": "1"}] if i == 0 else [],
            }
            for i in range(10)
        ],
        "cpu": "4096",
        "memory": "16384",
        "taskRoleArn": "arn:aws:iam::111122223333:role/etl-worker-task",
        "executionRoleArn": "arn:aws:iam::111122223333:role/ecsTaskExecutionRole",
    }
    rp["placementConstraints"] = [
        {"type": "memberOf", "expression": "attribute:ecs.instance-type =~ m5.*"},
        {"type": "memberOf", "expression": "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]"},
    ]
    rp["placementStrategy"] = [{"type": "spread", "field": "attribute:ecs.availability-zone"},
                               {"type": "binpack", "field": "memory"}]
    rp["tags"] = [{"key": f"team:etl:tag-{i:02d}", "value": f"value-{i:02d}-" + "x" * 24} for i in range(45)]
    re = d["responseElements"]
    started = re["tasks"][:2]
    re["tasks"] = started
    re["failures"] = [
        {"arn": f"arn:aws:ecs:us-east-1:111122223333:container-instance/batch/{i:032x}", "reason": "RESOURCE:MEMORY"}
        for i in range(1, 9)
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(ev, indent=2) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
