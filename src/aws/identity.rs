//! Identity: the function's own account when its invocation does not say.
//!
//! Lambda always sends the invoked function's ARN, which names the account, so in AWS this is
//! never asked. A local runtime emulator (`cargo lambda watch`) sends a placeholder without
//! one; there the account is STS's `GetCallerIdentity` of the function's own credentials, asked
//! once per process. Without an account every record counts as the function's own, so a member
//! account's record would be rerun with the central account's credentials.

use std::sync::OnceLock;

use aws_config::SdkConfig;
use aws_sdk_sts::error::DisplayErrorContext;

/// The account the function's own credentials belong to, asked once and kept.
#[derive(Debug)]
pub struct OwnAccount {
    sts: aws_sdk_sts::Client,
    known: OnceLock<Option<String>>,
}

impl OwnAccount {
    /// Asks through `sdk` (the function's own configuration) when first needed.
    pub fn new(sdk: &SdkConfig) -> Self {
        Self {
            sts: aws_sdk_sts::Client::new(sdk),
            known: OnceLock::new(),
        }
    }

    /// `from_arn` when the invocation named an account; otherwise the caller identity's
    /// account (`None`, logged, when STS cannot say: every record then counts as the
    /// function's own, as before this was asked).
    pub async fn resolve(&self, from_arn: Option<String>) -> Option<String> {
        if from_arn.is_some() {
            return from_arn;
        }
        if let Some(known) = self.known.get() {
            return known.clone();
        }
        let asked = match self.sts.get_caller_identity().send().await {
            Ok(identity) => identity.account,
            Err(err) => {
                tracing::warn!(
                    error = %DisplayErrorContext(&err),
                    "the invocation names no account and STS GetCallerIdentity failed: every \
                     record counts as this account's own"
                );
                None
            }
        };
        if let Some(account) = &asked {
            tracing::debug!(
                account = %account,
                "the invocation names no account (a local emulator): the function's own account \
                 is its credentials' (STS GetCallerIdentity)"
            );
        }
        self.known.get_or_init(|| asked).clone()
    }
}
