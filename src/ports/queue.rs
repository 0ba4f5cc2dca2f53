//! Queue: the port that carries an episode through a wait, and its in-memory adapters.
//!
//! [`DelayQueue`] sends a [`crate::core::hop::Hop`] message to be delivered back after a delay.
//! [`crate::aws::sqs::SqsDelayQueue`] is the stack's SQS queue (`ECS_RERUN_DELAY_QUEUE_URL`); [`LocalQueue`]
//! keeps the messages in memory, for the replay command, which plays the queue's part itself;
//! [`NoQueue`] is a deployment without a queue, whose invocations wait themselves.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// Sending to the queue failed: the invocation fails too, so that the step is repeated (same
/// call, same token) instead of the episode being lost.
#[derive(Debug, thiserror::Error)]
#[error(
    "could not send the episode to the delay queue {queue}: {cause}. The invocation fails so \
     that it is retried; check ECS_RERUN_DELAY_QUEUE_URL, sqs:SendMessage and the queue's KMS key"
)]
pub struct QueueError {
    /// The queue.
    pub queue: String,
    /// What went wrong.
    pub cause: String,
}

/// Delivers a message back after a delay.
pub trait DelayQueue {
    /// Whether there is a queue at all; without one, the invocation waits itself.
    fn enabled(&self) -> bool {
        true
    }

    /// Sends `body`, to be delivered after `delay` (at most 15 minutes).
    fn send(
        &self,
        body: &str,
        delay: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// No queue: waits stay in the invocation, bounded by its deadline.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQueue;

impl DelayQueue for NoQueue {
    fn enabled(&self) -> bool {
        false
    }

    async fn send(&self, _body: &str, _delay: Duration) -> Result<(), QueueError> {
        Err(QueueError {
            queue: "(none)".to_owned(),
            cause: "no delay queue is configured".to_owned(),
        })
    }
}

/// Messages kept in memory, taken back by whoever plays the queue (the replay command).
#[derive(Debug, Default)]
pub struct LocalQueue {
    messages: Mutex<VecDeque<(String, Duration)>>,
}

impl LocalQueue {
    /// The oldest message and its delay.
    pub fn pop(&self) -> Option<(String, Duration)> {
        self.messages.lock().ok()?.pop_front()
    }
}

impl DelayQueue for LocalQueue {
    async fn send(&self, body: &str, delay: Duration) -> Result<(), QueueError> {
        let mut messages = self.messages.lock().map_err(|_| QueueError {
            queue: "local".to_owned(),
            cause: "the local queue's lock was poisoned".to_owned(),
        })?;
        messages.push_back((body.to_owned(), delay));
        Ok(())
    }
}
