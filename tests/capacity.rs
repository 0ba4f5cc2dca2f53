//! Capacity fallback end to end through the ports: a fake ECS (with ECS's token table) where
//! Fargate Spot has no capacity while FARGATE starts what it is asked. Every test counts the
//! tasks started and where they run, and checks that no token went out with two requests.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use common::{
    Answer, FakeClock, FakeEcs, FakeSns, NOW, SPOT_CAPACITY, World, config, error, event, fail,
    failure, tag,
};
use ecs_rerun::core::decode::{Decoded, Failure, decode};
use ecs_rerun::core::marks::{ATTEMPT_TAG, FALLBACK_TAG};
use ecs_rerun::core::org::AllowedAccounts;
use ecs_rerun::core::outcome::Outcome;
use ecs_rerun::core::plan::{self, Context, Decision, Policy};
use ecs_rerun::core::request::RunTaskRequest;
use ecs_rerun::handler::{Handler, Invocation, Report};
use serde_json::{Value, json};

/// Spot → FARGATE for the nightly family, from attempt 2 of 3.
const RULES: &str = r#"[{"onReason": "*Capacity is unavailable*", "onCapacityProvider": "FARGATE_SPOT",
    "onTaskFamily": "thumbnailer", "action": "retry", "MaxAttempts": 3, "fallbackFromAttempt": 2,
    "fallback": {"capacityProviderStrategy": [{"capacityProvider": "FARGATE"}]}}]"#;

fn rules(from: Option<u32>, max: u32) -> String {
    let from = from.map_or_else(String::new, |n| format!(r#""fallbackFromAttempt": {n},"#));
    format!(
        r#"[{{"onReason": "*Capacity is unavailable*", "onCapacityProvider": "FARGATE_SPOT",
            "action": "retry", "MaxAttempts": {max}, {from}
            "fallback": {{"capacityProviderStrategy": [{{"capacityProvider": "FARGATE"}}]}}}}]"#
    )
}

