//! Plan: what to do about one failed call, step by step, with no I/O.
//!
//! [`decide`] looks at a decoded failure and either concludes at once (not retryable, not
//! replayable) or opens an [`Episode`]. The episode is a small state machine: [`Episode::next`]
//! says what to do next (wait, then launch this exact request; or stop with a conclusion) and
//! [`Episode::record`] takes what the launch returned. The handler only carries out the steps,
//! which keeps every decision testable without AWS, clocks or sleeps.

use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::classify::{self, Action, ReasonClass, Rules, Verdict};
use crate::decode::FailedRunTask;
use crate::event::PlacementFailure;
use crate::request::{RunTaskRequest, Tag};

/// Tag key carrying the attempt number (1..N) on every task ecs-rerun launches.
pub const ATTEMPT_TAG: &str = "ecs-rerun:attempt";
/// Tag key carrying the CloudTrail `eventID` of the original failed call.
pub const EVENT_ID_TAG: &str = "ecs-rerun:event-id";
/// Prefix of every `clientToken` ecs-rerun sends.
pub const TOKEN_PREFIX: &str = "ecs-rerun-";
/// ECS accepts at most 50 user tags per task.
pub const MAX_TAGS: usize = 50;

/// How the retries are paced and what may be replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Launch attempts per failed call.
    pub max_attempts: u32,
    /// Backoff before the first attempt; doubles each time.
    pub base_delay: Duration,
    /// Cap on one backoff.
    pub max_delay: Duration,
    /// Time kept free before the Lambda deadline for the last call and the notification.
    pub deadline_reserve: Duration,
    /// Replay a request whose environment overrides CloudTrail redacted, without them.
    pub replay_redacted_env: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_secs(20),
            max_delay: Duration::from_secs(120),
            deadline_reserve: Duration::from_secs(25),
            replay_redacted_env: false,
        }
    }
}

/// How an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every missing task was started by a retry.
    Recovered,
    /// Retries were spent (or time ran out) and tasks are still missing.
    GaveUp,
    /// The failure needs a person: permanent, unknown, or not replayable.
    NotRetryable,
    /// Dry run: a retry would have been issued.
    WouldRetry,
    /// Not a failed `RunTask` of ours to handle.
    Ignored,
}

impl Outcome {
    /// The snake_case name used in output, attributes and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recovered => "recovered",
            Self::GaveUp => "gave_up",
            Self::NotRetryable => "not_retryable",
            Self::WouldRetry => "would_retry",
            Self::Ignored => "ignored",
        }
    }
}

/// What a launch returned, as the plan needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum LaunchResult {
    /// ECS answered: these tasks were created, these could not be placed.
    Placed {
        /// ARNs of the created tasks.
        started: Vec<String>,
        /// Placement failures.
        failures: Vec<PlacementFailure>,
    },
    /// The call raised an error.
    Rejected {
        /// Error code (`ThrottlingException`, ... or [`classify::NETWORK_ERROR`]).
        code: String,
        /// Error message.
        message: String,
        /// The call may have been carried out (5xx, timeout): the next attempt must resend the
        /// same token so that ECS returns that result instead of starting tasks twice.
        ambiguous: bool,
    },
    /// Dry run: nothing was sent.
    DryRun,
}

/// One attempt, for the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptLog {
    /// 1-based attempt number.
    pub attempt: u32,
    /// Tasks asked for.
    pub count: i32,
    /// Backoff before it, in milliseconds.
    pub waited_ms: u64,
    /// Tasks it started.
    pub started: u32,
    /// Verdicts on its failures (empty when all started).
    pub failures: Vec<Verdict>,
}

/// How an episode concluded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conclusion {
    /// The outcome.
    pub outcome: Outcome,
    /// Class of the failure that decided it.
    pub class: ReasonClass,
    /// One line on why.
    pub why: String,
    /// Verdicts on the original failure.
    pub original: Vec<Verdict>,
    /// Every attempt made.
    pub attempts: Vec<AttemptLog>,
    /// Tasks the retries started.
    pub started_by_retries: u32,
    /// Tasks still missing.
    pub still_missing: i32,
}

/// The next thing to do in an episode.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Wait, then send this request.
    Launch {
        /// 1-based attempt number.
        attempt: u32,
        /// Backoff first.
        wait: Duration,
        /// The exact request to send.
        request: Box<RunTaskRequest>,
    },
    /// Stop here.
    Done(Conclusion),
}

/// The first decision on a failed call.
#[derive(Debug)]
pub enum Decision {
    /// Conclude now, without launching anything.
    Conclude(Conclusion),
    /// Retry: run the episode.
    Retry(Box<Episode>),
}

