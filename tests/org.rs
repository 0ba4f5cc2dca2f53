//! One central function serving an AWS Organization: a member account's failed launch is rerun
//! in that account and Region, never in the central one, never twice; a member the function
//! cannot reach is notified and nothing is launched anywhere. Counted on the fake ECS of the
//! whole organization (its token table is per account, Region and cluster) and on the topic;
//! then the adapter against the SDK with scripted STS and ECS answers.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    FakeClock, FakeOrg, FakeQueue, FakeSns, HOME_ACCOUNT, HOME_REGION, NOW, World, config, event,
    fail,
};
use ecs_rerun::aws::places::EcsPlaces;
use ecs_rerun::core::launch::LaunchResult;
use ecs_rerun::core::org::Place;
use ecs_rerun::core::outcome::Outcome;
use ecs_rerun::core::request::RunTaskRequest;
use ecs_rerun::handler::{Handler, Invocation, Report};
use ecs_rerun::ports::launch::{Launchers, ReachError, TaskLauncher};
use serde_json::{Value, json};

const MEMBER: &str = "444455556666";
const MEMBER_REGION: &str = "eu-west-1";
const ROLE: &str = "ecs-rerun-member";
const ORG: &[(&str, &str)] = &[
    ("ECS_RERUN_ALLOWED_ACCOUNTS", MEMBER),
    ("ECS_RERUN_MEMBER_ROLE", ROLE),
    ("AWS_LAMBDA_FUNCTION_NAME", "ecs-rerun-fn"),
];

/// The central function's invocation: it runs in [`HOME_ACCOUNT`].
fn central() -> Invocation {
    Invocation {
        deadline: None,
        own_account: Some(HOME_ACCOUNT.to_owned()),
    }
}

/// A sample record, recorded a minute ago, as made in `account` and `region` (envelope and
/// CloudTrail fields alike, as a member's forwarding rule delivers it).
fn record_in(file: &str, account: &str, region: &str) -> Value {
    let text = event(file)
        .to_string()
        .replace(HOME_ACCOUNT, account)
        .replace(HOME_REGION, region);
    let mut e: Value = serde_json::from_str(&text).expect("still JSON");
    let at = chrono::DateTime::<chrono::Utc>::from(
        std::time::UNIX_EPOCH + Duration::from_secs(NOW - 60),
    )
    .format("%Y-%m-%dT%H:%M:%SZ")
    .to_string();
    e["detail"]["eventTime"] = json!(at);
    e["time"] = json!(at);
    e
}

fn member_record() -> Value {
    record_in("01-agent-ec2.json", MEMBER, MEMBER_REGION)
}

struct Org {
    world: World,
    org: FakeOrg,
}

impl Org {
    fn new() -> Self {
        let world = World::new(Vec::new());
        let org = FakeOrg::new(&world.ecs);
        Self { world, org }
    }

    fn handler(&self, extra: &[(&str, &str)]) -> Handler<FakeOrg, FakeSns, FakeClock> {
        Handler::new(
            config(extra),
            self.org.clone(),
            self.world.sns.clone(),
            self.world.clock.clone(),
        )
    }

    async fn handle(&self, extra: &[(&str, &str)], event: Value) -> Report {
        self.handler(extra)
            .handle(event, &central())
            .await
            .expect("handled")
    }

    /// Where each task started: (account, Region).
    fn places(&self) -> Vec<(String, String)> {
        self.world
            .ecs
            .tasks()
            .into_iter()
            .map(|t| (t.account, t.region))
            .collect()
    }
}

fn member_place() -> (String, String) {
    (MEMBER.to_owned(), MEMBER_REGION.to_owned())
}

#[tokio::test]
async fn a_member_record_is_rerun_in_its_account_and_region_only() {
    let org = Org::new();
    let report = org.handle(ORG, member_record()).await;

    assert_eq!(report.outcome, Outcome::Recovered, "{}", report.reason);
    assert_eq!(org.places(), [member_place()]);
    assert_eq!(
        org.org.reached(),
        [Place::Member {
            account: MEMBER.into(),
            region: MEMBER_REGION.into()
        }]
    );
}

