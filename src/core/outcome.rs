//! Outcome: how an episode ended, as the handler, the notification, the chat card and the
//! metrics read it.
//!
//! [`Outcome`] names the end ([`Outcome::as_str`] is its name in output, attributes and
//! metrics); a [`Conclusion`] carries it with the why, the verdicts and every call made
//! ([`AttemptLog`]), and a [`FallbackReport`] when the episode moved to a rule's fallback
//! placement. [`crate::core::plan`] reaches them; [`crate::core::message`] and
//! [`crate::core::chat`] say them to a person.

use serde::{Deserialize, Serialize};

use crate::core::classify::{self, ReasonClass, Verdict};

/// How an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The missing tasks were started by ecs-rerun.
    Recovered,
    /// The missing tasks were started by ecs-rerun on a rule's fallback placement (always
    /// notified: it changed the job's cost).
    RecoveredOnFallback,
    /// The missing tasks had been started before ecs-rerun's re-issue: by the caller's own
    /// retry, or by an earlier delivery of the same record.
    AlreadyStarted,
    /// Retries were spent (or time ran out) and tasks are still missing.
    GaveUp,
    /// As [`Outcome::GaveUp`], after the episode had moved to a rule's fallback placement.
    GaveUpAfterFallback,
    /// The failure needs a person: permanent, unknown, not replayable, or another account's.
    NotRetryable,
    /// The record, or the token the next call would resend, is too old to rerun safely.
    Stale,
    /// Dry run: a retry would have been issued.
    WouldRetry,
    /// Not a failed `RunTask` of ours to handle.
    Ignored,
    /// Left to the caller, which retries by itself (AWS Batch, a Scheduler's API-error retry):
    /// counted, not notified.
    Left,
    /// Not concluded yet: the next step waits in the delay queue (a report, not a conclusion).
    Waiting,
    /// A successful launch, kept in the store so that a task of it that fails to start can be
    /// run again.
    Guarded,
    /// A task that failed to start from a launch the store never guarded (a caller left out,
    /// such as AWS Batch): counted, not notified.
    Unguarded,
    /// The scheduled self-check found that failed `RunTask` calls reach ecs-rerun.
    SelfCheckOk,
    /// The scheduled self-check found that they may not (a trail, a rule, a permission).
    SelfCheckFailed,
}

impl Outcome {
    /// The snake_case name used in output, attributes and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recovered => "recovered",
            Self::RecoveredOnFallback => "recovered_on_fallback",
            Self::AlreadyStarted => "already_started",
            Self::GaveUp => "gave_up",
            Self::GaveUpAfterFallback => "gave_up_after_fallback",
            Self::NotRetryable => "not_retryable",
            Self::Stale => "stale",
            Self::WouldRetry => "would_retry",
            Self::Ignored => "ignored",
            Self::Left => "left",
            Self::Waiting => "waiting",
            Self::Guarded => "guarded",
            Self::Unguarded => "unguarded",
            Self::SelfCheckOk => "self_check_ok",
            Self::SelfCheckFailed => "self_check_failed",
        }
    }
}

/// One `RunTask` call, for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptLog {
    /// 1-based number of the call in this episode.
    pub call: u32,
    /// The own attempt it belongs to (the `ecs-rerun:attempt` tag); `None` for the exact
    /// replay of the recorded call.
    pub attempt: Option<u32>,
    /// Tasks asked for.
    pub count: i32,
    /// The `clientToken` sent.
    pub token: String,
    /// Backoff before it, in milliseconds.
    pub waited_ms: u64,
    /// Tasks it started.
    pub started: u32,
    /// Tasks its answer named that had been started before (by the caller or another delivery).
    pub already_running: u32,
    /// Verdicts on its failures (empty when all started).
    pub failures: Vec<Verdict>,
    /// It got no clear answer (5xx, timeout): ECS may have acted on it.
    pub ambiguous: bool,
    /// It went to the rule's fallback placement.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_fallback: bool,
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
    /// The failure that decided it: the last call's, or the original's.
    pub deciding: String,
    /// The rule that matched it.
    pub rule: String,
    /// Verdicts on the original failure.
    pub original: Vec<Verdict>,
    /// Every call made.
    pub attempts: Vec<AttemptLog>,
    /// Tasks ecs-rerun's calls started.
    pub started_by_retries: u32,
    /// Tasks found already started (by the caller's own retry or an earlier delivery).
    pub already_running: u32,
    /// Tasks still missing (or, with `may_have_started`, perhaps started).
    pub still_missing: i32,
    /// ARNs of the tasks started or found (at most ten).
    pub task_arns: Vec<String>,
    /// The token of a last call that got no clear answer: ECS may have started tasks for it.
    pub may_have_started: Option<String>,
    /// Dry run: the waits before each call, in milliseconds.
    pub schedule_ms: Vec<u64>,
    /// The capacity fallback the episode moved to, if it did.
    pub fallback: Option<Box<FallbackReport>>,
}

/// What a notification says about a capacity fallback.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FallbackReport {
    /// The rule whose fallback it was.
    pub rule: String,
    /// The answer that triggered the switch.
    pub trigger: String,
    /// The attempt that moved (as `ecs-rerun:attempt` numbers it).
    pub attempt: u32,
    /// The recorded placement.
    pub from: String,
    /// The fallback placement.
    pub to: String,
    /// Tasks started on the fallback placement.
    pub started: u32,
    /// One sentence on what the move costs.
    pub cost: String,
}

impl Conclusion {
    /// A conclusion reached before any call: on the `original` verdicts, with `still_missing`
    /// tasks not started.
    pub fn at_once(
        outcome: Outcome,
        class: ReasonClass,
        why: String,
        original: Vec<Verdict>,
        still_missing: i32,
    ) -> Self {
        let (deciding, rule) = deciding(&original);
        Self {
            outcome,
            class,
            why,
            deciding,
            rule,
            attempts: Vec::new(),
            started_by_retries: 0,
            already_running: 0,
            still_missing,
            task_arns: Vec::new(),
            may_have_started: None,
            schedule_ms: Vec::new(),
            fallback: None,
            original,
        }
    }
}

/// The failure that decides among `verdicts`, and the rule that matched it.
pub(super) fn deciding(verdicts: &[Verdict]) -> (String, String) {
    classify::overall(verdicts).map_or_else(
        || {
            (
                "no reason recorded".to_owned(),
                "no rule matched".to_owned(),
            )
        },
        |lead| (lead.failure.clone(), lead.rule.clone()),
    )
}
