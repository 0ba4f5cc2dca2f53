//! Launch: the port that starts tasks and looks for tasks already started.
//!
//! [`TaskLauncher`] is all the retry loop knows of ECS; [`crate::aws::ecs::EcsLauncher`] is its
//! adapter. (A dry run never reaches a launcher: the handler stops first.)

use std::future::Future;

use crate::core::lookup::TaskQuery;
use crate::core::plan::{LaunchResult, Lookup};
use crate::core::request::RunTaskRequest;

/// Starts tasks.
pub trait TaskLauncher {
    /// Sends one `RunTask` request. Errors are part of the result: the loop classifies them.
    fn run_task(&self, request: &RunTaskRequest) -> impl Future<Output = LaunchResult> + Send;

    /// Lists the tasks, running or recently stopped, that `query` selects (read-only).
    fn find_tasks(&self, query: &TaskQuery) -> impl Future<Output = Lookup> + Send;
}
