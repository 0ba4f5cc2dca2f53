//! Tasks that ECS accepted and then stopped before they ran: kept launches, reruns with the
//! stored request, attempts counted across invocations, rechecks through the delay queue, and
//! one notification per episode however often its event is delivered. The fakes keep ECS's
//! token table and the store's semantics; the tests count tasks started and notifications sent.

mod common;

use std::time::{Duration, SystemTime};

use common::{FakeClock, FakeEcs, FakeQueue, FakeSns, World, config, event, fail, tag};
use ecs_rerun::core::marks::{ATTEMPT_TAG, CALL_TAG, TOKEN_PREFIX};
use ecs_rerun::core::outcome::Outcome;
use ecs_rerun::core::request::RunTaskRequest;
use ecs_rerun::handler::{Handler, HandlerError, Invocation, Report};
use ecs_rerun::ports::clock::Clock;
use ecs_rerun::ports::store::{Claim, LaunchStore, MemoryStore};
use serde_json::{Value, json};

/// The task sample 15 stops (the first of sample 14's launch) and the revision it ran.
const TASK: &str = "arn:aws:ecs:us-east-1:111122223333:task/jobs/5e1f0c2a9b3d4e8fa7c6b5d4e3f2a1b0";
const REVISION: &str = "arn:aws:ecs:us-east-1:111122223333:task-definition/etl-load:12";

type TestHandler = Handler<FakeEcs, FakeSns, FakeClock, FakeQueue, MemoryStore>;

impl World {
    /// A handler on this world's ports; waits go through the queue (the tests deliver it).
    fn handler(&self, extra: &[(&str, &str)]) -> TestHandler {
        let mut vars = vec![("ECS_RERUN_DELAY_QUEUE_URL", "https://sqs.local/delay")];
        vars.extend_from_slice(extra);
        Handler::new(
            config(&vars),
            self.ecs.clone(),
            self.sns.clone(),
            self.clock.clone(),
        )
        .with_queue(self.queue.clone())
        .with_store(self.store.clone())
    }

    /// A handler on this world's ECS, topic and clock, without queue or store.
    fn storeless(&self) -> Handler<FakeEcs, FakeSns, FakeClock> {
        Handler::new(
            config(&[]),
            self.ecs.clone(),
            self.sns.clone(),
            self.clock.clone(),
        )
    }

    /// Handles `event`, then delivers every delay-queue message it leads to, advancing the
    /// clock by each delay: the report of the last step.
    async fn run_with(&self, extra: &[(&str, &str)], event: Value) -> Result<Report, HandlerError> {
        let handler = self.handler(extra);
        let report = handler.handle(event, &Invocation::default()).await?;
        self.deliver(&handler, report).await
    }

    /// Delivers every delay-queue message, advancing the clock by each delay: the report of
    /// the last step (`report` when there was none).
    async fn deliver(
        &self,
        handler: &TestHandler,
        mut report: Report,
    ) -> Result<Report, HandlerError> {
        while let Some((body, delay)) = self.queue.pop() {
            self.clock.advance(delay);
            report = handler
                .handle_message(&body, &Invocation::default())
                .await?;
        }
        Ok(report)
    }

    async fn run(&self, event: Value) -> Report {
        self.run_with(&[], event).await.expect("handled")
    }
}

