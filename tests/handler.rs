//! The retry loop end to end through the ports, with fakes for ECS, SNS and the clock.
//! Each test reads like a scenario an operator would recognise.

mod common;

use std::time::{Duration, SystemTime};

use common::{FakeClock, FakeEcs, FakeSns, config, event, failure, started};
use ecs_rerun::handler::{Handler, HandlerError, Invocation, Report};
use ecs_rerun::plan::{ATTEMPT_TAG, EVENT_ID_TAG, LaunchResult, Outcome};
use serde_json::Value;

type TestHandler = Handler<FakeEcs, FakeSns, FakeClock>;

fn handler(ecs: &FakeEcs, sns: &FakeSns, clock: &FakeClock, extra: &[(&str, &str)]) -> TestHandler {
    Handler::new(config(extra), ecs.clone(), sns.clone(), clock.clone())
}

/// Runs one sample event through a handler on these fakes, as a local invocation.
async fn run(
    ecs: &FakeEcs,
    sns: &FakeSns,
    clock: &FakeClock,
    extra: &[(&str, &str)],
    file: &str,
) -> Result<Report, HandlerError> {
    run_as(ecs, sns, clock, extra, file, &local()).await
}

/// Runs one sample event through a handler on these fakes.
async fn run_as(
    ecs: &FakeEcs,
    sns: &FakeSns,
    clock: &FakeClock,
    extra: &[(&str, &str)],
    file: &str,
    invocation: &Invocation,
) -> Result<Report, HandlerError> {
    handler(ecs, sns, clock, extra)
        .handle(event(file), invocation)
        .await
}

fn clock() -> FakeClock {
    FakeClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
}

fn local() -> Invocation {
    Invocation::default()
}

fn tag<'a>(request: &'a ecs_rerun::request::RunTaskRequest, key: &str) -> Option<&'a str> {
    request
        .tags
        .iter()
        .flatten()
        .find(|t| t.key.as_deref() == Some(key))
        .and_then(|t| t.value.as_deref())
}

#[tokio::test]
async fn agent_three_times_then_gives_up_with_one_notification() {
    let agent = || LaunchResult::Placed {
        started: vec![],
        failures: vec![failure("AGENT")],
    };
    let ecs = FakeEcs::scripted(vec![agent(), agent(), agent()]);
    let (sns, clock) = (FakeSns::default(), clock());
    let report = run(&ecs, &sns, &clock, &[], "01-agent-ec2.json")
        .await
        .unwrap();

    assert_eq!(report.outcome, Outcome::GaveUp);
    assert_eq!(report.attempts, 3);
    assert_eq!(
        ecs.requests().len(),
        3,
        "never more launches than the configured attempts"
    );
    let attempts: Vec<_> = ecs
        .requests()
        .iter()
        .map(|r| tag(r, ATTEMPT_TAG).unwrap().to_owned())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    let tokens: std::collections::HashSet<_> = ecs
        .requests()
        .iter()
        .map(|r| r.client_token.clone())
        .collect();
    assert_eq!(tokens.len(), 3, "each answered attempt gets a fresh token");
    let sent = sns.sent();
    assert_eq!(sent.len(), 1, "exactly one notification per episode");
    assert_eq!(sent[0].attributes["outcome"], "gave_up");
    assert!(
        sent[0].subject.contains("nightly-report") && sent[0].subject.contains("batch"),
        "{}",
        sent[0].subject
    );
    // The backoff grows: each wait at least half of base * 2^(n-1) (defaults 20 s, cap 120 s).
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 3);
    for (n, wait) in sleeps.iter().enumerate() {
        let step = Duration::from_secs(20 * 2u64.pow(n as u32)).min(Duration::from_secs(120));
        assert!(
            *wait >= step / 2 && *wait <= step,
            "attempt {}: {wait:?} outside [{:?}, {step:?}]",
            n + 1,
            step / 2
        );
    }
}

