//! Amazon ECS: the [`TaskLauncher`] adapter. It sends the request with `aws-sdk-ecs`, field by
//! field, and answers look-ups with `ListTasks` and `DescribeTasks`.

use std::time::SystemTime;

use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::operation::run_task::RunTaskError;
use aws_sdk_ecs::operation::run_task::builders::RunTaskFluentBuilder;
use aws_sdk_ecs::types as ecs;

use crate::core::classify::NETWORK_ERROR;
use crate::core::event::PlacementFailure;
use crate::core::launch::{LaunchResult, LaunchedTask, Lookup};
use crate::core::lookup::{ExistingTask, TaskQuery};
use crate::core::marks::CALL_TAG;
use crate::core::request::{self as req, Environment, RunTaskRequest};
use crate::ports::launch::TaskLauncher;

/// How many pages of 100 task ARNs a look-up reads per desired status: a family with more
/// recent tasks than that is not a batch job's.
const MAX_LIST_PAGES: usize = 5;

/// Starts tasks with the AWS SDK.
#[derive(Debug, Clone)]
pub struct EcsLauncher {
    client: aws_sdk_ecs::Client,
}

impl EcsLauncher {
    /// Wraps a client built once at start-up.
    pub fn new(client: aws_sdk_ecs::Client) -> Self {
        Self { client }
    }
}

impl TaskLauncher for EcsLauncher {
    async fn run_task(&self, request: &RunTaskRequest) -> LaunchResult {
        let call = match to_sdk(&self.client, request) {
            Ok(call) => call,
            Err(err) => {
                return LaunchResult::Rejected {
                    code: "InvalidParameterException".to_owned(),
                    message: format!("ecs-rerun could not rebuild the request: {err}"),
                    ambiguous: false,
                    existing: Vec::new(),
                };
            }
        };
        match call.send().await {
            Ok(out) => LaunchResult::Placed {
                tasks: out
                    .tasks()
                    .iter()
                    .map(|t| LaunchedTask {
                        arn: t.task_arn().unwrap_or_default().to_owned(),
                        created_at: t.created_at().and_then(system_time),
                    })
                    .collect(),
                failures: out
                    .failures()
                    .iter()
                    .map(|f| PlacementFailure {
                        arn: f.arn().map(str::to_owned),
                        reason: f.reason().map(str::to_owned),
                        detail: f.detail().map(str::to_owned),
                    })
                    .collect(),
            },
            Err(err) => {
                let message = err.message().unwrap_or_default().to_owned();
                match &err {
                    SdkError::ServiceError(service) => {
                        let code = err.code().unwrap_or("UnknownError").to_owned();
                        LaunchResult::Rejected {
                            ambiguous: service.raw().status().is_server_error()
                                || code == "ServerException",
                            existing: match service.err() {
                                RunTaskError::ConflictException(c) => c.resource_ids().to_vec(),
                                _ => Vec::new(),
                            },
                            code,
                            message,
                        }
                    }
                    SdkError::ConstructionFailure(_) => LaunchResult::Rejected {
                        code: "InvalidParameterException".to_owned(),
                        message: format!("the SDK could not build the request: {err:?}"),
                        ambiguous: false,
                        existing: Vec::new(),
                    },
                    // Timeouts, dropped connections, unreadable answers: ECS may have acted.
                    _ => LaunchResult::Rejected {
                        code: NETWORK_ERROR.to_owned(),
                        message: format!("no usable answer from ECS: {err}"),
                        ambiguous: true,
                        existing: Vec::new(),
                    },
                }
            }
        }
    }

    async fn find_tasks(&self, query: &TaskQuery) -> Lookup {
        match self.list_and_describe(query).await {
            Ok(tasks) => Lookup::Found(tasks),
            Err(err) => Lookup::Failed(err),
        }
    }
}