/// A time as CloudTrail and ECS write it.
fn utc(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Sample 14 (a successful launch of two Fargate tasks), recorded at the clock's time.
fn launch(world: &World) -> Value {
    let mut e = event("14-started-fargate.json");
    e["detail"]["eventTime"] = json!(utc(world.clock.now()));
    e
}

/// A state change of `task` stopped now, from sample `file`.
fn stop(world: &World, file: &str, task: &str) -> Value {
    let mut e = event(file);
    let now = utc(world.clock.now());
    e["id"] = json!(format!("stop-{task}"));
    e["time"] = json!(now);
    e["resources"] = json!([task]);
    e["detail"]["taskArn"] = json!(task);
    e["detail"]["stoppedAt"] = json!(now);
    e
}

/// Sample 15's state change (pull throttled: transient) for `task`.
fn throttled(world: &World, task: &str) -> Value {
    stop(world, "15-stopped-pull-throttled.json", task)
}

fn stored_request() -> RunTaskRequest {
    serde_json::from_value(event("14-started-fargate.json")["detail"]["requestParameters"].clone())
        .expect("request")
}

#[tokio::test]
async fn a_task_that_failed_to_start_is_rerun_once_with_every_field_of_its_launch() {
    let world = World::new(vec![]);
    assert_eq!(world.run(launch(&world)).await.outcome, Outcome::Guarded);
    assert_eq!(world.store.guarded(), 2, "both tasks of the launch");

    let report = world.run(throttled(&world, TASK)).await;

    assert_eq!(report.outcome, Outcome::Recovered, "{}", report.reason);
    assert_eq!(world.ecs.tasks_started(), 1);
    assert!(world.sns.sent().is_empty());
    let sent = &world.ecs.requests()[0];
    let mut expected = stored_request();
    expected.task_definition = Some(REVISION.to_owned());
    expected.count = Some(1);
    expected.client_token = sent.client_token.clone();
    expected.tags = sent.tags.clone();
    assert_eq!(
        *sent, expected,
        "every field of the launch, pinned, one task"
    );
    assert!(
        sent.client_token
            .as_deref()
            .is_some_and(|t| t.starts_with(TOKEN_PREFIX))
    );
    assert_eq!(tag(sent, ATTEMPT_TAG), Some("1"));
    assert_eq!(
        tag(sent, CALL_TAG),
        Some("9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"),
        "the job's call tag: the launch's token"
    );
    assert_eq!(tag(sent, "team"), Some("data"), "the user's tags stay");
}

#[tokio::test]
async fn the_same_stop_delivered_twice_starts_one_task() {
    let world = World::new(vec![]);
    world.run(launch(&world)).await;
    let stopped = throttled(&world, TASK);
    world.run(stopped.clone()).await;
    // The same delivery again, and another change of the same stopped task (a new event ID).
    world.clock.advance(Duration::from_secs(90));
    world.run(stopped.clone()).await;
    let mut later = stopped;
    later["id"] = json!("another-change-of-the-same-task");
    later["detail"]["version"] = json!(5);
    let again = world.run(later).await;
    assert_eq!(world.ecs.tasks_started(), 1, "{}", again.reason);
}

#[tokio::test]
async fn a_permanent_reason_is_notified_once_however_often_it_is_delivered() {
    let world = World::new(vec![]);
    world.run(launch(&world)).await;
    let task2 = "arn:aws:ecs:us-east-1:111122223333:task/jobs/6f2a1d3b0c4e5f9ab8d7c6e5f4a3b2c1";
    let stopped = stop(&world, "16-stopped-image-not-found.json", task2);
    let first = world.run(stopped.clone()).await;
    let second = world.run(stopped).await;
    assert_eq!(first.outcome, Outcome::NotRetryable);
    assert_eq!(second.outcome, Outcome::NotRetryable);
    assert!(first.notified && !second.notified);
    assert_eq!(world.sns.sent().len(), 1);
    assert_eq!(world.ecs.tasks_started(), 0);
    let body: Value = serde_json::from_str(&world.sns.sent()[0].body).expect("JSON");
    assert_eq!(body["stopped_task"], task2);
}

#[tokio::test]
async fn attempts_count_across_invocations_and_end_in_one_notification() {
    let world = World::new(vec![]);
    world.run(launch(&world)).await;
    let mut task = TASK.to_owned();
    let mut outcomes = Vec::new();
    // Every rerun task fails to start in turn.
    for _ in 0..4 {
        world.clock.advance(Duration::from_secs(60));
        let report = world.run(throttled(&world, &task)).await;
        outcomes.push(report.outcome);
        if let Some(last) = world.ecs.tasks().last() {
            task = last.arn.clone();
        }
    }
    assert_eq!(
        outcomes,
        [
            Outcome::Recovered,
            Outcome::Recovered,
            Outcome::Recovered,
            Outcome::GaveUp
        ]
    );
    let attempts: Vec<_> = world
        .ecs
        .requests()
        .iter()
        .map(|r| tag(r, ATTEMPT_TAG).map(str::to_owned))
        .collect();
    assert_eq!(
        attempts,
        [Some("1".into()), Some("2".into()), Some("3".into())],
        "three calls for the job, numbered across invocations"
    );
    assert_eq!(world.sns.sent().len(), 1, "one notification at the end");
}

#[tokio::test]
async fn a_rerun_answered_with_failures_retries_within_the_jobs_attempts() {
    let world = World::new(vec![fail("RESOURCE:MEMORY", 0), fail("RESOURCE:MEMORY", 0)]);
    world.run(launch(&world)).await;
    let report = world.run(throttled(&world, TASK)).await;
    assert_eq!(report.outcome, Outcome::Recovered, "{}", report.reason);
    assert_eq!(world.ecs.requests().len(), 3);
    assert_eq!(world.ecs.tasks_started(), 1);
}

#[tokio::test]
async fn a_task_not_yet_stored_is_looked_for_again_and_rerun_once_its_launch_arrives() {
    let world = World::new(vec![]);
    let handler = world.handler(&[]);
    let invocation = Invocation::default();
    let report = handler
        .handle(throttled(&world, TASK), &invocation)
        .await
        .expect("handled");
    assert_eq!(report.outcome, Outcome::Waiting);
    let (recheck, delay) = world.queue.pop().expect("a recheck");
    assert_eq!(delay, Duration::from_secs(60));

    // CloudTrail's record of the launch arrives late, then the recheck.
    world.run(launch(&world)).await;
    world.clock.advance(delay);
    let report = handler
        .handle_message(&recheck, &invocation)
        .await
        .expect("handled");
    let report = world.deliver(&handler, report).await.expect("handled");
    assert_eq!(report.outcome, Outcome::Recovered, "{}", report.reason);
    assert_eq!(world.ecs.tasks_started(), 1);
}

#[tokio::test]
async fn a_task_whose_launch_never_arrives_is_notified_after_a_quarter_of_an_hour() {
    let world = World::new(vec![]);
    let report = world.run(throttled(&world, TASK)).await;
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert!(
        report
            .reason
            .contains("stopped before its start was recorded"),
        "{}",
        report.reason
    );
    assert_eq!(world.clock.now_since_start(), Duration::from_secs(900));
    assert_eq!(world.sns.sent().len(), 1);
    assert_eq!(world.ecs.tasks_started(), 0);
}

#[tokio::test]
async fn a_batch_task_is_counted_not_notified() {
    let world = World::new(vec![]);
    let mut stopped = throttled(&world, TASK);
    stopped["detail"]["clusterArn"] =
        json!("arn:aws:ecs:us-east-1:111122223333:cluster/AWSBatch-nightly-ce-0a1b2c3d");
    let report = world.run(stopped).await;
    assert_eq!(report.outcome, Outcome::Unguarded);
    assert!(world.sns.sent().is_empty());
    assert_eq!(world.queue.len(), 0);
}

#[tokio::test]
async fn a_batch_launch_is_not_guarded() {
    let world = World::new(vec![]);
    let mut record = launch(&world);
    record["detail"]["userIdentity"]["invokedBy"] = json!("batch.amazonaws.com");
    let report = world.run(record).await;
    assert_eq!(report.outcome, Outcome::Ignored, "{}", report.reason);
    assert_eq!(world.store.guarded(), 0);
}

#[tokio::test]
async fn a_spot_interruption_is_notified_unless_a_rule_says_retry() {
    let interrupted = |world: &World| {
        let mut e = stop(world, "17-spot-notice-running.json", TASK);
        e["detail"]["lastStatus"] = json!("STOPPED");
        e
    };
    let world = World::new(vec![]);
    world.run(launch(&world)).await;
    let report = world.run(interrupted(&world)).await;
    assert_eq!(report.outcome, Outcome::NotRetryable, "{}", report.reason);
    assert_eq!(world.ecs.tasks_started(), 0);

    let world = World::new(vec![]);
    world.run(launch(&world)).await;
    let rules = r#"[{"onStopCode": "SpotInterruption", "action": "retry"}]"#;
    let report = world
        .run_with(&[("ECS_RERUN_RULES", rules)], interrupted(&world))
        .await
        .expect("handled");
    assert_eq!(report.outcome, Outcome::Recovered, "{}", report.reason);
    assert_eq!(world.ecs.tasks_started(), 1);
}

#[tokio::test]
async fn a_spot_notice_while_the_task_runs_starts_nothing() {
    let world = World::new(vec![]);
    world.run(launch(&world)).await;
    let rules = r#"[{"onStopCode": "SpotInterruption", "action": "retry"}]"#;
    let report = world
        .run_with(
            &[("ECS_RERUN_RULES", rules)],
            stop(&world, "17-spot-notice-running.json", TASK),
        )
        .await
        .expect("handled");
    assert_eq!(report.outcome, Outcome::Ignored);
    assert_eq!(world.ecs.tasks_started(), 0);
}

#[tokio::test]
async fn a_launch_with_a_redacted_environment_is_notified_not_rerun_without_it() {
    let world = World::new(vec![]);
    let mut record = launch(&world);
    record["detail"]["requestParameters"]["overrides"]["containerOverrides"][0]["environment"] =
        json!("HIDDEN_DUE_TO_SECURITY_REASONS");
    world.run(record).await;
    let report = world.run(throttled(&world, TASK)).await;
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert!(report.reason.contains("redacted"), "{}", report.reason);
    assert_eq!(world.ecs.tasks_started(), 0);
}

#[tokio::test]
async fn a_notification_claimed_by_another_delivery_fails_until_it_is_sent_or_its_claim_expires() {
    let world = World::new(vec![]);
    world.run(launch(&world)).await;
    let task2 = "arn:aws:ecs:us-east-1:111122223333:task/jobs/6f2a1d3b0c4e5f9ab8d7c6e5f4a3b2c1";
    let stopped = stop(&world, "16-stopped-image-not-found.json", task2);
    // Another delivery claimed it and may still be publishing: its claim holds until its
    // deadline, a minute away.
    let key = format!("task|{task2}");
    let now = world.clock.now();
    let deadline = now + Duration::from_secs(60);
    assert_eq!(
        world
            .store
            .claim_notice(&key, now, deadline, now)
            .await
            .expect("claim"),
        Claim::Granted
    );
    let err = world.run_with(&[], stopped.clone()).await.unwrap_err();
    assert!(matches!(err, HandlerError::NoticeInFlight { .. }), "{err}");
    assert!(world.sns.sent().is_empty());

    // Past its deadline that invocation is gone (Lambda's retry comes a minute after a failure).
    world.clock.advance(Duration::from_secs(61));
    let report = world.run(stopped).await;
    assert!(report.notified);
    assert_eq!(world.sns.sent().len(), 1);
}

#[tokio::test]
async fn a_failed_publish_releases_its_claim_so_the_redelivery_notifies() {
    let world = World::new(vec![]);
    world.run(launch(&world)).await;
    let task2 = "arn:aws:ecs:us-east-1:111122223333:task/jobs/6f2a1d3b0c4e5f9ab8d7c6e5f4a3b2c1";
    let stopped = stop(&world, "16-stopped-image-not-found.json", task2);
    let failing = world.with_sns(FakeSns::failing()).handler(&[]);
    let err = failing
        .handle(stopped.clone(), &Invocation::default())
        .await
        .unwrap_err();
    assert!(matches!(err, HandlerError::Publish(_)), "{err}");
    let report = world.run(stopped).await;
    assert!(report.notified, "{}", report.reason);
    assert_eq!(world.sns.sent().len(), 1);
}

#[tokio::test]
async fn duplicate_deliveries_of_a_failed_call_notify_once() {
    let world = World::new(vec![]);
    let mut record = event("06-attribute.json");
    record["detail"]["eventTime"] = json!(utc(world.clock.now()));
    world.run(record.clone()).await;
    world.run(record).await;
    assert_eq!(world.sns.sent().len(), 1);
}

#[tokio::test]
async fn without_a_store_stopped_tasks_and_launches_are_ignored_with_the_reason() {
    let world = World::new(vec![]);
    let handler = world.storeless();
    let invocation = Invocation::default();
    let launched = handler
        .handle(launch(&world), &invocation)
        .await
        .expect("handled");
    let stopped = handler
        .handle(throttled(&world, TASK), &invocation)
        .await
        .expect("handled");
    assert_eq!(launched.outcome, Outcome::Ignored);
    assert!(
        launched.reason.contains("no launch store"),
        "{}",
        launched.reason
    );
    assert_eq!(stopped.outcome, Outcome::Ignored);
    assert!(
        stopped.reason.contains("ECS_RERUN_STORE_TABLE"),
        "{}",
        stopped.reason
    );
    assert_eq!(world.ecs.tasks_started(), 0);
}

#[tokio::test]
async fn every_sample_event_has_its_expected_dry_run_outcome_played_in_order() {
    // As `make replay-dry` plays them: in order, through one store, each retimed to now.
    let text = std::fs::read_to_string(common::repo_path("events/expected.json")).unwrap();
    let expected: std::collections::BTreeMap<String, Value> = serde_json::from_str(&text).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(common::repo_path("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json") && n != "expected.json")
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        expected.len(),
        "every event file has an expectation and vice versa"
    );
    let world = World::new(vec![]);
    for file in files {
        let mut e = event(&file);
        for pointer in ["/detail/eventTime", "/detail/stoppedAt", "/time"] {
            if let Some(slot) = e.pointer_mut(pointer) {
                *slot = json!(utc(world.clock.now()));
            }
        }
        let report = world
            .run_with(&[("ECS_RERUN_DRY_RUN", "true")], e)
            .await
            .unwrap();
        let outcome = serde_json::to_value(report.outcome).unwrap();
        assert_eq!(
            outcome, expected[&file]["dry_run"],
            "{file}: {}",
            report.reason
        );
        assert!(
            world.ecs.requests().is_empty(),
            "{file}: a dry run launches nothing"
        );
    }
}

