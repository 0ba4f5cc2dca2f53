//! The pure core without AWS: the classification table, the plan's decisions and arithmetic
//! (backoff, tokens, tags, staleness, accounts), the marks ecs-rerun signs its calls with, the
//! look-up's notion of "the same job", the configuration and the notification text.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use common::{config, event, failure, sns_size, tag};
use ecs_rerun::config::{Config, ConfigError};
use ecs_rerun::core::classify::{Action, MAX_EXAMPLES, ReasonClass, Rules, Subject};
use ecs_rerun::core::decode::{Decoded, FailedRunTask, Ignored, decode};
use ecs_rerun::core::event::PlacementFailure;
use ecs_rerun::core::launch::{LaunchResult, LaunchedTask, Lookup};
use ecs_rerun::core::lookup::{self, ExistingTask, TaskQuery};
use ecs_rerun::core::marks::{self, ATTEMPT_TAG, CALL_TAG, MAX_TAGS, TOKEN_PREFIX};
use ecs_rerun::core::message::{DEFAULT_MAX_MESSAGE_SIZE, NotificationFormat, compose};
use ecs_rerun::core::org::AllowedAccounts;
use ecs_rerun::core::outcome::{Conclusion, Outcome};
use ecs_rerun::core::plan::episode::{Episode, Step};
use ecs_rerun::core::plan::{self, Context, Decision, Policy};
use ecs_rerun::core::request::{
    ContainerOverride, Environment, KeyValuePair, RunTaskRequest, Tag, TaskOverride, task_family,
};
use ecs_rerun::core::schedule::{Jitter, Schedule};
use proptest::prelude::*;
use serde_json::json;

/// The decoded record of a sample event (or of a changed copy of one).
fn failed_from(e: serde_json::Value) -> FailedRunTask {
    match decode(e) {
        Ok(Decoded::Failed(f)) => *f,
        other => panic!("expected a failed RunTask, got {other:?}"),
    }
}

fn failed(file: &str) -> FailedRunTask {
    failed_from(event(file))
}

/// One minute after the record: the sample events are from 2025, and a record older than
/// `Policy::max_record_age` is not rerun.
fn just_after(failed: &FailedRunTask) -> SystemTime {
    failed
        .origin
        .recorded_at
        .expect("the record has an eventTime")
        + Duration::from_secs(60)
}

static NO_ACCOUNTS: AllowedAccounts = AllowedAccounts::NONE;

/// The context of a local run (no account, no function name) at `now`.
fn at(now: SystemTime) -> Context<'static> {
    Context {
        now,
        own_account: None,
        allowed_accounts: &NO_ACCOUNTS,
        member_role: None,
        function_name: None,
    }
}

fn decide(failed: &FailedRunTask) -> Decision {
    plan::decide(
        failed,
        &Rules::defaults(),
        &Policy::default(),
        at(just_after(failed)),
    )
}

fn episode(failed: &FailedRunTask) -> Episode {
    match decide(failed) {
        Decision::Retry(episode) => *episode,
        other => panic!("expected a retry, got {other:?}"),
    }
}

/// The next call of `episode`, asked for at `now`.
fn launch(episode: &mut Episode, now: SystemTime) -> (u32, RunTaskRequest) {
    match episode.next(&Policy::default(), now, None) {
        Step::Launch { call, request, .. } => (call, *request),
        other => panic!("expected a launch, got {other:?}"),
    }
}

/// How `episode` ends, asked at `now`.
fn done(episode: &mut Episode, now: SystemTime) -> Conclusion {
    match episode.next(&Policy::default(), now, None) {
        Step::Done(conclusion) => conclusion,
        other => panic!("expected the end, got {other:?}"),
    }
}

fn placed(tasks: usize, reason: &str) -> LaunchResult {
    LaunchResult::Placed {
        tasks: common::launched(tasks),
        failures: vec![failure(reason)],
    }
}

fn rejected(code: &str, ambiguous: bool) -> LaunchResult {
    LaunchResult::Rejected {
        code: code.to_owned(),
        message: "Rate exceeded".to_owned(),
        ambiguous,
        existing: Vec::new(),
    }
}

// --- classify -----------------------------------------------------------------------------------