fn utc(epoch_secs: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from(SystemTime::UNIX_EPOCH + Duration::from_secs(epoch_secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Sample 03 (two thumbnailer tasks, Fargate "Capacity is unavailable") on Fargate Spot alone,
/// recorded a minute ago.
fn spot_record() -> Value {
    let mut e = event("03-fargate-capacity.json");
    e["detail"]["requestParameters"]["capacityProviderStrategy"] =
        json!([{"capacityProvider": "FARGATE_SPOT", "weight": 1}]);
    let at = utc(NOW - 60);
    e["detail"]["eventTime"] = json!(at);
    e["time"] = json!(at);
    e
}

fn request_of(event: &Value) -> RunTaskRequest {
    serde_json::from_value(event["detail"]["requestParameters"].clone()).expect("request")
}

/// The placement a request names, as a person reads it.
fn placement(request: &RunTaskRequest) -> String {
    match (&request.launch_type, &request.capacity_provider_strategy) {
        (Some(launch_type), _) => launch_type.clone(),
        (None, Some(strategy)) => strategy
            .iter()
            .filter_map(|i| i.capacity_provider.clone())
            .collect::<Vec<_>>()
            .join("+"),
        (None, None) => "default".to_owned(),
    }
}

impl World {
    fn spot_outage(answers: Vec<Answer>) -> Self {
        let mut world = Self::new(answers);
        world.ecs = world.ecs.clone().spot_outage();
        world
    }

    fn handler(&self, extra: &[(&str, &str)]) -> Handler<FakeEcs, FakeSns, FakeClock> {
        Handler::new(
            config(extra),
            self.ecs.clone(),
            self.sns.clone(),
            self.clock.clone(),
        )
    }

    async fn run_with(&self, rules: &str, event: Value) -> Report {
        self.handler(&[("ECS_RERUN_RULES", rules)])
            .handle(event, &Invocation::default())
            .await
            .expect("handled")
    }

    /// Where each call of ecs-rerun went.
    fn placements(&self) -> Vec<String> {
        self.ecs.requests().iter().map(placement).collect()
    }

    /// Where each task started runs.
    fn task_placements(&self) -> Vec<String> {
        self.ecs
            .tasks()
            .iter()
            .map(|t| placement(&t.request))
            .collect()
    }

    /// No token went out with two different requests (ECS would answer ConflictException).
    fn assert_one_request_per_token(&self) {
        let mut seen: HashMap<String, RunTaskRequest> = HashMap::new();
        for request in self.ecs.requests() {
            let token = request.client_token.clone().unwrap_or_default();
            if let Some(earlier) = seen.insert(token.clone(), request.clone()) {
                assert_eq!(earlier, request, "token {token} sent with two requests");
            }
        }
    }
}

// ---- firing -----------------------------------------------------------------------------

#[tokio::test]
async fn spot_without_capacity_falls_back_to_fargate_from_the_attempt_the_rule_names() {
    let w = World::spot_outage(vec![]);
    let report = w.run_with(RULES, spot_record()).await;

    assert_eq!(
        report.outcome,
        Outcome::RecoveredOnFallback,
        "{}",
        report.reason
    );
    assert_eq!(w.placements(), ["FARGATE_SPOT", "FARGATE"]);
    assert_eq!(
        w.task_placements(),
        ["FARGATE", "FARGATE"],
        "both tasks, on FARGATE, once"
    );
    let requests = w.ecs.requests();
    assert_eq!(tag(&requests[0], ATTEMPT_TAG), Some("1"));
    assert_eq!(tag(&requests[1], ATTEMPT_TAG), Some("2"));
    assert_eq!(tag(&requests[0], FALLBACK_TAG), None);
    assert_eq!(
        tag(&requests[1], FALLBACK_TAG),
        Some("FARGATE_SPOT:FARGATE")
    );
    assert_ne!(requests[0].client_token, requests[1].client_token);
    w.assert_one_request_per_token();
    // Nothing else of the request changed.
    let mut same = requests[1].clone();
    same.capacity_provider_strategy = requests[0].capacity_provider_strategy.clone();
    same.client_token = requests[0].client_token.clone();
    same.tags = requests[0].tags.clone();
    assert_eq!(same, requests[0]);

    let sent = w.sns.sent();
    assert_eq!(
        sent.len(),
        1,
        "a recovery on the fallback is always notified"
    );
    assert_eq!(sent[0].attributes["outcome"], "recovered_on_fallback");
    let body: Value = serde_json::from_str(&sent[0].body).unwrap();
    let summary = body["summary"].as_str().unwrap();
    for says in [
        "after Capacity is unavailable at this time",
        "attempt 2 moved from FARGATE_SPOT to FARGATE",
        "started 2 task(s) there",
        "ran on FARGATE instead of FARGATE_SPOT: it costs more and is no longer interruptible",
    ] {
        assert!(summary.contains(says), "{says:?} not in {summary}");
    }
    assert_eq!(body["fallback"]["from"], "FARGATE_SPOT");
    assert_eq!(body["fallback"]["to"], "FARGATE");
    assert_eq!(body["fallback"]["attempt"], 2);
}

#[tokio::test]
async fn by_default_only_the_last_attempt_falls_back() {
    let w = World::spot_outage(vec![]);
    let report = w.run_with(&rules(None, 3), spot_record()).await;
    assert_eq!(report.outcome, Outcome::RecoveredOnFallback);
    assert_eq!(w.placements(), ["FARGATE_SPOT", "FARGATE_SPOT", "FARGATE"]);
    assert_eq!(w.ecs.tasks_started(), 2);
}

#[tokio::test]
async fn once_on_the_fallback_every_later_attempt_stays_there_and_may_give_up() {
    let w = World::spot_outage(vec![
        fail(SPOT_CAPACITY, 0),
        fail(SPOT_CAPACITY, 0),
        fail(SPOT_CAPACITY, 0),
    ]);
    let report = w.run_with(&rules(Some(2), 4), spot_record()).await;
    assert_eq!(
        report.outcome,
        Outcome::GaveUpAfterFallback,
        "{}",
        report.reason
    );
    assert_eq!(
        w.placements(),
        ["FARGATE_SPOT", "FARGATE", "FARGATE", "FARGATE"],
        "counts toward MaxAttempts; one switch, for good"
    );
    assert_eq!(w.ecs.tasks_started(), 0);
    w.assert_one_request_per_token();
    assert_eq!(
        w.sns.sent()[0].attributes["outcome"],
        "gave_up_after_fallback"
    );
}

#[tokio::test]
async fn a_server_error_on_the_fallback_attempt_is_resent_identically_and_starts_once() {
    let w = World::spot_outage(vec![Answer::ServerErrorAfterStart]);
    let report = w.run_with(RULES, spot_record()).await;
    assert_eq!(
        report.outcome,
        Outcome::RecoveredOnFallback,
        "{}",
        report.reason
    );
    let requests = w.ecs.requests();
    assert_eq!(w.placements(), ["FARGATE_SPOT", "FARGATE", "FARGATE"]);
    assert_eq!(requests[1], requests[2], "same token, same request");
    assert_eq!(w.task_placements(), ["FARGATE", "FARGATE"]);
}

#[tokio::test]
async fn the_first_attempt_falls_back_at_once_when_the_rule_says_so() {
    let w = World::spot_outage(vec![]);
    let report = w.run_with(&rules(Some(1), 3), spot_record()).await;
    assert_eq!(report.outcome, Outcome::RecoveredOnFallback);
    assert_eq!(
        w.placements(),
        ["FARGATE"],
        "the record itself was the capacity answer"
    );
}

// ---- never twice ------------------------------------------------------------------------

#[tokio::test]
async fn a_duplicate_delivery_during_a_fallback_episode_starts_nothing_twice() {
    let w = World::spot_outage(vec![]);
    let first = w.run_with(RULES, spot_record()).await;
    let second = w.run_with(RULES, spot_record()).await;
    assert_eq!(first.outcome, Outcome::RecoveredOnFallback);
    assert_eq!(second.outcome, Outcome::AlreadyStarted, "{}", second.reason);
    assert_eq!(w.task_placements(), ["FARGATE", "FARGATE"]);
    w.assert_one_request_per_token();
}

#[tokio::test]
async fn a_duplicate_delivery_where_only_the_first_met_a_throttle_starts_once() {
    let w = World::spot_outage(vec![error("ThrottlingException")]);
    let first = w.run_with(RULES, spot_record()).await;
    let second = w.run_with(RULES, spot_record()).await;
    assert_eq!(first.outcome, Outcome::RecoveredOnFallback);
    assert_eq!(second.outcome, Outcome::AlreadyStarted);
    assert_eq!(
        w.placements()[..3],
        ["FARGATE_SPOT", "FARGATE_SPOT", "FARGATE"],
        "the throttled attempt was resent on Spot, not moved"
    );
    assert_eq!(w.task_placements(), ["FARGATE", "FARGATE"]);
    w.assert_one_request_per_token();
}

#[tokio::test]
async fn the_throttled_record_and_the_final_record_of_one_call_fall_back_alike() {
    // The caller's SDK was throttled once, then answered 200 with Spot's capacity failures:
    // two records of one call. Both episodes must send each token with the same request.
    let w = World::spot_outage(vec![]);
    let final_record = spot_record();
    w.ecs.caller_calls(&request_of(&final_record));
    let mut throttled = final_record.clone();
    throttled["detail"]["errorCode"] = json!("ThrottlingException");
    throttled["detail"]["errorMessage"] = json!("Rate exceeded");
    throttled["detail"]["responseElements"] = Value::Null;
    let a = w.run_with(RULES, throttled).await;
    let b = w.run_with(RULES, final_record).await;
    assert_eq!(a.outcome, Outcome::RecoveredOnFallback, "{}", a.reason);
    assert_eq!(b.outcome, Outcome::AlreadyStarted, "{}", b.reason);
    assert_eq!(w.task_placements(), ["FARGATE", "FARGATE"]);
    w.assert_one_request_per_token();
}

#[tokio::test]
async fn a_redelivered_hop_and_a_redeploy_between_hops_keep_the_fallback_and_start_once() {
    let w = World::spot_outage(vec![]);
    let with_rule = w
        .handler(&[("ECS_RERUN_RULES", RULES)])
        .with_queue(w.queue.clone());
    with_rule
        .handle(spot_record(), &Invocation::default())
        .await
        .unwrap();
    let (hop, delay) = w.queue.pop().expect("attempt 1 waits in the queue");
    w.clock.advance(delay);
    with_rule
        .handle_message(&hop, &Invocation::default())
        .await
        .unwrap();
    assert_eq!(w.placements(), ["FARGATE_SPOT"]);
    let (hop, delay) = w.queue.pop().expect("attempt 2 waits in the queue");
    w.clock.advance(delay);
    // Redeployed without the rule: the hop carries the episode's fallback.
    let without_rule = w.handler(&[]).with_queue(w.queue.clone());
    let first = without_rule
        .handle_message(&hop, &Invocation::default())
        .await
        .unwrap();
    let again = without_rule
        .handle_message(&hop, &Invocation::default())
        .await
        .unwrap();
    assert_eq!(
        first.outcome,
        Outcome::RecoveredOnFallback,
        "{}",
        first.reason
    );
    // The redelivery resends the same token: ECS answers with the same tasks (a redelivered
    // hop cannot tell them from its own, as in tests/handler.rs), and starts none.
    assert_ne!(again.outcome, Outcome::GaveUp);
    assert_eq!(w.placements(), ["FARGATE_SPOT", "FARGATE", "FARGATE"]);
    assert_eq!(w.task_placements(), ["FARGATE", "FARGATE"]);
    w.assert_one_request_per_token();
}

// ---- not firing -------------------------------------------------------------------------

#[tokio::test]
async fn an_answer_with_another_failure_besides_capacity_does_not_fall_back() {
    let mixed = Answer::Place {
        place: 0,
        failures: vec![failure(SPOT_CAPACITY), failure("RESOURCE:MEMORY")],
    };
    let w = World::new(vec![mixed, fail(SPOT_CAPACITY, 0)]);
    let report = w.run_with(&rules(Some(2), 2), spot_record()).await;
    assert_eq!(report.outcome, Outcome::GaveUp, "{}", report.reason);
    assert_eq!(w.placements(), ["FARGATE_SPOT", "FARGATE_SPOT"]);
}

#[tokio::test]
async fn resends_that_use_up_the_calls_end_without_falling_back() {
    let w = World::spot_outage(vec![error("ThrottlingException"), error("ServerException")]);
    let report = w.run_with(&rules(Some(2), 2), spot_record()).await;
    assert_eq!(report.outcome, Outcome::GaveUp, "{}", report.reason);
    assert_eq!(w.placements(), ["FARGATE_SPOT", "FARGATE_SPOT"]);
    assert_eq!(w.ecs.tasks_started(), 0);
}

#[tokio::test]
async fn a_quota_message_or_another_placement_does_not_fall_back() {
    let w = World::spot_outage(vec![]);
    let mut quota = spot_record();
    quota["detail"]["responseElements"]["failures"] = json!([{"reason":
        "You've reached the limit on the number of vCPUs you can run concurrently"}]);
    let report = w.run_with(&rules(Some(1), 3), quota).await;
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert!(w.ecs.requests().is_empty());

    let mut on_demand = spot_record();
    on_demand["detail"]["requestParameters"]["capacityProviderStrategy"] =
        json!([{"capacityProvider": "FARGATE"}]);
    let w = World::new(vec![fail(SPOT_CAPACITY, 0)]);
    let report = w.run_with(&rules(Some(1), 3), on_demand).await;
    assert_eq!(report.outcome, Outcome::Recovered);
    assert_eq!(w.placements(), ["FARGATE", "FARGATE"]);
    assert!(
        w.ecs
            .requests()
            .iter()
            .all(|r| tag(r, FALLBACK_TAG).is_none())
    );
}

#[tokio::test]
async fn a_fallback_provider_ecs_refuses_is_a_configuration_error_never_retried() {
    let w = World::spot_outage(vec![error("InvalidParameterException")]);
    let report = w.run_with(&rules(Some(1), 3), spot_record()).await;
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert_eq!(w.placements(), ["FARGATE"], "one call, not retried");
    assert!(
        report
            .reason
            .contains("configuration error in rule onCapacityProvider=FARGATE_SPOT"),
        "{}",
        report.reason
    );
}

#[tokio::test]
async fn a_request_the_fallback_cannot_take_is_not_sent() {
    let onto_ec2 = r#"[{"onReason": "*Capacity is unavailable*", "onCapacityProvider": "FARGATE_SPOT",
        "action": "retry", "fallbackFromAttempt": 2,
        "fallback": {"capacityProviderStrategy": [{"capacityProvider": "gpu-asg"}]}}]"#;
    let w = World::spot_outage(vec![]);
    let report = w.run_with(onto_ec2, spot_record()).await;
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert_eq!(
        w.placements(),
        ["FARGATE_SPOT"],
        "the fallback request was not sent"
    );
    assert!(
        report.reason.contains("platformVersion"),
        "{}",
        report.reason
    );
    assert!(
        report.reason.contains("configuration error in rule"),
        "{}",
        report.reason
    );
}

#[tokio::test]
async fn a_spot_interruption_does_not_fall_back() {
    // A Spot task that ran and was interrupted, rerun by an operator's rule: capacity was there.
    let rules = ecs_rerun::core::classify::Rules::with_overrides(
        r#"[{"onStopCode": "SpotInterruption", "onCapacityProvider": "FARGATE_SPOT", "action": "retry",
             "fallbackFromAttempt": 1,
             "fallback": {"capacityProviderStrategy": [{"capacityProvider": "FARGATE"}]}}]"#,
        3,
    )
    .unwrap();
    let Ok(Decoded::Failed(mut failed)) = decode(spot_record()) else {
        panic!("a failed call");
    };
    failed.failure = Failure::Stopped {
        stop_code: "SpotInterruption".to_owned(),
        reason: "Your Spot Task was interrupted.".to_owned(),
        detail: String::new(),
    };
    let ctx = Context {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(NOW),
        own_account: None,
        allowed_accounts: &AllowedAccounts::NONE,
        member_role: None,
        function_name: None,
    };
    let Decision::Retry(mut episode) = plan::decide(&failed, &rules, &Policy::default(), ctx)
    else {
        panic!("the operator's rule retries it");
    };
    let plan::episode::Step::Launch { request, .. } =
        episode.next(&Policy::default(), ctx.now, None)
    else {
        panic!("a launch");
    };
    assert_eq!(placement(&request), "FARGATE_SPOT");
    assert_eq!(tag(&request, FALLBACK_TAG), None);
}

