//! Handler: one event in, one report out. Carries out the plan through the ports.
//!
//! Every kind of event reaches the one plan-and-launch path of `episode.rs`: a failed `RunTask`
//! record directly; a task that failed to start (`stopped.rs`) once the store gave back the
//! request it was launched with, which `started.rs` kept. The scheduled self-check
//! (`self_check.rs`) asks whether such events can still arrive. The Lambda `main` and the local
//! replay command both call [`Handler::handle_payload`]; only the adapters differ.

mod episode;
mod self_check;
mod started;
mod stopped;

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::Config;
use crate::core::caller::Caller;
use crate::core::classify::ReasonClass;
use crate::core::decode::{self, DecodeError, Decoded, Ignored, Origin};
use crate::core::hop::{HopError, Message};
use crate::core::outcome::Outcome;
use crate::ports::clock::Clock;
use crate::ports::hearing::{Hearing, NoHearing};
use crate::ports::launch::Launchers;
use crate::ports::notify::{Notifier, PublishError};
use crate::ports::queue::{DelayQueue, NoQueue, QueueError};
use crate::ports::store::{LaunchStore, NoStore, StoreError};

/// What the runtime knows about this invocation.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// The Lambda deadline; `None` when replaying locally.
    pub deadline: Option<SystemTime>,
    /// The function's own account (from its ARN); `None` when replaying locally.
    pub own_account: Option<String>,
}

/// The result of one event: returned to Lambda, printed by the replay command, turned into metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// CloudTrail `eventID`, when there is one.
    pub event_id: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Class of the deciding failure (none for ignored events).
    pub reason_class: Option<ReasonClass>,
    /// Why, in one line (secrets masked).
    pub reason: String,
    /// Launch attempts made.
    pub attempts: u32,
    /// Tasks the retries started.
    pub tasks_started: u32,
    /// Time spent in backoff, in milliseconds.
    pub waited_ms: u64,
    /// Whether a notification was published.
    pub notified: bool,
    /// Its subject.
    pub subject: Option<String>,
    /// Cluster short name.
    pub cluster: Option<String>,
    /// Task family.
    pub task_family: Option<String>,
    /// From the original failure (CloudTrail `eventTime`) to the recovery, in milliseconds.
    pub recovery_ms: Option<u64>,
    /// Who made the failed call.
    pub caller: Option<Caller>,
    /// The rule that decided.
    pub rule: Option<String>,
    /// The account the failed call was made in (a member's, organization-wide).
    pub account: Option<String>,
    /// Its Region.
    pub region: Option<String>,
}

impl Report {
    /// A report about no launch: only its outcome and why.
    fn plain(event_id: Option<String>, outcome: Outcome, reason: String) -> Self {
        Self {
            event_id,
            outcome,
            reason_class: None,
            reason,
            attempts: 0,
            tasks_started: 0,
            waited_ms: 0,
            notified: false,
            subject: None,
            cluster: None,
            task_family: None,
            recovery_ms: None,
            caller: None,
            rule: None,
            account: None,
            region: None,
        }
    }

    /// A report on `origin` before anything was done: each outcome fills in the rest.
    fn about(origin: &Origin) -> Self {
        Self {
            event_id: Some(origin.event_id.clone()),
            outcome: Outcome::Ignored,
            reason_class: None,
            reason: String::new(),
            attempts: 0,
            tasks_started: 0,
            waited_ms: 0,
            notified: false,
            subject: None,
            cluster: Some(origin.request.cluster_name().to_owned()),
            task_family: origin.request.task_family().map(str::to_owned),
            recovery_ms: None,
            caller: Some(origin.called_by.clone()),
            rule: None,
            account: Some(origin.account.clone()),
            region: Some(origin.region.clone()),
        }
    }
}

/// Why an invocation fails (and goes to Lambda's retry and then the dead-letter queue).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event cannot be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A delay-queue message cannot be read.
    #[error(transparent)]
    Hop(#[from] HopError),
    /// The notification could not be published.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The next step could not be sent to the delay queue.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The launch store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another delivery of the same episode claimed its notification and has not confirmed
    /// it yet: this one fails, to be delivered again once that one published or died.
    #[error(
        "another delivery is publishing the notification of {key}; this invocation fails so \
         that it is retried, and publishes only if that delivery did not"
    )]
    NoticeInFlight {
        /// The episode's key.
        key: String,
    },
}

/// What one Lambda invocation answers, and the reports of what it handled.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The response: a [`Report`] for an EventBridge event, `batchItemFailures` for SQS.
    pub body: Value,
    /// One report per event or message handled.
    pub reports: Vec<Report>,
}

/// The handler, generic over its ports (`L` hands out the launcher of each record's place);
/// without a delay queue ([`NoQueue`]), a store ([`NoStore`]) or the self-check's describe
/// calls ([`NoHearing`]) until [`Handler::with_queue`], [`Handler::with_store`] and
/// [`Handler::with_hearing`] give it one.
#[derive(Debug)]
pub struct Handler<L, N, C, Q = NoQueue, S = NoStore, H = NoHearing> {
    config: Config,
    launchers: L,
    notifier: N,
    clock: C,
    queue: Q,
    store: S,
    hearing: H,
}

impl<L: Launchers, N: Notifier, C: Clock> Handler<L, N, C> {
    /// Assembles a handler from validated config and built adapters.
    pub fn new(config: Config, launcher: L, notifier: N, clock: C) -> Self {
        Self {
            config,
            launchers: launcher,
            notifier,
            clock,
            queue: NoQueue,
            store: NoStore,
            hearing: NoHearing,
        }
    }
}

