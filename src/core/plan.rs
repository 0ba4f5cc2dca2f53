//! Plan: what to do about one failed call, step by step, with no I/O.
//!
//! [`decide`] looks at a decoded failure and either ignores it, concludes at once (not
//! retryable, stale, not replayable) or opens an [`Episode`]. The episode is a small state
//! machine: [`Episode::next`] says what to do next (look for the caller's own retry; wait, then
//! launch this exact request; or stop with a conclusion), and [`Episode::record`] /
//! [`Episode::record_lookup`] take what ECS answered. The handler only carries out the steps,
//! which keeps every decision testable without AWS, clocks or sleeps.
//!
//! # Never twice
//! The rules that keep one failed launch from becoming two running jobs live here:
//! - an API-error record with a recorded `clientToken` is first replayed as the very same call
//!   (its token, every parameter, no added tag): if the caller's own SDK retry already started
//!   the job, ECS answers with that job and starts nothing;
//! - an API-error record without a token is rerun only after a [`crate::core::lookup`] found no task
//!   of that job started since the record;
//! - own tokens derive from the *call* ([`marks::call_marks`]), so every record of one SDK call
//!   and every delivery of each record send the same requests;
//! - a token moves on only after ECS answered with tasks or failures: an error answer (throttled,
//!   5xx, timeout) is retried with the same token and the same request;
//! - `ConflictException` naming tasks means they exist: they count as started;
//! - a capacity fallback ([`crate::core::fallback`]) moves an attempt only after a definitive
//!   capacity answer that every copy of the episode sees alike (the recorded failure, or ECS's
//!   answer to the token before), once, for good; the fallback attempt keeps its own token, so
//!   no token ever goes out with two different requests from copies that agree, and copies that
//!   somehow disagree meet `ConflictException` rather than starting the job twice.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::core::caller::Caller;
use crate::core::classify::{self, Action, ReasonClass, Rules, Subject, Verdict};
use crate::core::decode::{FailedRunTask, Failure, Ignored};
use crate::core::event::PlacementFailure;
use crate::core::fallback::{Fallback, FallbackError, Placement};
use crate::core::lookup::{self, ExistingTask, TaskQuery};
use crate::core::marks;
use crate::core::org::{self, AllowedAccounts};
use crate::core::request::RunTaskRequest;
use crate::core::schedule::Schedule;
use crate::core::task_change::FAILED_TO_START;

/// How many task ARNs a conclusion names (the rest are counted).
const MAX_TASK_ARNS: usize = 10;

/// How the retries are paced and what may be replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `RunTask` calls per failed call, resends included, the exact replay of the recorded call
    /// not (it is that call's second chance), unless the failure's rule sets its own
    /// `MaxAttempts`.
    pub max_attempts: u32,
    /// One schedule for every failure (`ECS_RERUN_BASE_DELAY_MS` / `ECS_RERUN_MAX_DELAY_MS`),
    /// instead of each rule's own.
    pub delay_override: Option<Schedule>,
    /// Time kept free before the Lambda deadline for the last call and the notification.
    pub deadline_reserve: Duration,
    /// Replay a request whose environment overrides CloudTrail redacted, without them.
    pub replay_redacted_env: bool,
    /// Records older than this are not rerun, and no call resends a token older than this:
    /// ECS may have forgotten it.
    pub max_record_age: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            delay_override: None,
            deadline_reserve: Duration::from_secs(25),
            replay_redacted_env: false,
            max_record_age: Duration::from_secs(3600),
        }
    }
}

/// Where the function runs, for the decisions that depend on it.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Now.
    pub now: SystemTime,
    /// The function's own account; `None` when replaying locally (every account is served).
    pub own_account: Option<&'a str>,
    /// Other accounts whose records are acted on.
    pub allowed_accounts: &'a AllowedAccounts,
    /// The role assumed in those accounts to rerun there; without it their records are only
    /// notified.
    pub member_role: Option<&'a str>,
    /// The function's name, which is also the name of its Lambda session.
    pub function_name: Option<&'a str>,
}

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
        /// Error code (`ThrottlingException`, ... or [`classify::NETWORK_ERROR`]).
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

/// The next thing to do in an episode.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Wait, then look for tasks the caller's own retry may have started.
    Lookup {
        /// Backoff first.
        wait: Duration,
        /// What to list.
        query: TaskQuery,
    },
    /// Wait, then send this request.
    Launch {
        /// 1-based call number.
        call: u32,
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
    /// Not ours to act on.
    Ignore(Ignored),
    /// Conclude now, without launching anything.
    Conclude(Conclusion),
    /// Retry: run the episode.
    Retry(Box<Episode>),
}

