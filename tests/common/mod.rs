//! Shared test helpers: fixture loading and in-memory fakes of the three ports.
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ecs_rerun::config::Config;
use ecs_rerun::core::event::PlacementFailure;
use ecs_rerun::core::launch::{LaunchResult, LaunchedTask, Lookup};
use ecs_rerun::core::lookup::{ExistingTask, TaskQuery};
use ecs_rerun::core::message::Notification;
use ecs_rerun::core::org::Place;
use ecs_rerun::core::request::RunTaskRequest;
use ecs_rerun::ports::clock::Clock;
use ecs_rerun::ports::launch::{Launchers, ReachError, TaskLauncher};
use ecs_rerun::ports::notify::{Notifier, PublishError};
use ecs_rerun::ports::queue::{DelayQueue, QueueError};
use ecs_rerun::ports::store::MemoryStore;
use serde_json::Value;

/// The fakes' clock starts here; sample records are retimed relative to it.
pub const NOW: u64 = 1_800_000_000;
/// The account the sample records were made in, and the function's own in tests.
pub const HOME_ACCOUNT: &str = "111122223333";
/// The Region of the sample records.
pub const HOME_REGION: &str = "us-east-1";

/// One world of fakes: an ECS, a topic, a clock, a delay queue and a launch store. Each test
/// crate builds its handlers on it in an `impl World` of its own.
pub struct World {
    /// ECS, with its token table.
    pub ecs: FakeEcs,
    /// The topic.
    pub sns: FakeSns,
    /// The clock, at [`NOW`].
    pub clock: FakeClock,
    /// The delay queue; the tests deliver its messages.
    pub queue: FakeQueue,
    /// The launch store.
    pub store: MemoryStore,
}

impl World {
    /// A world whose ECS answers new tokens with `answers`, then starts everything.
    pub fn new(answers: Vec<Answer>) -> Self {
        let clock = FakeClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW));
        Self {
            ecs: FakeEcs::scripted(&clock, answers),
            sns: FakeSns::default(),
            clock,
            queue: FakeQueue::default(),
            store: MemoryStore::default(),
        }
    }

    /// The same world (its state shared) behind another topic: a failing one, say.
    pub fn with_sns(&self, sns: FakeSns) -> Self {
        Self {
            ecs: self.ecs.clone(),
            sns,
            clock: self.clock.clone(),
            queue: self.queue.clone(),
            store: self.store.clone(),
        }
    }
}

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
    // Lambda always sets AWS_REGION: the function runs in [`HOME_REGION`].
    let mut vars: HashMap<String, String> = HashMap::from([
        (
            "ECS_RERUN_TOPIC_ARN".to_owned(),
            "arn:aws:sns:us-east-1:111122223333:ecs-rerun".to_owned(),
        ),
        ("AWS_REGION".to_owned(), HOME_REGION.to_owned()),
    ]);
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_lookup(|name| vars.get(name).cloned()).expect("valid test config")
}

/// The value of the tag `key` on a request.
pub fn tag<'a>(request: &'a RunTaskRequest, key: &str) -> Option<&'a str> {
    request
        .tags
        .iter()
        .flatten()
        .find(|t| t.key.as_deref() == Some(key))
        .and_then(|t| t.value.as_deref())
}

/// A placement failure with just a reason.
pub fn failure(reason: &str) -> PlacementFailure {
    PlacementFailure {
        reason: Some(reason.to_owned()),
        ..PlacementFailure::default()
    }
}

/// `n` tasks of an answer, created at an unknown time.
pub fn launched(n: usize) -> Vec<LaunchedTask> {
    (0..n)
        .map(|i| LaunchedTask {
            arn: format!("arn:aws:ecs:us-east-1:111122223333:task/batch/t{i}"),
            created_at: None,
        })
        .collect()
}

