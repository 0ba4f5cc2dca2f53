//! Decode: raw event JSON to a validated [`FailedRunTask`], or the reason it is none of our business.
//!
//! Tolerant of what CloudTrail really sends (absent and `null` fields, a redacted environment,
//! `"omitted": true`), strict about what it cannot make sense of: a field of the wrong type is a
//! [`DecodeError`] naming the field, so the event lands in the dead-letter queue instead of being
//! dropped. A request with fields these types do not know is decoded, but marked as not
//! replayable ([`FailedRunTask::replay_blocker`]): replaying it without them would run a
//! different job.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::caller::{Caller, Signals};
use crate::event::{
    CLOUDTRAIL_DETAIL_TYPE, CloudTrailRecord, ECS_EVENT_SOURCE, Envelope, PlacementFailure,
};
use crate::marks;
use crate::request::{RunTaskRequest, prune_nulls};

/// A `RunTask` call that failed, as far as CloudTrail recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedRunTask {
    /// Who called, when, and with what request: what outlives decoding.
    pub origin: Origin,
    /// `userIdentity.arn` alone: the session that made the call.
    pub caller_arn: Option<String>,
    /// How it failed.
    pub failure: Failure,
    /// ARNs of the tasks that did start, as far as recorded: a look-up must not count them again.
    pub started_arns: Vec<String>,
    /// Why this request cannot be replayed faithfully, if it cannot.
    pub replay_blocker: Option<String>,
}

/// What a notification and a report need of the original record, long after it was decoded:
/// small enough to travel with its episode through the delay queue (no failures list).
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct Origin {
    /// CloudTrail `eventID`: the key of the record (tracing, notifications).
    pub event_id: String,
    /// Account the call was made in.
    pub account: String,
    /// Region the call was made in.
    pub region: String,
    /// When the call completed, as CloudTrail wrote it.
    pub event_time: Option<String>,
    /// The same instant, parsed: the age of the record and the earliest a retry could start.
    pub recorded_at: Option<std::time::SystemTime>,
    /// ARN of the caller (`userIdentity.arn`), or the AWS service that called.
    pub caller: Option<String>,
    /// Who that is: Batch, Step Functions, Scheduler, a rule, or someone else.
    #[serde(default)]
    pub called_by: Caller,
    /// The request as recorded.
    pub request: RunTaskRequest,
    /// Tasks that did start (`responseElements.tasks`).
    pub started: u32,
}

/// The two ways a `RunTask` call fails.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// HTTP 200 with `failures[]`: some or all tasks could not be placed.
    Placement(Vec<PlacementFailure>),
    /// The call raised an exception (`errorCode`).
    Api {
        /// Exception name, e.g. `ThrottlingException`.
        code: String,
        /// Exception message.
        message: String,
    },
}

/// What decoding found.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A failed `RunTask` call to act on.
    Failed(Box<FailedRunTask>),
    /// An event ecs-rerun does not act on, and why.
    Ignored(Ignored),
}