/// Decides what to do about a failed call.
pub fn decide(failed: &FailedRunTask, rules: &Rules, policy: &Policy, ctx: Context) -> Decision {
    let own_session = |arn: &str| {
        ctx.function_name
            .is_some_and(|name| marks::is_own_session(arn, name))
            || ctx.member_role.is_some_and(|role| {
                org::is_own_member_session(arn, role, &org::session_name(ctx.function_name))
            })
    };
    if let Some(arn) = failed.caller_arn.as_deref()
        && own_session(arn)
    {
        return Decision::Ignore(Ignored::OwnSession {
            arn: arn.to_owned(),
        });
    }
    let foreign = ctx
        .own_account
        .is_some_and(|own| own != failed.origin.account);
    if foreign && !ctx.allowed_accounts.contains(&failed.origin.account) {
        return Decision::Ignore(Ignored::ForeignAccount {
            account: failed.origin.account.clone(),
        });
    }

    let origin = &failed.origin;
    let subject = Subject::of(origin);
    let original = rules.failure(&failed.failure, &subject);
    let missing =
        failed.origin.request.requested_count() - i32::try_from(failed.origin.started).unwrap_or(0);
    let conclude = |outcome, class, why: String| {
        Decision::Conclude(Conclusion::at_once(
            outcome,
            class,
            why,
            original.clone(),
            missing.max(0),
        ))
    };
    let not_retryable = |class, why| conclude(Outcome::NotRetryable, class, why);
    let Some(lead) = classify::overall(&original) else {
        return not_retryable(
            ReasonClass::Unknown,
            "no failure reason recorded".to_owned(),
        );
    };
    let caller = origin.called_by.describe();
    match (lead.action, lead.class) {
        (Action::Retry, _) => {}
        (Action::Leave, _) => {
            return conclude(
                Outcome::Left,
                lead.class,
                format!(
                    "left to the caller ({caller}), which retries by itself; a rerun from \
                     outside would run the job twice ({}; rule {})",
                    lead.failure, lead.rule
                ),
            );
        }
        (Action::Notify, ReasonClass::Caller) if origin.called_by == Caller::StepFunctions => {
            return not_retryable(
                lead.class,
                format!(
                    "not rerun: called by {caller}, whose own retry decides (a Step Functions \
                     `.sync` state's Retry runs it again; a rerun from outside would run the job \
                     twice and report to no one). If the workflow does not retry, start it \
                     again there ({}; rule {})",
                    lead.failure, lead.rule
                ),
            );
        }
        (Action::Notify, ReasonClass::Caller) => {
            return not_retryable(
                lead.class,
                format!(
                    "not rerun: a rule on the caller ({caller}) says notify ({}; rule {})",
                    lead.failure, lead.rule
                ),
            );
        }
        (Action::Notify, _) => {
            return not_retryable(
                lead.class,
                format!(
                    "{} failure: {} ({})",
                    lead.class.as_str(),
                    lead.failure,
                    lead.rule
                ),
            );
        }
    }
    if let Some(misplaced) = &failed.misplaced {
        return not_retryable(
            ReasonClass::NotReplayable,
            format!(
                "transient failure ({}), but not rerun: {misplaced}; where to rerun it is unclear",
                lead.failure
            ),
        );
    }
    if foreign && ctx.member_role.is_none() {
        return not_retryable(
            ReasonClass::NotReplayable,
            format!(
                "transient failure ({}), but not rerun: no role for account {}; ecs-rerun only \
                 launches in its own account without ECS_RERUN_MEMBER_ROLE, so start the task \
                 there yourself",
                lead.failure, failed.origin.account
            ),
        );
    }
    if let Some(blocker) = &failed.replay_blocker {
        return not_retryable(
            ReasonClass::NotReplayable,
            format!(
                "transient failure ({}), but not replayable: {blocker}",
                lead.failure
            ),
        );
    }
    let mut template = failed.origin.request.clone();
    if template.environment_redacted() {
        if !policy.replay_redacted_env {
            return not_retryable(
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
    let Some(recorded_at) = failed.origin.recorded_at else {
        return conclude(
            Outcome::Stale,
            lead.class,
            format!(
                "transient failure ({}), but not rerun: the record has no eventTime, so whether \
                 its job could still be started once is unknown",
                lead.failure
            ),
        );
    };

    let key = failed.origin.key.clone();
    let schedule = lead.schedule;
    // The age that counts is the record's when the first call goes out: a recorded token is
    // only good while ECS remembers it.
    let prior_calls = failed.prior_calls;
    let first_wait = policy
        .delay_override
        .unwrap_or(schedule)
        .wait(prior_calls + 1, &key);
    let age = ctx.now.duration_since(recorded_at).unwrap_or_default() + first_wait;
    if age > policy.max_record_age {
        return conclude(
            Outcome::Stale,
            lead.class,
            format!(
                "transient failure ({}), but not rerun: the record would be {} old at the first \
                 rerun, older than ECS_RERUN_MAX_RECORD_AGE_S ({}); ECS may have forgotten the \
                 tokens that keep a rerun from starting the job twice. Check whether it ran, \
                 then start it by hand",
                lead.failure,
                human(age),
                human(policy.max_record_age)
            ),
        );
    }

    let requested = failed.origin.request.requested_count();
    let (phase, missing) = match (
        &failed.failure,
        failed.origin.request.client_token.is_some(),
    ) {
        (Failure::Stopped { .. }, _) => (Phase::Own, missing),
        (Failure::Api { .. }, true) => (Phase::Original, requested),
        (Failure::Api { .. }, false) => (Phase::Lookup, requested),
        (Failure::Placement(_), true) => (Phase::Own, missing),
        (Failure::Placement(_), false) => (Phase::Lookup, missing),
    };
    let original_ambiguous = phase == Phase::Original
        && matches!(&failed.failure, Failure::Api { code, .. } if classify::is_server_error(code));
    // The fallback is the rule's that matched the recorded failure. An API-error record holds
    // no failure a rule could place: its fallback is fixed by the first answer with failures,
    // which every copy of the call sees alike (ECS's stored answer to the token; the call's
    // final record holds the same), classified as the final record's failure is: with the
    // recorded caller, so that an `onCaller` rule's fallback is every copy's.
    let fallback = lead.fallback.as_deref().map(|fallback| {
        FallbackState::new(
            fallback,
            &template,
            capacity_answer(fallback, &failed.failure),
        )
    });
    let fallback_open = matches!(failed.failure, Failure::Api { .. });
    let open_caller = subject.caller.clone().filter(|_| fallback_open);
    Decision::Retry(Box::new(Episode {
        // The answers to ecs-rerun's own calls are its own: no onCaller rule concerns them.
        subject: Subject {
            caller: None,
            ..subject
        },
        call_tag: failed.origin.call_tag.clone(),
        prior_calls,
        max_attempts: lead.max_attempts.unwrap_or(policy.max_attempts),
        schedule,
        key,
        recorded: exact_replay(&failed.origin.request),
        template,
        phase,
        missing,
        recorded_at,
        own_attempt: prior_calls + 1,
        token_first_sent: None,
        token_sends: 0,
        token_ambiguous: original_ambiguous,
        prewaited: None,
        original,
        attempts: Vec::new(),
        started_by_retries: 0,
        already_running: 0,
        known: failed.started_arns.clone(),
        task_arns: Vec::new(),
        pending: None,
        done: None,
        fallback: fallback.filter(|_| !fallback_open),
        fallback_open,
        open_caller,
    }))
}

/// The failure that triggers a rule's fallback, if `failure` is a definitive capacity answer:
/// placement failures that all say the placement had no capacity, or a task that failed to
/// start for that reason. Never an API error (the call may not have been placed at all), nor a
/// Spot interruption (the task ran: capacity was there).
fn capacity_answer(fallback: &Fallback, failure: &Failure) -> Option<String> {
    match failure {
        Failure::Placement(failures) => capacity_failures(fallback, failures),
        Failure::Stopped {
            stop_code,
            reason,
            detail,
        } if stop_code == FAILED_TO_START => {
            let shown = format!("{reason} {detail}");
            fallback
                .is_capacity_failure(&shown)
                .then(|| format!("{stop_code}: {}", shown.trim()))
        }
        Failure::Stopped { .. } | Failure::Api { .. } => None,
    }
}

/// The first of `failures` if every one of them is a capacity failure.
fn capacity_failures(fallback: &Fallback, failures: &[PlacementFailure]) -> Option<String> {
    let reasons: Vec<&str> = failures
        .iter()
        .map(|f| f.reason.as_deref().unwrap_or(""))
        .collect();
    let all = !reasons.is_empty() && reasons.iter().all(|r| fallback.is_capacity_failure(r));
    all.then(|| reasons[0].to_owned())
}

/// The recorded call as it can be sent again: every parameter and the token as recorded, only
/// the reserved `aws:` tags left out, which a caller other than AWS may not set. (Should that
/// or a dropped redacted environment make it differ from what the token stored, ECS answers
/// `ConflictException` naming the tasks, which count as started.)
fn exact_replay(template: &RunTaskRequest) -> RunTaskRequest {
    let mut request = template.clone();
    if request.tags.is_some() {
        let tags = marks::user_tags(request.tags.as_deref());
        request.tags = (!tags.is_empty()).then_some(tags);
    }
    request
}

/// Why the next call's token may be older than it looks.
#[derive(Debug, Clone, Copy)]
enum Exposure {
    /// The recorded call used it (or, for the look-up, started the job) at the record's time.
    Recorded,
    /// This copy of the episode runs behind the schedule every copy follows.
    Behind,
}

/// Where an episode stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    /// An API-error record without a token: look for the caller's own retry first.
    Lookup,
    /// An API-error record with a token: resend the recorded call as it was.
    Original,
    /// ecs-rerun's own attempts, with its own tokens and tags.
    Own,
}

/// The retry sequence of one failed call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Episode {
    /// Identity of the original call: every token derives from it.
    key: String,
    call_tag: String,
    /// Calls the job had in earlier episodes (a rerun of a task that failed to start): they
    /// count toward `max_attempts`.
    #[serde(default)]
    prior_calls: u32,
    /// What rules may know about the call, for classifying the answers. (Absent in a hop
    /// written before rules knew it: then no caller, cluster or family rule applies.)
    #[serde(default)]
    subject: Subject,
    /// How long the last failure needs before the next call.
    schedule: Schedule,
    /// `RunTask` calls this episode may make.
    max_attempts: u32,
    /// The request of the own attempts, before count, token and tags.
    template: RunTaskRequest,
    /// The recorded call, for the exact replay and the look-up (with CloudTrail's redaction
    /// marker still in place, so that the look-up knows not to compare the environment).
    recorded: RunTaskRequest,
    phase: Phase,
    missing: i32,
    recorded_at: SystemTime,
    /// The own attempt the next own call belongs to: moves on only after ECS answered.
    own_attempt: u32,
    /// When the current token was first sent: tasks created before were not started by it.
    token_first_sent: Option<SystemTime>,
    /// How often the current token was sent.
    token_sends: u32,
    /// The current token got an unclear answer (5xx, timeout) at least once: ECS may have
    /// started tasks for it that no answer showed yet.
    token_ambiguous: bool,
    /// A wait already spent before the look-up, not to be spent again before the next call.
    prewaited: Option<Duration>,
    original: Vec<Verdict>,
    attempts: Vec<AttemptLog>,
    started_by_retries: u32,
    already_running: u32,
    /// Every task ARN counted so far (the record's own started tasks included), so that a task
    /// named twice (by a look-up and a `ConflictException`, say) is counted once.
    known: Vec<String>,
    task_arns: Vec<String>,
    pending: Option<AttemptLog>,
    done: Option<(Outcome, ReasonClass, String)>,
    /// The capacity fallback fixed for this episode, and where it stands. (Absent in a hop
    /// written before fallbacks existed: such an episode never falls back.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fallback: Option<FallbackState>,
    /// An API-error record's fallback is not fixed yet: the first answer with failures fixes
    /// it (see `decide`).
    #[serde(default)]
    fallback_open: bool,
    /// While the fallback is open: the recorded caller, with which the answer that fixes it is
    /// classified, as the call's final record is. (Absent in a hop written before it existed:
    /// that answer is classified without a caller, as it was then.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_caller: Option<String>,
}

/// A capacity fallback within an episode.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FallbackState {
    /// The rule's fallback, as it was when the episode began.
    fallback: Fallback,
    /// The recorded placement.
    from: Placement,
    /// The last definitive answer (the recorded failure, then ECS's answer to each own token)
    /// said only "no capacity": its first failure. Changes only when the token moves on, so
    /// every send of one token decides alike.
    capacity_answer: Option<String>,
    /// The attempt that moved to the fallback placement; every later one stays there.
    switched_at: Option<u32>,
    /// The capacity answer that moved it.
    #[serde(default)]
    trigger: String,
    /// Tasks started on the fallback placement.
    started: u32,
}

