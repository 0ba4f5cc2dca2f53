//! Self-check: can ecs-rerun still hear failed `RunTask` calls in this Region?
//!
//! ecs-rerun only acts on events, so when no event arrives it is silent, whether nothing failed
//! or nothing can reach it. A schedule sends it a [`SOURCE`] event; the handler asks CloudTrail
//! and EventBridge what they are set to (an [`Observation`]), and [`judge`] decides, here
//! without I/O, whether the path from a failed call to the function is open:
//!
//! - at least one trail that covers this Region (multi-Region, or whose home Region this is) is
//!   logging and records write management events of ECS: EventBridge receives CloudTrail's API
//!   calls only while such a trail logs;
//! - every rule the function is the target of (`ECS_RERUN_SELF_CHECK_RULES`) exists and is
//!   enabled.
//!
//! A describe call that fails, denied or otherwise, is a problem too: what cannot be checked
//! cannot be trusted. Each [`Problem`] says what to do.

use std::fmt;

use serde_json::{Value, json};

use crate::core::chat;
use crate::core::message::{self, Notification, NotificationFormat};
use crate::core::outcome::Outcome;

/// `source` of the self-check event the schedule sends (a constant input of its rule).
pub const SOURCE: &str = "ecs-rerun.self-check";
/// `detail-type` of the self-check event.
pub const DETAIL_TYPE: &str = "ecs-rerun self-check";

/// What a failed check means, in every format.
const SUMMARY: &str = "ecs-rerun's scheduled self-check found that failed RunTask calls may not \
                       reach it: until this is fixed, such failures are neither rerun nor notified.";

/// `eventSource` of the records the trail must deliver.
const ECS_EVENT_SOURCE: &str = "ecs.amazonaws.com";

/// Whether `event` is the scheduled self-check. Only its `source` and `detail-type` count: no
/// AWS service sends `ecs-rerun.*` (custom sources cannot start with `aws.`), so it cannot be
/// taken for a CloudTrail record, nor a record for it.
pub fn is_self_check(event: &Value) -> bool {
    event.get("source").and_then(Value::as_str) == Some(SOURCE)
        && event.get("detail-type").and_then(Value::as_str) == Some(DETAIL_TYPE)
}

/// A describe call that did not answer: the IAM action it needs, and what AWS said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    /// The IAM action of the call, e.g. `cloudtrail:GetTrailStatus`.
    pub action: &'static str,
    /// The error code (`AccessDeniedException`, ...), or the kind of failure (timeout, ...).
    pub code: String,
    /// The message.
    pub message: String,
}

impl CallFailure {
    /// Whether IAM (or an SCP) refused the call: then the role needs the action.
    pub fn denied(&self) -> bool {
        ["AccessDenied", "UnauthorizedOperation", "NotAuthorized"]
            .iter()
            .any(|c| self.code.contains(c))
    }
}

/// A trail, as `DescribeTrails` lists it in this Region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailSummary {
    /// Its name.
    pub name: String,
    /// Its ARN: the status and selector calls name it by ARN, which also reaches shadow and
    /// organization trails.
    pub arn: String,
    /// The Region it was created in.
    pub home_region: Option<String>,
    /// Whether it logs every Region.
    pub multi_region: bool,
}

impl TrailSummary {
    /// Whether it logs the calls made in `region`.
    pub fn covers(&self, region: &str) -> bool {
        self.multi_region || self.home_region.as_deref() == Some(region)
    }
}

/// What a trail records (`GetEventSelectors`): classic or advanced selectors, never both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selectors {
    /// `EventSelectors`.
    Classic(Vec<ClassicSelector>),
    /// `AdvancedEventSelectors`.
    Advanced(Vec<AdvancedSelector>),
}

/// One classic event selector (only what decides about management events).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClassicSelector {
    /// `IncludeManagementEvents` (absent: true, the API's default).
    pub include_management_events: Option<bool>,
    /// `ReadWriteType`: `ReadOnly`, `WriteOnly` or `All` (absent: `All`).
    pub read_write_type: Option<String>,
    /// `ExcludeManagementEventSources`.
    pub exclude_management_event_sources: Vec<String>,
}

