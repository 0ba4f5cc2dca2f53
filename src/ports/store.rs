//! Store: the port that remembers launches and notifications across invocations, and its
//! in-memory adapters.
//!
//! [`LaunchStore`] keeps each guarded launch under its task ARNs ([`GuardedLaunch`]), finds it
//! again when one of those tasks fails to start, and lets exactly one delivery of an episode
//! publish its notification ([`LaunchStore::claim_notice`]). The DynamoDB adapter is
//! [`crate::aws::dynamodb::DynamoStore`]; [`MemoryStore`] serves the replay command and tests;
//! [`NoStore`] is a deployment without the table (the feature is opt-in).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::core::guard::GuardedLaunch;

/// How long a claim holds when the invocation has no deadline (local runs). In Lambda a claim
/// holds until the claimant's deadline: after it, Lambda has ended that invocation, so a claim
/// still unconfirmed then was left by one that died between claiming and publishing, and the
/// next delivery (Lambda's retry comes a minute or more after a failure) takes it over.
pub const NOTICE_LEASE_WITHOUT_DEADLINE: Duration = Duration::from_secs(180);

/// The store could not be read or written. The invocation fails, so that the event is
/// delivered again instead of a launch going unguarded or a notification unsent.
#[derive(Debug, thiserror::Error)]
#[error(
    "the launch store {table} failed: {cause}. The invocation fails so that it is retried; \
     check ECS_RERUN_STORE_TABLE and the function's DynamoDB permissions on it"
)]
pub struct StoreError {
    /// The table.
    pub table: String,
    /// What went wrong.
    pub cause: String,
}

/// What a claim on an episode's notification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours: publish, then [`LaunchStore::confirm_notice`].
    Granted,
    /// Already published by another delivery: publish nothing.
    Sent,
    /// Claimed by another delivery that may still be publishing: try again later (a claim is
    /// taken over once its lease, the claimant's deadline, is over).
    Pending,
}

/// Remembers launches and notifications.
pub trait LaunchStore {
    /// Whether there is a store at all.
    fn enabled(&self) -> bool {
        true
    }

