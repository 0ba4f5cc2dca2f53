//! Message: the one notification a person reads when ecs-rerun could not help.
//!
//! The subject says what happened to which task family on which cluster, in under 100 ASCII
//! characters. The body is indented JSON: readable in an email, parseable by a machine. The
//! attributes let SNS subscriptions filter (outcome, reason class, cluster, task family).
//! Every text that came from outside passes through [`crate::redact::scrub`].

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::classify::ReasonClass;
use crate::decode::FailedRunTask;
use crate::plan::{Conclusion, Outcome};
use crate::redact;

/// SNS caps subjects at fewer than 100 characters.
const MAX_SUBJECT: usize = 99;

/// A notification, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// One line, ASCII, under 100 characters.
    pub subject: String,
    /// Indented JSON.
    pub body: String,
    /// SNS message attributes (all strings).
    pub attributes: BTreeMap<String, String>,
}

/// Builds the notification for a concluded episode.
pub fn compose(failed: &FailedRunTask, conclusion: &Conclusion) -> Notification {
    let request = &failed.request;
    let cluster = request.cluster_name();
    let task_definition = request.task_definition.as_deref().unwrap_or("(unknown)");
    let family = request.task_family().unwrap_or(task_definition);
    let requested = request.requested_count();
    let lead = conclusion
        .original
        .first()
        .map_or("no reason recorded", |v| v.failure.as_str());

    let headline = match conclusion.outcome {
        Outcome::Recovered => "recovered",
        Outcome::GaveUp => "gave up on",
        Outcome::NotRetryable => "cannot retry",
        Outcome::WouldRetry => "dry run, would retry",
        Outcome::Ignored => "ignored",
    };
    let subject = format!("[ecs-rerun] {headline} {family} on {cluster}: {lead}");

    let summary = format!(
        "ECS task family {family} on cluster {cluster}: {} of {requested} task(s) did not start \
         ({lead}). {}",
        conclusion.still_missing + i32::try_from(conclusion.started_by_retries).unwrap_or(0),
        match conclusion.outcome {
            Outcome::Recovered => format!(
                "ecs-rerun started them after {} attempt(s).",
                conclusion.attempts.len()
            ),
            Outcome::GaveUp => format!(
                "ecs-rerun tried {} time(s) and gave up; {} still missing.",
                conclusion.attempts.len(),
                conclusion.still_missing
            ),
            Outcome::NotRetryable => "ecs-rerun will not retry it.".to_owned(),
            Outcome::WouldRetry => "Dry run: ecs-rerun would retry it.".to_owned(),
            Outcome::Ignored => String::new(),
        }
    );

    let region = &failed.region;
    let mut body = json!({
        "summary": summary,
        "outcome": conclusion.outcome.as_str(),
        "reason_class": conclusion.class.as_str(),
        "why": conclusion.why,
        "what_to_do": what_to_do(conclusion),
        "cluster": request.cluster_or_default(),
        "task_definition": task_definition,
        "requested": requested,
        "started_originally": failed.started,
        "started_by_retries": conclusion.started_by_retries,
        "still_missing": conclusion.still_missing,
        "original_failure": conclusion.original,
        "attempts": conclusion.attempts,
        "event_id": failed.event_id,
        "event_time": failed.event_time,
        "caller": failed.caller,
        "account": failed.account,
        "region": region,
        "console_url": format!(
            "https://{region}.console.aws.amazon.com/ecs/v2/clusters/{cluster}/tasks?region={region}"
        ),
    });
    let secrets: Vec<&str> = request.environment_values().collect();
    scrub_json(&mut body, &secrets);

    let attributes = BTreeMap::from([
        ("outcome".to_owned(), conclusion.outcome.as_str().to_owned()),
        (
            "reason_class".to_owned(),
            conclusion.class.as_str().to_owned(),
        ),
        ("cluster".to_owned(), cluster.to_owned()),
        ("task_family".to_owned(), family.to_owned()),
    ]);
    Notification {
        subject: subject_line(&redact::scrub(&subject, secrets.iter().copied())),
        body: serde_json::to_string_pretty(&body).unwrap_or_else(|_| summary.clone()),
        attributes,
    }
}

fn what_to_do(conclusion: &Conclusion) -> &'static str {
    match (conclusion.outcome, conclusion.class) {
        (Outcome::Recovered, _) => {
            "Nothing: the missing tasks run now. Sent because ECS_RERUN_NOTIFY_ON_RECOVERY is on."
        }
        (Outcome::WouldRetry, _) => {
            "Nothing was launched (dry run). Set ECS_RERUN_DRY_RUN=false (template parameter DryRun) to let ecs-rerun retry."
        }
        (Outcome::GaveUp, _) => {
            "Capacity did not come back in time. Check the cluster's capacity (container instances and their agents, capacity providers, Fargate availability in the subnets' zones), then start the missing task(s) again."
        }
        (_, ReasonClass::NotReplayable) => {
            "Start the task again yourself with its full parameters: ecs-rerun could not reproduce the original request."
        }
        _ => {
            "Fix the cause named in `why` (task definition, placement constraints, subnets, IAM, quotas), then start the task again."
        }
    }
}

/// ASCII only, no control characters, under 100 characters.
fn subject_line(raw: &str) -> String {
    let mut subject: String = raw
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if subject.len() > MAX_SUBJECT {
        subject.truncate(MAX_SUBJECT - 3);
        subject.push_str("...");
    }
    subject
}

fn scrub_json(value: &mut Value, secrets: &[&str]) {
    match value {
        Value::String(s) => *s = redact::scrub(s, secrets.iter().copied()),
        Value::Array(items) => items.iter_mut().for_each(|v| scrub_json(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| scrub_json(v, secrets)),
        _ => {}
    }
}