#[test]
fn stop_reasons_of_tasks_that_failed_to_start_are_classified() {
    let rules = Rules::defaults();
    let table = [
        // (stoppedReason, container reason, action, class)
        (
            "CannotPullContainerError: pull image manifest has been retried 5 time(s): toomanyrequests: Rate exceeded",
            "",
            Action::Retry,
            ReasonClass::Transient,
        ),
        (
            "CannotPullContainerError: ref pull has been retried 1 time(s): failed to copy: httpReadSeeker: failed open: failed to do request: dial tcp 52.1.2.3:443: i/o timeout",
            "",
            Action::Retry,
            ReasonClass::Transient,
        ),
        (
            "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: unable to retrieve secret from asm: context deadline exceeded",
            "",
            Action::Retry,
            ReasonClass::Transient,
        ),
        (
            "Timeout waiting for network interface provisioning to complete.",
            "",
            Action::Retry,
            ReasonClass::Transient,
        ),
        (
            "TaskFailedToStart: RESOURCE:MEMORY",
            "",
            Action::Retry,
            ReasonClass::Transient,
        ),
        (
            "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref 1.dkr.ecr.us-east-1.amazonaws.com/app:v9: not found",
            "",
            Action::Notify,
            ReasonClass::Permanent,
        ),
        (
            "CannotPullContainerError: pull access denied for app, repository does not exist or may require 'docker login'",
            "",
            Action::Notify,
            ReasonClass::Permanent,
        ),
        (
            "ResourceInitializationError: unable to pull secrets or registry auth: AccessDeniedException: User is not authorized to perform: secretsmanager:GetSecretValue",
            "",
            Action::Notify,
            ReasonClass::Permanent,
        ),
        (
            "ResourceInitializationError: failed to validate logger args: The specified log group does not exist.",
            "",
            Action::Notify,
            ReasonClass::Permanent,
        ),
        // The reason in the container only: still found.
        (
            "Task failed to start",
            "app: CannotPullContainerError: toomanyrequests: Rate exceeded",
            Action::Retry,
            ReasonClass::Transient,
        ),
        (
            "Something new from AWS",
            "",
            Action::Notify,
            ReasonClass::Unknown,
        ),
    ];
    for (reason, detail, action, class) in table {
        let v = rules.stopped("TaskFailedToStart", reason, detail, &Subject::default());
        assert_eq!(
            (v.action, v.class),
            (action, class),
            "{reason:?} via {}",
            v.rule
        );
        assert!(
            v.failure.starts_with("TaskFailedToStart: "),
            "{}",
            v.failure
        );
    }
    // Spot interruptions: notified by default, retried only where the operator says so.
    let spot = rules.stopped(
        "SpotInterruption",
        "Your Spot Task was interrupted.",
        "",
        &Subject::default(),
    );
    assert_eq!(spot.action, Action::Notify);
    let theirs = Rules::with_overrides(
        r#"[{"onStopCode": "SpotInterruption", "action": "retry"}]"#,
        3,
    )
    .unwrap();
    let spot = theirs.stopped(
        "SpotInterruption",
        "Your Spot Task was interrupted.",
        "",
        &Subject::default(),
    );
    assert_eq!(spot.action, Action::Retry);
    // A rule without onStopCode is for TaskFailedToStart only.
    let by_reason =
        Rules::with_overrides(r#"[{"onReason": "*interrupted*", "action": "retry"}]"#, 3).unwrap();
    let spot = by_reason.stopped(
        "TerminationNotice",
        "Your Spot Task was interrupted.",
        "",
        &Subject::default(),
    );
    assert_eq!(spot.action, Action::Notify);
    // An onStopCode rule never decides a placement failure or an API error.
    let stop_only = Rules::with_overrides(
        r#"[{"onStopCode": "TaskFailedToStart", "onReason": "AGENT", "action": "notify"}]"#,
        3,
    )
    .unwrap();
    assert_eq!(
        stop_only
            .placement(&failure("AGENT"), &Subject::default())
            .action,
        Action::Retry
    );
}

#[test]
fn stop_code_rules_that_cannot_match_are_refused_at_start() {
    for (json, says) in [
        (
            r#"[{"onStopCode": "UserInitiated", "action": "retry"}]"#,
            "matches no stop code",
        ),
        (
            r#"[{"onStopCode": "TaskFailedToStart", "onErrorCode": "X", "action": "retry"}]"#,
            "no error code",
        ),
    ] {
        let err = Rules::with_overrides(json, 3).unwrap_err().to_string();
        assert!(err.contains(says), "{json}: {err}");
    }
}

#[test]
fn default_table_matches_the_documented_reasons() {
    let rules = Rules::defaults();
    let placement = [
        ("AGENT", Action::Retry, ReasonClass::Transient),
        ("RESOURCE:MEMORY", Action::Retry, ReasonClass::Transient),
        ("resource:cpu", Action::Retry, ReasonClass::Transient),
        ("RESOURCE:ENI", Action::Retry, ReasonClass::Transient),
        (
            "Capacity is unavailable at this time. Please try again later or in a different availability zone",
            Action::Retry,
            ReasonClass::Transient,
        ),
        ("ATTRIBUTE", Action::Notify, ReasonClass::Permanent),
        ("LOCATION", Action::Notify, ReasonClass::Permanent),
        (
            "You\u{2019}ve reached the limit on the number of tasks you can run concurrently",
            Action::Notify,
            ReasonClass::Permanent,
        ),
        (
            "The requested CPU configuration is above your limit",
            Action::Notify,
            ReasonClass::Permanent,
        ),
        (
            "Something new from AWS",
            Action::Notify,
            ReasonClass::Unknown,
        ),
        ("", Action::Notify, ReasonClass::Unknown),
    ];
    for (reason, action, class) in placement {
        let v = rules.placement(&failure(reason), &Subject::default());
        assert_eq!(
            (v.action, v.class),
            (action, class),
            "reason {reason:?} via {}",
            v.rule
        );
    }
    let errors = [
        ("ThrottlingException", "Rate exceeded", Action::Retry),
        ("ServerException", "Service Unavailable", Action::Retry),
        (
            "ClientException",
            "Tasks provisioning capacity limit exceeded.",
            Action::Retry,
        ),
        (
            "ClientException",
            "TaskDefinition not found.",
            Action::Notify,
        ),
        (
            "AccessDeniedException",
            "not authorized to perform iam:PassRole",
            Action::Notify,
        ),
        ("AccessDenied", "", Action::Notify),
        (
            "InvalidParameterException",
            "No Container Instances were found in your cluster.",
            Action::Notify,
        ),
        (
            "ClusterNotFoundException",
            "Cluster not found.",
            Action::Notify,
        ),
    ];
    for (code, message, action) in errors {
        assert_eq!(
            rules.api_error(code, message, &Subject::default()).action,
            action,
            "{code}: {message}"
        );
    }
}

#[test]
fn operator_rules_come_first_and_can_override_defaults() {
    let rules = Rules::with_overrides(r#"[
        {"onReason": "RESOURCE:PORTS", "action": "notify"},
        {"onErrorCode": "InvalidParameterException", "onMessage": "*No Container Instances*", "action": "retry"}
    ]"#, 3).unwrap();
    assert_eq!(
        rules
            .placement(&failure("RESOURCE:PORTS"), &Subject::default())
            .action,
        Action::Notify
    );
    assert_eq!(
        rules
            .placement(&failure("RESOURCE:MEMORY"), &Subject::default())
            .action,
        Action::Retry,
        "defaults still apply"
    );
    assert_eq!(
        rules
            .api_error(
                "InvalidParameterException",
                "No Container Instances were found in your cluster.",
                &Subject::default()
            )
            .action,
        Action::Retry
    );
    assert_eq!(
        rules
            .api_error(
                "InvalidParameterException",
                "subnet missing",
                &Subject::default()
            )
            .action,
        Action::Notify
    );
}

#[test]
fn bad_rules_are_clear_errors() {
    for (json, says) in [
        ("not json", "not valid JSON"),
        (r#"[{"action": "retry"}]"#, "rule 0 matches nothing"),
        (
            r#"[{"onCaller": "cron", "action": "leave"}]"#,
            "rule 0: onCaller \"cron\" matches no caller",
        ),
        (
            r#"[{"onMessage": "*x*", "action": "retry"}]"#,
            "rule 0: onMessage narrows onReason or onErrorCode",
        ),
        (
            r#"[{"onCaller": "batch", "action": "ignore"}]"#,
            "unknown variant",
        ),
        (
            r#"[{"onReason": "A", "onErrorCode": "B", "action": "retry"}]"#,
            "both",
        ),
        (
            r#"[{"onReason": "A", "action": "maybe"}]"#,
            "unknown variant",
        ),
        (r#"[{"onReasn": "A", "action": "retry"}]"#, "unknown field"),
        (
            r#"[{"onReason": "A", "action": "retry", "BackoffRate": 0.5}]"#,
            "rule 0: BackoffRate must be 1 or more",
        ),
        (
            r#"[{"onReason": "A", "action": "retry", "IntervalSeconds": -1}]"#,
            "rule 0: IntervalSeconds",
        ),
        (
            r#"[{"onReason": "A", "action": "retry", "IntervalSeconds": 60, "MaxDelaySeconds": 10}]"#,
            "rule 0: MaxDelaySeconds must be at least IntervalSeconds",
        ),
        (
            r#"[{"onReason": "A", "action": "retry", "JitterStrategy": "SOME"}]"#,
            "unknown variant",
        ),
        (
            r#"[{"onReason": "A", "action": "retry", "MaxAttempts": 0}]"#,
            "rule 0: MaxAttempts must be from 1 to 10",
        ),
    ] {
        let err = Rules::with_overrides(json, 3).unwrap_err().to_string();
        assert!(
            err.contains("ECS_RERUN_RULES") && err.contains(says),
            "{json}: {err}"
        );
    }
}

#[test]
fn each_failure_class_waits_as_long_as_it_needs() {
    let rules = Rules::defaults();
    let first_step = |v: &ecs_rerun::core::classify::Verdict| {
        Schedule {
            jitter_strategy: Jitter::None,
            ..v.schedule
        }
        .wait(1, "k")
    };
    let throttled = rules.api_error("ThrottlingException", "Rate exceeded", &Subject::default());
    let agent = rules.placement(&failure("AGENT"), &Subject::default());
    let memory = rules.placement(&failure("RESOURCE:MEMORY"), &Subject::default());
    let fargate = rules.placement(
        &failure("Capacity is unavailable at this time. Please try again later"),
        &Subject::default(),
    );
    assert!(first_step(&throttled) <= Duration::from_secs(5), "seconds");
    assert!(
        (10..=60).contains(&first_step(&agent).as_secs()),
        "tens of seconds"
    );
    for capacity in [&memory, &fargate] {
        // Three waits of at least half their step (equal jitter) add up to 15 minutes or more.
        let least: Duration = (1..=3)
            .map(|n| {
                Schedule {
                    jitter_strategy: Jitter::None,
                    ..capacity.schedule
                }
                .wait(n, "k")
                    / 2
            })
            .sum();
        assert!(
            least >= Duration::from_secs(900),
            "{}: {least:?}",
            capacity.failure
        );
    }
}

#[test]
fn an_operators_rule_sets_its_own_schedule_and_attempts() {
    let rules = Rules::with_overrides(
        r#"[{"onReason": "RESOURCE:GPU", "action": "retry", "IntervalSeconds": 600,
             "BackoffRate": 1, "MaxDelaySeconds": 600, "JitterStrategy": "NONE", "MaxAttempts": 6}]"#,
        3,
    )
    .unwrap();
    let gpu = rules.placement(&failure("RESOURCE:GPU"), &Subject::default());
    assert_eq!(gpu.schedule.wait(1, "k"), Duration::from_secs(600));
    assert_eq!(gpu.schedule.wait(5, "k"), Duration::from_secs(600));
    assert_eq!(gpu.max_attempts, Some(6));
    assert_eq!(
        rules
            .placement(&failure("RESOURCE:CPU"), &Subject::default())
            .schedule,
        Schedule::MINUTES,
        "the built-in schedule for the rest"
    );
}

#[test]
fn base_and_max_delay_override_every_schedule() {
    let c = config(&[
        ("ECS_RERUN_BASE_DELAY_MS", "200"),
        ("ECS_RERUN_MAX_DELAY_MS", "1000"),
    ]);
    assert_eq!(
        c.policy.delay_override,
        Some(Schedule::fixed(
            Duration::from_millis(200),
            Duration::from_millis(1000)
        ))
    );
    assert_eq!(
        config(&[]).policy.delay_override,
        None,
        "unset: per-class schedules"
    );
    assert_eq!(
        config(&[("ECS_RERUN_BASE_DELAY_MS", "")])
            .policy
            .delay_override,
        None,
        "empty (the template's default) counts as unset"
    );
}

#[test]
fn more_than_ten_distinct_reasons_are_merged_and_a_transient_one_still_counts() {
    let rules = Rules::defaults();
    let mut failures: Vec<_> = (0..30)
        .map(|i| failure(&format!("unknown reason {i}")))
        .collect();
    failures.push(failure("AGENT"));
    let groups = rules.placements(&failures, &Subject::default());
    assert_eq!(groups.len(), ecs_rerun::core::classify::MAX_GROUPS + 1);
    let other = groups.last().unwrap();
    assert_eq!(other.count, 21, "20 unknown reasons and AGENT");
    assert_eq!(
        ecs_rerun::core::classify::overall(&groups).map(|v| v.action),
        Some(Action::Retry),
        "AGENT among the merged ones is still enough to retry"
    );
}

#[test]
fn one_transient_failure_among_several_is_enough_to_retry() {
    let rules = Rules::defaults();
    let verdicts = vec![
        rules.placement(&failure("ATTRIBUTE"), &Subject::default()),
        rules.placement(&failure("AGENT"), &Subject::default()),
    ];
    assert_eq!(
        ecs_rerun::core::classify::overall(&verdicts)
            .unwrap()
            .action,
        Action::Retry
    );
}

#[test]
fn placement_failures_are_grouped_by_reason_with_a_count_and_a_few_examples() {
    let rules = Rules::defaults();
    let instance =
        |i: usize| format!("arn:aws:ecs:us-east-1:111122223333:container-instance/batch/i{i}");
    // One entry per container instance considered: a cluster of 900 that all lack memory.
    let mut failures: Vec<PlacementFailure> = (0..900)
        .map(|i| PlacementFailure {
            arn: Some(instance(i)),
            reason: Some("RESOURCE:MEMORY".to_owned()),
            detail: None,
        })
        .collect();
    let verdicts = rules.placements(&failures, &Subject::default());
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    let group = &verdicts[0];
    assert_eq!(group.failure, "RESOURCE:MEMORY");
    assert_eq!(group.count, 900);
    assert_eq!(group.action, Action::Retry);
    assert!(group.examples.len() <= MAX_EXAMPLES && !group.examples.is_empty());
    assert_eq!(
        group.examples,
        (0..group.examples.len()).map(instance).collect::<Vec<_>>()
    );

    // Another reason makes another group, in order of first appearance.
    failures.insert(
        10,
        PlacementFailure {
            reason: Some("AGENT".to_owned()),
            ..PlacementFailure::default()
        },
    );
    let verdicts = rules.placements(&failures, &Subject::default());
    let summary: Vec<(&str, u32)> = verdicts
        .iter()
        .map(|v| (v.failure.as_str(), v.count))
        .collect();
    assert_eq!(summary, [("RESOURCE:MEMORY", 900), ("AGENT", 1)]);
    assert!(verdicts[1].examples.is_empty(), "no ARN, no example");

    // An answer with too few tasks and no failure listed still gets one verdict.
    let none = rules.placements(&[], &Subject::default());
    assert_eq!(none.len(), 1);
    assert_eq!(none[0].failure, "(no reason given)");
    assert_eq!(none[0].class, ReasonClass::Unknown);
}

// --- plan ---------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn equal_jitter_stays_within_half_and_full_step(attempt in 1u32..12, id in "[a-f0-9-]{1,36}", base in 0u64..60_000, extra in 0u64..600_000) {
        let (base, max) = (Duration::from_millis(base), Duration::from_millis(base + extra));
        let step = base.saturating_mul(2u32.saturating_pow(attempt - 1)).min(max);
        let wait = Schedule::fixed(base, max).wait(attempt, &id);
        // The schedule computes in floating-point seconds: allow a microsecond either way.
        let slack = Duration::from_micros(1);
        prop_assert!(wait + slack >= step / 2 && wait <= step + slack, "{wait:?} vs step {step:?}");
    }

    #[test]
    fn full_and_no_jitter_stay_within_their_step(attempt in 1u32..12, id in "[a-f0-9-]{1,36}", interval in 0.0f64..600.0, rate in 1.0f64..4.0) {
        let full = Schedule { interval_seconds: interval, backoff_rate: rate, max_delay_seconds: 900.0, jitter_strategy: Jitter::Full };
        let none = Schedule { jitter_strategy: Jitter::None, ..full };
        let step = (interval * rate.powi(attempt as i32 - 1)).min(900.0);
        prop_assert!((none.wait(attempt, &id).as_secs_f64() - step).abs() < 1e-6);
        prop_assert!(full.wait(attempt, &id).as_secs_f64() <= step + 1e-6);
        prop_assert_eq!(full.wait(attempt, &id), full.wait(attempt, &id), "deterministic per call");
    }

    #[test]
    fn tokens_are_valid_deterministic_and_distinct(key in ".{0,200}", attempt in 1u32..1000) {
        let token = marks::own_token(&key, attempt);
        prop_assert!(token.len() <= 64 && token.starts_with(TOKEN_PREFIX));
        prop_assert!(token.bytes().all(|b| (33..=126).contains(&b)), "ECS accepts ASCII 33-126 only");
        prop_assert_eq!(&token, &marks::own_token(&key, attempt));
        prop_assert_ne!(&token, &marks::own_token(&key, attempt + 1));
        prop_assert_ne!(&token, &marks::own_token(&format!("{key}x"), attempt));
    }

    #[test]
    fn retry_tags_respect_the_limit_and_keep_user_tags(n in 0usize..60, reserved in 0usize..5, stale in 0usize..3, attempt in 1u32..10) {
        let mut original: Vec<Tag> = (0..n).map(|i| Tag { key: Some(format!("k{i}")), value: Some("v".into()) }).collect();
        original.extend((0..reserved).map(|i| Tag { key: Some(format!("AWS:batch:{i}")), value: Some("x".into()) }));
        // Tags of an earlier rerun, copied along by whoever replayed it: never carried over.
        original.extend((0..stale).map(|i| Tag { key: Some(format!("ecs-rerun:old{i}")), value: Some("x".into()) }));
        let tags = marks::retry_tags(Some(&original), "the-call", attempt, None).unwrap_or_default();
        prop_assert!(tags.len() <= MAX_TAGS.max(n));
        prop_assert!(tags.iter().all(|t| !t.key.as_deref().unwrap().to_ascii_lowercase().starts_with("aws:")));
        prop_assert!(tags.iter().all(|t| !t.key.as_deref().unwrap().starts_with("ecs-rerun:old")));
        let users: Vec<&Tag> = tags.iter().filter(|t| t.key.as_deref().unwrap().starts_with('k')).collect();
        prop_assert_eq!(users.len(), n, "the user's own tags are never dropped");
        prop_assert!(users.iter().zip(&original).all(|(a, b)| *a == b), "and keep their order");
        if n <= MAX_TAGS - 2 {
            let value = |key: &str| tags.iter().find(|t| t.key.as_deref() == Some(key)).and_then(|t| t.value.clone());
            // The attempt tag holds the attempt number 1..N, as the README says (issue 10, item 8).
            prop_assert_eq!(value(ATTEMPT_TAG), Some(attempt.to_string()));
            prop_assert_eq!(value(CALL_TAG), Some("the-call".to_owned()));
        }
    }
}