/// One advanced event selector: it records an event when every field selector matches it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdvancedSelector {
    /// Its name, if it has one.
    pub name: Option<String>,
    /// Its field selectors.
    pub fields: Vec<FieldSelector>,
}

/// One field selector of an advanced event selector. Values of one operator are alternatives
/// (any may match); the operators must all hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// The record field: `eventCategory`, `readOnly`, `eventSource`, ...
    pub field: String,
    /// `Equals`.
    pub equals: Vec<String>,
    /// `StartsWith`.
    pub starts_with: Vec<String>,
    /// `EndsWith`.
    pub ends_with: Vec<String>,
    /// `NotEquals`.
    pub not_equals: Vec<String>,
    /// `NotStartsWith`.
    pub not_starts_with: Vec<String>,
    /// `NotEndsWith`.
    pub not_ends_with: Vec<String>,
}

/// What the status and selector calls said of one trail that covers this Region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailProbe {
    /// The trail's ARN.
    pub arn: String,
    /// `GetTrailStatus.IsLogging`.
    pub logging: Result<bool, CallFailure>,
    /// `GetEventSelectors`.
    pub selectors: Result<Selectors, CallFailure>,
}

/// What `DescribeRule` said of one rule: its `State`, or `None` when it does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleAnswer {
    /// The rule's name.
    pub name: String,
    /// Its state (`ENABLED`, `DISABLED`, ...), or `None` if EventBridge has no such rule.
    pub state: Result<Option<String>, CallFailure>,
}

/// Everything the APIs said, for [`judge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The function's Region.
    pub region: String,
    /// `DescribeTrails`.
    pub trails: Result<Vec<TrailSummary>, CallFailure>,
    /// One per trail that covers the Region ([`TrailSummary::covers`]).
    pub probes: Vec<TrailProbe>,
    /// One per rule of `ECS_RERUN_SELF_CHECK_RULES`.
    pub rules: Vec<RuleAnswer>,
}

/// Something that keeps failed `RunTask` calls from reaching ecs-rerun, or keeps it from
/// knowing whether they can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No trail covers the Region.
    NoTrail {
        /// The Region.
        region: String,
        /// Trails listed that do not cover it, `name (home Region X, single-Region)`.
        elsewhere: Vec<String>,
    },
    /// A trail covers the Region but does not log.
    NotLogging {
        /// Its name.
        trail: String,
        /// Its ARN.
        arn: String,
    },
    /// A trail logs, but not the write management events of ECS.
    NoWriteManagementEvents {
        /// Its name.
        trail: String,
        /// Why its selectors leave `RunTask` out.
        why: String,
    },
    /// A rule is not enabled.
    RuleDisabled {
        /// Its name.
        rule: String,
        /// Its state.
        state: String,
    },
    /// A rule does not exist.
    RuleMissing {
        /// Its name.
        rule: String,
    },
    /// A describe call failed, so something could not be checked.
    CallFailed {
        /// What could not be checked.
        checking: String,
        /// The failure.
        failure: CallFailure,
    },
}

impl Problem {
    /// A few words for the subject line.
    pub fn headline(&self) -> String {
        match self {
            Self::NoTrail { .. } => "no CloudTrail trail logs this Region".to_owned(),
            Self::NotLogging { trail, .. } => format!("trail {trail} is not logging"),
            Self::NoWriteManagementEvents { trail, .. } => {
                format!("trail {trail} does not record write management events")
            }
            Self::RuleDisabled { rule, state } => format!("rule {rule} is {state}"),
            Self::RuleMissing { rule } => format!("rule {rule} does not exist"),
            Self::CallFailed { failure, .. } if failure.denied() => {
                format!("{} denied", failure.action)
            }
            Self::CallFailed { failure, .. } => format!("{} failed", failure.action),
        }
    }

