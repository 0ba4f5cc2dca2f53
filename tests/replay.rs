//! The replay command on what CloudTrail gives an operator: a trail's log file with several
//! records, and a `lookup-events` answer. It runs the real binary, in dry run (no AWS call).

use std::process::Command;

use serde_json::Value;

/// Runs `ecs-rerun-replay --dry-run --fresh FILE`; returns its report lines and its stderr.
fn replay(file: &str) -> (Vec<Value>, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let out = Command::new(env!("CARGO_BIN_EXE_ecs-rerun-replay"))
        .args(["--dry-run", "--fresh"])
        .arg(&path)
        .env_remove("ECS_RERUN_RULES")
        .env_remove("ECS_RERUN_DELAY_QUEUE_URL")
        .output()
        .expect("the replay command runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON report per line"))
        .collect();
    (lines, stderr)
}

#[test]
fn a_trail_log_file_is_replayed_record_by_record() {
    let (lines, stderr) = replay("tests/fixtures/trail-log.json");
    assert!(
        stderr.contains(
            "2 RunTask record(s) of 3 in a trail log file, wrapped as EventBridge events"
        ),
        "{stderr}"
    );
    let seen: Vec<(u64, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["record"].as_u64().unwrap_or(99),
                l["outcome"].as_str().unwrap_or(""),
                l["rule"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (0, "would_retry", "onReason=AGENT -> retry"),
            (1, "left", "onCaller=batch -> leave")
        ],
        "the caller and the matching rule, per record"
    );
    assert_eq!(lines[1]["caller"], "batch");
}

#[test]
fn a_lookup_events_answer_is_replayed() {
    let (lines, stderr) = replay("tests/fixtures/lookup-events.json");
    assert!(stderr.contains("in a lookup-events answer"), "{stderr}");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["outcome"], "not_retryable");
    assert_eq!(lines[0]["caller"], "step-functions");
}
