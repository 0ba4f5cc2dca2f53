//! The AWS adapters against the real SDK clients, with responses mocked by `aws-smithy-mocks`:
//! what ECS and SNS answers turn into, as the retry loop sees them.

use std::time::{Duration, SystemTime};

use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
use aws_sdk_ecs::operation::list_tasks::{ListTasksError, ListTasksOutput};
use aws_sdk_ecs::operation::run_task::{RunTaskError, RunTaskOutput};
use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_ecs::types::{ContainerOverride, DesiredStatus, Failure, Tag, Task, TaskField};
use aws_sdk_sns::operation::get_topic_attributes::{
    GetTopicAttributesError, GetTopicAttributesOutput,
};
use aws_sdk_sns::operation::publish::{PublishError as SnsPublishError, PublishOutput};
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use ecs_rerun::aws::ecs::EcsLauncher;
use ecs_rerun::aws::sns::SnsNotifier;
use ecs_rerun::core::launch::{LaunchResult, LaunchedTask, Lookup};
use ecs_rerun::core::lookup::{ExistingTask, TaskQuery};
use ecs_rerun::core::marks::CALL_TAG;
use ecs_rerun::core::message::{DEFAULT_MAX_MESSAGE_SIZE, Notification};
use ecs_rerun::core::request::{self as req, EphemeralStorage, RunTaskRequest, TaskOverride};
use ecs_rerun::ports::launch::TaskLauncher;
use ecs_rerun::ports::notify::Notifier;

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
                        .created_at(DateTime::from_secs(1_746_068_410))
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
    let LaunchResult::Placed { tasks, failures } = result else {
        panic!("{result:?}")
    };
    // `createdAt` tells a task the call started from one the token had started before.
    assert_eq!(
        tasks,
        [LaunchedTask {
            arn: "arn:aws:ecs:us-east-1:1:task/batch/a".into(),
            created_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_746_068_410)),
        }]
    );
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
            existing: Vec::new(),
        }
    );
}

#[tokio::test]
async fn conflict_names_the_tasks_the_token_already_started() {
    // As ECS sends it: HTTP 400, the task ARNs in `resourceIds`.
    let rule = mock!(aws_sdk_ecs::Client::run_task).then_http_response(|| {
        let body = r#"{"__type":"ConflictException","message":"The specified client token has already been used with different parameters.","resourceIds":["arn:aws:ecs:us-east-1:1:task/batch/a","arn:aws:ecs:us-east-1:1:task/batch/b"]}"#;
        let mut response = aws_smithy_runtime_api::http::Response::new(
            400.try_into().unwrap(),
            aws_smithy_types::body::SdkBody::from(body),
        );
        response.headers_mut().insert("content-type", ERROR_JSON);
        response
    });
    let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&rule]);
    let result = EcsLauncher::new(client).run_task(&request()).await;
    let LaunchResult::Rejected {
        code,
        ambiguous,
        existing,
        ..
    } = result
    else {
        panic!("{result:?}")
    };
    assert_eq!(code, "ConflictException");
    assert!(!ambiguous);
    assert_eq!(
        existing,
        [
            "arn:aws:ecs:us-east-1:1:task/batch/a",
            "arn:aws:ecs:us-east-1:1:task/batch/b"
        ]
    );
    assert_eq!(rule.num_calls(), 1, "a conflict is not retried");
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
        ..
    } = result
    else {
        panic!("{result:?}")
    };
    assert_eq!(code, "InvalidParameterException");
    assert!(message.contains("sizeInGiB") && !ambiguous, "{message}");
    assert_eq!(rule.num_calls(), 0);
}

// --- look-ups: ListTasks + DescribeTasks -------------------------------------------------------

const FAMILY_ARN: &str = "arn:aws:ecs:us-east-1:1:task-definition/nightly:3";