#[test]
fn first_retry_asks_for_the_missing_tasks_without_the_reference_id() {
    let mut e = event("02-resource-memory-partial.json");
    e["detail"]["requestParameters"]["referenceId"] = "ecs-internal".into();
    let failed = failed_from(e);
    let mut episode = episode(&failed);
    let (call, request) = launch(&mut episode, just_after(&failed));
    assert_eq!(call, 1);
    assert_eq!(request.count, Some(3));
    assert_eq!(request.reference_id, None);
    let token = request.client_token.as_deref().unwrap();
    assert!(token.starts_with(TOKEN_PREFIX), "{token}");
    assert_ne!(
        request.client_token, failed.origin.request.client_token,
        "a 200 with failures is stored under the recorded token: never resend it"
    );
    assert_eq!(tag(&request, ATTEMPT_TAG), Some("1"));
    assert_eq!(
        tag(&request, CALL_TAG),
        failed.origin.request.client_token.as_deref(),
        "the call tag names the original call by its token"
    );
}

/// Event 05 (ServerException) with a `referenceId` and a reserved tag, as a caller's SDK sent it.
fn server_exception_with_reference() -> FailedRunTask {
    let mut e = event("05-server-exception.json");
    let rp = &mut e["detail"]["requestParameters"];
    rp["referenceId"] = "ref-42".into();
    rp["count"] = 2.into();
    rp["tags"] = json!([{"key": "team", "value": "media"}, {"key": "aws:ecs:x", "value": "y"}]);
    failed_from(e)
}

#[test]
fn an_api_error_record_with_a_token_is_first_replayed_as_the_very_same_call() {
    let failed = server_exception_with_reference();
    let mut episode = episode(&failed);
    let (call, replay) = launch(&mut episode, just_after(&failed));
    assert_eq!(call, 1);
    let mut expected = failed.origin.request.clone();
    // Only the reserved `aws:` tag is left out: a caller other than AWS may not set it.
    expected.tags = Some(vec![Tag {
        key: Some("team".into()),
        value: Some("media".into()),
    }]);
    assert_eq!(
        replay, expected,
        "recorded token, count and referenceId; no tag added"
    );

    // ECS answers with what the token holds: here the call's own failures. Only now do the
    // function's own tokens and tags follow.
    episode.record(
        placed(0, "RESOURCE:MEMORY"),
        SystemTime::now(),
        &Rules::defaults(),
    );
    let (call, own) = launch(&mut episode, just_after(&failed));
    assert_eq!(call, 2);
    assert_eq!(own.count, Some(2));
    assert_eq!(own.reference_id, None);
    assert!(
        own.client_token
            .as_deref()
            .unwrap()
            .starts_with(TOKEN_PREFIX)
    );
    assert_eq!(tag(&own, ATTEMPT_TAG), Some("1"));
}

#[test]
fn the_replay_finds_the_job_the_callers_own_retry_started_and_starts_nothing() {
    let failed = server_exception_with_reference();
    let mut episode = episode(&failed);
    let (_, replay) = launch(&mut episode, just_after(&failed));
    let sent_at = just_after(&failed);
    // The caller's SDK retried the 5xx with the same token and started both tasks before the
    // replay: ECS answers the replay with them.
    let earlier = |i: usize| LaunchedTask {
        arn: format!("arn:aws:ecs:us-east-1:111122223333:task/web/caller{i}"),
        created_at: Some(sent_at - Duration::from_secs(30)),
    };
    episode.record(
        LaunchResult::Placed {
            tasks: vec![earlier(0), earlier(1)],
            failures: Vec::new(),
        },
        sent_at,
        &Rules::defaults(),
    );
    let c = done(&mut episode, just_after(&failed));
    assert_eq!(c.outcome, Outcome::AlreadyStarted, "{}", c.why);
    assert_eq!(
        (c.started_by_retries, c.already_running, c.still_missing),
        (0, 2, 0)
    );
    assert_eq!(c.attempts.len(), 1);
    assert_eq!(c.attempts[0].token, replay.client_token.unwrap());
    assert_eq!(c.attempts[0].attempt, None, "the replay is no own attempt");
    assert_eq!(c.task_arns.len(), 2);

    // The same answer with tasks created after the replay was sent: the replay started them.
    let later = |i: usize| LaunchedTask {
        created_at: Some(sent_at + Duration::from_secs(1)),
        ..earlier(i)
    };
    let mut episode = self::episode(&failed);
    launch(&mut episode, just_after(&failed));
    episode.record(
        LaunchResult::Placed {
            tasks: vec![later(0), later(1)],
            failures: Vec::new(),
        },
        sent_at,
        &Rules::defaults(),
    );
    let c = done(&mut episode, just_after(&failed));
    assert_eq!(c.outcome, Outcome::Recovered, "{}", c.why);
    assert_eq!(c.started_by_retries, 2);
}

#[test]
fn a_conflict_naming_tasks_counts_them_as_started_and_one_naming_none_stops() {
    let failed = failed("01-agent-ec2.json");
    let conflict = |existing: Vec<String>| LaunchResult::Rejected {
        code: "ConflictException".into(),
        message: "The clientToken was already used with other parameters".into(),
        ambiguous: false,
        existing,
    };
    let mut episode = episode(&failed);
    launch(&mut episode, just_after(&failed));
    episode.record(
        conflict(vec![
            "arn:aws:ecs:us-east-1:111122223333:task/batch/x".into(),
        ]),
        just_after(&failed),
        &Rules::defaults(),
    );
    let c = done(&mut episode, just_after(&failed));
    assert_eq!(c.outcome, Outcome::AlreadyStarted, "{}", c.why);
    assert_eq!((c.already_running, c.still_missing), (1, 0));
    assert_eq!(
        c.task_arns,
        ["arn:aws:ecs:us-east-1:111122223333:task/batch/x"]
    );

    let mut episode = self::episode(&failed);
    launch(&mut episode, just_after(&failed));
    episode.record(
        conflict(Vec::new()),
        just_after(&failed),
        &Rules::defaults(),
    );
    let c = done(&mut episode, just_after(&failed));
    assert_eq!(c.outcome, Outcome::NotRetryable, "no guess: {}", c.why);
    assert_eq!((c.attempts.len(), c.still_missing), (1, 1));
}