#[tokio::test]
async fn a_dry_run_says_it_would_fall_back() {
    let w = World::spot_outage(vec![]);
    let report = w
        .handler(&[("ECS_RERUN_RULES", RULES), ("ECS_RERUN_DRY_RUN", "true")])
        .handle(spot_record(), &Invocation::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::WouldRetry);
    assert!(
        report
            .reason
            .contains("would fall back to FARGATE from attempt 2"),
        "{}",
        report.reason
    );
    assert!(w.ecs.requests().is_empty());
}

#[tokio::test]
async fn the_fake_ecs_starts_fargate_while_spot_has_no_capacity() {
    // The fake itself, so that the tests above cannot pass on a fake that starts anything.
    let w = World::spot_outage(vec![]);
    let spot = request_of(&spot_record());
    let mut on_demand = spot.clone();
    on_demand.capacity_provider_strategy = None;
    on_demand.launch_type = Some("FARGATE".to_owned());
    on_demand.client_token = Some("other".to_owned());
    assert!(matches!(
        w.ecs.caller_calls(&spot),
        ecs_rerun::core::launch::LaunchResult::Placed { ref tasks, .. } if tasks.is_empty()
    ));
    assert!(matches!(
        w.ecs.caller_calls(&on_demand),
        ecs_rerun::core::launch::LaunchResult::Placed { ref tasks, .. } if tasks.len() == 2
    ));
}

