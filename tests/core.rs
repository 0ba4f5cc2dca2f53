//! The pure core without AWS: the classification table, the plan's arithmetic (backoff, tokens,
//! tags), the configuration and the notification text.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{config, event, failure};
use ecs_rerun::classify::{Action, ReasonClass, Rules};
use ecs_rerun::config::{Config, ConfigError};
use ecs_rerun::decode::{Decoded, decode};
use ecs_rerun::message::compose;
use ecs_rerun::plan::{
    self, ATTEMPT_TAG, Decision, EVENT_ID_TAG, MAX_TAGS, Policy, Step, TOKEN_PREFIX,
};
use ecs_rerun::request::Tag;
use ecs_rerun::request::task_family;
use proptest::prelude::*;

// --- classify -----------------------------------------------------------------------------------

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
        let v = rules.placement(&failure(reason));
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
            rules.api_error(code, message).action,
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
    ]"#).unwrap();
    assert_eq!(
        rules.placement(&failure("RESOURCE:PORTS")).action,
        Action::Notify
    );
    assert_eq!(
        rules.placement(&failure("RESOURCE:MEMORY")).action,
        Action::Retry,
        "defaults still apply"
    );
    assert_eq!(
        rules
            .api_error(
                "InvalidParameterException",
                "No Container Instances were found in your cluster."
            )
            .action,
        Action::Retry
    );
    assert_eq!(
        rules
            .api_error("InvalidParameterException", "subnet missing")
            .action,
        Action::Notify
    );
}

#[test]
fn bad_rules_are_clear_errors() {
    for (json, says) in [
        ("not json", "not valid JSON"),
        (r#"[{"action": "retry"}]"#, "needs onReason or onErrorCode"),
        (
            r#"[{"onReason": "A", "onErrorCode": "B", "action": "retry"}]"#,
            "both",
        ),
        (
            r#"[{"onReason": "A", "action": "maybe"}]"#,
            "unknown variant",
        ),
        (r#"[{"onReasn": "A", "action": "retry"}]"#, "unknown field"),
    ] {
        let err = Rules::with_overrides(json).unwrap_err().to_string();
        assert!(
            err.contains("ECS_RERUN_RULES") && err.contains(says),
            "{json}: {err}"
        );
    }
}

#[test]
fn one_transient_failure_among_several_is_enough_to_retry() {
    let rules = Rules::defaults();
    let verdicts = vec![
        rules.placement(&failure("ATTRIBUTE")),
        rules.placement(&failure("AGENT")),
    ];
    assert_eq!(
        ecs_rerun::classify::overall(&verdicts).unwrap().action,
        Action::Retry
    );
}

// --- plan ---------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn backoff_stays_within_half_and_full_step(attempt in 1u32..12, id in "[a-f0-9-]{1,36}", base in 0u64..60_000, extra in 0u64..600_000) {
        let policy = Policy { base_delay: Duration::from_millis(base), max_delay: Duration::from_millis(base + extra), ..Policy::default() };
        let step = policy.base_delay.saturating_mul(2u32.saturating_pow(attempt - 1)).min(policy.max_delay);
        let wait = plan::backoff(&policy, &id, attempt);
        prop_assert!(wait >= step / 2 && wait <= step, "{wait:?} vs step {step:?}");
    }

    #[test]
    fn tokens_are_valid_deterministic_and_distinct(id in ".{0,200}", seq in 1u32..1000) {
        let token = plan::client_token(&id, seq);
        prop_assert!(token.len() <= 64 && token.starts_with(TOKEN_PREFIX));
        prop_assert!(token.bytes().all(|b| (33..=126).contains(&b)), "ECS accepts ASCII 33-126 only");
        prop_assert_eq!(&token, &plan::client_token(&id, seq));
        prop_assert_ne!(&token, &plan::client_token(&id, seq + 1));
    }

    #[test]
    fn retry_tags_respect_the_limit_and_keep_user_tags(n in 0usize..60, reserved in 0usize..5) {
        let mut original: Vec<Tag> = (0..n).map(|i| Tag { key: Some(format!("k{i}")), value: Some("v".into()) }).collect();
        original.extend((0..reserved).map(|i| Tag { key: Some(format!("AWS:batch:{i}")), value: Some("x".into()) }));
        let tags = plan::retry_tags(Some(&original), "evt", 1).unwrap_or_default();
        prop_assert!(tags.len() <= MAX_TAGS.max(n));
        prop_assert!(tags.iter().all(|t| !t.key.as_deref().unwrap().to_ascii_lowercase().starts_with("aws:")));
        let users = tags.iter().filter(|t| t.key.as_deref().unwrap().starts_with('k')).count();
        prop_assert_eq!(users, n, "the user's own tags are never dropped");
        if n <= MAX_TAGS - 2 {
            prop_assert!(tags.iter().any(|t| t.key.as_deref() == Some(ATTEMPT_TAG)));
            prop_assert!(tags.iter().any(|t| t.key.as_deref() == Some(EVENT_ID_TAG)));
        }
    }
}

