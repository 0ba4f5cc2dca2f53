//! Fallback state: a rule's capacity fallback within one episode, and the capacity answers
//! that move it.

use serde::{Deserialize, Serialize};

use crate::core::decode::Failure;
use crate::core::event::PlacementFailure;
use crate::core::fallback::{Fallback, Placement};
use crate::core::request::RunTaskRequest;
use crate::core::task_change::FAILED_TO_START;

/// A capacity fallback within an episode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct FallbackState {
    /// The rule's fallback, as it was when the episode began.
    pub(super) fallback: Fallback,
    /// The recorded placement.
    pub(super) from: Placement,
    /// The last definitive answer (the recorded failure, then ECS's answer to each own token)
    /// said only "no capacity": its first failure. Changes only when the token moves on, so
    /// every send of one token decides alike.
    pub(super) capacity_answer: Option<String>,
    /// The attempt that moved to the fallback placement; every later one stays there.
    pub(super) switched_at: Option<u32>,
    /// The capacity answer that moved it.
    #[serde(default)]
    pub(super) trigger: String,
    /// Tasks started on the fallback placement.
    pub(super) started: u32,
}

impl FallbackState {
    /// `fallback` fixed for an episode of `template`, not switched to yet; `capacity_answer`
    /// as the last definitive answer so far said.
    pub(super) fn new(
        fallback: &Fallback,
        template: &RunTaskRequest,
        capacity_answer: Option<String>,
    ) -> Self {
        Self {
            fallback: fallback.clone(),
            from: Placement::of(template),
            capacity_answer,
            switched_at: None,
            trigger: String::new(),
            started: 0,
        }
    }
}

/// The failure that triggers a rule's fallback, if `failure` is a definitive capacity answer:
/// placement failures that all say the placement had no capacity, or a task that failed to
/// start for that reason. Never an API error (the call may not have been placed at all), nor a
/// Spot interruption (the task ran: capacity was there).
pub(super) fn capacity_answer(fallback: &Fallback, failure: &Failure) -> Option<String> {
    match failure {
        Failure::Placement(failures) => capacity_failures(fallback, failures),
        Failure::Stopped {
            stop_code,
            reason,
            detail,
        } if stop_code == FAILED_TO_START => {
            let shown = format!("{reason} {detail}");
            fallback
                .is_capacity_failure(&shown)
                .then(|| format!("{stop_code}: {}", shown.trim()))
        }
        Failure::Stopped { .. } | Failure::Api { .. } => None,
    }
}

/// The first of `failures` if every one of them is a capacity failure.
pub(super) fn capacity_failures(
    fallback: &Fallback,
    failures: &[PlacementFailure],
) -> Option<String> {
    let reasons: Vec<&str> = failures
        .iter()
        .map(|f| f.reason.as_deref().unwrap_or(""))
        .collect();
    let all = !reasons.is_empty() && reasons.iter().all(|r| fallback.is_capacity_failure(r));
    all.then(|| reasons[0].to_owned())
}
