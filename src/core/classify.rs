//! Classify: is a failure worth a retry, or does a person have to fix something?
//!
//! A table of rules, in the spirit of AWS Batch's `evaluateOnExit`: each rule matches a placement
//! failure's `reason`, an exception's `errorCode`, or a stopped task's `stoppedReason` (for the
//! `stopCode` it names, `TaskFailedToStart` when it names none), optionally narrowed by the
//! message (a stopped task's container reasons), and
//! may be narrowed to a caller, an account, a cluster or a task family ([`Subject`]), all with
//! case-insensitive globs (`*`, `?`). The first rule that matches decides: retry, notify, or
//! leave it to a caller that retries by itself. A failure no rule matches is `unknown` and gets a
//! notification. Operators prepend their own rules with `ECS_RERUN_RULES`, so they can override
//! any default without a rebuild.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wildmatch::WildMatchPattern;

use crate::core::decode::{Failure, Origin};
use crate::core::event::PlacementFailure;
use crate::core::fallback::{Fallback, FallbackError, FallbackSpec, Placement};
use crate::core::schedule::{Jitter, Schedule};
use crate::core::task_change::{FAILED_TO_START, INTERRUPTED};

/// A rule's `*` / `?` pattern (`onReason`, `onCaller`, ...); every one is built case-insensitive.
pub(crate) type Glob = WildMatchPattern<'*', '?'>;

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Transient: re-issue the call after a backoff.
    Retry,
    /// Permanent: tell a person.
    Notify,
    /// The caller retries by itself: log and count only, no rerun, no notification.
    Leave,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Notify => "notify",
            Self::Leave => "leave",
        }
    }
}

/// What a rule may know about a failed call besides its failure.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Subject {
    /// Who made the call ([`crate::core::caller::Caller::name`]); `None` for ecs-rerun's own calls,
    /// which no `onCaller` rule concerns.
    pub caller: Option<String>,
    /// The account of the call.
    pub account: String,
    /// The cluster's short name.
    pub cluster: String,
    /// The task family.
    pub family: String,
    /// The recorded placement, as `onCapacityProvider` matches it
    /// ([`Placement::matcher_names`]).
    #[serde(default)]
    pub placements: Vec<String>,
}

impl Subject {
    /// What rules may know about the call of `origin`, its caller included.
    pub fn of(origin: &Origin) -> Self {
        Self {
            caller: Some(origin.called_by.name().to_owned()),
            account: origin.account.clone(),
            cluster: origin.request.cluster_name().to_owned(),
            family: origin.request.task_family().unwrap_or_default().to_owned(),
            placements: Placement::of(&origin.request).matcher_names(),
        }
    }
}

/// The class of a failure, as shown in notifications and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonClass {
    /// A rule says retry.
    Transient,
    /// A rule says notify.
    Permanent,
    /// No rule matched.
    Unknown,
    /// Transient, but the request cannot be reproduced (redacted environment, unknown fields).
    NotReplayable,
    /// A rule on the caller decided: it retries by itself, or a person should.
    Caller,
}

impl ReasonClass {
    /// The snake_case name used in attributes, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Unknown => "unknown",
            Self::NotReplayable => "not_replayable",
            Self::Caller => "caller",
        }
    }
}

/// One rule as written in `ECS_RERUN_RULES` (JSON list of these). The schedule fields are the
/// Step Functions Retrier's, spelled as there; a retry rule that leaves them out waits tens of
/// seconds ([`Schedule::TENS_OF_SECONDS`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleSpec {
    action: Action,
    on_reason: Option<String>,
    on_error_code: Option<String>,
    on_message: Option<String>,
    on_caller: Option<String>,
    on_stop_code: Option<String>,
    on_account: Option<String>,
    on_cluster: Option<String>,
    on_task_family: Option<String>,
    on_capacity_provider: Option<String>,
    fallback: Option<FallbackSpec>,
    fallback_from_attempt: Option<u32>,
    #[serde(rename = "IntervalSeconds")]
    interval_seconds: Option<f64>,
    #[serde(rename = "BackoffRate")]
    backoff_rate: Option<f64>,
    #[serde(rename = "MaxDelaySeconds")]
    max_delay_seconds: Option<f64>,
    #[serde(rename = "JitterStrategy")]
    jitter_strategy: Option<Jitter>,
    #[serde(rename = "MaxAttempts")]
    max_attempts: Option<u32>,
}