    /// What is wrong, in a sentence.
    pub fn what(&self) -> String {
        match self {
            Self::NoTrail { region, elsewhere } if elsewhere.is_empty() => format!(
                "No CloudTrail trail covers {region}: without a logging trail, EventBridge \
                 receives no RunTask call, failed or not."
            ),
            Self::NoTrail { region, elsewhere } => format!(
                "No CloudTrail trail covers {region} (trails seen: {}): without a logging trail, \
                 EventBridge receives no RunTask call, failed or not.",
                elsewhere.join(", ")
            ),
            Self::NotLogging { trail, .. } => format!(
                "Trail {trail} covers this Region but is not logging: EventBridge receives no \
                 RunTask call while it is stopped."
            ),
            Self::NoWriteManagementEvents { trail, why } => format!(
                "Trail {trail} is logging but does not record ECS write management events \
                 (RunTask): {why}."
            ),
            Self::RuleDisabled { rule, state } => format!(
                "EventBridge rule {rule} is {state}: the events it matches are not delivered to \
                 ecs-rerun."
            ),
            Self::RuleMissing { rule } => format!(
                "EventBridge rule {rule} does not exist: the events it matched are not \
                 delivered to ecs-rerun."
            ),
            Self::CallFailed { checking, failure } => format!(
                "Could not check {checking}: {} answered {}: {}.",
                failure.action, failure.code, failure.message
            ),
        }
    }

    /// What to do about it.
    pub fn what_to_do(&self) -> String {
        match self {
            Self::NoTrail { region, .. } => format!(
                "Create a trail that covers {region} (multi-Region, or created in {region}) and \
                 records write management events, or deploy ecs-rerun with CreateTrail=true."
            ),
            Self::NotLogging { arn, .. } => format!(
                "Start it: aws cloudtrail start-logging --name {arn} (and find out who stopped it)."
            ),
            Self::NoWriteManagementEvents { .. } => "Record management events of all or write \
                 type: a classic selector with IncludeManagementEvents true and ReadWriteType \
                 All or WriteOnly, or an advanced selector with eventCategory = Management and \
                 readOnly not limited to true."
                .to_owned(),
            Self::RuleDisabled { rule, .. } => {
                format!("Enable it: aws events enable-rule --name {rule}.")
            }
            Self::RuleMissing { .. } => {
                "Deploy the ecs-rerun stack again (sam deploy): it creates the rule.".to_owned()
            }
            Self::CallFailed { failure, .. } if failure.denied() => format!(
                "Allow {} to the function's role (the template grants it; an SCP or a \
                 permissions boundary may deny it).",
                failure.action
            ),
            Self::CallFailed { .. } => {
                "Nothing, if it passes at the next check; if it keeps failing, look at the \
                 error above."
                    .to_owned()
            }
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} What to do: {}", self.what(), self.what_to_do())
    }
}

/// The conclusion of one self-check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The Region checked.
    pub region: String,
    /// A trail that delivers the Region's RunTask calls, when one was found.
    pub hearing_trail: Option<String>,
    /// The rules found enabled.
    pub rules_enabled: Vec<String>,
    /// What is wrong; empty when ecs-rerun can hear.
    pub problems: Vec<Problem>,
}

impl Verdict {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// `self_check_ok` or `self_check_failed`.
    pub fn outcome(&self) -> Outcome {
        if self.ok() {
            Outcome::SelfCheckOk
        } else {
            Outcome::SelfCheckFailed
        }
    }

    /// One line for the report and the log.
    pub fn summary(&self) -> String {
        if self.ok() {
            let rules = if self.rules_enabled.is_empty() {
                "no rule to check (ECS_RERUN_SELF_CHECK_RULES is empty)".to_owned()
            } else {
                format!("rules enabled: {}", self.rules_enabled.join(", "))
            };
            format!(
                "hears failed RunTask calls in {}: trail {} is logging write management events; {rules}",
                self.region,
                self.hearing_trail.as_deref().unwrap_or("(none)"),
            )
        } else {
            let problems: Vec<String> = self.problems.iter().map(Problem::headline).collect();
            format!(
                "cannot hear failed RunTask calls in {}: {}",
                self.region,
                problems.join("; ")
            )
        }
    }

