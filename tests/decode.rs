//! Decoding every sample event, the malformed one, and the odd shapes CloudTrail really sends.

mod common;

use std::time::{Duration, SystemTime};

use common::event;
use ecs_rerun::core::decode::{DecodeError, Decoded, FailedRunTask, Failure, Ignored, decode};
use ecs_rerun::core::request::{Environment, RunTaskRequest, prune_nulls};
use proptest::prelude::*;
use serde_json::{Value, json};

fn failed(name: &str) -> FailedRunTask {
    match decode(event(name)) {
        Ok(Decoded::Failed(f)) => *f,
        other => panic!("{name}: expected a failed RunTask, got {other:?}"),
    }
}

fn ignored(value: &Value) -> Ignored {
    match decode(value.clone()) {
        Ok(Decoded::Ignored(why)) => why,
        other => panic!("expected an ignored event, got {other:?}"),
    }
}

#[test]
fn every_failure_fixture_decodes_with_its_failure_and_counts() {
    // (file, requested, started, first reason or error code)
    let table = [
        ("01-agent-ec2.json", 1, 0, "AGENT"),
        ("02-resource-memory-partial.json", 5, 2, "RESOURCE:MEMORY"),
        (
            "03-fargate-capacity.json",
            2,
            0,
            "Capacity is unavailable at this time. Please try again later or in a different availability zone",
        ),
        ("04-throttling.json", 1, 0, "ThrottlingException"),
        ("05-server-exception.json", 1, 0, "ServerException"),
        ("06-attribute.json", 1, 0, "ATTRIBUTE"),
        ("07-redacted-environment.json", 1, 0, "AGENT"),
    ];
    for (file, requested, started, first) in table {
        let f = failed(file);
        assert_eq!(f.origin.request.requested_count(), requested, "{file}");
        assert_eq!(f.origin.started, started, "{file}");
        let lead = match &f.failure {
            Failure::Placement(list) => list[0].reason.clone().unwrap(),
            Failure::Api { code, .. } => code.clone(),
            other => panic!("{file}: a CloudTrail record decoded as {other:?}"),
        };
        assert_eq!(lead, first, "{file}");
        assert_eq!(f.origin.account, "111122223333", "{file}");
        assert!(f.replay_blocker.is_none(), "{file}: {:?}", f.replay_blocker);
    }
}

#[test]
fn request_parameters_round_trip_without_loss() {
    // Like the lambda-events fixtures: decode, serialise back, compare with the file.
    for file in [
        "01-agent-ec2.json",
        "02-resource-memory-partial.json",
        "03-fargate-capacity.json",
        "04-throttling.json",
        "05-server-exception.json",
        "06-attribute.json",
        "07-redacted-environment.json",
    ] {
        let raw = event(file);
        let original = prune_nulls(raw.pointer("/detail/requestParameters").cloned().unwrap());
        let typed: RunTaskRequest = failed(file).origin.request;
        assert_eq!(
            prune_nulls(serde_json::to_value(&typed).unwrap()),
            original,
            "{file}"
        );
    }
}

#[test]
fn api_errors_carry_code_and_message() {
    let f = failed("04-throttling.json");
    assert_eq!(
        f.failure,
        Failure::Api {
            code: "ThrottlingException".into(),
            message: "Rate exceeded".into()
        }
    );
}

#[test]
fn event_time_and_the_callers_session_are_decoded() {
    // The age of the record decides whether it is rerun; the session whether it is our own.
    let f = failed("12-step-functions.json");
    assert_eq!(f.origin.event_time.as_deref(), Some("2025-05-01T03:00:08Z"));
    assert_eq!(
        f.origin.recorded_at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_746_068_408))
    );
    let session = "arn:aws:sts::111122223333:assumed-role/StepFunctions-nightly-pipeline-role/rTzKqLmNoPqRsTuVwXyZ0123456789ab";
    assert_eq!(f.caller_arn.as_deref(), Some(session));
    assert_eq!(f.origin.caller.as_deref(), Some(session));

    let mut e = event("04-throttling.json");
    e["detail"]["eventTime"] = json!("2025-05-01T05:00:08+02:00");
    e["detail"]["userIdentity"] = json!({"type": "AWSService", "invokedBy": "batch.amazonaws.com"});
    let f = match decode(e).unwrap() {
        Decoded::Failed(f) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        f.origin.recorded_at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_746_068_408)),
        "an offset is the same instant"
    );
    assert_eq!(f.origin.caller.as_deref(), Some("batch.amazonaws.com"));
    assert_eq!(f.caller_arn, None, "a service is no session");
}

