//! Handler: one event in, one report out. Carries out the plan through the ports.
//!
//! `decode` → account check → `plan::decide` → the episode's steps (sleep, launch, record) →
//! at most one notification → a summary log line and a [`Report`]. The Lambda `main` and the
//! local replay command both call [`Handler::handle`]; only the adapters differ.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::caller::Caller;
use crate::classify::ReasonClass;
use crate::clock::Clock;
use crate::config::Config;
use crate::decode::{self, DecodeError, Decoded, FailedRunTask, Ignored, Origin};
use crate::hop::{Hop, HopError};
use crate::launch::TaskLauncher;
use crate::message;
use crate::notify::{Notifier, PublishError};
use crate::plan::{
    self, Conclusion, Context, Decision, Episode, LaunchResult, Lookup, Outcome, Step,
};
use crate::queue::{DelayQueue, NoQueue, QueueError};
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
    /// Who made the failed call.
    pub caller: Option<Caller>,
    /// The rule that decided.
    pub rule: Option<String>,
}

/// Why an invocation fails (and goes to Lambda's retry and then the dead-letter queue).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event cannot be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A delay-queue message cannot be read.
    #[error(transparent)]
    Hop(#[from] HopError),
    /// The notification could not be published.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The next step could not be sent to the delay queue.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What one Lambda invocation answers, and the reports of what it handled.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The response: a [`Report`] for an EventBridge event, `batchItemFailures` for SQS.
    pub body: Value,
    /// One report per event or message handled.
    pub reports: Vec<Report>,
}

/// The handler, generic over its ports; without a delay queue ([`NoQueue`]) until
/// [`Handler::with_queue`] gives it one.
#[derive(Debug)]
pub struct Handler<L, N, C, Q = NoQueue> {
    config: Config,
    launcher: L,
    notifier: N,
    clock: C,
    queue: Q,
}

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

impl<L: TaskLauncher, N: Notifier, C: Clock> Handler<L, N, C> {
    /// Assembles a handler from validated config and built adapters.
    pub fn new(config: Config, launcher: L, notifier: N, clock: C) -> Self {
        Self {
            config,
            launcher,
            notifier,
            clock,
            queue: NoQueue,
        }
    }
}

impl<L: TaskLauncher, N: Notifier, C: Clock, Q: DelayQueue> Handler<L, N, C, Q> {
    /// The same handler, carrying episodes through their waits on `queue`.
    pub fn with_queue<Q2: DelayQueue>(self, queue: Q2) -> Handler<L, N, C, Q2> {
        Handler {
            config: self.config,
            launcher: self.launcher,
            notifier: self.notifier,
            clock: self.clock,
            queue,
        }
    }

    /// Its delay queue (the replay command plays it).
    pub fn queue(&self) -> &Q {
        &self.queue
    }

    /// Handles one Lambda payload: an EventBridge event, or a batch of delay-queue messages
    /// (each handled on its own; the ones that fail are reported back to SQS, which delivers
    /// them again and finally dead-letters them).
    pub async fn handle_payload(
        &self,
        payload: Value,
        invocation: &Invocation,
    ) -> Result<Reply, HandlerError> {
        let Some(records) = sqs_records(&payload) else {
            // Boxed: the episode's state machine is deep, and one heap allocation per
            // invocation keeps the future's type within the compiler's limits.
            let report = Box::pin(self.handle(payload, invocation)).await?;
            return Ok(Reply {
                body: serde_json::to_value(&report).unwrap_or(Value::Null),
                reports: vec![report],
            });
        };
        let mut reports = Vec::new();
        let mut failures = Vec::new();
        for (message_id, body) in records {
            match Box::pin(self.handle_hop(&body, invocation)).await {
                Ok(report) => reports.push(report),
                Err(err) => {
                    tracing::error!(message_id = %message_id, error = %err, "delay-queue message failed; SQS will deliver it again");
                    failures.push(json!({"itemIdentifier": message_id}));
                }
            }
        }
        Ok(Reply {
            body: json!({"batchItemFailures": failures}),
            reports,
        })
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
        let span = episode_span(&failed.origin);
        self.begin(&failed, invocation).instrument(span).await
    }

