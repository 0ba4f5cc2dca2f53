//! Handler: one event in, one report out. Carries out the plan through the ports.
//!
//! `decode` → account check → `plan::decide` → the episode's steps (sleep, launch, record) →
//! at most one notification → a summary log line and a [`Report`]. The Lambda `main` and the
//! local replay command both call [`Handler::handle`]; only the adapters differ.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::classify::ReasonClass;
use crate::clock::Clock;
use crate::config::Config;
use crate::decode::{self, DecodeError, Decoded, FailedRunTask, Ignored};
use crate::launch::TaskLauncher;
use crate::message;
use crate::notify::{Notifier, PublishError};
use crate::plan::{
    self, Conclusion, Context, Decision, Episode, LaunchResult, Lookup, Outcome, Step,
};
use crate::redact;

/// What the runtime knows about this invocation.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// The Lambda deadline; `None` when replaying locally.
    pub deadline: Option<SystemTime>,
    /// The function's own account (from its ARN); `None` when replaying locally.
    pub own_account: Option<String>,
}

/// The result of one event: returned to Lambda, printed by the replay command, turned into metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// CloudTrail `eventID`, when there is one.
    pub event_id: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Class of the deciding failure (none for ignored events).
    pub reason_class: Option<ReasonClass>,
    /// Why, in one line (secrets masked).
    pub reason: String,
    /// Launch attempts made.
    pub attempts: u32,
    /// Tasks the retries started.
    pub tasks_started: u32,
    /// Time spent in backoff, in milliseconds.
    pub waited_ms: u64,
    /// Whether a notification was published.
    pub notified: bool,
    /// Its subject.
    pub subject: Option<String>,
    /// Cluster short name.
    pub cluster: Option<String>,
    /// Task family.
    pub task_family: Option<String>,
    /// From the original failure (CloudTrail `eventTime`) to the recovery, in milliseconds.
    pub recovery_ms: Option<u64>,
}

/// Why an invocation fails (and goes to Lambda's retry and then the dead-letter queue).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event cannot be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The notification could not be published.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// The handler, generic over its ports.
#[derive(Debug)]
pub struct Handler<L, N, C> {
    config: Config,
    launcher: L,
    notifier: N,
    clock: C,
}

impl<L: TaskLauncher, N: Notifier, C: Clock> Handler<L, N, C> {
    /// Assembles a handler from validated config and built adapters.
    pub fn new(config: Config, launcher: L, notifier: N, clock: C) -> Self {
        Self {
            config,
            launcher,
            notifier,
            clock,
        }
    }

    /// Handles one EventBridge event.
    pub async fn handle(
        &self,
        event: Value,
        invocation: &Invocation,
    ) -> Result<Report, HandlerError> {
        let event_id = event_id_of(&event);
        let decoded = decode::decode(event).inspect_err(|err| {
            tracing::error!(error = %err, "cannot decode the event; failing the invocation so that it is retried and then dead-lettered, not lost");
        })?;
        let failed = match decoded {
            Decoded::Ignored(why) => return Ok(ignored(event_id, &why)),
            Decoded::Failed(failed) => failed,
        };
        let request = &failed.request;
        let span = tracing::info_span!(
            "episode",
            event_id = %failed.event_id,
            cluster = %request.cluster_name(),
            task_family = %request.task_family().unwrap_or(""),
        );
        self.episode(&failed, invocation).instrument(span).await
    }