#[tokio::test]
async fn partial_start_retries_only_the_missing_tasks_until_all_run() {
    // 5 requested, 2 started originally; the first retry places 1 of 3, the second the last 2.
    let ecs = FakeEcs::scripted(vec![
        LaunchResult::Placed {
            started: started(1),
            failures: vec![failure("RESOURCE:MEMORY")],
        },
        LaunchResult::Placed {
            started: started(2),
            failures: vec![],
        },
    ]);
    let (sns, clock) = (FakeSns::default(), clock());
    let report = run(&ecs, &sns, &clock, &[], "02-resource-memory-partial.json")
        .await
        .unwrap();

    assert_eq!(report.outcome, Outcome::Recovered);
    let counts: Vec<_> = ecs.requests().iter().map(|r| r.count).collect();
    assert_eq!(
        counts,
        [Some(3), Some(2)],
        "count = requested - started, never the number of failures"
    );
    assert_eq!(report.tasks_started, 3);
    assert!(
        sns.sent().is_empty(),
        "a recovery is logged, not notified, unless configured"
    );
    assert!(report.recovery_ms.is_some());
}

#[tokio::test]
async fn recovery_is_notified_when_configured() {
    let (ecs, sns, clock) = (FakeEcs::default(), FakeSns::default(), clock());
    let h = handler(
        &ecs,
        &sns,
        &clock,
        &[("ECS_RERUN_NOTIFY_ON_RECOVERY", "true")],
    );
    let report = h
        .handle(event("01-agent-ec2.json"), &local())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Recovered);
    assert_eq!(sns.sent().len(), 1);
    assert_eq!(sns.sent()[0].attributes["outcome"], "recovered");
}

#[tokio::test]
async fn throttling_then_success_recovers() {
    let ecs = FakeEcs::scripted(vec![LaunchResult::Rejected {
        code: "ThrottlingException".into(),
        message: "Rate exceeded".into(),
        ambiguous: false,
    }]);
    let (sns, clock) = (FakeSns::default(), clock());
    let report = run(&ecs, &sns, &clock, &[], "04-throttling.json")
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Recovered);
    assert_eq!(report.attempts, 2);
    let requests = ecs.requests();
    assert_ne!(
        requests[0].client_token, requests[1].client_token,
        "a throttled call did nothing: new token"
    );
}

#[tokio::test]
async fn server_error_resends_the_same_token_so_a_hidden_success_is_not_doubled() {
    let ecs = FakeEcs::scripted(vec![LaunchResult::Rejected {
        code: "ServerException".into(),
        message: "Service Unavailable".into(),
        ambiguous: true,
    }]);
    let (sns, clock) = (FakeSns::default(), clock());
    let report = run(&ecs, &sns, &clock, &[], "05-server-exception.json")
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Recovered);
    let requests = ecs.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].client_token, requests[1].client_token);
    assert_eq!(
        requests[0].tags, requests[1].tags,
        "same token needs identical parameters, or ECS answers ConflictException"
    );
}

#[tokio::test]
async fn lost_answer_is_resent_with_the_same_token_and_starts_nothing_twice() {
    let ecs = FakeEcs::losing_first_response();
    let (sns, clock) = (FakeSns::default(), clock());
    let report = run(&ecs, &sns, &clock, &[], "02-resource-memory-partial.json")
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Recovered);
    assert_eq!(ecs.requests().len(), 2);
    assert_eq!(
        ecs.tasks_created(),
        3,
        "the 3 missing tasks, once, although the first answer was lost"
    );
}

#[tokio::test]
async fn permanent_failure_on_a_retry_stops_and_notifies() {
    let ecs = FakeEcs::scripted(vec![LaunchResult::Placed {
        started: vec![],
        failures: vec![failure("ATTRIBUTE")],
    }]);
    let (sns, clock) = (FakeSns::default(), clock());
    let report = run(&ecs, &sns, &clock, &[], "01-agent-ec2.json")
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert_eq!(report.attempts, 1);
    assert_eq!(sns.sent().len(), 1);
    assert_eq!(sns.sent()[0].attributes["reason_class"], "permanent");
}

