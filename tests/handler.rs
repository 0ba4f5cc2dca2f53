//! The retry loop end to end through the ports, with fakes for ECS, SNS and the clock.
//! Each test reads like a scenario an operator would recognise, and counts what an operator
//! cares about: the tasks that exist in ECS (the fake keeps ECS's token table, so a request
//! that ECS would deduplicate starts nothing), and the notifications sent.

mod common;

use std::time::{Duration, SystemTime};

use common::{
    Answer, FakeClock, FakeEcs, FakeQueue, FakeSns, NOW, World, config, error, event, fail, tag,
};
use ecs_rerun::core::launch::LaunchResult;
use ecs_rerun::core::marks::{ATTEMPT_TAG, CALL_TAG, TOKEN_PREFIX};
use ecs_rerun::core::outcome::Outcome;
use ecs_rerun::core::request::RunTaskRequest;
use ecs_rerun::handler::{Handler, HandlerError, Invocation, Report};
use serde_json::{Value, json};

impl World {
    fn handler(&self, extra: &[(&str, &str)]) -> Handler<FakeEcs, FakeSns, FakeClock> {
        Handler::new(
            config(extra),
            self.ecs.clone(),
            self.sns.clone(),
            self.clock.clone(),
        )
    }

    /// Handles `event` as a local invocation with this configuration.
    async fn handle(&self, extra: &[(&str, &str)], event: Value) -> Result<Report, HandlerError> {
        self.handler(extra)
            .handle(event, &Invocation::default())
            .await
    }

    /// Handles `event` with the default configuration; it must not fail.
    async fn run(&self, event: Value) -> Report {
        self.handle(&[], event).await.expect("handled")
    }
}

/// A sample event, recorded `ago` before the fakes' clock.
fn recorded(file: &str, ago: Duration) -> Value {
    let mut e = event(file);
    let at = utc(NOW - ago.as_secs());
    e["detail"]["eventTime"] = json!(at);
    e["time"] = json!(at);
    e
}

/// A time as CloudTrail writes it.
fn utc(epoch_secs: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from(SystemTime::UNIX_EPOCH + Duration::from_secs(epoch_secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A sample event recorded a minute ago.
fn fresh(file: &str) -> Value {
    recorded(file, Duration::from_secs(60))
}

/// The recorded request of an event, as ECS would receive it from its caller.
fn request_of(event: &Value) -> RunTaskRequest {
    serde_json::from_value(event["detail"]["requestParameters"].clone()).expect("request")
}

/// Sample 05 (a ServerException with a recorded token) turned into a throttled record.
fn throttled_with_token() -> Value {
    let mut e = fresh("05-server-exception.json");
    e["detail"]["errorCode"] = json!("ThrottlingException");
    e["detail"]["errorMessage"] = json!("Rate exceeded");
    e
}

// ---- the ordinary paths ---------------------------------------------------------------------

#[tokio::test]
async fn agent_three_times_then_gives_up_with_one_notification() {
    let w = World::new(vec![fail("AGENT", 0), fail("AGENT", 0), fail("AGENT", 0)]);
    let report = w.run(fresh("01-agent-ec2.json")).await;

    assert_eq!(report.outcome, Outcome::GaveUp);
    assert_eq!(report.attempts, 3);
    assert_eq!(
        w.ecs.requests().len(),
        3,
        "never more calls than configured"
    );
    assert_eq!(w.ecs.tasks_started(), 0);
    let attempts: Vec<_> = w
        .ecs
        .requests()
        .iter()
        .map(|r| tag(r, ATTEMPT_TAG).unwrap_or("none").to_owned())
        .collect();
    assert_eq!(
        attempts,
        ["1", "2", "3"],
        "the tag holds the attempt number"
    );
    let tokens: std::collections::HashSet<_> = w
        .ecs
        .requests()
        .iter()
        .map(|r| r.client_token.clone())
        .collect();
    assert_eq!(tokens.len(), 3, "each answered attempt gets the next token");
    let sent = w.sns.sent();
    assert_eq!(sent.len(), 1, "exactly one notification per episode");
    assert_eq!(sent[0].attributes["outcome"], "gave_up");
    assert!(
        sent[0].subject.contains("nightly-report") && sent[0].subject.contains("batch"),
        "{}",
        sent[0].subject
    );
    // An agent needs tens of seconds, and the waits grow: each at least half of
    // 30 s * 2^(n-1), capped at 120 s (AGENT's schedule, equal jitter).
    let sleeps = w.clock.sleeps();
    assert_eq!(sleeps.len(), 3);
    for (n, wait) in sleeps.iter().enumerate() {
        let step = Duration::from_secs(30 * 2u64.pow(n as u32)).min(Duration::from_secs(120));
        assert!(
            *wait >= step / 2 && *wait <= step,
            "call {}: {wait:?} outside [{:?}, {step:?}]",
            n + 1,
            step / 2
        );
    }
}

#[tokio::test]
async fn partial_start_retries_only_the_missing_tasks_until_all_run() {
    // 5 requested, 2 started originally; the first retry places 1 of 3, the second the last 2.
    let w = World::new(vec![fail("RESOURCE:MEMORY", 1)]);
    let report = w.run(fresh("02-resource-memory-partial.json")).await;

    assert_eq!(report.outcome, Outcome::Recovered);
    let counts: Vec<_> = w.ecs.requests().iter().map(|r| r.count).collect();
    assert_eq!(
        counts,
        [Some(3), Some(2)],
        "count = requested - started, never the number of failures"
    );
    assert_eq!(w.ecs.tasks_started(), 3);
    assert_eq!(report.tasks_started, 3);
    assert!(
        w.sns.sent().is_empty(),
        "a recovery is logged, not notified"
    );
    assert!(report.recovery_ms.is_some());
}

#[tokio::test]
async fn recovery_is_notified_when_configured() {
    let w = World::new(vec![]);
    let report = w
        .handle(
            &[("ECS_RERUN_NOTIFY_ON_RECOVERY", "true")],
            fresh("01-agent-ec2.json"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Recovered);
    assert_eq!(w.sns.sent().len(), 1);
    assert_eq!(w.sns.sent()[0].attributes["outcome"], "recovered");
}

#[tokio::test]
async fn the_chat_format_changes_the_body_only() {
    let text = World::new(vec![]);
    text.run(fresh("06-attribute.json")).await;
    let chat = World::new(vec![]);
    chat.handle(
        &[("ECS_RERUN_NOTIFICATION_FORMAT", "chat")],
        fresh("06-attribute.json"),
    )
    .await
    .unwrap();
    let (text, chat) = (&text.sns.sent()[0], &chat.sns.sent()[0]);
    assert_eq!(chat.subject, text.subject);
    assert_eq!(chat.attributes, text.attributes);
    let body: Value = serde_json::from_str(&chat.body).expect("JSON");
    assert_eq!(
        (&body["version"], &body["source"]),
        (&json!("1.0"), &json!("custom"))
    );
    assert!(serde_json::from_str::<Value>(&text.body).unwrap()["summary"].is_string());
}

#[tokio::test]
async fn permanent_failure_on_a_retry_stops_and_notifies() {
    let w = World::new(vec![fail("ATTRIBUTE", 0)]);
    let report = w.run(fresh("01-agent-ec2.json")).await;
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert_eq!(report.attempts, 1);
    assert_eq!(w.sns.sent().len(), 1);
    assert_eq!(w.sns.sent()[0].attributes["reason_class"], "permanent");
}

#[tokio::test]
async fn permanent_and_not_replayable_failures_notify_without_launching() {
    for (file, class) in [
        ("06-attribute.json", "permanent"),
        ("07-redacted-environment.json", "not_replayable"),
    ] {
        let w = World::new(vec![]);
        let report = w.run(fresh(file)).await;
        assert_eq!(report.outcome, Outcome::NotRetryable, "{file}");
        assert!(w.ecs.requests().is_empty(), "{file}: nothing launched");
        assert_eq!(w.sns.sent().len(), 1, "{file}");
        assert_eq!(w.sns.sent()[0].attributes["reason_class"], class, "{file}");
    }
}

#[tokio::test]
async fn redacted_environment_is_replayed_without_it_when_the_operator_opts_in() {
    let w = World::new(vec![]);
    let report = w
        .handle(
            &[("ECS_RERUN_REPLAY_REDACTED_ENV", "true")],
            fresh("07-redacted-environment.json"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Recovered);
    let sent = &w.ecs.requests()[0];
    assert!(!sent.environment_redacted());
    let container = &sent
        .overrides
        .as_ref()
        .and_then(|o| o.container_overrides.as_ref())
        .expect("container overrides")[0];
    assert!(
        container.environment.is_none() && container.command.is_some(),
        "environment dropped, command kept"
    );
}

#[tokio::test]
async fn publishing_failure_fails_the_invocation() {
    let mut w = World::new(vec![]);
    w.sns = FakeSns::failing();
    let err = w.handle(&[], fresh("06-attribute.json")).await.unwrap_err();
    assert!(matches!(err, HandlerError::Publish(_)), "{err}");
    assert!(
        err.to_string().contains("sns:Publish"),
        "the message says what to check: {err}"
    );
}

#[tokio::test]
async fn retries_carry_the_call_tag_and_the_users_tags() {
    let w = World::new(vec![]);
    w.run(fresh("01-agent-ec2.json")).await;
    let sent = &w.ecs.requests()[0];
    let recorded = request_of(&fresh("01-agent-ec2.json"));
    assert_eq!(
        tag(sent, CALL_TAG),
        recorded.client_token.as_deref(),
        "the call tag names the recorded token"
    );
    assert_eq!(tag(sent, "team"), Some("data"));
    assert!(
        sent.client_token
            .as_deref()
            .is_some_and(|t| t.starts_with(TOKEN_PREFIX))
    );
}

#[tokio::test]
async fn deadline_too_close_gives_up_early_and_notifies() {
    let w = World::new(vec![fail("AGENT", 0), fail("AGENT", 0), fail("AGENT", 0)]);
    // 60 s left: call 1 (10–20 s wait) fits with the 25 s reserve, call 3 (40–80 s) cannot.
    let invocation = Invocation {
        deadline: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW + 60)),
        own_account: None,
    };
    let report = w
        .handler(&[])
        .handle(fresh("01-agent-ec2.json"), &invocation)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::GaveUp);
    assert!(
        (1..3).contains(&report.attempts),
        "at least one call made, and stopped before the deadline: {}",
        report.attempts
    );
    assert!(report.reason.contains("deadline"), "{}", report.reason);
    assert_eq!(w.sns.sent().len(), 1);
    let total: Duration = w.clock.sleeps().iter().sum();
    assert!(
        total + ecs_rerun::core::plan::Policy::default().deadline_reserve
            <= Duration::from_secs(60),
        "never slept into the reserve"
    );
}

#[tokio::test]
async fn ignored_events_do_nothing() {
    for file in [
        "08-own-retry.json",
        "09-successful-runtask.json",
        "10-not-runtask.json",
    ] {
        let w = World::new(vec![]);
        let report = w.run(fresh(file)).await;
        assert_eq!(report.outcome, Outcome::Ignored, "{file}");
        assert!(
            w.ecs.requests().is_empty() && w.sns.sent().is_empty(),
            "{file}"
        );
    }
}

#[tokio::test]
async fn malformed_event_fails_with_the_field_named() {
    let text =
        std::fs::read_to_string(common::repo_path("tests/fixtures/malformed-event.json")).unwrap();
    let event: Value = serde_json::from_str(&text).unwrap();
    let w = World::new(vec![]);
    let err = w.handle(&[], event).await.unwrap_err();
    assert!(
        err.to_string().contains("detail.requestParameters.count"),
        "{err}"
    );
}

// ---- never twice: API-error records ---------------------------------------------------------

#[tokio::test]
async fn throttled_record_whose_callers_retry_succeeded_starts_nothing() {
    let record = throttled_with_token();
    let w = World::new(vec![]);
    // The caller's SDK retried the throttled call with the same token, and it went through.
    assert!(matches!(
        w.ecs.caller_calls(&request_of(&record)),
        LaunchResult::Placed { .. }
    ));
    w.clock.advance(Duration::from_secs(30));
    let report = w.run(record.clone()).await;

    assert_eq!(w.ecs.tasks_started(), 1, "the job runs once");
    assert_eq!(report.outcome, Outcome::AlreadyStarted);
    assert_eq!(report.tasks_started, 0, "no claim of a rescue");
    assert_eq!(
        w.ecs.requests(),
        [request_of(&record)],
        "the first re-issue is the very same call: token, referenceId, count, no tag"
    );
}

#[tokio::test]
async fn api_error_record_whose_call_never_went_through_is_started_by_the_exact_replay() {
    let record = throttled_with_token();
    let w = World::new(vec![error("ThrottlingException")]);
    let report = w.run(record.clone()).await;
    assert_eq!(report.outcome, Outcome::Recovered);
    assert_eq!(w.ecs.tasks_started(), 1);
    let requests = w.ecs.requests();
    assert_eq!(requests.len(), 2, "throttled, then sent again");
    assert!(
        requests.iter().all(|r| *r == request_of(&record)),
        "a throttled try is resent unchanged: same token, same request"
    );
}

#[tokio::test]
async fn exact_replay_answered_with_failures_goes_on_with_own_tokens_and_tags() {
    let record = fresh("05-server-exception.json");
    let w = World::new(vec![fail("Capacity is unavailable at this time", 0)]);
    let report = w.run(record.clone()).await;
    assert_eq!(report.outcome, Outcome::Recovered);
    let requests = w.ecs.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0], request_of(&record));
    assert_eq!(tag(&requests[0], ATTEMPT_TAG), None);
    assert_eq!(tag(&requests[1], ATTEMPT_TAG), Some("1"));
    assert!(
        requests[1]
            .client_token
            .as_deref()
            .is_some_and(|t| t.starts_with(TOKEN_PREFIX))
    );
    assert_eq!(w.ecs.tasks_started(), 1);
}