impl<L: Launchers, N: Notifier, C: Clock, Q: DelayQueue, S: LaunchStore, H: Hearing>
    Handler<L, N, C, Q, S, H>
{
    /// The same handler, carrying episodes through their waits on `queue`.
    pub fn with_queue<Q2: DelayQueue>(self, queue: Q2) -> Handler<L, N, C, Q2, S, H> {
        self.rebuild(|_| queue, |s| s, |h| h)
    }

    /// The same handler, keeping launches and notifications in `store`.
    pub fn with_store<S2: LaunchStore>(self, store: S2) -> Handler<L, N, C, Q, S2, H> {
        self.rebuild(|q| q, |_| store, |h| h)
    }

    /// The same handler, answering the scheduled self-check through `hearing`.
    pub fn with_hearing<H2: Hearing>(self, hearing: H2) -> Handler<L, N, C, Q, S, H2> {
        self.rebuild(|q| q, |s| s, |_| hearing)
    }

    /// The same handler with its queue, store and hearing each passed through a function.
    fn rebuild<Q2, S2, H2>(
        self,
        queue: impl FnOnce(Q) -> Q2,
        store: impl FnOnce(S) -> S2,
        hearing: impl FnOnce(H) -> H2,
    ) -> Handler<L, N, C, Q2, S2, H2> {
        Handler {
            config: self.config,
            launchers: self.launchers,
            notifier: self.notifier,
            clock: self.clock,
            queue: queue(self.queue),
            store: store(self.store),
            hearing: hearing(self.hearing),
        }
    }

    /// Its delay queue (the replay command plays it).
    pub fn queue(&self) -> &Q {
        &self.queue
    }

    /// Its store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Handles one Lambda payload: an EventBridge event, or a batch of delay-queue messages
    /// (each handled on its own; the ones that fail are reported back to SQS, which delivers
    /// them again and finally dead-letters them).
    pub async fn handle_payload(
        &self,
        payload: Value,
        invocation: &Invocation,
    ) -> Result<Reply, HandlerError> {
        let Some(records) = sqs_records(&payload) else {
            // Boxed: the episode's state machine is deep, and one heap allocation per
            // invocation keeps the future's type within the compiler's limits.
            let report = Box::pin(self.handle(payload, invocation)).await?;
            return Ok(Reply {
                body: serde_json::to_value(&report).unwrap_or(Value::Null),
                reports: vec![report],
            });
        };
        let mut reports = Vec::new();
        let mut failures = Vec::new();
        for (message_id, body) in records {
            match Box::pin(self.handle_message(&body, invocation)).await {
                Ok(report) => reports.push(report),
                Err(err) => {
                    tracing::error!(message_id = %message_id, error = %err, "delay-queue message failed; SQS will deliver it again");
                    failures.push(json!({"itemIdentifier": message_id}));
                }
            }
        }
        Ok(Reply {
            body: json!({"batchItemFailures": failures}),
            reports,
        })
    }

    /// Handles one EventBridge event: a failed `RunTask` record takes the plan-and-launch path;
    /// a successful one is kept in the store; a task that failed to start is looked up there
    /// and, found, takes the same path; the scheduled self-check checks the way here.
    pub async fn handle(
        &self,
        event: Value,
        invocation: &Invocation,
    ) -> Result<Report, HandlerError> {
        let event_id = event_id_of(&event);
        let decoded = decode::decode(event).inspect_err(|err| {
            tracing::error!(error = %err, "cannot decode the event; failing the invocation so that it is retried and then dead-lettered, not lost");
        })?;
        match decoded {
            Decoded::SelfCheck => self.self_check().await,
            Decoded::Ignored(why) => Ok(ignored(event_id, &why)),
            Decoded::Started(started) => self.guard_record(&started).await,
            Decoded::Failed(failed) => {
                self.guard_started(&failed).await?;
                self.begin(&failed, invocation).await
            }
            Decoded::Stopped(stopped) => self.stopped(&stopped, 0, invocation).await,
        }
    }

    /// Handles one delay-queue message: the next step of an episode, or a stopped task to look
    /// for again.
    pub async fn handle_message(
        &self,
        body: &str,
        invocation: &Invocation,
    ) -> Result<Report, HandlerError> {
        match Message::from_json(body)? {
            Message::Hop(hop) => self.resume(*hop, invocation).await,
            Message::Recheck(recheck) => {
                self.stopped(&recheck.recheck, recheck.tries, invocation)
                    .await
            }
        }
    }
}

fn ignored(event_id: Option<String>, why: &Ignored) -> Report {
    tracing::info!(event_id = event_id.as_deref().unwrap_or("none"), reason = %why, "event ignored");
    Report::plain(event_id, Outcome::Ignored, why.to_string())
}

/// The `(messageId, body)` of each record of an SQS event, or `None` for any other payload.
fn sqs_records(payload: &Value) -> Option<Vec<(String, String)>> {
    let records = payload.get("Records")?.as_array()?;
    if !records
        .iter()
        .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
    {
        return None;
    }
    Some(
        records
            .iter()
            .map(|r| {
                let field = |name| r.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
                (field("messageId"), field("body"))
            })
            .collect(),
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn event_id_of(event: &Value) -> Option<String> {
    event
        .pointer("/detail/eventID")
        .or_else(|| event.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}