    /// The one notification of a failed check, its body in `format` (chat: within `max_size`
    /// bytes, the topic's `MaximumMessageSize`); `None` when nothing is wrong.
    pub fn notification(
        &self,
        format: NotificationFormat,
        max_size: usize,
    ) -> Option<Notification> {
        let first = self.problems.first()?;
        // Only failed calls: ecs-rerun may well hear, it cannot tell.
        let unsure = self
            .problems
            .iter()
            .all(|p| matches!(p, Problem::CallFailed { .. }));
        let headline = if unsure {
            "cannot check that it hears failed RunTask calls in"
        } else {
            "cannot hear failed RunTask calls in"
        };
        let more = match self.problems.len() {
            1 => String::new(),
            n => format!(" (+{} more)", n - 1),
        };
        let subject = message::subject_line(&format!(
            "[ecs-rerun] {headline} {}: {}{more}",
            self.region,
            first.headline()
        ));
        let attributes = [
            (
                "outcome".to_owned(),
                Outcome::SelfCheckFailed.as_str().to_owned(),
            ),
            ("region".to_owned(), self.region.clone()),
        ]
        .into();
        Some(match format {
            NotificationFormat::Text => Notification {
                body: serde_json::to_string_pretty(&self.text_body()).unwrap_or_default(),
                subject,
                attributes,
            },
            NotificationFormat::Chat => {
                let body = self.chat_body(&subject, unsure);
                message::seal(subject, attributes, body, &[], max_size, chat::fit)
            }
        })
    }

    /// The body of the text format: indented JSON, every problem with what to do.
    fn text_body(&self) -> Value {
        let problems: Vec<Value> = self
            .problems
            .iter()
            .map(|p| json!({"problem": p.what(), "what_to_do": p.what_to_do()}))
            .collect();
        json!({
            "outcome": Outcome::SelfCheckFailed.as_str(),
            "region": self.region,
            "summary": SUMMARY,
            "problems": problems,
            "trail_heard": self.hearing_trail,
            "rules_enabled": self.rules_enabled,
        })
    }

    /// The body of the chat format: the custom notification of [`crate::core::chat`], every
    /// check of one Region in one thread.
    fn chat_body(&self, subject: &str, unsure: bool) -> Value {
        let region = &self.region;
        let outcome = Outcome::SelfCheckFailed.as_str();
        let mut lines = vec![SUMMARY.to_owned(), String::new()];
        for (n, problem) in self.problems.iter().enumerate() {
            lines.push(format!("*{}.* {}", n + 1, problem.what()));
            lines.push(format!("*What to do:* {}", problem.what_to_do()));
        }
        lines.push(format!(
            "*Trail heard:* {}",
            self.hearing_trail.as_deref().unwrap_or("none")
        ));
        let rules = if self.rules_enabled.is_empty() {
            "none".to_owned()
        } else {
            self.rules_enabled.join(", ")
        };
        lines.push(format!("*Rules enabled:* {rules}"));

        let mut next_steps: Vec<String> = Vec::new();
        for step in self.problems.iter().map(Problem::what_to_do) {
            if !next_steps.contains(&step) {
                next_steps.push(step);
            }
        }
        next_steps.push(format!(
            "CloudTrail console, trails: https://{region}.console.aws.amazon.com/cloudtrail/home?region={region}#/trails"
        ));
        next_steps.push(format!(
            "EventBridge console, rules: https://{region}.console.aws.amazon.com/events/home?region={region}#/rules"
        ));

        json!({
            "version": "1.0",
            "source": "custom",
            "content": {
                "textType": "client-markdown",
                "title": format!("{} {subject}", if unsure { ":warning:" } else { ":x:" }),
                "description": lines.join("\n"),
                "nextSteps": next_steps,
                "keywords": [outcome, region],
            },
            "metadata": {
                "threadId": format!("ecs-rerun-self-check-{region}"),
                "summary": subject,
                "eventType": format!("ecs-rerun-{}", outcome.replace('_', "-")),
                "additionalContext": {
                    "outcome": outcome,
                    "region": region,
                    "problems": self.problems.len().to_string(),
                    "trailHeard": self.hearing_trail.as_deref().unwrap_or(""),
                    "rulesEnabled": rules,
                },
            },
        })
    }
}

