//! The launch store on Amazon DynamoDB: one table, pay per request, no scan anywhere.
//!
//! Items, all under the string key `pk`, with the TTL attribute `expiresAt` (epoch seconds;
//! DynamoDB deletes expired items up to two days late, so reads ignore them):
//! - a task ARN → `launch`: the [`GuardedLaunch`] as JSON, and `calls`, the job's call count.
//!   One conditional `PutItem` per task (most launches start one; at most ten), which never
//!   lowers `calls`.
//! - `notice|KEY` → `state` (`claimed`, with `claimedUntil`, the claimant's deadline, or
//!   `sent`): the one notification of an episode, claimed with a conditional `PutItem`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::core::guard::GuardedLaunch;
use crate::ports::store::{Claim, LaunchStore, NoticeState, StoreError};

/// The store in a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoStore {
    /// Wraps a client built once at start-up.
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self { client, table }
    }

    fn error(&self, cause: impl std::fmt::Display) -> StoreError {
        StoreError {
            table: self.table.clone(),
            cause: cause.to_string(),
        }
    }

    async fn notice_state(&self, key: &str) -> Result<Option<NoticeState>, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(notice_key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?
            .item;
        Ok(item.map(|item| match text(&item, "state") {
            Some("sent") => NoticeState::Sent,
            _ => NoticeState::Claimed(
                number(&item, "claimedUntil")
                    .map_or(UNIX_EPOCH, |t| UNIX_EPOCH + Duration::from_secs(t)),
            ),
        }))
    }
}

impl LaunchStore for DynamoStore {
    async fn guard(
        &self,
        task_arns: &[String],
        launch: &GuardedLaunch,
        expires: SystemTime,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(launch).map_err(|e| self.error(e))?;
        for arn in task_arns {
            // Never lower a task's call count: the caller's record may arrive after ecs-rerun
            // stored the same task from its exact replay, and the count caps the job's calls.
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(arn.clone()))
                .item("launch", s(body.clone()))
                .item("calls", n(u64::from(launch.calls)))
                .item("expiresAt", n(epoch(expires)))
                .condition_expression("attribute_not_exists(pk) OR calls <= :calls")
                .expression_attribute_values(":calls", n(u64::from(launch.calls)))
                .send()
                .await;
            match put {
                Ok(_) => {}
                Err(e)
                    if condition_failed(
                        &e,
                        PutItemError::is_conditional_check_failed_exception,
                    ) =>
                {
                    tracing::debug!(task = %arn, calls = launch.calls, "the store holds this task with more calls already; kept");
                }
                Err(e) => {
                    return Err(self.error(aws_sdk_dynamodb::error::DisplayErrorContext(e)));
                }
            }
        }
        Ok(())
    }

    async fn find(
        &self,
        task_arn: &str,
        now: SystemTime,
    ) -> Result<Option<GuardedLaunch>, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(task_arn.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?
            .item;
        let Some(item) = item else {
            return Ok(None);
        };
        if number(&item, "expiresAt").is_some_and(|t| t <= epoch(now)) {
            return Ok(None);
        }
        let body = text(&item, "launch")
            .ok_or_else(|| self.error(format!("item {task_arn} has no string `launch`")))?;
        let launch: GuardedLaunch = serde_json::from_str(body).map_err(|e| {
            self.error(format!(
                "item {task_arn}: `launch` is not a stored launch: {e}"
            ))
        })?;
        if launch.version != crate::core::guard::VERSION {
            return Err(self.error(format!(
                "item {task_arn}: launch format version {}, this function reads version {}",
                launch.version,
                crate::core::guard::VERSION
            )));
        }
        Ok(Some(launch))
    }

    async fn claim_notice(
        &self,
        key: &str,
        now: SystemTime,
        lease: SystemTime,
        expires: SystemTime,
    ) -> Result<Claim, StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(notice_key(key)))
            .item("state", s("claimed".to_owned()))
            .item("claimedUntil", n(epoch(lease)))
            .item("expiresAt", n(epoch(expires)))
            .condition_expression(
                "attribute_not_exists(pk) OR (#state = :claimed AND claimedUntil < :now)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":claimed", s("claimed".to_owned()))
            .expression_attribute_values(":now", n(epoch(now)))
            .send()
            .await;
        match put {
            Ok(_) => Ok(Claim::Granted),
            Err(e) if condition_failed(&e, PutItemError::is_conditional_check_failed_exception) => {
                // Taken: by a delivery that published, or by one still publishing.
                Ok(self
                    .notice_state(key)
                    .await?
                    .map_or(Claim::Pending, |state| state.claim(now)))
            }
            Err(e) => Err(self.error(aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        }
    }

    async fn confirm_notice(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(notice_key(key)))
            .update_expression("SET #state = :sent")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":sent", s("sent".to_owned()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error(aws_sdk_dynamodb::error::DisplayErrorContext(e)))
    }

    async fn release_notice(&self, key: &str) -> Result<(), StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(notice_key(key)))
            .condition_expression("#state = :claimed")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":claimed", s("claimed".to_owned()))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            // Confirmed meanwhile, or gone: nothing to release.
            Err(e)
                if condition_failed(&e, DeleteItemError::is_conditional_check_failed_exception) =>
            {
                Ok(())
            }
            Err(e) => Err(self.error(aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        }
    }
}

/// Whether a conditional write was refused because its condition did not hold (`refused` is
/// the operation's `is_conditional_check_failed_exception`).
fn condition_failed<E>(error: &SdkError<E>, refused: impl Fn(&E) -> bool) -> bool {
    error.as_service_error().is_some_and(refused)
}

fn notice_key(key: &str) -> String {
    format!("notice|{key}")
}

fn s(value: String) -> AttributeValue {
    AttributeValue::S(value)
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}
