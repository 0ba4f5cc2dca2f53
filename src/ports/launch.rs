//! Launch: the port that starts tasks and looks for tasks already started, in the place each
//! record belongs to.
//!
//! [`TaskLauncher`] is all the retry loop knows of ECS: one account, one Region, one set of
//! credentials. [`Launchers`] hands out the launcher of a [`Place`]: the function's own account,
//! or a member account of the organization with the member role's credentials. A single
//! launcher is a [`Launchers`] of the function's own account alone, so a single-account
//! deployment (and every test that needs no other account) stays as it was. The AWS adapters
//! are [`crate::aws::ecs::EcsLauncher`] and [`crate::aws::places::EcsPlaces`]. (A dry run never
//! reaches a launcher: the handler stops first.)

use std::future::Future;

use crate::core::launch::{LaunchResult, Lookup};
use crate::core::lookup::TaskQuery;
use crate::core::org::Place;
use crate::core::request::RunTaskRequest;

/// Starts tasks.
pub trait TaskLauncher {
    /// Sends one `RunTask` request. Errors are part of the result: the loop classifies them.
    fn run_task(&self, request: &RunTaskRequest) -> impl Future<Output = LaunchResult> + Send;

    /// Lists the tasks, running or recently stopped, that `query` selects (read-only).
    fn find_tasks(&self, query: &TaskQuery) -> impl Future<Output = Lookup> + Send;
}

/// A place cannot be reached: nothing may be launched for its record, anywhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReachError {
    /// No member role is configured, so no other account can be reached.
    #[error(
        "no role to reach account {account}: ECS_RERUN_MEMBER_ROLE is not set, and a member's \
         task is never run with the central account's credentials"
    )]
    NoRole {
        /// The member account.
        account: String,
    },
    /// STS refused the member role, or could not be asked.
    #[error(
        "could not assume {role_arn} to reach account {account} ({region}): {cause}. Check that \
         the member stack's role exists there and trusts this function's role"
    )]
    AssumeRole {
        /// The member account.
        account: String,
        /// The record's Region.
        region: String,
        /// The role that was asked for.
        role_arn: String,
        /// What STS (or the way to it) said.
        cause: String,
    },
}

/// Hands out the launcher of a place.
pub trait Launchers {
    /// The launcher of one place.
    type Launcher: TaskLauncher + Sync;

    /// The launcher of `place`, with credentials that are known to work there; an error when
    /// there are none, before anything is launched.
    fn launcher(
        &self,
        place: &Place,
    ) -> impl Future<Output = Result<Self::Launcher, ReachError>> + Send;
}

/// A single launcher serves the function's own account only: a member's record gets
/// [`ReachError::NoRole`], never this launcher.
impl<T: TaskLauncher + Clone + Send + Sync> Launchers for T {
    type Launcher = T;

    async fn launcher(&self, place: &Place) -> Result<T, ReachError> {
        match place.member_account() {
            None => Ok(self.clone()),
            Some(account) => Err(ReachError::NoRole {
                account: account.to_owned(),
            }),
        }
    }
}