/// `ListTasks` as ECS answers it: tasks of family `nightly` on cluster `batch`, two pages of
/// running ones and one of stopped ones; `startedBy` together with another filter is refused
/// ("cannot specify startedBy with other arguments", aws/aws-sdk-go-v2#1893; the API reference
/// says it must be the only filter).
fn list_tasks() -> Rule {
    mock!(aws_sdk_ecs::Client::list_tasks).then_compute_response(|r| {
        if r.started_by().is_some() && (r.family().is_some() || r.launch_type().is_some()) {
            return MockResponse::Error(ListTasksError::InvalidParameterException(
                aws_sdk_ecs::types::error::InvalidParameterException::builder()
                    .message("cannot specify startedBy with other arguments")
                    .meta(
                        aws_sdk_ecs::error::ErrorMetadata::builder()
                            .code("InvalidParameterException")
                            .message("cannot specify startedBy with other arguments")
                            .build(),
                    )
                    .build(),
            ));
        }
        let arns: &[&str] = match (
            r.cluster(),
            r.family(),
            r.desired_status().unwrap_or(&DesiredStatus::Running),
            r.next_token(),
        ) {
            (Some("batch"), Some("nightly"), DesiredStatus::Running, None) => &["t1", "t2"],
            (Some("batch"), Some("nightly"), DesiredStatus::Running, Some("page-2")) => &["t3"],
            (Some("batch"), Some("nightly"), DesiredStatus::Stopped, None) => &["t4"],
            _ => &[],
        };
        let next = (r.desired_status() == Some(&DesiredStatus::Running)
            && r.next_token().is_none())
        .then(|| "page-2".to_owned());
        MockResponse::Output(
            ListTasksOutput::builder()
                .set_task_arns(Some(
                    arns.iter()
                        .map(|t| format!("arn:aws:ecs:us-east-1:1:task/batch/{t}"))
                        .collect(),
                ))
                .set_next_token(next)
                .build(),
        )
    })
}

/// `DescribeTasks`: every task asked for, as ECS shows it (group filled in, a bare entry for
/// the container without overrides). Task `t1` was started by ecs-rerun for the call
/// `sdk-token-1`; like ECS, the mock shows tags only when asked to (`include: TAGS`).
fn describe_tasks() -> Rule {
    mock!(aws_sdk_ecs::Client::describe_tasks)
        .match_requests(|r| r.cluster() == Some("batch"))
        .then_compute_output(|r| {
            let with_tags = r.include().contains(&TaskField::Tags);
            DescribeTasksOutput::builder()
                .set_tasks(Some(
                    r.tasks()
                        .iter()
                        .map(|arn| {
                            let tags = (with_tags && arn.ends_with("/t1")).then(|| {
                                vec![
                                    Tag::builder().key("team").value("data").build(),
                                    Tag::builder().key(CALL_TAG).value("sdk-token-1").build(),
                                ]
                            });
                            Task::builder()
                                .set_tags(tags)
                                .task_arn(arn)
                                .task_definition_arn(FAMILY_ARN)
                                .created_at(DateTime::from_secs(1_746_068_410))
                                .started_by("events-rule/nightly")
                                .group("family:nightly")
                                .overrides(
                                    aws_sdk_ecs::types::TaskOverride::builder()
                                        .container_overrides(
                                            ContainerOverride::builder()
                                                .name("app")
                                                .command("report")
                                                .build(),
                                        )
                                        .container_overrides(
                                            ContainerOverride::builder().name("log-router").build(),
                                        )
                                        .build(),
                                )
                                .build()
                        })
                        .collect(),
                ))
                .build()
        })
}

#[tokio::test]
async fn find_tasks_lists_running_and_stopped_tasks_of_the_family_and_describes_them() {
    let (list, describe) = (list_tasks(), describe_tasks());
    let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&list, &describe]);
    let query = TaskQuery {
        cluster: Some("batch".into()),
        family: "nightly".into(),
    };
    let found = EcsLauncher::new(client).find_tasks(&query).await;
    let Lookup::Found(tasks) = found else {
        panic!("{found:?}")
    };
    let arns: Vec<&str> = tasks.iter().map(|t| t.arn.as_str()).collect();
    assert_eq!(
        arns,
        ["t1", "t2", "t3", "t4"].map(|t| format!("arn:aws:ecs:us-east-1:1:task/batch/{t}")),
        "both pages of running tasks, and the stopped ones"
    );
    assert_eq!(list.num_calls(), 3);
    assert_eq!(describe.num_calls(), 1);
    assert_eq!(
        tasks[0],
        ExistingTask {
            arn: "arn:aws:ecs:us-east-1:1:task/batch/t1".into(),
            task_definition_arn: Some(FAMILY_ARN.into()),
            created_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_746_068_410)),
            started_by: Some("events-rule/nightly".into()),
            group: Some("family:nightly".into()),
            overrides: Some(TaskOverride {
                container_overrides: Some(vec![
                    req::ContainerOverride {
                        name: Some("app".into()),
                        command: Some(vec!["report".into()]),
                        ..req::ContainerOverride::default()
                    },
                    req::ContainerOverride {
                        name: Some("log-router".into()),
                        ..req::ContainerOverride::default()
                    },
                ]),
                ..TaskOverride::default()
            }),
            call_tag: Some("sdk-token-1".into()),
        }
    );
    assert_eq!(tasks[1].call_tag, None, "a task ecs-rerun did not start");
}

