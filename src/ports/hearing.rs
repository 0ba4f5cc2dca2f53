//! Hearing: the port through which the self-check asks CloudTrail and EventBridge how they are
//! set, and [`NoHearing`] for runs without AWS.
//!
//! Each method is one describe call and returns plain data; a call that fails returns a
//! [`CallFailure`] naming its IAM action, which [`crate::core::self_check::judge`] reports like
//! any other problem. [`crate::aws::hearing::AwsHearing`] is the AWS adapter.

use std::future::Future;

use crate::core::self_check::{CallFailure, Selectors, TrailSummary};

/// Describes trails and rules.
pub trait Hearing {
    /// Whether it can ask at all; without it, a self-check is skipped, not failed.
    fn enabled(&self) -> bool {
        true
    }

    /// The Region it asks about (the function's).
    fn region(&self) -> &str;

    /// `DescribeTrails`: the trails listed in this Region, shadow and organization trails
    /// included.
    fn trails(&self) -> impl Future<Output = Result<Vec<TrailSummary>, CallFailure>> + Send;

    /// `GetTrailStatus(arn).IsLogging`.
    fn logging(&self, arn: &str) -> impl Future<Output = Result<bool, CallFailure>> + Send;

    /// `GetEventSelectors(arn)`.
    fn selectors(&self, arn: &str) -> impl Future<Output = Result<Selectors, CallFailure>> + Send;

    /// `DescribeRule(name)` on the default bus: its `State`, or `None` if there is no such rule.
    fn rule_state(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, CallFailure>> + Send;
}

/// No CloudTrail or EventBridge client (a local dry run): the self-check is skipped.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHearing;

impl NoHearing {
    fn unavailable(action: &'static str) -> CallFailure {
        CallFailure {
            action,
            code: "Unavailable".to_owned(),
            message: "no AWS client in this run".to_owned(),
        }
    }
}

impl Hearing for NoHearing {
    fn enabled(&self) -> bool {
        false
    }

    fn region(&self) -> &str {
        "(no Region)"
    }

    async fn trails(&self) -> Result<Vec<TrailSummary>, CallFailure> {
        Err(Self::unavailable("cloudtrail:DescribeTrails"))
    }

    async fn logging(&self, _arn: &str) -> Result<bool, CallFailure> {
        Err(Self::unavailable("cloudtrail:GetTrailStatus"))
    }

    async fn selectors(&self, _arn: &str) -> Result<Selectors, CallFailure> {
        Err(Self::unavailable("cloudtrail:GetEventSelectors"))
    }

    async fn rule_state(&self, _name: &str) -> Result<Option<String>, CallFailure> {
        Err(Self::unavailable("events:DescribeRule"))
    }
}