/// Sample 14 as one call of one task: `T1` started by the caller's SDK retry of a throttled try.
fn one_task_launch(world: &World) -> Value {
    let mut e = launch(world);
    e["detail"]["requestParameters"]["count"] = json!(1);
    e["detail"]["responseElements"]["tasks"] =
        json!([{"taskArn": "arn:aws:ecs:us-east-1:111122223333:task/jobs/t0"}]);
    e
}

#[tokio::test]
async fn a_stopped_task_found_by_the_exact_replay_and_by_its_record_is_rerun_once() {
    // Review finding: the caller's throttled try (record R1) and its SDK retry that started T1
    // (record R2) both put T1 in the store, ecs-rerun's exact replay with one call, the record
    // with none; whichever comes last, T1's rerun must send the same token.
    let world = World::new(vec![]);
    let r2 = one_task_launch(&world);
    let mut r1 = r2.clone();
    r1["detail"]["errorCode"] = json!("ThrottlingException");
    r1["detail"]["errorMessage"] = json!("Rate exceeded");
    r1["detail"]["responseElements"] = Value::Null;
    r1["detail"]["eventID"] = json!("r1-throttled-try");
    let request: RunTaskRequest =
        serde_json::from_value(r2["detail"]["requestParameters"].clone()).unwrap();
    world.ecs.caller_calls(&request);
    let t1 = "arn:aws:ecs:us-east-1:111122223333:task/jobs/t0";

    let replay = world.run(r1).await;
    assert_eq!(replay.outcome, Outcome::AlreadyStarted, "{}", replay.reason);
    world.run(throttled(&world, t1)).await;
    assert_eq!(world.ecs.tasks_started(), 2, "T1 and its rerun");

    // The record of the successful try comes last, then another change of T1.
    world.run(r2).await;
    let mut again = throttled(&world, t1);
    again["id"] = json!("another-change-of-t1");
    world.run(again).await;
    assert_eq!(world.ecs.tasks_started(), 2, "T1 is rerun once");
}