#[tokio::test]
async fn throttled_record_without_token_whose_callers_retry_succeeded_starts_nothing() {
    let record = fresh("04-throttling.json");
    let w = World::new(vec![]);
    // An SDK from before 2023-11 retried without a token, and the task started.
    w.clock.advance(Duration::from_secs(1));
    w.ecs.caller_calls(&request_of(&record));
    let report = w.run(record).await;
    assert_eq!(report.outcome, Outcome::AlreadyStarted);
    assert_eq!(w.ecs.tasks_started(), 1, "the job runs once");
    assert!(w.ecs.requests().is_empty(), "no RunTask at all");
    assert_eq!(w.ecs.lookups(), 1);
}

#[tokio::test]
async fn throttled_record_without_token_is_rerun_when_nothing_started() {
    let record = fresh("04-throttling.json");
    let w = World::new(vec![]);
    // A task of the same family but another job (other command) does not count.
    let mut other = request_of(&record);
    other.overrides = None;
    w.clock.advance(Duration::from_secs(1));
    w.ecs.caller_calls(&other);
    let report = w.run(record).await;
    assert_eq!(report.outcome, Outcome::Recovered);
    assert_eq!(
        w.ecs.tasks_started(),
        2,
        "the other job's task and the rerun one"
    );
    assert_eq!(w.ecs.requests().len(), 1);
}

#[tokio::test]
async fn a_failed_lookup_notifies_instead_of_guessing() {
    let mut w = World::new(vec![]);
    w.ecs = w.ecs.clone().failing_lookups();
    let report = w.run(fresh("04-throttling.json")).await;
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert!(w.ecs.requests().is_empty());
    assert_eq!(w.sns.sent().len(), 1);
    assert!(
        report.reason.contains("could not check"),
        "{}",
        report.reason
    );
}

#[tokio::test]
async fn server_error_after_start_is_resent_with_the_same_token_and_starts_once() {
    let w = World::new(vec![Answer::ServerErrorAfterStart]);
    let report = w.run(fresh("01-agent-ec2.json")).await;
    assert_eq!(report.outcome, Outcome::Recovered, "{}", report.reason);
    assert_eq!(w.ecs.tasks_started(), 1);
    let requests = w.ecs.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0], requests[1],
        "same token needs identical parameters"
    );
}