#[tokio::test]
async fn a_duplicate_delivery_of_a_member_record_starts_one_task() {
    let org = Org::new();
    let first = org.handle(ORG, member_record()).await;
    let second = org.handle(ORG, member_record()).await;

    assert_eq!(first.outcome, Outcome::Recovered);
    assert_eq!(org.world.ecs.tasks_started(), 1);
    assert_eq!(org.places(), [member_place()]);
    // Both deliveries sent the same token: the second got the first one's task back.
    let tokens: Vec<_> = org
        .world
        .ecs
        .requests()
        .into_iter()
        .map(|r| r.client_token)
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0], tokens[1]);
    assert_eq!(second.outcome, Outcome::AlreadyStarted, "{}", second.reason);
}

/// The same call in three places (two Regions of a member, the central account): ECS scopes a
/// token to its cluster, whose ARN names account and Region, so each place starts its task
/// under the token a single-account stack there sends, the same everywhere.
#[tokio::test]
async fn the_same_job_in_three_places_starts_one_task_in_each() {
    let org = Org::new();
    org.handle(ORG, member_record()).await;
    org.handle(
        ORG,
        record_in("01-agent-ec2.json", MEMBER, "ap-southeast-2"),
    )
    .await;
    let home = org
        .handle(
            ORG,
            record_in("01-agent-ec2.json", HOME_ACCOUNT, HOME_REGION),
        )
        .await;

    assert_eq!(home.outcome, Outcome::Recovered);
    let mut places = org.places();
    places.sort();
    assert_eq!(
        places,
        [
            (HOME_ACCOUNT.to_owned(), HOME_REGION.to_owned()),
            (MEMBER.to_owned(), "ap-southeast-2".to_owned()),
            member_place(),
        ]
    );
    let tokens: std::collections::HashSet<_> = org
        .world
        .ecs
        .requests()
        .into_iter()
        .map(|r| r.client_token)
        .collect();
    assert_eq!(
        tokens.into_iter().collect::<Vec<_>>(),
        [Some(HOME_TOKEN_BEFORE.to_owned())],
        "one call's token, whatever its place: a single-account stack's"
    );
}

/// The token ecs-rerun sent for `01-agent-ec2.json` in its own account before organizations
/// were served: the first 20 bytes of SHA-256 of `batch|token|<recorded token>#1`, computed
/// outside this code (`python3 -c "import hashlib; print(hashlib.sha256(b'batch|token|0b6f2f57-
/// 3c1e-4f8a-9d55-1a2e6c7b9d10#1').hexdigest()[:40])"`).
const HOME_TOKEN_BEFORE: &str = "ecs-rerun-3e3119d59cf28ae90806cec3aa00d6091d6dfda0";

#[tokio::test]
async fn a_home_account_record_keeps_the_token_it_always_had() {
    for extra in [&[][..], ORG] {
        let org = Org::new();
        let report = org
            .handle(
                extra,
                record_in("01-agent-ec2.json", HOME_ACCOUNT, HOME_REGION),
            )
            .await;
        assert_eq!(report.outcome, Outcome::Recovered);
        let sent: Vec<RunTaskRequest> = org.world.ecs.requests();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].client_token.as_deref(), Some(HOME_TOKEN_BEFORE));
    }
}

#[tokio::test]
async fn a_refused_member_role_is_notified_and_nothing_starts_anywhere() {
    let org = Org::new();
    org.org.refuse(
        MEMBER,
        "AccessDenied: User: arn:aws:sts::111122223333:assumed-role/central/ecs-rerun-fn is not \
         authorized to perform: sts:AssumeRole",
    );
    let report = org.handle(ORG, member_record()).await;

    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert_eq!(org.world.ecs.tasks_started(), 0);
    assert!(org.world.ecs.requests().is_empty(), "no RunTask anywhere");
    let sent = org.world.sns.sent();
    assert_eq!(sent.len(), 1);
    let body = &sent[0].body;
    for needle in [
        MEMBER,
        MEMBER_REGION,
        "arn:aws:iam::444455556666:role/ecs-rerun-member",
        "AccessDenied",
    ] {
        assert!(body.contains(needle), "{needle} not in {body}");
    }
}

#[tokio::test]
async fn without_a_member_role_a_member_record_is_only_notified() {
    let org = Org::new();
    let report = org
        .handle(&[("ECS_RERUN_ALLOWED_ACCOUNTS", MEMBER)], member_record())
        .await;

    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert!(
        report.reason.contains("no role for account"),
        "{}",
        report.reason
    );
    assert_eq!(org.world.ecs.tasks_started(), 0);
    assert_eq!(org.world.sns.sent().len(), 1);
}

