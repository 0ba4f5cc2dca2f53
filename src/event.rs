//! The wire format: an EventBridge event whose `detail` is a CloudTrail record of an ECS API call.
//!
//! These types mirror the JSON as it arrives and trust nothing: every field is optional, because
//! CloudTrail may omit any of them or set them to `null`. [`crate::decode`] turns them into
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
    /// Set only when the call raised an exception.
    pub error_code: Option<String>,
    /// Message of that exception.
    pub error_message: Option<String>,
    /// The request, kept raw so that [`crate::decode`] can spot fields it does not understand.
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