#[derive(Debug, Clone)]
struct Rule {
    action: Action,
    on_reason: Option<Glob>,
    on_error_code: Option<Glob>,
    on_message: Option<Glob>,
    on_caller: Option<Glob>,
    on_stop_code: Option<Glob>,
    on_account: Option<Glob>,
    on_cluster: Option<Glob>,
    on_task_family: Option<Glob>,
    on_capacity_provider: Option<Glob>,
    schedule: Schedule,
    max_attempts: Option<u32>,
    fallback: Option<Arc<Fallback>>,
    text: String,
}

/// A bad `ECS_RERUN_RULES` value.
#[derive(Debug, thiserror::Error)]
#[error(
    "ECS_RERUN_RULES: {0}. Expected a JSON list such as \
     [{{\"onReason\": \"RESOURCE:*\", \"action\": \"retry\"}}, \
     {{\"onErrorCode\": \"ClientException\", \"onMessage\": \"*capacity*\", \"action\": \"notify\"}}]"
)]
pub struct RuleError(String);

/// The verdict on one failure, or on a group of failures with the same text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The failure in one line: the reason, or `code: message`.
    pub failure: String,
    /// What to do.
    pub action: Action,
    /// Its class.
    pub class: ReasonClass,
    /// The rule that matched, for the record.
    pub rule: String,
    /// How many failure entries had this text (one per container instance considered on EC2).
    pub count: u32,
    /// A few of their resource ARNs, as examples (at most [`MAX_EXAMPLES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    /// How long such a failure needs before the next call (the matching rule's schedule).
    #[serde(skip)]
    pub schedule: Schedule,
    /// The matching rule's `MaxAttempts`, when it sets one.
    #[serde(skip)]
    pub max_attempts: Option<u32>,
    /// The matching rule's capacity fallback, when it has one.
    #[serde(skip)]
    pub fallback: Option<Arc<Fallback>>,
}

/// How many example ARNs a grouped verdict keeps: enough to find the instances, few enough that
/// a cluster of 900 instances still makes a short notification.
pub const MAX_EXAMPLES: usize = 3;
/// How many distinct failure texts one answer keeps; the rest are merged into one verdict, so
/// that an episode's state and its notification stay small whatever ECS answers.
pub const MAX_GROUPS: usize = 10;

/// The ordered rule table; cheap to clone (shared), as every episode keeps one.
#[derive(Debug, Clone)]
pub struct Rules(Arc<[Rule]>);

/// A built-in rule.
#[derive(Clone, Copy)]
struct Row {
    action: Action,
    reason: Option<&'static str>,
    code: Option<&'static str>,
    message: Option<&'static str>,
    caller: Option<&'static str>,
    stop_code: Option<&'static str>,
    schedule: Schedule,
}

/// Notify and leave rules never wait; their schedule is unused.
const NONE: Schedule = Schedule::TENS_OF_SECONDS;
const TENS: Schedule = Schedule::TENS_OF_SECONDS;

const fn retry(
    reason: Option<&'static str>,
    code: Option<&'static str>,
    schedule: Schedule,
) -> Row {
    Row {
        action: Action::Retry,
        reason,
        code,
        message: None,
        caller: None,
        stop_code: None,
        schedule,
    }
}

const fn notify(reason: Option<&'static str>, code: Option<&'static str>) -> Row {
    Row {
        action: Action::Notify,
        reason,
        code,
        message: None,
        caller: None,
        stop_code: None,
        schedule: NONE,
    }
}

const fn caller(caller: &'static str, action: Action, code: Option<&'static str>) -> Row {
    Row {
        action,
        reason: None,
        code,
        message: None,
        caller: Some(caller),
        stop_code: None,
        schedule: NONE,
    }
}

/// A rule on the `stoppedReason` of a task that failed to start.
const fn stopped(action: Action, reason: &'static str, schedule: Schedule) -> Row {
    Row {
        action,
        reason: Some(reason),
        code: None,
        message: None,
        caller: None,
        stop_code: Some(FAILED_TO_START),
        schedule,
    }
}

/// A rule on a Spot interruption: notify, unless the operator's own rule says retry.
const fn interrupted(stop_code: &'static str) -> Row {
    Row {
        action: Action::Notify,
        reason: None,
        code: None,
        message: None,
        caller: None,
        stop_code: Some(stop_code),
        schedule: NONE,
    }
}

