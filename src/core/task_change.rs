//! The wire format of an `ECS Task State Change` event (aws-facts §9), limited to what ecs-rerun
//! reads: which task stopped, why, and from which task definition revision. Like
//! [`crate::core::event`], every field is optional; [`crate::core::decode`] validates it.

use serde::Deserialize;

/// `detail-type` of task state changes (`source` is `aws.ecs`).
pub const TASK_CHANGE_DETAIL_TYPE: &str = "ECS Task State Change";
/// The `stopCode` of a task that ECS accepted but could not start.
pub const FAILED_TO_START: &str = "TaskFailedToStart";
/// The `stopCode`s of a task that Spot capacity took away (newer and older documents).
pub const INTERRUPTED: &[&str] = &["SpotInterruption", "TerminationNotice"];

/// The `detail` of a task state change: the `Task` object as ECS describes it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskDetail {
    /// The task.
    pub task_arn: Option<String>,
    /// Its cluster.
    pub cluster_arn: Option<String>,
    /// The exact revision it ran.
    pub task_definition_arn: Option<String>,
    /// `STOPPED` once it is gone; an interruption notice arrives while it still runs.
    pub last_status: Option<String>,
    /// Why it stopped, as a code: `TaskFailedToStart`, `SpotInterruption`, ...
    pub stop_code: Option<String>,
    /// Why it stopped, in words: `CannotPullContainerError: ...`.
    pub stopped_reason: Option<String>,
    /// When it stopped (ISO-8601).
    pub stopped_at: Option<String>,
    /// `service:NAME` for a service's task, else the RunTask `group`.
    pub group: Option<String>,
    /// The RunTask `startedBy`.
    pub started_by: Option<String>,
    /// Its containers; their `reason` often says more than `stoppedReason`.
    pub containers: Option<Vec<ContainerDetail>>,
    /// Increments with every change of the task.
    pub version: Option<i64>,
}

/// One container of a stopped task.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerDetail {
    /// Container name.
    pub name: Option<String>,
    /// Why it did not run, e.g. `CannotPullContainerError: ... i/o timeout`.
    pub reason: Option<String>,
}