/// Decides what to do about a failed call.
pub fn decide(failed: &FailedRunTask, rules: &Rules, policy: &Policy) -> Decision {
    let original = rules.failure(&failed.failure);
    let missing = failed.request.requested_count() - i32::try_from(failed.started).unwrap_or(0);
    let conclude = |class, why: String| {
        Decision::Conclude(Conclusion {
            outcome: Outcome::NotRetryable,
            class,
            why,
            original: original.clone(),
            attempts: Vec::new(),
            started_by_retries: 0,
            still_missing: missing.max(0),
        })
    };
    let Some(lead) = classify::overall(&original) else {
        return conclude(
            ReasonClass::Unknown,
            "no failure reason recorded".to_owned(),
        );
    };
    if lead.action != Action::Retry {
        return conclude(
            lead.class,
            format!(
                "{} failure: {} ({})",
                lead.class.as_str(),
                lead.failure,
                lead.rule
            ),
        );
    }
    if let Some(blocker) = &failed.replay_blocker {
        return conclude(
            ReasonClass::NotReplayable,
            format!(
                "transient failure ({}), but not replayable: {blocker}",
                lead.failure
            ),
        );
    }
    let mut template = failed.request.clone();
    if template.environment_redacted() {
        if !policy.replay_redacted_env {
            return conclude(
                ReasonClass::NotReplayable,
                format!(
                    "transient failure ({}), but CloudTrail redacted the container environment \
                     overrides, so a replay would run without them; set \
                     ECS_RERUN_REPLAY_REDACTED_ENV=true to replay anyway, or pass the values \
                     through command or environmentFiles",
                    lead.failure
                ),
            );
        }
        template.drop_redacted_environment();
    }
    Decision::Retry(Box::new(Episode {
        event_id: failed.event_id.clone(),
        template,
        policy: policy.clone(),
        rules: rules.clone(),
        original,
        missing,
        started_by_retries: 0,
        attempts: Vec::new(),
        token_seq: 1,
        pending: None,
        done: None,
    }))
}

/// The retry sequence of one failed call.
#[derive(Debug)]
pub struct Episode {
    event_id: String,
    template: RunTaskRequest,
    policy: Policy,
    rules: Rules,
    original: Vec<Verdict>,
    missing: i32,
    started_by_retries: u32,
    attempts: Vec<AttemptLog>,
    /// Idempotency sequence: moves on only after an answer that proves nothing more started.
    token_seq: u32,
    pending: Option<AttemptLog>,
    done: Option<(Outcome, ReasonClass, String)>,
}

impl Episode {
    /// What to do next, given the time left before the deadline (`None`: no deadline).
    pub fn next(&mut self, time_left: Option<Duration>) -> Step {
        if let Some((outcome, class, why)) = self.done.take() {
            return Step::Done(self.conclusion(outcome, class, why));
        }
        let attempt = u32::try_from(self.attempts.len()).unwrap_or(u32::MAX) + 1;
        if attempt > self.policy.max_attempts {
            let why = format!(
                "{} attempt(s) made, {} task(s) still missing; last failure: {}",
                self.policy.max_attempts,
                self.missing,
                self.last_failure()
            );
            return Step::Done(self.conclusion(Outcome::GaveUp, ReasonClass::Transient, why));
        }
        let wait = backoff(&self.policy, &self.event_id, attempt);
        if let Some(left) = time_left
            && wait + self.policy.deadline_reserve > left
        {
            let why = format!(
                "the Lambda deadline is too close for attempt {attempt} (needs {}s, {}s left); \
                 {} task(s) still missing; last failure: {}",
                (wait + self.policy.deadline_reserve).as_secs(),
                left.as_secs(),
                self.missing,
                self.last_failure()
            );
            return Step::Done(self.conclusion(Outcome::GaveUp, ReasonClass::Transient, why));
        }
        let request = self.request_for(self.token_seq);
        self.pending = Some(AttemptLog {
            attempt,
            count: self.missing,
            waited_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            started: 0,
            failures: Vec::new(),
        });
        Step::Launch {
            attempt,
            wait,
            request: Box::new(request),
        }
    }

