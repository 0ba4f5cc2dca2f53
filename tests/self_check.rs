//! The self-check (issue 19, part 4): the verdict over every answer CloudTrail and EventBridge
//! can give, the event that starts it, and the handler that reports it once.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{FakeClock, FakeEcs, FakeSns, World, assert_custom_notification, config};
use ecs_rerun::core::decode::{Decoded, decode};
use ecs_rerun::core::message::{DEFAULT_MAX_MESSAGE_SIZE, NotificationFormat};
use ecs_rerun::core::outcome::Outcome;
use ecs_rerun::core::self_check::{
    AdvancedSelector, CallFailure, ClassicSelector, DETAIL_TYPE, FieldSelector, Observation,
    Problem, RuleAnswer, SOURCE, Selectors, TrailProbe, TrailSummary, judge,
};
use ecs_rerun::handler::{Handler, HandlerError, Invocation};
use ecs_rerun::metrics::emf_line;
use ecs_rerun::ports::hearing::Hearing;
use serde_json::{Value, json};

const REGION: &str = "us-east-1";
const FAILED_RULE: &str = "ecs-rerun-failed-runtask";

fn trail(name: &str, home: &str, multi_region: bool) -> TrailSummary {
    TrailSummary {
        name: name.to_owned(),
        arn: format!("arn:aws:cloudtrail:{home}:111122223333:trail/{name}"),
        home_region: Some(home.to_owned()),
        multi_region,
    }
}

fn classic(read_write: &str) -> Selectors {
    Selectors::Classic(vec![ClassicSelector {
        include_management_events: Some(true),
        read_write_type: Some(read_write.to_owned()),
        exclude_management_event_sources: Vec::new(),
    }])
}

fn field(name: &str, equals: &[&str]) -> FieldSelector {
    FieldSelector {
        field: name.to_owned(),
        equals: equals.iter().map(|v| (*v).to_owned()).collect(),
        ..FieldSelector::default()
    }
}

fn advanced(fields: Vec<FieldSelector>) -> Selectors {
    Selectors::Advanced(vec![AdvancedSelector {
        name: Some("management".to_owned()),
        fields,
    }])
}

fn denied(action: &'static str) -> CallFailure {
    CallFailure {
        action,
        code: "AccessDeniedException".to_owned(),
        message: "User is not authorized".to_owned(),
    }
}

fn probe(trail: &TrailSummary, logging: bool, selectors: Selectors) -> TrailProbe {
    TrailProbe {
        arn: trail.arn.clone(),
        logging: Ok(logging),
        selectors: Ok(selectors),
    }
}

fn enabled(name: &str) -> RuleAnswer {
    RuleAnswer {
        name: name.to_owned(),
        state: Ok(Some("ENABLED".to_owned())),
    }
}

/// One trail of this Region with `selectors`, logging or not, and the failed-RunTask rule enabled.
fn one_trail(logging: bool, selectors: Selectors) -> Observation {
    let main = trail("main", REGION, false);
    Observation {
        region: REGION.to_owned(),
        probes: vec![probe(&main, logging, selectors)],
        trails: Ok(vec![main]),
        rules: vec![enabled(FAILED_RULE)],
    }
}

// --- the verdict --------------------------------------------------------------------------------

#[test]
fn a_logging_trail_with_write_management_events_and_enabled_rules_hears() {
    for selectors in [
        classic("All"),
        classic("WriteOnly"),
        Selectors::Classic(vec![ClassicSelector::default()]), // the API's defaults: All, included
        advanced(vec![field("eventCategory", &["Management"])]),
        advanced(vec![
            field("eventCategory", &["Management"]),
            field("readOnly", &["false"]),
        ]),
    ] {
        let verdict = judge(&one_trail(true, selectors.clone()));
        assert!(verdict.ok(), "{selectors:?}: {:?}", verdict.problems);
        assert_eq!(verdict.outcome(), Outcome::SelfCheckOk);
        assert_eq!(verdict.hearing_trail.as_deref(), Some("main"));
        assert_eq!(verdict.rules_enabled, [FAILED_RULE]);
        assert!(
            verdict
                .notification(NotificationFormat::Text, DEFAULT_MAX_MESSAGE_SIZE)
                .is_none()
        );
    }
}

