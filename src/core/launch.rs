//! Launch: what a launcher answers, as the plan needs it.
//!
//! A launcher (the port, and the AWS adapter behind it) answers each `RunTask` with a
//! [`LaunchResult`] and each look-up for the caller's own retry with a [`Lookup`]; the retry
//! episode takes both. The words live here so that neither side owns the other's vocabulary.

use std::time::SystemTime;

use crate::core::event::PlacementFailure;
use crate::core::lookup::ExistingTask;

/// A task in a `RunTask` answer.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchedTask {
    /// Task ARN.
    pub arn: String,
    /// When ECS created it: before the re-issue means someone else had started it.
    pub created_at: Option<SystemTime>,
}

/// What a launch returned, as the plan needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum LaunchResult {
    /// ECS answered: these tasks exist for the token, these could not be placed.
    Placed {
        /// The tasks of the answer.
        tasks: Vec<LaunchedTask>,
        /// Placement failures.
        failures: Vec<PlacementFailure>,
    },
    /// The call raised an error.
    Rejected {
        /// Error code (`ThrottlingException`, ... or [`crate::core::classify::NETWORK_ERROR`]).
        code: String,
        /// Error message.
        message: String,
        /// The call may have been carried out (5xx, timeout).
        ambiguous: bool,
        /// The tasks a `ConflictException` names (`resourceIds`): the token already started them.
        existing: Vec<String>,
    },
    /// Dry run: nothing was sent.
    DryRun,
}

/// What the look-up for the caller's own retry found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The tasks of the family on the cluster.
    Found(Vec<ExistingTask>),
    /// ECS could not be asked.
    Failed(String),
    /// Dry run: not asked.
    Skipped,
}
