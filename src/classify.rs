//! Classify: is a failure worth a retry, or does a person have to fix something?
//!
//! A table of rules, in the spirit of AWS Batch's `evaluateOnExit`: each rule matches a placement
//! failure's `reason`, or an exception's `errorCode`, optionally narrowed by the message, with
//! case-insensitive globs (`*`, `?`). The first rule that matches decides; a failure no rule
//! matches is `unknown` and gets a notification. Operators prepend their own rules with
//! `ECS_RERUN_RULES`, so they can override any default without a rebuild.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wildmatch::WildMatchPattern;

use crate::decode::Failure;
use crate::event::PlacementFailure;
use crate::schedule::{Jitter, Schedule};

type Glob = WildMatchPattern<'*', '?'>;

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Transient: re-issue the call after a backoff.
    Retry,
    /// Permanent: tell a person.
    Notify,
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
}

impl ReasonClass {
    /// The snake_case name used in attributes, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Unknown => "unknown",
            Self::NotReplayable => "not_replayable",
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
    schedule: Schedule,
    max_attempts: Option<u32>,
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

/// A built-in rule: `(action, onReason, onErrorCode, onMessage, schedule)`.
type RuleRow = (
    Action,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    Schedule,
);

/// Notify rules never wait; their schedule is unused.
const NONE: Schedule = Schedule::TENS_OF_SECONDS;

/// The built-in table (section 1.7 of the AWS facts), with how long each transient failure
/// needs (section 12): an agent reconnects in tens of seconds, capacity takes minutes (an EC2
/// instance to launch and register, a Fargate capacity spell to pass), the API asks for seconds.
const DEFAULTS: &[RuleRow] = &[
    (
        Action::Retry,
        Some("AGENT"),
        None,
        None,
        Schedule::TENS_OF_SECONDS,
    ),
    (
        Action::Retry,
        Some("RESOURCE:*"),
        None,
        None,
        Schedule::MINUTES,
    ),
    (
        Action::Retry,
        Some("*Capacity is unavailable*"),
        None,
        None,
        Schedule::MINUTES,
    ),
    (
        Action::Retry,
        None,
        Some("ThrottlingException"),
        None,
        Schedule::SECONDS,
    ),
    (
        Action::Retry,
        None,
        Some("ServerException"),
        None,
        Schedule::SECONDS,
    ),
    (
        Action::Retry,
        None,
        Some(NETWORK_ERROR),
        None,
        Schedule::SECONDS,
    ),
    (
        Action::Retry,
        None,
        Some("ClientException"),
        Some("*Tasks provisioning capacity limit exceeded*"),
        Schedule::TENS_OF_SECONDS,
    ),
    (Action::Notify, Some("ATTRIBUTE"), None, None, NONE),
    (Action::Notify, Some("LOCATION"), None, None, NONE),
    (Action::Notify, Some("MISSING"), None, None, NONE),
    (Action::Notify, Some("INACTIVE"), None, None, NONE),
    (
        Action::Notify,
        Some("*limit on the number of*"),
        None,
        None,
        NONE,
    ),
    (
        Action::Notify,
        Some("*configuration is above your limit*"),
        None,
        None,
        NONE,
    ),
    (Action::Notify, None, Some("AccessDenied*"), None, NONE),
    (
        Action::Notify,
        None,
        Some("InvalidParameterException"),
        None,
        NONE,
    ),
    (Action::Notify, None, Some("ClientException"), None, NONE),
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
                .map(|&(action, reason, code, message, schedule)| {
                    Rule::new(action, reason, code, message, schedule, None)
                })
                .collect(),
        )
    }

    /// The operator's rules (JSON, as in `ECS_RERUN_RULES`) ahead of the built-in ones.
    pub fn with_overrides(json: &str) -> Result<Self, RuleError> {
        let specs: Vec<RuleSpec> =
            serde_json::from_str(json).map_err(|e| RuleError(format!("not valid JSON: {e}")))?;
        let mut rules = Vec::with_capacity(specs.len() + DEFAULTS.len());
        for (i, spec) in specs.into_iter().enumerate() {
            if spec.on_reason.is_none() && spec.on_error_code.is_none() {
                return Err(RuleError(format!("rule {i} needs onReason or onErrorCode")));
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
            rules.push(Rule::new(
                spec.action,
                spec.on_reason.as_deref(),
                spec.on_error_code.as_deref(),
                spec.on_message.as_deref(),
                schedule,
                spec.max_attempts,
            ));
        }
        rules.extend(Self::defaults().0.iter().cloned());
        Ok(Self(rules.into()))
    }

    /// Classifies one placement failure.
    pub fn placement(&self, failure: &PlacementFailure) -> Verdict {
        let reason = failure.reason.as_deref().unwrap_or("");
        let detail = failure.detail.as_deref().unwrap_or("");
        let mut verdict = self.first_match(reason, |r| {
            r.on_error_code.is_none()
                && r.on_reason.as_ref().is_some_and(|g| g.matches(reason))
                && r.on_message.as_ref().is_none_or(|g| g.matches(detail))
        });
        verdict.examples.extend(failure.arn.clone());
        verdict
    }

    /// Classifies the placement failures of one answer, grouped by their text: ECS lists one
    /// entry per container instance it considered, so 900 instances give one group, not 900.
    /// An answer with fewer tasks and no failure listed gets one `(no reason given)` verdict.
    pub fn placements(&self, failures: &[PlacementFailure]) -> Vec<Verdict> {
        if failures.is_empty() {
            return vec![self.placement(&PlacementFailure::default())];
        }
        let mut groups: Vec<Verdict> = Vec::new();
        for failure in failures {
            let verdict = self.placement(failure);
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
                        }
                    }
                }
            }
        }
        groups
    }

    /// Classifies one exception.
    pub fn api_error(&self, code: &str, message: &str) -> Verdict {
        let shown = if message.is_empty() {
            code.to_owned()
        } else {
            format!("{code}: {message}")
        };
        self.first_match(&shown, |r| {
            r.on_reason.is_none()
                && r.on_error_code.as_ref().is_some_and(|g| g.matches(code))
                && r.on_message.as_ref().is_none_or(|g| g.matches(message))
        })
    }

    /// Classifies a whole failure: one verdict per distinct failure text.
    pub fn failure(&self, failure: &Failure) -> Vec<Verdict> {
        match failure {
            Failure::Placement(failures) => self.placements(failures),
            Failure::Api { code, message } => vec![self.api_error(code, message)],
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
                class: match rule.action {
                    Action::Retry => ReasonClass::Transient,
                    Action::Notify => ReasonClass::Permanent,
                },
                rule: rule.text.clone(),
                count: 1,
                examples: Vec::new(),
                schedule: rule.schedule,
                max_attempts: rule.max_attempts,
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
            },
        }
    }
}

/// Retry if any failure is transient: with several entries for one call, one transient cause
/// (an agent reconnecting) is enough for a new placement to succeed.
pub fn overall(verdicts: &[Verdict]) -> Option<&Verdict> {
    verdicts
        .iter()
        .find(|v| v.action == Action::Retry)
        .or_else(|| verdicts.first())
}

impl Rule {
    fn new(
        action: Action,
        reason: Option<&str>,
        code: Option<&str>,
        message: Option<&str>,
        schedule: Schedule,
        max_attempts: Option<u32>,
    ) -> Self {
        let mut text = Vec::new();
        if let Some(r) = reason {
            text.push(format!("onReason={r}"));
        }
        if let Some(c) = code {
            text.push(format!("onErrorCode={c}"));
        }
        if let Some(m) = message {
            text.push(format!("onMessage={m}"));
        }
        let action_name = match action {
            Action::Retry => "retry",
            Action::Notify => "notify",
        };
        Self {
            action,
            on_reason: reason.map(Glob::new_case_insensitive),
            on_error_code: code.map(Glob::new_case_insensitive),
            on_message: message.map(Glob::new_case_insensitive),
            schedule,
            max_attempts,
            text: format!("{} -> {action_name}", text.join(" ")),
        }
    }
}
