//! Secrets stay secret: a record from before CloudTrail redacted environments (values in clear),
//! with a failure detail and an ECS error message that echo them, goes through the handler; no
//! log line, notification, metric or report carries a value or a key-shaped string.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{FakeClock, FakeEcs, FakeSns, config};
use ecs_rerun::handler::{Handler, Invocation};
use ecs_rerun::metrics::emf_line;
use ecs_rerun::plan::{LaunchResult, Outcome};

const SECRETS: &[&str] = &[
    "correct-horse-battery-staple",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AKIAIOSFODNN7EXAMPLE",
];

/// Collects everything the tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_in_logs_notifications_metrics_or_report() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let text = std::fs::read_to_string(common::repo_path(
        "tests/fixtures/environment-with-secrets.json",
    ))
    .unwrap();
    let event: serde_json::Value = serde_json::from_str(&text).unwrap();
    let echo = "Invalid setting DB_PASSWORD=correct-horse-battery-staple for container app";
    let rejected = || LaunchResult::Rejected {
        code: "ServerException".into(),
        message: echo.into(),
        ambiguous: false,
    };
    let ecs = FakeEcs::scripted(vec![rejected(), rejected(), rejected()]);
    let sns = FakeSns::default();
    let clock = FakeClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let handler = Handler::new(config(&[]), ecs.clone(), sns.clone(), clock);

    let report = handler
        .handle(event.clone(), &Invocation::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::GaveUp);

    // The values did reach ECS: the job is replayed faithfully, only the outputs are scrubbed.
    let sent = serde_json::to_string(&ecs.requests()[0]).unwrap();
    assert!(sent.contains("correct-horse-battery-staple"));

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("episode finished"),
        "the logs were captured: {logs}"
    );
    let note = &sns.sent()[0];
    let outputs = [
        ("logs", logs),
        (
            "notification",
            format!("{} {} {:?}", note.subject, note.body, note.attributes),
        ),
        ("metrics", emf_line(&report, 0).unwrap()),
        ("report", serde_json::to_string(&report).unwrap()),
    ];
    for (name, text) in outputs {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{name} leaks {secret}:\n{text}");
        }
    }
}