#[tokio::test]
async fn any_account_is_served_with_a_star() {
    let org = Org::new();
    let star = [
        ("ECS_RERUN_ALLOWED_ACCOUNTS", "*"),
        ("ECS_RERUN_MEMBER_ROLE", ROLE),
    ];
    let report = org.handle(&star, member_record()).await;
    assert_eq!(report.outcome, Outcome::Recovered);
    assert_eq!(org.places(), [member_place()]);
    // Without it, the member's record is not this function's business.
    let other = Org::new();
    let report = other
        .handle(&[("ECS_RERUN_MEMBER_ROLE", ROLE)], member_record())
        .await;
    assert_eq!(report.outcome, Outcome::Ignored);
    assert_eq!(other.world.ecs.tasks_started(), 0);
}

#[tokio::test]
async fn a_record_whose_envelope_names_another_account_is_not_rerun() {
    let org = Org::new();
    let mut e = member_record();
    e["detail"]["recipientAccountId"] = json!("777788889999");
    let report = org.handle(ORG, e).await;
    assert_eq!(report.outcome, Outcome::NotRetryable);
    assert!(report.reason.contains("777788889999"), "{}", report.reason);
    assert_eq!(org.world.ecs.tasks_started(), 0);

    let mut e = member_record();
    e["detail"]["awsRegion"] = json!("us-west-2");
    assert_eq!(org.handle(ORG, e).await.outcome, Outcome::NotRetryable);
    assert_eq!(org.world.ecs.tasks_started(), 0);
}

#[tokio::test]
async fn the_functions_own_retry_in_a_member_account_is_recognised() {
    let org = Org::new();
    let mut e = member_record();
    e["detail"]["userIdentity"]["arn"] = json!(format!(
        "arn:aws:sts::{MEMBER}:assumed-role/{ROLE}/ecs-rerun-fn"
    ));
    e["detail"]["userIdentity"]
        .as_object_mut()
        .expect("an object")
        .remove("invokedBy");
    let report = org.handle(ORG, e).await;
    assert_eq!(report.outcome, Outcome::Ignored, "{}", report.reason);
    assert_eq!(org.world.ecs.tasks_started(), 0);
}

#[tokio::test]
async fn a_hop_resumes_in_the_member_account() {
    // Capacity is short twice: the waits go through the delay queue.
    let world = World::new(vec![fail("RESOURCE:MEMORY", 0)]);
    let org = FakeOrg::new(&world.ecs);
    let queue = FakeQueue::default();
    let handler = Handler::new(
        config(ORG),
        org.clone(),
        world.sns.clone(),
        world.clock.clone(),
    )
    .with_queue(queue.clone());

    let first = handler
        .handle(member_record(), &central())
        .await
        .expect("handled");
    assert_eq!(first.outcome, Outcome::Waiting, "{}", first.reason);
    let mut last = first;
    while let Some((body, delay)) = queue.pop() {
        world.clock.advance(delay);
        last = handler
            .handle_message(&body, &central())
            .await
            .expect("hop handled");
    }
    assert_eq!(last.outcome, Outcome::Recovered, "{}", last.reason);
    let places: Vec<_> = world
        .ecs
        .tasks()
        .into_iter()
        .map(|t| (t.account, t.region))
        .collect();
    assert_eq!(places, [member_place()]);
    assert!(
        org.reached()
            .iter()
            .all(|p| p.member_account() == Some(MEMBER)),
        "{:?}",
        org.reached()
    );
    assert!(
        org.reached().len() >= 2,
        "the hop asked for the member's launcher again"
    );
}

// ---- the adapter, against the SDK with scripted STS and ECS answers ---------------------------

/// What the scripted endpoints saw: (host, the access key that signed the request).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

fn assumed_role_xml() -> String {
    format!(
        r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>ASIAMEMBERKEY</AccessKeyId>
      <SecretAccessKey>member-secret</SecretAccessKey>
      <SessionToken>member-session</SessionToken>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <AssumedRoleId>AROAMEMBER:ecs-rerun-fn</AssumedRoleId>
      <Arn>arn:aws:sts::{MEMBER}:assumed-role/{ROLE}/ecs-rerun-fn</Arn>
    </AssumedRoleUser>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#
    )
}

