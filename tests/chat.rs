//! The chat format (`ECS_RERUN_NOTIFICATION_FORMAT=chat`): every outcome that notifies makes a
//! custom notification of Amazon Q Developer in chat applications (aws-facts §15.3) with the
//! subject and attributes of the text format, one thread per failed call, within the topic's
//! size limit, without the secrets the text format masks.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use common::{assert_custom_notification, event, failure, launched, sns_size};
use ecs_rerun::core::chat::{self, thread_id};
use ecs_rerun::core::classify::Rules;
use ecs_rerun::core::decode::{Decoded, FailedRunTask, StartedRunTask, decode};
use ecs_rerun::core::guard::GuardedLaunch;
use ecs_rerun::core::launch::{LaunchResult, LaunchedTask, Lookup};
use ecs_rerun::core::message::{DEFAULT_MAX_MESSAGE_SIZE, Notification, NotificationFormat};
use ecs_rerun::core::org::AllowedAccounts;
use ecs_rerun::core::outcome::{Conclusion, Outcome};
use ecs_rerun::core::plan::episode::Step;
use ecs_rerun::core::plan::{self, Context, Decision, Policy};
use serde_json::{Value, json};

fn failed_from(e: Value) -> FailedRunTask {
    match decode(e) {
        Ok(Decoded::Failed(f)) => *f,
        other => panic!("expected a failed RunTask, got {other:?}"),
    }
}

/// The rerun of the task that sample `stopped` stops, launched by sample 14.
fn stopped(file: &str) -> FailedRunTask {
    let Ok(Decoded::Started(launch)) = decode(event("14-started-fargate.json")) else {
        panic!("sample 14 is a started launch")
    };
    let StartedRunTask { origin, .. } = *launch;
    match decode(event(file)) {
        Ok(Decoded::Stopped(task)) => GuardedLaunch::recorded(&origin, None).stopped(&task),
        other => panic!("expected a stopped task, got {other:?}"),
    }
}

/// How the episode of `failed` ends when it is decided `after` its record and every call of
/// it is answered by `answer(call)`.
fn conclude(
    failed: &FailedRunTask,
    after: Duration,
    answer: impl Fn(u32) -> LaunchResult,
) -> Conclusion {
    let mut now = failed.origin.recorded_at.expect("eventTime") + after;
    let ctx = Context {
        now,
        own_account: None,
        allowed_accounts: &AllowedAccounts::NONE,
        member_role: None,
        function_name: None,
    };
    let mut episode = match plan::decide(failed, &Rules::defaults(), &Policy::default(), ctx) {
        Decision::Conclude(c) => return c,
        Decision::Retry(episode) => *episode,
        Decision::Ignore(why) => panic!("ignored: {why:?}"),
    };
    loop {
        match episode.next(&Policy::default(), now, None) {
            Step::Lookup { wait, .. } => {
                now += wait;
                episode.record_lookup(Lookup::Found(Vec::new()));
            }
            Step::Launch { call, wait, .. } => {
                now += wait;
                episode.record(answer(call), now, &Rules::defaults());
            }
            Step::Done(c) => return c,
        }
    }
}

const MINUTE: Duration = Duration::from_secs(60);

fn refused(_: u32) -> LaunchResult {
    LaunchResult::Placed {
        tasks: Vec::new(),
        failures: vec![failure("RESOURCE:MEMORY")],
    }
}

fn started(_: u32) -> LaunchResult {
    // Created after the call: started by it, not found from before.
    let later = SystemTime::now() + Duration::from_secs(86_400);
    LaunchResult::Placed {
        tasks: launched(1)
            .into_iter()
            .map(|t| LaunchedTask {
                created_at: Some(later),
                ..t
            })
            .collect(),
        failures: Vec::new(),
    }
}

fn no_clear_answer(_: u32) -> LaunchResult {
    LaunchResult::Rejected {
        code: "ServerException".to_owned(),
        message: "Service Unavailable".to_owned(),
        ambiguous: true,
        existing: Vec::new(),
    }
}