impl EcsLauncher {
    async fn list_and_describe(&self, query: &TaskQuery) -> Result<Vec<ExistingTask>, String> {
        let mut arns = Vec::new();
        for status in [ecs::DesiredStatus::Running, ecs::DesiredStatus::Stopped] {
            let mut next = None;
            for _ in 0..MAX_LIST_PAGES {
                let page = self
                    .client
                    .list_tasks()
                    .set_cluster(query.cluster.clone())
                    .family(&query.family)
                    .desired_status(status.clone())
                    .set_next_token(next.take())
                    .send()
                    .await
                    .map_err(|e| {
                        format!("ListTasks: {}", aws_sdk_ecs::error::DisplayErrorContext(e))
                    })?;
                arns.extend(page.task_arns().iter().cloned());
                next = page.next_token().map(str::to_owned);
                if next.is_none() {
                    break;
                }
            }
        }
        let mut tasks = Vec::with_capacity(arns.len());
        for chunk in arns.chunks(100) {
            let out = self
                .client
                .describe_tasks()
                .set_cluster(query.cluster.clone())
                .set_tasks(Some(chunk.to_vec()))
                .include(ecs::TaskField::Tags)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "DescribeTasks: {}",
                        aws_sdk_ecs::error::DisplayErrorContext(e)
                    )
                })?;
            tasks.extend(out.tasks().iter().map(existing_task));
        }
        Ok(tasks)
    }
}

fn system_time(t: &aws_sdk_ecs::primitives::DateTime) -> Option<SystemTime> {
    SystemTime::try_from(*t).ok()
}

fn existing_task(t: &ecs::Task) -> ExistingTask {
    ExistingTask {
        arn: t.task_arn().unwrap_or_default().to_owned(),
        task_definition_arn: t.task_definition_arn().map(str::to_owned),
        created_at: t.created_at().and_then(system_time),
        started_by: t.started_by().map(str::to_owned),
        group: t.group().map(str::to_owned),
        overrides: t.overrides().map(from_sdk_override),
        call_tag: t
            .tags()
            .iter()
            .find(|tag| tag.key() == Some(CALL_TAG))
            .and_then(|tag| tag.value().map(str::to_owned)),
    }
}

fn some_vec<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    some_mapped(items, T::clone)
}

/// `None` for an empty SDK list (the SDK cannot tell an absent list from an empty one), else
/// each item mapped.
fn some_mapped<T, U>(items: &[T], map: impl FnMut(&T) -> U) -> Option<Vec<U>> {
    (!items.is_empty()).then(|| items.iter().map(map).collect())
}

