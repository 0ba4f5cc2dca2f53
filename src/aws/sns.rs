//! Notifications on Amazon SNS: `Publish`, sized to the topic's `MaximumMessageSize`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_sns::types::MessageAttributeValue;

use crate::core::message::{DEFAULT_MAX_MESSAGE_SIZE, Notification};
use crate::ports::notify::{Notifier, PublishError};

/// Publishes to an SNS topic.
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: aws_sdk_sns::Client,
    topic_arn: String,
    max_message_size: Arc<AtomicUsize>,
}

impl SnsNotifier {
    /// Wraps a client built once at start-up, for a topic of the default 256 KiB limit.
    pub fn new(client: aws_sdk_sns::Client, topic_arn: String) -> Self {
        Self {
            client,
            topic_arn,
            max_message_size: Arc::new(AtomicUsize::new(DEFAULT_MAX_MESSAGE_SIZE)),
        }
    }

    /// Reads the topic's own `MaximumMessageSize` (`sns:GetTopicAttributes`), so that a topic
    /// set below 256 KiB still gets messages it accepts. Without the permission, or without an
    /// answer, it keeps 256 KiB and says so: a message over a lower limit would then be refused
    /// and the invocation retried.
    /// `main` runs it in the background during init, so that a cold start does not wait for it.
    /// Until it answers, the default holds.
    pub async fn read_topic_limit(&self) {
        let answer = self
            .client
            .get_topic_attributes()
            .topic_arn(&self.topic_arn)
            .send()
            .await;
        let limit = answer.as_ref().ok().and_then(|out| {
            out.attributes()?
                .get("MaximumMessageSize")?
                .parse::<usize>()
                .ok()
        });
        match (limit, answer) {
            (Some(limit), _) => self
                .max_message_size
                .store(limit.min(DEFAULT_MAX_MESSAGE_SIZE * 4), Ordering::Relaxed),
            (None, Ok(_)) => {}
            (None, Err(err)) => tracing::warn!(
                topic = %self.topic_arn,
                error = %aws_sdk_sns::error::DisplayErrorContext(err),
                "could not read the topic's MaximumMessageSize; assuming 262144 bytes"
            ),
        }
    }
}

impl Notifier for SnsNotifier {
    fn max_message_size(&self) -> usize {
        self.max_message_size.load(Ordering::Relaxed)
    }

    async fn publish(&self, note: &Notification) -> Result<(), PublishError> {
        let mut call = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(&note.subject)
            .message(&note.body);
        for (name, value) in &note.attributes {
            let attribute = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| self.error(e))?;
            call = call.message_attributes(name, attribute);
        }
        call.send()
            .await
            .map_err(|e| self.error(aws_sdk_sns::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}

impl SnsNotifier {
    fn error(&self, cause: impl std::fmt::Display) -> PublishError {
        PublishError {
            topic: self.topic_arn.clone(),
            cause: cause.to_string(),
        }
    }
}
