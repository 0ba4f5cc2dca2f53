//! ecs-rerun: an AWS Lambda that re-runs Amazon ECS tasks whose launch failed.
//!
//! EventBridge sends it the CloudTrail record of every `RunTask` call that failed: placement
//! failures (`failures[]`: `AGENT`, `RESOURCE:MEMORY`, Fargate capacity, ...) and API errors
//! (`ThrottlingException`, `ServerException`, ...). For a transient failure it re-issues the
//! same call, every parameter of it, for the tasks that did not start, tagged with an attempt
//! counter and sent with a token derived from the original call, so that no record, delivery or
//! caller's retry can make one failed launch run twice; up to three times, each failure class
//! on its own schedule. Otherwise, or when the attempts run out, it publishes one clear
//! notification to an SNS topic.
//!
//! Opt-in, with a DynamoDB table: it also stores the request of every successful `RunTask`
//! record, so that a task ECS accepted but then stopped with `TaskFailedToStart` (or, where a
//! rule says so, a Spot interruption) is run again with exactly that request, and so that each
//! episode notifies once however often its event is delivered.
//!
//! # Layout
//! - [`core`]: pure, no I/O. The wire formats ([`core::event`], [`core::task_change`]);
//!   [`core::decode`] (a failed or successful `RunTask` record) and [`core::guard`] (a task that
//!   failed to start, with its stored request) both end in a [`core::decode::FailedRunTask`];
//!   [`core::org`] says in which account and Region it is rerun; [`core::classify`] (retry,
//!   notify or leave, with a rule's [`core::fallback`]); [`core::plan`] (the retry episode, step
//!   by step); [`core::outcome`] (how it ended); [`core::message`] and [`core::chat`] (the
//!   notification). Beside the flow, [`core::self_check`] judges whether failed calls can reach
//!   the function at all.
//! - [`ports`]: the traits the handler meets the world through (launch, notify, delay queue,
//!   store, clock, the self-check's describe calls), with in-memory adapters.
//! - [`aws`]: their AWS SDK adapters (ECS per account and Region, SNS, SQS, DynamoDB,
//!   CloudTrail and EventBridge) and the shared configuration.
//! - [`handler`]: routes each kind of event to the one plan-and-launch path
//!   (`handler/episode.rs`); `handler/started.rs` stores successful launches,
//!   `handler/stopped.rs` handles tasks that failed to start, `handler/self_check.rs` the
//!   scheduled check. [`config`] reads the `ECS_RERUN_*` variables; [`metrics`] turns reports
//!   into CloudWatch metrics.
//! - Entry points (`src/bin/`): `ecs-rerun` (the Lambda bootstrap) and `ecs-rerun-replay` (the
//!   same handler over event files, for local runs).

pub mod aws;
pub mod config;
pub mod core;
pub mod handler;
pub mod metrics;
pub mod ports;

/// The account ID in a Lambda function ARN (`arn:aws:lambda:REGION:ACCOUNT:function:NAME`).
pub fn account_of_arn(arn: &str) -> Option<String> {
    arn.split(':')
        .nth(4)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
}