#[tokio::test]
async fn lost_answer_is_resent_with_the_same_token_and_starts_nothing_twice() {
    let w = World::new(vec![Answer::Lost]);
    let report = w.run(fresh("02-resource-memory-partial.json")).await;
    assert_eq!(report.outcome, Outcome::Recovered);
    assert_eq!(w.ecs.requests().len(), 2);
    assert_eq!(
        w.ecs.tasks_started(),
        3,
        "the 3 missing tasks, once, although the first answer was lost"
    );
}

#[tokio::test]
async fn when_no_answer_said_whether_the_task_started_the_notification_says_it_may_have() {
    // (case, what ECS answers ecs-rerun's calls, the record)
    let cases = [
        (
            "every call got a 5xx",
            vec![
                error("ServerException"),
                error("ServerException"),
                error("ServerException"),
            ],
            "01-agent-ec2.json",
        ),
        (
            "an answer lost after the start, then throttles on the same token",
            vec![
                Answer::Lost,
                error("ThrottlingException"),
                error("ThrottlingException"),
            ],
            "01-agent-ec2.json",
        ),
        (
            // The first replay is the recorded call's second chance, not one of the job's
            // three attempts: four calls.
            "the recorded call got a 5xx; every exact replay is throttled",
            vec![
                error("ThrottlingException"),
                error("ThrottlingException"),
                error("ThrottlingException"),
                error("ThrottlingException"),
            ],
            "05-server-exception.json",
        ),
    ];
    for (case, answers, file) in cases {
        let w = World::new(answers);
        let report = w.run(fresh(file)).await;
        assert_eq!(report.outcome, Outcome::GaveUp, "{case}");
        let note = &w.sns.sent()[0];
        assert!(
            note.subject.contains("may have started"),
            "{case}: {}",
            note.subject
        );
        assert!(
            !note.body.contains("still missing"),
            "{case}: {}",
            note.body
        );
        let token = w.ecs.requests()[2].client_token.clone().unwrap_or_default();
        assert!(
            note.body.contains(&token),
            "{case}: names the token to check"
        );
    }
}

// ---- never twice: several records, several deliveries ---------------------------------------

/// One SDK call with a token, count 2: throttled once (record A), then answered 200 with one
/// task placed and one failure (record B). Both records reach ecs-rerun.
fn one_call_two_records() -> (World, Value, Value) {
    let mut failures_record = fresh("02-resource-memory-partial.json");
    let d = &mut failures_record["detail"];
    d["requestParameters"]["count"] = json!(2);
    d["requestParameters"]["clientToken"] = json!("caller-token-1");
    let w = World::new(vec![fail("RESOURCE:MEMORY", 1)]);
    let placed = w.ecs.caller_calls(&request_of(&failures_record));
    let LaunchResult::Placed { tasks, .. } = placed else {
        panic!("the caller's call was answered {placed:?}");
    };
    failures_record["detail"]["responseElements"] = json!({
        "tasks": tasks.iter().map(|t| json!({"taskArn": t.arn})).collect::<Vec<_>>(),
        "failures": [{"reason": "RESOURCE:MEMORY"}],
    });
    let mut throttled = failures_record.clone();
    let d = &mut throttled["detail"];
    d["eventID"] = json!("00000000-aaaa-4000-8000-000000000001");
    d["errorCode"] = json!("ThrottlingException");
    d["errorMessage"] = json!("Rate exceeded");
    d["responseElements"] = Value::Null;
    w.clock.advance(Duration::from_secs(5));
    (w, throttled, failures_record)
}

#[tokio::test]
async fn both_records_of_one_call_make_the_same_attempts_and_end_alike() {
    // Capacity stays out for two attempts. The throttled record's episode replays the call
    // first; the replay is not one of the job's attempts, so it sends the same three own tokens
    // as the final record's episode. It used to give up after two, telling the operator to
    // start the task by hand, while the other episode's third attempt started it.
    let (w, throttled, failures) = one_call_two_records();
    w.ecs
        .answer_next(vec![fail("RESOURCE:MEMORY", 0), fail("RESOURCE:MEMORY", 0)]);
    let handler = w.handler(&[]).with_store(w.store.clone());
    let invocation = Invocation::default();
    let a = handler.handle(throttled, &invocation).await.unwrap();
    let b = handler.handle(failures, &invocation).await.unwrap();
    assert_eq!(
        (a.outcome, b.outcome),
        (Outcome::Recovered, Outcome::AlreadyStarted),
        "{} / {}",
        a.reason,
        b.reason
    );
    assert!(
        w.sns.sent().is_empty(),
        "nobody is told to start it by hand"
    );
}

#[tokio::test]
async fn throttled_record_then_final_record_of_one_call_start_the_missing_task_once() {
    let (w, throttled, failures) = one_call_two_records();
    let first = w.run(throttled).await;
    let second = w.run(failures).await;
    assert_eq!(
        w.ecs.tasks_started(),
        2,
        "the caller's task and the one missing task, once"
    );
    assert_eq!(first.outcome, Outcome::Recovered);
    assert_eq!(second.outcome, Outcome::AlreadyStarted);
}

#[tokio::test]
async fn final_record_then_throttled_record_of_one_call_start_the_missing_task_once() {
    let (w, throttled, failures) = one_call_two_records();
    let first = w.run(failures).await;
    let second = w.run(throttled).await;
    assert_eq!(w.ecs.tasks_started(), 2);
    assert_eq!(first.outcome, Outcome::Recovered);
    assert_eq!(second.outcome, Outcome::AlreadyStarted);
}

#[tokio::test]
async fn duplicate_delivery_starts_the_tasks_once() {
    let w = World::new(vec![]);
    let record = fresh("02-resource-memory-partial.json");
    let first = w.run(record.clone()).await;
    let second = w.run(record).await;
    assert_eq!(first.outcome, Outcome::Recovered);
    assert_eq!(
        second.outcome,
        Outcome::AlreadyStarted,
        "the second delivery finds the first one's tasks"
    );
    assert_eq!(w.ecs.tasks_started(), 3, "the 3 missing tasks, once");
}

#[tokio::test]
async fn duplicate_delivery_where_only_the_first_met_a_throttle_starts_once() {
    let w = World::new(vec![error("ThrottlingException")]);
    let record = fresh("01-agent-ec2.json");
    let first = w.run(record.clone()).await;
    let second = w.run(record).await;
    assert_eq!(first.outcome, Outcome::Recovered);
    assert_eq!(second.outcome, Outcome::AlreadyStarted);
    assert_eq!(
        w.ecs.tasks_started(),
        1,
        "a throttled try does not move the token on, so both deliveries send the same one"
    );
}

#[tokio::test]
async fn conflict_naming_tasks_counts_them_as_started() {
    // The caller's call carried a reserved aws: tag, which ecs-rerun cannot send: its exact
    // replay differs, and ECS answers ConflictException naming the task the caller started.
    let mut record = throttled_with_token();
    record["detail"]["requestParameters"]["tags"] =
        json!([{"key": "aws:cloudformation:stack-name", "value": "jobs"}]);
    let w = World::new(vec![]);
    w.ecs.caller_calls(&request_of(&record));
    w.clock.advance(Duration::from_secs(30));
    let report = w.run(record).await;
    assert_eq!(report.outcome, Outcome::AlreadyStarted);
    assert_eq!(w.ecs.tasks_started(), 1);
}

#[tokio::test]
async fn conflict_naming_no_task_is_notified_not_guessed() {
    let mut record = throttled_with_token();
    record["detail"]["requestParameters"]["tags"] =
        json!([{"key": "aws:cloudformation:stack-name", "value": "jobs"}]);
    let w = World::new(vec![fail("Capacity is unavailable at this time", 0)]);
    // The caller's retry got an answer with failures only: the token holds no task.
    w.ecs.caller_calls(&request_of(&record));
    let report = w.run(record).await;
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert_eq!(w.ecs.tasks_started(), 0);
    assert_eq!(w.ecs.requests().len(), 1, "one try, then a notification");
    assert_eq!(w.sns.sent().len(), 1);
}