// ---- an onCaller rule's fallback, across the records of one call ---------------------------

/// An `onCaller` rule: Spot → FARGATE from attempt 2 of 3, for calls by "other" callers.
const ON_CALLER_RULES: &str = r#"[{"onCaller": "other", "onReason": "*Capacity is unavailable*",
    "onCapacityProvider": "FARGATE_SPOT", "action": "retry", "MaxAttempts": 3,
    "fallbackFromAttempt": 2,
    "fallback": {"capacityProviderStrategy": [{"capacityProvider": "FARGATE"}]}}]"#;

/// The throttled and the final record of one SDK call whose first try ECS answered with
/// capacity failures (its token's stored answer).
fn sibling_records(w: &World) -> (Value, Value) {
    let final_record = spot_record();
    w.ecs.caller_calls(&request_of(&final_record));
    let mut throttled = final_record.clone();
    throttled["detail"]["errorCode"] = json!("ThrottlingException");
    throttled["detail"]["errorMessage"] = json!("Rate exceeded");
    throttled["detail"]["responseElements"] = Value::Null;
    (throttled, final_record)
}
/// Issue 21.1: the fallback "also works on a rule with `onCaller`". The throttled record and
/// the final record of one SDK call: the final record's episode takes the `onCaller` rule's
/// fallback from the recorded failure; the throttled record's episode fixes its fallback from
/// ECS's answer to the replay, classified without the caller (ecs-rerun's own answers), so the
/// `onCaller` rule never matches and it stays on Spot. Attempt 2 then goes out under one token
/// with two requests: Spot from the throttled copy (first), FARGATE from the final one, which
/// ECS refuses with `ConflictException` naming no task, so the job never reaches FARGATE.
/// Guards: the throttled record's episode (its replay answered with the final record's
/// capacity failures, classified with the recorded caller), then the final record's episode:
/// both fall back at attempt 2 to FARGATE, under one request per token.
#[tokio::test]
async fn sibling_records_agree_on_an_on_caller_rule_s_fallback() {
    let w = World::spot_outage(vec![]);
    let (throttled, final_record) = sibling_records(&w);
    let a = w.run_with(ON_CALLER_RULES, throttled).await;
    let b = w.run_with(ON_CALLER_RULES, final_record).await;

    w.assert_one_request_per_token();
    assert_eq!(
        w.task_placements(),
        ["FARGATE", "FARGATE"],
        "throttled copy: {:?} ({}); final copy: {:?} ({})",
        a.outcome,
        a.reason,
        b.outcome,
        b.reason
    );
}

