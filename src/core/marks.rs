//! Marks: how ecs-rerun signs what it launches, and how it recognises its own calls.
//!
//! Three marks, each with its own job:
//! - the `clientToken` of every own attempt, derived from the *call* (not the record), so that
//!   every CloudTrail record of one SDK call and every delivery of each record lead to the same
//!   tokens, and ECS starts the job once ([`call_marks`], [`own_token`]);
//! - the tags `ecs-rerun:attempt` and `ecs-rerun:call` on the tasks it starts, and
//!   `ecs-rerun:fallback` on those a capacity fallback moved ([`retry_tags`]);
//! - the Lambda session that makes its calls, which CloudTrail names after the function
//!   ([`is_own_session`]): the only mark on the exact replay of an API-error record, which
//!   carries neither tag nor token prefix.
//!
//! [`crate::core::decode`] uses the tag and the prefix to recognise records to ignore; [`crate::core::plan`]
//! applies them. Neither owns them, so both depend on this module and not on each other.

use sha2::{Digest, Sha256};

use crate::core::request::{RunTaskRequest, Tag};

/// Tag key carrying the attempt number (1..N) on every task ecs-rerun launches with its own token.
pub const ATTEMPT_TAG: &str = "ecs-rerun:attempt";
/// Tag key naming the original call (its recorded `clientToken`, or a digest of the call).
pub const CALL_TAG: &str = "ecs-rerun:call";
/// Tag key on a task a capacity fallback moved: `<from>:<to>`, e.g. `FARGATE_SPOT:FARGATE`.
pub const FALLBACK_TAG: &str = "ecs-rerun:fallback";
/// Prefix of every `clientToken` ecs-rerun makes up.
pub const TOKEN_PREFIX: &str = "ecs-rerun-";
/// ECS accepts at most 50 user tags per task.
pub const MAX_TAGS: usize = 50;
/// Records of one SDK call without a `clientToken` agree on their key when their `eventTime`s
/// fall in the same window of this many seconds (see [`call_marks`]).
pub const SIBLING_WINDOW_SECS: i64 = 60;

/// What identifies one call: its key and the value of its [`CALL_TAG`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallMarks {
    /// The key from which every own token derives.
    ///
    /// With a recorded `clientToken` it is (cluster, token): ECS's own idempotency key, shared
    /// by every try the caller's SDK made, so a throttled record and the final answer of the same
    /// call agree. Without one (SDKs before 2023-11), the records of one call still share the
    /// request, the caller and (within seconds) the time, so the key is a digest of those, with
    /// the time cut to a [`SIBLING_WINDOW_SECS`] window. The README ("Never twice") says what
    /// risk that leaves.
    pub key: String,
    /// The value of the [`CALL_TAG`]: the recorded token when it fits ECS's tag alphabet; else
    /// a digest of the cluster, the request and the caller, *without* the time window of the
    /// key, so that records of one call on either side of a window boundary still recognise
    /// each other's tasks (see [`crate::core::lookup::same_job`]).
    pub tag: String,
}

/// The marks of the call `request` made by `caller`, recorded at `event_epoch`. The request is
/// serialised at most once, for the digests of a call without a usable token.
pub fn call_marks(
    request: &RunTaskRequest,
    caller: Option<&str>,
    event_epoch: Option<i64>,
) -> CallMarks {
    let cluster = request.cluster_name();
    let token = request.client_token.as_deref();
    let tag_token = token.filter(|t| {
        t.len() <= 256
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c))
    });
    let body = (token.is_none() || tag_token.is_none()).then(|| {
        let mut unsigned = request.clone();
        unsigned.client_token = None;
        serde_json::to_string(&unsigned).unwrap_or_default()
    });
    let body = body.as_deref().unwrap_or_default();
    let caller = caller.unwrap_or("");
    let key = match token {
        Some(token) => format!("{cluster}|token|{token}"),
        None => {
            let window = event_epoch.map_or(0, |t| t.div_euclid(SIBLING_WINDOW_SECS));
            format!(
                "{cluster}|call|{caller}|{window}|{}",
                hex(&Sha256::digest(body), 16)
            )
        }
    };
    let tag = match tag_token {
        Some(token) => token.to_owned(),
        None => format!(
            "sha256:{}",
            hex(&Sha256::digest(format!("{cluster}|{caller}|{body}")), 16)
        ),
    };
    CallMarks { key, tag }
}