// ---- whose records, and how old --------------------------------------------------------------

#[tokio::test]
async fn a_call_by_the_functions_own_session_is_ignored_without_tag_or_prefix() {
    let mut record = fresh("01-agent-ec2.json");
    record["detail"]["userIdentity"]["arn"] =
        json!("arn:aws:sts::111122223333:assumed-role/ecs-rerun-role/ecs-rerun-prod");
    let w = World::new(vec![]);
    let report = w
        .handle(
            &[("AWS_LAMBDA_FUNCTION_NAME", "ecs-rerun-prod")],
            record.clone(),
        )
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Ignored);
    assert!(w.ecs.requests().is_empty() && w.sns.sent().is_empty());

    // Another function's session is not ecs-rerun's.
    let report = w
        .handle(&[("AWS_LAMBDA_FUNCTION_NAME", "ecs-rerun-dev")], record)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Recovered);
}

#[tokio::test]
async fn a_three_day_old_record_is_notified_not_rerun() {
    let w = World::new(vec![]);
    let report = w
        .run(recorded(
            "01-agent-ec2.json",
            Duration::from_secs(3 * 86_400),
        ))
        .await;
    assert_eq!(report.outcome, Outcome::Stale);
    assert!(w.ecs.requests().is_empty(), "no RunTask");
    let sent = w.sns.sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].body.contains("3d 0h old"),
        "says how old: {}",
        sent[0].body
    );
    assert_eq!(sent[0].attributes["outcome"], "stale");

    // Within the configured age it is rerun.
    let w = World::new(vec![]);
    let report = w
        .handle(
            &[("ECS_RERUN_MAX_RECORD_AGE_S", "7200")],
            recorded("01-agent-ec2.json", Duration::from_secs(5400)),
        )
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Recovered);
}

#[tokio::test]
async fn another_accounts_record_is_never_launched_here() {
    let foreign = Invocation {
        deadline: None,
        own_account: Some("999988887777".into()),
    };
    let w = World::new(vec![]);
    let report = w
        .handler(&[])
        .handle(fresh("01-agent-ec2.json"), &foreign)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Ignored, "not an allowed account");
    assert!(w.ecs.requests().is_empty() && w.sns.sent().is_empty());

    let report = w
        .handler(&[("ECS_RERUN_ALLOWED_ACCOUNTS", "111122223333")])
        .handle(fresh("01-agent-ec2.json"), &foreign)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert!(
        w.ecs.requests().is_empty(),
        "never run with this account's role"
    );
    assert!(
        report.reason.contains("no role for account 111122223333"),
        "{}",
        report.reason
    );
    assert_eq!(w.sns.sent().len(), 1);
}

// ---- what the notification says ---------------------------------------------------------------

/// Sample 01 on a cluster of `n` instances, each refusing the task with `reason(i)`.
fn many_instances(
    n: usize,
    reason: impl Fn(usize) -> String,
) -> (Value, Vec<ecs_rerun::core::event::PlacementFailure>) {
    let failures: Vec<_> = (0..n)
        .map(|i| ecs_rerun::core::event::PlacementFailure {
            arn: Some(format!(
                "arn:aws:ecs:us-east-1:111122223333:container-instance/batch/{i:032x}"
            )),
            reason: Some(reason(i)),
            detail: None,
        })
        .collect();
    let mut record = fresh("01-agent-ec2.json");
    record["detail"]["responseElements"]["failures"] = serde_json::to_value(&failures).unwrap();
    (record, failures)
}

#[tokio::test]
async fn nine_hundred_instances_three_times_make_one_notification_that_fits() {
    let (record, failures) = many_instances(900, |_| "RESOURCE:MEMORY".to_owned());
    let answer = || Answer::Place {
        place: 0,
        failures: failures.clone(),
    };
    let w = World::new(vec![answer(), answer(), answer()]);
    let report = w.run(record).await;
    assert_eq!(report.outcome, Outcome::GaveUp);
    let sent = w.sns.sent();
    assert_eq!(
        sent.len(),
        1,
        "published: the fake topic refuses a message over 256 KiB"
    );
    assert!(
        sent[0].body.len() < 32 * 1024,
        "grouped: {} bytes",
        sent[0].body.len()
    );
    assert!(
        sent[0].body.contains("\"count\": 900"),
        "counts the entries"
    );
}

#[tokio::test]
async fn many_long_reasons_are_cut_to_fit_and_say_so() {
    // 40 instances, each refusing with its own 20 KB text: at most 10 distinct texts are kept
    // per answer, and 4 answers of 10 x 20 KB are still over 256 KiB.
    let reason = |i: usize| {
        format!(
            "Capacity is unavailable at this time ({i}): {}",
            "x".repeat(20_000)
        )
    };
    let (record, failures) = many_instances(40, reason);
    let answer = || Answer::Place {
        place: 0,
        failures: failures.clone(),
    };
    let w = World::new(vec![answer(), answer(), answer()]);
    let report = w.run(record).await;
    assert_eq!(report.outcome, Outcome::GaveUp);
    let sent = w.sns.sent();
    assert_eq!(sent.len(), 1, "one notification, under the topic's limit");
    assert!(sent[0].body.contains("\"cut\""), "says what was cut");

    // A topic with a lower MaximumMessageSize gets a message it accepts too.
    let mut w = World::new(vec![answer(), answer(), answer()]);
    w.sns = FakeSns::with_limit(4096);
    let (record, _) = many_instances(40, reason);
    w.run(record).await;
    assert_eq!(w.sns.sent().len(), 1);
}

#[tokio::test]
async fn the_subject_names_the_deciding_failure_not_the_first() {
    let w = World::new(vec![
        fail("RESOURCE:MEMORY", 0),
        fail("RESOURCE:MEMORY", 0),
        fail("RESOURCE:MEMORY", 0),
    ]);
    w.run(fresh("01-agent-ec2.json")).await;
    let subject = &w.sns.sent()[0].subject;
    assert!(subject.contains("RESOURCE:MEMORY"), "{subject}");
    assert!(!subject.contains("AGENT"), "{subject}");
}

// ---- dry run ------------------------------------------------------------------------------------