/// The built-in table. First the callers that retry by themselves (aws-facts §12): AWS Batch
/// places its jobs again; a Step Functions state's `Retry` decides (with `.sync`; the plain
/// integration moves on, and the record cannot tell the two apart, so a person is told);
/// Scheduler and rule targets resend a call that was throttled or got a 5xx under their retry
/// policy, but not one answered with `failures`, nor a permanent error. Then the failures (§1.7), with how long each transient one needs (§12): an agent
/// reconnects in tens of seconds, capacity takes minutes, the API asks for seconds.
const DEFAULTS: &[Row] = &[
    caller("batch", Action::Leave, None),
    caller("step-functions", Action::Notify, None),
    caller("scheduler", Action::Leave, Some("ThrottlingException")),
    caller("scheduler", Action::Leave, Some("ServerException")),
    caller("events-rule", Action::Leave, Some("ThrottlingException")),
    caller("events-rule", Action::Leave, Some("ServerException")),
    retry(Some("AGENT"), None, Schedule::TENS_OF_SECONDS),
    retry(Some("RESOURCE:*"), None, Schedule::MINUTES),
    retry(Some("*Capacity is unavailable*"), None, Schedule::MINUTES),
    retry(None, Some("ThrottlingException"), Schedule::SECONDS),
    retry(None, Some("ServerException"), Schedule::SECONDS),
    retry(None, Some(NETWORK_ERROR), Schedule::SECONDS),
    Row {
        message: Some("*Tasks provisioning capacity limit exceeded*"),
        ..retry(None, Some("ClientException"), Schedule::TENS_OF_SECONDS)
    },
    // Tasks that failed to start (aws-facts §9): what a person must fix first (a missing image,
    // a denied pull or secret), then what passes (pull timeouts and throttling, slow secrets or
    // ENIs, capacity). Any other reason is unknown and notified.
    stopped(Action::Notify, "*CannotPullContainerError*not found*", NONE),
    stopped(
        Action::Notify,
        "*CannotPullContainerError*manifest unknown*",
        NONE,
    ),
    stopped(Action::Notify, "*CannotPullContainerError*denied*", NONE),
    stopped(
        Action::Notify,
        "*CannotPullContainerError*unauthorized*",
        NONE,
    ),
    stopped(
        Action::Notify,
        "*CannotPullContainerError*no basic auth*",
        NONE,
    ),
    stopped(
        Action::Notify,
        "*ResourceInitializationError*AccessDenied*",
        NONE,
    ),
    stopped(
        Action::Notify,
        "*ResourceInitializationError*NotFound*",
        NONE,
    ),
    stopped(
        Action::Notify,
        "*ResourceInitializationError*does not exist*",
        NONE,
    ),
    stopped(
        Action::Notify,
        "*ResourceInitializationError*invalid*",
        NONE,
    ),
    stopped(Action::Retry, "*CannotPullContainerError*time*out*", TENS),
    stopped(
        Action::Retry,
        "*CannotPullContainerError*deadline exceeded*",
        TENS,
    ),
    stopped(
        Action::Retry,
        "*CannotPullContainerError*too*many*requests*",
        TENS,
    ),
    stopped(
        Action::Retry,
        "*CannotPullContainerError*rate exceeded*",
        TENS,
    ),
    stopped(Action::Retry, "*CannotPullContainerError*throttl*", TENS),
    stopped(
        Action::Retry,
        "*CannotPullContainerError*connection reset*",
        TENS,
    ),
    stopped(
        Action::Retry,
        "*ResourceInitializationError*time*out*",
        TENS,
    ),
    stopped(
        Action::Retry,
        "*ResourceInitializationError*deadline exceeded*",
        TENS,
    ),
    stopped(
        Action::Retry,
        "*waiting for network interface provisioning*",
        TENS,
    ),
    stopped(Action::Retry, "*RESOURCE:*", Schedule::MINUTES),
    stopped(Action::Retry, "*capacity*unavailable*", Schedule::MINUTES),
    interrupted("SpotInterruption"),
    interrupted("TerminationNotice"),
    notify(Some("ATTRIBUTE"), None),
    notify(Some("LOCATION"), None),
    notify(Some("MISSING"), None),
    notify(Some("INACTIVE"), None),
    notify(Some("*limit on the number of*"), None),
    notify(Some("*configuration is above your limit*"), None),
    notify(None, Some("AccessDenied*")),
    notify(None, Some("InvalidParameterException")),
    notify(None, Some("ClientException")),
];

