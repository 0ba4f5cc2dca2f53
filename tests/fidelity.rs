//! Fidelity: the job that is re-run is the job that failed.
//!
//! For generated RunTask requests, recorded by CloudTrail and decoded, the request ecs-rerun
//! plans equals the original apart from `count`, `tags` and `clientToken`; and the JSON body the
//! AWS SDK then puts on the wire equals the planned request, field for field. Together they show
//! that no parameter is lost between CloudTrail and ECS.

mod common;

use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::capture_request;
use ecs_rerun::classify::Rules;
use ecs_rerun::decode::{Decoded, decode};
use ecs_rerun::launch::{EcsLauncher, TaskLauncher};
use ecs_rerun::plan::{self, Decision, Policy, Step};
use ecs_rerun::request::*;
use proptest::prelude::*;
use serde_json::{Value, json};

fn s() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9:/_.-]{1,24}"
}
fn os() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(s())
}
fn oi() -> impl Strategy<Value = Option<i32>> {
    proptest::option::of(0i32..4096)
}
fn ob() -> impl Strategy<Value = Option<bool>> {
    proptest::option::of(any::<bool>())
}
fn ov<T: std::fmt::Debug>(
    item: impl Strategy<Value = T>,
    max: usize,
) -> impl Strategy<Value = Option<Vec<T>>> {
    proptest::option::of(prop::collection::vec(item, 0..max))
}
fn one_of(values: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(proptest::sample::select(values).prop_map(str::to_owned))
}

fn container() -> impl Strategy<Value = ContainerOverride> {
    (
        os(),
        ov(s(), 4),
        proptest::option::of(
            prop::collection::vec(
                (os(), os()).prop_map(|(name, value)| KeyValuePair { name, value }),
                0..3,
            )
            .prop_map(Environment::Listed),
        ),
        ov(
            (s(), Just("s3".to_owned())).prop_map(|(v, k)| EnvironmentFile {
                value: Some(v),
                kind: Some(k),
            }),
            2,
        ),
        (oi(), oi(), oi()),
        ov(
            (
                s(),
                proptest::sample::select(&["GPU", "InferenceAccelerator"][..]),
            )
                .prop_map(|(v, k)| ResourceRequirement {
                    value: Some(v),
                    kind: Some(k.to_owned()),
                }),
            2,
        ),
    )
        .prop_map(
            |(
                name,
                command,
                environment,
                environment_files,
                (cpu, memory, memory_reservation),
                resource_requirements,
            )| ContainerOverride {
                name,
                command,
                environment,
                environment_files,
                cpu,
                memory,
                memory_reservation,
                resource_requirements,
            },
        )
}

fn overrides() -> impl Strategy<Value = TaskOverride> {
    (
        ov(container(), 3),
        os(),
        os(),
        os(),
        os(),
        proptest::option::of((21i32..=200).prop_map(|size| EphemeralStorage {
            size_in_gib: Some(size),
        })),
        ov(
            (os(), os()).prop_map(|(device_name, device_type)| InferenceAcceleratorOverride {
                device_name,
                device_type,
            }),
            2,
        ),
    )
        .prop_map(
            |(
                container_overrides,
                cpu,
                memory,
                task_role_arn,
                execution_role_arn,
                ephemeral_storage,
                inference_accelerator_overrides,
            )| TaskOverride {
                container_overrides,
                cpu,
                memory,
                task_role_arn,
                execution_role_arn,
                ephemeral_storage,
                inference_accelerator_overrides,
            },
        )
}

fn volume() -> impl Strategy<Value = TaskVolumeConfiguration> {
    let ebs = (
        (ob(), os(), os(), oi(), os(), oi()),
        (oi(), oi(), s(), one_of(&["ext3", "ext4", "xfs"])),
        proptest::option::of(any::<bool>().prop_map(|d| EbsTerminationPolicy {
            delete_on_termination: Some(d),
        })),
        ov(
            (
                ov(
                    (s(), s()).prop_map(|(k, v)| Tag {
                        key: Some(k),
                        value: Some(v),
                    }),
                    3,
                ),
                one_of(&["TASK_DEFINITION", "NONE"]),
            )
                .prop_map(|(tags, propagate_tags)| EbsTagSpecification {
                    resource_type: Some("volume".into()),
                    tags,
                    propagate_tags,
                }),
            2,
        ),
    )
        .prop_map(
            |(
                (
                    encrypted,
                    kms_key_id,
                    volume_type,
                    size_in_gib,
                    snapshot_id,
                    volume_initialization_rate,
                ),
                (iops, throughput, role_arn, filesystem_type),
                termination_policy,
                tag_specifications,
            )| ManagedEbsVolume {
                encrypted,
                kms_key_id,
                volume_type,
                size_in_gib,
                snapshot_id,
                volume_initialization_rate,
                iops,
                throughput,
                tag_specifications,
                role_arn: Some(role_arn),
                termination_policy,
                filesystem_type,
            },
        );
    (s(), proptest::option::of(ebs)).prop_map(|(name, managed_ebs_volume)| {
        TaskVolumeConfiguration {
            name: Some(name),
            managed_ebs_volume,
        }
    })
}

