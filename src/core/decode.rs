//! Decode: raw event JSON to a validated [`FailedRunTask`], or the reason it is none of our business.
//!
//! Tolerant of what CloudTrail really sends (absent and `null` fields, a redacted environment,
//! `"omitted": true`), strict about what it cannot make sense of: a field of the wrong type is a
//! [`DecodeError`] naming the field, so the event lands in the dead-letter queue instead of being
//! dropped. A request with fields these types do not know is decoded, but marked as not
//! replayable ([`FailedRunTask::replay_blocker`]): replaying it without them would run a
//! different job.

use std::time::SystemTime;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::core::caller::{Caller, Signals};
use crate::core::event::{
    CLOUDTRAIL_DETAIL_TYPE, CloudTrailRecord, ECS_EVENT_SOURCE, ECS_SOURCE, Envelope,
    PlacementFailure,
};
use crate::core::marks;
use crate::core::org;
use crate::core::request::{RunTaskRequest, prune_nulls};
use crate::core::self_check;
use crate::core::task_change::{FAILED_TO_START, INTERRUPTED, TASK_CHANGE_DETAIL_TYPE, TaskDetail};

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
    /// `RunTask` calls the job had before (a task that failed to start: its launch's count).
    pub prior_calls: u32,
    /// Why the event's account or Region is not the one CloudTrail recorded the call in, if
    /// it is not ([`crate::core::org::disagreement`]): such a record is not rerun.
    pub misplaced: Option<String>,
}

/// What a notification and a report need of the original record, long after it was decoded:
/// small enough to travel with its episode through the delay queue (no failures list).
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct Origin {
    /// The job's key: the original call's ([`marks::CallMarks::key`]), or for a task that
    /// failed to start, its ARN's. Every token derives from it, and a notification is sent once
    /// per key. (Empty in a hop written before it existed: then the event ID stands in.)
    #[serde(default)]
    pub key: String,
    /// The job's `ecs-rerun:call` tag ([`marks::CallMarks::tag`]), shared by all its reruns.
    #[serde(default)]
    pub call_tag: String,
    /// CloudTrail `eventID` (or the task state change's `id`): the key of the record.
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
    /// The task that failed to start, when this is the rerun of one.
    #[serde(default)]
    pub stopped_task: Option<String>,
}

impl Origin {
    /// The key of the episode: [`Origin::key`], or the event ID in a hop written before keys.
    pub fn episode_key(&self) -> &str {
        if self.key.is_empty() {
            &self.event_id
        } else {
            &self.key
        }
    }
}

/// A `RunTask` call that started its tasks, as CloudTrail recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct StartedRunTask {
    /// Who called, when, and with what request.
    pub origin: Origin,
    /// `userIdentity.arn` alone.
    pub caller_arn: Option<String>,
    /// The tasks it started.
    pub task_arns: Vec<String>,
    /// Why its request could not be replayed faithfully, if it could not.
    pub replay_blocker: Option<String>,
}

/// A task that ECS accepted and then stopped before it ran (`TaskFailedToStart`), or that Spot
/// capacity took away, from its `ECS Task State Change` event. Small, so that a recheck
/// carries it through the delay queue instead of the whole event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct StoppedTask {
    /// The event's `id`.
    pub event_id: String,
    /// Account of the task.
    pub account: String,
    /// Region of the task.
    pub region: String,
    /// The task.
    pub task_arn: String,
    /// Its cluster.
    pub cluster_arn: Option<String>,
    /// The exact revision it was started with: a rerun is pinned to it.
    pub task_definition_arn: Option<String>,
    /// `TaskFailedToStart`, `SpotInterruption` or `TerminationNotice`.
    pub stop_code: String,
    /// `stoppedReason`.
    pub reason: String,
    /// The containers' reasons, `name: reason; ...`.
    pub detail: String,
    /// When it stopped, as ECS wrote it.
    pub stopped_at: Option<String>,
    /// The same instant, parsed.
    pub recorded_at: Option<SystemTime>,
}

impl StoppedTask {
    /// How it failed, for the rules.
    pub fn failure(&self) -> Failure {
        Failure::Stopped {
            stop_code: self.stop_code.clone(),
            reason: self.reason.clone(),
            detail: self.detail.clone(),
        }
    }