#[test]
fn an_api_error_record_without_a_token_looks_for_the_callers_retry_first() {
    let failed = failed("04-throttling.json");
    assert_eq!(failed.origin.request.client_token, None);
    let policy = Policy::default();
    let query = |episode: &mut Episode| match episode.next(&policy, just_after(&failed), None) {
        Step::Lookup { query, .. } => query,
        other => panic!("expected a look-up, got {other:?}"),
    };
    let since = failed.origin.recorded_at.unwrap();
    let theirs = ExistingTask {
        arn: "arn:aws:ecs:us-east-1:111122223333:task/batch/theirs".into(),
        task_definition_arn: Some(
            "arn:aws:ecs:us-east-1:111122223333:task-definition/nightly-report:7".into(),
        ),
        created_at: Some(since + Duration::from_secs(1)),
        started_by: failed.origin.request.started_by.clone(),
        group: Some("family:nightly-report".into()),
        overrides: failed.origin.request.overrides.clone(),
        call_tag: None,
    };

    // The caller's own retry started it: nothing is launched.
    let mut found = episode(&failed);
    assert_eq!(
        query(&mut found),
        TaskQuery {
            cluster: Some("batch".into()),
            family: "nightly-report".into(),
        }
    );
    found.record_lookup(Lookup::Found(vec![theirs.clone()]));
    let c = done(&mut found, just_after(&failed));
    assert_eq!(c.outcome, Outcome::AlreadyStarted, "{}", c.why);
    assert!(c.attempts.is_empty());
    assert_eq!(c.task_arns, [theirs.arn.as_str()]);

    // A task of the family from an hour before the record is another run: the job is rerun,
    // once the look-up's wait is spent (not a second time).
    let mut missing = episode(&failed);
    query(&mut missing);
    let older = ExistingTask {
        created_at: Some(since - Duration::from_secs(3600)),
        ..theirs
    };
    missing.record_lookup(Lookup::Found(vec![older]));
    let Step::Launch {
        call,
        wait,
        request,
    } = missing.next(&policy, just_after(&failed), None)
    else {
        panic!("expected a launch")
    };
    assert_eq!((call, wait), (1, Duration::ZERO));
    assert!(request.client_token.unwrap().starts_with(TOKEN_PREFIX));

    // ECS could not be asked: not rerun, so as not to start it twice.
    let mut unknown = episode(&failed);
    query(&mut unknown);
    unknown.record_lookup(Lookup::Failed("AccessDeniedException".into()));
    let c = done(&mut unknown, just_after(&failed));
    assert_eq!(c.outcome, Outcome::NotRetryable, "{}", c.why);
    assert!(c.attempts.is_empty());
}

#[test]
fn the_token_moves_on_only_after_ecs_answered_with_tasks_or_failures() {
    let failed = failed("01-agent-ec2.json");
    let mut episode = episode(&failed);
    let now = just_after(&failed);
    let (_, first) = launch(&mut episode, just_after(&failed));
    episode.record(
        rejected("ThrottlingException", false),
        now,
        &Rules::defaults(),
    );
    let (_, after_throttle) = launch(&mut episode, just_after(&failed));
    assert_eq!(
        after_throttle, first,
        "a throttled call is resent as it was: same token, same tags"
    );
    episode.record(placed(0, "AGENT"), now, &Rules::defaults());
    let (_, after_answer) = launch(&mut episode, just_after(&failed));
    assert_ne!(after_answer.client_token, first.client_token);
    assert_eq!(tag(&after_answer, ATTEMPT_TAG), Some("2"));
}

#[test]
fn an_unclear_last_call_says_the_tasks_may_have_started() {
    let failed = failed("01-agent-ec2.json");
    let mut episode = episode(&failed);
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let (_, request) = launch(&mut episode, just_after(&failed));
        tokens.push(request.client_token.unwrap());
        episode.record(
            rejected("ServerException", true),
            just_after(&failed),
            &Rules::defaults(),
        );
    }
    let c = done(&mut episode, just_after(&failed));
    assert_eq!(c.outcome, Outcome::GaveUp);
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
    assert_eq!(c.may_have_started.as_deref(), Some(tokens[0].as_str()));
    assert!(c.why.contains("may have started"), "{}", c.why);
}

#[test]
fn no_call_resends_a_token_ecs_may_have_forgotten() {
    // ECS keeps a token at least an hour after its first use; past the record-age limit (an
    // hour by default) a resend could meet a forgotten token and start the job a second time.
    let hour = Duration::from_secs(3600);
    let minute = Duration::from_secs(60);
    let stale = |c: &Conclusion, since: &str| {
        assert_eq!(c.outcome, Outcome::Stale, "{}", c.why);
        assert!(c.why.contains(since), "{}", c.why);
    };

    // The recorded call's token, resent after throttling that lasted past the limit.
    let with_token = server_exception_with_reference();
    let recorded = with_token.origin.recorded_at.unwrap();
    let mut replay = episode(&with_token);
    launch(&mut replay, recorded + minute);
    replay.record(
        rejected("ThrottlingException", false),
        recorded + minute,
        &Rules::defaults(),
    );
    let c = done(&mut replay, recorded + hour + minute);
    stale(&c, "the recorded call used it 1h 1m before");
    assert_eq!(c.attempts.len(), 1);

    // An own token that got no clear answer, resent on a 40-minute schedule: the third call
    // would resend it 80 minutes after its first use. Resends are not the schedule every copy
    // follows, so the episode counts as running behind by them. The token may have started the
    // job, so the notification names it.
    let failed = failed("01-agent-ec2.json");
    let slow = Policy {
        delay_override: Some(Schedule {
            interval_seconds: 2400.0,
            backoff_rate: 1.0,
            max_delay_seconds: 2400.0,
            jitter_strategy: Jitter::None,
        }),
        ..Policy::default()
    };
    let mut unclear = episode(&failed);
    let (mut at, mut first) = (just_after(&failed), None);
    let c = loop {
        match unclear.next(&slow, at, None) {
            Step::Launch { wait, request, .. } => {
                at += wait;
                first.get_or_insert(request.client_token);
                unclear.record(rejected("ServerException", true), at, &Rules::defaults());
            }
            Step::Done(c) => break c,
            other => panic!("expected a launch or the end, got {other:?}"),
        }
    };
    stale(&c, "runs 1h 21m behind its schedule");
    assert_eq!(c.attempts.len(), 2);
    assert_eq!(c.may_have_started, first.flatten());

    // Within the hour the same resend goes out, as the same call.
    let sent = just_after(&failed);
    let mut unclear = episode(&failed);
    let (_, request) = launch(&mut unclear, sent);
    unclear.record(rejected("ServerException", true), sent, &Rules::defaults());
    let (call, again) = launch(&mut unclear, sent + 50 * minute);
    assert_eq!((call, &again), (2, &request));

    // A hop: every copy of the episode sends the same tokens on the same schedule, so one that
    // runs behind it may resend a token an on-time copy used that much earlier.
    let policy = Policy::default();
    let mut deferred = episode(&failed);
    let Step::Launch { wait, .. } = deferred.next(&policy, sent, None) else {
        panic!("expected a launch")
    };
    deferred.defer(wait);
    let mut redriven = deferred.clone();
    let c = done(&mut redriven, sent + wait + hour);
    stale(&c, "runs 1h 1m behind its schedule");
    assert_eq!(c.may_have_started, request.client_token);
    let (call, _) = launch(&mut deferred, sent + wait + 30 * minute);
    assert_eq!(call, 1, "a late but safe delivery still makes its call");
}

/// The throttled try and the final answer of one SDK call: two records, two eventIDs, one token.
fn siblings() -> (FailedRunTask, FailedRunTask) {
    let mut throttled = event("04-throttling.json");
    throttled["detail"]["requestParameters"]["clientToken"] = "sdk-token-1".into();
    let mut answered = throttled.clone();
    let detail = &mut answered["detail"];
    detail["eventID"] = "11111111-2222-4333-8444-555555555555".into();
    detail["eventTime"] = "2025-05-01T03:00:09Z".into();
    detail["errorCode"] = serde_json::Value::Null;
    detail["errorMessage"] = serde_json::Value::Null;
    detail["responseElements"] = json!({"tasks": [], "failures": [{"reason": "AGENT"}]});
    (failed_from(throttled), failed_from(answered))
}

#[test]
fn every_record_of_one_call_leads_to_the_same_requests() {
    let (throttled, answered) = siblings();
    assert_ne!(throttled.origin.event_id, answered.origin.event_id);

    // The throttled record replays the call; ECS answers with what the token holds, the
    // failures of the final try. Then its own attempt follows.
    let mut from_throttled = episode(&throttled);
    let (_, replay) = launch(&mut from_throttled, just_after(&throttled));
    assert_eq!(replay.client_token.as_deref(), Some("sdk-token-1"));
    from_throttled.record(
        placed(0, "AGENT"),
        just_after(&answered),
        &Rules::defaults(),
    );
    let (_, own_a) = launch(&mut from_throttled, just_after(&answered));

    let mut from_answered = episode(&answered);
    let (_, own_b) = launch(&mut from_answered, just_after(&answered));
    assert_eq!(
        own_a, own_b,
        "same token and tags, so ECS starts the missing task once"
    );
}