#[tokio::test]
async fn a_failed_look_up_says_which_call_failed() {
    let list = mock!(aws_sdk_ecs::Client::list_tasks).then_http_response(|| {
        http_error(
            400,
            "AccessDeniedException",
            "not authorized to perform: ecs:ListTasks",
        )
    });
    let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&list]);
    let query = TaskQuery {
        cluster: Some("batch".into()),
        family: "nightly".into(),
    };
    let found = EcsLauncher::new(client).find_tasks(&query).await;
    let Lookup::Failed(error) = found else {
        panic!("{found:?}")
    };
    assert!(
        error.contains("ListTasks") && error.contains("AccessDenied"),
        "{error}"
    );
}

// --- SNS ----------------------------------------------------------------------------------------

#[tokio::test]
async fn the_topics_own_message_size_limit_is_read_at_start_or_the_default_kept() {
    let answered = mock!(aws_sdk_sns::Client::get_topic_attributes)
        .match_requests(|r| r.topic_arn() == Some("arn:aws:sns:us-east-1:1:t"))
        .then_output(|| {
            GetTopicAttributesOutput::builder()
                .attributes("MaximumMessageSize", "65536")
                .build()
        });
    let denied = mock!(aws_sdk_sns::Client::get_topic_attributes)
        .then_error(|| GetTopicAttributesError::AuthorizationErrorException(not_allowed()));
    for (rule, limit) in [(answered, 65_536), (denied, DEFAULT_MAX_MESSAGE_SIZE)] {
        let client = mock_client!(aws_sdk_sns, [&rule]);
        let notifier = SnsNotifier::new(client, "arn:aws:sns:us-east-1:1:t".into());
        assert_eq!(
            notifier.max_message_size(),
            DEFAULT_MAX_MESSAGE_SIZE,
            "until it answers"
        );
        notifier.read_topic_limit().await;
        assert_eq!(notifier.max_message_size(), limit);
        assert_eq!(rule.num_calls(), 1);
    }
}