#[tokio::test]
async fn a_step_functions_task_interrupted_by_spot_is_left_to_its_workflow() {
    // Review finding: the caller's rule must see every stop, not only TaskFailedToStart.
    let world = World::new(vec![]);
    let mut record = launch(&world);
    record["detail"]["userIdentity"]["invokedBy"] = json!("states.amazonaws.com");
    world.run(record).await;
    let mut interrupted = stop(&world, "17-spot-notice-running.json", TASK);
    interrupted["detail"]["lastStatus"] = json!("STOPPED");
    let rules = r#"[{"onStopCode": "SpotInterruption", "action": "retry"}]"#;
    let report = world
        .run_with(&[("ECS_RERUN_RULES", rules)], interrupted)
        .await
        .expect("handled");
    assert_eq!(report.outcome, Outcome::NotRetryable, "{}", report.reason);
    assert_eq!(world.ecs.tasks_started(), 0);
}

/// A store whose confirmations fail (DynamoDB throttled after the publish went out).
#[derive(Default)]
struct UnconfirmedStore(MemoryStore);

impl LaunchStore for UnconfirmedStore {
    async fn guard(
        &self,
        task_arns: &[String],
        launch: &ecs_rerun::core::guard::GuardedLaunch,
        expires: SystemTime,
    ) -> Result<(), ecs_rerun::ports::store::StoreError> {
        self.0.guard(task_arns, launch, expires).await
    }