/// Every outcome that notifies, from the sample records: (name, failed call, its conclusion).
fn notifying() -> Vec<(&'static str, FailedRunTask, Conclusion)> {
    let agent = failed_from(event("01-agent-ec2.json"));
    let attribute = failed_from(event("06-attribute.json"));
    let pull_throttled = stopped("15-stopped-pull-throttled.json");
    let image_missing = stopped("16-stopped-image-not-found.json");
    let three_days = Duration::from_secs(3 * 86_400);
    let cases = vec![
        ("gave_up", agent.clone(), conclude(&agent, MINUTE, refused)),
        (
            "gave_up, may have started",
            agent.clone(),
            conclude(&agent, MINUTE, no_clear_answer),
        ),
        (
            "not_retryable",
            attribute.clone(),
            conclude(&attribute, MINUTE, refused),
        ),
        (
            "stale",
            agent.clone(),
            conclude(&agent, three_days, refused),
        ),
        (
            "recovered (NotifyOnRecovery)",
            agent.clone(),
            conclude(&agent, MINUTE, started),
        ),
        (
            "stopped task, gave_up",
            pull_throttled.clone(),
            conclude(&pull_throttled, MINUTE, refused),
        ),
        (
            "stopped task, not_retryable",
            image_missing.clone(),
            conclude(&image_missing, MINUTE, refused),
        ),
    ];
    let outcomes: BTreeSet<_> = cases.iter().map(|(_, _, c)| c.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        BTreeSet::from(["gave_up", "not_retryable", "recovered", "stale"]),
        "the cases cover every outcome that notifies"
    );
    cases
}