const ACCESS_DENIED_XML: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>AccessDenied</Code>
    <Message>User: arn:aws:sts::111122223333:assumed-role/central/ecs-rerun-fn is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::444455556666:role/ecs-rerun-member</Message>
  </Error>
  <RequestId>2</RequestId>
</ErrorResponse>"#;

/// Places over an SDK configuration whose endpoints answer as scripted: STS with `sts` (status,
/// body), ECS's RunTask with one started task.
async fn scripted_places(sts: (u16, String)) -> (EcsPlaces, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let http = aws_smithy_http_client::test_util::infallible_client_fn(move |request| {
        let host = request.uri().host().unwrap_or_default().to_owned();
        let auth = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let key = auth
            .split("Credential=")
            .nth(1)
            .and_then(|c| c.split('/').next())
            .unwrap_or_default()
            .to_owned();
        log.lock().unwrap().push((host.clone(), key));
        let (status, body, kind) = if host.starts_with("sts.") {
            (sts.0, sts.1.clone(), "text/xml")
        } else {
            let region = host.split('.').nth(1).unwrap_or_default();
            (
                200,
                format!(
                    r#"{{"tasks":[{{"taskArn":"arn:aws:ecs:{region}:{MEMBER}:task/batch/1"}}],"failures":[]}}"#
                ),
                "application/x-amz-json-1.1",
            )
        };
        http::Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(aws_smithy_types::body::SdkBody::from(body))
            .expect("a response")
    });
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(HOME_REGION))
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            "AKIDCENTRAL",
            "central-secret",
            None,
            None,
            "test",
        ))
        .http_client(http)
        .load()
        .await;
    (
        EcsPlaces::new(sdk, Some(ROLE.to_owned()), "ecs-rerun-fn".to_owned()),
        seen,
    )
}

fn run_request() -> RunTaskRequest {
    RunTaskRequest {
        cluster: Some("batch".into()),
        task_definition: Some("nightly:3".into()),
        count: Some(1),
        client_token: Some("ecs-rerun-abc".into()),
        ..RunTaskRequest::default()
    }
}

fn member(region: &str) -> Place {
    Place::Member {
        account: MEMBER.into(),
        region: region.into(),
    }
}

#[tokio::test]
async fn one_assume_role_per_account_serves_every_region_and_later_invocations() {
    let (places, seen) = scripted_places((200, assumed_role_xml())).await;

    for region in [MEMBER_REGION, "ap-southeast-2", MEMBER_REGION] {
        let launcher = places.launcher(&member(region)).await.expect("reached");
        assert!(matches!(
            launcher.run_task(&run_request()).await,
            LaunchResult::Placed { tasks, .. } if tasks.len() == 1
        ));
    }

    let seen = seen.lock().unwrap().clone();
    let sts: Vec<_> = seen.iter().filter(|(h, _)| h.starts_with("sts.")).collect();
    assert_eq!(sts.len(), 1, "{seen:?}");
    assert_eq!(
        sts[0].1, "AKIDCENTRAL",
        "STS is asked with the function's own credentials"
    );
    let ecs: Vec<_> = seen.iter().filter(|(h, _)| h.starts_with("ecs.")).collect();
    assert_eq!(
        ecs.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        [
            "ecs.eu-west-1.amazonaws.com",
            "ecs.ap-southeast-2.amazonaws.com",
            "ecs.eu-west-1.amazonaws.com"
        ]
    );
    assert!(
        ecs.iter().all(|(_, key)| key == "ASIAMEMBERKEY"),
        "every ECS call of the member is signed with its role's credentials: {ecs:?}"
    );
}