/// Why an event is ignored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Ignored {
    /// Not a CloudTrail API-call event.
    #[error(
        "not a CloudTrail API-call event (detail-type {detail_type:?}, source {event_source:?})"
    )]
    NotCloudTrail {
        /// `detail-type` of the event.
        detail_type: String,
        /// `source` of the event.
        event_source: String,
    },
    /// A CloudTrail record of another API call.
    #[error(
        "not an ECS RunTask call (eventSource {}, eventName {})",
        event_source.as_deref().unwrap_or("absent"),
        name.as_deref().unwrap_or("absent")
    )]
    NotRunTask {
        /// `eventSource` of the record.
        event_source: Option<String>,
        /// `eventName` of the record.
        name: Option<String>,
    },
    /// The call succeeded: no `errorCode` and no `failures`.
    #[error("RunTask did not fail (no errorCode, no failures)")]
    Succeeded,
    /// Every requested task started although `failures` is not empty.
    #[error("all {requested} requested task(s) started; the failures were for other candidates")]
    AllStarted {
        /// Requested count.
        requested: i32,
    },
    /// A retry issued by ecs-rerun itself: its own invocation handles the outcome.
    #[error(
        "this RunTask is ecs-rerun's own retry ({marker}); the invocation that issued it handles it"
    )]
    OwnRetry {
        /// What gave it away (tag or token).
        marker: String,
    },
    /// A call made by this function's own Lambda session, such as its exact replay of an
    /// API-error record, which carries neither tag nor token prefix.
    #[error(
        "this RunTask was made by ecs-rerun's own session ({arn}); the invocation that made it handles it"
    )]
    OwnSession {
        /// `userIdentity.arn` of the record.
        arn: String,
    },
    /// The event comes from an account ecs-rerun does not serve.
    #[error(
        "event from account {account}, which is neither this function's nor in ECS_RERUN_ALLOWED_ACCOUNTS"
    )]
    ForeignAccount {
        /// The event's account.
        account: String,
    },
}

/// Input that cannot be decoded; the message names the field and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// A field has the wrong type or shape.
    #[error("invalid event: field `{path}`: {problem}")]
    Invalid {
        /// JSON path of the field.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A field ecs-rerun cannot work without is absent.
    #[error("invalid event: field `{0}` is missing or null")]
    Missing(&'static str),
}

/// Decodes one EventBridge event. It takes the event by value so that decoding moves the
/// record's strings instead of copying them.
pub fn decode(event: Value) -> Result<Decoded, DecodeError> {
    let envelope: Envelope = parse(event, "")?;
    if envelope.detail_type != CLOUDTRAIL_DETAIL_TYPE || envelope.source != "aws.ecs" {
        return Ok(Decoded::Ignored(Ignored::NotCloudTrail {
            detail_type: envelope.detail_type,
            event_source: envelope.source,
        }));
    }
    let record: CloudTrailRecord = parse(envelope.detail, "detail.")?;
    if record.event_source.as_deref() != Some(ECS_EVENT_SOURCE)
        || record.event_name.as_deref() != Some("RunTask")
    {
        return Ok(Decoded::Ignored(Ignored::NotRunTask {
            event_source: record.event_source,
            name: record.event_name,
        }));
    }

    let raw_request = record
        .request_parameters
        .map(prune_nulls)
        .unwrap_or(Value::Null);
    let request: RunTaskRequest = if raw_request.is_null() {
        RunTaskRequest::default()
    } else {
        parse(&raw_request, "detail.requestParameters.")?
    };
    if let Some(marker) = marks::own_retry_marker(&request) {
        return Ok(Decoded::Ignored(Ignored::OwnRetry { marker }));
    }

    let response = record.response_elements.unwrap_or_default();
    let failure = match record.error_code {
        Some(code) => Failure::Api {
            code,
            message: record.error_message.unwrap_or_default(),
        },
        None => match response.failures {
            Some(failures) if !failures.is_empty() => Failure::Placement(failures),
            _ => return Ok(Decoded::Ignored(Ignored::Succeeded)),
        },
    };

    let mut blockers = Vec::new();
    let started = match (&failure, &response.tasks) {
        (Failure::Api { .. }, _) => 0,
        (Failure::Placement(_), Some(tasks)) if response.omitted != Some(true) => tasks.len(),
        (Failure::Placement(_), _) => {
            blockers.push(
                "CloudTrail omitted responseElements.tasks, so how many tasks started is unknown"
                    .to_owned(),
            );
            0
        }
    };
    let started = u32::try_from(started).unwrap_or(u32::MAX);
    let started_arns: Vec<String> = response
        .tasks
        .iter()
        .flatten()
        .filter_map(|t| t.task_arn.clone())
        .collect();
    let requested = request.requested_count();
    if matches!(failure, Failure::Placement(_))
        && blockers.is_empty()
        && i64::from(started) >= i64::from(requested)
    {
        return Ok(Decoded::Ignored(Ignored::AllStarted { requested }));
    }

    if raw_request.is_null() {
        blockers.push("CloudTrail recorded no requestParameters".to_owned());
    } else if request.task_definition.is_none() {
        blockers.push("requestParameters has no taskDefinition".to_owned());
    }
    let understood = prune_nulls(serde_json::to_value(&request).unwrap_or(Value::Null));
    let mut unknown = Vec::new();
    unknown_paths(
        &raw_request,
        &understood,
        &Path::Root("requestParameters"),
        &mut unknown,
    );
    if !unknown.is_empty() {
        blockers.push(format!(
            "the request has fields ecs-rerun cannot replay ({}); \
             CloudTrail marks truncated fields `omitted`",
            unknown.join(", ")
        ));
    }

    let event_id = record
        .event_id
        .ok_or(DecodeError::Missing("detail.eventID"))?;
    let identity = record.user_identity.unwrap_or_default();
    let called_by = Caller::detect(
        Signals {
            arn: identity.arn.as_deref(),
            invoked_by: identity.invoked_by.as_deref(),
            issuer: identity
                .session_context
                .as_ref()
                .and_then(|c| c.session_issuer.as_ref())
                .and_then(|i| i.arn.as_deref()),
            source_ip: record.source_ip_address.as_deref(),
        },
        &request,
    );
    let recorded_at = record
        .event_time
        .as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(std::time::SystemTime::from)
                .map_err(|e| DecodeError::Invalid {
                    path: "detail.eventTime".to_owned(),
                    problem: format!("{t:?} is not an ISO-8601 time: {e}"),
                })
        })
        .transpose()?;
    Ok(Decoded::Failed(Box::new(FailedRunTask {
        origin: Origin {
            event_id,
            account: envelope
                .account
                .or(record.recipient_account_id)
                .ok_or(DecodeError::Missing("account"))?,
            region: envelope
                .region
                .or(record.aws_region)
                .ok_or(DecodeError::Missing("region"))?,
            event_time: record.event_time,
            recorded_at,
            caller: identity.arn.clone().or(identity.invoked_by),
            called_by,
            request,
            started,
        },
        caller_arn: identity.arn,
        failure,
        started_arns,
        replay_blocker: (!blockers.is_empty()).then(|| blockers.join("; ")),
    })))
}

