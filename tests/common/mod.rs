//! Shared test helpers: fixture loading and in-memory fakes of the three ports.
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ecs_rerun::clock::Clock;
use ecs_rerun::config::Config;
use ecs_rerun::event::PlacementFailure;
use ecs_rerun::launch::TaskLauncher;
use ecs_rerun::message::Notification;
use ecs_rerun::notify::{Notifier, PublishError};
use ecs_rerun::plan::LaunchResult;
use ecs_rerun::request::RunTaskRequest;
use serde_json::Value;

/// Path of a file in the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A sample event from `events/`.
pub fn event(name: &str) -> Value {
    let path = repo_path("events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Config as the environment would give it, with test-friendly defaults.
pub fn config(extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::from([(
        "ECS_RERUN_TOPIC_ARN".to_owned(),
        "arn:aws:sns:us-east-1:111122223333:ecs-rerun".to_owned(),
    )]);
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_lookup(|name| vars.get(name).cloned()).expect("valid test config")
}

/// A placement failure with just a reason.
pub fn failure(reason: &str) -> PlacementFailure {
    PlacementFailure {
        reason: Some(reason.to_owned()),
        ..PlacementFailure::default()
    }
}

/// `n` started tasks.
pub fn started(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("arn:aws:ecs:us-east-1:111122223333:task/batch/t{i}"))
        .collect()
}

/// A fake ECS that answers new tokens from a script and, like ECS, answers a token it has seen
/// with the result it gave the first time (ECS_Idempotency), so duplicates start nothing.
#[derive(Clone, Default)]
pub struct FakeEcs {
    inner: Arc<Mutex<FakeEcsState>>,
}

#[derive(Default)]
struct FakeEcsState {
    script: VecDeque<LaunchResult>,
    seen: HashMap<String, LaunchResult>,
    requests: Vec<RunTaskRequest>,
    tasks_created: usize,
    lose_next_response: bool,
}

impl FakeEcs {
    /// Answers the next new tokens with these results, in order; then "all started".
    pub fn scripted(results: Vec<LaunchResult>) -> Self {
        let fake = Self::default();
        fake.inner.lock().unwrap().script = results.into();
        fake
    }

    /// Carries out the next new call but loses its answer, as a timeout would.
    pub fn losing_first_response() -> Self {
        let fake = Self::default();
        fake.inner.lock().unwrap().lose_next_response = true;
        fake
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RunTaskRequest> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Tasks created in total (duplicates of a token create none).
    pub fn tasks_created(&self) -> usize {
        self.inner.lock().unwrap().tasks_created
    }
}

impl TaskLauncher for FakeEcs {
    async fn run_task(&self, request: &RunTaskRequest) -> LaunchResult {
        let mut state = self.inner.lock().unwrap();
        state.requests.push(request.clone());
        let token = request.client_token.clone().unwrap_or_default();
        if let Some(previous) = state.seen.get(&token) {
            return previous.clone();
        }
        let count = usize::try_from(request.requested_count()).unwrap_or(0);
        let result = state.script.pop_front().unwrap_or(LaunchResult::Placed {
            started: started(count),
            failures: Vec::new(),
        });
        // Only a call that was carried out leaves a result behind its token.
        if let LaunchResult::Placed { started, .. } = &result {
            state.tasks_created += started.len();
            state.seen.insert(token, result.clone());
            if state.lose_next_response {
                state.lose_next_response = false;
                return LaunchResult::Rejected {
                    code: "NetworkError".to_owned(),
                    message: "timeout reading the response".to_owned(),
                    ambiguous: true,
                };
            }
        }
        result
    }
}

/// Records notifications; fails on demand.
#[derive(Clone, Default)]
pub struct FakeSns {
    sent: Arc<Mutex<Vec<Notification>>>,
    fail: bool,
}

impl FakeSns {
    /// A topic that refuses every message.
    pub fn failing() -> Self {
        Self {
            fail: true,
            ..Self::default()
        }
    }

    /// Every notification published.
    pub fn sent(&self) -> Vec<Notification> {
        self.sent.lock().unwrap().clone()
    }
}

impl Notifier for FakeSns {
    async fn publish(&self, note: &Notification) -> Result<(), PublishError> {
        if self.fail {
            return Err(PublishError {
                topic: "arn:aws:sns:us-east-1:111122223333:ecs-rerun".to_owned(),
                cause: "AuthorizationError: not allowed".to_owned(),
            });
        }
        self.sent.lock().unwrap().push(note.clone());
        Ok(())
    }
}

/// A clock whose sleeps return at once and move its time forward.
#[derive(Clone)]
pub struct FakeClock {
    start: SystemTime,
    slept: Arc<Mutex<Vec<Duration>>>,
}

impl FakeClock {
    /// Starts at `start`.
    pub fn at(start: SystemTime) -> Self {
        Self {
            start,
            slept: Arc::default(),
        }
    }

    /// Every sleep, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.slept.lock().unwrap().clone()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        self.start + self.slept.lock().unwrap().iter().sum::<Duration>()
    }

    async fn sleep(&self, duration: Duration) {
        self.slept.lock().unwrap().push(duration);
    }
}
