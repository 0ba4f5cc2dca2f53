//! Secrets stay secret: a record from before CloudTrail redacted environments (values in clear),
//! with a failure detail and an ECS error message that echo them, goes through the handler; no
//! log line, notification, metric or report carries a value or a key-shaped string.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{FakeClock, FakeEcs, FakeSns, config, error};
use ecs_rerun::core::launch::{LaunchResult, Lookup};
use ecs_rerun::core::lookup::TaskQuery;
use ecs_rerun::core::outcome::Outcome;
use ecs_rerun::core::request::RunTaskRequest;
use ecs_rerun::handler::{Handler, Invocation};
use ecs_rerun::metrics::emf_line;
use ecs_rerun::ports::launch::TaskLauncher;

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

/// The message of every error answer that echoes a secret, as a careless service might.
const ECHO: &str = "Invalid setting DB_PASSWORD=correct-horse-battery-staple for container app";

/// The fake ECS, with every error message replaced by [`ECHO`]; what it starts is unchanged.
#[derive(Clone)]
struct Echoing(FakeEcs);

impl TaskLauncher for Echoing {
    async fn run_task(&self, request: &RunTaskRequest) -> LaunchResult {
        match self.0.run_task(request).await {
            LaunchResult::Rejected {
                code,
                ambiguous,
                existing,
                ..
            } => LaunchResult::Rejected {
                code,
                message: ECHO.to_owned(),
                ambiguous,
                existing,
            },
            answer => answer,
        }
    }

    async fn find_tasks(&self, query: &TaskQuery) -> Lookup {
        self.0.find_tasks(query).await
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
    // A ServerException is a 5xx: ECS may have acted on the call, so the answer is ambiguous
    // (before issue 10 this test built an unambiguous one, which the SDK never returns). Each of
    // the three calls gets one, echoing a secret in its message.
    let failed_at =
        chrono::DateTime::parse_from_rfc3339(event["detail"]["eventTime"].as_str().unwrap())
            .unwrap();
    // A clock a minute after the record: an older one would not be rerun at all.
    let clock = FakeClock::at(SystemTime::from(failed_at) + Duration::from_secs(60));
    let ecs = FakeEcs::scripted(
        &clock,
        vec![
            error("ServerException"),
            error("ServerException"),
            error("ServerException"),
        ],
    );
    let sns = FakeSns::default();
    let handler = Handler::new(config(&[]), Echoing(ecs.clone()), sns.clone(), clock);

    let report = handler
        .handle(event.clone(), &Invocation::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::GaveUp);
    assert_eq!(report.attempts, 3, "{}", report.reason);
    assert_eq!(ecs.tasks_started(), 0);

    // The values did reach ECS: the job is replayed faithfully, only the outputs are scrubbed.
    let sent = serde_json::to_string(&ecs.requests()[0]).unwrap();
    assert!(sent.contains("correct-horse-battery-staple"));

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("episode finished"),
        "the logs were captured: {logs}"
    );
    let note = &sns.sent()[0];
    assert!(
        note.body.contains("may have started"),
        "an ambiguous last answer is reported as such: {}",
        note.body
    );
    let outputs = [
        ("logs", logs),
        (
            "notification",
            format!("{} {} {:?}", note.subject, note.body, note.attributes),
        ),
        ("metrics", emf_line(&report, 0).unwrap()),
        ("report", serde_json::to_string(&report).unwrap()),
    ];
    for (name, text) in &outputs[..2] {
        assert!(
            text.contains("for container app"),
            "the echoing message reached the {name} (masked), so the check below means something"
        );
    }
    for (name, text) in outputs {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{name} leaks {secret}:\n{text}");
        }
    }
}