/// Whether an error code says the server failed, after which it may have acted (5xx).
pub fn is_server_error(code: &str) -> bool {
    matches!(
        code,
        "ServerException" | "InternalFailure" | "InternalError" | "ServiceUnavailable"
    ) || code == NETWORK_ERROR
}

/// Pseudo error code for a call that got no answer (timeout, connection reset): the SDK has
/// already retried it with the same token, so another attempt is safe and transient.
pub const NETWORK_ERROR: &str = "NetworkError";

impl Rules {
    /// The built-in table.
    pub fn defaults() -> Self {
        Self(
            DEFAULTS
                .iter()
                .map(|row| {
                    Rule::new(
                        row.action,
                        Matchers {
                            reason: row.reason,
                            code: row.code,
                            message: row.message,
                            caller: row.caller,
                            stop_code: row.stop_code,
                            ..Matchers::default()
                        },
                        row.schedule,
                        None,
                    )
                })
                .collect(),
        )
    }

    /// The operator's rules (JSON, as in `ECS_RERUN_RULES`) ahead of the built-in ones, except
    /// that the built-in caller rules come before any operator rule that names no caller: a
    /// rule written for failures (`onReason: RESOURCE:GPU, retry`) must not rerun what AWS Batch
    /// or Step Functions retry by themselves. An operator's `onCaller` rule comes first.
    /// `max_attempts` is `ECS_RERUN_MAX_ATTEMPTS`, the default of a rule's `MaxAttempts` and so
    /// of its `fallbackFromAttempt`.
    pub fn with_overrides(json: &str, max_attempts: u32) -> Result<Self, RuleError> {
        let specs: Vec<serde_json::Value> =
            serde_json::from_str(json).map_err(|e| RuleError(format!("not valid JSON: {e}")))?;
        let mut rules = Vec::with_capacity(specs.len() + DEFAULTS.len());
        for (i, spec) in specs.into_iter().enumerate() {
            // One rule at a time, so that an unknown field (inside `fallback` too) is named
            // with its rule.
            let spec: RuleSpec =
                serde_json::from_value(spec).map_err(|e| RuleError(format!("rule {i}: {e}")))?;
            let matchers = Matchers {
                reason: spec.on_reason.as_deref(),
                code: spec.on_error_code.as_deref(),
                message: spec.on_message.as_deref(),
                caller: spec.on_caller.as_deref(),
                stop_code: spec.on_stop_code.as_deref(),
                account: spec.on_account.as_deref(),
                cluster: spec.on_cluster.as_deref(),
                family: spec.on_task_family.as_deref(),
                capacity_provider: spec.on_capacity_provider.as_deref(),
            };
            if spec.on_message.is_some() && spec.on_reason.is_none() && spec.on_error_code.is_none()
            {
                return Err(RuleError(format!(
                    "rule {i}: onMessage narrows onReason or onErrorCode; give it one"
                )));
            }
            if matchers.is_empty() {
                return Err(RuleError(format!(
                    "rule {i} matches nothing: give it onReason, onErrorCode, onStopCode, \
                     onCaller, onAccount, onCluster, onTaskFamily or onCapacityProvider"
                )));
            }
            if let Some(caller) = spec.on_caller.as_deref()
                && !CALLERS
                    .iter()
                    .any(|c| Glob::new_case_insensitive(caller).matches(c))
            {
                return Err(RuleError(format!(
                    "rule {i}: onCaller {caller:?} matches no caller; callers are {}",
                    CALLERS.join(", ")
                )));
            }
            if let Some(code) = spec.on_stop_code.as_deref() {
                let glob = Glob::new_case_insensitive(code);
                if !STOP_CODES.iter().any(|c| glob.matches(c)) {
                    return Err(RuleError(format!(
                        "rule {i}: onStopCode {code:?} matches no stop code ecs-rerun acts on; \
                         they are {}",
                        STOP_CODES.join(", ")
                    )));
                }
                if spec.on_error_code.is_some() {
                    return Err(RuleError(format!(
                        "rule {i} has both onStopCode and onErrorCode; a stopped task has no \
                         error code"
                    )));
                }
            }
            if spec.on_reason.is_some() && spec.on_error_code.is_some() {
                return Err(RuleError(format!(
                    "rule {i} has both onReason and onErrorCode; a failure has one or the other"
                )));
            }
            let base = Schedule::TENS_OF_SECONDS;
            let schedule = Schedule {
                interval_seconds: spec.interval_seconds.unwrap_or(base.interval_seconds),
                backoff_rate: spec.backoff_rate.unwrap_or(base.backoff_rate),
                max_delay_seconds: spec.max_delay_seconds.unwrap_or(
                    base.max_delay_seconds
                        .max(spec.interval_seconds.unwrap_or(base.interval_seconds)),
                ),
                jitter_strategy: spec.jitter_strategy.unwrap_or(base.jitter_strategy),
            };
            schedule
                .validate()
                .map_err(|problem| RuleError(format!("rule {i}: {problem}")))?;
            if spec.max_attempts.is_some_and(|n| !(1..=10).contains(&n)) {
                return Err(RuleError(format!(
                    "rule {i}: MaxAttempts must be from 1 to 10"
                )));
            }
            let mut rule = Rule::new(spec.action, matchers, schedule, spec.max_attempts);
            rule.fallback = fallback(&spec, &rule.text, max_attempts)
                .map_err(|e| RuleError(format!("rule {i} ({}): {e}", rule.text)))?
                .map(Arc::new);
            rules.push(rule);
        }
        let defaults = Self::defaults();
        let (callers, failures): (Vec<Rule>, Vec<Rule>) = defaults
            .0
            .iter()
            .cloned()
            .partition(|r| r.on_caller.is_some());
        let (theirs_on_callers, theirs): (Vec<Rule>, Vec<Rule>) =
            rules.into_iter().partition(|r| r.on_caller.is_some());
        Ok(Self(
            theirs_on_callers
                .into_iter()
                .chain(callers)
                .chain(theirs)
                .chain(failures)
                .collect(),
        ))
    }