#[test]
fn a_record_older_than_the_maximum_age_is_not_rerun() {
    let failed = failed("01-agent-ec2.json");
    let recorded = failed.origin.recorded_at.unwrap();
    let policy = Policy::default();
    let decide_at = |age: Duration, policy: &Policy| {
        plan::decide(&failed, &Rules::defaults(), policy, at(recorded + age))
    };

    let Decision::Conclude(c) = decide_at(Duration::from_secs(3 * 86_400), &policy) else {
        panic!("a 3-day-old record must not open an episode")
    };
    assert_eq!(c.outcome, Outcome::Stale);
    assert!(c.attempts.is_empty());
    assert_eq!(c.still_missing, 1);
    assert!(
        c.why.contains("3d 0h") && c.why.contains("ECS_RERUN_MAX_RECORD_AGE_S"),
        "{}",
        c.why
    );

    // The age that counts is the record's when the first call would go out, its first wait
    // included: a recorded token is only good while ECS remembers it.
    let Decision::Retry(fresh) = decide_at(Duration::ZERO, &policy) else {
        panic!("a fresh record is rerun")
    };
    let first_wait = fresh.schedule(&policy)[0];
    assert!(first_wait > Duration::ZERO && first_wait < policy.max_record_age);
    let last_chance = policy.max_record_age - first_wait;
    for age in [Duration::from_secs(30 * 60), last_chance] {
        assert!(
            matches!(decide_at(age, &policy), Decision::Retry(_)),
            "{age:?} old, plus the first wait, is within the default hour"
        );
    }
    for age in [last_chance + Duration::from_secs(1), policy.max_record_age] {
        assert!(
            matches!(
                decide_at(age, &policy),
                Decision::Conclude(Conclusion {
                    outcome: Outcome::Stale,
                    ..
                })
            ),
            "{age:?} old, plus the first wait, is beyond the default hour"
        );
    }
    let two_hours = Policy {
        max_record_age: Duration::from_secs(7200),
        ..Policy::default()
    };
    assert!(matches!(
        decide_at(Duration::from_secs(90 * 60), &two_hours),
        Decision::Retry(_)
    ));

    // Without an eventTime the age is unknown: not rerun either.
    let mut e = event("01-agent-ec2.json");
    e["detail"]["eventTime"] = serde_json::Value::Null;
    let untimed = failed_from(e);
    assert!(matches!(
        plan::decide(&untimed, &Rules::defaults(), &policy, at(recorded)),
        Decision::Conclude(Conclusion {
            outcome: Outcome::Stale,
            ..
        })
    ));
}

#[test]
fn another_accounts_record_is_reported_never_launched_here() {
    let failed = failed("01-agent-ec2.json");
    let allowed = AllowedAccounts::Listed(vec!["111122223333".to_owned()]);
    let foreign = |allowed_accounts: &AllowedAccounts| {
        let ctx = Context {
            own_account: Some("999988887777"),
            allowed_accounts,
            ..at(just_after(&failed))
        };
        plan::decide(&failed, &Rules::defaults(), &Policy::default(), ctx)
    };

    match foreign(&allowed) {
        Decision::Conclude(c) => {
            assert_eq!(c.outcome, Outcome::NotRetryable);
            assert_eq!(c.class, ReasonClass::NotReplayable);
            assert!(
                c.why.contains("no role for account 111122223333"),
                "{}",
                c.why
            );
            assert!(c.attempts.is_empty());
        }
        other => panic!("an allowed foreign account is reported, not retried: {other:?}"),
    }
    assert!(matches!(
        foreign(&AllowedAccounts::default()),
        Decision::Ignore(Ignored::ForeignAccount { account }) if account == "111122223333"
    ));
    let own = Context {
        own_account: Some("111122223333"),
        ..at(just_after(&failed))
    };
    assert!(matches!(
        plan::decide(&failed, &Rules::defaults(), &Policy::default(), own),
        Decision::Retry(_)
    ));
}

const OWN_SESSION: &str = "arn:aws:sts::111122223333:assumed-role/ecs-rerun-role/ecs-rerun-fn";

#[test]
fn a_call_by_the_functions_own_session_is_ignored_without_tag_or_prefix() {
    // What CloudTrail records of the function's exact replay of a throttled call: the caller's
    // request and token, no ecs-rerun tag, no ecs-rerun token prefix, made by its session.
    let mut e = event("05-server-exception.json");
    e["detail"]["userIdentity"]["arn"] = OWN_SESSION.into();
    let failed = failed_from(e);
    let decide_as = |function_name| {
        let ctx = Context {
            function_name,
            ..at(just_after(&failed))
        };
        plan::decide(&failed, &Rules::defaults(), &Policy::default(), ctx)
    };
    assert!(
        matches!(decide_as(Some("ecs-rerun-fn")), Decision::Ignore(Ignored::OwnSession { arn }) if arn == OWN_SESSION)
    );
    assert!(matches!(decide_as(Some("another-fn")), Decision::Retry(_)));
    assert!(matches!(decide_as(None), Decision::Retry(_)));
}

#[test]
fn with_a_redacted_environment_the_look_up_still_finds_the_callers_retry() {
    let mut e = event("07-redacted-environment.json");
    let detail = &mut e["detail"];
    detail["errorCode"] = "ThrottlingException".into();
    detail["errorMessage"] = "Rate exceeded".into();
    detail["responseElements"] = serde_json::Value::Null;
    detail["requestParameters"]["clientToken"] = serde_json::Value::Null; // an SDK before 2023-11
    // An application's own call (an EventBridge rule retries its API errors itself).
    detail["userIdentity"]["invokedBy"] = serde_json::Value::Null;
    detail["sourceIPAddress"] = "10.0.3.17".into();
    detail["requestParameters"]["startedBy"] = "invoice-sync-cron".into();
    let failed = failed_from(e);
    let policy = Policy {
        replay_redacted_env: true,
        ..Policy::default()
    };
    let Decision::Retry(mut episode) = plan::decide(
        &failed,
        &Rules::defaults(),
        &policy,
        at(just_after(&failed)),
    ) else {
        panic!("retries without the environment, as configured")
    };
    let Step::Lookup { .. } = episode.next(&policy, just_after(&failed), None) else {
        panic!("looks first")
    };
    // The caller's own retry ran with the environment CloudTrail hid; DescribeTasks shows it.
    let theirs = ExistingTask {
        arn: "arn:aws:ecs:us-east-1:111122223333:task/batch/theirs".into(),
        task_definition_arn: Some(
            "arn:aws:ecs:us-east-1:111122223333:task-definition/invoice-sync:4".into(),
        ),
        created_at: Some(failed.origin.recorded_at.unwrap() + Duration::from_secs(1)),
        started_by: Some("invoice-sync-cron".into()),
        group: Some("family:invoice-sync".into()),
        overrides: with_containers(vec![ContainerOverride {
            name: Some("app".into()),
            command: Some(vec!["sync".into(), "--since".into(), "24h".into()]),
            environment: Some(Environment::Listed(vec![KeyValuePair {
                name: Some("SINCE".into()),
                value: Some("2025-04-30".into()),
            }])),
            ..ContainerOverride::default()
        }]),
        call_tag: None,
    };
    episode.record_lookup(Lookup::Found(vec![theirs]));
    let step = episode.next(&policy, just_after(&failed), None);
    assert!(
        matches!(&step, Step::Done(c) if c.outcome == Outcome::AlreadyStarted),
        "the job would start twice: {step:?}"
    );
}

// --- marks --------------------------------------------------------------------------------------

#[test]
fn own_session_is_the_execution_roles_session_named_after_the_function() {
    for (arn, function) in [
        (OWN_SESSION, "ecs-rerun-fn"),
        (
            "arn:aws-cn:sts::111122223333:assumed-role/ecs-rerun-role/ecs-rerun-fn",
            "ecs-rerun-fn",
        ),
        (
            "arn:aws:sts::111122223333:assumed-role/ecs-rerun-function-role/ecs-rerun-EcsRerunFunction-Xy12Ab34Cd56",
            "ecs-rerun-EcsRerunFunction-Xy12Ab34Cd56",
        ),
    ] {
        assert!(
            marks::is_own_session(arn, function),
            "{arn} is {function}'s"
        );
    }
    for arn in [
        // Another session of the same role, or a session whose name merely starts alike.
        "arn:aws:sts::111122223333:assumed-role/ecs-rerun-role/ecs-rerun-fn-2",
        "arn:aws:sts::111122223333:assumed-role/ecs-rerun-role/ecs-rerun",
        "arn:aws:sts::111122223333:assumed-role/ecs-rerun-role/i-0abc",
        // The function's name in the role's place.
        "arn:aws:sts::111122223333:assumed-role/ecs-rerun-fn/8f1d2c3b",
        // Not an assumed-role session.
        "arn:aws:iam::111122223333:role/ecs-rerun-fn",
        "arn:aws:iam::111122223333:user/ecs-rerun-fn",
        "arn:aws:sts::111122223333:federated-user/ecs-rerun-fn",
        "arn:aws:iam::111122223333:assumed-role/ecs-rerun-role/ecs-rerun-fn",
        "arn:aws:sts::111122223333:assumed-role/ecs-rerun-role/ecs-rerun-fn/extra",
        "assumed-role/ecs-rerun-role/ecs-rerun-fn",
        "ecs-rerun-fn",
        "events.amazonaws.com",
        "",
    ] {
        assert!(
            !marks::is_own_session(arn, "ecs-rerun-fn"),
            "{arn} is not the function's"
        );
    }
}

fn call(token: Option<&str>) -> RunTaskRequest {
    RunTaskRequest {
        cluster: Some("batch".into()),
        task_definition: Some("nightly-report:7".into()),
        count: Some(1),
        started_by: Some("AWS Step Functions".into()),
        client_token: token.map(str::to_owned),
        ..RunTaskRequest::default()
    }
}

