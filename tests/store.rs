//! The DynamoDB launch store against the real SDK client, with DynamoDB's answers mocked by
//! `aws-smithy-mocks`: what it writes, what it reads back, and what each answer to a claim
//! means. (The end-to-end tests run it against moto's DynamoDB.)

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::operation::delete_item::{DeleteItemError, DeleteItemOutput};
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use ecs_rerun::aws::dynamodb::DynamoStore;
use ecs_rerun::core::decode::Origin;
use ecs_rerun::core::guard::GuardedLaunch;
use ecs_rerun::core::request::RunTaskRequest;
use ecs_rerun::ports::store::{Claim, LaunchStore};

const TABLE: &str = "ecs-rerun-launches";
const TASK: &str = "arn:aws:ecs:us-east-1:111122223333:task/jobs/t1";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn launch() -> GuardedLaunch {
    let origin = Origin {
        key: "jobs|token|abc".into(),
        call_tag: "abc".into(),
        event_id: "e-1".into(),
        account: "111122223333".into(),
        region: "us-east-1".into(),
        event_time: None,
        recorded_at: None,
        caller: None,
        called_by: Default::default(),
        request: RunTaskRequest {
            cluster: Some("jobs".into()),
            task_definition: Some("etl-load".into()),
            count: Some(2),
            ..RunTaskRequest::default()
        },
        started: 2,
        stopped_task: None,
    };
    GuardedLaunch::recorded(&origin, None)
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn item(fields: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
    fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn conditional_failure() -> ConditionalCheckFailedException {
    ConditionalCheckFailedException::builder()
        .message("The conditional request failed")
        .build()
}

#[tokio::test]
async fn a_launch_is_written_per_task_with_its_expiry_and_never_lowers_a_kept_call_count() {
    let second = "arn:aws:ecs:us-east-1:111122223333:task/jobs/t2";
    let body = serde_json::to_string(&launch()).unwrap();
    let written = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(move |r| {
            let item = r.item().unwrap();
            item["pk"] == s(TASK)
                && item["launch"] == AttributeValue::S(body.clone())
                && item["calls"] == AttributeValue::N("0".into())
                && item["expiresAt"] == AttributeValue::N("1086400".into())
                && r.condition_expression() == Some("attribute_not_exists(pk) OR calls <= :calls")
        })
        .then_output(|| PutItemOutput::builder().build());
    // The second task is kept already, from a later call of the job: not overwritten.
    let kept = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(move |r| r.item().unwrap()["pk"] == s(second))
        .then_error(|| PutItemError::ConditionalCheckFailedException(conditional_failure()));
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&written, &kept]);
    let store = DynamoStore::new(client, TABLE.into());
    store
        .guard(&[TASK.into(), second.into()], &launch(), at(1_086_400))
        .await
        .expect("written, and the kept one left alone");
    assert_eq!((written.num_calls(), kept.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_stored_launch_is_found_until_it_expires_even_before_dynamodb_deletes_it() {
    let body = serde_json::to_string(&launch()).unwrap();
    let stored = item(&[
        ("pk", s(TASK)),
        ("launch", s(&body)),
        ("expiresAt", AttributeValue::N("2000".into())),
    ]);
    let get = mock!(aws_sdk_dynamodb::Client::get_item)
        .match_requests(|r| r.consistent_read() == Some(true) && r.key().unwrap()["pk"] == s(TASK))
        .then_output(move || {
            GetItemOutput::builder()
                .set_item(Some(stored.clone()))
                .build()
        });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&get]);
    let store = DynamoStore::new(client, TABLE.into());
    assert_eq!(store.find(TASK, at(1999)).await.unwrap(), Some(launch()));
    assert_eq!(store.find(TASK, at(2000)).await.unwrap(), None, "expired");
}

#[tokio::test]
async fn an_item_that_is_not_a_stored_launch_is_an_error_naming_it() {
    let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| {
        GetItemOutput::builder()
            .set_item(Some(item(&[
                ("pk", s(TASK)),
                ("launch", s("{\"version\":1}")),
            ])))
            .build()
    });
    let client = mock_client!(aws_sdk_dynamodb, [&get]);
    let err = DynamoStore::new(client, TABLE.into())
        .find(TASK, at(0))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(TASK) && err.contains(TABLE), "{err}");
}

#[tokio::test]
async fn a_claim_is_granted_by_a_conditional_put_and_refused_as_sent_or_pending() {
    let granted = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            r.condition_expression()
                .is_some_and(|c| c.contains("attribute_not_exists(pk)"))
                && r.item().unwrap()["pk"] == s("notice|k1")
                && r.item().unwrap()["claimedUntil"] == AttributeValue::N("1060".into())
                && r.expression_attribute_values().unwrap()[":now"]
                    == AttributeValue::N("1000".into())
        })
        .then_output(|| PutItemOutput::builder().build());
    let taken = || {
        mock!(aws_sdk_dynamodb::Client::put_item)
            .then_error(|| PutItemError::ConditionalCheckFailedException(conditional_failure()))
    };
    let (taken_sent, taken_pending) = (taken(), taken());
    let sent = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| {
        GetItemOutput::builder()
            .set_item(Some(item(&[("pk", s("notice|k2")), ("state", s("sent"))])))
            .build()
    });
    let claimed = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| {
        GetItemOutput::builder()
            .set_item(Some(item(&[
                ("pk", s("notice|k3")),
                ("state", s("claimed")),
                ("claimedUntil", AttributeValue::N("1030".into())),
            ])))
            .build()
    });
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::Sequential,
        [&granted, &taken_sent, &sent, &taken_pending, &claimed]
    );
    let store = DynamoStore::new(client, TABLE.into());
    let (now, lease, expires) = (at(1000), at(1060), at(9000));
    let claim = |key| store.claim_notice(key, now, lease, expires);
    assert_eq!(claim("k1").await.unwrap(), Claim::Granted);
    assert_eq!(claim("k2").await.unwrap(), Claim::Sent);
    assert_eq!(
        claim("k3").await.unwrap(),
        Claim::Pending,
        "its claimant's deadline is 30 s away"
    );
}

#[tokio::test]
async fn releasing_a_claim_that_was_confirmed_meanwhile_is_not_an_error() {
    let released = mock!(aws_sdk_dynamodb::Client::delete_item)
        .match_requests(|r| r.condition_expression() == Some("#state = :claimed"))
        .then_output(|| DeleteItemOutput::builder().build());
    let confirmed = mock!(aws_sdk_dynamodb::Client::delete_item)
        .then_error(|| DeleteItemError::ConditionalCheckFailedException(conditional_failure()));
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::Sequential,
        [&released, &confirmed]
    );
    let store = DynamoStore::new(client, TABLE.into());
    store.release_notice("k1").await.expect("released");
    store
        .release_notice("k1")
        .await
        .expect("nothing to release");
}
