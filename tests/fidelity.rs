//! Fidelity: the job that is re-run is the job that failed.
//!
//! The records are generated as raw CloudTrail JSON: `requestParameters` in the ECS API's own
//! camelCase shape (the RunTask API reference and the botocore model, aws-facts §2.4), written
//! here key by key and never produced by ecs-rerun's Rust types. So a field those types forget
//! or misname shows: decoding marks the record not replayable, or the request ecs-rerun plans
//! differs from the record. For every generated record:
//! - the request ecs-rerun plans equals the recorded one, apart from what a retry must change
//!   (`count`, `tags`, `clientToken`, `referenceId`), and the JSON body the AWS SDK then puts on
//!   the wire equals the recorded request with those same changes, field for field;
//! - an API-error record is first replayed as exactly the recorded call.
//!
//! Together they show that no parameter is lost between CloudTrail and ECS.

use std::time::{Duration, SystemTime};

use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::capture_request;
use ecs_rerun::aws::ecs::EcsLauncher;
use ecs_rerun::core::classify::Rules;
use ecs_rerun::core::decode::{Decoded, FailedRunTask, decode};
use ecs_rerun::core::launch::Lookup;
use ecs_rerun::core::marks::{ATTEMPT_TAG, CALL_TAG, TOKEN_PREFIX};
use ecs_rerun::core::org::AllowedAccounts;
use ecs_rerun::core::outcome::Outcome;
use ecs_rerun::core::plan::episode::Step;
use ecs_rerun::core::plan::{self, Context, Decision, Policy};
use ecs_rerun::core::request::{RunTaskRequest, prune_nulls};
use ecs_rerun::ports::launch::TaskLauncher;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

// --- raw CloudTrail JSON ------------------------------------------------------------------------

type Field = (&'static str, BoxedStrategy<Option<Value>>);

/// A JSON object of these fields; a field whose value is `None` is left out.
fn object(fields: Vec<Field>) -> BoxedStrategy<Value> {
    let (keys, values): (Vec<&'static str>, Vec<_>) = fields.into_iter().unzip();
    values
        .prop_map(move |values| {
            Value::Object(
                keys.iter()
                    .zip(values)
                    .filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), v)))
                    .collect::<Map<String, Value>>(),
            )
        })
        .boxed()
}

/// A member CloudTrail may leave out or write as `null`.
fn opt(value: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(Value::Null)),
        6 => value.prop_map(Some),
    ]
    .boxed()
}

/// A member the API requires.
fn req(value: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    value.prop_map(Some).boxed()
}

fn text() -> BoxedStrategy<Value> {
    "[a-zA-Z0-9:/_.-]{1,24}".prop_map(Value::from).boxed()
}

fn int(range: std::ops::RangeInclusive<i32>) -> BoxedStrategy<Value> {
    range.prop_map(Value::from).boxed()
}

fn boolean() -> BoxedStrategy<Value> {
    any::<bool>().prop_map(Value::from).boxed()
}

fn one_of(values: &'static [&'static str]) -> BoxedStrategy<Value> {
    proptest::sample::select(values)
        .prop_map(Value::from)
        .boxed()
}

fn list(item: BoxedStrategy<Value>, sizes: std::ops::Range<usize>) -> BoxedStrategy<Value> {
    prop::collection::vec(item, sizes)
        .prop_map(Value::from)
        .boxed()
}

fn tag(key: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    object(vec![("key", req(key)), ("value", req(text()))])
}

fn user_tag_key() -> BoxedStrategy<Value> {
    "user-[a-z0-9]{1,12}".prop_map(Value::from).boxed()
}

/// `ContainerOverride`.
fn container_override() -> BoxedStrategy<Value> {
    object(vec![
        ("name", opt(text())),
        ("command", opt(list(text(), 0..4))),
        (
            "environment",
            opt(list(
                object(vec![("name", opt(text())), ("value", opt(text()))]),
                0..3,
            )),
        ),
        (
            "environmentFiles",
            opt(list(
                object(vec![("value", req(text())), ("type", req(one_of(&["s3"])))]),
                0..2,
            )),
        ),
        ("cpu", opt(int(0..=4096))),
        ("memory", opt(int(0..=4096))),
        ("memoryReservation", opt(int(0..=4096))),
        (
            "resourceRequirements",
            opt(list(
                object(vec![
                    ("value", req(text())),
                    ("type", req(one_of(&["GPU", "InferenceAccelerator"]))),
                ]),
                0..2,
            )),
        ),
    ])
}