#[test]
fn call_key_with_a_token_is_the_cluster_and_the_token() {
    let caller = Some("arn:aws:sts::111122223333:assumed-role/sfn/abc");
    let key = marks::call_marks(&call(Some("tok-1")), caller, Some(1_746_068_408)).key;
    // Every try of the call (another record, another eventID and time, even another caller
    // session) shares ECS's idempotency key, and so this one.
    assert_eq!(
        key,
        marks::call_marks(&call(Some("tok-1")), caller, Some(1_746_068_999)).key
    );
    assert_eq!(key, marks::call_marks(&call(Some("tok-1")), None, None).key);
    let by_arn = RunTaskRequest {
        cluster: Some("arn:aws:ecs:us-east-1:111122223333:cluster/batch".into()),
        ..call(Some("tok-1"))
    };
    assert_eq!(
        key,
        marks::call_marks(&by_arn, caller, Some(1_746_068_408)).key
    );
    // Tokens are per cluster, so are keys.
    assert_ne!(
        key,
        marks::call_marks(&call(Some("tok-2")), caller, Some(1_746_068_408)).key
    );
    let elsewhere = RunTaskRequest {
        cluster: Some("web".into()),
        ..call(Some("tok-1"))
    };
    assert_ne!(
        key,
        marks::call_marks(&elsewhere, caller, Some(1_746_068_408)).key
    );
}

#[test]
fn call_key_without_a_token_is_the_request_the_caller_and_the_time_window() {
    let window = marks::SIBLING_WINDOW_SECS;
    let start = 1_746_068_400 / window * window;
    let caller = Some("arn:aws:sts::111122223333:assumed-role/sfn/abc");
    let key =
        |request: &RunTaskRequest, caller, at| marks::call_marks(request, caller, Some(at)).key;
    let first = key(&call(None), caller, start + 1);
    // The throttled tries and the final answer of one old-SDK call, seconds apart.
    assert_eq!(first, key(&call(None), caller, start + window - 1));
    assert_ne!(
        first,
        key(&call(None), caller, start + window),
        "another window"
    );
    assert_ne!(first, key(&call(None), caller, start - 1), "another window");
    let other_caller = Some("arn:aws:sts::111122223333:assumed-role/sfn/xyz");
    assert_ne!(
        first,
        key(&call(None), other_caller, start + 1),
        "another caller"
    );
    let other_request = RunTaskRequest {
        count: Some(2),
        ..call(None)
    };
    assert_ne!(
        first,
        key(&other_request, caller, start + 1),
        "another request"
    );
    let token = marks::own_token(&first, 1);
    assert_eq!(
        token,
        marks::own_token(&key(&call(None), caller, start + 30), 1)
    );
}

// --- lookup -------------------------------------------------------------------------------------

const SINCE: u64 = 1_746_068_408;

fn since() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(SINCE)
}

/// The `ecs-rerun:call` tag of the call the look-up is for.
const CALL: &str = "sdk-token-1";

fn app(command: &[&str]) -> ContainerOverride {
    ContainerOverride {
        name: Some("app".into()),
        command: Some(command.iter().map(|s| (*s).to_owned()).collect()),
        ..ContainerOverride::default()
    }
}

fn bare(name: &str) -> ContainerOverride {
    ContainerOverride {
        name: Some(name.into()),
        ..ContainerOverride::default()
    }
}

fn with_containers(containers: Vec<ContainerOverride>) -> Option<TaskOverride> {
    Some(TaskOverride {
        container_overrides: Some(containers),
        ..TaskOverride::default()
    })
}

fn job(task_definition: &str) -> RunTaskRequest {
    RunTaskRequest {
        cluster: Some("batch".into()),
        task_definition: Some(task_definition.into()),
        started_by: Some("events-rule/nightly".into()),
        overrides: with_containers(vec![app(&["report", "--all"])]),
        ..RunTaskRequest::default()
    }
}

/// A task of `nightly:31` as DescribeTasks shows one that `job("nightly")` started a second
/// after `since()`: group filled in, a bare entry for the container the call did not override.
fn task() -> ExistingTask {
    ExistingTask {
        arn: "arn:aws:ecs:us-east-1:111122223333:task/batch/abc".into(),
        task_definition_arn: Some(
            "arn:aws:ecs:us-east-1:111122223333:task-definition/nightly:31".into(),
        ),
        created_at: Some(since() + Duration::from_secs(1)),
        started_by: Some("events-rule/nightly".into()),
        group: Some("family:nightly".into()),
        overrides: with_containers(vec![app(&["report", "--all"]), bare("log-router")]),
        call_tag: None,
    }
}

#[test]
fn same_job_accepts_every_form_of_the_task_definition() {
    for recorded in [
        "nightly",
        "nightly:31",
        "arn:aws:ecs:us-east-1:111122223333:task-definition/nightly:31",
    ] {
        assert!(
            lookup::same_job(&job(recorded), since(), CALL, &task()),
            "{recorded}"
        );
    }
    for recorded in [
        "nightly:30",
        "night",
        "nightly-report",
        "arn:aws:ecs:us-east-1:111122223333:task-definition/nightly:30",
        "arn:aws:ecs:us-east-1:444455556666:task-definition/nightly:31",
    ] {
        assert!(
            !lookup::same_job(&job(recorded), since(), CALL, &task()),
            "{recorded}"
        );
    }
    let no_definition = RunTaskRequest {
        task_definition: None,
        ..job("nightly")
    };
    assert!(!lookup::same_job(&no_definition, since(), CALL, &task()));
    let unknown_definition = ExistingTask {
        task_definition_arn: None,
        ..task()
    };
    assert!(!lookup::same_job(
        &job("nightly"),
        since(),
        CALL,
        &unknown_definition
    ));
}

#[test]
fn same_job_compares_the_group_with_ecs_default_family_name() {
    let grouped = |group: Option<&str>| RunTaskRequest {
        group: group.map(str::to_owned),
        ..job("nightly:31")
    };
    let in_group = |group: &str| ExistingTask {
        group: Some(group.into()),
        ..task()
    };
    assert!(lookup::same_job(
        &grouped(None),
        since(),
        CALL,
        &in_group("family:nightly")
    ));
    assert!(lookup::same_job(
        &grouped(Some("family:nightly")),
        since(),
        CALL,
        &task()
    ));
    assert!(lookup::same_job(
        &grouped(Some("ledger")),
        since(),
        CALL,
        &in_group("ledger")
    ));
    assert!(!lookup::same_job(
        &grouped(None),
        since(),
        CALL,
        &in_group("ledger")
    ));
    assert!(!lookup::same_job(
        &grouped(Some("ledger")),
        since(),
        CALL,
        &task()
    ));
    assert!(!lookup::same_job(
        &grouped(None),
        since(),
        CALL,
        &in_group("family:nightly-2")
    ));
}

#[test]
fn same_job_compares_started_by() {
    let started = |by: Option<&str>| ExistingTask {
        started_by: by.map(str::to_owned),
        ..task()
    };
    let unset = RunTaskRequest {
        started_by: None,
        ..job("nightly")
    };
    assert!(!lookup::same_job(
        &job("nightly"),
        since(),
        CALL,
        &started(Some("someone-else"))
    ));
    assert!(!lookup::same_job(
        &job("nightly"),
        since(),
        CALL,
        &started(None)
    ));
    assert!(!lookup::same_job(&unset, since(), CALL, &task()));
    assert!(lookup::same_job(&unset, since(), CALL, &started(None)));
    assert!(
        lookup::same_job(&unset, since(), CALL, &started(Some(""))),
        "blank is unset"
    );
}

#[test]
fn same_job_compares_overrides_without_what_describe_tasks_adds() {
    let running = |overrides: Option<TaskOverride>| ExistingTask {
        overrides,
        ..task()
    };
    // DescribeTasks lists a bare `{name}` entry for every container, overridden or not.
    let no_overrides = RunTaskRequest {
        overrides: None,
        ..job("nightly")
    };
    let only_bare = running(with_containers(vec![bare("app"), bare("log-router")]));
    assert!(lookup::same_job(&no_overrides, since(), CALL, &only_bare));
    assert!(lookup::same_job(
        &no_overrides,
        since(),
        CALL,
        &running(with_containers(Vec::new()))
    ));
    assert!(lookup::same_job(
        &no_overrides,
        since(),
        CALL,
        &running(None)
    ));
    // Another command is another job; so is a task that lacks the override.
    let other = running(with_containers(vec![
        app(&["report", "--day"]),
        bare("log-router"),
    ]));
    assert!(!lookup::same_job(&job("nightly"), since(), CALL, &other));
    assert!(!lookup::same_job(
        &job("nightly"),
        since(),
        CALL,
        &only_bare
    ));
    assert!(!lookup::same_job(&no_overrides, since(), CALL, &task()));
    let more_memory = running(Some(TaskOverride {
        memory: Some("4096".into()),
        ..task().overrides.unwrap()
    }));
    assert!(!lookup::same_job(
        &job("nightly"),
        since(),
        CALL,
        &more_memory
    ));
}

#[test]
fn same_job_ignores_an_environment_cloudtrail_redacted() {
    let env = |vars: &[(&str, &str)]| {
        Environment::Listed(
            vars.iter()
                .map(|(n, v)| KeyValuePair {
                    name: Some((*n).into()),
                    value: Some((*v).into()),
                })
                .collect(),
        )
    };
    let recorded = |environment: Environment| RunTaskRequest {
        overrides: with_containers(vec![ContainerOverride {
            environment: Some(environment),
            ..app(&["report", "--all"])
        }]),
        ..job("nightly")
    };
    let running = ExistingTask {
        overrides: with_containers(vec![
            ContainerOverride {
                environment: Some(env(&[("DAY", "2025-04-30")])),
                ..app(&["report", "--all"])
            },
            bare("log-router"),
        ]),
        ..task()
    };
    let redacted = recorded(Environment::Redacted(
        "HIDDEN_DUE_TO_SECURITY_REASONS".into(),
    ));
    assert!(lookup::same_job(&redacted, since(), CALL, &running));
    // In clear, the environment counts.
    assert!(lookup::same_job(
        &recorded(env(&[("DAY", "2025-04-30")])),
        since(),
        CALL,
        &running
    ));
    assert!(!lookup::same_job(
        &recorded(env(&[("DAY", "2025-05-01")])),
        since(),
        CALL,
        &running
    ));
}