/// SNS's answer to a caller its policy does not allow.
fn not_allowed() -> aws_sdk_sns::types::error::AuthorizationErrorException {
    aws_sdk_sns::types::error::AuthorizationErrorException::builder()
        .message("not allowed")
        .meta(
            aws_sdk_sns::error::ErrorMetadata::builder()
                .code("AuthorizationError")
                .message("not allowed")
                .build(),
        )
        .build()
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
    let rule = mock!(aws_sdk_sns::Client::publish)
        .then_error(|| SnsPublishError::AuthorizationErrorException(not_allowed()));
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

#[tokio::test]
async fn a_hop_is_sent_to_the_delay_queue_with_its_delay() {
    use aws_sdk_sqs::operation::send_message::SendMessageOutput;
    use ecs_rerun::aws::sqs::SqsDelayQueue;
    use ecs_rerun::ports::queue::DelayQueue;
    let url = "https://sqs.us-east-1.amazonaws.com/111122223333/ecs-rerun-delay";
    let rule = mock!(aws_sdk_sqs::Client::send_message)
        .match_requests(move |r| {
            r.queue_url() == Some(url)
                && r.delay_seconds() == Some(900)
                && r.message_body() == Some("{\"hop\":1}")
        })
        .then_output(|| SendMessageOutput::builder().message_id("m-1").build());
    let client = mock_client!(aws_sdk_sqs, [&rule]);
    let queue = SqsDelayQueue::new(client, url.to_owned());
    // A wait longer than SQS's 15 minutes is sent with the longest delay; the hop chains the rest.
    queue
        .send("{\"hop\":1}", std::time::Duration::from_secs(1200))
        .await
        .expect("sent");
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn a_queue_that_refuses_fails_the_step_with_what_to_check() {
    use aws_sdk_sqs::operation::send_message::SendMessageError;
    use ecs_rerun::aws::sqs::SqsDelayQueue;
    use ecs_rerun::ports::queue::DelayQueue;
    let rule = mock!(aws_sdk_sqs::Client::send_message).then_error(|| {
        SendMessageError::generic(
            aws_sdk_sqs::error::ErrorMetadata::builder()
                .code("AccessDenied")
                .message("not allowed")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_sqs, [&rule]);
    let queue = SqsDelayQueue::new(client, "https://sqs/q".to_owned());
    let err = queue
        .send("{}", std::time::Duration::from_secs(10))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sqs:SendMessage") && err.contains("AccessDenied"),
        "{err}"
    );
}

// --- the self-check's describe calls (CloudTrail, EventBridge) ----------------------------------

mod hearing {
    use aws_sdk_cloudtrail::operation::describe_trails::DescribeTrailsOutput;
    use aws_sdk_cloudtrail::operation::get_event_selectors::GetEventSelectorsOutput;
    use aws_sdk_cloudtrail::operation::get_trail_status::GetTrailStatusOutput;
    use aws_sdk_cloudtrail::types::{
        AdvancedEventSelector, AdvancedFieldSelector, EventSelector, ReadWriteType, Trail,
    };
    use aws_sdk_eventbridge::operation::describe_rule::DescribeRuleOutput;
    use aws_sdk_eventbridge::types::RuleState;
    use aws_smithy_mocks::{mock, mock_client};
    use ecs_rerun::aws::hearing::AwsHearing;
    use ecs_rerun::core::self_check::{ClassicSelector, FieldSelector, Selectors, TrailSummary};
    use ecs_rerun::ports::hearing::Hearing;

    use super::http_error;

    const ARN: &str = "arn:aws:cloudtrail:eu-west-1:111122223333:trail/org";

    fn hearing(
        cloudtrail: aws_sdk_cloudtrail::Client,
        events: aws_sdk_eventbridge::Client,
    ) -> AwsHearing {
        AwsHearing::new(cloudtrail, events, "us-east-1".to_owned())
    }

    fn no_events() -> aws_sdk_eventbridge::Client {
        let rule = mock!(aws_sdk_eventbridge::Client::describe_rule)
            .then_http_response(|| http_error(500, "InternalException", "not expected"));
        mock_client!(aws_sdk_eventbridge, [&rule])
    }

    fn no_cloudtrail() -> aws_sdk_cloudtrail::Client {
        let rule = mock!(aws_sdk_cloudtrail::Client::describe_trails)
            .then_http_response(|| http_error(500, "InternalException", "not expected"));
        mock_client!(aws_sdk_cloudtrail, [&rule])
    }

    #[tokio::test]
    async fn trails_shadow_ones_included_are_listed_with_arn_and_scope() {
        let rule = mock!(aws_sdk_cloudtrail::Client::describe_trails)
            .match_requests(|r| r.include_shadow_trails() == Some(true))
            .then_output(|| {
                DescribeTrailsOutput::builder()
                    .trail_list(
                        Trail::builder()
                            .name("org")
                            .trail_arn(ARN)
                            .home_region("eu-west-1")
                            .is_multi_region_trail(true)
                            .build(),
                    )
                    .build()
            });
        let client = mock_client!(aws_sdk_cloudtrail, [&rule]);
        let trails = hearing(client, no_events()).trails().await.unwrap();
        assert_eq!(
            trails,
            [TrailSummary {
                name: "org".into(),
                arn: ARN.into(),
                home_region: Some("eu-west-1".into()),
                multi_region: true,
            }]
        );
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn access_denied_names_the_action() {
        let rule = mock!(aws_sdk_cloudtrail::Client::describe_trails).then_http_response(|| {
            http_error(
                400,
                "AccessDeniedException",
                "User is not authorized to perform: cloudtrail:DescribeTrails",
            )
        });
        let client = mock_client!(aws_sdk_cloudtrail, [&rule]);
        let failure = hearing(client, no_events()).trails().await.unwrap_err();
        assert_eq!(failure.action, "cloudtrail:DescribeTrails");
        assert_eq!(failure.code, "AccessDeniedException");
        assert!(failure.denied());
        assert!(failure.message.contains("not authorized"), "{failure:?}");
    }

    #[tokio::test]
    async fn status_and_selectors_are_read_by_arn() {
        let status = mock!(aws_sdk_cloudtrail::Client::get_trail_status)
            .match_requests(|r| r.name() == Some(ARN))
            .then_output(|| GetTrailStatusOutput::builder().is_logging(false).build());
        let classic = mock!(aws_sdk_cloudtrail::Client::get_event_selectors)
            .match_requests(|r| r.trail_name() == Some(ARN))
            .then_output(|| {
                GetEventSelectorsOutput::builder()
                    .event_selectors(
                        EventSelector::builder()
                            .read_write_type(ReadWriteType::ReadOnly)
                            .include_management_events(true)
                            .exclude_management_event_sources("kms.amazonaws.com")
                            .build(),
                    )
                    .build()
            });
        let client = mock_client!(aws_sdk_cloudtrail, [&status, &classic]);
        let hearing = hearing(client, no_events());
        assert_eq!(hearing.logging(ARN).await, Ok(false));
        assert_eq!(
            hearing.selectors(ARN).await,
            Ok(Selectors::Classic(vec![ClassicSelector {
                include_management_events: Some(true),
                read_write_type: Some("ReadOnly".into()),
                exclude_management_event_sources: vec!["kms.amazonaws.com".into()],
            }]))
        );
    }

    #[tokio::test]
    async fn advanced_selectors_are_read_whole() {
        let rule = mock!(aws_sdk_cloudtrail::Client::get_event_selectors).then_output(|| {
            GetEventSelectorsOutput::builder()
                .advanced_event_selectors(
                    AdvancedEventSelector::builder()
                        .name("management")
                        .field_selectors(
                            AdvancedFieldSelector::builder()
                                .field("eventCategory")
                                .equals("Management")
                                .build()
                                .unwrap(),
                        )
                        .field_selectors(
                            AdvancedFieldSelector::builder()
                                .field("eventSource")
                                .not_equals("kms.amazonaws.com")
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap(),
                )
                .build()
        });
        let client = mock_client!(aws_sdk_cloudtrail, [&rule]);
        let Ok(Selectors::Advanced(selectors)) = hearing(client, no_events()).selectors(ARN).await
        else {
            panic!("advanced selectors expected")
        };
        assert_eq!(selectors[0].name.as_deref(), Some("management"));
        assert_eq!(
            selectors[0].fields,
            [
                FieldSelector {
                    field: "eventCategory".into(),
                    equals: vec!["Management".into()],
                    ..FieldSelector::default()
                },
                FieldSelector {
                    field: "eventSource".into(),
                    not_equals: vec!["kms.amazonaws.com".into()],
                    ..FieldSelector::default()
                },
            ]
        );
    }

    #[tokio::test]
    async fn rule_state_missing_rule_and_denied_call() {
        let disabled = mock!(aws_sdk_eventbridge::Client::describe_rule)
            .match_requests(|r| r.name() == Some("stack-failed-runtask"))
            .then_output(|| {
                DescribeRuleOutput::builder()
                    .name("stack-failed-runtask")
                    .state(RuleState::Disabled)
                    .build()
            });
        let missing = mock!(aws_sdk_eventbridge::Client::describe_rule)
            .match_requests(|r| r.name() == Some("stack-gone"))
            .then_http_response(|| {
                http_error(
                    400,
                    "ResourceNotFoundException",
                    "Rule stack-gone does not exist.",
                )
            });
        let denied = mock!(aws_sdk_eventbridge::Client::describe_rule)
            .match_requests(|r| r.name() == Some("elsewhere"))
            .then_http_response(|| {
                http_error(
                    400,
                    "AccessDeniedException",
                    "not authorized to perform: events:DescribeRule",
                )
            });
        let events = mock_client!(
            aws_sdk_eventbridge,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&disabled, &missing, &denied]
        );
        let hearing = hearing(no_cloudtrail(), events);
        assert_eq!(
            hearing.rule_state("stack-failed-runtask").await,
            Ok(Some("DISABLED".into()))
        );
        assert_eq!(hearing.rule_state("stack-gone").await, Ok(None));
        let failure = hearing.rule_state("elsewhere").await.unwrap_err();
        assert_eq!(failure.action, "events:DescribeRule");
        assert!(failure.denied(), "{failure:?}");
    }

    #[tokio::test]
    async fn a_trail_gone_between_calls_is_a_failure_not_a_pass() {
        let rule = mock!(aws_sdk_cloudtrail::Client::get_trail_status)
            .then_http_response(|| http_error(400, "TrailNotFoundException", "Unknown trail"));
        let client = mock_client!(aws_sdk_cloudtrail, [&rule]);
        let failure = hearing(client, no_events()).logging(ARN).await.unwrap_err();
        assert_eq!(failure.action, "cloudtrail:GetTrailStatus");
        assert_eq!(failure.code, "TrailNotFoundException");
        assert!(!failure.denied());
    }
}