#[test]
fn an_unreadable_event_time_is_an_error_naming_the_field() {
    let mut e = event("01-agent-ec2.json");
    e["detail"]["eventTime"] = json!("yesterday at three");
    match decode(e).unwrap_err() {
        DecodeError::Invalid { path, problem } => {
            assert_eq!(path, "detail.eventTime");
            assert!(problem.contains("yesterday at three"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    let mut e = event("01-agent-ec2.json");
    e["detail"]["eventTime"] = Value::Null;
    let f = match decode(e).unwrap() {
        Decoded::Failed(f) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        f.origin.recorded_at, None,
        "absent is decoded; the plan treats it as stale"
    );
}

#[test]
fn redacted_environment_is_recognised() {
    let f = failed("07-redacted-environment.json");
    assert!(f.origin.request.environment_redacted());
    let container = &f
        .origin
        .request
        .overrides
        .unwrap()
        .container_overrides
        .unwrap()[0];
    assert!(
        matches!(&container.environment, Some(Environment::Redacted(s)) if s == "HIDDEN_DUE_TO_SECURITY_REASONS")
    );
}

#[test]
fn ignored_fixtures_say_why() {
    assert!(matches!(
        ignored(&event("08-own-retry.json")),
        Ignored::OwnRetry { .. }
    ));
    assert!(matches!(
        ignored(&event("10-not-runtask.json")),
        Ignored::NotRunTask { .. }
    ));
}

#[test]
fn own_retry_is_recognised_by_token_when_tags_are_missing() {
    let mut e = event("08-own-retry.json");
    e["detail"]["requestParameters"]["tags"] = json!([]);
    assert!(matches!(ignored(&e), Ignored::OwnRetry { marker } if marker.contains("clientToken")));
}

#[test]
fn other_event_types_are_ignored() {
    let e = json!({"detail-type": "ECS Container Instance State Change", "source": "aws.ecs", "detail": {}});
    assert!(matches!(ignored(&e), Ignored::OtherEvent { .. }));
}

#[test]
fn a_task_change_without_a_task_arn_is_an_error_not_a_silent_drop() {
    let e = json!({"detail-type": "ECS Task State Change", "source": "aws.ecs", "id": "x", "detail": {}});
    assert_eq!(
        decode(e).unwrap_err(),
        DecodeError::Missing("detail.taskArn")
    );
}

#[test]
fn a_successful_record_decodes_as_started_with_its_tasks() {
    let Ok(Decoded::Started(started)) = decode(event("09-successful-runtask.json")) else {
        panic!("09 is a successful RunTask");
    };
    assert!(!started.task_arns.is_empty());
    assert!(started.replay_blocker.is_none());
    assert!(started.origin.request.task_definition.is_some());
}

#[test]
fn failures_for_other_candidates_when_all_tasks_started_are_a_success() {
    let mut e = event("01-agent-ec2.json");
    e["detail"]["responseElements"]["tasks"] =
        json!([{"taskArn": "arn:aws:ecs:us-east-1:111122223333:task/batch/x"}]);
    let Ok(Decoded::Started(started)) = decode(e) else {
        panic!("every requested task started");
    };
    assert_eq!(
        started.task_arns,
        ["arn:aws:ecs:us-east-1:111122223333:task/batch/x"]
    );
}

#[test]
fn malformed_fixture_names_the_field() {
    let text =
        std::fs::read_to_string(common::repo_path("tests/fixtures/malformed-event.json")).unwrap();
    let err = decode(serde_json::from_str(&text).unwrap()).unwrap_err();
    match &err {
        DecodeError::Invalid { path, .. } => assert_eq!(path, "detail.requestParameters.count"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("invalid type"), "{err}");
}

#[test]
fn nulls_are_tolerated_everywhere() {
    let mut e = event("03-fargate-capacity.json");
    let rp = &mut e["detail"]["requestParameters"];
    rp["platformVersion"] = Value::Null;
    rp["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"] = Value::Null;
    rp["overrides"]["containerOverrides"][0]["command"] = Value::Null;
    e["detail"]["userIdentity"] = Value::Null;
    let f = match decode(e.clone()).unwrap() {
        Decoded::Failed(f) => f,
        other => panic!("{other:?}"),
    };
    assert!(f.origin.request.platform_version.is_none());
    assert!(f.replay_blocker.is_none(), "null is the same as absent");
}

#[test]
fn unknown_or_omitted_request_fields_block_the_replay() {
    let mut e = event("01-agent-ec2.json");
    e["detail"]["requestParameters"]["overrides"]["containerOverrides"][0]["brandNewOption"] =
        json!(true);
    e["detail"]["requestParameters"]["omitted"] = json!(true);
    let f = match decode(e.clone()).unwrap() {
        Decoded::Failed(f) => f,
        other => panic!("{other:?}"),
    };
    let blocker = f.replay_blocker.unwrap();
    assert!(
        blocker.contains("requestParameters.overrides.containerOverrides[0].brandNewOption"),
        "{blocker}"
    );
    assert!(blocker.contains("requestParameters.omitted"), "{blocker}");
}

#[test]
fn omitted_response_blocks_the_replay_instead_of_guessing_the_count() {
    let mut e = event("02-resource-memory-partial.json");
    e["detail"]["responseElements"] =
        json!({"omitted": true, "failures": [{"reason": "RESOURCE:MEMORY"}]});
    let f = match decode(e.clone()).unwrap() {
        Decoded::Failed(f) => f,
        other => panic!("{other:?}"),
    };
    assert!(f.replay_blocker.unwrap().contains("how many tasks started"));
}

#[test]
fn access_denied_without_request_parameters_is_a_failure_to_report() {
    let mut e = event("04-throttling.json");
    e["detail"]["errorCode"] = json!("AccessDenied");
    e["detail"]["requestParameters"] = Value::Null;
    let f = match decode(e.clone()).unwrap() {
        Decoded::Failed(f) => f,
        other => panic!("{other:?}"),
    };
    assert!(f.replay_blocker.unwrap().contains("no requestParameters"));
}

#[test]
fn non_objects_are_clear_errors() {
    for input in [
        json!(null),
        json!([]),
        json!("RunTask"),
        json!(42),
        json!({}),
    ] {
        let err = decode(input.clone()).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid event"),
            "{input}: {err}"
        );
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z:_ ]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// No input panics: random JSON, and random JSON grafted into a real record.
    #[test]
    fn decode_never_panics(junk in arb_json(), slot in 0usize..6) {
        let _ = decode(junk.clone());
        let mut e = event("02-resource-memory-partial.json");
        let target = match slot {
            0 => &mut e["detail"]["requestParameters"],
            1 => &mut e["detail"]["responseElements"],
            2 => &mut e["detail"]["requestParameters"]["overrides"],
            3 => &mut e["detail"]["responseElements"]["failures"],
            4 => &mut e["detail"]["userIdentity"],
            _ => &mut e["detail"]["requestParameters"]["tags"],
        };
        *target = junk;
        let _ = decode(e.clone());
    }
}

#[test]
fn the_caller_is_named_from_who_made_the_call() {
    use ecs_rerun::core::caller::Caller;
    for (file, caller) in [
        ("01-agent-ec2.json", "events-rule"),
        ("11-batch-placement.json", "batch"),
        ("12-step-functions.json", "step-functions"),
        ("13-scheduler-throttled.json", "scheduler"),
        ("04-throttling.json", "other"),
        ("02-resource-memory-partial.json", "other"),
    ] {
        assert_eq!(failed(file).origin.called_by.name(), caller, "{file}");
    }
    assert_eq!(
        failed("02-resource-memory-partial.json").origin.called_by,
        Caller::Other {
            principal: Some("arn:aws:iam::111122223333:user/alice".into())
        },
        "someone else is named with their principal"
    );
}

#[test]
fn who_made_the_call_wins_over_what_it_wrote_in_started_by() {
    // An EventBridge rule whose target sets startedBy "AWS Step Functions" is still a rule.
    let mut e = event("01-agent-ec2.json");
    e["detail"]["requestParameters"]["startedBy"] = json!("AWS Step Functions");
    let Decoded::Failed(f) = decode(e).unwrap() else {
        panic!("a failure")
    };
    assert_eq!(f.origin.called_by.name(), "events-rule");

    // A known principal wrote startedBy itself: it stays who it is. Only with no userIdentity at
    // all is startedBy the caller's name; an `aws:batch:` tag only AWS Batch can set.
    for (principal, started_by, tags, caller) in [
        (true, json!("AWS Step Functions"), json!([]), "other"),
        (true, json!("events-rule/nightly"), json!([]), "other"),
        (
            false,
            json!("AWS Step Functions"),
            json!([]),
            "step-functions",
        ),
        (
            false,
            json!("events-rule/nightly"),
            json!([]),
            "events-rule",
        ),
        (
            true,
            json!("job-1234"),
            json!([{"key": "aws:batch:job-queue", "value": "q"}]),
            "batch",
        ),
        (false, json!("nightly-cron"), json!([]), "other"),
    ] {
        let mut e = event("04-throttling.json");
        if !principal {
            e["detail"]["userIdentity"] = serde_json::Value::Null;
        }
        e["detail"]["requestParameters"]["startedBy"] = started_by;
        e["detail"]["requestParameters"]["tags"] = tags;
        let Decoded::Failed(f) = decode(e).unwrap() else {
            panic!("a failure")
        };
        assert_eq!(f.origin.called_by.name(), caller);
    }

    // The Batch service-linked role names Batch even without invokedBy.
    let mut e = event("11-batch-placement.json");
    e["detail"]["userIdentity"]["invokedBy"] = serde_json::Value::Null;
    e["detail"]["sourceIPAddress"] = json!("10.0.0.1");
    let Decoded::Failed(f) = decode(e).unwrap() else {
        panic!("a failure")
    };
    assert_eq!(f.origin.called_by.name(), "batch");
}