fn parse<'de, D, T>(value: D, prefix: &str) -> Result<T, DecodeError>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        DecodeError::Invalid {
            path: format!("{prefix}{}", if path == "." { "" } else { &path })
                .trim_end_matches('.')
                .to_owned(),
            problem: err.into_inner().to_string(),
        }
    })
}

/// A JSON path, built on the stack and only formatted when a field turns out to be unknown.
enum Path<'a> {
    Root(&'static str),
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Root(name) => f.write_str(name),
            Self::Key(parent, key) => write!(f, "{parent}.{key}"),
            Self::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Collects the paths present in `original` but not in `understood`.
fn unknown_paths(original: &Value, understood: &Value, path: &Path<'_>, out: &mut Vec<String>) {
    match (original, understood) {
        (Value::Object(orig), Value::Object(known)) => {
            for (key, value) in orig {
                let here = Path::Key(path, key);
                match known.get(key) {
                    Some(k) => unknown_paths(value, k, &here, out),
                    None => out.push(here.to_string()),
                }
            }
        }
        (Value::Array(orig), Value::Array(known)) => {
            for (i, value) in orig.iter().enumerate() {
                let here = Path::Index(path, i);
                match known.get(i) {
                    Some(k) => unknown_paths(value, k, &here, out),
                    None => out.push(here.to_string()),
                }
            }
        }
        (a, b) if a == b => {}
        _ => out.push(path.to_string()),
    }
}