    /// Classifies one placement failure of a call about `subject`.
    pub fn placement(&self, failure: &PlacementFailure, subject: &Subject) -> Verdict {
        let reason = failure.reason.as_deref().unwrap_or("");
        let detail = failure.detail.as_deref().unwrap_or("");
        let mut verdict = self.first_match(reason, |r| {
            r.on_error_code.is_none()
                && r.on_stop_code.is_none()
                && r.on_reason.as_ref().is_none_or(|g| g.matches(reason))
                && r.on_message.as_ref().is_none_or(|g| g.matches(detail))
                && r.concerns(subject)
        });
        verdict.examples.extend(failure.arn.clone());
        verdict
    }

    /// Classifies the placement failures of one answer, grouped by their text: ECS lists one
    /// entry per container instance it considered, so 900 instances give one group, not 900.
    /// An answer with fewer tasks and no failure listed gets one `(no reason given)` verdict.
    pub fn placements(&self, failures: &[PlacementFailure], subject: &Subject) -> Vec<Verdict> {
        if failures.is_empty() {
            return vec![self.placement(&PlacementFailure::default(), subject)];
        }
        let mut groups: Vec<Verdict> = Vec::new();
        for failure in failures {
            let verdict = self.placement(failure, subject);
            let known = groups.iter().position(|g| g.failure == verdict.failure);
            let kept = groups.len();
            match known.and_then(|i| groups.get_mut(i)) {
                Some(group) => {
                    group.count = group.count.saturating_add(1);
                    if group.examples.len() < MAX_EXAMPLES {
                        group.examples.extend(verdict.examples);
                    }
                }
                None if kept < MAX_GROUPS => groups.push(verdict),
                None => {
                    if kept == MAX_GROUPS {
                        groups.push(Verdict {
                            failure: "(other reasons)".to_owned(),
                            rule: "several rules".to_owned(),
                            count: 0,
                            examples: Vec::new(),
                            ..verdict.clone()
                        });
                    }
                    if let Some(other) = groups.last_mut() {
                        other.count = other.count.saturating_add(1);
                        // One transient cause among them is enough to retry (see `overall`).
                        if other.action != Action::Retry && verdict.action == Action::Retry {
                            other.action = verdict.action;
                            other.class = verdict.class;
                            other.schedule = verdict.schedule;
                            other.max_attempts = verdict.max_attempts;
                            other.fallback = verdict.fallback.clone();
                        }
                    }
                }
            }
        }
        groups
    }