    async fn find(
        &self,
        task_arn: &str,
        now: SystemTime,
    ) -> Result<Option<ecs_rerun::core::guard::GuardedLaunch>, ecs_rerun::ports::store::StoreError>
    {
        self.0.find(task_arn, now).await
    }

    async fn claim_notice(
        &self,
        key: &str,
        now: SystemTime,
        lease: SystemTime,
        expires: SystemTime,
    ) -> Result<Claim, ecs_rerun::ports::store::StoreError> {
        self.0.claim_notice(key, now, lease, expires).await
    }

    async fn confirm_notice(&self, _: &str) -> Result<(), ecs_rerun::ports::store::StoreError> {
        Err(ecs_rerun::ports::store::StoreError {
            table: "t".into(),
            cause: "ProvisionedThroughputExceededException".into(),
        })
    }

    async fn release_notice(&self, key: &str) -> Result<(), ecs_rerun::ports::store::StoreError> {
        self.0.release_notice(key).await
    }
}

#[tokio::test]
async fn a_failed_confirmation_after_the_publish_does_not_fail_the_invocation() {
    // Review finding: failing here would make the redelivery publish a second time.
    let world = World::new(vec![]);
    let handler = world.storeless().with_store(UnconfirmedStore::default());
    let mut record = event("06-attribute.json");
    record["detail"]["eventTime"] = json!(utc(world.clock.now()));
    let report = handler
        .handle(record, &Invocation::default())
        .await
        .expect("the invocation succeeds");
    assert!(report.notified);
    assert_eq!(world.sns.sent().len(), 1);
}