#[test]
fn same_job_needs_a_task_created_around_the_record_or_tagged_for_the_call() {
    let created = |seconds: i64, call_tag: Option<&str>| ExistingTask {
        created_at: Some(if seconds < 0 {
            since() - Duration::from_secs(seconds.unsigned_abs())
        } else {
            since() + Duration::from_secs(seconds.unsigned_abs())
        }),
        call_tag: call_tag.map(str::to_owned),
        ..task()
    };
    let same = |task: &ExistingTask| lookup::same_job(&job("nightly"), since(), CALL, task);
    let slack = i64::try_from(lookup::SLACK.as_secs()).unwrap();
    let window = i64::try_from(lookup::CALLER_RETRY_WINDOW.as_secs()).unwrap();
    // By the caller: a 5xx may have created it shortly before the record's eventTime (when the
    // request completed), and its SDK's retries come within a couple of minutes.
    assert!(same(&created(0, None)));
    assert!(same(&created(-slack, None)));
    assert!(!same(&created(-slack - 1, None)), "an earlier run");
    assert!(!same(&created(-86_400, None)), "an earlier run");
    assert!(same(&created(window, None)));
    assert!(
        !same(&created(window + 1, None)),
        "a later run, not a retry"
    );
    // By ecs-rerun for the same call (another record or delivery of it): at any time since.
    assert!(same(&created(3600, Some(CALL))));
    assert!(!same(&created(3600, Some("another-call"))));
    assert!(!same(&created(-slack - 1, Some(CALL))));
    let unknown = ExistingTask {
        created_at: None,
        ..task()
    };
    assert!(!same(&unknown), "unknown age: not assumed ours");
}

// --- config -------------------------------------------------------------------------------------

fn config_from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<&str, &str> = vars.iter().copied().collect();
    Config::from_lookup(|name| map.get(name).map(|v| (*v).to_owned()))
}

#[test]
fn config_defaults() {
    let c = config(&[]);
    assert_eq!(c.policy, Policy::default());
    assert_eq!(c.policy.max_record_age, Duration::from_secs(3600));
    assert!(!c.dry_run && !c.notify_on_recovery && c.allowed_accounts == AllowedAccounts::NONE);
    assert_eq!(c.function_name, None);
    assert_eq!(c.notification_format, NotificationFormat::Text);
}

#[test]
fn config_errors_name_the_variable() {
    let topic = (
        "ECS_RERUN_TOPIC_ARN",
        "arn:aws:sns:us-east-1:111122223333:t",
    );
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "ECS_RERUN_TOPIC_ARN"),
        (
            &[("ECS_RERUN_TOPIC_ARN", "my-topic")],
            "ECS_RERUN_TOPIC_ARN",
        ),
        (
            &[topic, ("ECS_RERUN_MAX_ATTEMPTS", "0")],
            "ECS_RERUN_MAX_ATTEMPTS",
        ),
        (
            &[topic, ("ECS_RERUN_MAX_ATTEMPTS", "three")],
            "ECS_RERUN_MAX_ATTEMPTS",
        ),
        (
            &[topic, ("ECS_RERUN_BASE_DELAY_MS", "-1")],
            "ECS_RERUN_BASE_DELAY_MS",
        ),
        (
            &[
                topic,
                ("ECS_RERUN_BASE_DELAY_MS", "5000"),
                ("ECS_RERUN_MAX_DELAY_MS", "1000"),
            ],
            "ECS_RERUN_MAX_DELAY_MS",
        ),
        (
            &[topic, ("ECS_RERUN_DRY_RUN", "perhaps")],
            "ECS_RERUN_DRY_RUN",
        ),
        (
            &[topic, ("ECS_RERUN_ALLOWED_ACCOUNTS", "1234")],
            "ECS_RERUN_ALLOWED_ACCOUNTS",
        ),
        (&[topic, ("ECS_RERUN_RULES", "[{")], "ECS_RERUN_RULES"),
        // ECS keeps a token at most 24 hours: an age beyond 23 hours is refused.
        (
            &[topic, ("ECS_RERUN_MAX_RECORD_AGE_S", "90000")],
            "ECS_RERUN_MAX_RECORD_AGE_S",
        ),
        (
            &[topic, ("ECS_RERUN_MAX_RECORD_AGE_S", "1h")],
            "ECS_RERUN_MAX_RECORD_AGE_S",
        ),
        (
            &[topic, ("ECS_RERUN_NOTIFICATION_FORMAT", "slack")],
            "ECS_RERUN_NOTIFICATION_FORMAT",
        ),
    ];
    for (vars, name) in cases {
        let err = config_from(vars).unwrap_err().to_string();
        assert!(err.contains(name), "{vars:?}: {err}");
    }
    let ok = config_from(&[
        topic,
        ("ECS_RERUN_MAX_ATTEMPTS", "5"),
        ("ECS_RERUN_ALLOWED_ACCOUNTS", "111122223333, 444455556666"),
        ("ECS_RERUN_MAX_RECORD_AGE_S", "7200"),
        ("AWS_LAMBDA_FUNCTION_NAME", "ecs-rerun-fn"),
        ("ECS_RERUN_NOTIFICATION_FORMAT", " Chat "),
    ])
    .unwrap();
    assert_eq!(ok.notification_format, NotificationFormat::Chat);
    assert_eq!(ok.policy.max_attempts, 5);
    assert_eq!(
        ok.allowed_accounts,
        AllowedAccounts::Listed(vec!["111122223333".into(), "444455556666".into()])
    );
    assert_eq!(ok.member_role, None);
    assert_eq!(ok.policy.max_record_age, Duration::from_secs(7200));
    assert_eq!(ok.function_name.as_deref(), Some("ecs-rerun-fn"));
}

// --- message ------------------------------------------------------------------------------------

fn conclusion_for(file: &str) -> (FailedRunTask, Conclusion) {
    let failed = failed(file);
    match decide(&failed) {
        Decision::Conclude(c) => (failed, c),
        other => panic!("{file} should conclude at once: {other:?}"),
    }
}

#[test]
fn notification_is_short_in_the_subject_and_complete_in_the_body() {
    let (failed, c) = conclusion_for("06-attribute.json");
    let note = compose(&failed.origin, &c, DEFAULT_MAX_MESSAGE_SIZE);
    assert!(
        note.subject.len() < 100 && note.subject.is_ascii() && !note.subject.contains('\n'),
        "{}",
        note.subject
    );
    assert!(
        note.subject.contains("gpu-train")
            && note.subject.contains("batch")
            && note.subject.contains("ATTRIBUTE")
    );
    let body: serde_json::Value = serde_json::from_str(&note.body).expect("the body is JSON");
    for key in [
        "summary",
        "outcome",
        "why",
        "what_to_do",
        "cluster",
        "task_definition",
        "requested",
        "event_id",
        "caller",
        "event_time",
        "console_url",
        "original_failure",
        "attempts",
    ] {
        assert!(body.get(key).is_some(), "body lacks {key}");
    }
    assert_eq!(body["event_id"], failed.origin.event_id);
    assert!(
        body["console_url"]
            .as_str()
            .unwrap()
            .starts_with("https://us-east-1.console.aws.amazon.com/ecs/v2/clusters/batch")
    );
    assert_eq!(note.attributes["task_family"], "gpu-train");
    assert!(
        body.get("cut").is_none(),
        "nothing was cut from a small message"
    );
}

#[test]
fn long_reasons_are_cut_to_fit_the_subject() {
    let (mut failed, c) = conclusion_for("06-attribute.json");
    failed.origin.request.task_definition = Some(format!("{}:1", "x".repeat(150)));
    let note = compose(&failed.origin, &c, DEFAULT_MAX_MESSAGE_SIZE);
    assert!(note.subject.len() < 100, "{}", note.subject.len());
}

#[test]
fn environment_values_never_reach_the_notification() {
    let mut e = event("06-attribute.json");
    e["detail"]["requestParameters"]["overrides"] = serde_json::json!({"containerOverrides": [{"name": "app",
        "environment": [{"name": "DB_PASSWORD", "value": "correct-horse-battery"}]}]});
    e["detail"]["responseElements"]["failures"][0]["detail"] =
        "instance rejected env correct-horse-battery, key AKIAIOSFODNN7EXAMPLE".into();
    let failed = failed_from(e.clone());
    let mut c = match decide(&failed) {
        Decision::Conclude(c) => c,
        other => panic!("{other:?}"),
    };
    c.why = format!(
        "{} / {}",
        c.why, e["detail"]["responseElements"]["failures"][0]["detail"]
    );
    let note = compose(&failed.origin, &c, DEFAULT_MAX_MESSAGE_SIZE);
    let all = format!("{} {} {:?}", note.subject, note.body, note.attributes);
    assert!(!all.contains("correct-horse-battery"), "{all}");
    assert!(!all.contains("AKIAIOSFODNN7EXAMPLE"), "{all}");
}

#[test]
fn a_stale_record_is_notified_with_its_age() {
    let failed = failed("01-agent-ec2.json");
    let now = failed.origin.recorded_at.unwrap() + Duration::from_secs(3 * 86_400);
    let Decision::Conclude(c) =
        plan::decide(&failed, &Rules::defaults(), &Policy::default(), at(now))
    else {
        panic!("stale")
    };
    let note = compose(&failed.origin, &c, DEFAULT_MAX_MESSAGE_SIZE);
    assert!(note.subject.contains("too old"), "{}", note.subject);
    assert_eq!(note.attributes["outcome"], "stale");
    let body: serde_json::Value = serde_json::from_str(&note.body).unwrap();
    assert!(
        body["why"].as_str().unwrap().contains("3d 0h"),
        "{}",
        body["why"]
    );
    assert!(
        body["what_to_do"]
            .as_str()
            .unwrap()
            .contains("ECS_RERUN_MAX_RECORD_AGE_S")
    );
}

