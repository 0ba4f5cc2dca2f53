//! The one plan-and-launch path: every kind of event that needs a rerun or a notification
//! reaches it as a [`FailedRunTask`]. `plan::decide` → the episode's steps (sleep, look up,
//! launch, guard what started) → at most one notification (claimed in the store, so that
//! duplicate deliveries send one; a copy of the episode that came too late claims its own
//! `stale` one) → a summary log line and a [`Report`].
//!
//! Each episode runs in its record's [`Place`]: a member account's record with the launcher the
//! [`Launchers`] port hands out for that account and Region (credentials of the member role),
//! which is asked for before anything is launched; if it cannot be had, the episode ends
//! notified, and nothing is launched anywhere. Every record's tokens derive from its own key,
//! as a single-account stack where it was made would send them; the central keys (stored
//! launch, notification claim) of a record made elsewhere than the function's own account and
//! Region name its cluster by ARN ([`org::qualified_key`]); the function's own records keep
//! the keys they always had.

use std::time::Duration;

use tracing::Instrument;

use super::{Handler, HandlerError, Invocation, Report, ignored, millis};
use crate::core::decode::{self, FailedRunTask, Origin};
use crate::core::guard::GuardedLaunch;
use crate::core::hop::Hop;
use crate::core::launch::{LaunchResult, Lookup};
use crate::core::message;
use crate::core::org::{self, Place};
use crate::core::outcome::{Conclusion, Outcome};
use crate::core::plan::episode::{Episode, Step};
use crate::core::plan::{self, Context, Decision};
use crate::core::redact;
use crate::ports::clock::Clock;
use crate::ports::hearing::Hearing;
use crate::ports::launch::{Launchers, TaskLauncher};
use crate::ports::notify::Notifier;
use crate::ports::queue::DelayQueue;
use crate::ports::store::{Claim, LaunchStore, NOTICE_LEASE_WITHOUT_DEADLINE};

/// How far an invocation took an episode.
enum Progress {
    /// To its end.
    Done(Conclusion),
    /// To a wait, which the delay queue now carries.
    Waiting {
        /// The next call.
        call: u32,
        /// The wait before it.
        wait: Duration,
        /// The delay the message was sent with (whole seconds, at most 15 minutes).
        delay: Duration,
    },
}

