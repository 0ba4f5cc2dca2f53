//! The delay queue on Amazon SQS: `SendMessage` with `DelaySeconds`.

use std::time::Duration;

use crate::ports::queue::{DelayQueue, QueueError};

/// The stack's SQS queue.
#[derive(Debug, Clone)]
pub struct SqsDelayQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsDelayQueue {
    /// Wraps a client built once at start-up.
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> Self {
        Self { client, url }
    }
}

impl DelayQueue for SqsDelayQueue {
    async fn send(&self, body: &str, delay: Duration) -> Result<(), QueueError> {
        let seconds = i32::try_from(delay.as_secs().min(900)).unwrap_or(900);
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(seconds)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| QueueError {
                queue: self.url.clone(),
                cause: aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
            })
    }
}
