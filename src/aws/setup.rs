//! Start-up shared by both binaries: the AWS configuration, with timeouts that fit the plan, and
//! the one HTTP client every AWS client of the process uses.
//!
//! Each AWS call is bounded (an attempt by [`ATTEMPT_TIMEOUT`], the call with the SDK's own
//! retries by [`CALL_TIMEOUT`]) so that a hung endpoint cannot hold an invocation until the Lambda
//! timeout: [`crate::core::plan::Policy::deadline_reserve`] keeps room for one launch and one publish.
//!
//! # Trust store
//! HTTPS goes through rustls. The certificates it trusts are the platform's, read once when the
//! first client is built (during the Lambda init, before the first event), by
//! `rustls-native-certs`: when `SSL_CERT_FILE` and/or `SSL_CERT_DIR` are set, exactly the
//! certificates in that file and in the files of those directories (PEM); otherwise the system's
//! store where OpenSSL looks for it (the first bundle file found, on Lambda's Amazon Linux
//! `/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem`, and the certificate directories that
//! exist, `/etc/ssl/certs`, `/etc/pki/tls/certs`). Nothing is compiled in:
//! a local endpoint behind TLS (the bench, a local stack) is trusted by adding its CA to the file
//! `SSL_CERT_FILE` names, as before.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ecs::config::SharedHttpClient;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};

/// Upper bound of one HTTP attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
/// Upper bound of one call, the SDK's retries included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the standard AWS configuration chain (region, credentials, `AWS_ENDPOINT_URL`), with
/// [`http_client`] as the HTTP client of every client built from it and of the credential providers.
pub async fn aws_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(CALL_TIMEOUT)
                .build(),
        )
        .load()
        .await
}

/// The SDK's default HTTPS client (hyper 1, rustls, proxies from `HTTP(S)_PROXY` / `NO_PROXY`,
/// the connect and read timeouts each call's configuration asks for) with *ring* as rustls'
/// crypto provider instead of aws-lc. Measured (bench/results.md, issue 14): aws-lc spent ~47 ms of
/// CPU on the process's first TLS handshake, on the single runtime thread, in the path of the
/// first event; ring starts at once. ring offers no post-quantum key exchange: the handshake
/// agrees on X25519 (or a NIST curve), as with any TLS 1.3 client without ML-KEM.
///
/// One client for the whole process: the ECS, SNS and SQS clients share its connectors (one per
/// timeout setting; they all use the same) and so its connection pool. The connector, whose rustls
/// configuration holds the parsed trust store, is built by the process's first call (the init's
/// topic read), no longer by the first call of each client (the first event's RunTask).
pub fn http_client() -> SharedHttpClient {
    // `build_with_connector_fn` is how aws-smithy-runtime builds its own default client; it caches
    // one connector per timeout setting.
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::Ring));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // No default HTTP client is compiled in any more: a configuration without this one would
    // build clients whose every call fails.
    #[tokio::test]
    async fn the_configuration_carries_the_shared_http_client() {
        assert!(aws_config().await.http_client().is_some());
    }
}