// Elastic Inference is deprecated, but a task that still carries the field is compared whole.
#[allow(deprecated)]
fn from_sdk_override(o: &ecs::TaskOverride) -> req::TaskOverride {
    req::TaskOverride {
        container_overrides: Some(
            o.container_overrides()
                .iter()
                .map(|c| req::ContainerOverride {
                    name: c.name().map(str::to_owned),
                    command: some_vec(c.command()),
                    environment: some_mapped(c.environment(), |kv| req::KeyValuePair {
                        name: kv.name().map(str::to_owned),
                        value: kv.value().map(str::to_owned),
                    })
                    .map(Environment::Listed),
                    environment_files: some_mapped(c.environment_files(), |f| {
                        req::EnvironmentFile {
                            value: Some(f.value().to_owned()),
                            kind: Some(f.r#type().as_str().to_owned()),
                        }
                    }),
                    cpu: c.cpu(),
                    memory: c.memory(),
                    memory_reservation: c.memory_reservation(),
                    resource_requirements: some_mapped(c.resource_requirements(), |q| {
                        req::ResourceRequirement {
                            value: Some(q.value().to_owned()),
                            kind: Some(q.r#type().as_str().to_owned()),
                        }
                    }),
                })
                .collect(),
        ),
        cpu: o.cpu().map(str::to_owned),
        inference_accelerator_overrides: some_mapped(o.inference_accelerator_overrides(), |i| {
            req::InferenceAcceleratorOverride {
                device_name: i.device_name().map(str::to_owned),
                device_type: i.device_type().map(str::to_owned),
            }
        }),
        execution_role_arn: o.execution_role_arn().map(str::to_owned),
        memory: o.memory().map(str::to_owned),
        task_role_arn: o.task_role_arn().map(str::to_owned),
        ephemeral_storage: o.ephemeral_storage().map(|e| req::EphemeralStorage {
            size_in_gib: Some(e.size_in_gib()),
        }),
    }
}

/// A nested SDK type that cannot be built: a required member is missing.
type BuildError = aws_sdk_ecs::error::BuildError;

/// Maps the request onto the SDK's fluent builder, every field of it.
pub fn to_sdk(
    client: &aws_sdk_ecs::Client,
    r: &RunTaskRequest,
) -> Result<RunTaskFluentBuilder, BuildError> {
    Ok(client
        .run_task()
        .set_cluster(r.cluster.clone())
        .set_task_definition(r.task_definition.clone())
        .set_count(r.count)
        .set_launch_type(r.launch_type.as_deref().map(ecs::LaunchType::from))
        .set_capacity_provider_strategy(map_all(&r.capacity_provider_strategy, |c| {
            ecs::CapacityProviderStrategyItem::builder()
                .set_capacity_provider(c.capacity_provider.clone())
                .set_weight(c.weight)
                .set_base(c.base)
                .build()
        })?)
        .set_network_configuration(
            r.network_configuration
                .as_ref()
                .map(|n| -> Result<_, BuildError> {
                    Ok(ecs::NetworkConfiguration::builder()
                        .set_awsvpc_configuration(
                            n.awsvpc_configuration
                                .as_ref()
                                .map(|a| {
                                    ecs::AwsVpcConfiguration::builder()
                                        .set_subnets(a.subnets.clone())
                                        .set_security_groups(a.security_groups.clone())
                                        .set_assign_public_ip(
                                            a.assign_public_ip
                                                .as_deref()
                                                .map(ecs::AssignPublicIp::from),
                                        )
                                        .build()
                                })
                                .transpose()?,
                        )
                        .build())
                })
                .transpose()?,
        )
        .set_overrides(r.overrides.as_ref().map(task_override).transpose()?)
        .set_placement_constraints(map_all(&r.placement_constraints, |p| {
            Ok(ecs::PlacementConstraint::builder()
                .set_type(p.kind.as_deref().map(ecs::PlacementConstraintType::from))
                .set_expression(p.expression.clone())
                .build())
        })?)
        .set_placement_strategy(map_all(&r.placement_strategy, |p| {
            Ok(ecs::PlacementStrategy::builder()
                .set_type(p.kind.as_deref().map(ecs::PlacementStrategyType::from))
                .set_field(p.field.clone())
                .build())
        })?)
        .set_platform_version(r.platform_version.clone())
        .set_propagate_tags(r.propagate_tags.as_deref().map(ecs::PropagateTags::from))
        .set_enable_ecs_managed_tags(r.enable_ecs_managed_tags)
        .set_enable_execute_command(r.enable_execute_command)
        .set_group(r.group.clone())
        .set_started_by(r.started_by.clone())
        .set_reference_id(r.reference_id.clone())
        .set_tags(map_all(&r.tags, |t| Ok(tag(t)))?)
        .set_client_token(r.client_token.clone())
        .set_volume_configurations(map_all(&r.volume_configurations, volume)?))
}

fn map_all<T, U>(
    items: &Option<Vec<T>>,
    f: impl Fn(&T) -> Result<U, BuildError>,
) -> Result<Option<Vec<U>>, BuildError> {
    items
        .as_ref()
        .map(|v| v.iter().map(f).collect())
        .transpose()
}

fn tag(t: &req::Tag) -> ecs::Tag {
    ecs::Tag::builder()
        .set_key(t.key.clone())
        .set_value(t.value.clone())
        .build()
}

// Elastic Inference is deprecated, but a request that still carries the field is replayed as sent.
#[allow(deprecated)]
fn task_override(o: &req::TaskOverride) -> Result<ecs::TaskOverride, BuildError> {
    Ok(ecs::TaskOverride::builder()
        .set_container_overrides(map_all(&o.container_overrides, container_override)?)
        .set_cpu(o.cpu.clone())
        .set_memory(o.memory.clone())
        .set_inference_accelerator_overrides(map_all(&o.inference_accelerator_overrides, |i| {
            Ok(ecs::InferenceAcceleratorOverride::builder()
                .set_device_name(i.device_name.clone())
                .set_device_type(i.device_type.clone())
                .build())
        })?)
        .set_execution_role_arn(o.execution_role_arn.clone())
        .set_task_role_arn(o.task_role_arn.clone())
        .set_ephemeral_storage(
            o.ephemeral_storage
                .as_ref()
                .map(|e| -> Result<_, BuildError> {
                    // The SDK would send 0 for a missing size; ECS needs one, so say so instead.
                    let size = e.size_in_gib.ok_or_else(|| {
                        BuildError::missing_field("sizeInGiB", "ephemeralStorage needs a size")
                    })?;
                    Ok(ecs::EphemeralStorage::builder().size_in_gib(size).build())
                })
                .transpose()?,
        )
        .build())
}

fn container_override(c: &req::ContainerOverride) -> Result<ecs::ContainerOverride, BuildError> {
    let environment = match &c.environment {
        Some(Environment::Listed(vars)) => Some(
            vars.iter()
                .map(|kv| {
                    ecs::KeyValuePair::builder()
                        .set_name(kv.name.clone())
                        .set_value(kv.value.clone())
                        .build()
                })
                .collect(),
        ),
        // The plan refuses or strips a redacted environment before anything is launched.
        Some(Environment::Redacted(_)) | None => None,
    };
    Ok(ecs::ContainerOverride::builder()
        .set_name(c.name.clone())
        .set_command(c.command.clone())
        .set_environment(environment)
        .set_environment_files(map_all(&c.environment_files, |f| {
            ecs::EnvironmentFile::builder()
                .set_value(f.value.clone())
                .set_type(f.kind.as_deref().map(ecs::EnvironmentFileType::from))
                .build()
        })?)
        .set_cpu(c.cpu)
        .set_memory(c.memory)
        .set_memory_reservation(c.memory_reservation)
        .set_resource_requirements(map_all(&c.resource_requirements, |q| {
            ecs::ResourceRequirement::builder()
                .set_value(q.value.clone())
                .set_type(q.kind.as_deref().map(ecs::ResourceType::from))
                .build()
        })?)
        .build())
}

fn volume(v: &req::TaskVolumeConfiguration) -> Result<ecs::TaskVolumeConfiguration, BuildError> {
    let ebs = v
        .managed_ebs_volume
        .as_ref()
        .map(|e| {
            ecs::TaskManagedEbsVolumeConfiguration::builder()
                .set_encrypted(e.encrypted)
                .set_kms_key_id(e.kms_key_id.clone())
                .set_volume_type(e.volume_type.clone())
                .set_size_in_gib(e.size_in_gib)
                .set_snapshot_id(e.snapshot_id.clone())
                .set_volume_initialization_rate(e.volume_initialization_rate)
                .set_iops(e.iops)
                .set_throughput(e.throughput)
                .set_tag_specifications(map_all(&e.tag_specifications, |s| {
                    ecs::EbsTagSpecification::builder()
                        .set_resource_type(
                            s.resource_type.as_deref().map(ecs::EbsResourceType::from),
                        )
                        .set_tags(s.tags.as_ref().map(|t| t.iter().map(tag).collect()))
                        .set_propagate_tags(
                            s.propagate_tags.as_deref().map(ecs::PropagateTags::from),
                        )
                        .build()
                })?)
                .set_role_arn(e.role_arn.clone())
                .set_termination_policy(
                    e.termination_policy
                        .as_ref()
                        .map(|p| {
                            ecs::TaskManagedEbsVolumeTerminationPolicy::builder()
                                .set_delete_on_termination(p.delete_on_termination)
                                .build()
                        })
                        .transpose()?,
                )
                .set_filesystem_type(
                    e.filesystem_type
                        .as_deref()
                        .map(ecs::TaskFilesystemType::from),
                )
                .build()
        })
        .transpose()?;
    ecs::TaskVolumeConfiguration::builder()
        .set_name(v.name.clone())
        .set_managed_ebs_volume(ebs)
        .build()
}