    /// Handles one delay-queue message: the next step of an episode.
    pub async fn handle_hop(
        &self,
        body: &str,
        invocation: &Invocation,
    ) -> Result<Report, HandlerError> {
        let hop = Hop::from_json(body)?;
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
            self.drive(&origin, hop.episode, invocation).await
        }
        .instrument(span)
        .await
    }

    /// The first invocation of an episode: decide, then drive.
    async fn begin(
        &self,
        failed: &FailedRunTask,
        invocation: &Invocation,
    ) -> Result<Report, HandlerError> {
        let ctx = Context {
            now: self.clock.now(),
            own_account: invocation.own_account.as_deref(),
            allowed_accounts: &self.config.allowed_accounts,
            function_name: self.config.function_name.as_deref(),
        };
        let origin = failed.origin.clone();
        match plan::decide(failed, &self.config.rules, &self.config.policy, ctx) {
            Decision::Ignore(why) => Ok(ignored(Some(failed.origin.event_id.clone()), &why)),
            Decision::Conclude(conclusion) => {
                log_failure(failed);
                self.finish(&origin, conclusion).await
            }
            Decision::Retry(episode) => {
                log_failure(failed);
                self.drive(&origin, *episode, invocation).await
            }
        }
    }

    /// Takes an episode as far as this invocation can: to its end, or to a wait.
    async fn drive(
        &self,
        origin: &Origin,
        episode: Episode,
        invocation: &Invocation,
    ) -> Result<Report, HandlerError> {
        match self.run(origin, episode, invocation).await? {
            Progress::Done(conclusion) => self.finish(origin, conclusion).await,
            Progress::Waiting { call, wait, delay } => {
                Ok(self.waiting_report(origin, call, wait, delay))
            }
        }
    }

    /// Notifies as the conclusion needs, and reports.
    async fn finish(
        &self,
        origin: &Origin,
        conclusion: Conclusion,
    ) -> Result<Report, HandlerError> {
        let secrets: Vec<&str> = origin.request.environment_values().collect();
        let outcome = conclusion.outcome;
        let wants_note = match outcome {
            Outcome::Recovered | Outcome::AlreadyStarted => self.config.notify_on_recovery,
            Outcome::Ignored | Outcome::Waiting | Outcome::Left => false,
            Outcome::GaveUp | Outcome::NotRetryable | Outcome::Stale | Outcome::WouldRetry => true,
        };
        let note = wants_note
            .then(|| message::compose(origin, &conclusion, self.notifier.max_message_size()));
        if let Some(note) = &note {
            self.notifier.publish(note).await.inspect_err(|err| {
                tracing::error!(error = %err, "notification not published");
            })?;
        }
        let report = self.report(origin, &conclusion, note.map(|n| n.subject), &secrets);
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

    /// Carries out an episode's steps until it concludes or waits in the delay queue.
    async fn run(
        &self,
        origin: &Origin,
        mut episode: Episode,
        invocation: &Invocation,
    ) -> Result<Progress, HandlerError> {
        let secrets: Vec<&str> = origin.request.environment_values().collect();
        let policy = &self.config.policy;
        let dry_run = self.config.dry_run;
        let hops = self.queue.enabled() && !dry_run;
        loop {
            let time_left = invocation
                .deadline
                .map(|d| d.duration_since(self.clock.now()).unwrap_or(Duration::ZERO));
            // With a queue, a wait that does not fit is carried by the queue, never given up on.
            let step = episode.next(policy, if hops { None } else { time_left });
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
                    let found = if dry_run {
                        tracing::info!(
                            ?query,
                            "dry run: would look for the caller's own retry (ListTasks, DescribeTasks)"
                        );
                        Lookup::Skipped
                    } else {
                        tracing::info!(
                            wait_ms = millis(wait),
                            "waiting before looking for the caller's own retry"
                        );
                        self.sleep(wait).await;
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
                        let schedule: Vec<u64> =
                            episode.schedule(policy).into_iter().map(millis).collect();
                        tracing::info!(call, request = %request.to_loggable_json(), schedule_ms = ?schedule, "dry run: would send RunTask on this backoff schedule (not slept)");
                        episode.record(LaunchResult::DryRun, self.clock.now(), &self.config.rules);
                        continue;
                    }
                    tracing::info!(
                        call,
                        wait_ms = millis(wait),
                        count = request.count,
                        "waiting before retry"
                    );
                    self.sleep(wait).await;
                    let sent_at = self.clock.now();
                    let result = self.launcher.run_task(&request).await;
                    log_attempt(call, &result, &secrets);
                    episode.record(result, sent_at, &self.config.rules);
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
            event_id: Some(origin.event_id.clone()),
            outcome: Outcome::Waiting,
            reason_class: None,
            reason: format!(
                "call {call} waits {:.1}s in the delay queue (DelaySeconds {})",
                wait.as_secs_f64(),
                delay.as_secs()
            ),
            attempts: call.saturating_sub(1),
            tasks_started: 0,
            waited_ms: 0,
            notified: false,
            subject: None,
            cluster: Some(origin.request.cluster_name().to_owned()),
            task_family: origin.request.task_family().map(str::to_owned),
            recovery_ms: None,
            caller: Some(origin.called_by.clone()),
            rule: None,
        }
    }

    fn report(
        &self,
        origin: &Origin,
        c: &Conclusion,
        subject: Option<String>,
        secrets: &[&str],
    ) -> Report {
        let recovery_ms = (c.outcome == Outcome::Recovered)
            .then_some(origin.recorded_at)
            .flatten()
            .and_then(|t| self.clock.now().duration_since(t).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Report {
            event_id: Some(origin.event_id.clone()),
            outcome: c.outcome,
            reason_class: Some(c.class),
            reason: redact::scrub(&c.why, secrets.iter().copied()),
            attempts: u32::try_from(c.attempts.len()).unwrap_or(u32::MAX),
            tasks_started: c.started_by_retries,
            waited_ms: c.attempts.iter().map(|a| a.waited_ms).sum(),
            notified: subject.is_some(),
            subject,
            cluster: Some(origin.request.cluster_name().to_owned()),
            task_family: origin.request.task_family().map(str::to_owned),
            recovery_ms,
            caller: Some(origin.called_by.clone()),
            rule: Some(c.rule.clone()),
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
        caller: None,
        rule: None,
    }
}

fn episode_span(origin: &Origin) -> tracing::Span {
    tracing::info_span!(
        "episode",
        event_id = %origin.event_id,
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

/// The `(messageId, body)` of each record of an SQS event, or `None` for any other payload.
fn sqs_records(payload: &Value) -> Option<Vec<(String, String)>> {
    let records = payload.get("Records")?.as_array()?;
    if !records
        .iter()
        .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
    {
        return None;
    }
    Some(
        records
            .iter()
            .map(|r| {
                let field = |name| r.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
                (field("messageId"), field("body"))
            })
            .collect(),
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