#[test]
fn no_trail_at_all() {
    let observation = Observation {
        region: REGION.to_owned(),
        trails: Ok(Vec::new()),
        probes: Vec::new(),
        rules: vec![enabled(FAILED_RULE)],
    };
    let verdict = judge(&observation);
    assert_eq!(
        verdict.problems,
        [Problem::NoTrail {
            region: REGION.to_owned(),
            elsewhere: Vec::new()
        }]
    );
    assert_eq!(verdict.outcome(), Outcome::SelfCheckFailed);
    assert!(
        verdict.problems[0]
            .what_to_do()
            .contains("CreateTrail=true")
    );
}

#[test]
fn a_single_region_trail_of_another_region_does_not_cover_this_one() {
    let elsewhere = trail("eu-only", "eu-west-1", false);
    let observation = Observation {
        region: REGION.to_owned(),
        // Even with a probe that would pass: it does not log this Region's calls.
        probes: vec![probe(&elsewhere, true, classic("All"))],
        trails: Ok(vec![elsewhere]),
        rules: vec![enabled(FAILED_RULE)],
    };
    let verdict = judge(&observation);
    assert_eq!(
        verdict.problems,
        [Problem::NoTrail {
            region: REGION.to_owned(),
            elsewhere: vec!["eu-only (home Region eu-west-1, single-Region)".to_owned()],
        }]
    );
}

#[test]
fn a_multi_region_trail_of_another_region_covers_this_one() {
    let org = trail("org", "eu-west-1", true);
    let observation = Observation {
        region: REGION.to_owned(),
        probes: vec![probe(&org, true, classic("All"))],
        trails: Ok(vec![org]),
        rules: vec![enabled(FAILED_RULE)],
    };
    let verdict = judge(&observation);
    assert!(verdict.ok(), "{:?}", verdict.problems);
    assert_eq!(verdict.hearing_trail.as_deref(), Some("org"));
}

#[test]
fn a_trail_that_is_not_logging() {
    let verdict = judge(&one_trail(false, classic("All")));
    assert_eq!(
        verdict.problems,
        [Problem::NotLogging {
            trail: "main".to_owned(),
            arn: format!("arn:aws:cloudtrail:{REGION}:111122223333:trail/main"),
        }]
    );
    assert!(verdict.problems[0].what_to_do().contains("start-logging"));
}

#[test]
fn read_only_or_excluded_management_events_are_not_heard() {
    let cases = [
        (classic("ReadOnly"), "ReadWriteType is ReadOnly"),
        (
            Selectors::Classic(vec![ClassicSelector {
                include_management_events: Some(false),
                ..ClassicSelector::default()
            }]),
            "IncludeManagementEvents is false",
        ),
        (
            Selectors::Classic(vec![ClassicSelector {
                exclude_management_event_sources: vec!["ecs.amazonaws.com".to_owned()],
                ..ClassicSelector::default()
            }]),
            "ExcludeManagementEventSources lists ecs.amazonaws.com",
        ),
        (Selectors::Classic(Vec::new()), "no event selector"),
    ];
    for (selectors, why) in cases {
        let verdict = judge(&one_trail(true, selectors));
        let [Problem::NoWriteManagementEvents { trail, why: found }] = verdict.problems.as_slice()
        else {
            panic!("{why}: {:?}", verdict.problems)
        };
        assert_eq!(trail, "main");
        assert!(found.contains(why), "{found:?} should say {why:?}");
    }
}

