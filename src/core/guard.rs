//! Guard: what the store keeps of a launch, so that a task of it that ECS accepted but then
//! stopped before it ran can be run again; and how such a task becomes a [`FailedRunTask`], to
//! take the one plan-and-launch path every failure takes.
//!
//! The `ECS Task State Change` event lacks what a faithful rerun needs (security groups, the
//! whole subnet list, the capacity provider strategy, placement, tags: aws-facts §9); the
//! CloudTrail record of the successful `RunTask` has all of it, and so does every request
//! ecs-rerun sends itself. Each is kept under each of its task ARNs, with the number of calls
//! the job has had, so that attempts count across invocations.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::decode::{FailedRunTask, Origin, StoppedTask};
use crate::core::request::RunTaskRequest;

/// How long the store keeps a launch by default: a task that has not failed to start within a
/// day has started.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The waits before each new look for a stopped task whose launch the store does not know
/// yet: CloudTrail reaches EventBridge later than ECS's own events, with no bound. Together a
/// quarter of an hour; then the task is notified as not rerun.
pub const RECHECK_DELAYS: [Duration; 4] = [
    Duration::from_secs(60),
    Duration::from_secs(120),
    Duration::from_secs(240),
    Duration::from_secs(480),
];
/// The format of [`GuardedLaunch`]; a stored launch of another version is not guessed at.
pub const VERSION: u32 = 1;

/// One launch, as the store keeps it under each of its task ARNs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardedLaunch {
    /// [`VERSION`].
    pub version: u32,
    /// The launch's record: its request (as sent), caller, call tag, account and region.
    pub origin: Origin,
    /// `RunTask` calls the job has had after the caller's own: 0 for the caller's launch.
    pub calls: u32,
    /// Why the request cannot be replayed faithfully, if it cannot.
    pub replay_blocker: Option<String>,
}

impl GuardedLaunch {
    /// A launch whose CloudTrail record ecs-rerun saw (the caller's own: no call of ours yet).
    pub fn recorded(origin: &Origin, replay_blocker: Option<String>) -> Self {
        Self {
            version: VERSION,
            origin: origin.clone(),
            calls: 0,
            replay_blocker,
        }
    }

    /// A launch ecs-rerun made itself: call `calls` of the job of `origin`, sending `request`.
    pub fn rerun(origin: &Origin, request: &RunTaskRequest, calls: u32) -> Self {
        Self {
            version: VERSION,
            origin: Origin {
                request: request.clone(),
                ..origin.clone()
            },
            calls,
            replay_blocker: None,
        }
    }

    /// The failure to plan for: `stopped`, one task of this launch, to be run again with this
    /// launch's request, pinned to the revision it ran, one task, under a key of its own ARN.
    pub fn stopped(self, stopped: &StoppedTask) -> FailedRunTask {
        let mut request = self.origin.request;
        if let Some(revision) = &stopped.task_definition_arn {
            request.task_definition = Some(revision.clone());
        }
        request.count = Some(1);
        request.client_token = None;
        FailedRunTask {
            origin: stopped.origin(
                request,
                self.origin.caller,
                self.origin.called_by,
                self.origin.call_tag,
            ),
            caller_arn: None,
            failure: stopped.failure(),
            started_arns: Vec::new(),
            replay_blocker: self.replay_blocker,
            prior_calls: self.calls,
            // The task's own event is the only record: nothing to disagree with.
            misplaced: None,
        }
    }
}