#[test]
fn first_retry_asks_for_the_missing_tasks_without_the_reference_id() {
    let mut e = event("02-resource-memory-partial.json");
    e["detail"]["requestParameters"]["referenceId"] = "ecs-internal".into();
    let Ok(Decoded::Failed(failed)) = decode(e.clone()) else {
        panic!()
    };
    let Decision::Retry(mut episode) =
        plan::decide(&failed, &Rules::defaults(), &Policy::default())
    else {
        panic!()
    };
    let Step::Launch {
        attempt, request, ..
    } = episode.next(None)
    else {
        panic!()
    };
    assert_eq!(attempt, 1);
    assert_eq!(request.count, Some(3));
    assert_eq!(request.reference_id, None);
    assert_ne!(
        request.client_token, failed.request.client_token,
        "never the recorded token"
    );
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
    assert!(!c.dry_run && !c.notify_on_recovery && c.allowed_accounts.is_empty());
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
    ];
    for (vars, name) in cases {
        let err = config_from(vars).unwrap_err().to_string();
        assert!(err.contains(name), "{vars:?}: {err}");
    }
    let ok = config_from(&[
        topic,
        ("ECS_RERUN_MAX_ATTEMPTS", "5"),
        ("ECS_RERUN_ALLOWED_ACCOUNTS", "111122223333, 444455556666"),
    ])
    .unwrap();
    assert_eq!(ok.policy.max_attempts, 5);
    assert_eq!(ok.allowed_accounts, ["111122223333", "444455556666"]);
}

// --- message ------------------------------------------------------------------------------------

fn conclusion_for(
    file: &str,
) -> (
    ecs_rerun::decode::FailedRunTask,
    ecs_rerun::plan::Conclusion,
) {
    let Ok(Decoded::Failed(failed)) = decode(event(file)) else {
        panic!()
    };
    match plan::decide(&failed, &Rules::defaults(), &Policy::default()) {
        Decision::Conclude(c) => (*failed, c),
        Decision::Retry(_) => panic!("{file} should conclude at once"),
    }
}

#[test]
fn notification_is_short_in_the_subject_and_complete_in_the_body() {
    let (failed, c) = conclusion_for("06-attribute.json");
    let note = compose(&failed, &c);
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
    assert_eq!(body["event_id"], failed.event_id);
    assert!(
        body["console_url"]
            .as_str()
            .unwrap()
            .starts_with("https://us-east-1.console.aws.amazon.com/ecs/v2/clusters/batch")
    );
    assert_eq!(note.attributes["task_family"], "gpu-train");
}

#[test]
fn long_reasons_are_cut_to_fit_the_subject() {
    let (mut failed, c) = conclusion_for("06-attribute.json");
    failed.request.task_definition = Some(format!("{}:1", "x".repeat(150)));
    let note = compose(&failed, &c);
    assert!(note.subject.len() < 100, "{}", note.subject.len());
}

#[test]
fn environment_values_never_reach_the_notification() {
    let mut e = event("06-attribute.json");
    e["detail"]["requestParameters"]["overrides"] = serde_json::json!({"containerOverrides": [{"name": "app",
        "environment": [{"name": "DB_PASSWORD", "value": "correct-horse-battery"}]}]});
    e["detail"]["responseElements"]["failures"][0]["detail"] =
        "instance rejected env correct-horse-battery, key AKIAIOSFODNN7EXAMPLE".into();
    let Ok(Decoded::Failed(failed)) = decode(e.clone()) else {
        panic!()
    };
    let mut c = match plan::decide(&failed, &Rules::defaults(), &Policy::default()) {
        Decision::Conclude(c) => c,
        _ => panic!(),
    };
    c.why = format!(
        "{} / {}",
        c.why, e["detail"]["responseElements"]["failures"][0]["detail"]
    );
    let note = compose(&failed, &c);
    let all = format!("{} {} {:?}", note.subject, note.body, note.attributes);
    assert!(!all.contains("correct-horse-battery"), "{all}");
    assert!(!all.contains("AKIAIOSFODNN7EXAMPLE"), "{all}");
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

fn report(
    outcome: ecs_rerun::plan::Outcome,
    recovery_ms: Option<u64>,
) -> ecs_rerun::handler::Report {
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
    }
}

#[test]
fn emf_line_declares_every_metric_it_carries() {
    use ecs_rerun::metrics::{NAMESPACE, emf_line};
    use ecs_rerun::plan::Outcome;
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
}
