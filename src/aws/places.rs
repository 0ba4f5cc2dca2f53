//! Places: the [`Launchers`] adapter, an [`EcsLauncher`] per (account, Region).
//!
//! The function's own account, in its own Region, gets the launcher built at start-up; in
//! another Region, a client with the function's own credentials there. A member account gets
//! a client with the member role's credentials (`AssumeRole` through the same [`SdkConfig`], so
//! `AWS_ENDPOINT_URL`, the HTTP client and the timeouts reach STS too) in the record's Region.
//!
//! Credentials are kept per account, not per client: one [`SharedCredentialsProvider`] per
//! account, handed to every client of that account, whatever the Region (a session token from a
//! regional STS endpoint is valid in every Region, aws-facts §13.4), and kept for the warm
//! process's later invocations. `AssumeRoleProvider` does not cache, and the client's identity
//! cache keeps one partition per provider value (at most 64, aws-facts §13.5), so the provider
//! here (`MemberCredentials`) keeps the session itself, asks STS again only when less than
//! `REFRESH_BEFORE` of it is left, and is asked once before a member's first call, so that a
//! refused role is known before anything is launched. Both caches are bounded.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{
    ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future,
};
use aws_sdk_ecs::config::Region;
use aws_sdk_ecs::error::DisplayErrorContext;

use crate::aws::ecs::EcsLauncher;
use crate::core::org::{self, Place};
use crate::ports::launch::{Launchers, ReachError};

/// A member role session's length: role chaining allows at most an hour (aws-facts §13.4).
const SESSION_LENGTH: Duration = Duration::from_secs(3600);
/// A kept session is renewed when less than this is left of it, so that no call of an
/// episode (each bounded by the setup's call timeout) outlives it.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// Accounts whose credentials are kept (the identity cache's own partition limit).
const MAX_ACCOUNTS: usize = 64;
/// (Account, Region) clients kept.
const MAX_CLIENTS: usize = 256;

/// Hands out the launcher of each place, with the credentials that belong there.
#[derive(Debug)]
pub struct EcsPlaces {
    sdk: SdkConfig,
    home: EcsLauncher,
    member_role: Option<String>,
    session_name: String,
    credentials: Mutex<Bounded<String, SharedCredentialsProvider>>,
    clients: Mutex<Bounded<(Option<String>, String), EcsLauncher>>,
}

impl EcsPlaces {
    /// Places reached from `sdk` (the function's own configuration); members through the role
    /// `member_role` (none: only the function's own account), in sessions named `session_name`.
    pub fn new(sdk: SdkConfig, member_role: Option<String>, session_name: String) -> Self {
        Self {
            home: EcsLauncher::new(aws_sdk_ecs::Client::new(&sdk)),
            sdk,
            member_role,
            session_name,
            credentials: Mutex::new(Bounded::new(MAX_ACCOUNTS)),
            clients: Mutex::new(Bounded::new(MAX_CLIENTS)),
        }
    }

    /// The member credentials of `account` (its role `role_arn`), built once and kept.
    async fn member_credentials(&self, account: &str, role_arn: &str) -> SharedCredentialsProvider {
        if let Some(kept) = lock(&self.credentials).get(&account.to_owned()) {
            return kept;
        }
        let assume = AssumeRoleProvider::builder(role_arn)
            .session_name(self.session_name.clone())
            .session_length(SESSION_LENGTH)
            .configure(&self.sdk)
            .build()
            .await;
        let shared = SharedCredentialsProvider::new(MemberCredentials {
            assume,
            kept: Mutex::new(None),
        });
        lock(&self.credentials).insert(account.to_owned(), shared.clone());
        shared
    }

    /// A launcher for `region`, with `credentials` (none: the function's own), kept.
    fn client(
        &self,
        account: Option<&str>,
        region: &str,
        credentials: Option<SharedCredentialsProvider>,
    ) -> EcsLauncher {
        let key = (account.map(str::to_owned), region.to_owned());
        if let Some(kept) = lock(&self.clients).get(&key) {
            return kept;
        }
        let mut config =
            aws_sdk_ecs::config::Builder::from(&self.sdk).region(Region::new(region.to_owned()));
        if credentials.is_some() {
            // The provider itself, not a wrapper of it: one identity-cache partition per account.
            config.set_credentials_provider(credentials);
        }
        let launcher = EcsLauncher::new(aws_sdk_ecs::Client::from_conf(config.build()));
        lock(&self.clients).insert(key, launcher.clone());
        launcher
    }
}

impl Launchers for EcsPlaces {
    type Launcher = EcsLauncher;

    async fn launcher(&self, place: &Place) -> Result<EcsLauncher, ReachError> {
        match place {
            Place::Home { region } => {
                if self.sdk.region().is_none_or(|own| own.as_ref() == region) {
                    Ok(self.home.clone())
                } else {
                    Ok(self.client(None, region, None))
                }
            }
            Place::Member { account, region } => {
                let Some(role) = self.member_role.as_deref() else {
                    return Err(ReachError::NoRole {
                        account: account.clone(),
                    });
                };
                let role_arn = org::member_role_arn(account, region, role);
                let credentials = self.member_credentials(account, &role_arn).await;
                // Asked now, so that a refusal is known before anything is launched; kept, so
                // that the client's first call does not ask STS again.
                if let Err(err) = credentials.provide_credentials().await {
                    return Err(ReachError::AssumeRole {
                        account: account.clone(),
                        region: region.clone(),
                        role_arn,
                        cause: DisplayErrorContext(&err).to_string(),
                    });
                }
                Ok(self.client(Some(account), region, Some(credentials)))
            }
        }
    }
}

/// A member role's session, kept until [`REFRESH_BEFORE`] its end.
#[derive(Debug)]
struct MemberCredentials {
    assume: AssumeRoleProvider,
    kept: Mutex<Option<Credentials>>,
}

impl MemberCredentials {
    async fn current(&self) -> Result<Credentials, CredentialsError> {
        let now = SystemTime::now();
        let fresh = |c: &Credentials| c.expiry().is_none_or(|end| end > now + REFRESH_BEFORE);
        if let Some(kept) = lock(&self.kept).as_ref().filter(|c| fresh(c)) {
            return Ok(kept.clone());
        }
        let credentials = self.assume.provide_credentials().await?;
        *lock(&self.kept) = Some(credentials.clone());
        Ok(credentials)
    }
}

impl ProvideCredentials for MemberCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.current())
    }
}

/// A poisoned lock only means another task panicked while holding it; the map is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A map of at most `capacity` entries; the oldest goes first.
#[derive(Debug)]
struct Bounded<K, V> {
    capacity: usize,
    entries: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: Eq + Hash + Clone, V: Clone> Bounded<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: K, value: V) {
        if self.entries.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounded_map_forgets_the_oldest() {
        let mut map = Bounded::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        map.insert("a", 3);
        map.insert("c", 4);
        assert_eq!(map.get(&"a"), None);
        assert_eq!(map.get(&"b"), Some(2));
        assert_eq!(map.get(&"c"), Some(4));
        assert_eq!(map.entries.len(), 2);
    }
}