fn request() -> impl Strategy<Value = RunTaskRequest> {
    (
        (
            os(),
            s(),
            proptest::option::of(1i32..=10),
            one_of(&["EC2", "FARGATE", "EXTERNAL"]),
        ),
        ov(
            (s(), oi(), oi()).prop_map(|(p, weight, base)| CapacityProviderStrategyItem {
                capacity_provider: Some(p),
                weight,
                base,
            }),
            3,
        ),
        proptest::option::of(
            (
                prop::collection::vec(s(), 1..3),
                ov(s(), 3),
                one_of(&["ENABLED", "DISABLED"]),
            )
                .prop_map(|(subnets, security_groups, assign_public_ip)| {
                    NetworkConfiguration {
                        awsvpc_configuration: Some(AwsVpcConfiguration {
                            subnets: Some(subnets),
                            security_groups,
                            assign_public_ip,
                        }),
                    }
                }),
        ),
        proptest::option::of(overrides()),
        (
            ov(
                (one_of(&["distinctInstance", "memberOf"]), os())
                    .prop_map(|(kind, expression)| PlacementConstraint { kind, expression }),
                2,
            ),
            ov(
                (one_of(&["random", "spread", "binpack"]), os())
                    .prop_map(|(kind, field)| PlacementStrategy { kind, field }),
                2,
            ),
        ),
        (
            os(),
            one_of(&["TASK_DEFINITION", "NONE"]),
            ob(),
            ob(),
            os(),
            os(),
        ),
        ov(
            (s(), s()).prop_map(|(k, v)| Tag {
                key: Some(format!("user-{k}")),
                value: Some(v),
            }),
            6,
        ),
        ov(volume(), 2),
    )
        .prop_map(
            |(
                (cluster, task_definition, count, launch_type),
                capacity_provider_strategy,
                network_configuration,
                overrides,
                (placement_constraints, placement_strategy),
                (
                    platform_version,
                    propagate_tags,
                    enable_ecs_managed_tags,
                    enable_execute_command,
                    group,
                    started_by,
                ),
                tags,
                volume_configurations,
            )| RunTaskRequest {
                cluster,
                task_definition: Some(task_definition),
                count,
                launch_type,
                capacity_provider_strategy,
                network_configuration,
                overrides,
                placement_constraints,
                placement_strategy,
                platform_version,
                propagate_tags,
                enable_ecs_managed_tags,
                enable_execute_command,
                group,
                started_by,
                reference_id: None,
                tags,
                client_token: Some("recorded-token".into()),
                volume_configurations,
            },
        )
}

/// Wraps a request in a CloudTrail record of a RunTask that failed with AGENT, started nothing.
fn recorded(request: &RunTaskRequest) -> Value {
    let mut e = common::event("01-agent-ec2.json");
    e["detail"]["requestParameters"] = serde_json::to_value(request).unwrap();
    e["detail"]["responseElements"] = json!({"tasks": [], "failures": [{"reason": "AGENT"}]});
    e
}

fn planned(original: &RunTaskRequest) -> RunTaskRequest {
    let Ok(Decoded::Failed(failed)) = decode(recorded(original)) else {
        panic!("decodes")
    };
    assert_eq!(failed.replay_blocker, None);
    let Decision::Retry(mut episode) =
        plan::decide(&failed, &Rules::defaults(), &Policy::default())
    else {
        panic!("retries")
    };
    let Step::Launch { request, .. } = episode.next(None) else {
        panic!("launches")
    };
    *request
}

fn without_replay_fields(r: &RunTaskRequest) -> RunTaskRequest {
    RunTaskRequest {
        count: None,
        tags: None,
        client_token: None,
        ..r.clone()
    }
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

    #[test]
    fn replay_equals_original_but_count_tags_and_token(original in request()) {
        let replay = planned(&original);
        prop_assert_eq!(without_replay_fields(&replay), without_replay_fields(&original));
        prop_assert_ne!(replay.client_token, original.client_token);
        // User tags all survive, in order, ahead of ecs-rerun's own.
        let user: Vec<_> = replay.tags.iter().flatten().filter(|t| t.key.as_deref().unwrap().starts_with("user-")).cloned().collect();
        prop_assert_eq!(user, original.tags.clone().unwrap_or_default());
    }

    #[test]
    fn sdk_puts_every_planned_field_on_the_wire(original in request()) {
        let replay = planned(&original);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let body = runtime.block_on(wire_body(&replay));
        prop_assert_eq!(body, with_api_defaults(prune_nulls(serde_json::to_value(&replay).unwrap())));
    }
}
