//! ecs-rerun: an AWS Lambda that re-runs Amazon ECS tasks whose launch failed.
//!
//! An EventBridge rule sends it the CloudTrail record of every `RunTask` call that failed:
//! placement failures (`failures[]`: `AGENT`, `RESOURCE:MEMORY`, Fargate capacity, ...) and API
//! errors (`ThrottlingException`, `ServerException`, ...). For a transient failure it re-issues
//! the same call, every parameter of it, for the tasks that did not start, tagged with an
//! attempt counter and sent with a token derived from the original call, so that no record,
//! delivery or caller's retry can make one failed launch run twice; up to three times with
//! jittered backoff. Otherwise, or when the attempts run out, it publishes one clear
//! notification to an SNS topic.
//!
//! # Layout
//! The data flows through the modules in this order:
//!
//! - [`event`]: the wire format (EventBridge envelope, CloudTrail record), all optional.
//! - [`decode`]: validates it into a [`decode::FailedRunTask`], or says why it is ignored; it
//!   names the [`caller`] (Batch, Step Functions, Scheduler, a rule, someone else).
//! - [`classify`]: the rule table: retry, notify, or leave it to a caller that retries by itself,
//!   for each failure reason or error code, caller, account, cluster and family.
//! - [`plan`]: the pure retry episode: what to launch, when, and when to stop. It marks its
//!   calls with [`marks`] (tokens, tags, its own session) and, for an API-error record without a
//!   token, first asks [`lookup`] whether the caller's own retry already started the job.
//! - [`schedule`]: how long each failure class waits before the next call.
//! - [`hop`]: an episode between two calls, as the delay queue carries it.
//! - [`launch`] / [`notify`] / [`queue`] / [`clock`]: the ports to ECS, SNS, the SQS delay queue
//!   and time, with their AWS adapters.
//! - [`message`]: the notification a person reads; [`redact`] keeps secrets out of it.
//! - [`handler`]: carries out the plan through the ports, one call per invocation when a wait
//!   is long (the rest of the episode travels through the delay queue); [`metrics`] turns its report into
//!   CloudWatch metrics; [`config`] reads the `ECS_RERUN_*` variables; [`setup`] loads the AWS
//!   configuration both binaries share.
//!
//! [`request`] is the shared vocabulary: the `RunTask` parameters as CloudTrail records them.
//! Everything up to [`message`] is pure and tested with fixtures; only the adapters do I/O.
//! The binaries are thin: `ecs-rerun` (the Lambda bootstrap) and `ecs-rerun-replay` (the same
//! handler over event files, for local runs).

pub mod caller;
pub mod classify;
pub mod clock;
pub mod config;
pub mod decode;
pub mod event;
pub mod handler;
pub mod hop;
pub mod launch;
pub mod lookup;
pub mod marks;
pub mod message;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod queue;
pub mod redact;
pub mod request;
pub mod schedule;
pub mod setup;

/// The account ID in a Lambda function ARN (`arn:aws:lambda:REGION:ACCOUNT:function:NAME`).
pub fn account_of_arn(arn: &str) -> Option<String> {
    arn.split(':')
        .nth(4)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
}