#[tokio::test]
async fn dry_run_launches_nothing_sleeps_nothing_and_shows_the_schedule() {
    let w = World::new(vec![]);
    let report = w
        .handle(
            &[("ECS_RERUN_DRY_RUN", "true")],
            fresh("03-fargate-capacity.json"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::WouldRetry);
    assert!(w.ecs.requests().is_empty());
    assert!(
        w.clock.sleeps().is_empty(),
        "the schedule is printed, not slept"
    );
    let note = &w.sns.sent()[0];
    assert_eq!(note.attributes["outcome"], "would_retry");
    let body: Value = serde_json::from_str(&note.body).unwrap();
    assert_eq!(
        body["backoff_schedule_ms"].as_array().map(Vec::len),
        Some(3)
    );
}

// ---- never twice: sequences found in review ---------------------------------------------------

/// Turns a record into the throttled try of its call.
fn as_throttled(mut record: Value) -> Value {
    let d = &mut record["detail"];
    d["errorCode"] = json!("ThrottlingException");
    d["errorMessage"] = json!("Rate exceeded");
    d["responseElements"] = Value::Null;
    record
}

#[tokio::test]
async fn untokened_records_of_one_call_across_a_minute_boundary_start_the_job_once() {
    // An SDK without tokens: throttled at 12:00:59 (record T), then answered 200 with a
    // placement failure at 12:01:00 (record F). Their time windows differ, so their tokens do;
    // the look-up that every untokened record gets finds the other episode's task by its tag.
    let w = World::new(vec![]);
    let t = as_throttled(recorded("04-throttling.json", Duration::from_secs(61)));
    let mut f = recorded("04-throttling.json", Duration::from_secs(60));
    f["detail"]["eventID"] = json!("00000000-bbbb-4000-8000-000000000002");
    f["detail"]["errorCode"] = Value::Null;
    f["detail"]["errorMessage"] = Value::Null;
    f["detail"]["responseElements"] =
        json!({"tasks": [], "failures": [{"reason": "RESOURCE:MEMORY"}]});
    assert_ne!(
        (NOW - 61) / 60,
        (NOW - 60) / 60,
        "the two records straddle a window boundary"
    );
    let first = w.run(t).await;
    let second = w.run(f).await;
    assert_eq!(w.ecs.tasks_started(), 1, "one call, one job");
    assert_eq!(
        (first.outcome, second.outcome),
        (Outcome::Recovered, Outcome::AlreadyStarted)
    );
}

#[tokio::test]
async fn a_task_named_by_a_lookup_and_a_conflict_is_counted_once() {
    // Count 2, no token. Delivery 1 places 1 of 2 and gives up, but its notification fails, so
    // Lambda delivers again. Delivery 2 finds that task and resends its first token with count
    // 1: ECS answers ConflictException naming the same task. It must not count it twice.
    let w = World::new(vec![
        fail("RESOURCE:MEMORY", 1),
        fail("RESOURCE:MEMORY", 0),
        fail("RESOURCE:MEMORY", 0),
    ]);
    let mut record = as_throttled(fresh("04-throttling.json"));
    record["detail"]["requestParameters"]["count"] = json!(2);
    let failing = w.with_sns(FakeSns::failing());
    assert!(failing.handle(&[], record.clone()).await.is_err());

    let report = w.run(record).await;
    assert_eq!(w.ecs.tasks_started(), 1, "one of the two tasks runs");
    assert_ne!(report.outcome, Outcome::AlreadyStarted, "{}", report.reason);
    assert_eq!(w.sns.sent().len(), 1, "the missing task is reported");
}

#[tokio::test]
async fn a_later_identical_run_is_not_taken_for_the_callers_retry() {
    // The caller's SDK gave up (every try throttled); CloudTrail delivers the record 10 minutes
    // later, when the next identical run of the job has started. That run is not this one's.
    let w = World::new(vec![]);
    let record = recorded("04-throttling.json", Duration::from_secs(600));
    w.ecs.caller_calls(&request_of(&record));
    let report = w.run(record).await;
    assert_eq!(report.outcome, Outcome::Recovered);
    assert_eq!(
        w.ecs.tasks_started(),
        2,
        "the next run's task and this run's rerun"
    );
}

#[tokio::test]
async fn a_record_that_would_be_too_old_at_its_first_rerun_is_stale() {
    // 3590 s old: within the hour now, but not when the first call would go out after the
    // 15-30 s an agent needs.
    let w = World::new(vec![]);
    let record = recorded("01-agent-ec2.json", Duration::from_secs(3590));
    let report = w.run(record).await;
    assert_eq!(report.outcome, Outcome::Stale);
    assert!(w.ecs.requests().is_empty());
}

#[tokio::test]
async fn an_untokened_server_error_that_started_the_task_before_its_record_is_found() {
    // The 5xx call itself created the task (at NOW) a second before the request completed,
    // which is the record's eventTime.
    let w = World::new(vec![]);
    let mut record = recorded("04-throttling.json", Duration::ZERO);
    w.ecs.caller_calls(&request_of(&record));
    record["detail"]["errorCode"] = json!("ServerException");
    record["detail"]["errorMessage"] = json!("Service Unavailable");
    record["detail"]["eventTime"] = json!(utc(NOW + 1));
    w.clock.advance(Duration::from_secs(120));
    let report = w.run(record).await;
    assert_eq!(
        w.ecs.tasks_started(),
        1,
        "{:?}: {}",
        report.outcome,
        report.reason
    );
    assert_eq!(report.outcome, Outcome::AlreadyStarted);
}

// ---- waiting in the delay queue -----------------------------------------------------------------

/// A world whose function has a delay queue.
struct Queued {
    world: World,
}

impl Queued {
    fn new(answers: Vec<Answer>) -> Self {
        Self {
            world: World::new(answers),
        }
    }

    fn handler(&self, extra: &[(&str, &str)]) -> Handler<FakeEcs, FakeSns, FakeClock, FakeQueue> {
        self.world
            .handler(extra)
            .with_queue(self.world.queue.clone())
    }

    /// Handles the first invocation of an episode.
    async fn begin(&self, handler: &Handler<FakeEcs, FakeSns, FakeClock, FakeQueue>, event: Value) {
        handler
            .handle(event, &Invocation::default())
            .await
            .expect("handled");
    }

    /// Handles the event, then delivers every hop after its delay, as SQS would; returns the
    /// report of each invocation.
    async fn run(&self, extra: &[(&str, &str)], event: Value) -> Vec<Report> {
        let handler = self.handler(extra);
        let first = handler
            .handle(event, &Invocation::default())
            .await
            .expect("handled");
        let mut reports = vec![first];
        reports.extend(self.deliver(&handler, Duration::ZERO).await);
        reports
    }

    /// Runs a copy of the episode of `event` to its end, every hop on time: it must start the
    /// job, whose tasks stop `runs` later.
    async fn recover(
        &self,
        handler: &Handler<FakeEcs, FakeSns, FakeClock, FakeQueue>,
        event: Value,
        runs: Duration,
    ) {
        self.begin(handler, event).await;
        let reports = self.deliver(handler, Duration::ZERO).await;
        assert_eq!(reports.last().map(|r| r.outcome), Some(Outcome::Recovered));
        self.world.clock.advance(runs);
        self.world.ecs.stop_all();
    }

    /// Moves the clock on to `at` after the record of a [`fresh`] event.
    fn to_after_record(&self, at: Duration) {
        let since_record = self.world.clock.now_since_start() + Duration::from_secs(60);
        self.world.clock.advance(at - since_record);
    }

    /// Delivers every hop, each `late` after its delay; returns the report of each.
    async fn deliver(
        &self,
        handler: &Handler<FakeEcs, FakeSns, FakeClock, FakeQueue>,
        late: Duration,
    ) -> Vec<Report> {
        let mut reports = Vec::new();
        for _ in 0..20 {
            let Some((body, delay)) = self.world.queue.pop() else {
                return reports;
            };
            self.world.clock.advance(delay + late);
            reports.push(
                handler
                    .handle_message(&body, &Invocation::default())
                    .await
                    .expect("hop handled"),
            );
        }
        panic!("more than 20 hops: {reports:?}");
    }
}

#[tokio::test]
async fn with_a_queue_a_long_wait_holds_no_invocation() {
    // RESOURCE:MEMORY waits minutes: every wait goes to the queue, nothing sleeps.
    let q = Queued::new(vec![fail("RESOURCE:MEMORY", 0), fail("RESOURCE:MEMORY", 0)]);
    let reports = q.run(&[], fresh("02-resource-memory-partial.json")).await;
    let outcomes: Vec<_> = reports.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Waiting,
            Outcome::Waiting,
            Outcome::Waiting,
            Outcome::Recovered
        ],
        "one call per invocation, each after a wait in the queue"
    );
    assert!(q.world.clock.sleeps().is_empty(), "no invocation slept");
    assert_eq!(q.world.ecs.tasks_started(), 3);
    assert!(q.world.sns.sent().is_empty());
}

#[tokio::test]
async fn capacity_waits_add_up_to_at_least_fifteen_minutes() {
    let q = Queued::new(vec![
        fail("RESOURCE:MEMORY", 0),
        fail("RESOURCE:MEMORY", 0),
        fail("RESOURCE:MEMORY", 0),
    ]);
    let (handler, invocation) = (q.handler(&[]), Invocation::default());
    q.begin(&handler, fresh("02-resource-memory-partial.json"))
        .await;
    let mut waited = Duration::ZERO;
    while let Some((body, delay)) = q.world.queue.pop() {
        waited += delay;
        q.world.clock.advance(delay);
        handler.handle_message(&body, &invocation).await.unwrap();
    }
    assert!(
        waited >= Duration::from_secs(15 * 60),
        "three capacity waits: {waited:?}"
    );
    assert_eq!(q.world.sns.sent()[0].attributes["outcome"], "gave_up");
}