/// Decides whether failed `RunTask` calls can reach ecs-rerun, from what the APIs said.
pub fn judge(observation: &Observation) -> Verdict {
    let region = observation.region.clone();
    let mut problems = Vec::new();
    let hearing_trail = match &observation.trails {
        Err(failure) => {
            problems.push(Problem::CallFailed {
                checking: format!("which CloudTrail trails cover {region}"),
                failure: failure.clone(),
            });
            None
        }
        Ok(trails) => judge_trails(&region, trails, &observation.probes, &mut problems),
    };
    let mut rules_enabled = Vec::new();
    for rule in &observation.rules {
        match &rule.state {
            Ok(Some(state)) if enabled(state) => rules_enabled.push(rule.name.clone()),
            Ok(Some(state)) => problems.push(Problem::RuleDisabled {
                rule: rule.name.clone(),
                state: state.clone(),
            }),
            Ok(None) => problems.push(Problem::RuleMissing {
                rule: rule.name.clone(),
            }),
            Err(failure) => problems.push(Problem::CallFailed {
                checking: format!("EventBridge rule {}", rule.name),
                failure: failure.clone(),
            }),
        }
    }
    Verdict {
        region,
        hearing_trail,
        rules_enabled,
        problems,
    }
}

/// `ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS` also delivers what `ENABLED` does.
fn enabled(state: &str) -> bool {
    state == "ENABLED" || state == "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS"
}

/// The trail that hears, if one does; otherwise why none does, per trail. One trail that hears
/// is enough: the others' problems do not keep an event from arriving.
fn judge_trails(
    region: &str,
    trails: &[TrailSummary],
    probes: &[TrailProbe],
    problems: &mut Vec<Problem>,
) -> Option<String> {
    let (covering, elsewhere): (Vec<&TrailSummary>, Vec<&TrailSummary>) =
        trails.iter().partition(|t| t.covers(region));
    if covering.is_empty() {
        problems.push(Problem::NoTrail {
            region: region.to_owned(),
            elsewhere: elsewhere
                .iter()
                .map(|t| {
                    format!(
                        "{} (home Region {}, single-Region)",
                        t.name,
                        t.home_region.as_deref().unwrap_or("unknown")
                    )
                })
                .collect(),
        });
        return None;
    }
    let mut why_not = Vec::new();
    for trail in covering {
        let probe = probes.iter().find(|p| p.arn == trail.arn);
        match trail_problem(trail, probe) {
            None => return Some(trail.name.clone()),
            Some(problem) => why_not.push(problem),
        }
    }
    problems.extend(why_not);
    None
}

/// Why `trail` does not deliver the Region's `RunTask` calls, or `None` if it does.
fn trail_problem(trail: &TrailSummary, probe: Option<&TrailProbe>) -> Option<Problem> {
    let call_failed = |failure: &CallFailure| Problem::CallFailed {
        checking: format!("trail {}", trail.name),
        failure: failure.clone(),
    };
    let Some(probe) = probe else {
        // The handler probes every covering trail; a missing probe is a gap, not a pass.
        return Some(Problem::CallFailed {
            checking: format!("trail {}", trail.name),
            failure: CallFailure {
                action: "cloudtrail:GetTrailStatus",
                code: "NotAsked".to_owned(),
                message: "its status was not read".to_owned(),
            },
        });
    };
    match &probe.logging {
        Err(failure) => return Some(call_failed(failure)),
        Ok(false) => {
            return Some(Problem::NotLogging {
                trail: trail.name.clone(),
                arn: trail.arn.clone(),
            });
        }
        Ok(true) => {}
    }
    let selectors = match &probe.selectors {
        Err(failure) => return Some(call_failed(failure)),
        Ok(selectors) => selectors,
    };
    records_run_task(selectors)
        .err()
        .map(|why| Problem::NoWriteManagementEvents {
            trail: trail.name.clone(),
            why,
        })
}

