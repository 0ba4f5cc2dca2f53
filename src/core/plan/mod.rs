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

pub mod episode;
mod fallback_state;

use std::time::{Duration, SystemTime};

use self::episode::{Episode, Phase};
use self::fallback_state::{FallbackState, capacity_answer};
use crate::core::caller::Caller;
use crate::core::classify::{self, Action, ReasonClass, Rules, Subject};
use crate::core::decode::{FailedRunTask, Failure, Ignored};
use crate::core::marks;
use crate::core::org::{self, AllowedAccounts};
use crate::core::outcome::{Conclusion, Outcome};
use crate::core::request::RunTaskRequest;
use crate::core::schedule::Schedule;

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