#[tokio::test]
async fn short_waits_stay_in_the_invocation() {
    // Throttling needs seconds: the retry is made in the same invocation.
    let q = Queued::new(vec![error("ThrottlingException")]);
    let reports = q.run(&[], throttled_with_token()).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].outcome, Outcome::Recovered);
    assert_eq!(q.world.ecs.tasks_started(), 1);
}

#[tokio::test]
async fn a_redelivered_hop_repeats_the_same_call_and_starts_nothing_twice() {
    let q = Queued::new(vec![fail("AGENT", 0)]);
    let (handler, invocation) = (q.handler(&[]), Invocation::default());
    q.begin(&handler, fresh("01-agent-ec2.json")).await;
    let (first_hop, delay) = q
        .world
        .queue
        .pop()
        .expect("the first call waits in the queue");
    q.world.clock.advance(delay);
    // SQS delivers the same message twice (or the invocation failed after its call).
    handler
        .handle_message(&first_hop, &invocation)
        .await
        .unwrap();
    handler
        .handle_message(&first_hop, &invocation)
        .await
        .unwrap();
    while let Some((body, delay)) = q.world.queue.pop() {
        q.world.clock.advance(delay);
        handler.handle_message(&body, &invocation).await.unwrap();
    }
    assert_eq!(
        q.world.ecs.tasks_started(),
        1,
        "one task, however often a hop comes"
    );
    let tokens: Vec<_> = q
        .world
        .ecs
        .requests()
        .iter()
        .map(|r| r.client_token.clone())
        .collect();
    assert_eq!(
        tokens[0], tokens[1],
        "the repeated call resent the same token"
    );
}

#[tokio::test]
async fn a_wait_longer_than_fifteen_minutes_is_chained() {
    let rules = r#"[{"onReason": "AGENT", "action": "retry", "IntervalSeconds": 1500,
                    "MaxDelaySeconds": 1500, "JitterStrategy": "NONE"}]"#;
    let q = Queued::new(vec![]);
    let reports = q
        .run(&[("ECS_RERUN_RULES", rules)], fresh("01-agent-ec2.json"))
        .await;
    let outcomes: Vec<_> = reports.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Waiting, Outcome::Waiting, Outcome::Recovered],
        "900 s, then the remaining 600 s, then the call"
    );
    assert_eq!(
        q.world.ecs.requests().len(),
        1,
        "the chained leg made no call"
    );
    assert_eq!(
        q.world.clock.now_since_start(),
        Duration::from_secs(1500),
        "the call went out after the whole wait, not before"
    );
}

#[tokio::test]
async fn a_hop_on_schedule_is_not_judged_by_the_records_age() {
    // The record's age limit applies when an episode begins; a hop on schedule that comes after
    // it (a long wait) still makes its call with its own, new tokens.
    let rules = r#"[{"onReason": "AGENT", "action": "retry", "IntervalSeconds": 900,
                    "MaxDelaySeconds": 900, "JitterStrategy": "NONE"}]"#;
    let q = Queued::new(vec![fail("AGENT", 0)]);
    let reports = q
        .run(
            &[
                ("ECS_RERUN_RULES", rules),
                ("ECS_RERUN_MAX_RECORD_AGE_S", "1000"),
            ],
            recorded("01-agent-ec2.json", Duration::from_secs(60)),
        )
        .await;
    assert_eq!(reports.last().map(|r| r.outcome), Some(Outcome::Recovered));
    assert_eq!(q.world.ecs.tasks_started(), 1);
}

#[tokio::test]
async fn a_hop_redriven_after_ecs_forgot_its_token_does_not_start_the_job_again() {
    // The delayed call went out and started the job; the invocation then failed (the store was
    // down, say), its message ended in the dead-letter queue, and the operator redrove it the
    // next morning. The job had finished long before, and ECS has forgotten its token.
    let rules = r#"[{"onReason": "AGENT", "action": "retry", "IntervalSeconds": 900,
                    "MaxDelaySeconds": 900, "JitterStrategy": "NONE"}]"#;
    let q = Queued::new(vec![]);
    let handler = q.handler(&[("ECS_RERUN_RULES", rules)]);
    let invocation = Invocation::default();
    q.begin(&handler, fresh("01-agent-ec2.json")).await;
    let (body, delay) = q
        .world
        .queue
        .pop()
        .expect("the first call waits in the queue");
    q.world.clock.advance(delay);
    let first = handler.handle_message(&body, &invocation).await.unwrap();
    assert_eq!(first.outcome, Outcome::Recovered);

    // A duplicate within the hour: ECS still knows the token and answers with the same task.
    q.world.clock.advance(Duration::from_secs(20 * 60));
    q.world.ecs.stop_all();
    let duplicate = handler.handle_message(&body, &invocation).await.unwrap();
    assert_eq!(
        duplicate.outcome,
        Outcome::AlreadyStarted,
        "{}",
        duplicate.reason
    );
    assert_eq!(q.world.ecs.tasks_started(), 1);

    // The redrive, ten hours after it was due: not sent, notified.
    q.world.clock.advance(Duration::from_secs(10 * 3600));
    let redriven = handler.handle_message(&body, &invocation).await.unwrap();
    assert_eq!(redriven.outcome, Outcome::Stale, "{}", redriven.reason);
    assert_eq!(q.world.ecs.tasks_started(), 1, "the job ran once");
    let sent = q.world.sns.sent();
    assert_eq!(sent.len(), 1, "the operator hears of it once");
    assert_eq!(sent[0].attributes["outcome"], "stale");
    assert!(
        sent[0]
            .body
            .contains("1 may have started: check task ARNs / token ecs-rerun-"),
        "the notice does not say the job ran, nor that it is missing: {}",
        sent[0].body
    );
    assert!(
        redriven
            .reason
            .contains("this copy of the episode runs 10h 21m behind its schedule"),
        "{}",
        redriven.reason
    );
}

#[tokio::test]
async fn a_copy_of_an_episode_that_runs_behind_the_other_does_not_start_the_job_again() {
    // Delivery A of the event runs on time and starts the job with its second token. Delivery
    // B comes 54 minutes after the record (within the age limit), and its hops come 8 minutes
    // late each: it would send A's tokens more than an hour after A did, when ECS has
    // forgotten them.
    let rules = r#"[{"onReason": "AGENT", "action": "retry", "IntervalSeconds": 300,
                    "MaxDelaySeconds": 300, "JitterStrategy": "NONE"}]"#;
    let q = Queued::new(vec![fail("AGENT", 0)]);
    let handler = q.handler(&[("ECS_RERUN_RULES", rules)]);
    let record = fresh("01-agent-ec2.json");
    q.recover(&handler, record.clone(), Duration::from_secs(60))
        .await;
    q.to_after_record(Duration::from_secs(54 * 60));
    q.begin(&handler, record).await;
    let b = q.deliver(&handler, Duration::from_secs(8 * 60)).await;
    let last = b.last().expect("B waited in the queue");
    assert_eq!(
        q.world.ecs.tasks_started(),
        1,
        "{:?}: {}",
        last.outcome,
        last.reason
    );
    assert_eq!(last.outcome, Outcome::Stale);
}

#[tokio::test]
async fn a_late_copy_that_stops_stale_does_not_silence_the_copy_still_running() {
    // With the launch store each episode notifies once. A second delivery of the event comes
    // after the record's age limit and stops `stale`, saying so; the first delivery, still on
    // its 30-minute schedule, later gives up, and the operator hears that too.
    let rules = r#"[{"onReason": "AGENT", "action": "retry", "IntervalSeconds": 1800,
                    "MaxDelaySeconds": 1800, "JitterStrategy": "NONE"}]"#;
    let q = Queued::new(vec![fail("AGENT", 0), fail("AGENT", 0), fail("AGENT", 0)]);
    let handler = q
        .handler(&[("ECS_RERUN_RULES", rules)])
        .with_store(q.world.store.clone());
    let invocation = Invocation::default();
    let record = fresh("01-agent-ec2.json");
    handler.handle(record.clone(), &invocation).await.unwrap();
    let (mut last, mut late) = (None, None);
    while let Some((body, delay)) = q.world.queue.pop() {
        q.world.clock.advance(delay);
        last = Some(handler.handle_message(&body, &invocation).await.unwrap());
        let hour_on = q.world.clock.now_since_start() >= Duration::from_secs(3600);
        if late.is_none() && hour_on {
            late = Some(handler.handle(record.clone(), &invocation).await.unwrap());
        }
    }
    let late = late.expect("the second delivery came");
    assert_eq!(late.outcome, Outcome::Stale, "{}", late.reason);
    assert_eq!(
        q.world.ecs.requests().len(),
        3,
        "only the first delivery's calls"
    );
    assert_eq!(last.map(|r| r.outcome), Some(Outcome::GaveUp));
    let outcomes: Vec<_> = q
        .world
        .sns
        .sent()
        .iter()
        .map(|n| n.attributes["outcome"].clone())
        .collect();
    assert_eq!(outcomes, ["stale", "gave_up"]);
}