    /// Classifies one exception of a call about `subject`.
    pub fn api_error(&self, code: &str, message: &str, subject: &Subject) -> Verdict {
        let shown = if message.is_empty() {
            code.to_owned()
        } else {
            format!("{code}: {message}")
        };
        self.first_match(&shown, |r| {
            r.on_reason.is_none()
                && r.on_stop_code.is_none()
                && r.on_error_code.as_ref().is_none_or(|g| g.matches(code))
                && r.on_message.as_ref().is_none_or(|g| g.matches(message))
                && r.concerns(subject)
        })
    }

    /// Classifies a task that stopped with `stop_code` before it ran: `reason` (its
    /// `stoppedReason`, with the containers' reasons in `detail` after it) against `onReason`,
    /// `detail` against `onMessage`. A rule that names no `onStopCode` is for `TaskFailedToStart`,
    /// unless it names a caller: then it is for every stop.
    pub fn stopped(
        &self,
        stop_code: &str,
        reason: &str,
        detail: &str,
        subject: &Subject,
    ) -> Verdict {
        let shown = match (reason.is_empty(), detail.is_empty()) {
            (_, true) => reason.to_owned(),
            (true, false) => detail.to_owned(),
            (false, false) => format!("{reason} ({detail})"),
        };
        let mut verdict = self.first_match(&shown, |r| {
            r.on_error_code.is_none()
                && r.on_stop_code.as_ref().map_or(
                    // A caller's rule concerns every stop of its tasks: a Step Functions `.sync`
                    // state retries an interrupted task as it retries one that failed to start.
                    stop_code == FAILED_TO_START || r.on_caller.is_some(),
                    |g| g.matches(stop_code),
                )
                && r.on_reason.as_ref().is_none_or(|g| g.matches(&shown))
                && r.on_message.as_ref().is_none_or(|g| g.matches(detail))
                && r.concerns(subject)
        });
        verdict.failure = format!("{stop_code}: {}", verdict.failure);
        verdict
    }

    /// Classifies a whole failure: one verdict per distinct failure text.
    pub fn failure(&self, failure: &Failure, subject: &Subject) -> Vec<Verdict> {
        match failure {
            Failure::Placement(failures) => self.placements(failures, subject),
            Failure::Api { code, message } => vec![self.api_error(code, message, subject)],
            Failure::Stopped {
                stop_code,
                reason,
                detail,
            } => vec![self.stopped(stop_code, reason, detail, subject)],
        }
    }

    fn first_match(&self, shown: &str, matches: impl Fn(&Rule) -> bool) -> Verdict {
        let failure = if shown.is_empty() {
            "(no reason given)".to_owned()
        } else {
            shown.to_owned()
        };
        match self.0.iter().find(|r| matches(r)) {
            Some(rule) => Verdict {
                failure,
                action: rule.action,
                class: match (rule.action, rule.on_caller.is_some()) {
                    (_, true) | (Action::Leave, _) => ReasonClass::Caller,
                    (Action::Retry, false) => ReasonClass::Transient,
                    (Action::Notify, false) => ReasonClass::Permanent,
                },
                rule: rule.text.clone(),
                count: 1,
                examples: Vec::new(),
                schedule: rule.schedule,
                max_attempts: rule.max_attempts,
                fallback: rule.fallback.clone(),
            },
            None => Verdict {
                failure,
                action: Action::Notify,
                class: ReasonClass::Unknown,
                rule: "no rule matched".to_owned(),
                count: 1,
                examples: Vec::new(),
                schedule: NONE,
                max_attempts: None,
                fallback: None,
            },
        }
    }
}

/// The validated `fallback` of a rule, with its `fallbackFromAttempt` resolved (default: the
/// rule's `MaxAttempts`, else `ECS_RERUN_MAX_ATTEMPTS`, so that only the last attempt moves).
fn fallback(
    spec: &RuleSpec,
    text: &str,
    global_max_attempts: u32,
) -> Result<Option<Fallback>, FallbackError> {
    let Some(fallback) = spec.fallback.clone() else {
        if spec.fallback_from_attempt.is_some() {
            return Err(FallbackError::Invalid {
                field: "fallbackFromAttempt",
                problem: "given without a fallback".to_owned(),
            });
        }
        return Ok(None);
    };
    if spec.action != Action::Retry {
        return Err(FallbackError::Invalid {
            field: "fallback",
            problem: format!(
                "only a rule whose action is retry can fall back; this one says {}",
                spec.action.as_str()
            ),
        });
    }
    let max_attempts = spec.max_attempts.unwrap_or(global_max_attempts);
    let from_attempt = spec.fallback_from_attempt.unwrap_or(max_attempts);
    if !(1..=max_attempts).contains(&from_attempt) {
        return Err(FallbackError::Invalid {
            field: "fallbackFromAttempt",
            problem: format!(
                "{from_attempt} is outside 1..{max_attempts} (the rule's MaxAttempts, else \
                 ECS_RERUN_MAX_ATTEMPTS): the fallback would never run"
            ),
        });
    }
    fallback
        .validate(text, spec.on_reason.as_deref(), from_attempt)
        .map(Some)
}