fn body(note: &Notification) -> Value {
    serde_json::from_str(&note.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", note.body))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect()
}

#[test]
fn every_notifying_outcome_is_a_custom_notification() {
    for (name, failed, c) in notifying() {
        let origin = &failed.origin;
        let text = NotificationFormat::Text.compose(origin, &c, DEFAULT_MAX_MESSAGE_SIZE);
        let note = NotificationFormat::Chat.compose(origin, &c, DEFAULT_MAX_MESSAGE_SIZE);
        assert_eq!(note.subject, text.subject, "{name}: the subject is shared");
        assert_eq!(
            note.attributes, text.attributes,
            "{name}: so are the attributes"
        );
        let body = body(&note);
        assert_custom_notification(&body);
        assert_eq!(body["id"], origin.event_id, "{name}");

        let content = &body["content"];
        let description = content["description"].as_str().unwrap();
        let family = origin.request.task_family().unwrap();
        let cluster = origin.request.cluster_name();
        assert!(
            content["title"].as_str().unwrap().contains(&text.subject),
            "{name}: {}",
            content["title"]
        );
        for fact in [family, cluster, c.deciding.as_str()] {
            assert!(
                description.contains(fact),
                "{name}: no {fact} in {description}"
            );
        }
        assert_eq!(
            description.contains("*Calls:* none"),
            c.attempts.is_empty(),
            "{name}: {description}"
        );
        for (n, _) in c.attempts.iter().enumerate() {
            assert!(
                description.contains(&format!("\n{}. ", n + 1)),
                "{name}: call {}",
                n + 1
            );
        }
        assert_eq!(
            strings(&content["keywords"]),
            [c.outcome.as_str(), c.class.as_str(), cluster, family],
            "{name}"
        );

        let steps = strings(&content["nextSteps"]);
        let region = &origin.region;
        assert!(
            steps.iter().any(|s| s.contains(&format!(
                "https://{region}.console.aws.amazon.com/ecs/v2/clusters/{cluster}/tasks?region={region}"
            ))),
            "{name}: {steps:?}"
        );
        let trail = format!(
            "https://{region}.console.aws.amazon.com/cloudtrail/home?region={region}#/events/{}",
            origin.event_id
        );
        // A task that failed to start was told by ECS's event, not by a CloudTrail record.
        assert_eq!(
            steps.iter().any(|s| s.contains(&trail)),
            origin.stopped_task.is_none(),
            "{name}: {steps:?}"
        );

        let metadata = &body["metadata"];
        assert_eq!(metadata["threadId"], thread_id(origin), "{name}");
        assert_eq!(metadata["summary"], text.subject.as_str());
        assert_eq!(
            metadata["eventType"],
            format!("ecs-rerun-{}", c.outcome.as_str().replace('_', "-"))
        );
        let related = strings(&metadata["relatedResources"]);
        if let Some(task) = &origin.stopped_task {
            assert!(related.contains(&task.as_str()), "{name}: {related:?}");
            assert!(description.contains(task.as_str()));
        }
        assert_eq!(metadata["additionalContext"]["outcome"], c.outcome.as_str());
        assert_eq!(
            metadata["additionalContext"]["mayHaveStartedToken"].as_str(),
            c.may_have_started.as_deref(),
            "{name}"
        );
    }
}

#[test]
fn a_token_that_may_have_started_the_job_is_named() {
    let (_, failed, c) = notifying()
        .into_iter()
        .find(|(name, ..)| name.contains("may have started"))
        .unwrap();
    let token = c.may_have_started.clone().expect("an unclear last call");
    let note = chat::compose(&failed.origin, &c, DEFAULT_MAX_MESSAGE_SIZE);
    let body = body(&note);
    assert!(
        body["content"]["description"]
            .as_str()
            .unwrap()
            .contains(&format!("`{token}`")),
        "{}",
        body["content"]["description"]
    );
    assert!(
        body["content"]["title"]
            .as_str()
            .unwrap()
            .starts_with(":warning:")
    );
}

/// Sample 01 recorded again two seconds later, under another event ID: another record of the
/// same call (a throttled try and the final answer, or a second delivery of either).
fn same_call() -> FailedRunTask {
    let mut e = event("01-agent-ec2.json");
    assert_eq!(e["detail"]["eventTime"], "2025-05-01T03:00:05Z");
    e["detail"]["eventTime"] = json!("2025-05-01T03:00:07Z");
    e["detail"]["eventID"] = json!("5d0e7b95-3a7f-4c2b-8f1d-8e6c9b2a5f32");
    failed_from(e)
}

#[test]
fn one_thread_per_failed_call() {
    let first = failed_from(event("01-agent-ec2.json"));
    let gave_up = conclude(&first, MINUTE, refused);
    let thread = |failed: &FailedRunTask, c: &Conclusion| {
        body(&chat::compose(&failed.origin, c, DEFAULT_MAX_MESSAGE_SIZE))["metadata"]["threadId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let own = thread(&first, &gave_up);

    // Every notification of the episode shares it: another record of the call, a stale copy.
    let second = same_call();
    assert_ne!(second.origin.event_id, first.origin.event_id);
    assert_eq!(thread(&second, &conclude(&second, MINUTE, refused)), own);
    let stale = conclude(&first, Duration::from_secs(3 * 86_400), refused);
    assert_eq!(stale.outcome, Outcome::Stale);
    assert_eq!(thread(&first, &stale), own);

    // Another call (another token), another sample, each task that failed to start: its own.
    let mut e = event("01-agent-ec2.json");
    e["detail"]["requestParameters"]["clientToken"] = json!("a-later-call-of-the-same-job");
    let other_call = failed_from(e);
    let others = [
        thread(&other_call, &conclude(&other_call, MINUTE, refused)),
        thread(
            &failed_from(event("06-attribute.json")),
            &conclude(&failed_from(event("06-attribute.json")), MINUTE, refused),
        ),
        thread(
            &stopped("15-stopped-pull-throttled.json"),
            &conclude(&stopped("15-stopped-pull-throttled.json"), MINUTE, refused),
        ),
        thread(
            &stopped("16-stopped-image-not-found.json"),
            &conclude(&stopped("16-stopped-image-not-found.json"), MINUTE, refused),
        ),
    ];
    let all: BTreeSet<_> = others.iter().chain([&own]).collect();
    assert_eq!(all.len(), 5, "{all:?}");
    // Neither the call's token nor its cluster shows in the thread.
    assert!(!own.contains("0b6f2f57") && !own.contains("batch"), "{own}");
}

#[test]
fn a_huge_reason_is_cut_to_the_topics_limit_and_stays_valid() {
    // Failure texts with characters JSON must escape: 300 KB in the case with the most texts
    // (beyond the default limit), 30 KB in the others (beyond the smaller ones).
    let text = "quote \" backslash \\ newline \n tab \t é ";
    for (name, failed, mut c) in notifying() {
        let huge = text.repeat(if name == "gave_up" { 8_000 } else { 800 });
        c.why = huge.clone();
        c.deciding = huge.clone();
        if let Some(verdict) = c.original.first_mut() {
            verdict.failure = huge.clone();
        }
        for attempt in &mut c.attempts {
            for verdict in &mut attempt.failures {
                verdict.failure = huge.clone();
            }
        }
        for limit in [DEFAULT_MAX_MESSAGE_SIZE, 16_384, 4_096, 2_048, 1_024] {
            let note = chat::compose(&failed.origin, &c, limit);
            assert!(
                sns_size(&note) <= limit,
                "{name} {limit}: {}",
                sns_size(&note)
            );
            let body = body(&note);
            assert_custom_notification(&body);
            let description = body["content"]["description"].as_str().unwrap();
            if limit <= 4_096 {
                assert!(
                    description.ends_with("[cut to fit the topic's MaximumMessageSize]")
                        || description.is_empty(),
                    "{name} {limit}: {description}"
                );
            }
            if limit >= 2_048 {
                assert!(
                    description.starts_with("ECS task family"),
                    "{name} {limit}: the summary comes first and stays"
                );
                assert_eq!(body["metadata"]["threadId"], thread_id(&failed.origin));
            }
        }
    }
}

#[test]
fn nine_hundred_reasons_times_three_calls_fit() {
    let failed = failed_from(event("01-agent-ec2.json"));
    let c = conclude(&failed, MINUTE, |_| LaunchResult::Placed {
        tasks: Vec::new(),
        failures: (0..900)
            .map(|i| failure(&format!("RESOURCE:CUSTOM-{i}")))
            .collect(),
    });
    assert_eq!(c.attempts.len(), 3);
    let note = chat::compose(&failed.origin, &c, DEFAULT_MAX_MESSAGE_SIZE);
    let body = body(&note);
    assert_custom_notification(&body);
    let description = body["content"]["description"].as_str().unwrap();
    // Each answer lists its first five reasons by name and counts the rest.
    assert_eq!(
        description.matches(" more reason(s)").count(),
        3,
        "{description}"
    );
    assert_eq!(description.matches("`RESOURCE:CUSTOM-").count(), 3 * 5 + 1);
    assert!(note.body.len() < 4_096, "{}", note.body.len());
}

#[test]
fn secrets_never_reach_the_chat_notification() {
    let mut e = event("06-attribute.json");
    e["detail"]["requestParameters"]["overrides"] = json!({"containerOverrides": [{"name": "app",
        "environment": [{"name": "DB_PASSWORD", "value": "correct-horse-battery"}]}]});
    let failed = failed_from(e);
    let mut c = conclude(&failed, MINUTE, refused);
    let leaked = "instance rejected env correct-horse-battery, key AKIAIOSFODNN7EXAMPLE";
    c.why = format!("{} / {leaked}", c.why);
    c.deciding = leaked.to_owned();
    c.original[0].failure = leaked.to_owned();
    // A secret across the point where a long text is clipped: masked before, it cannot be cut
    // in half and slip through.
    c.rule = format!("{}correct-horse-battery", "r".repeat(1_015));
    for limit in [DEFAULT_MAX_MESSAGE_SIZE, 1_024] {
        let note = chat::compose(&failed.origin, &c, limit);
        let all = format!("{} {} {:?}", note.subject, note.body, note.attributes);
        for secret in ["correct-h", "AKIAIOSFODNN7EXAMPLE"] {
            assert!(!all.contains(secret), "{limit}: {secret} in {all}");
        }
        if limit == DEFAULT_MAX_MESSAGE_SIZE {
            assert!(
                note.body.contains("instance rejected env ***, key ***"),
                "masked, not dropped: {}",
                note.body
            );
        }
    }
}