    /// The origin of its rerun: the task's own key, time and place, with `request`, caller and
    /// call tag of its launch (or what the event alone says, and none).
    pub fn origin(
        &self,
        request: RunTaskRequest,
        caller: Option<String>,
        called_by: Caller,
        call_tag: String,
    ) -> Origin {
        Origin {
            key: marks::task_key(&self.task_arn),
            call_tag,
            event_id: self.event_id.clone(),
            account: self.account.clone(),
            region: self.region.clone(),
            event_time: self.stopped_at.clone(),
            recorded_at: self.recorded_at,
            caller,
            called_by,
            request,
            started: 0,
            stopped_task: Some(self.task_arn.clone()),
        }
    }
}

/// The ways a launch fails.
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
    /// ECS accepted the task, then stopped it before it ran (or Spot took it away).
    Stopped {
        /// `stopCode`.
        stop_code: String,
        /// `stoppedReason`.
        reason: String,
        /// The containers' reasons.
        detail: String,
    },
}

/// What decoding found.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A failed `RunTask` call to act on.
    Failed(Box<FailedRunTask>),
    /// A `RunTask` call that started every task it asked for: the store keeps its request.
    Started(Box<StartedRunTask>),
    /// A task that stopped before it ran, or one that Spot took away.
    Stopped(Box<StoppedTask>),
    /// The scheduled self-check ([`crate::core::self_check`]): no record at all.
    SelfCheck,
    /// An event ecs-rerun does not act on, and why.
    Ignored(Ignored),
}

/// Why an event is ignored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Ignored {
    /// Neither a CloudTrail API-call event nor an ECS task state change.
    #[error(
        "neither a CloudTrail API-call event nor an ECS task state change (detail-type \
         {detail_type:?}, source {event_source:?})"
    )]
    OtherEvent {
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
    /// The call succeeded but recorded no task to guard, or no store is configured.
    #[error("RunTask did not fail (no errorCode, no failures){0}")]
    Succeeded(&'static str),
    /// A service's task: the service starts a replacement by itself.
    #[error("task of {group}: the service replaces its own tasks")]
    ServiceTask {
        /// `service:NAME`.
        group: String,
    },
    /// A task failed to start, but there is no store to find its launch in.
    #[error(
        "a task failed to start, but no launch store is configured (ECS_RERUN_STORE_TABLE), so \
         its request is unknown: not rerun"
    )]
    NoStore,
    /// A launch the store does not keep: its caller retries by itself.
    #[error("launch by {caller}, which retries its own jobs: not guarded")]
    NotGuarded {
        /// The caller's name.
        caller: &'static str,
    },
    /// A task state change of another kind.
    #[error(
        "task stopped with stopCode {stop_code:?}, not TaskFailedToStart or a Spot interruption"
    )]
    NotFailedToStart {
        /// The event's `stopCode`.
        stop_code: String,
    },
    /// A Spot notice while the task still runs: rerunning now would run two copies at once.
    #[error("task is still {status} ({stop_code}): it is rerun, if at all, once it is STOPPED")]
    NotStoppedYet {
        /// `lastStatus`.
        status: String,
        /// `stopCode`.
        stop_code: String,
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
    // First, and on its own fields only: its input is ours, not an EventBridge envelope.
    if self_check::is_self_check(&event) {
        return Ok(Decoded::SelfCheck);
    }
    let envelope: Envelope = parse(event, "")?;
    match (envelope.source.as_str(), envelope.detail_type.as_str()) {
        (ECS_SOURCE, CLOUDTRAIL_DETAIL_TYPE) => decode_record(envelope),
        (ECS_SOURCE, TASK_CHANGE_DETAIL_TYPE) => decode_task_change(envelope),
        _ => Ok(Decoded::Ignored(Ignored::OtherEvent {
            detail_type: envelope.detail_type,
            event_source: envelope.source,
        })),
    }
}