impl FallbackState {
    /// `fallback` fixed for an episode of `template`, not switched to yet; `capacity_answer`
    /// as the last definitive answer so far said.
    fn new(
        fallback: &Fallback,
        template: &RunTaskRequest,
        capacity_answer: Option<String>,
    ) -> Self {
        Self {
            fallback: fallback.clone(),
            from: Placement::of(template),
            capacity_answer,
            switched_at: None,
            trigger: String::new(),
            started: 0,
        }
    }
}

impl Episode {
    /// What to do next at `now`, given the time left before the deadline (`None`: no deadline).
    pub fn next(&mut self, policy: &Policy, now: SystemTime, time_left: Option<Duration>) -> Step {
        if let Some((outcome, class, why)) = self.done.take() {
            return Step::Done(self.conclusion(outcome, class, why));
        }
        let call = self.calls().saturating_add(1);
        // The replay of the recorded call is that call's second chance, not one of the job's
        // attempts: every copy of one SDK call (from its throttled try, from its final answer)
        // then makes the same attempts, and none gives up while another still reruns.
        let replayed = self.attempts.first().is_some_and(|a| a.attempt.is_none());
        if call - u32::from(replayed) > self.max_attempts {
            let why = format!(
                "{} call(s) made, {}; last failure: {}",
                self.calls(),
                self.missing_phrase(),
                self.last_failure()
            );
            return Step::Done(self.conclusion(Outcome::GaveUp, ReasonClass::Transient, why));
        }
        let wait = match self.prewaited {
            Some(_) => Duration::ZERO,
            None => self.wait_before(policy),
        };
        if let Some(left) = time_left
            && wait + policy.deadline_reserve > left
        {
            let why = format!(
                "the Lambda deadline is too close for call {call} (needs {}s, {}s left); {}; \
                 last failure: {}",
                (wait + policy.deadline_reserve).as_secs(),
                left.as_secs(),
                self.missing_phrase(),
                self.last_failure()
            );
            return Step::Done(self.conclusion(Outcome::GaveUp, ReasonClass::Transient, why));
        }
        let (age, exposure) = self.token_age(now + wait, wait);
        if age > policy.max_record_age {
            let token = self.current_token();
            let used = match exposure {
                Exposure::Recorded => format!("the recorded call used it {} before", human(age)),
                Exposure::Behind => format!(
                    "this copy of the episode runs {} behind its schedule (resent calls, a late \
                     or redriven delivery), so another copy, or this one's own earlier call, may \
                     have sent its token that much earlier",
                    human(age)
                ),
            };
            let why = format!(
                "call {call} not sent: {used}, beyond ECS_RERUN_MAX_RECORD_AGE_S ({}); ECS may \
                 have forgotten the token (or stopped listing the tasks) that keeps the call from \
                 starting the job twice. An event or a delay-queue message delivered long after \
                 its time (a redrive from a dead-letter queue) does this. {} task(s) may have \
                 started: check the task ARNs / token {token}, then start the job by hand if it \
                 did not run",
                human(policy.max_record_age),
                self.missing
            );
            let mut stale = self.conclusion(Outcome::Stale, ReasonClass::Transient, why);
            stale.may_have_started = Some(token);
            return Step::Done(stale);
        }
        if self.phase == Phase::Lookup {
            if let Some(query) = TaskQuery::for_request(&self.template) {
                self.prewaited.get_or_insert(wait);
                return Step::Lookup { wait, query };
            }
            self.phase = Phase::Own;
        }
        let request = match self.phase {
            Phase::Original => {
                let mut request = self.recorded.clone();
                request.drop_redacted_environment();
                request
            }
            Phase::Lookup | Phase::Own => {
                self.switch_to_fallback();
                match self.own_request() {
                    Ok(request) => request,
                    Err(unfit) => {
                        return Step::Done(self.conclusion(
                            Outcome::NotRetryable,
                            ReasonClass::Permanent,
                            format!("{unfit}; {}", self.missing_phrase()),
                        ));
                    }
                }
            }
        };
        let waited = self.prewaited.take().unwrap_or(wait);
        self.pending = Some(AttemptLog {
            call,
            attempt: (self.phase == Phase::Own).then_some(self.own_attempt),
            count: request.requested_count(),
            token: request.client_token.clone().unwrap_or_default(),
            waited_ms: millis(waited),
            started: 0,
            already_running: 0,
            failures: Vec::new(),
            ambiguous: false,
            on_fallback: self.on_fallback(),
        });
        Step::Launch {
            call,
            wait,
            request: Box::new(request),
        }
    }