/// Three calls to a cluster of `instances` container instances, each refusing with `reason(i)`.
fn refused_everywhere(
    instances: usize,
    reason: impl Fn(usize) -> String,
) -> (FailedRunTask, Conclusion) {
    let failed = failed("01-agent-ec2.json");
    let mut episode = episode(&failed);
    let failures: Vec<PlacementFailure> = (0..instances)
        .map(|i| PlacementFailure {
            arn: Some(format!(
                "arn:aws:ecs:us-east-1:111122223333:container-instance/batch/{i:032x}"
            )),
            reason: Some(reason(i)),
            detail: None,
        })
        .collect();
    for _ in 0..3 {
        launch(&mut episode, just_after(&failed));
        episode.record(
            LaunchResult::Placed {
                tasks: Vec::new(),
                failures: failures.clone(),
            },
            just_after(&failed),
            &Rules::defaults(),
        );
    }
    let c = done(&mut episode, just_after(&failed));
    assert_eq!(c.outcome, Outcome::GaveUp, "{}", c.why);
    (failed, c)
}

#[test]
fn nine_hundred_instances_times_three_calls_make_one_short_notification() {
    let (failed, c) = refused_everywhere(900, |_| "RESOURCE:MEMORY".to_owned());
    let note = compose(&failed.origin, &c, DEFAULT_MAX_MESSAGE_SIZE);
    assert!(
        sns_size(&note) <= DEFAULT_MAX_MESSAGE_SIZE,
        "{}",
        sns_size(&note)
    );
    // The original failure was AGENT; the last call's decides, and the subject names it.
    assert!(note.subject.contains("RESOURCE:MEMORY"), "{}", note.subject);
    let body: serde_json::Value = serde_json::from_str(&note.body).unwrap();
    assert_eq!(body["deciding_failure"], "RESOURCE:MEMORY");
    let attempts = body["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    for attempt in attempts {
        let groups = attempt["failures"].as_array().unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0]["count"], 900);
        assert!(groups[0]["examples"].as_array().unwrap().len() <= MAX_EXAMPLES);
    }
}

#[test]
fn a_notification_over_the_topics_limit_is_cut_and_says_what_was_cut() {
    // 900 instances, each refusing for its own reason: no grouping helps.
    let (failed, c) = refused_everywhere(900, |i| format!("RESOURCE:CUSTOM-{i}"));
    let full = compose(&failed.origin, &c, usize::MAX);
    for limit in [DEFAULT_MAX_MESSAGE_SIZE, 16_384, 2_048] {
        let note = compose(&failed.origin, &c, limit);
        assert!(sns_size(&note) <= limit, "{limit}: {}", sns_size(&note));
        let body: serde_json::Value = serde_json::from_str(&note.body).expect("still JSON");
        if sns_size(&full) > limit {
            assert!(body.get("cut").is_some(), "{limit}: says what was cut");
        }
        assert!(body["summary"].as_str().unwrap().contains("nightly-report"));
    }
    assert!(
        sns_size(&full) > 2_048,
        "the test needs a message that does not fit"
    );
}

#[test]
fn task_family_from_every_form() {
    assert_eq!(task_family("nightly"), "nightly");
    assert_eq!(task_family("nightly:31"), "nightly");
    assert_eq!(
        task_family("arn:aws:ecs:us-east-1:111122223333:task-definition/nightly:31"),
        "nightly"
    );
}

// --- metrics ------------------------------------------------------------------------------------

fn report(outcome: Outcome, recovery_ms: Option<u64>) -> ecs_rerun::handler::Report {
    ecs_rerun::handler::Report {
        event_id: Some("e-1".into()),
        outcome,
        reason_class: Some(ReasonClass::Transient),
        reason: "r".into(),
        attempts: 2,
        tasks_started: 1,
        waited_ms: 30_000,
        notified: false,
        subject: None,
        cluster: Some("batch".into()),
        task_family: Some("nightly".into()),
        recovery_ms,
        caller: Some(ecs_rerun::core::caller::Caller::Scheduler),
        rule: Some("onReason=AGENT -> retry".into()),
        account: Some("444455556666".into()),
        region: Some("eu-west-1".into()),
    }
}

#[test]
fn emf_line_declares_every_metric_it_carries() {
    use ecs_rerun::metrics::{NAMESPACE, emf_line};
    let line: serde_json::Value = serde_json::from_str(
        &emf_line(&report(Outcome::Recovered, Some(95_000)), 1_700_000_000_000).unwrap(),
    )
    .unwrap();
    let directive = &line["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], NAMESPACE);
    assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000u64);
    for dims in directive["Dimensions"].as_array().unwrap() {
        for dim in dims.as_array().unwrap() {
            assert!(
                line[dim.as_str().unwrap()].is_string(),
                "dimension {dim} has a value"
            );
        }
    }
    let names: Vec<&str> = directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "FailuresSeen",
            "RetriesIssued",
            "Recoveries",
            "Notifications",
            "TimeToRecovery"
        ]
    );
    for name in names {
        assert!(line[name].is_number(), "{name} has a value");
    }
    assert_eq!(line["Outcome"], "recovered");
    // The account and Region of the call travel as properties, never as dimensions.
    assert_eq!(line["account"], "444455556666");
    assert_eq!(line["region"], "eu-west-1");
    let dimensions = directive["Dimensions"].to_string();
    assert!(!dimensions.contains("account") && !dimensions.contains("region"));
    assert_eq!(line["RetriesIssued"], 2);
    assert_eq!(line["Recoveries"], 1);

    let gave_up: serde_json::Value =
        serde_json::from_str(&emf_line(&report(Outcome::GaveUp, None), 0).unwrap()).unwrap();
    assert!(gave_up.get("TimeToRecovery").is_none());
    assert_eq!(gave_up["Recoveries"], 0);
    assert!(
        emf_line(&report(Outcome::Ignored, None), 0).is_none(),
        "ignored events are not failures"
    );
    let guarded: serde_json::Value =
        serde_json::from_str(&emf_line(&report(Outcome::Guarded, None), 0).unwrap()).unwrap();
    assert_eq!(guarded["LaunchesGuarded"], 1, "a guarded launch is counted");
    assert!(
        guarded.get("FailuresSeen").is_none(),
        "a guarded launch is not a failure"
    );
}

// --- callers and what CloudTrail gives an operator ----------------------------------------------

#[test]
fn caller_rules_match_by_caller_account_cluster_and_family_with_globs() {
    let rules = Rules::with_overrides(
        r#"[{"onCaller": "other", "onAccount": "1111*", "onCluster": "gpu-?", "action": "leave"},
            {"onTaskFamily": "etl-*", "onReason": "RESOURCE:*", "action": "notify"}]"#,
        3,
    )
    .unwrap();
    let subject = |caller: &str, cluster: &str, family: &str| Subject {
        caller: Some(caller.to_owned()),
        account: "111122223333".to_owned(),
        cluster: cluster.to_owned(),
        family: family.to_owned(),
        ..Subject::default()
    };
    let memory = failure("RESOURCE:MEMORY");
    assert_eq!(
        rules
            .placement(&memory, &subject("other", "gpu-1", "x"))
            .action,
        Action::Leave
    );
    assert_eq!(
        rules
            .placement(&memory, &subject("other", "gpu-12", "x"))
            .action,
        Action::Retry,
        "? is one character"
    );
    assert_eq!(
        rules
            .placement(&memory, &subject("other", "web", "etl-daily"))
            .action,
        Action::Notify
    );
    assert_eq!(
        rules
            .placement(&memory, &subject("batch", "gpu-1", "x"))
            .action,
        Action::Leave,
        "batch is left by the built-in rule"
    );
    assert_eq!(
        rules
            .api_error("ThrottlingException", "", &subject("scheduler", "web", "x"))
            .action,
        Action::Leave,
        "the Scheduler retries API errors itself"
    );
    let own = Subject {
        caller: None,
        ..subject("scheduler", "web", "x")
    };
    assert_eq!(
        rules.api_error("ThrottlingException", "", &own).action,
        Action::Retry,
        "no onCaller rule concerns ecs-rerun's own calls"
    );
}

#[test]
fn cloudtrail_as_an_operator_has_it_becomes_eventbridge_events() {
    use ecs_rerun::core::event::envelopes;
    let record = event("01-agent-ec2.json")["detail"].clone();
    let stop = json!({"eventSource": "ecs.amazonaws.com", "eventName": "StopTask", "eventID": "s"});

    // A trail's log file: RunTask records wrapped, others left out, and said so.
    let found = envelopes(
        json!({"Records": [record, stop, event("02-resource-memory-partial.json")["detail"]]}),
    )
    .unwrap();
    assert_eq!(found.events.len(), 2);
    assert!(
        found
            .note
            .as_deref()
            .unwrap()
            .contains("2 RunTask record(s) of 3 in a trail log file")
    );
    let wrapped = &found.events[0];
    assert_eq!(wrapped["detail-type"], "AWS API Call via CloudTrail");
    assert_eq!(wrapped["source"], "aws.ecs");
    assert_eq!(wrapped["account"], "111122223333");
    assert_eq!(wrapped["detail"], record);
    assert!(
        matches!(decode(wrapped.clone()), Ok(Decoded::Failed(_))),
        "decodes like the real thing"
    );

    // A lookup-events answer: CloudTrailEvent is a JSON string.
    let answer =
        json!({"Events": [{"EventName": "RunTask", "CloudTrailEvent": record.to_string()}]});
    let found = envelopes(answer).unwrap();
    assert_eq!(found.events.len(), 1);
    assert_eq!(found.events[0]["detail"], record);

    // A bare record, and an EventBridge event as it is.
    assert_eq!(envelopes(record.clone()).unwrap().events.len(), 1);
    let as_is = envelopes(event("01-agent-ec2.json")).unwrap();
    assert_eq!((as_is.events.len(), as_is.note), (1, None));

    let err = envelopes(json!({"hello": 1})).unwrap_err();
    assert!(err.contains("neither an EventBridge event"), "{err}");
    let err = envelopes(json!({"Events": [{"CloudTrailEvent": "{not json"}]})).unwrap_err();
    assert!(err.contains("CloudTrailEvent is not JSON"), "{err}");
}