/// A CloudTrail record of an ECS call: a failed `RunTask`, a successful one, or none of ours.
fn decode_record(envelope: Envelope) -> Result<Decoded, DecodeError> {
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
        Some(code) => Some(Failure::Api {
            code,
            message: record.error_message.unwrap_or_default(),
        }),
        None => response
            .failures
            .filter(|f| !f.is_empty())
            .map(Failure::Placement),
    };

    let mut blockers = Vec::new();
    let started = match (&failure, &response.tasks) {
        (Some(Failure::Api { .. }), _) => 0,
        (_, Some(tasks)) if response.omitted != Some(true) => tasks.len(),
        (Some(_), _) => {
            blockers.push(
                "CloudTrail omitted responseElements.tasks, so how many tasks started is unknown"
                    .to_owned(),
            );
            0
        }
        (None, _) => {
            return Ok(Decoded::Ignored(Ignored::Succeeded(
                ", and recorded no task",
            )));
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
    let all_started = blockers.is_empty() && i64::from(started) >= i64::from(requested);

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
    let recorded_at = parse_time(record.event_time.as_deref(), "detail.eventTime")?;
    let epoch = recorded_at
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok());
    let marks = marks::call_marks(&request, identity.arn.as_deref(), epoch);
    let misplaced = org::disagreement(
        envelope.account.as_deref(),
        envelope.region.as_deref(),
        record.recipient_account_id.as_deref(),
        record.aws_region.as_deref(),
    );
    let origin = Origin {
        key: marks.key,
        call_tag: marks.tag,
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
        stopped_task: None,
    };
    let replay_blocker = (!blockers.is_empty()).then(|| blockers.join("; "));
    match failure {
        Some(failure) if !all_started || matches!(failure, Failure::Api { .. }) => {
            Ok(Decoded::Failed(Box::new(FailedRunTask {
                origin,
                caller_arn: identity.arn,
                failure,
                started_arns,
                replay_blocker,
                prior_calls: 0,
                misplaced,
            })))
        }
        // Failures listed for other candidates while every task started: a success to guard.
        _ => Ok(Decoded::Started(Box::new(StartedRunTask {
            origin,
            caller_arn: identity.arn,
            task_arns: started_arns,
            replay_blocker,
        }))),
    }
}

/// A task state change: a task that stopped before it ran, or one Spot took away.
fn decode_task_change(envelope: Envelope) -> Result<Decoded, DecodeError> {
    let detail: TaskDetail = parse(envelope.detail, "detail.")?;
    let task_arn = detail
        .task_arn
        .or_else(|| envelope.resources.iter().flatten().next().cloned())
        .ok_or(DecodeError::Missing("detail.taskArn"))?;
    let status = detail.last_status.unwrap_or_default();
    let stop_code = detail.stop_code.unwrap_or_default();
    if let Some(service) = detail
        .group
        .as_deref()
        .filter(|g| g.starts_with("service:"))
    {
        return Ok(Decoded::Ignored(Ignored::ServiceTask {
            group: service.to_owned(),
        }));
    }
    if stop_code != FAILED_TO_START && !INTERRUPTED.contains(&stop_code.as_str()) {
        return Ok(Decoded::Ignored(Ignored::NotFailedToStart { stop_code }));
    }
    if status != "STOPPED" {
        return Ok(Decoded::Ignored(Ignored::NotStoppedYet {
            status,
            stop_code,
        }));
    }
    let detail_reasons: Vec<String> = detail
        .containers
        .iter()
        .flatten()
        .filter_map(|c| {
            let reason = c.reason.as_deref()?;
            Some(format!(
                "{}: {reason}",
                c.name.as_deref().unwrap_or("container")
            ))
        })
        .collect();
    let event_id = envelope.id.ok_or(DecodeError::Missing("id"))?;
    let stopped_at = detail.stopped_at.or(envelope.time.map(|t| t.to_rfc3339()));
    Ok(Decoded::Stopped(Box::new(StoppedTask {
        event_id,
        account: envelope.account.ok_or(DecodeError::Missing("account"))?,
        region: envelope.region.ok_or(DecodeError::Missing("region"))?,
        cluster_arn: detail.cluster_arn,
        task_definition_arn: detail.task_definition_arn,
        stop_code,
        reason: detail.stopped_reason.unwrap_or_default(),
        detail: detail_reasons.join("; "),
        recorded_at: parse_time(stopped_at.as_deref(), "detail.stoppedAt")?,
        stopped_at,
        task_arn,
    })))
}

fn parse_time(time: Option<&str>, path: &str) -> Result<Option<SystemTime>, DecodeError> {
    time.map(|t| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(SystemTime::from)
            .map_err(|e| DecodeError::Invalid {
                path: path.to_owned(),
                problem: format!("{t:?} is not an ISO-8601 time: {e}"),
            })
    })
    .transpose()
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