#[tokio::test]
async fn a_refused_assume_role_is_an_error_before_any_ecs_call() {
    let (places, seen) = scripted_places((403, ACCESS_DENIED_XML.to_owned())).await;

    let err = places
        .launcher(&member(MEMBER_REGION))
        .await
        .expect_err("refused");
    match &err {
        ReachError::AssumeRole {
            account,
            region,
            role_arn,
            cause,
        } => {
            assert_eq!(account, MEMBER);
            assert_eq!(region, MEMBER_REGION);
            assert_eq!(role_arn, "arn:aws:iam::444455556666:role/ecs-rerun-member");
            assert!(cause.contains("AccessDenied"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(MEMBER) && message.contains("AccessDenied"),
        "{message}"
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|(h, _)| h.starts_with("sts.")),
        "no ECS call: {:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test]
async fn the_home_account_uses_the_functions_own_credentials() {
    let (places, seen) = scripted_places((200, assumed_role_xml())).await;
    for region in [HOME_REGION, MEMBER_REGION] {
        let launcher = places
            .launcher(&Place::Home {
                region: region.into(),
            })
            .await
            .expect("home");
        launcher.run_task(&run_request()).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (
                "ecs.us-east-1.amazonaws.com".to_owned(),
                "AKIDCENTRAL".to_owned()
            ),
            (
                "ecs.eu-west-1.amazonaws.com".to_owned(),
                "AKIDCENTRAL".to_owned()
            ),
        ]
    );
}

/// A member account that still runs its own single-account stack (the setup issue 20 replaces)
/// while the member StackSet already forwards its records to the central bus: both functions
/// handle the same failed launch. The member's stack keys it by the cluster's short name, the
/// central one by the cluster's ARN, so they send different tokens and ECS starts it twice.
/// Guards: the member's own stack reruns the record, then the central stack reruns the same
/// record in that account and Region; both send the short-name token, so ECS starts one task.
#[tokio::test]
async fn a_member_s_own_stack_and_the_central_stack_start_the_job_once() {
    let org = Org::new();
    // The member's own stack: home there, with its own credentials.
    let local = Handler::new(
        config(&[("AWS_LAMBDA_FUNCTION_NAME", "ecs-rerun-local")]),
        org.world.ecs.at(MEMBER, MEMBER_REGION),
        org.world.sns.clone(),
        org.world.clock.clone(),
    );
    let at_member = Invocation {
        deadline: None,
        own_account: Some(MEMBER.to_owned()),
    };
    let mine = local
        .handle(member_record(), &at_member)
        .await
        .expect("handled");
    let central = org.handle(ORG, member_record()).await;

    assert_eq!(mine.outcome, Outcome::Recovered, "{}", mine.reason);
    assert_eq!(
        org.world.ecs.tasks_started(),
        1,
        "one failed launch, started {} times (central: {:?}; tokens {:?})",
        org.world.ecs.tasks_started(),
        central.outcome,
        org.world
            .ecs
            .requests()
            .iter()
            .map(|r| r.client_token.clone())
            .collect::<Vec<_>>()
    );
}

/// The central account's own records from two Regions (a `member.yaml` stack with
/// `CreateRole=false` forwards its other Regions, deploy.md step 4) keep the pre-org key, which
/// names neither account nor Region. The same untokened call made at the same minute in both
/// Regions (one cron job deployed in two Regions, an SDK from before 2023-11) gets one key:
/// with the launch store, both episodes give up, and the second one's notification is taken
/// for a duplicate of the first: its job is lost without a word.
/// Guards: an untokened home record of the function's own Region gives up and is notified,
/// then the same call's record from another Region gives up: its claim names its cluster by
/// ARN, so it is notified too.
#[tokio::test]
async fn home_records_of_two_regions_each_notify_their_give_up() {
    let world = World::new(vec![fail("RESOURCE:MEMORY", 0); 12]);
    let org = FakeOrg::new(&world.ecs);
    let handler = Handler::new(
        config(ORG),
        org.clone(),
        world.sns.clone(),
        world.clock.clone(),
    )
    .with_store(world.store.clone());
    let untokened = |region: &str| {
        let mut e = record_in("01-agent-ec2.json", HOME_ACCOUNT, region);
        let request = e["detail"]["requestParameters"]
            .as_object_mut()
            .expect("an object");
        request.remove("clientToken");
        // The cluster by its short name, as most callers name it.
        request.insert("cluster".to_owned(), json!("batch"));
        e
    };
    let east = handler
        .handle(untokened(HOME_REGION), &central())
        .await
        .expect("handled");
    let west = handler
        .handle(untokened(MEMBER_REGION), &central())
        .await
        .expect("handled");

    assert_eq!(east.outcome, Outcome::GaveUp, "{}", east.reason);
    assert_eq!(west.outcome, Outcome::GaveUp, "{}", west.reason);
    assert_eq!(world.ecs.tasks_started(), 0);
    assert_eq!(
        world.sns.sent().len(),
        2,
        "two jobs given up in two Regions, notified: {:?}",
        world
            .sns
            .sent()
            .iter()
            .map(|n| n.subject.clone())
            .collect::<Vec<_>>()
    );
}