/// `TaskOverride`.
fn overrides() -> BoxedStrategy<Value> {
    object(vec![
        ("containerOverrides", opt(list(container_override(), 0..3))),
        ("cpu", opt(text())),
        ("memory", opt(text())),
        ("taskRoleArn", opt(text())),
        ("executionRoleArn", opt(text())),
        (
            "ephemeralStorage",
            opt(object(vec![("sizeInGiB", req(int(21..=200)))])),
        ),
        (
            "inferenceAcceleratorOverrides",
            opt(list(
                object(vec![
                    ("deviceName", opt(text())),
                    ("deviceType", opt(text())),
                ]),
                0..2,
            )),
        ),
    ])
}

/// `TaskVolumeConfiguration` with a `managedEBSVolume`.
fn volume_configuration() -> BoxedStrategy<Value> {
    let ebs = object(vec![
        ("encrypted", opt(boolean())),
        ("kmsKeyId", opt(text())),
        ("volumeType", opt(text())),
        ("sizeInGiB", opt(int(1..=16_384))),
        ("snapshotId", opt(text())),
        ("volumeInitializationRate", opt(int(100..=300))),
        ("iops", opt(int(3000..=16_000))),
        ("throughput", opt(int(125..=1000))),
        (
            "tagSpecifications",
            opt(list(
                object(vec![
                    ("resourceType", req(one_of(&["volume"]))),
                    ("tags", opt(list(tag(text()), 0..3))),
                    ("propagateTags", opt(one_of(&["TASK_DEFINITION", "NONE"]))),
                ]),
                0..2,
            )),
        ),
        ("roleArn", req(text())),
        (
            "terminationPolicy",
            opt(object(vec![("deleteOnTermination", req(boolean()))])),
        ),
        ("filesystemType", opt(one_of(&["ext3", "ext4", "xfs"]))),
    ]);
    object(vec![("name", req(text())), ("managedEBSVolume", opt(ebs))])
}

/// `requestParameters` of a RunTask record: every member of `RunTaskRequest`. `token` decides
/// whether the caller's SDK recorded a `clientToken`.
fn request_parameters(token: BoxedStrategy<Option<Value>>) -> BoxedStrategy<Value> {
    // Batch and other AWS services add reserved `aws:` tags, which a retry may not set.
    let tags = (
        prop::collection::vec(tag(user_tag_key()), 0..6),
        proptest::option::of(tag(one_of(&["aws:cloudformation:stack-name"]))),
    )
        .prop_map(|(mut tags, reserved)| {
            tags.extend(reserved);
            Value::from(tags)
        });
    object(vec![
        ("cluster", opt(text())),
        ("taskDefinition", req(text())),
        ("count", opt(int(1..=10))),
        (
            "launchType",
            opt(one_of(&["EC2", "FARGATE", "EXTERNAL", "MANAGED_INSTANCES"])),
        ),
        (
            "capacityProviderStrategy",
            opt(list(
                object(vec![
                    ("capacityProvider", req(text())),
                    ("weight", opt(int(0..=1000))),
                    ("base", opt(int(0..=100_000))),
                ]),
                0..3,
            )),
        ),
        (
            "networkConfiguration",
            opt(object(vec![(
                "awsvpcConfiguration",
                req(object(vec![
                    ("subnets", req(list(text(), 1..3))),
                    ("securityGroups", opt(list(text(), 0..3))),
                    ("assignPublicIp", opt(one_of(&["ENABLED", "DISABLED"]))),
                ])),
            )])),
        ),
        ("overrides", opt(overrides())),
        (
            "placementConstraints",
            opt(list(
                object(vec![
                    ("type", opt(one_of(&["distinctInstance", "memberOf"]))),
                    ("expression", opt(text())),
                ]),
                0..3,
            )),
        ),
        (
            "placementStrategy",
            opt(list(
                object(vec![
                    ("type", opt(one_of(&["random", "spread", "binpack"]))),
                    ("field", opt(text())),
                ]),
                0..3,
            )),
        ),
        ("platformVersion", opt(text())),
        ("propagateTags", opt(one_of(&["TASK_DEFINITION", "NONE"]))),
        ("enableECSManagedTags", opt(boolean())),
        ("enableExecuteCommand", opt(boolean())),
        ("group", opt(text())),
        ("startedBy", opt(text())),
        ("referenceId", opt(text())),
        ("tags", opt(tags)),
        ("clientToken", token),
        (
            "volumeConfigurations",
            opt(list(volume_configuration(), 0..2)),
        ),
    ])
}

fn recorded_token() -> BoxedStrategy<Value> {
    "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
        .prop_map(Value::from)
        .boxed()
}

const EVENT_TIME: &str = "2025-05-01T03:00:05Z";

