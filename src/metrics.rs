//! Metrics: CloudWatch Embedded Metric Format lines, so metrics cost no API call.
//!
//! One JSON line per handled failure (and per launch the store guards, counted apart as
//! `LaunchesGuarded`: a launch is not a failure), printed to stdout, where Lambda's log pipeline turns it into
//! metrics in the `EcsRerun` namespace. Dimensions stay few (outcome, and outcome with reason
//! class) so the metric count, and its cost, is bounded whatever the number of clusters; the
//! cluster and task family ride along as plain properties, searchable in Logs Insights.
//!
//! The scheduled self-check is not a failure: it has a line of its own, `SelfCheckFailed`
//! (1 when failed `RunTask` calls may not reach the function, 0 when they do), under the one
//! dimension `Check` = `hearing`, which `SelfCheckAlarm` watches.

use serde_json::{Value, json};

use crate::core::outcome::Outcome;
use crate::handler::Report;

/// The CloudWatch namespace.
pub const NAMESPACE: &str = "EcsRerun";

/// The EMF line for one report (a self-check's has its own metric), or `None` for ignored events (they are not failures) and for
/// an episode that waits in the delay queue (its end is counted when it comes).
pub fn emf_line(report: &Report, timestamp_ms: u64) -> Option<String> {
    if matches!(
        report.outcome,
        Outcome::SelfCheckOk | Outcome::SelfCheckFailed
    ) {
        return Some(self_check_line(report, timestamp_ms));
    }
    if matches!(report.outcome, Outcome::Ignored | Outcome::Waiting) {
        return None;
    }
    let seen = match report.outcome {
        Outcome::Guarded => "LaunchesGuarded",
        _ => "FailuresSeen",
    };
    let mut metrics = vec![
        json!({"Name": seen, "Unit": "Count"}),
        json!({"Name": "RetriesIssued", "Unit": "Count"}),
        json!({"Name": "Recoveries", "Unit": "Count"}),
        json!({"Name": "Notifications", "Unit": "Count"}),
    ];
    if report.recovery_ms.is_some() {
        metrics.push(json!({"Name": "TimeToRecovery", "Unit": "Milliseconds"}));
    }
    let mut line = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Outcome"], ["Outcome", "ReasonClass"], ["Outcome", "Caller"]],
                "Metrics": metrics,
            }],
        },
        "Outcome": report.outcome.as_str(),
        "ReasonClass": report.reason_class.map_or("none", |c| c.as_str()),
        "Caller": report.caller.as_ref().map_or("none", |c| c.name()),
        seen: 1,
        "RetriesIssued": report.attempts,
        "Recoveries": u8::from(matches!(
            report.outcome,
            Outcome::Recovered | Outcome::RecoveredOnFallback
        )),
        "Notifications": u8::from(report.notified),
        "cluster": report.cluster,
        "task_family": report.task_family,
        "event_id": report.event_id,
        // Properties, not dimensions: one metric per account would multiply what CloudWatch charges.
        "account": report.account,
        "region": report.region,
    });
    if let (Some(ms), Some(fields)) = (report.recovery_ms, line.as_object_mut()) {
        fields.insert("TimeToRecovery".to_owned(), Value::from(ms));
    }
    Some(line.to_string())
}

fn self_check_line(report: &Report, timestamp_ms: u64) -> String {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Check"]],
                "Metrics": [{"Name": "SelfCheckFailed", "Unit": "Count"}],
            }],
        },
        "Check": "hearing",
        "SelfCheckFailed": u8::from(report.outcome == Outcome::SelfCheckFailed),
        "Outcome": report.outcome.as_str(),
        "Notifications": u8::from(report.notified),
        "reason": report.reason,
    })
    .to_string()
}