    /// Ends the episode before its next call: the place it runs in cannot be reached (the
    /// member role could not be assumed), so nothing more is launched. Its notification says
    /// `why` and what the calls so far did: not retryable before any call, given up after.
    pub fn halt(&mut self, why: String) {
        let outcome = if self.attempts.is_empty() {
            Outcome::NotRetryable
        } else {
            Outcome::GaveUp
        };
        self.done = Some((outcome, ReasonClass::NotReplayable, why));
    }

    /// Takes what the look-up asked for by [`Step::Lookup`] found.
    pub fn record_lookup(&mut self, lookup: Lookup) {
        self.phase = Phase::Own;
        match lookup {
            Lookup::Skipped => {}
            Lookup::Failed(error) => {
                self.done = Some((
                    Outcome::NotRetryable,
                    ReasonClass::Unknown,
                    format!(
                        "could not check whether the caller's own retry already started the job \
                         ({error}); not rerun, so as not to start it twice. Check the cluster, \
                         then start it by hand if it is missing"
                    ),
                ));
            }
            Lookup::Found(tasks) => {
                let same: Vec<String> = tasks
                    .into_iter()
                    .filter(|t| {
                        lookup::same_job(&self.recorded, self.recorded_at, &self.call_tag, t)
                    })
                    .map(|t| t.arn)
                    .collect();
                self.count_existing(same.into_iter());
                if self.missing <= 0 {
                    self.done = Some((
                        Outcome::AlreadyStarted,
                        ReasonClass::Transient,
                        format!(
                            "the job was already started after the failed call (by the caller's \
                             own retry or an earlier rerun): {} matching task(s) found, nothing \
                             launched",
                            self.already_running
                        ),
                    ));
                }
            }
        }
    }

