//! A task that ECS accepted and then stopped before it ran (`TaskFailedToStart`), or, where a
//! rule says so, one that Spot took away: looked up in the store, it becomes the same
//! [`crate::core::decode::FailedRunTask`] a failed `RunTask` record does and takes the one
//! plan-and-launch path. Not there yet, it is looked for again through the delay queue for a
//! quarter of an hour (CloudTrail's record of its launch may be that late), then notified.

use super::{Handler, HandlerError, Invocation, Report, ignored};
use crate::core::classify::{ReasonClass, Subject};
use crate::core::decode::{Ignored, Origin, StoppedTask};
use crate::core::guard::RECHECK_DELAYS;
use crate::core::hop::{Recheck, VERSION};
use crate::core::outcome::{Conclusion, Outcome};
use crate::core::request::RunTaskRequest;
use crate::ports::clock::Clock;
use crate::ports::hearing::Hearing;
use crate::ports::launch::Launchers;
use crate::ports::notify::Notifier;
use crate::ports::queue::DelayQueue;
use crate::ports::store::LaunchStore;

/// AWS Batch names the clusters of its compute environments so: their tasks are Batch's jobs,
/// which the store never guards (Batch retries them by itself).
const BATCH_CLUSTER_PREFIX: &str = "AWSBatch-";

impl<L: Launchers, N: Notifier, C: Clock, Q: DelayQueue, S: LaunchStore, H: Hearing>
    Handler<L, N, C, Q, S, H>
{
    /// Handles a stopped task; `tries` is the looks made before.
    pub(super) async fn stopped(
        &self,
        stopped: &StoppedTask,
        tries: u32,
        invocation: &Invocation,
    ) -> Result<Report, HandlerError> {
        let event_id = Some(stopped.event_id.clone());
        if !self.store.enabled() {
            tracing::warn!(task = %stopped.task_arn, "a task failed to start, but no launch store is configured (ECS_RERUN_STORE_TABLE): not rerun");
            return Ok(ignored(event_id, &Ignored::NoStore));
        };
        if let Some(launch) = self.store.find(&stopped.task_arn, self.clock.now()).await? {
            let failed = launch.stopped(stopped);
            return self.begin(&failed, invocation).await;
        }
        let origin = origin_of(stopped);
        let cluster = origin.request.cluster_name();
        if cluster.starts_with(BATCH_CLUSTER_PREFIX) {
            tracing::info!(task = %stopped.task_arn, cluster, "task of an AWS Batch compute environment: never guarded, not rerun");
            return Ok(Report {
                outcome: Outcome::Unguarded,
                reason: format!(
                    "task of AWS Batch's cluster {cluster}: Batch retries its own jobs, the store \
                     never guards them"
                ),
                ..Report::about(&origin)
            });
        }
        let delay = usize::try_from(tries)
            .ok()
            .and_then(|i| RECHECK_DELAYS.get(i))
            .filter(|_| self.queue.enabled() && !self.config.dry_run);
        if let Some(&delay) = delay {
            let recheck = Recheck {
                version: VERSION,
                recheck: stopped.clone(),
                tries: tries + 1,
            };
            tracing::info!(task = %stopped.task_arn, tries, delay_s = delay.as_secs(), "the store does not know this task's launch yet; looking again later");
            self.queue.send(&recheck.to_json(), delay).await?;
            return Ok(Report {
                outcome: Outcome::Waiting,
                reason: format!(
                    "launch not in the store yet: look {} in {} s",
                    tries + 2,
                    delay.as_secs()
                ),
                ..Report::about(&origin)
            });
        }
        let looked = RECHECK_DELAYS
            .iter()
            .take(usize::try_from(tries).unwrap_or(usize::MAX))
            .map(|d| d.as_secs())
            .sum::<u64>();
        // Nothing is known of its caller: no onCaller rule concerns it.
        let subject = Subject {
            caller: None,
            ..Subject::of(&origin)
        };
        let verdicts = self.config.rules.failure(&stopped.failure(), &subject);
        let conclusion = Conclusion::at_once(
            Outcome::NotRetryable,
            ReasonClass::NotReplayable,
            format!(
                "stopped before its start was recorded: not rerun. The store had no launch for \
                 task {} after {} look(s) over {} s: its caller may be one the guard leaves out \
                 (AWS Batch, StartTask), its record may have come later than CloudTrail usually \
                 is, or the feature was turned on after it started. Its launcher may retry it \
                 itself (AWS Batch does): check before you start it again by hand",
                stopped.task_arn,
                tries + 1,
                looked
            ),
            verdicts,
            1,
        );
        self.finish(&origin, conclusion, invocation).await
    }
}

/// What the event alone says of the task's launch: enough for a notification, not a rerun.
fn origin_of(stopped: &StoppedTask) -> Origin {
    let request = RunTaskRequest {
        cluster: stopped.cluster_arn.clone(),
        task_definition: stopped.task_definition_arn.clone(),
        count: Some(1),
        ..RunTaskRequest::default()
    };
    stopped.origin(request, None, Default::default(), String::new())
}