/// How the fake ECS answers the next call with a token it has not seen.
#[derive(Debug, Clone)]
pub enum Answer {
    /// HTTP 200: `place` tasks start, the rest are listed as failed with these failures.
    Place {
        /// Tasks that start (at most the count asked for).
        place: usize,
        /// The `failures` of the answer.
        failures: Vec<PlacementFailure>,
    },
    /// An API error after which nothing started and the token is not used up (4xx, throttling).
    Error {
        /// Error code.
        code: String,
    },
    /// A 5xx answer although the tasks started: the token keeps the tasks.
    ServerErrorAfterStart,
    /// The tasks start but the answer is lost (timeout, dropped connection).
    Lost,
}

/// What Fargate answers when it has no capacity (aws-facts §14.1).
pub const SPOT_CAPACITY: &str = "Capacity is unavailable at this time. Please try again later or in a different availability zone";

/// All requested tasks start.
pub fn ok() -> Answer {
    Answer::Place {
        place: usize::MAX,
        failures: Vec::new(),
    }
}

/// `place` tasks start; the answer lists `reason` once for the rest.
pub fn fail(reason: &str, place: usize) -> Answer {
    Answer::Place {
        place,
        failures: vec![failure(reason)],
    }
}

/// An API error that starts nothing.
pub fn error(code: &str) -> Answer {
    Answer::Error {
        code: code.to_owned(),
    }
}

/// A task the fake ECS holds.
#[derive(Debug, Clone)]
pub struct FakeTask {
    /// Its ARN.
    pub arn: String,
    /// The account it runs in.
    pub account: String,
    /// The Region it runs in.
    pub region: String,
    /// The request that started it.
    pub request: RunTaskRequest,
    /// When.
    pub created_at: SystemTime,
    /// When it stopped, if it did.
    pub stopped_at: Option<SystemTime>,
}

/// A fake ECS that keeps ECS's token table (ECS_Idempotency, aws-facts §4): per (account,
/// Region, cluster, token), the same parameters get the stored answer and start nothing; other parameters get
/// `ConflictException` naming the token's tasks. A call without a token is always new. Only a
/// call that started tasks or answered 200 leaves its answer behind the token, and only for
/// min(24 h, until an hour after its last task stopped): then the token is new again. A scripted
/// [`Answer::Error`] comes before the table, as ECS throttles a call before it looks at its
/// token; other scripted answers are for calls the table does not answer. Tests count the tasks
/// it started, whoever started them. Each clone sees one (account, Region) of the same ECS:
/// [`HOME_ACCOUNT`] and [`HOME_REGION`], or the place [`FakeEcs::at`] names.
#[derive(Clone)]
pub struct FakeEcs {
    inner: Arc<Mutex<FakeEcsState>>,
    clock: FakeClock,
    account: String,
    region: String,
}

/// What ECS keeps behind a token: the request (without its token), its answer, and when the
/// token was first used.
type Stored = (
    RunTaskRequest,
    Vec<LaunchedTask>,
    Vec<PlacementFailure>,
    SystemTime,
);

/// How long ECS keeps a token after the last of its tasks stopped, and at most (aws-facts §4).
const TOKEN_AFTER_STOP: Duration = Duration::from_secs(3600);
const TOKEN_AT_MOST: Duration = Duration::from_secs(24 * 3600);

#[derive(Default)]
struct FakeEcsState {
    script: VecDeque<Answer>,
    tokens: HashMap<(String, String, String, String), Stored>,
    requests: Vec<RunTaskRequest>,
    tasks: Vec<FakeTask>,
    lookups: usize,
    lookup_fails: bool,
    spot_outage: bool,
}

impl FakeEcs {
    /// An ECS on this clock that answers new tokens with these answers, in order; then starts
    /// every task asked for.
    pub fn scripted(clock: &FakeClock, answers: Vec<Answer>) -> Self {
        let fake = Self {
            inner: Arc::default(),
            clock: clock.clone(),
            account: HOME_ACCOUNT.to_owned(),
            region: HOME_REGION.to_owned(),
        };
        fake.inner.lock().unwrap().script = answers.into();
        fake
    }