    async fn episode(
        &self,
        failed: &FailedRunTask,
        invocation: &Invocation,
    ) -> Result<Report, HandlerError> {
        let secrets: Vec<&str> = failed.request.environment_values().collect();
        let ctx = Context {
            now: self.clock.now(),
            own_account: invocation.own_account.as_deref(),
            allowed_accounts: &self.config.allowed_accounts,
            function_name: self.config.function_name.as_deref(),
        };
        let policy = &self.config.policy;
        let conclusion = match plan::decide(failed, &self.config.rules, policy, ctx) {
            Decision::Ignore(why) => return Ok(ignored(Some(failed.event_id.clone()), &why)),
            Decision::Conclude(conclusion) => {
                self.log_failure(failed, &secrets);
                conclusion
            }
            Decision::Retry(episode) => {
                self.log_failure(failed, &secrets);
                self.run(*episode, invocation, &secrets).await
            }
        };

        let outcome = conclusion.outcome;
        let wants_note = match outcome {
            Outcome::Recovered | Outcome::AlreadyStarted => self.config.notify_on_recovery,
            Outcome::Ignored => false,
            Outcome::GaveUp | Outcome::NotRetryable | Outcome::Stale | Outcome::WouldRetry => true,
        };
        let note = wants_note
            .then(|| message::compose(failed, &conclusion, self.notifier.max_message_size()));
        if let Some(note) = &note {
            self.notifier.publish(note).await.inspect_err(|err| {
                tracing::error!(error = %err, "notification not published");
            })?;
        }
        let report = self.report(failed, &conclusion, note.map(|n| n.subject), &secrets);
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

    /// Carries out an episode's steps until it concludes.
    async fn run(
        &self,
        mut episode: Episode,
        invocation: &Invocation,
        secrets: &[&str],
    ) -> Conclusion {
        let policy = &self.config.policy;
        let dry_run = self.config.dry_run;
        loop {
            let time_left = invocation
                .deadline
                .map(|d| d.duration_since(self.clock.now()).unwrap_or(Duration::ZERO));
            match episode.next(policy, time_left) {
                Step::Done(mut conclusion) => {
                    if dry_run {
                        conclusion.schedule_ms = episode
                            .schedule(policy)
                            .iter()
                            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                            .collect();
                    }
                    return conclusion;
                }
                Step::Lookup { wait, query } => {
                    let found = if dry_run {
                        tracing::info!(
                            ?query,
                            "dry run: would look for the caller's own retry (ListTasks, DescribeTasks)"
                        );
                        Lookup::Skipped
                    } else {
                        tracing::info!(
                            wait_ms = wait.as_millis() as u64,
                            "waiting before looking for the caller's own retry"
                        );
                        self.clock.sleep(wait).await;
                        self.launcher.find_tasks(&query).await
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
                    if dry_run {
                        let schedule: Vec<u64> = episode
                            .schedule(policy)
                            .iter()
                            .map(|d| d.as_millis() as u64)
                            .collect();
                        tracing::info!(call, request = %request.to_loggable_json(), schedule_ms = ?schedule, "dry run: would send RunTask on this backoff schedule (not slept)");
                        episode.record(LaunchResult::DryRun, self.clock.now(), &self.config.rules);
                        continue;
                    }
                    tracing::info!(
                        call,
                        wait_ms = wait.as_millis() as u64,
                        count = request.count,
                        "waiting before retry"
                    );
                    self.clock.sleep(wait).await;
                    let sent_at = self.clock.now();
                    let result = self.launcher.run_task(&request).await;
                    log_attempt(call, &result, secrets);
                    episode.record(result, sent_at, &self.config.rules);
                }
            }
        }
    }

    fn log_failure(&self, failed: &FailedRunTask, secrets: &[&str]) {
        tracing::info!(
            failure = %redact::scrub(&failure_line(failed), secrets.iter().copied()),
            requested = failed.request.requested_count(),
            started = failed.started,
            caller = failed.caller.as_deref().unwrap_or("unknown"),
            "RunTask failed"
        );
    }

    fn report(
        &self,
        failed: &FailedRunTask,
        c: &Conclusion,
        subject: Option<String>,
        secrets: &[&str],
    ) -> Report {
        let recovery_ms = (c.outcome == Outcome::Recovered)
            .then_some(failed.recorded_at)
            .flatten()
            .and_then(|t| self.clock.now().duration_since(t).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Report {
            event_id: Some(failed.event_id.clone()),
            outcome: c.outcome,
            reason_class: Some(c.class),
            reason: redact::scrub(&c.why, secrets.iter().copied()),
            attempts: u32::try_from(c.attempts.len()).unwrap_or(u32::MAX),
            tasks_started: c.started_by_retries,
            waited_ms: c.attempts.iter().map(|a| a.waited_ms).sum(),
            notified: subject.is_some(),
            subject,
            cluster: Some(failed.request.cluster_name().to_owned()),
            task_family: failed.request.task_family().map(str::to_owned),
            recovery_ms,
        }
    }
}

fn ignored(event_id: Option<String>, why: &Ignored) -> Report {
    tracing::info!(event_id = event_id.as_deref().unwrap_or("none"), reason = %why, "event ignored");
    Report {
        event_id,
        outcome: Outcome::Ignored,
        reason_class: None,
        reason: why.to_string(),
        attempts: 0,
        tasks_started: 0,
        waited_ms: 0,
        notified: false,
        subject: None,
        cluster: None,
        task_family: None,
        recovery_ms: None,
    }
}

fn event_id_of(event: &Value) -> Option<String> {
    event
        .pointer("/detail/eventID")
        .or_else(|| event.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn failure_line(failed: &FailedRunTask) -> String {
    match &failed.failure {
        decode::Failure::Api { code, message } => format!("{code}: {message}"),
        decode::Failure::Placement(failures) => failures
            .iter()
            .map(|f| f.reason.as_deref().unwrap_or("(no reason)"))
            .collect::<Vec<_>>()
            .join("; "),
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
