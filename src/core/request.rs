//! The parameters of a `RunTask` call, as CloudTrail records them and as ecs-rerun replays them.
//!
//! Field names are the ECS API's own JSON names, which CloudTrail keeps in `requestParameters`,
//! so one type serves both directions: decoded from the record, then handed to the launcher.
//! Every field is optional because CloudTrail may leave any of them out or set it to `null`.
//! A field this module does not know is *not* silently dropped: [`crate::core::decode`] compares the
//! record with what these types understood and refuses to replay a request it cannot reproduce.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What CloudTrail writes instead of the container-override environment since mid-2023.
pub const REDACTED_ENVIRONMENT: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

/// A `RunTask` request (ECS API `RunTaskRequest`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunTaskRequest {
    /// Cluster name or ARN; absent means the `default` cluster.
    pub cluster: Option<String>,
    /// `family`, `family:revision` or a task definition ARN.
    pub task_definition: Option<String>,
    /// Number of tasks, 1 to 10; absent means 1.
    pub count: Option<i32>,
    /// `EC2`, `FARGATE`, `EXTERNAL`, ... (exclusive with `capacity_provider_strategy`).
    pub launch_type: Option<String>,
    /// Capacity providers and their weights.
    pub capacity_provider_strategy: Option<Vec<CapacityProviderStrategyItem>>,
    /// `awsvpc` networking.
    pub network_configuration: Option<NetworkConfiguration>,
    /// Per-task and per-container overrides.
    pub overrides: Option<TaskOverride>,
    /// Placement constraints.
    pub placement_constraints: Option<Vec<PlacementConstraint>>,
    /// Placement strategy.
    pub placement_strategy: Option<Vec<PlacementStrategy>>,
    /// Fargate platform version.
    pub platform_version: Option<String>,
    /// `TASK_DEFINITION`, `SERVICE` or `NONE`.
    pub propagate_tags: Option<String>,
    /// Whether ECS adds its managed `aws:ecs:*` tags.
    #[serde(rename = "enableECSManagedTags")]
    pub enable_ecs_managed_tags: Option<bool>,
    /// Whether ECS Exec is enabled.
    pub enable_execute_command: Option<bool>,
    /// Task group.
    pub group: Option<String>,
    /// Free-form caller marker (`events-rule/...`, `AWS Step Functions`, ...).
    pub started_by: Option<String>,
    /// ECS-internal reference; never replayed.
    pub reference_id: Option<String>,
    /// User tags.
    pub tags: Option<Vec<Tag>>,
    /// Idempotency token; never replayed (a fresh one is derived per attempt).
    pub client_token: Option<String>,
    /// Managed EBS volumes configured at launch.
    pub volume_configurations: Option<Vec<TaskVolumeConfiguration>>,
}

/// One entry of a capacity provider strategy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CapacityProviderStrategyItem {
    /// Capacity provider name.
    pub capacity_provider: Option<String>,
    /// Relative weight, 0 to 1000.
    pub weight: Option<i32>,
    /// Minimum number of tasks on this provider.
    pub base: Option<i32>,
}

/// Network configuration of an `awsvpc` task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkConfiguration {
    /// Subnets, security groups and public IP.
    pub awsvpc_configuration: Option<AwsVpcConfiguration>,
}

/// Subnets, security groups and public IP of an `awsvpc` task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AwsVpcConfiguration {
    /// Subnet IDs.
    pub subnets: Option<Vec<String>>,
    /// Security group IDs.
    pub security_groups: Option<Vec<String>>,
    /// `ENABLED` or `DISABLED`.
    pub assign_public_ip: Option<String>,
}

/// Task-level overrides.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskOverride {
    /// Per-container overrides.
    pub container_overrides: Option<Vec<ContainerOverride>>,
    /// Task CPU units, as a string (`"1024"`).
    pub cpu: Option<String>,
    /// Elastic Inference overrides.
    pub inference_accelerator_overrides: Option<Vec<InferenceAcceleratorOverride>>,
    /// Execution role ARN.
    pub execution_role_arn: Option<String>,
    /// Task memory in MiB, as a string (`"2048"`).
    pub memory: Option<String>,
    /// Task role ARN.
    pub task_role_arn: Option<String>,
    /// Fargate ephemeral storage.
    pub ephemeral_storage: Option<EphemeralStorage>,
}