    /// The same ECS, in `account` and `region`.
    pub fn at(&self, account: &str, region: &str) -> Self {
        Self {
            account: account.to_owned(),
            region: region.to_owned(),
            ..self.clone()
        }
    }

    /// Answers the next new tokens with these, before the ones scripted so far.
    pub fn answer_next(&self, answers: Vec<Answer>) {
        let mut state = self.inner.lock().unwrap();
        for answer in answers.into_iter().rev() {
            state.script.push_front(answer);
        }
    }

    /// An ECS where Fargate Spot has no capacity: a new token whose request names
    /// `FARGATE_SPOT` gets a 200 listing "Capacity is unavailable" for every task (ECS keeps it
    /// behind the token), before any scripted placement answer; other requests go on as
    /// scripted. A scripted [`Answer::Error`] still comes first, as ECS throttles first.
    pub fn spot_outage(self) -> Self {
        self.inner.lock().unwrap().spot_outage = true;
        self
    }

    /// An ECS whose `ListTasks` fails.
    pub fn failing_lookups(self) -> Self {
        self.inner.lock().unwrap().lookup_fails = true;
        self
    }

    /// The caller's own call (its SDK retry, say), answered by the same table: returns the
    /// answer it got.
    pub fn caller_calls(&self, request: &RunTaskRequest) -> LaunchResult {
        self.call(request, false)
    }

    /// Every request ecs-rerun sent, in order (the caller's calls are not in it).
    pub fn requests(&self) -> Vec<RunTaskRequest> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Every task started, by anyone.
    pub fn tasks(&self) -> Vec<FakeTask> {
        self.inner.lock().unwrap().tasks.clone()
    }

    /// How many tasks were started, by anyone: what "never twice" is about.
    pub fn tasks_started(&self) -> usize {
        self.inner.lock().unwrap().tasks.len()
    }

    /// Every task still running stops now.
    pub fn stop_all(&self) {
        let now = self.clock.now();
        for task in &mut self.inner.lock().unwrap().tasks {
            task.stopped_at.get_or_insert(now);
        }
    }

    /// How many look-ups (`ListTasks` + `DescribeTasks`) were made.
    pub fn lookups(&self) -> usize {
        self.inner.lock().unwrap().lookups
    }

