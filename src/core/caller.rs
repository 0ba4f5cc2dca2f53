//! Caller: who made the failed call, and so who else may retry it.
//!
//! RunTask is called by AWS Batch, Step Functions, EventBridge Scheduler and rules, pipelines
//! and people (aws-facts §12), and some of them retry by themselves: Batch places the job again,
//! a Step Functions `.sync` state's `Retry` decides, Scheduler and rule targets resend a call
//! that got an API error. Rerunning their calls from outside would run a job twice. The record
//! says who called in `userIdentity` (`invokedBy`, the session's role), `sourceIPAddress`, and,
//! more weakly, in `startedBy` and the `aws:` tags, which any caller may set: where the two
//! disagree, `userIdentity` wins.

use serde::{Deserialize, Serialize};

use crate::core::request::RunTaskRequest;

/// Who made a call. (`Other` without a principal is the default: what a hop written before
/// callers were named carries.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Caller {
    /// AWS Batch placing a job.
    Batch,
    /// A Step Functions state (`arn:aws:states:::ecs:runTask`, with or without `.sync`).
    StepFunctions,
    /// An EventBridge Scheduler schedule.
    Scheduler,
    /// An EventBridge rule target.
    EventsRule,
    /// Anyone else: an application, a pipeline, a person.
    Other {
        /// The principal (`userIdentity.arn`), when recorded.
        principal: Option<String>,
    },
}

/// What the record says about who called.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals<'a> {
    /// `userIdentity.arn`.
    pub arn: Option<&'a str>,
    /// `userIdentity.invokedBy`.
    pub invoked_by: Option<&'a str>,
    /// `userIdentity.sessionContext.sessionIssuer.arn`: the role whose session called.
    pub issuer: Option<&'a str>,
    /// `sourceIPAddress`: a service's DNS name when a service called.
    pub source_ip: Option<&'a str>,
}

impl Caller {
    /// The caller of a recorded request: `userIdentity` first, `startedBy` and tags after.
    /// (ecs-rerun's own session is recognised before, by [`crate::core::marks::is_own_session`]: its
    /// records are ignored whatever the rules say.)
    pub fn detect(signals: Signals<'_>, request: &RunTaskRequest) -> Self {
        let by_service = [signals.invoked_by, signals.source_ip]
            .into_iter()
            .flatten()
            .find_map(service);
        if let Some(caller) = by_service {
            return caller;
        }
        if signals
            .issuer
            .is_some_and(|role| role.ends_with("/AWSServiceRoleForBatch"))
        {
            return Self::Batch;
        }
        // `aws:` tags are AWS's own: no other caller can set an `aws:batch:` one.
        let batch_tag = request.tags.iter().flatten().any(|t| {
            t.key
                .as_deref()
                .is_some_and(|k| k.to_ascii_lowercase().starts_with("aws:batch:"))
        });
        if batch_tag {
            return Self::Batch;
        }
        // `startedBy` is free-form: it names the caller only when userIdentity names nobody.
        let started_by = request.started_by.as_deref().unwrap_or("");
        match signals.arn {
            None if started_by == "AWS Step Functions" => Self::StepFunctions,
            None if started_by.starts_with("events-rule/") => Self::EventsRule,
            arn => Self::Other {
                principal: arn.map(str::to_owned),
            },
        }
    }

    /// The name used in rules (`onCaller`), logs, attributes and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::StepFunctions => "step-functions",
            Self::Scheduler => "scheduler",
            Self::EventsRule => "events-rule",
            Self::Other { .. } => "other",
        }
    }

    /// The name with the principal, for a person: `other (arn:aws:iam::1:user/alice)`.
    pub fn describe(&self) -> String {
        match self {
            Self::Other {
                principal: Some(principal),
            } => format!("other ({principal})"),
            _ => self.name().to_owned(),
        }
    }
}

impl Default for Caller {
    fn default() -> Self {
        Self::Other { principal: None }
    }
}

fn service(name: &str) -> Option<Caller> {
    match name {
        "batch.amazonaws.com" => Some(Caller::Batch),
        "states.amazonaws.com" => Some(Caller::StepFunctions),
        "scheduler.amazonaws.com" => Some(Caller::Scheduler),
        "events.amazonaws.com" => Some(Caller::EventsRule),
        _ => None,
    }
}