    /// Keeps `launch` under each of `task_arns` (at most ten: RunTask's own limit) until
    /// `expires`, unless the store holds a task with more calls already (the caller's record
    /// may come after ecs-rerun stored the task from its own call); writing it again is
    /// harmless.
    fn guard(
        &self,
        task_arns: &[String],
        launch: &GuardedLaunch,
        expires: SystemTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The launch `task_arn` belongs to, unless it expired at `now`.
    fn find(
        &self,
        task_arn: &str,
        now: SystemTime,
    ) -> impl Future<Output = Result<Option<GuardedLaunch>, StoreError>> + Send;

    /// Claims the one notification of the episode `key` at `now`, holding it until `lease`.
    fn claim_notice(
        &self,
        key: &str,
        now: SystemTime,
        lease: SystemTime,
        expires: SystemTime,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// The claimed notification was published.
    fn confirm_notice(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The claimed notification could not be published: the next delivery may claim it.
    fn release_notice(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// No store: successful launches are not kept, stopped tasks cannot be rerun, and every
/// delivery of an episode may notify.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStore;

impl LaunchStore for NoStore {
    fn enabled(&self) -> bool {
        false
    }

    async fn guard(
        &self,
        _: &[String],
        _: &GuardedLaunch,
        _: SystemTime,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn find(&self, _: &str, _: SystemTime) -> Result<Option<GuardedLaunch>, StoreError> {
        Ok(None)
    }

    async fn claim_notice(
        &self,
        _: &str,
        _: SystemTime,
        _: SystemTime,
        _: SystemTime,
    ) -> Result<Claim, StoreError> {
        Ok(Claim::Granted)
    }

    async fn confirm_notice(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn release_notice(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A store that may be there (`ECS_RERUN_STORE_TABLE` set) or not ([`NoStore`]).
impl<S: LaunchStore + Sync> LaunchStore for Option<S> {
    fn enabled(&self) -> bool {
        self.as_ref().is_some_and(LaunchStore::enabled)
    }

    async fn guard(
        &self,
        task_arns: &[String],
        launch: &GuardedLaunch,
        expires: SystemTime,
    ) -> Result<(), StoreError> {
        match self {
            Some(store) => store.guard(task_arns, launch, expires).await,
            None => NoStore.guard(task_arns, launch, expires).await,
        }
    }

    async fn find(
        &self,
        task_arn: &str,
        now: SystemTime,
    ) -> Result<Option<GuardedLaunch>, StoreError> {
        match self {
            Some(store) => store.find(task_arn, now).await,
            None => NoStore.find(task_arn, now).await,
        }
    }

    async fn claim_notice(
        &self,
        key: &str,
        now: SystemTime,
        lease: SystemTime,
        expires: SystemTime,
    ) -> Result<Claim, StoreError> {
        match self {
            Some(store) => store.claim_notice(key, now, lease, expires).await,
            None => NoStore.claim_notice(key, now, lease, expires).await,
        }
    }

    async fn confirm_notice(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Some(store) => store.confirm_notice(key).await,
            None => NoStore.confirm_notice(key).await,
        }
    }

    async fn release_notice(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Some(store) => store.release_notice(key).await,
            None => NoStore.release_notice(key).await,
        }
    }
}

/// A notification's claim, as both the memory and the DynamoDB store keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeState {
    /// Claimed, not yet confirmed; the claim holds until this time.
    Claimed(SystemTime),
    /// Published.
    Sent,
}

impl NoticeState {
    /// What a new claim at `now` finds when this one is in place.
    pub fn claim(self, now: SystemTime) -> Claim {
        match self {
            Self::Sent => Claim::Sent,
            Self::Claimed(until) if now > until => Claim::Granted,
            Self::Claimed(_) => Claim::Pending,
        }
    }
}

/// The store in memory, with DynamoDB's semantics (expiry ignored on read, conditional
/// claims): for the replay command and tests. Its clones share one store, as several
/// handlers share one table.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    launches: Arc<Mutex<HashMap<String, (GuardedLaunch, SystemTime)>>>,
    notices: Arc<Mutex<HashMap<String, NoticeState>>>,
}

impl MemoryStore {
    /// How many task ARNs it guards.
    pub fn guarded(&self) -> usize {
        self.launches.lock().map_or(0, |l| l.len())
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError {
        table: "memory".to_owned(),
        cause: "a lock was poisoned".to_owned(),
    }
}

impl LaunchStore for MemoryStore {
    async fn guard(
        &self,
        task_arns: &[String],
        launch: &GuardedLaunch,
        expires: SystemTime,
    ) -> Result<(), StoreError> {
        let mut launches = self.launches.lock().map_err(poisoned)?;
        for arn in task_arns {
            // As the DynamoDB store: a task's call count is never lowered.
            if launches
                .get(arn)
                .is_none_or(|(kept, _)| kept.calls <= launch.calls)
            {
                launches.insert(arn.clone(), (launch.clone(), expires));
            }
        }
        Ok(())
    }

    async fn find(
        &self,
        task_arn: &str,
        now: SystemTime,
    ) -> Result<Option<GuardedLaunch>, StoreError> {
        let launches = self.launches.lock().map_err(poisoned)?;
        Ok(launches
            .get(task_arn)
            .filter(|(_, expires)| *expires > now)
            .map(|(launch, _)| launch.clone()))
    }

    async fn claim_notice(
        &self,
        key: &str,
        now: SystemTime,
        lease: SystemTime,
        _expires: SystemTime,
    ) -> Result<Claim, StoreError> {
        let mut notices = self.notices.lock().map_err(poisoned)?;
        let claim = notices
            .get(key)
            .map_or(Claim::Granted, |state| state.claim(now));
        if claim == Claim::Granted {
            notices.insert(key.to_owned(), NoticeState::Claimed(lease));
        }
        Ok(claim)
    }

    async fn confirm_notice(&self, key: &str) -> Result<(), StoreError> {
        self.notices
            .lock()
            .map_err(poisoned)?
            .insert(key.to_owned(), NoticeState::Sent);
        Ok(())
    }

    async fn release_notice(&self, key: &str) -> Result<(), StoreError> {
        let mut notices = self.notices.lock().map_err(poisoned)?;
        if matches!(notices.get(key), Some(NoticeState::Claimed(_))) {
            notices.remove(key);
        }
        Ok(())
    }
}