/// The verdict that decides a call: a caller that retries by itself first (its own retry is
/// coming), then any transient failure (with several entries for one call, one transient cause,
/// an agent reconnecting, is enough for a new placement to succeed), else the first.
pub fn overall(verdicts: &[Verdict]) -> Option<&Verdict> {
    verdicts
        .iter()
        .find(|v| v.action == Action::Leave)
        .or_else(|| verdicts.iter().find(|v| v.action == Action::Retry))
        .or_else(|| verdicts.first())
}

/// The callers an `onCaller` rule can name ([`crate::core::caller::Caller::name`]).
pub const CALLERS: &[&str] = &[
    "batch",
    "step-functions",
    "scheduler",
    "events-rule",
    "other",
];

/// The `stopCode`s an `onStopCode` rule can name: those ecs-rerun acts on.
pub const STOP_CODES: &[&str] = &[FAILED_TO_START, INTERRUPTED[0], INTERRUPTED[1]];

/// What a rule matches, as written.
#[derive(Debug, Clone, Copy, Default)]
struct Matchers<'a> {
    reason: Option<&'a str>,
    code: Option<&'a str>,
    message: Option<&'a str>,
    caller: Option<&'a str>,
    stop_code: Option<&'a str>,
    account: Option<&'a str>,
    cluster: Option<&'a str>,
    family: Option<&'a str>,
    capacity_provider: Option<&'a str>,
}

impl Matchers<'_> {
    fn is_empty(&self) -> bool {
        [
            self.reason,
            self.code,
            self.caller,
            self.stop_code,
            self.account,
            self.cluster,
            self.family,
            self.capacity_provider,
        ]
        .iter()
        .all(Option::is_none)
    }
}

impl Rule {
    fn new(action: Action, m: Matchers<'_>, schedule: Schedule, max_attempts: Option<u32>) -> Self {
        let text: Vec<String> = [
            ("onCaller", m.caller),
            ("onStopCode", m.stop_code),
            ("onAccount", m.account),
            ("onCluster", m.cluster),
            ("onTaskFamily", m.family),
            ("onCapacityProvider", m.capacity_provider),
            ("onReason", m.reason),
            ("onErrorCode", m.code),
            ("onMessage", m.message),
        ]
        .into_iter()
        .filter_map(|(name, glob)| glob.map(|g| format!("{name}={g}")))
        .collect();
        let glob = |g: Option<&str>| g.map(Glob::new_case_insensitive);
        Self {
            action,
            on_reason: glob(m.reason),
            on_error_code: glob(m.code),
            on_message: glob(m.message),
            on_caller: glob(m.caller),
            on_stop_code: glob(m.stop_code),
            on_account: glob(m.account),
            on_cluster: glob(m.cluster),
            on_task_family: glob(m.family),
            on_capacity_provider: glob(m.capacity_provider),
            schedule,
            max_attempts,
            fallback: None,
            text: format!("{} -> {}", text.join(" "), action.as_str()),
        }
    }

    /// Whether the rule's caller, account, cluster and family globs match the call.
    fn concerns(&self, subject: &Subject) -> bool {
        self.on_caller
            .as_ref()
            .is_none_or(|g| subject.caller.as_deref().is_some_and(|c| g.matches(c)))
            && self
                .on_account
                .as_ref()
                .is_none_or(|g| g.matches(&subject.account))
            && self
                .on_cluster
                .as_ref()
                .is_none_or(|g| g.matches(&subject.cluster))
            && self
                .on_task_family
                .as_ref()
                .is_none_or(|g| g.matches(&subject.family))
            && self
                .on_capacity_provider
                .as_ref()
                .is_none_or(|g| subject.placements.iter().any(|p| g.matches(p)))
    }
}
