//! Lookup: did the caller's own retry already start the job?
//!
//! A record without a `clientToken` (SDKs before 2023-11) cannot be replayed as the same call:
//! ECS has no token to recognise it by. Yet the caller's SDK may well have retried the throttled
//! call and started the job, and another record of the same call may already have been rerun. So
//! before such a record is rerun, ecs-rerun lists the tasks of the family on the cluster
//! ([`TaskQuery`], read-only `ListTasks` and `DescribeTasks`) and counts those that are the same
//! job ([`same_job`]): same task definition, `startedBy`, `group` and overrides, created around
//! the record by the caller, or at any time since by ecs-rerun for the same call.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::core::request::{RunTaskRequest, TaskOverride, prune_nulls, task_family};

/// A 5xx may have created the task a little before the record's `eventTime`, which is when the
/// request completed.
pub const SLACK: Duration = Duration::from_secs(10);
/// How long after a failed call its caller's SDK may still retry it: standard mode makes three
/// tries with at most 20 s between them. A task created later is another run, not a retry.
pub const CALLER_RETRY_WINDOW: Duration = Duration::from_secs(120);

/// What to list: the tasks of one family on a cluster. (`ListTasks` takes `startedBy` only as
/// its sole filter, so `startedBy` is compared in [`same_job`] instead.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskQuery {
    /// Cluster as the call named it; `None` is the `default` cluster.
    pub cluster: Option<String>,
    /// Task family.
    pub family: String,
}

impl TaskQuery {
    /// The query for the tasks a call could have started; `None` without a task definition.
    pub fn for_request(request: &RunTaskRequest) -> Option<Self> {
        Some(Self {
            cluster: request.cluster.clone(),
            family: request.task_family()?.to_owned(),
        })
    }
}

/// A task that exists, as `DescribeTasks` describes it (only what [`same_job`] compares).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExistingTask {
    /// Task ARN.
    pub arn: String,
    /// Full task definition ARN, with revision.
    pub task_definition_arn: Option<String>,
    /// When ECS created it.
    pub created_at: Option<SystemTime>,
    /// Its `startedBy`.
    pub started_by: Option<String>,
    /// Its group (`family:NAME` unless the call set one).
    pub group: Option<String>,
    /// The overrides it runs with.
    pub overrides: Option<TaskOverride>,
    /// Its `ecs-rerun:call` tag: set when ecs-rerun started it, naming the call it reran.
    pub call_tag: Option<String>,
}

/// Whether `task` is the job `request` asked for in the call recorded at `recorded_at`: started
/// by its caller around that time (from [`SLACK`] before to [`CALLER_RETRY_WINDOW`] after), or
/// by ecs-rerun for the same call (tag `call_tag`) at any time since.
pub fn same_job(
    request: &RunTaskRequest,
    recorded_at: SystemTime,
    call_tag: &str,
    task: &ExistingTask,
) -> bool {
    let Some(recorded) = request.task_definition.as_deref() else {
        return false;
    };
    let earliest = recorded_at.checked_sub(SLACK).unwrap_or(recorded_at);
    let in_time = task.created_at.is_some_and(|t| {
        t >= earliest
            && (task.call_tag.as_deref() == Some(call_tag)
                || t <= recorded_at + CALLER_RETRY_WINDOW)
    });
    let family = task_family(recorded);
    let group = request
        .group
        .clone()
        .unwrap_or_else(|| format!("family:{family}"));
    in_time
        && task
            .task_definition_arn
            .as_deref()
            .is_some_and(|arn| same_task_definition(recorded, arn))
        && blank_is_none(&request.started_by) == blank_is_none(&task.started_by)
        && task.group.as_deref() == Some(group.as_str())
        && comparable(request.overrides.as_ref(), request.environment_redacted())
            == comparable(task.overrides.as_ref(), request.environment_redacted())
}

/// `family`, `family:revision` or an ARN, against the full ARN of a task's definition.
fn same_task_definition(recorded: &str, arn: &str) -> bool {
    if recorded.starts_with("arn:") {
        return recorded == arn;
    }
    let Some((_, name)) = arn.rsplit_once("task-definition/") else {
        return false;
    };
    if recorded.contains(':') {
        name == recorded
    } else {
        name.split(':').next() == Some(recorded)
    }
}

fn blank_is_none(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Overrides as JSON, without what ECS adds or leaves out on its own: empty lists and objects,
/// and the bare `{"name": ...}` entry `DescribeTasks` lists for every container. Without the
/// environment when CloudTrail redacted it: the record cannot tell what it was.
fn comparable(overrides: Option<&TaskOverride>, drop_environment: bool) -> Value {
    let mut value = prune_nulls(serde_json::to_value(overrides).unwrap_or(Value::Null));
    if let Some(containers) = value
        .get_mut("containerOverrides")
        .and_then(Value::as_array_mut)
    {
        for container in containers.iter_mut() {
            if let Some(fields) = container.as_object_mut()
                && drop_environment
            {
                fields.remove("environment");
            }
        }
        containers.retain(|c| c.as_object().is_some_and(|o| o.keys().any(|k| k != "name")));
    }
    prune_empty(&mut value);
    value
}

fn prune_empty(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.values_mut().for_each(prune_empty);
            map.retain(|_, v| !is_empty(v));
        }
        Value::Array(items) => items.iter_mut().for_each(prune_empty),
        _ => {}
    }
    if is_empty(value) {
        *value = Value::Null;
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}