/// The key of a task that failed to start: its rerun's tokens and its notification derive
/// from it (the ARN itself is longer than a token may be).
pub fn task_key(task_arn: &str) -> String {
    format!("task|{task_arn}")
}

/// The token of own attempt `attempt` (1-based) of the call `key`: the same call and attempt
/// give the same token, whichever record or delivery led to it.
pub fn own_token(key: &str, attempt: u32) -> String {
    format!(
        "{TOKEN_PREFIX}{}",
        hex(&Sha256::digest(format!("{key}#{attempt}")), 20)
    )
}

/// The original user tags (without the reserved `aws:` ones, which RunTask refuses, and without
/// stale `ecs-rerun:` ones), plus the attempt and call tags (and, on a fallback attempt, the
/// fallback tag) as far as the 50-tag limit allows. When they do not fit, the user's tags win
/// and the token prefix still marks the task.
pub fn retry_tags(
    original: Option<&[Tag]>,
    call: &str,
    attempt: u32,
    fallback: Option<String>,
) -> Option<Vec<Tag>> {
    let mut tags = user_tags(original);
    let fallback = fallback.map(|value| (FALLBACK_TAG, value));
    for (key, value) in [
        (ATTEMPT_TAG, attempt.to_string()),
        (CALL_TAG, call.to_owned()),
    ]
    .into_iter()
    .chain(fallback)
    {
        if tags.len() < MAX_TAGS {
            tags.push(Tag {
                key: Some(key.to_owned()),
                value: Some(value),
            });
        }
    }
    (!tags.is_empty()).then_some(tags)
}

/// The tags a user may set: the recorded ones without `aws:` (reserved) and `ecs-rerun:` keys.
pub fn user_tags(original: Option<&[Tag]>) -> Vec<Tag> {
    original
        .unwrap_or_default()
        .iter()
        .filter(|t| {
            let key = t.key.as_deref().unwrap_or("").to_ascii_lowercase();
            !key.starts_with("aws:") && !key.starts_with("ecs-rerun:")
        })
        .cloned()
        .collect()
}

/// What shows that a request was issued by ecs-rerun: its attempt tag, or, should tags have been
/// left off, its token prefix.
pub fn own_retry_marker(request: &RunTaskRequest) -> Option<String> {
    let tagged = request
        .tags
        .iter()
        .flatten()
        .find(|t| t.key.as_deref() == Some(ATTEMPT_TAG));
    if let Some(tag) = tagged {
        return Some(format!(
            "tag {ATTEMPT_TAG}={}",
            tag.value.as_deref().unwrap_or("")
        ));
    }
    request
        .client_token
        .as_deref()
        .filter(|t| t.starts_with(TOKEN_PREFIX))
        .map(|_| format!("clientToken prefix {TOKEN_PREFIX}"))
}

/// Whether `caller_arn` is the function's own Lambda session:
/// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/FUNCTION_NAME` (Lambda names the execution role's
/// session after the function).
pub fn is_own_session(caller_arn: &str, function_name: &str) -> bool {
    assumed_role(caller_arn).is_some_and(|(_role, session)| session == function_name)
}

/// The role and session of an assumed-role caller,
/// `arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION`; `None` for any other principal.
pub fn assumed_role(caller_arn: &str) -> Option<(&str, &str)> {
    let rest = caller_arn.strip_prefix("arn:")?;
    let mut parts = rest.splitn(5, ':');
    let (Some(_partition), Some("sts"), Some(_region), Some(_account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let mut segments = resource.split('/');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some("assumed-role"), Some(role), Some(session), None) => Some((role, session)),
        _ => None,
    }
}

/// The first `take` bytes of `bytes` in lowercase hex.
pub(crate) fn hex(bytes: &[u8], take: usize) -> String {
    bytes
        .iter()
        .take(take)
        .map(|b| format!("{b:02x}"))
        .collect()
}