    /// Takes the answer to the launch that [`Step::Launch`] asked for; `sent_at` is when it
    /// was sent.
    pub fn record(&mut self, result: LaunchResult, sent_at: SystemTime, rules: &Rules) {
        let Some(mut log) = self.pending.take() else {
            return;
        };
        let first_sent = *self.token_first_sent.get_or_insert(sent_at);
        self.token_sends += 1;
        match result {
            LaunchResult::DryRun => {
                let fallback = self.fallback.as_ref().map_or_else(String::new, |state| {
                    let to = state.fallback.placement.label();
                    match state.switched_at {
                        Some(attempt) => format!(
                            "; would fall back to {to} at once (attempt {attempt}, rule {})",
                            state.fallback.rule
                        ),
                        None => format!(
                            "; would fall back to {to} from attempt {} if capacity stays \
                             unavailable (rule {})",
                            state.fallback.from_attempt, state.fallback.rule
                        ),
                    }
                });
                self.done = Some((
                    Outcome::WouldRetry,
                    ReasonClass::Transient,
                    format!(
                        "dry run: would re-run {} task(s), first after {}s{fallback}",
                        log.count,
                        log.waited_ms / 1000
                    ),
                ));
            }
            LaunchResult::Placed { tasks, failures } => {
                // A task without createdAt comes from a stored answer about a stopped task: ours
                // only if this episode had sent the token before.
                let resent = self.token_sends > 1;
                let (before, ours): (Vec<_>, Vec<_>) = tasks
                    .into_iter()
                    .filter(|t| !self.known.contains(&t.arn))
                    .partition(|t| t.created_at.map_or(!resent, |c| c < first_sent));
                log.started = len_u32(ours.len());
                self.started_by_retries += log.started;
                if let Some(state) = self.fallback.as_mut().filter(|_| log.on_fallback) {
                    state.started += log.started;
                }
                self.missing -= i32::try_from(ours.len()).unwrap_or(i32::MAX);
                for task in ours {
                    self.remember(task.arn);
                }
                log.already_running = self.count_existing(before.into_iter().map(|t| t.arn));
                self.advance_token();
                if self.missing <= 0 {
                    self.done = Some(self.all_running(&log));
                } else {
                    // The answer that fixes an open fallback is ECS's stored answer to the
                    // recorded call (or the first to this job): the recorded caller's, whose
                    // onCaller rules then apply to it as to the call's final record.
                    let settles = std::mem::take(&mut self.fallback_open);
                    log.failures = match self.open_caller.take().filter(|_| settles) {
                        Some(caller) => {
                            let subject = Subject {
                                caller: Some(caller),
                                ..self.subject.clone()
                            };
                            rules.placements(&failures, &subject)
                        }
                        None => rules.placements(&failures, &self.subject),
                    };
                    if settles {
                        self.fallback = classify::overall(&log.failures)
                            .and_then(|lead| lead.fallback.as_deref())
                            .map(|fallback| FallbackState::new(fallback, &self.template, None));
                    }
                    if let Some(state) = self.fallback.as_mut() {
                        state.capacity_answer = capacity_failures(&state.fallback, &failures);
                    }
                    self.stop_if_permanent(&log);
                }
            }
            LaunchResult::Rejected { code, existing, .. } if code == "ConflictException" => {
                if existing.is_empty() {
                    self.done = Some((
                        Outcome::NotRetryable,
                        ReasonClass::Unknown,
                        format!(
                            "ECS refused token {} (ConflictException) and named no task: the \
                             token was spent on an answer without tasks, so whether the job \
                             runs cannot be told from it; not rerun. Check the cluster, then \
                             start it by hand if it is missing",
                            log.token
                        ),
                    ));
                } else {
                    log.already_running = self.count_existing(existing.into_iter());
                    self.advance_token();
                    // Not a capacity answer: whatever was missing, the token says nothing of it.
                    if let Some(state) = self.fallback.as_mut() {
                        state.capacity_answer = None;
                    }
                    if self.missing <= 0 {
                        self.done = Some(self.all_running(&log));
                    }
                }
                log.failures = vec![rules.api_error(&code, "token already used", &self.subject)];
            }
            LaunchResult::Rejected { code, message, .. }
                if log.on_fallback && code == "InvalidParameterException" =>
            {
                // The fallback placement itself was refused (a provider not attached to the
                // cluster, a subnet of another VPC): a configuration error, never retried.
                let rule = self
                    .fallback
                    .as_ref()
                    .map_or_else(String::new, |s| s.fallback.rule.clone());
                self.done = Some((
                    Outcome::NotRetryable,
                    ReasonClass::Permanent,
                    format!(
                        "configuration error in rule {rule}: ECS refused the fallback placement \
                         ({code}: {message}); not retried. Fix the rule's fallback (attach the \
                         capacity provider to the cluster, or name subnets of the task's VPC); {}",
                        self.missing_phrase()
                    ),
                ));
                log.failures = vec![rules.api_error(&code, &message, &self.subject)];
            }
            LaunchResult::Rejected {
                code,
                message,
                ambiguous,
                ..
            } => {
                // No answer with tasks or failures: the token stays, and so does the request.
                log.ambiguous = ambiguous;
                self.token_ambiguous |= ambiguous;
                log.failures = vec![rules.api_error(&code, &message, &self.subject)];
                self.stop_if_permanent(&log);
            }
        }
        self.attempts.push(log);
    }

