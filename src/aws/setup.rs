//! Start-up shared by both binaries: the AWS configuration, with timeouts that fit the plan.
//!
//! Each AWS call is bounded (an attempt by [`ATTEMPT_TIMEOUT`], the call with the SDK's own
//! retries by [`CALL_TIMEOUT`]) so that a hung endpoint cannot hold an invocation until the Lambda
//! timeout: [`crate::core::plan::Policy::deadline_reserve`] keeps room for one launch and one publish.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Upper bound of one HTTP attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
/// Upper bound of one call, the SDK's retries included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the standard AWS configuration chain (region, credentials, `AWS_ENDPOINT_URL`).
pub async fn aws_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(CALL_TIMEOUT)
                .build(),
        )
        .load()
        .await
}