/// Container-level overrides.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerOverride {
    /// Container name from the task definition.
    pub name: Option<String>,
    /// Command override.
    pub command: Option<Vec<String>>,
    /// Environment override: a list, or CloudTrail's redaction marker.
    pub environment: Option<Environment>,
    /// Environment files in S3.
    pub environment_files: Option<Vec<EnvironmentFile>>,
    /// Container CPU units.
    pub cpu: Option<i32>,
    /// Hard memory limit in MiB.
    pub memory: Option<i32>,
    /// Soft memory limit in MiB.
    pub memory_reservation: Option<i32>,
    /// GPU / inference accelerator requirements.
    pub resource_requirements: Option<Vec<ResourceRequirement>>,
}

/// A container-override environment as CloudTrail records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Environment {
    /// The variables, as older records (and the API) carry them.
    Listed(Vec<KeyValuePair>),
    /// A string in place of the list: CloudTrail hid the values.
    Redacted(String),
}

/// An environment variable. Its `Debug` never shows the value: it may be a secret.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyValuePair {
    /// Variable name.
    pub name: Option<String>,
    /// Variable value (secret-bearing).
    pub value: Option<String>,
}

impl std::fmt::Debug for KeyValuePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyValuePair")
            .field("name", &self.name)
            .field("value", &"*** redacted ***")
            .finish()
    }
}

/// An environment file in S3.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvironmentFile {
    /// S3 object ARN.
    pub value: Option<String>,
    /// Always `s3`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// A GPU or inference accelerator requirement.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceRequirement {
    /// How many / which accelerator.
    pub value: Option<String>,
    /// `GPU` or `InferenceAccelerator`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// An Elastic Inference accelerator override.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InferenceAcceleratorOverride {
    /// Device name from the task definition.
    pub device_name: Option<String>,
    /// Accelerator type.
    pub device_type: Option<String>,
}

/// Fargate ephemeral storage size.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EphemeralStorage {
    /// Size in GiB, 21 to 200.
    #[serde(rename = "sizeInGiB")]
    pub size_in_gib: Option<i32>,
}

/// A placement constraint.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PlacementConstraint {
    /// `distinctInstance` or `memberOf`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Cluster query language expression.
    pub expression: Option<String>,
}

/// A placement strategy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PlacementStrategy {
    /// `random`, `spread` or `binpack`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Field the strategy applies to.
    pub field: Option<String>,
}

/// A resource tag.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Tag {
    /// Tag key.
    pub key: Option<String>,
    /// Tag value.
    pub value: Option<String>,
}

/// A volume configured at launch.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskVolumeConfiguration {
    /// Volume name from the task definition.
    pub name: Option<String>,
    /// The managed EBS volume.
    #[serde(rename = "managedEBSVolume")]
    pub managed_ebs_volume: Option<ManagedEbsVolume>,
}

/// A managed EBS volume created with the task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedEbsVolume {
    /// Whether the volume is encrypted.
    pub encrypted: Option<bool>,
    /// KMS key for encryption.
    pub kms_key_id: Option<String>,
    /// EBS volume type.
    pub volume_type: Option<String>,
    /// Size in GiB.
    #[serde(rename = "sizeInGiB")]
    pub size_in_gib: Option<i32>,
    /// Snapshot to create the volume from.
    pub snapshot_id: Option<String>,
    /// Snapshot initialization rate in MiB/s.
    pub volume_initialization_rate: Option<i32>,
    /// Provisioned IOPS.
    pub iops: Option<i32>,
    /// Throughput in MiB/s.
    pub throughput: Option<i32>,
    /// Tags for the volume.
    pub tag_specifications: Option<Vec<EbsTagSpecification>>,
    /// Infrastructure role ECS uses to manage the volume.
    pub role_arn: Option<String>,
    /// What happens to the volume when the task stops.
    pub termination_policy: Option<EbsTerminationPolicy>,
    /// `ext3`, `ext4`, `xfs` or `ntfs`.
    pub filesystem_type: Option<String>,
}