    /// `RunTask` calls the job has had so far, earlier episodes' included.
    pub fn calls(&self) -> u32 {
        self.prior_calls
            .saturating_add(len_u32(self.attempts.len()))
    }

    /// The waits before each call if every call failed alike: what a dry run shows.
    pub fn schedule(&self, policy: &Policy) -> Vec<Duration> {
        (self.prior_calls + 1..=self.max_attempts)
            .map(|step| self.wait_at(policy, step))
            .collect()
    }

    /// The wait that [`Episode::next`] asked for will be spent elsewhere (in a delay queue):
    /// the next [`Episode::next`] asks for the same step without it.
    pub fn defer(&mut self, wait: Duration) {
        self.pending = None;
        self.prewaited.get_or_insert(wait);
    }

    /// How long before `at` the next call's token (or, in the look-up, the job) may first have
    /// been used, and by whom. ECS keeps a token at least an hour after its first use, and
    /// lists a stopped task about as long (aws-facts §4): a call is safe only while this is
    /// within the record-age limit.
    fn token_age(&self, at: SystemTime, wait: Duration) -> (Duration, Exposure) {
        let since_record = at.duration_since(self.recorded_at).unwrap_or_default();
        if matches!(self.phase, Phase::Original | Phase::Lookup) {
            return (since_record, Exposure::Recorded);
        }
        // Every copy of this episode (another delivery of the event, another record of the same
        // call, a redriven delay-queue message) sends the same own tokens after the same waits,
        // counted from the record (see `wait_before`): one that runs behind that schedule may
        // send a token that an on-time copy used that much earlier. Only the waits before the
        // first send of each own token are the schedule; a copy's replay of the recorded call
        // and its resends after errors are its own, and count as running behind (which also
        // covers its own unclear sends: the first send of a token is never before schedule).
        let mut scheduled: u64 = 0;
        let mut previous: Option<&str> = None;
        for attempt in &self.attempts {
            if attempt.attempt.is_some() && previous != Some(attempt.token.as_str()) {
                scheduled += attempt.waited_ms;
            }
            previous = Some(attempt.token.as_str());
        }
        let mut scheduled = Duration::from_millis(scheduled);
        if self.token_sends == 0 {
            scheduled += self.prewaited.unwrap_or(wait);
        }
        (since_record.saturating_sub(scheduled), Exposure::Behind)
    }