#[tokio::test]
async fn a_copy_throttled_once_sends_each_token_after_the_same_waits_as_its_sibling() {
    // Two deliveries of one event, on time. A's first call gets AGENT and its second starts the
    // job; B's first call is throttled and resent. On a growing schedule (30 min, 90 min, ...)
    // B used to send the second token one step later, hours after A, when ECS had forgotten
    // it: a new token waits the step of its attempt, not of the call, so B sends it with A.
    let rules = r#"[{"onReason": "AGENT", "action": "retry", "IntervalSeconds": 1800,
                    "BackoffRate": 3, "MaxDelaySeconds": 16200, "JitterStrategy": "NONE"}]"#;
    let q = Queued::new(vec![
        fail("AGENT", 0),
        error("ThrottlingException"),
        common::ok(),
    ]);
    let handler = q.handler(&[("ECS_RERUN_RULES", rules)]);
    let invocation = Invocation::default();
    let record = fresh("01-agent-ec2.json");
    q.begin(&handler, record.clone()).await;
    q.begin(&handler, record).await;
    // Deliver both copies' messages in the order they fall due; a task runs a minute.
    let mut pending: Vec<(Duration, String)> = Vec::new();
    let mut ends = Vec::new();
    loop {
        while let Some((body, delay)) = q.world.queue.pop() {
            pending.push((q.world.clock.now_since_start() + delay, body));
        }
        pending.sort_by_key(|(due, _)| *due);
        if pending.is_empty() {
            break;
        }
        let (due, body) = pending.remove(0);
        let now = q.world.clock.now_since_start();
        q.world.clock.advance(due.saturating_sub(now));
        let report = handler.handle_message(&body, &invocation).await.unwrap();
        if report.outcome != Outcome::Waiting {
            q.world.clock.advance(Duration::from_secs(60));
            q.world.ecs.stop_all();
            ends.push(report.outcome);
        }
    }
    assert_eq!(q.world.ecs.tasks_started(), 1, "{ends:?}");
    assert_eq!(ends, [Outcome::Recovered, Outcome::AlreadyStarted]);
}

#[tokio::test]
async fn the_throttled_record_of_a_call_does_not_run_a_call_behind_the_final_one() {
    // One SDK call: a throttled try, then a 200 with a failure. The final record's episode
    // starts the missing task; the throttled record's comes 53 minutes later, replays the call
    // first, then sends the same own tokens, after the same waits, not one step later.
    let rules = r#"[{"onReason": "RESOURCE:MEMORY", "action": "retry", "IntervalSeconds": 300,
                    "BackoffRate": 2, "MaxDelaySeconds": 900, "JitterStrategy": "NONE"}]"#;
    let (world, throttled, final_record) = one_call_two_records();
    world.ecs.answer_next(vec![fail("RESOURCE:MEMORY", 0)]);
    let q = Queued { world };
    let handler = q.handler(&[("ECS_RERUN_RULES", rules)]);
    q.recover(&handler, final_record, Duration::from_secs(30))
        .await;
    q.to_after_record(Duration::from_secs(53 * 60));
    q.begin(&handler, throttled).await;
    let late = q.deliver(&handler, Duration::ZERO).await;
    let last = late.last().expect("the throttled record's episode waited");
    assert_eq!(
        q.world.ecs.tasks_started(),
        2,
        "the caller's task and one rerun: {:?}, {}",
        last.outcome,
        last.reason
    );
}

#[tokio::test]
async fn a_long_wait_on_schedule_is_never_judged_late() {
    // A quota rule waits 10 minutes, then 90: the second call goes out 100 minutes after the
    // record, with a new token, on schedule. It is made.
    let rules = r#"[{"onReason": "AGENT", "action": "retry", "IntervalSeconds": 600,
                    "BackoffRate": 9, "MaxDelaySeconds": 5400, "JitterStrategy": "NONE"}]"#;
    let q = Queued::new(vec![fail("AGENT", 0)]);
    let reports = q
        .run(&[("ECS_RERUN_RULES", rules)], fresh("01-agent-ec2.json"))
        .await;
    let last = reports.last().expect("reports");
    assert_eq!(last.outcome, Outcome::Recovered, "{}", last.reason);
    assert_eq!(q.world.ecs.tasks_started(), 1);
}

#[tokio::test]
async fn in_a_mass_outage_no_job_waits_for_another() {
    // 50 jobs fail at once. Each invocation returns after deciding; every job's first call is
    // due on its own schedule, counted from its own failure.
    let q = Queued::new(vec![]);
    let handler = q.handler(&[]);
    let invocation = Invocation::default();
    for i in 0..50 {
        let mut record = fresh("02-resource-memory-partial.json");
        record["detail"]["eventID"] = json!(format!("00000000-0000-4000-8000-{i:012}"));
        record["detail"]["requestParameters"]["clientToken"] = json!(format!("job-{i}"));
        let report = handler.handle(record, &invocation).await.unwrap();
        assert_eq!(report.outcome, Outcome::Waiting);
    }
    assert!(
        q.world.clock.sleeps().is_empty(),
        "no invocation held a slot while waiting"
    );
    let mut delays = Vec::new();
    while let Some((_, delay)) = q.world.queue.pop() {
        delays.push(delay);
    }
    assert_eq!(delays.len(), 50);
    assert!(
        delays.iter().all(|d| (150..=300).contains(&d.as_secs())),
        "each first wait is the capacity schedule's first step, 150-300 s: {delays:?}"
    );
    let distinct: std::collections::HashSet<_> = delays.iter().collect();
    assert!(
        distinct.len() > 25,
        "jittered, not in lockstep: {distinct:?}"
    );
}

#[tokio::test]
async fn an_sqs_batch_reports_the_messages_that_failed() {
    let q = Queued::new(vec![fail("AGENT", 0)]);
    let (handler, invocation) = (q.handler(&[]), Invocation::default());
    q.begin(&handler, fresh("01-agent-ec2.json")).await;
    let (body, delay) = q.world.queue.pop().unwrap();
    q.world.clock.advance(delay);
    let payload = json!({"Records": [
        {"messageId": "good", "body": body, "eventSource": "aws:sqs"},
        {"messageId": "bad", "body": "{\"not\": \"a hop\"}", "eventSource": "aws:sqs"},
    ]});
    let reply = handler.handle_payload(payload, &invocation).await.unwrap();
    assert_eq!(
        reply.body,
        json!({"batchItemFailures": [{"itemIdentifier": "bad"}]}),
        "the bad message stays in the queue (and is dead-lettered after 5 receives)"
    );
    assert_eq!(reply.reports.len(), 1);
    assert_eq!(
        q.world.ecs.requests().len(),
        1,
        "the good message made its call"
    );
}

#[tokio::test]
async fn a_failed_notification_on_a_hop_is_retried_by_redelivery_and_sent_once() {
    let mut q = Queued::new(vec![fail("ATTRIBUTE", 0)]);
    let invocation = Invocation::default();
    q.world.sns = FakeSns::failing();
    let failing = q.handler(&[]);
    failing
        .handle(fresh("01-agent-ec2.json"), &invocation)
        .await
        .unwrap();
    let (body, delay) = q.world.queue.pop().unwrap();
    q.world.clock.advance(delay);
    assert!(failing.handle_message(&body, &invocation).await.is_err());
    // SQS delivers it again; the topic works now.
    q.world.sns = FakeSns::default();
    let report = q
        .handler(&[])
        .handle_message(&body, &invocation)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert_eq!(q.world.sns.sent().len(), 1);
    assert_eq!(q.world.ecs.tasks_started(), 0);
}