#[tokio::test]
async fn permanent_and_not_replayable_failures_notify_without_launching() {
    for (file, class) in [
        ("06-attribute.json", "permanent"),
        ("07-redacted-environment.json", "not_replayable"),
    ] {
        let (ecs, sns, clock) = (FakeEcs::default(), FakeSns::default(), clock());
        let report = run(&ecs, &sns, &clock, &[], file).await.unwrap();
        assert_eq!(report.outcome, Outcome::NotRetryable, "{file}");
        assert!(ecs.requests().is_empty(), "{file}: nothing launched");
        assert_eq!(sns.sent().len(), 1, "{file}");
        assert_eq!(sns.sent()[0].attributes["reason_class"], class, "{file}");
    }
}

#[tokio::test]
async fn redacted_environment_is_replayed_without_it_when_the_operator_opts_in() {
    let (ecs, sns, clock) = (FakeEcs::default(), FakeSns::default(), clock());
    let h = handler(
        &ecs,
        &sns,
        &clock,
        &[("ECS_RERUN_REPLAY_REDACTED_ENV", "true")],
    );
    let report = h
        .handle(event("07-redacted-environment.json"), &local())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Recovered);
    let sent = &ecs.requests()[0];
    assert!(!sent.environment_redacted());
    let container = &sent
        .overrides
        .as_ref()
        .unwrap()
        .container_overrides
        .as_ref()
        .unwrap()[0];
    assert!(
        container.environment.is_none() && container.command.is_some(),
        "environment dropped, command kept"
    );
}

#[tokio::test]
async fn publishing_failure_fails_the_invocation() {
    let (ecs, sns, clock) = (FakeEcs::default(), FakeSns::failing(), clock());
    let err = run(&ecs, &sns, &clock, &[], "06-attribute.json")
        .await
        .unwrap_err();
    assert!(matches!(err, HandlerError::Publish(_)), "{err}");
    assert!(
        err.to_string().contains("sns:Publish"),
        "the message says what to check: {err}"
    );
}

#[tokio::test]
async fn duplicate_delivery_starts_the_tasks_once() {
    let ecs = FakeEcs::default();
    let (sns, clock) = (FakeSns::default(), clock());
    let h = handler(&ecs, &sns, &clock, &[]);
    let event = event("02-resource-memory-partial.json");
    let first = h.handle(event.clone(), &local()).await.unwrap();
    let second = h.handle(event.clone(), &local()).await.unwrap();
    assert_eq!(
        (first.outcome, second.outcome),
        (Outcome::Recovered, Outcome::Recovered)
    );
    assert_eq!(ecs.requests().len(), 2, "both deliveries called RunTask...");
    assert_eq!(
        ecs.tasks_created(),
        3,
        "...but the shared token made ECS start the 3 missing tasks once"
    );
}

#[tokio::test]
async fn deadline_too_close_gives_up_early_and_notifies() {
    let agent = || LaunchResult::Placed {
        started: vec![],
        failures: vec![failure("AGENT")],
    };
    let ecs = FakeEcs::scripted(vec![agent(), agent(), agent()]);
    let (sns, clock) = (FakeSns::default(), clock());
    // 60 s left: attempt 1 (10–20 s wait) fits with the 25 s reserve, attempt 2 (20–40 s) may,
    // attempt 3 (40–80 s) cannot.
    let invocation = Invocation {
        deadline: Some(clock.now_plus(Duration::from_secs(60))),
        own_account: None,
    };
    let report = run_as(&ecs, &sns, &clock, &[], "01-agent-ec2.json", &invocation)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::GaveUp);
    assert!(report.attempts < 3, "stopped before the deadline");
    assert!(report.reason.contains("deadline"), "{}", report.reason);
    assert_eq!(sns.sent().len(), 1);
    let total: Duration = clock.sleeps().iter().sum();
    assert!(
        total + ecs_rerun::plan::Policy::default().deadline_reserve <= Duration::from_secs(60),
        "never slept into the reserve"
    );
}