    /// The wait before the next call. A new token waits the step of its own attempt, not of the
    /// call: copies of this episode that got the same answers (ECS answers a token alike) then
    /// send each token after the same waits, however many throttled or unclear calls one of
    /// them had to resend. A resend waits one step more per send of its token.
    fn wait_before(&self, policy: &Policy) -> Duration {
        let step = self.own_attempt + self.token_sends;
        self.wait_at(policy, step)
    }

    fn wait_at(&self, policy: &Policy, step: u32) -> Duration {
        policy
            .delay_override
            .unwrap_or(self.schedule)
            .wait(step, &self.key)
    }

    fn all_running(&self, log: &AttemptLog) -> (Outcome, ReasonClass, String) {
        if self.started_by_retries == 0 {
            (
                Outcome::AlreadyStarted,
                ReasonClass::Transient,
                format!(
                    "call {} found the job already started ({} task(s), by the caller's own \
                     retry or an earlier delivery); nothing new was started",
                    log.call, self.already_running
                ),
            )
        } else {
            let before = if self.already_running > 0 {
                format!("; {} had been started before", self.already_running)
            } else {
                String::new()
            };
            (
                Outcome::Recovered,
                ReasonClass::Transient,
                format!(
                    "call {} started the missing task(s): {} started by ecs-rerun{before}",
                    log.call, self.started_by_retries
                ),
            )
        }
    }

    /// Counts the tasks someone else started that were not counted yet; returns how many.
    fn count_existing(&mut self, arns: impl Iterator<Item = String>) -> u32 {
        let mut new = 0;
        for arn in arns {
            if !self.known.contains(&arn) {
                self.remember(arn);
                new += 1;
            }
        }
        self.already_running += new;
        self.missing -= i32::try_from(new).unwrap_or(i32::MAX);
        new
    }

    fn remember(&mut self, arn: String) {
        if self.task_arns.len() < MAX_TASK_ARNS {
            self.task_arns.push(arn.clone());
        }
        self.known.push(arn);
    }

    fn advance_token(&mut self) {
        match self.phase {
            Phase::Own => self.own_attempt += 1,
            Phase::Original | Phase::Lookup => self.phase = Phase::Own,
        }
        self.token_first_sent = None;
        self.token_sends = 0;
        self.token_ambiguous = false;
    }

    /// The token the next call sends.
    fn current_token(&self) -> String {
        match self.phase {
            Phase::Original => self.recorded.client_token.clone().unwrap_or_default(),
            Phase::Lookup | Phase::Own => self.own_token(),
        }
    }