    /// Takes the result of the launch that [`Episode::next`] asked for.
    pub fn record(&mut self, result: LaunchResult) {
        let Some(mut log) = self.pending.take() else {
            return;
        };
        match result {
            LaunchResult::DryRun => {
                self.done = Some((
                    Outcome::WouldRetry,
                    ReasonClass::Transient,
                    format!(
                        "dry run: would re-run {} task(s) after {}s",
                        log.count,
                        log.waited_ms / 1000
                    ),
                ));
            }
            LaunchResult::Placed { started, failures } => {
                let started = u32::try_from(started.len()).unwrap_or(u32::MAX);
                log.started = started;
                self.started_by_retries += started;
                self.missing -= i32::try_from(started).unwrap_or(i32::MAX);
                self.token_seq += 1;
                if self.missing <= 0 {
                    self.done = Some((
                        Outcome::Recovered,
                        ReasonClass::Transient,
                        format!("attempt {} started the missing task(s)", log.attempt),
                    ));
                } else {
                    log.failures = if failures.is_empty() {
                        vec![self.rules.placement(&PlacementFailure::default())]
                    } else {
                        failures.iter().map(|f| self.rules.placement(f)).collect()
                    };
                    self.stop_if_permanent(&log);
                }
            }
            LaunchResult::Rejected {
                code,
                message,
                ambiguous,
            } => {
                if !ambiguous {
                    self.token_seq += 1;
                }
                log.failures = vec![self.rules.api_error(&code, &message)];
                self.stop_if_permanent(&log);
            }
        }
        self.attempts.push(log);
    }

    fn stop_if_permanent(&mut self, log: &AttemptLog) {
        if let Some(lead) = classify::overall(&log.failures)
            && lead.action != Action::Retry
        {
            self.done = Some((
                Outcome::NotRetryable,
                lead.class,
                format!(
                    "attempt {} failed with a {} failure: {} ({}); {} task(s) still missing",
                    log.attempt,
                    lead.class.as_str(),
                    lead.failure,
                    lead.rule,
                    self.missing
                ),
            ));
        }
    }

    /// The request for a token sequence number: the original, for the missing tasks only,
    /// with ecs-rerun's tags and a fresh deterministic token.
    fn request_for(&self, seq: u32) -> RunTaskRequest {
        let mut request = self.template.clone();
        request.count = Some(self.missing);
        request.client_token = Some(client_token(&self.event_id, seq));
        request.reference_id = None;
        request.tags = retry_tags(self.template.tags.as_deref(), &self.event_id, seq);
        request
    }

    fn last_failure(&self) -> String {
        self.attempts
            .last()
            .map(|a| &a.failures)
            .unwrap_or(&self.original)
            .iter()
            .map(|v| v.failure.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn conclusion(&self, outcome: Outcome, class: ReasonClass, why: String) -> Conclusion {
        Conclusion {
            outcome,
            class,
            why,
            original: self.original.clone(),
            attempts: self.attempts.clone(),
            started_by_retries: self.started_by_retries,
            still_missing: self.missing.max(0),
        }
    }
}

/// Capped exponential backoff with "equal jitter": at least half the step, so an agent has time
/// to reconnect, and a spread of the other half, so a mass failure does not retry in lockstep.
/// The jitter is derived from the event ID: no random source, yet different per event.
pub fn backoff(policy: &Policy, event_id: &str, attempt: u32) -> Duration {
    let exp = 2u32.saturating_pow(attempt.saturating_sub(1));
    let step = policy.base_delay.saturating_mul(exp).min(policy.max_delay);
    let digest = Sha256::digest(format!("jitter:{event_id}:{attempt}"));
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let fraction = u64::from_be_bytes(bytes) as f64 / u64::MAX as f64;
    step / 2 + step.mul_f64(fraction / 2.0)
}

/// The idempotency token of one launch: the same event and sequence give the same token, so a
/// duplicate delivery of an event makes ECS return the first result instead of new tasks.
pub fn client_token(event_id: &str, seq: u32) -> String {
    let digest = Sha256::digest(format!("{event_id}#{seq}"));
    let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
    format!("{TOKEN_PREFIX}{hex}")
}

/// The original user tags (without the reserved `aws:` ones, which RunTask refuses, and without
/// stale `ecs-rerun:` ones), plus the attempt and event-ID tags as far as the 50-tag limit
/// allows. When they do not fit, the user's tags win and the token prefix still marks the task.
pub fn retry_tags(original: Option<&[Tag]>, event_id: &str, seq: u32) -> Option<Vec<Tag>> {
    let mut tags: Vec<Tag> = original
        .unwrap_or_default()
        .iter()
        .filter(|t| {
            let key = t.key.as_deref().unwrap_or("").to_ascii_lowercase();
            !key.starts_with("aws:") && !key.starts_with("ecs-rerun:")
        })
        .cloned()
        .collect();
    let ours = [
        (ATTEMPT_TAG, seq.to_string()),
        (EVENT_ID_TAG, tag_value(event_id)),
    ];
    for (key, value) in ours {
        if tags.len() < MAX_TAGS {
            tags.push(Tag {
                key: Some(key.to_owned()),
                value: Some(value),
            });
        }
    }
    (!tags.is_empty()).then_some(tags)
}

/// Keeps a value within ECS's tag alphabet and length.
fn tag_value(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_alphanumeric() || " _.:/=+-@".contains(*c))
        .take(256)
        .collect()
}