impl<L: Launchers, N: Notifier, C: Clock, Q: DelayQueue, S: LaunchStore, H: Hearing>
    Handler<L, N, C, Q, S, H>
{
    /// The first invocation of an episode: decide, then drive.
    pub(super) async fn begin(
        &self,
        failed: &FailedRunTask,
        invocation: &Invocation,
    ) -> Result<Report, HandlerError> {
        let place = self.place(&failed.origin, invocation);
        // The tokens derive from the record's own key (`failed`), exactly as a single-account
        // stack where the record was made sends them: ECS scopes tokens to the cluster, and
        // such a stack may still run beside this one. What this function keeps centrally (the
        // stored launch, the notification claim) names the cluster by ARN unless the record
        // was made in its own account and Region, so that no two places share it.
        let mut origin = failed.origin.clone();
        if failed.origin.stopped_task.is_none() && !place.is_own(self.config.region.as_deref()) {
            let request = &failed.origin.request;
            origin.key = org::qualified_key(
                &failed.origin.key,
                request.cluster.as_deref(),
                request.cluster_name(),
                &failed.origin.account,
                place.region(),
            );
        }
        let span = episode_span(&origin);
        self.decide_and_drive(failed, &origin, &place, invocation)
            .instrument(span)
            .await
    }

    /// A later invocation of an episode: the delay queue delivered its next step.
    pub(super) async fn resume(
        &self,
        hop: Hop,
        invocation: &Invocation,
    ) -> Result<Report, HandlerError> {
        let span = episode_span(&hop.origin);
        async move {
            let origin = hop.origin.clone();
            if let Some((next, delay)) = hop.clone().next_leg() {
                tracing::info!(
                    delay_s = delay.as_secs(),
                    "the wait goes on: chained in the delay queue"
                );
                self.queue.send(&next.to_json(), delay).await?;
                let left = Duration::from_millis(next.wait_left_ms) + delay;
                return Ok(self.waiting_report(&origin, next.episode.calls() + 1, left, delay));
            }
            let place = self.place(&origin, invocation);
            let mut episode = hop.episode;
            let launcher = self.reach(&place, &mut episode).await;
            self.drive(&origin, episode, launcher.as_ref(), invocation)
                .await
        }
        .instrument(span)
        .await
    }

    /// Where a record's tasks run: its account and Region.
    fn place(&self, origin: &Origin, invocation: &Invocation) -> Place {
        Place::of(
            &origin.account,
            &origin.region,
            invocation.own_account.as_deref(),
        )
    }

    /// The launcher of `place`; `None` in a dry run, or when the place cannot be reached, which
    /// ends the episode before its next call (`halt`): nothing is launched, anywhere.
    async fn reach(&self, place: &Place, episode: &mut Episode) -> Option<L::Launcher> {
        if self.config.dry_run {
            return None;
        }
        match self.launchers.launcher(place).await {
            Ok(launcher) => Some(launcher),
            // The notification and the "episode finished" line say why, naming account and role.
            Err(err) => {
                episode.halt(format!("not rerun: {err}"));
                None
            }
        }
    }

    /// Decides on `failed` (whose key the tokens derive from), then drives the episode, keeping
    /// and notifying it as `origin` (whose key is the central one).
    async fn decide_and_drive(
        &self,
        failed: &FailedRunTask,
        origin: &Origin,
        place: &Place,
        invocation: &Invocation,
    ) -> Result<Report, HandlerError> {
        let ctx = Context {
            now: self.clock.now(),
            own_account: invocation.own_account.as_deref(),
            allowed_accounts: &self.config.allowed_accounts,
            member_role: self.config.member_role.as_deref(),
            function_name: self.config.function_name.as_deref(),
        };
        match plan::decide(failed, &self.config.rules, &self.config.policy, ctx) {
            Decision::Ignore(why) => Ok(ignored(Some(failed.origin.event_id.clone()), &why)),
            Decision::Conclude(conclusion) => {
                log_failure(failed);
                self.finish(origin, conclusion, invocation).await
            }
            Decision::Retry(mut episode) => {
                log_failure(failed);
                let launcher = self.reach(place, &mut episode).await;
                self.drive(origin, *episode, launcher.as_ref(), invocation)
                    .await
            }
        }
    }

    /// Takes an episode as far as this invocation can: to its end, or to a wait, launching
    /// with `launcher` (none: launch nothing).
    async fn drive(
        &self,
        origin: &Origin,
        episode: Episode,
        launcher: Option<&L::Launcher>,
        invocation: &Invocation,
    ) -> Result<Report, HandlerError> {
        match self.run(origin, episode, launcher, invocation).await? {
            Progress::Done(conclusion) => self.finish(origin, conclusion, invocation).await,
            Progress::Waiting { call, wait, delay } => {
                Ok(self.waiting_report(origin, call, wait, delay))
            }
        }
    }

    /// Notifies as the conclusion needs, once per episode however often its event is
    /// delivered, and reports.
    pub(super) async fn finish(
        &self,
        origin: &Origin,
        conclusion: Conclusion,
        invocation: &Invocation,
    ) -> Result<Report, HandlerError> {
        let secrets: Vec<&str> = origin.request.environment_values().collect();
        let outcome = conclusion.outcome;
        let wants_note = match outcome {
            Outcome::Recovered | Outcome::AlreadyStarted => self.config.notify_on_recovery,
            Outcome::Ignored
            | Outcome::Waiting
            | Outcome::Left
            | Outcome::Guarded
            | Outcome::Unguarded
            | Outcome::SelfCheckOk
            | Outcome::SelfCheckFailed => false,
            // A recovery on the fallback placement changed the job's cost: always told.
            Outcome::RecoveredOnFallback
            | Outcome::GaveUp
            | Outcome::GaveUpAfterFallback
            | Outcome::NotRetryable
            | Outcome::Stale
            | Outcome::WouldRetry => true,
        };
        let note = wants_note.then(|| {
            self.config.notification_format.compose(
                origin,
                &conclusion,
                self.notifier.max_message_size(),
            )
        });
        let sent = match &note {
            Some(note) => {
                self.notify_once(origin, &conclusion, note, invocation)
                    .await?
            }
            None => false,
        };
        let subject = note.filter(|_| sent).map(|n| n.subject);
        let report = self.report(origin, &conclusion, subject, &secrets);
        tracing::info!(
            outcome = outcome.as_str(),
            reason_class = conclusion.class.as_str(),
            attempts = report.attempts,
            waited_ms = report.waited_ms,
            tasks_started = report.tasks_started,
            already_running = conclusion.already_running,
            still_missing = conclusion.still_missing,
            notified = report.notified,
            reason = %report.reason,
            "episode finished"
        );
        Ok(report)
    }

    /// Publishes `note` unless another delivery of the same episode did; whether it published.
    async fn notify_once(
        &self,
        origin: &Origin,
        conclusion: &Conclusion,
        note: &message::Notification,
        invocation: &Invocation,
    ) -> Result<bool, HandlerError> {
        let episode = origin.episode_key();
        // A copy of the episode that came too late says only that it stopped: it must not take
        // the notice of a copy still running, whose end may be that the job is still missing,
        // nor may a copy that made no call take the notice of one that stopped between calls,
        // which names the token that may have started the job.
        let key = &match (conclusion.outcome, conclusion.may_have_started.is_some()) {
            (Outcome::Stale, false) => format!("{episode}#stale"),
            (Outcome::Stale, true) => format!("{episode}#stale-call"),
            _ => episode.to_owned(),
        };
        let now = self.clock.now();
        // The claim holds while this invocation can live: after its deadline, Lambda has ended it.
        let lease = invocation
            .deadline
            .unwrap_or(now + NOTICE_LEASE_WITHOUT_DEADLINE);
        match self
            .store
            .claim_notice(key, now, lease, now + self.config.store_ttl)
            .await?
        {
            Claim::Sent => {
                tracing::info!(key = %key, "notification already published by another delivery of this episode");
                return Ok(false);
            }
            Claim::Pending => {
                return Err(HandlerError::NoticeInFlight {
                    key: key.to_owned(),
                });
            }
            Claim::Granted => {}
        }
        if let Err(err) = self.notifier.publish(note).await {
            tracing::error!(error = %err, "notification not published");
            if let Err(release) = self.store.release_notice(key).await {
                tracing::warn!(error = %release, "could not release the notification's claim; the next delivery takes it over after the lease");
            }
            return Err(err.into());
        }
        // Published: failing now would make the redelivery publish again once the lease is over.
        if let Err(err) = self.store.confirm_notice(key).await {
            tracing::warn!(error = %err, "notification published, but its claim could not be confirmed; a redelivery after the lease could publish it again");
        }
        Ok(true)
    }

    /// Carries out an episode's steps until it concludes or waits in the delay queue. Without
    /// a launcher (a dry run, or a halted episode, which concludes at its next step) nothing is
    /// looked up or launched.
    async fn run(
        &self,
        origin: &Origin,
        mut episode: Episode,
        launcher: Option<&L::Launcher>,
        invocation: &Invocation,
    ) -> Result<Progress, HandlerError> {
        let secrets: Vec<&str> = origin.request.environment_values().collect();
        let policy = &self.config.policy;
        let dry_run = self.config.dry_run;
        let hops = self.queue.enabled() && !dry_run;
        loop {
            let now = self.clock.now();
            let time_left = invocation
                .deadline
                .map(|d| d.duration_since(now).unwrap_or(Duration::ZERO));
            // With a queue, a wait that does not fit is carried by the queue, never given up on.
            let step = episode.next(policy, now, if hops { None } else { time_left });
            let (call, wait) = match &step {
                Step::Done(_) => (0, Duration::ZERO),
                Step::Lookup { wait, .. } => (episode.calls() + 1, *wait),
                Step::Launch { call, wait, .. } => (*call, *wait),
            };
            let fits = time_left.is_none_or(|left| wait + policy.deadline_reserve <= left);
            if hops && !matches!(step, Step::Done(_)) && (wait > self.config.hop_after || !fits) {
                episode.defer(wait);
                let (hop, delay) = Hop::new(origin.clone(), episode, wait);
                tracing::info!(
                    call,
                    wait_ms = millis(wait),
                    delay_s = delay.as_secs(),
                    "waiting in the delay queue"
                );
                // The invocation's last act: a hop is delivered twice only in SQS's rare duplicates.
                self.queue.send(&hop.to_json(), delay).await?;
                return Ok(Progress::Waiting { call, wait, delay });
            }
            match step {
                Step::Done(mut conclusion) => {
                    if dry_run {
                        conclusion.schedule_ms =
                            episode.schedule(policy).into_iter().map(millis).collect();
                    }
                    return Ok(Progress::Done(conclusion));
                }
                Step::Lookup { wait, query } => {
                    let found = match launcher {
                        None => {
                            tracing::info!(
                                ?query,
                                "dry run: would look for the caller's own retry (ListTasks, DescribeTasks)"
                            );
                            Lookup::Skipped
                        }
                        Some(launcher) => {
                            tracing::info!(
                                wait_ms = millis(wait),
                                "waiting before looking for the caller's own retry"
                            );
                            self.sleep(wait).await;
                            launcher.find_tasks(&query).await
                        }
                    };
                    if let Lookup::Failed(error) = &found {
                        tracing::warn!(error = %error, "look-up failed");
                    }
                    episode.record_lookup(found);
                }
                Step::Launch {
                    call,
                    wait,
                    request,
                } => {
                    let Some(launcher) = launcher else {
                        let schedule: Vec<u64> =
                            episode.schedule(policy).into_iter().map(millis).collect();
                        tracing::info!(call, request = %request.to_loggable_json(), schedule_ms = ?schedule, "dry run: would send RunTask on this backoff schedule (not slept)");
                        episode.record(LaunchResult::DryRun, self.clock.now(), &self.config.rules);
                        continue;
                    };
                    tracing::info!(
                        call,
                        wait_ms = millis(wait),
                        count = request.count,
                        "waiting before retry"
                    );
                    self.sleep(wait).await;
                    let sent_at = self.clock.now();
                    let result = launcher.run_task(&request).await;
                    log_attempt(call, &result, &secrets);
                    let started: Vec<String> = match &result {
                        LaunchResult::Placed { tasks, .. } => {
                            tasks.iter().map(|t| t.arn.clone()).collect()
                        }
                        _ => Vec::new(),
                    };
                    episode.record(result, sent_at, &self.config.rules);
                    if !started.is_empty() && self.store.enabled() {
                        // Written now, not learned back from CloudTrail, so that the job's
                        // calls count across invocations. Failing here is safe: the redelivery
                        // sends the same token, and ECS answers with these very tasks.
                        let launch = GuardedLaunch::rerun(origin, &request, episode.calls());
                        self.store
                            .guard(&started, &launch, self.clock.now() + self.config.store_ttl)
                            .await?;
                    }
                }
            }
        }
    }

    /// Sleeps, unless the wait was spent in the delay queue already.
    async fn sleep(&self, wait: Duration) {
        if !wait.is_zero() {
            self.clock.sleep(wait).await;
        }
    }

    fn waiting_report(
        &self,
        origin: &Origin,
        call: u32,
        wait: Duration,
        delay: Duration,
    ) -> Report {
        Report {
            outcome: Outcome::Waiting,
            reason: format!(
                "call {call} waits {:.1}s in the delay queue (DelaySeconds {})",
                wait.as_secs_f64(),
                delay.as_secs()
            ),
            attempts: call.saturating_sub(1),
            ..Report::about(origin)
        }
    }

    fn report(
        &self,
        origin: &Origin,
        c: &Conclusion,
        subject: Option<String>,
        secrets: &[&str],
    ) -> Report {
        let recovery_ms = matches!(c.outcome, Outcome::Recovered | Outcome::RecoveredOnFallback)
            .then_some(origin.recorded_at)
            .flatten()
            .and_then(|t| self.clock.now().duration_since(t).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Report {
            outcome: c.outcome,
            reason_class: Some(c.class),
            reason: redact::scrub(&c.why, secrets.iter().copied()),
            attempts: u32::try_from(c.attempts.len()).unwrap_or(u32::MAX),
            tasks_started: c.started_by_retries,
            waited_ms: c.attempts.iter().map(|a| a.waited_ms).sum(),
            notified: subject.is_some(),
            subject,
            recovery_ms,
            rule: Some(c.rule.clone()),
            ..Report::about(origin)
        }
    }
}

fn episode_span(origin: &Origin) -> tracing::Span {
    tracing::info_span!(
        "episode",
        event_id = %origin.event_id,
        account = %origin.account,
        region = %origin.region,
        caller = %origin.called_by.name(),
        cluster = %origin.request.cluster_name(),
        task_family = %origin.request.task_family().unwrap_or(""),
    )
}

fn log_failure(failed: &FailedRunTask) {
    let secrets: Vec<&str> = failed.origin.request.environment_values().collect();
    tracing::info!(
        failure = %redact::scrub(&failure_line(failed), secrets.iter().copied()),
        requested = failed.origin.request.requested_count(),
        started = failed.origin.started,
        caller = failed.origin.caller.as_deref().unwrap_or("unknown"),
        "RunTask failed"
    );
}

fn failure_line(failed: &FailedRunTask) -> String {
    match &failed.failure {
        decode::Failure::Api { code, message } => format!("{code}: {message}"),
        decode::Failure::Placement(failures) => failures
            .iter()
            .map(|f| f.reason.as_deref().unwrap_or("(no reason)"))
            .collect::<Vec<_>>()
            .join("; "),
        decode::Failure::Stopped {
            stop_code,
            reason,
            detail,
        } => format!("{stop_code}: {reason} {detail}"),
    }
}

fn log_attempt(call: u32, result: &LaunchResult, secrets: &[&str]) {
    match result {
        LaunchResult::Placed { tasks, failures } => {
            let reasons: Vec<&str> = failures
                .iter()
                .filter_map(|f| f.reason.as_deref())
                .collect();
            tracing::info!(call, tasks = tasks.len(), failures = failures.len(), reasons = %redact::scrub(&reasons.join("; "), secrets.iter().copied()), "retry answered");
        }
        LaunchResult::Rejected {
            code,
            message,
            ambiguous,
            existing,
        } => {
            tracing::warn!(call, code = %code, error_message = %redact::scrub(message, secrets.iter().copied()), ambiguous, existing = existing.len(), "retry rejected");
        }
        LaunchResult::DryRun => {}
    }
}