#[test]
fn advanced_selectors_that_leave_out_ecs_write_management_events() {
    let cases = [
        // data events only
        (
            advanced(vec![
                field("eventCategory", &["Data"]),
                field("resources.type", &["AWS::S3::Object"]),
            ]),
            "eventCategory Equals Data",
        ),
        // management events, read-only
        (
            advanced(vec![
                field("eventCategory", &["Management"]),
                field("readOnly", &["true"]),
            ]),
            "readOnly Equals true",
        ),
        // management events of every source but ECS
        (
            advanced(vec![
                field("eventCategory", &["Management"]),
                FieldSelector {
                    field: "eventSource".to_owned(),
                    not_equals: vec!["ecs.amazonaws.com".to_owned()],
                    ..FieldSelector::default()
                },
            ]),
            "eventSource NotEquals ecs.amazonaws.com",
        ),
        // a field this check cannot judge is not taken for a pass
        (
            advanced(vec![
                field("eventCategory", &["Management"]),
                field("userIdentity.arn", &["arn:aws:iam::111122223333:role/x"]),
            ]),
            "filters on userIdentity.arn",
        ),
    ];
    for (selectors, why) in cases {
        let verdict = judge(&one_trail(true, selectors));
        let [Problem::NoWriteManagementEvents { why: found, .. }] = verdict.problems.as_slice()
        else {
            panic!("{why}: {:?}", verdict.problems)
        };
        assert!(found.contains(why), "{found:?} should say {why:?}");
    }
}

#[test]
fn one_trail_that_hears_is_enough() {
    let stopped = trail("stopped", REGION, false);
    let org = trail("org", "eu-west-1", true);
    let observation = Observation {
        region: REGION.to_owned(),
        probes: vec![
            probe(&stopped, false, classic("All")),
            probe(&org, true, classic("WriteOnly")),
        ],
        trails: Ok(vec![stopped, org]),
        rules: vec![enabled(FAILED_RULE)],
    };
    let verdict = judge(&observation);
    assert!(verdict.ok(), "{:?}", verdict.problems);
    assert_eq!(verdict.hearing_trail.as_deref(), Some("org"));
}

#[test]
fn a_disabled_rule() {
    let mut observation = one_trail(true, classic("All"));
    observation.rules = vec![
        enabled(FAILED_RULE),
        RuleAnswer {
            name: "ecs-rerun-stopped-task".to_owned(),
            state: Ok(Some("DISABLED".to_owned())),
        },
    ];
    let verdict = judge(&observation);
    assert_eq!(
        verdict.problems,
        [Problem::RuleDisabled {
            rule: "ecs-rerun-stopped-task".to_owned(),
            state: "DISABLED".to_owned(),
        }]
    );
    assert!(verdict.problems[0].what_to_do().contains("enable-rule"));
    // the trail still hears: the notification says exactly what is wrong
    assert_eq!(verdict.hearing_trail.as_deref(), Some("main"));
}

#[test]
fn a_rule_enabled_with_all_management_events_still_delivers() {
    let mut observation = one_trail(true, classic("All"));
    observation.rules = vec![RuleAnswer {
        name: FAILED_RULE.to_owned(),
        state: Ok(Some(
            "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS".to_owned(),
        )),
    }];
    assert!(judge(&observation).ok());
}

#[test]
fn a_missing_rule() {
    let mut observation = one_trail(true, classic("All"));
    observation.rules = vec![RuleAnswer {
        name: FAILED_RULE.to_owned(),
        state: Ok(None),
    }];
    let verdict = judge(&observation);
    assert_eq!(
        verdict.problems,
        [Problem::RuleMissing {
            rule: FAILED_RULE.to_owned()
        }]
    );
}