    fn call(&self, request: &RunTaskRequest, by_rerun: bool) -> LaunchResult {
        let now = self.clock.now();
        let mut state = self.inner.lock().unwrap();
        if by_rerun {
            state.requests.push(request.clone());
        }
        let mut params = request.clone();
        params.client_token = None;
        let key = request.client_token.clone().map(|t| {
            (
                self.account.clone(),
                self.region.clone(),
                request.cluster_name().to_owned(),
                t,
            )
        });
        if let Some(Answer::Error { code }) = state.script.front().cloned() {
            state.script.pop_front();
            return rejected(&code);
        }
        if let Some(key) = &key
            && let Some((_, tasks, _, used_at)) = state.tokens.get(key)
            && now >= state.forgets(tasks, *used_at)
        {
            state.tokens.remove(key);
        }
        if let Some((stored, tasks, failures, _)) = key.as_ref().and_then(|k| state.tokens.get(k)) {
            return if *stored == params {
                LaunchResult::Placed {
                    tasks: tasks.clone(),
                    failures: failures.clone(),
                }
            } else {
                LaunchResult::Rejected {
                    code: "ConflictException".to_owned(),
                    message: "The clientToken was already used with other parameters".to_owned(),
                    ambiguous: false,
                    existing: tasks.iter().map(|t| t.arn.clone()).collect(),
                }
            };
        }
        let count = usize::try_from(request.requested_count()).unwrap_or(0);
        let on_spot = request
            .capacity_provider_strategy
            .iter()
            .flatten()
            .any(|i| i.capacity_provider.as_deref() == Some("FARGATE_SPOT"));
        let answer = if state.spot_outage && on_spot {
            Answer::Place {
                place: 0,
                failures: vec![failure(SPOT_CAPACITY); count],
            }
        } else {
            state.script.pop_front().unwrap_or_else(ok)
        };
        let (place, failures) = match &answer {
            Answer::Place { place, failures } => ((*place).min(count), failures.clone()),
            Answer::Error { code } => return rejected(code),
            Answer::ServerErrorAfterStart | Answer::Lost => (count, Vec::new()),
        };
        let mut launched = Vec::new();
        for _ in 0..place {
            let arn = format!(
                "arn:aws:ecs:{}:{}:task/{}/t{}",
                self.region,
                self.account,
                request.cluster_name(),
                state.tasks.len()
            );
            state.tasks.push(FakeTask {
                arn: arn.clone(),
                account: self.account.clone(),
                region: self.region.clone(),
                request: request.clone(),
                created_at: now,
                stopped_at: None,
            });
            launched.push(LaunchedTask {
                arn,
                created_at: Some(now),
            });
        }
        if let Some(key) = key {
            state
                .tokens
                .insert(key, (params, launched.clone(), failures.clone(), now));
        }
        match answer {
            Answer::ServerErrorAfterStart => LaunchResult::Rejected {
                code: "ServerException".to_owned(),
                message: "Service Unavailable".to_owned(),
                ambiguous: true,
                existing: Vec::new(),
            },
            Answer::Lost => LaunchResult::Rejected {
                code: "NetworkError".to_owned(),
                message: "timeout reading the response".to_owned(),
                ambiguous: true,
                existing: Vec::new(),
            },
            _ => LaunchResult::Placed {
                tasks: launched,
                failures,
            },
        }
    }
}

impl FakeEcsState {
    /// When ECS forgets the token first used at `used_at` that started `tasks`.
    fn forgets(&self, tasks: &[LaunchedTask], used_at: SystemTime) -> SystemTime {
        let stops: Option<Vec<SystemTime>> = tasks
            .iter()
            .map(|t| {
                self.tasks
                    .iter()
                    .find(|f| f.arn == t.arn)
                    .and_then(|f| f.stopped_at)
            })
            .collect();
        let at_most = used_at + TOKEN_AT_MOST;
        match stops {
            // Every task stopped (or none started): an hour after the last stop.
            Some(stops) => {
                (stops.into_iter().max().unwrap_or(used_at) + TOKEN_AFTER_STOP).min(at_most)
            }
            None => at_most,
        }
    }
}

/// A scripted API error: nothing started; a `ServerException` leaves it unclear.
fn rejected(code: &str) -> LaunchResult {
    LaunchResult::Rejected {
        code: code.to_owned(),
        message: format!("scripted {code}"),
        ambiguous: code == "ServerException",
        existing: Vec::new(),
    }
}

impl TaskLauncher for FakeEcs {
    async fn run_task(&self, request: &RunTaskRequest) -> LaunchResult {
        self.call(request, true)
    }

