//! The AWS adapters against the real SDK clients, with responses mocked by `aws-smithy-mocks`:
//! what ECS and SNS answers turn into, as the retry loop sees them.

use aws_sdk_ecs::operation::run_task::{RunTaskError, RunTaskOutput};
use aws_sdk_ecs::types::{Failure, Task};
use aws_sdk_sns::operation::publish::{PublishError as SnsPublishError, PublishOutput};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use ecs_rerun::launch::{EcsLauncher, TaskLauncher};
use ecs_rerun::message::Notification;
use ecs_rerun::notify::{Notifier, SnsNotifier};
use ecs_rerun::plan::LaunchResult;
use ecs_rerun::request::{EphemeralStorage, RunTaskRequest, TaskOverride};

const ERROR_JSON: &str = "application/x-amz-json-1.1";

fn request() -> RunTaskRequest {
    RunTaskRequest {
        cluster: Some("batch".into()),
        task_definition: Some("nightly:3".into()),
        count: Some(2),
        client_token: Some("ecs-rerun-abc".into()),
        ..RunTaskRequest::default()
    }
}

fn http_error(status: u16, kind: &str, message: &str) -> aws_smithy_runtime_api::http::Response {
    let body = format!(r#"{{"__type":"{kind}","message":"{message}"}}"#);
    let mut response = aws_smithy_runtime_api::http::Response::new(
        status.try_into().unwrap(),
        aws_smithy_types::body::SdkBody::from(body),
    );
    response.headers_mut().insert("content-type", ERROR_JSON);
    response
}

#[tokio::test]
async fn placement_answer_lists_started_tasks_and_failures() {
    let rule = mock!(aws_sdk_ecs::Client::run_task)
        .match_requests(|r| r.count() == Some(2) && r.client_token() == Some("ecs-rerun-abc"))
        .then_output(|| {
            RunTaskOutput::builder()
                .tasks(
                    Task::builder()
                        .task_arn("arn:aws:ecs:us-east-1:1:task/batch/a")
                        .build(),
                )
                .failures(
                    Failure::builder()
                        .reason("RESOURCE:MEMORY")
                        .arn("arn:ci")
                        .build(),
                )
                .build()
        });
    let client = mock_client!(aws_sdk_ecs, [&rule]);
    let result = EcsLauncher::new(client).run_task(&request()).await;
    let LaunchResult::Placed { started, failures } = result else {
        panic!("{result:?}")
    };
    assert_eq!(started, ["arn:aws:ecs:us-east-1:1:task/batch/a"]);
    assert_eq!(failures[0].reason.as_deref(), Some("RESOURCE:MEMORY"));
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn modelled_client_error_is_rejected_and_unambiguous() {
    // As the SDK's deserializer builds it: the code and message also in the error metadata.
    let rule = mock!(aws_sdk_ecs::Client::run_task).then_error(|| {
        let message = "Tasks provisioning capacity limit exceeded.";
        RunTaskError::ClientException(
            aws_sdk_ecs::types::error::ClientException::builder()
                .message(message)
                .meta(
                    aws_sdk_ecs::error::ErrorMetadata::builder()
                        .code("ClientException")
                        .message(message)
                        .build(),
                )
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_ecs, [&rule]);
    let result = EcsLauncher::new(client).run_task(&request()).await;
    assert_eq!(
        result,
        LaunchResult::Rejected {
            code: "ClientException".into(),
            message: "Tasks provisioning capacity limit exceeded.".into(),
            ambiguous: false,
        }
    );
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk_first_then_reported() {
    let rule = mock!(aws_sdk_ecs::Client::run_task)
        .sequence()
        .http_response(|| http_error(400, "ThrottlingException", "Rate exceeded"))
        .times(3)
        .build();
    let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&rule], |c| c
        .retry_config(
            aws_sdk_ecs::config::retry::RetryConfig::standard().with_max_attempts(3)
        ));
    let result = EcsLauncher::new(client).run_task(&request()).await;
    assert_eq!(
        rule.num_calls(),
        3,
        "the SDK's own retries ran, with the same token"
    );
    let LaunchResult::Rejected {
        code, ambiguous, ..
    } = result
    else {
        panic!("{result:?}")
    };
    assert_eq!((code.as_str(), ambiguous), ("ThrottlingException", false));
}

#[tokio::test]
async fn server_error_is_ambiguous() {
    let rule = mock!(aws_sdk_ecs::Client::run_task)
        .then_http_response(|| http_error(500, "ServerException", "Service Unavailable"));
    let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&rule]);
    let result = EcsLauncher::new(client).run_task(&request()).await;
    let LaunchResult::Rejected {
        code, ambiguous, ..
    } = result
    else {
        panic!("{result:?}")
    };
    assert_eq!(code, "ServerException");
    assert!(
        ambiguous,
        "ECS may have started the tasks: resend the same token"
    );
}

#[tokio::test]
async fn a_request_missing_a_required_member_is_rejected_without_a_call() {
    let rule =
        mock!(aws_sdk_ecs::Client::run_task).then_output(|| RunTaskOutput::builder().build());
    let client = mock_client!(aws_sdk_ecs, [&rule]);
    let broken = RunTaskRequest {
        overrides: Some(TaskOverride {
            ephemeral_storage: Some(EphemeralStorage { size_in_gib: None }),
            ..TaskOverride::default()
        }),
        ..request()
    };
    let result = EcsLauncher::new(client).run_task(&broken).await;
    let LaunchResult::Rejected {
        code,
        message,
        ambiguous,
    } = result
    else {
        panic!("{result:?}")
    };
    assert_eq!(code, "InvalidParameterException");
    assert!(message.contains("sizeInGiB") && !ambiguous, "{message}");
    assert_eq!(rule.num_calls(), 0);
}

fn note() -> Notification {
    Notification {
        subject: "[ecs-rerun] gave up on nightly on batch: AGENT".into(),
        body: "{}".into(),
        attributes: [
            ("outcome".to_owned(), "gave_up".to_owned()),
            ("cluster".to_owned(), "batch".to_owned()),
        ]
        .into(),
    }
}

#[tokio::test]
async fn publish_sends_subject_body_and_filterable_attributes() {
    let rule = mock!(aws_sdk_sns::Client::publish)
        .match_requests(|r| {
            r.topic_arn() == Some("arn:aws:sns:us-east-1:1:t")
                && r.subject() == Some("[ecs-rerun] gave up on nightly on batch: AGENT")
                && r.message_attributes()
                    .and_then(|a| a.get("outcome"))
                    .and_then(|v| v.string_value())
                    == Some("gave_up")
        })
        .then_output(|| PublishOutput::builder().message_id("m-1").build());
    let client = mock_client!(aws_sdk_sns, [&rule]);
    SnsNotifier::new(client, "arn:aws:sns:us-east-1:1:t".into())
        .publish(&note())
        .await
        .unwrap();
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn publish_failure_is_an_error_naming_the_topic() {
    let rule = mock!(aws_sdk_sns::Client::publish).then_error(|| {
        SnsPublishError::AuthorizationErrorException(
            aws_sdk_sns::types::error::AuthorizationErrorException::builder()
                .message("not allowed")
                .meta(
                    aws_sdk_sns::error::ErrorMetadata::builder()
                        .code("AuthorizationError")
                        .message("not allowed")
                        .build(),
                )
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_sns, [&rule]);
    let err = SnsNotifier::new(client, "arn:aws:sns:us-east-1:1:t".into())
        .publish(&note())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("arn:aws:sns:us-east-1:1:t"),
        "{err}"
    );
    assert!(err.cause.contains("not allowed"), "{}", err.cause);
}