/// Tags applied to a managed EBS volume.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EbsTagSpecification {
    /// Always `volume`.
    pub resource_type: Option<String>,
    /// The tags.
    pub tags: Option<Vec<Tag>>,
    /// `TASK_DEFINITION`, `SERVICE` or `NONE`.
    pub propagate_tags: Option<String>,
}

/// Whether a managed EBS volume is deleted with its task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EbsTerminationPolicy {
    /// Delete on task termination.
    pub delete_on_termination: Option<bool>,
}

impl RunTaskRequest {
    /// The requested number of tasks (`count`, 1 when absent).
    pub fn requested_count(&self) -> i32 {
        self.count.unwrap_or(1)
    }

    /// The cluster as written in the request, `default` when absent.
    pub fn cluster_or_default(&self) -> &str {
        self.cluster.as_deref().unwrap_or("default")
    }

    /// The cluster's short name, `default` when absent.
    pub fn cluster_name(&self) -> &str {
        cluster_name(self.cluster_or_default())
    }

    /// The task family, when a task definition was recorded.
    pub fn task_family(&self) -> Option<&str> {
        self.task_definition.as_deref().map(task_family)
    }

    /// Whether any container override's environment was replaced by CloudTrail's marker.
    pub fn environment_redacted(&self) -> bool {
        self.container_overrides()
            .any(|c| matches!(c.environment, Some(Environment::Redacted(_))))
    }

    /// Removes redacted environment markers, so the request can be sent without them.
    pub fn drop_redacted_environment(&mut self) {
        for container in self.container_overrides_mut() {
            if matches!(container.environment, Some(Environment::Redacted(_))) {
                container.environment = None;
            }
        }
    }

    /// The values of every environment override, so they can be kept out of logs and messages.
    pub fn environment_values(&self) -> impl Iterator<Item = &str> {
        self.container_overrides()
            .filter_map(|c| match &c.environment {
                Some(Environment::Listed(vars)) => Some(vars.iter()),
                _ => None,
            })
            .flatten()
            .filter_map(|kv| kv.value.as_deref())
    }

    /// The request as JSON with environment values masked and `null`s removed: safe to log.
    pub fn to_loggable_json(&self) -> Value {
        let mut shown = self.clone();
        for container in shown.container_overrides_mut() {
            if let Some(Environment::Listed(vars)) = &mut container.environment {
                for var in vars {
                    var.value = var.value.as_ref().map(|_| "***".to_owned());
                }
            }
        }
        prune_nulls(serde_json::to_value(&shown).unwrap_or(Value::Null))
    }

    fn container_overrides_mut(&mut self) -> impl Iterator<Item = &mut ContainerOverride> {
        self.overrides
            .iter_mut()
            .flat_map(|o| o.container_overrides.iter_mut().flatten())
    }

    fn container_overrides(&self) -> impl Iterator<Item = &ContainerOverride> {
        self.overrides
            .iter()
            .flat_map(|o| o.container_overrides.iter().flatten())
    }
}

/// The cluster's short name: the part after `cluster/` in an ARN, or the name as given.
pub fn cluster_name(cluster: &str) -> &str {
    cluster.rsplit_once(":cluster/").map_or(cluster, |(_, n)| n)
}

/// The task family: `nightly` from `nightly`, `nightly:31` or a task definition ARN.
pub fn task_family(task_definition: &str) -> &str {
    let name = task_definition
        .rsplit_once("task-definition/")
        .map_or(task_definition, |(_, n)| n);
    name.split(':').next().unwrap_or(name)
}

/// Removes `null` members from JSON objects, recursively: CloudTrail's `null` and absence mean
/// the same thing, so comparisons and printed requests ignore the difference.
pub fn prune_nulls(mut value: Value) -> Value {
    prune_in_place(&mut value);
    value
}

fn prune_in_place(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(prune_in_place);
        }
        Value::Array(items) => items.iter_mut().for_each(prune_in_place),
        _ => {}
    }
}