/// Whether the selectors record an ECS `RunTask` call (a write management event), or why not.
fn records_run_task(selectors: &Selectors) -> Result<(), String> {
    let reasons: Vec<String> = match selectors {
        Selectors::Classic(list) if list.is_empty() => vec!["it has no event selector".to_owned()],
        Selectors::Advanced(list) if list.is_empty() => {
            vec!["it has no advanced event selector".to_owned()]
        }
        Selectors::Classic(list) => {
            let mut reasons = Vec::new();
            for (i, selector) in list.iter().enumerate() {
                match classic_rejects(selector) {
                    None => return Ok(()),
                    Some(why) => reasons.push(format!("event selector {}: {why}", i + 1)),
                }
            }
            reasons
        }
        Selectors::Advanced(list) => {
            let mut reasons = Vec::new();
            for (i, selector) in list.iter().enumerate() {
                match selector.fields.iter().find_map(field_rejects) {
                    None => return Ok(()),
                    Some(why) => reasons.push(format!(
                        "advanced selector {}: {why}",
                        selector
                            .name
                            .as_deref()
                            .map_or_else(|| format!("#{}", i + 1), |n| format!("{n:?}"))
                    )),
                }
            }
            reasons
        }
    };
    Err(reasons.join("; "))
}

fn classic_rejects(selector: &ClassicSelector) -> Option<String> {
    if selector.include_management_events == Some(false) {
        return Some("IncludeManagementEvents is false".to_owned());
    }
    match selector.read_write_type.as_deref() {
        None | Some("All" | "WriteOnly") => {}
        Some(other) => return Some(format!("ReadWriteType is {other}")),
    }
    selector
        .exclude_management_event_sources
        .iter()
        .any(|s| s == ECS_EVENT_SOURCE)
        .then(|| format!("ExcludeManagementEventSources lists {ECS_EVENT_SOURCE}"))
}

/// Why a field selector does not match the record of an ECS `RunTask` call, if it does not.
fn field_rejects(selector: &FieldSelector) -> Option<String> {
    let value = match selector.field.as_str() {
        "eventCategory" => "Management",
        "readOnly" => "false",
        "eventSource" => ECS_EVENT_SOURCE,
        "eventName" => "RunTask",
        "eventType" => "AwsApiCall",
        // A field this check cannot evaluate may leave RunTask out: counting it as a pass
        // would hide the very silence the check is for.
        other => {
            return Some(format!(
                "it filters on {other}, which the self-check cannot evaluate"
            ));
        }
    };
    let any = |values: &[String], test: &dyn Fn(&str) -> bool| values.iter().any(|v| test(v));
    let checks: [(&str, &[String], bool); 6] = [
        (
            "Equals",
            &selector.equals,
            selector.equals.is_empty() || any(&selector.equals, &|v| v == value),
        ),
        (
            "StartsWith",
            &selector.starts_with,
            selector.starts_with.is_empty()
                || any(&selector.starts_with, &|v| value.starts_with(v)),
        ),
        (
            "EndsWith",
            &selector.ends_with,
            selector.ends_with.is_empty() || any(&selector.ends_with, &|v| value.ends_with(v)),
        ),
        (
            "NotEquals",
            &selector.not_equals,
            !any(&selector.not_equals, &|v| v == value),
        ),
        (
            "NotStartsWith",
            &selector.not_starts_with,
            !any(&selector.not_starts_with, &|v| value.starts_with(v)),
        ),
        (
            "NotEndsWith",
            &selector.not_ends_with,
            !any(&selector.not_ends_with, &|v| value.ends_with(v)),
        ),
    ];
    checks
        .iter()
        .find(|(_, _, holds)| !holds)
        .map(|(op, values, _)| {
            format!(
                "{} {op} {} leaves out {value}",
                selector.field,
                values.join(", ")
            )
        })
}