#[tokio::test]
async fn a_hop_carries_verdicts_in_aggregate_and_stays_small() {
    let reason = |i: usize| {
        format!(
            "Capacity is unavailable at this time ({i}) {}",
            "x".repeat(200)
        )
    };
    let (record, failures) = many_instances(900, reason);
    let q = Queued::new(vec![Answer::Place { place: 0, failures }]);
    let handler = q.handler(&[]);
    let invocation = Invocation::default();
    handler.handle(record, &invocation).await.unwrap();
    let (body, delay) = q.world.queue.pop().unwrap();
    q.world.clock.advance(delay);
    handler.handle_message(&body, &invocation).await.unwrap();
    let (body, _) = q
        .world
        .queue
        .pop()
        .expect("a second hop after the failed call");
    assert!(
        body.len() < 32 * 1024,
        "900 failures twice, yet {} bytes (SQS takes 256 KiB)",
        body.len()
    );
    let hop: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(hop["version"], 1);
}

#[tokio::test]
async fn a_hop_of_another_version_is_refused_not_guessed() {
    let q = Queued::new(vec![]);
    q.handler(&[])
        .handle(fresh("01-agent-ec2.json"), &Invocation::default())
        .await
        .unwrap();
    let (body, _) = q.world.queue.pop().unwrap();
    let mut hop: Value = serde_json::from_str(&body).unwrap();
    hop["version"] = json!(2);
    let err = ecs_rerun::core::hop::Hop::from_json(&hop.to_string()).unwrap_err();
    assert!(err.to_string().contains("version 2"), "{err}");
    assert!(ecs_rerun::core::hop::Hop::from_json(&body).is_ok());
}

// ---- callers that retry by themselves ------------------------------------------------------------

#[tokio::test]
async fn a_batch_placement_failure_is_left_to_batch() {
    let w = World::new(vec![]);
    let report = w.run(fresh("11-batch-placement.json")).await;
    assert_eq!(report.outcome, Outcome::Left);
    assert!(w.ecs.requests().is_empty(), "no orphan task outside Batch");
    assert!(
        w.sns.sent().is_empty(),
        "no notification: Batch places the job again"
    );
    assert!(
        report.reason.contains("left to the caller (batch)"),
        "{}",
        report.reason
    );
    assert_eq!(report.rule.as_deref(), Some("onCaller=batch -> leave"));
}

#[tokio::test]
async fn a_step_functions_failure_is_notified_not_rerun() {
    let w = World::new(vec![]);
    let report = w.run(fresh("12-step-functions.json")).await;
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert!(
        w.ecs.requests().is_empty(),
        "a second run from outside would run the job twice"
    );
    let sent = w.sns.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].attributes["caller"], "step-functions");
    assert!(
        sent[0].body.contains("whose own retry decides"),
        "{}",
        sent[0].body
    );
}

#[tokio::test]
async fn a_scheduler_placement_failure_is_rerun_and_its_throttled_call_left_to_it() {
    // A 200 with failures counts as delivered for the Scheduler: nobody else retries it.
    let w = World::new(vec![]);
    let mut placement = fresh("01-agent-ec2.json");
    placement["detail"]["userIdentity"]["invokedBy"] = json!("scheduler.amazonaws.com");
    placement["detail"]["sourceIPAddress"] = json!("scheduler.amazonaws.com");
    let report = w.run(placement).await;
    assert_eq!(report.outcome, Outcome::Recovered);
    assert_eq!(w.ecs.tasks_started(), 1);

    // An API error it retries by itself, under its own retry policy.
    let w = World::new(vec![]);
    let report = w.run(fresh("13-scheduler-throttled.json")).await;
    assert_eq!(report.outcome, Outcome::Left);
    assert!(w.ecs.requests().is_empty() && w.sns.sent().is_empty());
}

#[tokio::test]
async fn an_operator_leaves_step_functions_or_reruns_batch_with_a_rule() {
    // Every state machine here retries by itself: leave them, no notification.
    let w = World::new(vec![]);
    let rules = r#"[{"onCaller": "step-functions", "action": "leave"}]"#;
    let report = w
        .handle(
            &[("ECS_RERUN_RULES", rules)],
            fresh("12-step-functions.json"),
        )
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Left);
    assert!(w.sns.sent().is_empty());

    // Rules narrowed to a cluster and family come first; the rest keeps the defaults.
    let rules = r#"[{"onCaller": "events-rule", "onCluster": "batch", "onTaskFamily": "nightly-*",
                     "onReason": "AGENT", "action": "notify"}]"#;
    let w = World::new(vec![]);
    let report = w
        .handle(&[("ECS_RERUN_RULES", rules)], fresh("01-agent-ec2.json"))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::NotRetryable);
    let w = World::new(vec![]);
    let report = w
        .handle(
            &[("ECS_RERUN_RULES", rules)],
            fresh("02-resource-memory-partial.json"),
        )
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Recovered,
        "another caller: the defaults"
    );
}

#[tokio::test]
async fn an_operators_failure_rule_does_not_rerun_what_batch_or_step_functions_retry() {
    // Written for failures, not callers: the built-in caller rules still come first.
    let rules = r#"[{"onReason": "RESOURCE:*", "action": "retry"},
                    {"onErrorCode": "ThrottlingException", "action": "retry"}]"#;
    for (file, outcome) in [
        ("11-batch-placement.json", Outcome::Left),
        ("12-step-functions.json", Outcome::NotRetryable),
    ] {
        let w = World::new(vec![]);
        let report = w
            .handle(&[("ECS_RERUN_RULES", rules)], fresh(file))
            .await
            .unwrap();
        assert_eq!(report.outcome, outcome, "{file}");
        assert!(w.ecs.requests().is_empty(), "{file}: no second run");
    }
}

#[tokio::test]
async fn a_schedulers_permanent_error_is_notified_not_left() {
    // The Scheduler resends throttled and 5xx calls; an AccessDenied it does not fix.
    let mut record = fresh("13-scheduler-throttled.json");
    record["detail"]["errorCode"] = json!("AccessDeniedException");
    record["detail"]["errorMessage"] = json!("not authorized to perform iam:PassRole");
    let w = World::new(vec![]);
    let report = w.run(record).await;
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert_eq!(w.sns.sent().len(), 1);
}

#[tokio::test]
async fn a_hop_written_before_callers_were_named_is_still_read() {
    let q = Queued::new(vec![]);
    q.begin(&q.handler(&[]), fresh("01-agent-ec2.json")).await;
    let (body, delay) = q.world.queue.pop().unwrap();
    let mut hop: Value = serde_json::from_str(&body).unwrap();
    hop["origin"].as_object_mut().unwrap().remove("called_by");
    let episode = hop["episode"].as_object_mut().unwrap();
    episode.remove("subject");
    // What the release before the capacity fallback and the organization mode did not write.
    for field in ["fallback", "fallback_open", "open_caller"] {
        episode.remove(field);
    }
    q.world.clock.advance(delay);
    let report = q
        .handler(&[])
        .handle_message(&hop.to_string(), &Invocation::default())
        .await
        .expect("an older hop is read, not dead-lettered");
    assert_eq!(report.outcome, Outcome::Recovered);
}

#[tokio::test]
async fn an_onerror_caller_rule_never_concerns_ecs_reruns_own_calls() {
    // The Scheduler's API errors are left to it, but a throttle on ecs-rerun's own retry of a
    // Scheduler placement failure is ecs-rerun's to retry.
    let w = World::new(vec![error("ThrottlingException")]);
    let mut placement = fresh("01-agent-ec2.json");
    placement["detail"]["userIdentity"]["invokedBy"] = json!("scheduler.amazonaws.com");
    let report = w.run(placement).await;
    assert_eq!(report.outcome, Outcome::Recovered);
    assert_eq!(w.ecs.tasks_started(), 1);
}
