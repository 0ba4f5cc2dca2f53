//! A successful launch: its request goes into the store, under each of its task ARNs, so that
//! a task of it that fails to start can be run again exactly ([`super::stopped`]).

use super::{Handler, HandlerError, Report, ignored};
use crate::core::caller::Caller;
use crate::core::decode::{FailedRunTask, Ignored, Origin, StartedRunTask};
use crate::core::guard::GuardedLaunch;
use crate::core::marks;
use crate::core::outcome::Outcome;
use crate::ports::clock::Clock;
use crate::ports::hearing::Hearing;
use crate::ports::launch::Launchers;
use crate::ports::notify::Notifier;
use crate::ports::queue::DelayQueue;
use crate::ports::store::LaunchStore;

impl<L: Launchers, N: Notifier, C: Clock, Q: DelayQueue, S: LaunchStore, H: Hearing>
    Handler<L, N, C, Q, S, H>
{
    /// Keeps a successful `RunTask` record's request for its tasks.
    pub(super) async fn guard_record(
        &self,
        started: &StartedRunTask,
    ) -> Result<Report, HandlerError> {
        let event_id = Some(started.origin.event_id.clone());
        if !self.store.enabled() {
            return Ok(ignored(
                event_id,
                &Ignored::Succeeded(": no launch store is configured (ECS_RERUN_STORE_TABLE)"),
            ));
        }
        if let Some(why) = self.unguarded(&started.origin, started.caller_arn.as_deref()) {
            return Ok(ignored(event_id, &why));
        }
        self.guard(
            &started.task_arns,
            &started.origin,
            started.replay_blocker.clone(),
        )
        .await?;
        tracing::info!(
            event_id = %started.origin.event_id,
            tasks = started.task_arns.len(),
            caller = started.origin.called_by.name(),
            "launch guarded"
        );
        Ok(Report {
            outcome: Outcome::Guarded,
            reason: format!(
                "{} task(s) guarded for {} h",
                started.task_arns.len(),
                self.config.store_ttl.as_secs() / 3600
            ),
            ..Report::about(&started.origin)
        })
    }

    /// Keeps the request of a failed record's tasks that did start (a partial failure).
    pub(super) async fn guard_started(&self, failed: &FailedRunTask) -> Result<(), HandlerError> {
        if failed.started_arns.is_empty()
            || !self.store.enabled()
            || self
                .unguarded(&failed.origin, failed.caller_arn.as_deref())
                .is_some()
        {
            return Ok(());
        }
        self.guard(
            &failed.started_arns,
            &failed.origin,
            failed.replay_blocker.clone(),
        )
        .await
    }

    async fn guard(
        &self,
        task_arns: &[String],
        origin: &Origin,
        replay_blocker: Option<String>,
    ) -> Result<(), HandlerError> {
        let launch = GuardedLaunch::recorded(origin, replay_blocker);
        let expires = self.clock.now() + self.config.store_ttl;
        Ok(self.store.guard(task_arns, &launch, expires).await?)
    }

    /// Why a launch is not guarded: the function's own (written when it is launched) and AWS
    /// Batch's (Batch retries its jobs by itself), as the template's rule pattern also leaves out.
    fn unguarded(&self, origin: &Origin, caller_arn: Option<&str>) -> Option<Ignored> {
        if let (Some(arn), Some(name)) = (caller_arn, self.config.function_name.as_deref())
            && marks::is_own_session(arn, name)
        {
            return Some(Ignored::OwnSession {
                arn: arn.to_owned(),
            });
        }
        (origin.called_by == Caller::Batch).then_some(Ignored::NotGuarded {
            caller: origin.called_by.name(),
        })
    }
}