/// Guards: the throttled record's episode waits in the delay queue before the replay whose
/// answer fixes its fallback, and resumes from the hop (a hop written now, and one written
/// before the hop kept the recorded caller, which is still read); then the final record's
/// episode. With the caller in the hop both fall back alike at attempt 2.
#[tokio::test]
async fn the_recorded_caller_travels_in_the_hop_to_the_answer_that_fixes_the_fallback() {
    for older in [false, true] {
        let w = World::spot_outage(vec![]);
        let (throttled, final_record) = sibling_records(&w);
        let handler = w
            .handler(&[
                ("ECS_RERUN_RULES", ON_CALLER_RULES),
                ("ECS_RERUN_HOP_AFTER_MS", "0"),
            ])
            .with_queue(w.queue.clone());
        let first = handler
            .handle(throttled, &Invocation::default())
            .await
            .expect("handled");
        assert_eq!(first.outcome, Outcome::Waiting, "{}", first.reason);
        assert!(w.ecs.requests().is_empty(), "the replay waits in the queue");
        let mut last = first;
        let mut hops = 0;
        while let Some((body, delay)) = w.queue.pop() {
            let mut hop: Value = serde_json::from_str(&body).expect("a hop");
            if older && let Some(episode) = hop["episode"].as_object_mut() {
                episode.remove("open_caller");
            }
            w.clock.advance(delay);
            last = handler
                .handle_message(&hop.to_string(), &Invocation::default())
                .await
                .expect("a hop is read, not dead-lettered");
            hops += 1;
        }
        assert!(hops >= 2, "{hops} hop(s)");
        if older {
            // Written before: the answer is classified as it was then, without the caller.
            assert_ne!(last.outcome, Outcome::Waiting, "{}", last.reason);
            continue;
        }
        assert_eq!(
            last.outcome,
            Outcome::RecoveredOnFallback,
            "{}",
            last.reason
        );
        let again = w.run_with(ON_CALLER_RULES, final_record).await;
        w.assert_one_request_per_token();
        assert_eq!(
            w.task_placements(),
            ["FARGATE", "FARGATE"],
            "final copy: {:?} ({})",
            again.outcome,
            again.reason
        );
    }
}