#[tokio::test]
async fn only_the_functions_own_account_unless_allowed() {
    let foreign = Invocation {
        deadline: None,
        own_account: Some("999988887777".into()),
    };
    let (ecs, sns, clock) = (FakeEcs::default(), FakeSns::default(), clock());
    let report = run_as(&ecs, &sns, &clock, &[], "01-agent-ec2.json", &foreign)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Ignored);
    assert!(report.reason.contains("111122223333"), "{}", report.reason);
    assert!(ecs.requests().is_empty() && sns.sent().is_empty());

    let allowed = handler(
        &ecs,
        &sns,
        &clock,
        &[("ECS_RERUN_ALLOWED_ACCOUNTS", "111122223333")],
    );
    let report = allowed
        .handle(event("01-agent-ec2.json"), &foreign)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Recovered);
}

#[tokio::test]
async fn dry_run_launches_nothing_and_says_what_it_would_do() {
    let (ecs, sns, clock) = (FakeEcs::default(), FakeSns::default(), clock());
    let report = run(
        &ecs,
        &sns,
        &clock,
        &[("ECS_RERUN_DRY_RUN", "true")],
        "03-fargate-capacity.json",
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, Outcome::WouldRetry);
    assert!(ecs.requests().is_empty());
    assert_eq!(sns.sent()[0].attributes["outcome"], "would_retry");
}

#[tokio::test]
async fn ignored_events_do_nothing() {
    for file in [
        "08-own-retry.json",
        "09-successful-runtask.json",
        "10-not-runtask.json",
    ] {
        let (ecs, sns, clock) = (FakeEcs::default(), FakeSns::default(), clock());
        let report = run(&ecs, &sns, &clock, &[], file).await.unwrap();
        assert_eq!(report.outcome, Outcome::Ignored, "{file}");
        assert!(ecs.requests().is_empty() && sns.sent().is_empty(), "{file}");
    }
}

#[tokio::test]
async fn malformed_event_fails_with_the_field_named() {
    let text =
        std::fs::read_to_string(common::repo_path("tests/fixtures/malformed-event.json")).unwrap();
    let event: Value = serde_json::from_str(&text).unwrap();
    let (ecs, sns, clock) = (FakeEcs::default(), FakeSns::default(), clock());
    let err = handler(&ecs, &sns, &clock, &[])
        .handle(event.clone(), &local())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("detail.requestParameters.count"),
        "{err}"
    );
}

#[tokio::test]
async fn retries_carry_the_original_event_id_and_the_users_tags() {
    let (ecs, sns, clock) = (FakeEcs::default(), FakeSns::default(), clock());
    let event = event("01-agent-ec2.json");
    handler(&ecs, &sns, &clock, &[])
        .handle(event.clone(), &local())
        .await
        .unwrap();
    let sent = &ecs.requests()[0];
    assert_eq!(
        tag(sent, EVENT_ID_TAG),
        event.pointer("/detail/eventID").and_then(Value::as_str)
    );
    assert_eq!(tag(sent, "team"), Some("data"));
}

trait NowPlus {
    fn now_plus(&self, d: Duration) -> SystemTime;
}

impl NowPlus for FakeClock {
    fn now_plus(&self, d: Duration) -> SystemTime {
        ecs_rerun::clock::Clock::now(self) + d
    }
}

#[tokio::test]
async fn every_sample_event_has_its_expected_dry_run_outcome() {
    let text = std::fs::read_to_string(common::repo_path("events/expected.json")).unwrap();
    let expected: std::collections::BTreeMap<String, Value> = serde_json::from_str(&text).unwrap();
    let files: Vec<_> = std::fs::read_dir(common::repo_path("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json") && n != "expected.json")
        .collect();
    assert_eq!(
        files.len(),
        expected.len(),
        "every event file has an expectation and vice versa"
    );
    for file in files {
        let (ecs, sns, clock) = (FakeEcs::default(), FakeSns::default(), clock());
        let report = run(&ecs, &sns, &clock, &[("ECS_RERUN_DRY_RUN", "true")], &file)
            .await
            .unwrap();
        let outcome = serde_json::to_value(report.outcome).unwrap();
        assert_eq!(outcome, expected[&file]["dry_run"], "{file}");
        assert!(
            ecs.requests().is_empty(),
            "{file}: a dry run launches nothing"
        );
    }
}