    async fn find_tasks(&self, query: &TaskQuery) -> Lookup {
        let mut state = self.inner.lock().unwrap();
        state.lookups += 1;
        if state.lookup_fails {
            return Lookup::Failed("ListTasks: AccessDeniedException".to_owned());
        }
        let cluster = |c: &Option<String>| {
            ecs_rerun::core::request::cluster_name(c.as_deref().unwrap_or("default")).to_owned()
        };
        Lookup::Found(
            state
                .tasks
                .iter()
                .filter(|t| {
                    t.account == self.account
                        && t.region == self.region
                        && cluster(&t.request.cluster) == cluster(&query.cluster)
                        && t.request.task_family() == Some(query.family.as_str())
                })
                .map(|t| {
                    let family = t.request.task_family().unwrap_or_default();
                    let definition = t.request.task_definition.clone().unwrap_or_default();
                    let revision = if definition.starts_with("arn:") {
                        definition
                    } else if definition.contains(':') {
                        format!("arn:aws:ecs:us-east-1:111122223333:task-definition/{definition}")
                    } else {
                        format!("arn:aws:ecs:us-east-1:111122223333:task-definition/{definition}:1")
                    };
                    ExistingTask {
                        arn: t.arn.clone(),
                        task_definition_arn: Some(revision),
                        created_at: Some(t.created_at),
                        started_by: t.request.started_by.clone(),
                        group: Some(
                            t.request
                                .group
                                .clone()
                                .unwrap_or_else(|| format!("family:{family}")),
                        ),
                        overrides: t.request.overrides.clone(),
                        call_tag: t
                            .request
                            .tags
                            .iter()
                            .flatten()
                            .find(|tag| {
                                tag.key.as_deref() == Some(ecs_rerun::core::marks::CALL_TAG)
                            })
                            .and_then(|tag| tag.value.clone()),
                    }
                })
                .collect(),
        )
    }
}

/// The fake ECS of a whole organization: the function's own account ([`HOME_ACCOUNT`]) and the
/// members, each reached through the member role unless its trust refuses the function.
#[derive(Clone)]
pub struct FakeOrg {
    /// The ECS of every account and Region.
    pub ecs: FakeEcs,
    refused: Arc<Mutex<HashMap<String, String>>>,
    reached: Arc<Mutex<Vec<Place>>>,
}

impl FakeOrg {
    /// An organization over `ecs`, whose member roles all trust the function.
    pub fn new(ecs: &FakeEcs) -> Self {
        Self {
            ecs: ecs.clone(),
            refused: Arc::default(),
            reached: Arc::default(),
        }
    }

    /// STS refuses the member role of `account` with `error`.
    pub fn refuse(&self, account: &str, error: &str) {
        self.refused
            .lock()
            .unwrap()
            .insert(account.to_owned(), error.to_owned());
    }

    /// Every place a launcher was asked for, in order.
    pub fn reached(&self) -> Vec<Place> {
        self.reached.lock().unwrap().clone()
    }
}

impl Launchers for FakeOrg {
    type Launcher = FakeEcs;

    async fn launcher(&self, place: &Place) -> Result<FakeEcs, ReachError> {
        self.reached.lock().unwrap().push(place.clone());
        match place {
            Place::Home { region } => Ok(self.ecs.at(HOME_ACCOUNT, region)),
            Place::Member { account, region } => match self.refused.lock().unwrap().get(account) {
                Some(error) => Err(ReachError::AssumeRole {
                    account: account.clone(),
                    region: region.clone(),
                    role_arn: ecs_rerun::core::org::member_role_arn(
                        account,
                        region,
                        "ecs-rerun-member",
                    ),
                    cause: error.clone(),
                }),
                None => Ok(self.ecs.at(account, region)),
            },
        }
    }
}

/// A delay queue that keeps what it was sent, to be delivered by the test.
#[derive(Clone, Default)]
pub struct FakeQueue {
    sent: Arc<Mutex<VecDeque<(String, Duration)>>>,
}

impl FakeQueue {
    /// Takes the oldest message and its delay.
    pub fn pop(&self) -> Option<(String, Duration)> {
        self.sent.lock().unwrap().pop_front()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

impl DelayQueue for FakeQueue {
    async fn send(&self, body: &str, delay: Duration) -> Result<(), QueueError> {
        self.sent
            .lock()
            .unwrap()
            .push_back((body.to_owned(), delay));
        Ok(())
    }
}

/// Records notifications; fails on demand.
#[derive(Clone, Default)]
pub struct FakeSns {
    sent: Arc<Mutex<Vec<Notification>>>,
    fail: bool,
    limit: Option<usize>,
}

impl FakeSns {
    /// A topic that refuses every message.
    pub fn failing() -> Self {
        Self {
            fail: true,
            ..Self::default()
        }
    }

    /// A topic whose `MaximumMessageSize` is `limit`; like SNS it refuses a larger message.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit: Some(limit),
            ..Self::default()
        }
    }