/// A whole EventBridge event of a RunTask record, as CloudTrail writes one. With `error_code`
/// the call raised that exception; without, it answered 200 with an `AGENT` failure and no task.
fn cloudtrail_event(request_parameters: Value, error_code: Option<&str>) -> Value {
    let mut detail = json!({
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLE:1a2b3c",
            "arn": "arn:aws:sts::111122223333:assumed-role/job-launcher/1a2b3c",
            "accountId": "111122223333",
            "accessKeyId": "ASIAEXAMPLE",
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLE",
                    "arn": "arn:aws:iam::111122223333:role/job-launcher",
                    "accountId": "111122223333", "userName": "job-launcher"},
                "webIdFederationData": {},
                "attributes": {"creationDate": "2025-05-01T03:00:04Z", "mfaAuthenticated": "false"}
            }
        },
        "eventTime": EVENT_TIME,
        "eventSource": "ecs.amazonaws.com",
        "eventName": "RunTask",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "10.0.3.17",
        "userAgent": "aws-sdk-rust/1.3.9 os/linux lang/rust/1.95.0",
        "requestParameters": request_parameters,
        "responseElements": {
            "tasks": [],
            "failures": [{"arn": "arn:aws:ecs:us-east-1:111122223333:container-instance/batch/0a1b2c3d", "reason": "AGENT"}]
        },
        "requestID": "c1d2e3f4-0000-1111-2222-333344445555",
        "eventID": "0c2ac9ce-51d2-4d55-bf47-aab1402cfc54",
        "readOnly": false,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": "111122223333",
        "eventCategory": "Management"
    });
    if let Some(code) = error_code {
        detail["errorCode"] = code.into();
        detail["errorMessage"] = "Rate exceeded".into();
        detail["responseElements"] = Value::Null;
    }
    json!({
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ecs",
        "account": "111122223333",
        "time": EVENT_TIME,
        "region": "us-east-1",
        "resources": [],
        "detail": detail
    })
}

// --- ecs-rerun ----------------------------------------------------------------------------------

fn decoded(event: Value) -> FailedRunTask {
    match decode(event) {
        Ok(Decoded::Failed(failed)) => *failed,
        other => panic!("decodes: {other:?}"),
    }
}

/// The first request ecs-rerun sends for the record, a minute after it.
fn planned(event: Value) -> RunTaskRequest {
    let failed = decoded(event);
    assert_eq!(
        failed.replay_blocker, None,
        "a field of the record is unknown to ecs-rerun's types"
    );
    let ctx = Context {
        now: failed.origin.recorded_at.expect("eventTime") + Duration::from_secs(60),
        own_account: None,
        allowed_accounts: &AllowedAccounts::NONE,
        member_role: None,
        function_name: None,
    };
    let policy = Policy::default();
    let Decision::Retry(mut episode) = plan::decide(&failed, &Rules::defaults(), &policy, ctx)
    else {
        panic!("retries")
    };
    let mut step = episode.next(&policy, ctx.now, None);
    if let Step::Lookup { query, .. } = &step {
        // A record without a token: first the look-up for the caller's own retry, scoped to
        // the call's cluster and family; it finds nothing here.
        assert_eq!(query.cluster, failed.origin.request.cluster);
        assert_eq!(
            Some(query.family.as_str()),
            failed.origin.request.task_family()
        );
        assert_eq!(failed.origin.request.client_token, None);
        episode.record_lookup(Lookup::Found(Vec::new()));
        step = episode.next(&policy, ctx.now, None);
    }
    let Step::Launch { request, .. } = step else {
        panic!("launches: {step:?}")
    };
    *request
}

fn as_json(request: &RunTaskRequest) -> Value {
    prune_nulls(serde_json::to_value(request).unwrap())
}

/// The recorded request with what a retry of the missing tasks changes: its count, token and
/// tags, and no `referenceId` (ECS-internal).
fn recorded_with_retry_fields(recorded: &Value, retry: &RunTaskRequest) -> Value {
    let mut expected = prune_nulls(recorded.clone());
    let fields = expected.as_object_mut().unwrap();
    fields.remove("referenceId");
    fields.insert("count".into(), json!(retry.count));
    fields.insert("clientToken".into(), json!(retry.client_token));
    fields.insert("tags".into(), json!(retry.tags));
    prune_nulls(expected)
}

