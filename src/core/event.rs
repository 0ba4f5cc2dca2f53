//! The wire format: an EventBridge event whose `detail` is a CloudTrail record of an ECS API call.
//!
//! These types mirror the JSON as it arrives and trust nothing: every field is optional, because
//! CloudTrail may omit any of them or set them to `null`. [`crate::core::decode`] turns them into
//! validated types. The envelope is `aws_lambda_events`' EventBridge type; its CloudTrail type
//! lacks `errorCode`, so the record is ours.

use serde::Deserialize;
use serde_json::Value;

/// The EventBridge envelope with the record still as raw JSON.
pub type Envelope = aws_lambda_events::event::eventbridge::EventBridgeEvent<Value>;

/// `detail-type` of CloudTrail API-call events.
pub const CLOUDTRAIL_DETAIL_TYPE: &str = "AWS API Call via CloudTrail";
/// `eventSource` of ECS API calls.
pub const ECS_EVENT_SOURCE: &str = "ecs.amazonaws.com";
/// `source` of the events ECS sends to EventBridge, CloudTrail records of ECS calls included.
pub const ECS_SOURCE: &str = "aws.ecs";

/// A CloudTrail record (`detail`), limited to what ecs-rerun reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CloudTrailRecord {
    /// `ecs.amazonaws.com` for ECS calls.
    pub event_source: Option<String>,
    /// The API operation, e.g. `RunTask`.
    pub event_name: Option<String>,
    /// CloudTrail's unique ID of this record: the deduplication key.
    #[serde(rename = "eventID")]
    pub event_id: Option<String>,
    /// When the call completed (ISO-8601).
    pub event_time: Option<String>,
    /// Region of the call.
    pub aws_region: Option<String>,
    /// Account that received the call.
    pub recipient_account_id: Option<String>,
    /// Who made the call.
    pub user_identity: Option<UserIdentity>,
    /// The caller's IP address, or a service's DNS name when a service called.
    #[serde(rename = "sourceIPAddress")]
    pub source_ip_address: Option<String>,
    /// Set only when the call raised an exception.
    pub error_code: Option<String>,
    /// Message of that exception.
    pub error_message: Option<String>,
    /// The request, kept raw so that [`crate::core::decode`] can spot fields it does not understand.
    pub request_parameters: Option<Value>,
    /// The response; `null` when `errorCode` is set.
    pub response_elements: Option<RunTaskResponse>,
}

/// The caller of an API call (only what a notification shows).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserIdentity {
    /// `AssumedRole`, `IAMUser`, `Root`, ...
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// ARN of the caller.
    pub arn: Option<String>,
    /// AWS service that called on the user's behalf, e.g. `events.amazonaws.com`.
    pub invoked_by: Option<String>,
    /// The session's context: which role it is a session of.
    pub session_context: Option<SessionContext>,
}

/// `userIdentity.sessionContext` (only what ecs-rerun reads).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SessionContext {
    /// The role (or user) that issued the session.
    pub session_issuer: Option<SessionIssuer>,
}

/// `userIdentity.sessionContext.sessionIssuer`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SessionIssuer {
    /// ARN of the issuing role.
    pub arn: Option<String>,
}

/// `responseElements` of a `RunTask` call.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunTaskResponse {
    /// Tasks that were created.
    pub tasks: Option<Vec<StartedTask>>,
    /// Placement failures.
    pub failures: Option<Vec<PlacementFailure>>,
    /// `true` when CloudTrail truncated the response.
    pub omitted: Option<bool>,
}

/// A task that `RunTask` created (only what ecs-rerun reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StartedTask {
    /// ARN of the task.
    pub task_arn: Option<String>,
}

/// One entry of `failures[]`: why a task could not be placed.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PlacementFailure {
    /// Resource that was considered (a container instance on EC2), often absent on Fargate.
    pub arn: Option<String>,
    /// Free text: `AGENT`, `RESOURCE:MEMORY`, `Capacity is unavailable ...`.
    pub reason: Option<String>,
    /// Optional extra text.
    pub detail: Option<String>,
}

/// What an input file held, as EventBridge events.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelopes {
    /// The events, in order.
    pub events: Vec<Value>,
    /// How they were made, when they were not EventBridge events already.
    pub note: Option<String>,
}

/// Reads what an operator may have at hand as EventBridge events: an EventBridge event as is;
/// a bare CloudTrail record (CloudTrail Event history); a `lookup-events` answer (`{"Events":
/// [{"CloudTrailEvent": "<JSON string>"}]}`) or one of its entries; a trail's log file
/// (`{"Records": [...]}`). CloudTrail records are wrapped as EventBridge would send them
/// (`detail-type` "AWS API Call via CloudTrail", `source` "aws.ecs"); records of other calls
/// than ECS RunTask are left out, and the note says how many.
pub fn envelopes(input: Value) -> Result<Envelopes, String> {
    if input.get("detail-type").is_some() {
        return Ok(Envelopes {
            events: vec![input],
            note: None,
        });
    }
    let (records, from) = if let Some(records) = input.get("Records").and_then(Value::as_array) {
        (records.clone(), "a trail log file")
    } else if let Some(events) = input.get("Events").and_then(Value::as_array) {
        let parsed = events
            .iter()
            .map(lookup_entry)
            .collect::<Result<Vec<_>, _>>()?;
        (parsed, "a lookup-events answer")
    } else if input.get("CloudTrailEvent").is_some() {
        (vec![lookup_entry(&input)?], "a lookup-events entry")
    } else if input.get("eventSource").is_some() {
        (vec![input], "a CloudTrail record")
    } else {
        return Err(
            "neither an EventBridge event (no detail-type) nor a CloudTrail record, a trail log \
             file ({\"Records\": [...]}) or a lookup-events answer ({\"Events\": [...]})"
                .to_owned(),
        );
    };
    let total = records.len();
    let events: Vec<Value> = records
        .into_iter()
        .filter(|r| {
            r.get("eventSource").and_then(Value::as_str) == Some(ECS_EVENT_SOURCE)
                && r.get("eventName").and_then(Value::as_str) == Some("RunTask")
        })
        .map(wrap)
        .collect();
    let note = format!(
        "{} RunTask record(s) of {total} in {from}, wrapped as EventBridge events",
        events.len()
    );
    Ok(Envelopes {
        events,
        note: Some(note),
    })
}

fn lookup_entry(entry: &Value) -> Result<Value, String> {
    let text = entry
        .get("CloudTrailEvent")
        .and_then(Value::as_str)
        .ok_or("a lookup-events entry without a CloudTrailEvent string")?;
    serde_json::from_str(text).map_err(|e| format!("CloudTrailEvent is not JSON: {e}"))
}

/// A CloudTrail record as EventBridge delivers it.
fn wrap(record: Value) -> Value {
    let field = |name: &str| record.get(name).cloned().unwrap_or(Value::Null);
    let account = record
        .get("recipientAccountId")
        .or_else(|| record.pointer("/userIdentity/accountId"))
        .cloned()
        .unwrap_or(Value::Null);
    let id = record
        .get("eventID")
        .and_then(Value::as_str)
        .map_or_else(|| "replayed".to_owned(), |id| format!("replayed-{id}"));
    serde_json::json!({
        "version": "0",
        "id": id,
        "detail-type": CLOUDTRAIL_DETAIL_TYPE,
        "source": "aws.ecs",
        "account": account,
        "time": field("eventTime"),
        "region": field("awsRegion"),
        "resources": [],
        "detail": record,
    })
}