    /// Every notification published.
    pub fn sent(&self) -> Vec<Notification> {
        self.sent.lock().unwrap().clone()
    }
}

impl Notifier for FakeSns {
    fn max_message_size(&self) -> usize {
        self.limit
            .unwrap_or(ecs_rerun::core::message::DEFAULT_MAX_MESSAGE_SIZE)
    }

    async fn publish(&self, note: &Notification) -> Result<(), PublishError> {
        let size = note.body.len()
            + note
                .attributes
                .iter()
                .map(|(k, v)| k.len() + "String".len() + v.len())
                .sum::<usize>();
        if size > self.max_message_size() {
            return Err(PublishError {
                topic: "arn:aws:sns:us-east-1:111122223333:ecs-rerun".to_owned(),
                cause: format!("InvalidParameter: message of {size} bytes is too long"),
            });
        }
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
    start_offset: Arc<Mutex<Vec<Duration>>>,
}

impl FakeClock {
    /// Starts at `start`.
    pub fn at(start: SystemTime) -> Self {
        Self {
            start,
            slept: Arc::default(),
            start_offset: Arc::default(),
        }
    }

    /// Every sleep, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.slept.lock().unwrap().clone()
    }

    /// Time passed since the start.
    pub fn now_since_start(&self) -> Duration {
        self.now().duration_since(self.start).unwrap_or_default()
    }

    /// Lets time pass outside the handler (the caller's own retry happening meanwhile, say).
    pub fn advance(&self, by: Duration) {
        self.start_offset.lock().unwrap().push(by);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        self.start
            + self.slept.lock().unwrap().iter().sum::<Duration>()
            + self.start_offset.lock().unwrap().iter().sum::<Duration>()
    }

    async fn sleep(&self, duration: Duration) {
        self.slept.lock().unwrap().push(duration);
    }
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// The custom-notification schema (aws-facts §15.3): the required fields with their constant
/// values, no field it does not know, and strings where it wants strings.
pub fn assert_custom_notification(body: &Value) {
    let top = keys(body);
    assert!(
        top.is_superset(&BTreeSet::from(["version", "source", "content"])),
        "{top:?}"
    );
    assert!(
        top.is_subset(&BTreeSet::from([
            "version", "source", "id", "content", "metadata"
        ])),
        "{top:?}"
    );
    assert_eq!(body["version"], "1.0");
    assert_eq!(body["source"], "custom");
    let content = &body["content"];
    let content_keys = keys(content);
    assert!(content_keys.contains("description"), "{content_keys:?}");
    assert!(
        content_keys.is_subset(&BTreeSet::from([
            "textType",
            "title",
            "description",
            "nextSteps",
            "keywords"
        ])),
        "{content_keys:?}"
    );
    assert_eq!(content["textType"], "client-markdown");
    assert!(content["description"].is_string() && content["title"].is_string());
    if let Some(metadata) = body.get("metadata") {
        assert!(
            keys(metadata).is_subset(&BTreeSet::from([
                "threadId",
                "summary",
                "eventType",
                "relatedResources",
                "additionalContext"
            ])),
            "{metadata}"
        );
        assert!(metadata["threadId"].is_string());
        for value in metadata["additionalContext"]
            .as_object()
            .into_iter()
            .flatten()
        {
            assert!(
                value.1.is_string(),
                "additionalContext.{} = {}",
                value.0,
                value.1
            );
        }
    }
}

/// What SNS counts against `MaximumMessageSize`: the body and every attribute's name, type and value.
pub fn sns_size(note: &ecs_rerun::core::message::Notification) -> usize {
    note.body.len()
        + note
            .attributes
            .iter()
            .map(|(k, v)| k.len() + "String".len() + v.len())
            .sum::<usize>()
}
