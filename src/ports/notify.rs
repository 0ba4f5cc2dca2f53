//! Notify: the port that tells a person, and its printing adapter.
//!
//! [`Notifier`] publishes one [`Notification`]. [`crate::aws::sns::SnsNotifier`] sends it to the SNS topic;
//! [`PrintNotifier`] writes the Publish request to stderr (local dry runs).

use std::future::Future;

use crate::core::message::{DEFAULT_MAX_MESSAGE_SIZE, Notification};

/// Publishing failed: the invocation must fail too, so that Lambda retries it and finally
/// dead-letters it. A lost notification would be a lost job.
#[derive(Debug, thiserror::Error)]
#[error(
    "could not publish the notification to {topic}: {cause}. The invocation fails so that Lambda retries it; check the topic ARN, the function's sns:Publish permission and the topic's KMS key policy"
)]
pub struct PublishError {
    /// The topic.
    pub topic: String,
    /// What the SDK said.
    pub cause: String,
}

/// Publishes notifications.
pub trait Notifier {
    /// Publishes one notification.
    fn publish(&self, note: &Notification)
    -> impl Future<Output = Result<(), PublishError>> + Send;

    /// The largest message (body and attributes, in bytes) the destination accepts.
    fn max_message_size(&self) -> usize {
        DEFAULT_MAX_MESSAGE_SIZE
    }
}

/// Prints the Publish request it would send to stderr, and sends nothing.
#[derive(Debug, Clone, Default)]
pub struct PrintNotifier;

impl Notifier for PrintNotifier {
    async fn publish(&self, note: &Notification) -> Result<(), PublishError> {
        eprintln!(
            "--- dry run: would publish to SNS ---\nSubject: {}\nAttributes: {:?}\n{}\n---",
            note.subject, note.attributes, note.body
        );
        Ok(())
    }
}
