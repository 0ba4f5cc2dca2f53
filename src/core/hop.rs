//! Hop: an episode in flight between two calls, as the delay queue carries it.
//!
//! When the next call is due later than a few seconds, the invocation does not sleep: it sends
//! the episode's state to an SQS queue with `DelaySeconds` = the wait, and returns. The queue
//! delivers it back to the function when the wait is over, and the next call is made from the
//! state the message carries: the same call, with the same token, however often SQS delivers
//! it. The message holds what the next call needs and what the notification will say, never the
//! full failures list, so it stays far below SQS's 256 KiB.
//!
//! The same queue carries a [`Recheck`]: a stopped task whose launch the store does not know
//! yet, to be looked for again (CloudTrail is later than ECS's own events).
//!
//! A hop trusts the queue's delay: it carries the wait still to go (SQS delays at most 15
//! minutes, so a longer wait is chained), never a due time compared against a clock. Only
//! the plan looks at the clock, to stop an episode that runs too far behind its schedule.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::decode::{Origin, StoppedTask};
use crate::core::plan::episode::Episode;

/// The longest delay SQS accepts for one message.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// The format of [`Hop`] messages; a message of another version is refused, not guessed at.
pub const VERSION: u32 = 1;

/// One episode, between two calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hop {
    /// [`VERSION`].
    pub version: u32,
    /// The original record, as the notification needs it.
    pub origin: Origin,
    /// Where the episode stands.
    pub episode: Episode,
    /// Wait still to go after this delivery, in milliseconds (a chained wait).
    pub wait_left_ms: u64,
}

/// A message that is not a hop of this version.
#[derive(Debug, thiserror::Error)]
#[error(
    "not an ecs-rerun delay-queue message ({0}); it stays in the queue and lands in its \
     dead-letter queue after the configured receives"
)]
pub struct HopError(String);

impl HopError {
    /// A message that is not what its kind promises: `why` says what is wrong.
    pub fn new(why: String) -> Self {
        Self(why)
    }
}

impl Hop {
    /// The hop that carries `episode` through `wait`, and the delay to send it with: the whole
    /// wait, rounded up to a whole second, or the first 15 minutes of it.
    pub fn new(origin: Origin, episode: Episode, wait: Duration) -> (Self, Duration) {
        let delay = leg(wait);
        let hop = Self {
            version: VERSION,
            origin,
            episode,
            wait_left_ms: millis(wait.saturating_sub(delay)),
        };
        (hop, delay)
    }

    /// The next leg of a chained wait, if any of it is left.
    pub fn next_leg(mut self) -> Option<(Self, Duration)> {
        let left = Duration::from_millis(self.wait_left_ms);
        if left.is_zero() {
            return None;
        }
        let delay = leg(left);
        self.wait_left_ms = millis(left.saturating_sub(delay));
        Some((self, delay))
    }

    /// The message body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a message body.
    pub fn from_json(body: &str) -> Result<Self, HopError> {
        read(parse(body)?)
    }
}

/// A stopped task to look for again later: the store did not know its launch yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recheck {
    /// [`VERSION`].
    pub version: u32,
    /// The task, as its state change said.
    pub recheck: StoppedTask,
    /// Looks made so far.
    pub tries: u32,
}

/// A delay-queue message.
#[derive(Debug, Clone)]
pub enum Message {
    /// An episode between two calls.
    Hop(Box<Hop>),
    /// A stopped task to look for again.
    Recheck(Box<Recheck>),
}

impl Recheck {
    /// The message body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Message {
    /// Reads a message body: a [`Recheck`] has a `recheck` field, anything else must be a [`Hop`].
    pub fn from_json(body: &str) -> Result<Self, HopError> {
        let value = parse(body)?;
        if value.get("recheck").is_some() {
            read(value).map(|recheck| Self::Recheck(Box::new(recheck)))
        } else {
            read(value).map(|hop| Self::Hop(Box::new(hop)))
        }
    }
}

fn parse(body: &str) -> Result<Value, HopError> {
    serde_json::from_str(body).map_err(|e| HopError(e.to_string()))
}

/// A message of this [`VERSION`], refused before its fields are read when of another.
fn read<T: DeserializeOwned>(value: Value) -> Result<T, HopError> {
    match value.get("version").and_then(Value::as_u64) {
        Some(version) if version == u64::from(VERSION) => {
            serde_json::from_value(value).map_err(|e| HopError(e.to_string()))
        }
        version => Err(HopError(format!(
            "version {}, this function reads version {VERSION}",
            version.map_or_else(|| "missing".to_owned(), |v| v.to_string())
        ))),
    }
}

/// SQS delays whole seconds: round up, so that no call goes out before its wait is over.
fn leg(wait: Duration) -> Duration {
    let whole = Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
    whole.min(MAX_DELAY)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