#[test]
fn denied_calls_are_problems_that_name_the_permission() {
    // DescribeTrails denied: nothing about the trails can be known.
    let observation = Observation {
        region: REGION.to_owned(),
        trails: Err(denied("cloudtrail:DescribeTrails")),
        probes: Vec::new(),
        rules: vec![RuleAnswer {
            name: FAILED_RULE.to_owned(),
            state: Err(denied("events:DescribeRule")),
        }],
    };
    let verdict = judge(&observation);
    assert_eq!(verdict.problems.len(), 2, "{:?}", verdict.problems);
    for (problem, action) in verdict
        .problems
        .iter()
        .zip(["cloudtrail:DescribeTrails", "events:DescribeRule"])
    {
        assert!(matches!(problem, Problem::CallFailed { .. }), "{problem:?}");
        assert!(
            problem.what_to_do().contains(&format!("Allow {action}")),
            "{problem}"
        );
    }
    // only calls failed: ecs-rerun may hear, it cannot tell, and the subject says so
    let note = verdict
        .notification(NotificationFormat::Text, DEFAULT_MAX_MESSAGE_SIZE)
        .expect("a failed check notifies");
    assert!(
        note.subject.starts_with(
            "[ecs-rerun] cannot check that it hears failed RunTask calls in us-east-1"
        ),
        "{}",
        note.subject
    );

    // GetTrailStatus and GetEventSelectors denied on the one trail
    for (logging, selectors, action) in [
        (
            Err(denied("cloudtrail:GetTrailStatus")),
            Ok(classic("All")),
            "cloudtrail:GetTrailStatus",
        ),
        (
            Ok(true),
            Err(denied("cloudtrail:GetEventSelectors")),
            "cloudtrail:GetEventSelectors",
        ),
    ] {
        let mut observation = one_trail(true, classic("All"));
        observation.probes[0].logging = logging;
        observation.probes[0].selectors = selectors;
        let verdict = judge(&observation);
        let [Problem::CallFailed { failure, checking }] = verdict.problems.as_slice() else {
            panic!("{:?}", verdict.problems)
        };
        assert_eq!(failure.action, action);
        assert_eq!(checking, "trail main");
        assert!(failure.denied());
    }
}

#[test]
fn a_failed_check_notifies_once_with_every_problem() {
    let mut observation = one_trail(false, classic("All"));
    observation.rules = vec![RuleAnswer {
        name: FAILED_RULE.to_owned(),
        state: Ok(Some("DISABLED".to_owned())),
    }];
    let verdict = judge(&observation);
    let note = verdict
        .notification(NotificationFormat::Text, DEFAULT_MAX_MESSAGE_SIZE)
        .expect("a notification");
    assert_eq!(
        note.subject,
        "[ecs-rerun] cannot hear failed RunTask calls in us-east-1: trail main is not logging (+1 more)"
    );
    assert!(note.subject.len() < 100 && note.subject.is_ascii());
    let body: Value = serde_json::from_str(&note.body).unwrap();
    let problems = body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2);
    assert!(problems.iter().all(|p| p["what_to_do"].as_str().is_some()));
    assert_eq!(note.attributes["outcome"], "self_check_failed");
    assert!(
        verdict
            .summary()
            .contains("rule ecs-rerun-failed-runtask is DISABLED")
    );
}

// --- the event ----------------------------------------------------------------------------------

/// The input the template's schedule sends (read from template.yaml, so that the two agree).
fn scheduled_input() -> Value {
    let template = std::fs::read_to_string(common::repo_path("template.yaml")).unwrap();
    let line = template
        .lines()
        .find(|l| l.trim_start().starts_with("Input: '{") && l.contains(SOURCE))
        .expect("the self-check rule's Input in template.yaml");
    let json = line
        .trim_start()
        .trim_start_matches("Input: '")
        .trim_end_matches('\'');
    serde_json::from_str(json).unwrap()
}

#[test]
fn the_scheduled_input_is_recognised_before_anything_else() {
    let input = scheduled_input();
    assert_eq!(input["source"], SOURCE);
    assert_eq!(input["detail-type"], DETAIL_TYPE);
    assert_eq!(decode(input), Ok(Decoded::SelfCheck));
    // a CloudTrail record is never taken for it, nor an EventBridge scheduled event
    assert!(matches!(
        decode(common::event("01-agent-ec2.json")),
        Ok(Decoded::Failed(_))
    ));
    let scheduled = json!({"version": "0", "id": "x", "source": "aws.events",
        "detail-type": "Scheduled Event", "account": "111122223333", "time": "2026-01-01T00:00:00Z",
        "region": REGION, "resources": [], "detail": {}});
    assert!(matches!(decode(scheduled), Ok(Decoded::Ignored(_))));
    // our source with another detail-type is not the check
    let other = json!({"source": SOURCE, "detail-type": "something else", "detail": {}});
    assert!(matches!(decode(other), Ok(Decoded::Ignored(_))));
}