/// The user's tags of the record, in order: all but the reserved `aws:` ones.
fn user_tags(recorded: &Value) -> Vec<Value> {
    recorded["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| !t["key"].as_str().unwrap().starts_with("aws:"))
        .cloned()
        .collect()
}

/// The JSON body the SDK sends for this request.
async fn wire_body(request: &RunTaskRequest) -> Value {
    let (http, captured) = capture_request(None);
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .http_client(http)
        .build();
    // The captured exchange answers with an empty body; only the request matters here.
    let _ = EcsLauncher::new(aws_sdk_ecs::Client::from_conf(config))
        .run_task(request)
        .await;
    let sent = captured.expect_request();
    serde_json::from_slice(sent.body().bytes().expect("in-memory body")).expect("JSON body")
}

fn sent_on_the_wire(request: &RunTaskRequest) -> Value {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(wire_body(request))
}

/// The SDK models a capacity provider's `weight` and `base` as plain integers and always sends
/// them; the ECS API documents 0 as the default of both, so an absent value and 0 are the same.
fn with_api_defaults(mut expected: Value) -> Value {
    let items = expected
        .get_mut("capacityProviderStrategy")
        .and_then(Value::as_array_mut);
    for item in items.into_iter().flatten() {
        for field in ["weight", "base"] {
            item.as_object_mut()
                .unwrap()
                .entry(field)
                .or_insert(json!(0));
        }
    }
    expected
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A 200 with failures: the own retry is the recorded request for the missing tasks, with
    /// ecs-rerun's token and tags, and the SDK sends exactly that.
    #[test]
    fn retry_equals_the_recorded_request_but_count_tags_token_and_reference(
        recorded in request_parameters(opt(recorded_token()))
    ) {
        let retry = planned(cloudtrail_event(recorded.clone(), None));
        let expected = recorded_with_retry_fields(&recorded, &retry);
        prop_assert_eq!(as_json(&retry), expected.clone());
        prop_assert_eq!(retry.count, Some(recorded["count"].as_i64().map_or(1, |c| c as i32)));
        let token = retry.client_token.clone().unwrap();
        prop_assert!(token.starts_with(TOKEN_PREFIX));
        prop_assert_ne!(Some(token.as_str()), recorded["clientToken"].as_str());
        // User tags all survive, in order, ahead of ecs-rerun's own; reserved ones are dropped.
        let tags = json!(retry.tags);
        let users = user_tags(&recorded);
        let sent = tags.as_array().unwrap();
        prop_assert_eq!(&sent[..users.len()], &users[..]);
        let own: Vec<&str> = sent[users.len()..].iter().map(|t| t["key"].as_str().unwrap()).collect();
        prop_assert_eq!(own, [ATTEMPT_TAG, CALL_TAG]);

        prop_assert_eq!(sent_on_the_wire(&retry), with_api_defaults(expected));
    }

    /// An API error with a recorded token: the first call is the recorded one, exactly (only
    /// the reserved `aws:` tags, which a caller other than AWS may not set, are left out).
    #[test]
    fn an_api_error_is_first_replayed_exactly_as_recorded(
        recorded in request_parameters(req(recorded_token()))
    ) {
        let replay = planned(cloudtrail_event(recorded.clone(), Some("ThrottlingException")));
        let mut expected = prune_nulls(recorded.clone());
        let users = user_tags(&recorded);
        let fields = expected.as_object_mut().unwrap();
        if fields.contains_key("tags") {
            if users.is_empty() {
                fields.remove("tags");
            } else {
                fields.insert("tags".into(), Value::from(users));
            }
        }
        prop_assert_eq!(as_json(&replay), expected.clone());
        prop_assert_eq!(sent_on_the_wire(&replay), with_api_defaults(expected));
    }
}

/// The current ECS model has members ecs-rerun's types do not know (here a container's GPU
/// `sharingStrategy`). Such a record is reported, never replayed without them.
#[test]
fn a_member_the_types_do_not_know_stops_the_replay() {
    let recorded = json!({
        "cluster": "gpu",
        "taskDefinition": "train:4",
        "overrides": {"containerOverrides": [{"name": "trainer", "resourceRequirements": [
            {"type": "GPU", "sharingStrategy": {"nvidiaMps": {"memory": 4096}}}
        ]}]},
        "someFutureOption": true
    });
    let failed = decoded(cloudtrail_event(recorded, None));
    let blocker = failed.replay_blocker.clone().expect("not replayable");
    assert!(
        blocker.contains("requestParameters.overrides.containerOverrides[0].resourceRequirements[0].sharingStrategy"),
        "{blocker}"
    );
    assert!(
        blocker.contains("requestParameters.someFutureOption"),
        "{blocker}"
    );
    let ctx = Context {
        now: SystemTime::from(chrono::DateTime::parse_from_rfc3339(EVENT_TIME).unwrap())
            + Duration::from_secs(60),
        own_account: None,
        allowed_accounts: &AllowedAccounts::NONE,
        member_role: None,
        function_name: None,
    };
    match plan::decide(&failed, &Rules::defaults(), &Policy::default(), ctx) {
        Decision::Conclude(c) => assert_eq!(c.outcome, Outcome::NotRetryable),
        other => panic!("{other:?}"),
    }
}