    fn stop_if_permanent(&mut self, log: &AttemptLog) {
        let Some(lead) = classify::overall(&log.failures) else {
            return;
        };
        if lead.action == Action::Retry {
            self.schedule = lead.schedule;
        } else {
            self.done = Some((
                Outcome::NotRetryable,
                lead.class,
                format!(
                    "call {} failed with a {} failure: {} ({}); {}",
                    log.call,
                    lead.class.as_str(),
                    lead.failure,
                    lead.rule,
                    self.missing_phrase()
                ),
            ));
        }
    }

    /// The request of the current own attempt: the original, for the missing tasks only, with
    /// ecs-rerun's tags and the attempt's token.
    /// On the fallback placement once the episode switched; refused when the request cannot
    /// run there as it stands. The token stays the attempt's: every copy of the episode sends
    /// attempt n to the same placement, as they decide from the same answers.
    fn own_request(&self) -> Result<RunTaskRequest, FallbackError> {
        let (mut request, fallback_tag) =
            match self.fallback.as_ref().filter(|_| self.on_fallback()) {
                Some(state) => (
                    state.fallback.apply(&self.template)?,
                    Some(state.fallback.tag_value(&state.from)),
                ),
                None => (self.template.clone(), None),
            };
        request.count = Some(self.missing);
        request.client_token = Some(self.own_token());
        request.reference_id = None;
        request.tags = marks::retry_tags(
            self.template.tags.as_deref(),
            &self.call_tag,
            self.own_attempt,
            fallback_tag,
        );
        Ok(request)
    }

    /// Whether the episode runs on its fallback placement.
    fn on_fallback(&self) -> bool {
        self.fallback
            .as_ref()
            .is_some_and(|s| s.switched_at.is_some())
    }

    /// Moves the attempt about to be sent to the fallback placement when its time has come
    /// (`fallbackFromAttempt`) and the last definitive answer said only "no capacity". At most
    /// once: the switch is for good.
    fn switch_to_fallback(&mut self) {
        let attempt = self.own_attempt;
        if let Some(state) = self.fallback.as_mut()
            && state.switched_at.is_none()
            && attempt >= state.fallback.from_attempt
            && let Some(trigger) = &state.capacity_answer
        {
            state.trigger = trigger.clone();
            state.switched_at = Some(attempt);
        }
    }

    /// The token of the current own attempt. Numbered within this episode's key, not by the
    /// job's earlier calls: a stopped task's store entry may say 0 or 1 earlier calls depending
    /// on which record came last, and its rerun must send the same token either way.
    fn own_token(&self) -> String {
        marks::own_token(&self.key, self.own_attempt.saturating_sub(self.prior_calls))
    }

    fn ambiguous_token(&self) -> Option<String> {
        self.token_ambiguous.then(|| self.current_token())
    }

    fn missing_phrase(&self) -> String {
        match self.ambiguous_token() {
            Some(token) => format!(
                "{} task(s) may have started: the last call got no clear answer, so check the \
                 task ARNs / token {token} before rerunning",
                self.missing
            ),
            None => format!("{} task(s) still missing", self.missing),
        }
    }

    fn last_verdicts(&self) -> &[Verdict] {
        self.attempts
            .last()
            .map(|a| a.failures.as_slice())
            .filter(|f| !f.is_empty())
            .unwrap_or(&self.original)
    }

    fn last_failure(&self) -> String {
        self.last_verdicts()
            .iter()
            .map(|v| v.failure.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn conclusion(&self, outcome: Outcome, class: ReasonClass, why: String) -> Conclusion {
        let (deciding, rule) = deciding(self.last_verdicts());
        let fallback = self.fallback.as_ref().and_then(|state| {
            Some(Box::new(FallbackReport {
                rule: state.fallback.rule.clone(),
                trigger: state.trigger.clone(),
                attempt: state.switched_at?,
                from: state.from.label(),
                to: state.fallback.placement.label(),
                started: state.started,
                cost: state.fallback.cost_sentence(&state.from),
            }))
        });
        let outcome = match (outcome, &fallback) {
            (Outcome::Recovered, Some(f)) if f.started > 0 => Outcome::RecoveredOnFallback,
            (Outcome::GaveUp, Some(_)) => Outcome::GaveUpAfterFallback,
            (outcome, _) => outcome,
        };
        Conclusion {
            fallback,
            outcome,
            class,
            why,
            deciding,
            rule,
            original: self.original.clone(),
            attempts: self.attempts.clone(),
            started_by_retries: self.started_by_retries,
            already_running: self.already_running,
            still_missing: self.missing.max(0),
            task_arns: self.task_arns.clone(),
            may_have_started: match outcome {
                Outcome::GaveUp | Outcome::GaveUpAfterFallback | Outcome::NotRetryable => {
                    self.ambiguous_token()
                }
                _ => None,
            },
            schedule_ms: Vec::new(),
        }
    }
}

/// The failure that decides among `verdicts`, and the rule that matched it.
fn deciding(verdicts: &[Verdict]) -> (String, String) {
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `3d 2h`, `45m 10s`, `12s`: an age a person reads at a glance.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}