// --- the handler --------------------------------------------------------------------------------

/// A scripted CloudTrail and EventBridge; counts the calls.
#[derive(Clone, Default)]
struct FakeHearing {
    trails: Option<Result<Vec<TrailSummary>, CallFailure>>,
    logging: HashMap<String, Result<bool, CallFailure>>,
    selectors: HashMap<String, Result<Selectors, CallFailure>>,
    rules: HashMap<String, Result<Option<String>, CallFailure>>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl FakeHearing {
    fn healthy() -> Self {
        let main = trail("main", REGION, false);
        Self {
            logging: HashMap::from([(main.arn.clone(), Ok(true))]),
            selectors: HashMap::from([(main.arn.clone(), Ok(classic("All")))]),
            trails: Some(Ok(vec![main])),
            rules: HashMap::from([(FAILED_RULE.to_owned(), Ok(Some("ENABLED".to_owned())))]),
            calls: Arc::default(),
        }
    }

    fn called(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

fn unscripted(action: &'static str) -> CallFailure {
    CallFailure {
        action,
        code: "Unscripted".to_owned(),
        message: "the test gave no answer".to_owned(),
    }
}

impl Hearing for FakeHearing {
    fn region(&self) -> &str {
        REGION
    }

    async fn trails(&self) -> Result<Vec<TrailSummary>, CallFailure> {
        self.called("DescribeTrails".to_owned());
        self.trails
            .clone()
            .unwrap_or_else(|| Err(unscripted("cloudtrail:DescribeTrails")))
    }

    async fn logging(&self, arn: &str) -> Result<bool, CallFailure> {
        self.called(format!("GetTrailStatus {arn}"));
        self.logging
            .get(arn)
            .cloned()
            .unwrap_or_else(|| Err(unscripted("cloudtrail:GetTrailStatus")))
    }

    async fn selectors(&self, arn: &str) -> Result<Selectors, CallFailure> {
        self.called(format!("GetEventSelectors {arn}"));
        self.selectors
            .get(arn)
            .cloned()
            .unwrap_or_else(|| Err(unscripted("cloudtrail:GetEventSelectors")))
    }

    async fn rule_state(&self, name: &str) -> Result<Option<String>, CallFailure> {
        self.called(format!("DescribeRule {name}"));
        self.rules
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err(unscripted("events:DescribeRule")))
    }
}

impl World {
    fn checking(
        &self,
        hearing: FakeHearing,
    ) -> Handler<
        FakeEcs,
        FakeSns,
        FakeClock,
        ecs_rerun::ports::queue::NoQueue,
        ecs_rerun::ports::store::NoStore,
        FakeHearing,
    > {
        self.checking_with(hearing, &[])
    }

    /// [`World::checking`] with more of the environment (`extra`).
    fn checking_with(
        &self,
        hearing: FakeHearing,
        extra: &[(&str, &str)],
    ) -> Handler<
        FakeEcs,
        FakeSns,
        FakeClock,
        ecs_rerun::ports::queue::NoQueue,
        ecs_rerun::ports::store::NoStore,
        FakeHearing,
    > {
        let mut env = vec![("ECS_RERUN_SELF_CHECK_RULES", FAILED_RULE)];
        env.extend_from_slice(extra);
        Handler::new(
            config(&env),
            self.ecs.clone(),
            self.sns.clone(),
            self.clock.clone(),
        )
        .with_hearing(hearing)
    }
}

#[tokio::test]
async fn a_good_check_publishes_nothing_and_counts_zero() {
    let world = World::new(Vec::new());
    let hearing = FakeHearing::healthy();
    let reply = world
        .checking(hearing.clone())
        .handle_payload(scheduled_input(), &Invocation::default())
        .await
        .unwrap();
    let [report] = reply.reports.as_slice() else {
        panic!("{reply:?}")
    };
    assert_eq!(report.outcome, Outcome::SelfCheckOk);
    assert!(!report.notified);
    assert!(world.sns.sent().is_empty());
    assert_eq!(reply.body["outcome"], "self_check_ok");
    let arn = format!("arn:aws:cloudtrail:{REGION}:111122223333:trail/main");
    assert_eq!(
        *hearing.calls.lock().unwrap(),
        [
            "DescribeTrails".to_owned(),
            format!("GetTrailStatus {arn}"),
            format!("GetEventSelectors {arn}"),
            format!("DescribeRule {FAILED_RULE}"),
        ]
    );
    let line: Value = serde_json::from_str(&emf_line(report, 0).unwrap()).unwrap();
    assert_eq!(line["SelfCheckFailed"], 0);
    assert!(line.get("FailuresSeen").is_none(), "a check is no failure");
}

#[tokio::test]
async fn a_failed_check_publishes_exactly_once_and_counts_one() {
    let world = World::new(Vec::new());
    let mut hearing = FakeHearing::healthy();
    // two problems: the trail stopped, the rule disabled; one notification all the same
    let arn = format!("arn:aws:cloudtrail:{REGION}:111122223333:trail/main");
    hearing.logging.insert(arn, Ok(false));
    hearing
        .rules
        .insert(FAILED_RULE.to_owned(), Ok(Some("DISABLED".to_owned())));
    let report = world
        .checking(hearing)
        .handle(scheduled_input(), &Invocation::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::SelfCheckFailed);
    assert!(report.notified);
    let sent = world.sns.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(Some(&sent[0].subject), report.subject.as_ref());
    assert!(
        sent[0]
            .subject
            .starts_with("[ecs-rerun] cannot hear failed RunTask calls in us-east-1: ")
    );
    let line: Value = serde_json::from_str(&emf_line(&report, 0).unwrap()).unwrap();
    assert_eq!(line["SelfCheckFailed"], 1);
    assert_eq!(line["Check"], "hearing");
    assert!(line.get("FailuresSeen").is_none(), "a check is no failure");
}

#[tokio::test]
async fn with_the_chat_format_a_failed_check_publishes_one_custom_notification() {
    let world = World::new(Vec::new());
    let mut hearing = FakeHearing::healthy();
    let arn = format!("arn:aws:cloudtrail:{REGION}:111122223333:trail/main");
    hearing.logging.insert(arn.clone(), Ok(false));
    hearing
        .rules
        .insert(FAILED_RULE.to_owned(), Ok(Some("DISABLED".to_owned())));
    let report = world
        .checking_with(hearing, &[("ECS_RERUN_NOTIFICATION_FORMAT", "chat")])
        .handle(scheduled_input(), &Invocation::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::SelfCheckFailed);
    assert!(report.notified);
    let sent = world.sns.sent();
    let [note] = sent.as_slice() else {
        panic!("one notification: {sent:?}")
    };
    let body: Value = serde_json::from_str(&note.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", note.body));
    assert_custom_notification(&body);
    assert_eq!(
        body["metadata"]["threadId"],
        format!("ecs-rerun-self-check-{REGION}")
    );
    // the subject and attributes of the text format; every problem and what to do about it
    assert_eq!(
        note.subject,
        "[ecs-rerun] cannot hear failed RunTask calls in us-east-1: trail main is not logging (+1 more)"
    );
    assert_eq!(note.attributes["outcome"], "self_check_failed");
    let title = body["content"]["title"].as_str().unwrap();
    assert!(title.ends_with(&note.subject), "{title}");
    let description = body["content"]["description"].as_str().unwrap();
    for wanted in [
        "Trail main covers this Region but is not logging",
        &format!("aws cloudtrail start-logging --name {arn}"),
        &format!("EventBridge rule {FAILED_RULE} is DISABLED"),
        &format!("aws events enable-rule --name {FAILED_RULE}"),
    ] {
        assert!(description.contains(wanted), "{wanted}: {description}");
    }
    let steps = body["content"]["nextSteps"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s.as_str().unwrap().contains("enable-rule")),
        "{steps:?}"
    );
}

#[test]
fn a_chat_self_check_notice_fits_the_topic_and_stays_a_custom_notification() {
    // A describe call whose error message is longer than the topic takes.
    let observation = Observation {
        region: REGION.to_owned(),
        trails: Err(CallFailure {
            action: "cloudtrail:DescribeTrails",
            code: "InternalFailure".to_owned(),
            message: "\"quoted\" and\nescaped ".repeat(20_000),
        }),
        probes: Vec::new(),
        rules: vec![enabled(FAILED_RULE)],
    };
    let verdict = judge(&observation);
    for max_size in [DEFAULT_MAX_MESSAGE_SIZE, 4096, 1024] {
        let note = verdict
            .notification(NotificationFormat::Chat, max_size)
            .expect("a failed check notifies");
        let attributes: usize = note
            .attributes
            .iter()
            .map(|(k, v)| k.len() + "String".len() + v.len())
            .sum();
        assert!(
            note.body.len() + attributes <= max_size,
            "{max_size}: {} bytes",
            note.body.len() + attributes
        );
        let body: Value = serde_json::from_str(&note.body).unwrap();
        assert_custom_notification(&body);
        assert_eq!(
            body["metadata"]["threadId"],
            format!("ecs-rerun-self-check-{REGION}")
        );
    }
    // the text format is unchanged: indented JSON with every problem
    let text = verdict
        .notification(NotificationFormat::Text, DEFAULT_MAX_MESSAGE_SIZE)
        .unwrap();
    let body: Value = serde_json::from_str(&text.body).unwrap();
    assert_eq!(body["problems"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_denied_describe_call_is_reported_not_a_crash() {
    let world = World::new(Vec::new());
    let hearing = FakeHearing {
        trails: Some(Err(denied("cloudtrail:DescribeTrails"))),
        rules: HashMap::from([(FAILED_RULE.to_owned(), Ok(Some("ENABLED".to_owned())))]),
        ..FakeHearing::default()
    };
    let report = world
        .checking(hearing)
        .handle(scheduled_input(), &Invocation::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::SelfCheckFailed);
    let sent = world.sns.sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].body.contains("Allow cloudtrail:DescribeTrails"),
        "{}",
        sent[0].body
    );
}

#[tokio::test]
async fn a_failed_publish_fails_the_invocation() {
    let world = World::new(Vec::new()).with_sns(FakeSns::failing());
    let mut hearing = FakeHearing::healthy();
    hearing.rules.insert(FAILED_RULE.to_owned(), Ok(None));
    let result = world
        .checking(hearing)
        .handle(scheduled_input(), &Invocation::default())
        .await;
    assert!(
        matches!(result, Err(HandlerError::Publish(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn without_aws_the_check_is_skipped() {
    let world = World::new(Vec::new());
    let handler = Handler::new(
        config(&[]),
        world.ecs.clone(),
        world.sns.clone(),
        world.clock.clone(),
    );
    let report = handler
        .handle(scheduled_input(), &Invocation::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Ignored);
    assert!(report.reason.contains("needs AWS"), "{}", report.reason);
    assert!(world.sns.sent().is_empty());
    assert!(emf_line(&report, 0).is_none());
}

#[test]
fn the_rule_list_is_validated() {
    let cfg = config(&[(
        "ECS_RERUN_SELF_CHECK_RULES",
        " a-failed-runtask, a-stopped-task ,",
    )]);
    assert_eq!(cfg.self_check_rules, ["a-failed-runtask", "a-stopped-task"]);
    let err = ecs_rerun::config::Config::from_lookup(|name| match name {
        "ECS_RERUN_TOPIC_ARN" => Some("arn:aws:sns:us-east-1:111122223333:t".to_owned()),
        "ECS_RERUN_SELF_CHECK_RULES" => Some("ok,not a rule".to_owned()),
        _ => None,
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("ECS_RERUN_SELF_CHECK_RULES"),
        "{err}"
    );
}
