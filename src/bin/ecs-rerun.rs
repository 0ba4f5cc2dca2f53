//! The Lambda bootstrap: tracing, config, clients built once, then the runtime loop.

use std::time::{SystemTime, UNIX_EPOCH};

use ecs_rerun::aws::dynamodb::DynamoStore;
use ecs_rerun::aws::hearing::AwsHearing;
use ecs_rerun::aws::identity::OwnAccount;
use ecs_rerun::aws::places::EcsPlaces;
use ecs_rerun::aws::sns::SnsNotifier;
use ecs_rerun::aws::sqs::SqsDelayQueue;
use ecs_rerun::config::Config;
use ecs_rerun::core::org;
use ecs_rerun::handler::{Handler, HandlerError, Invocation, Report};
use ecs_rerun::ports::clock::TokioClock;
use ecs_rerun::ports::queue::DelayQueue;
use ecs_rerun::{account_of_arn, metrics};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    // JSON lines when AWS_LAMBDA_LOG_FORMAT=JSON, as Lambda's advanced logging controls set it.
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()
        .inspect_err(|err| tracing::error!(error = %err, "invalid configuration"))?;
    let aws = ecs_rerun::aws::setup::aws_config().await;
    let notifier = SnsNotifier::new(aws_sdk_sns::Client::new(&aws), config.topic_arn.clone());
    // In the background: init returns at once; until the topic answers, 256 KiB holds.
    tokio::spawn({
        let notifier = notifier.clone();
        async move { notifier.read_topic_limit().await }
    });
    let queue = config.delay_queue_url.clone();
    let store = config
        .store_table
        .clone()
        .map(|table| DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), table));
    if store.is_none() {
        tracing::info!(
            "ECS_RERUN_STORE_TABLE is not set: tasks that fail to start are not rerun, and \
             duplicate deliveries of one failure may notify twice"
        );
    }
    let hearing = AwsHearing::from_config(&aws);
    let own_account = OwnAccount::new(&aws);
    // Other accounts' tasks run with the member role's credentials, in their records' Regions.
    let places = EcsPlaces::new(
        aws.clone(),
        config.member_role.clone(),
        org::session_name(config.function_name.as_deref()),
    );
    let handler = Handler::new(config, places, notifier, TokioClock)
        .with_store(store)
        .with_hearing(hearing);
    match queue {
        Some(url) => {
            let queue = SqsDelayQueue::new(aws_sdk_sqs::Client::new(&aws), url);
            serve(&handler.with_queue(queue), &own_account).await
        }
        None => {
            tracing::warn!(
                "ECS_RERUN_DELAY_QUEUE_URL is not set: each episode waits inside its invocation, \
                 bounded by the function's timeout (set it to let waits go through the delay queue)"
            );
            serve(&handler, &own_account).await
        }
    }
}

async fn serve<Q: DelayQueue>(
    handler: &Handler<EcsPlaces, SnsNotifier, TokioClock, Q, Option<DynamoStore>, AwsHearing>,
    own_account: &OwnAccount,
) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let invocation = Invocation {
            deadline: deadline(&event.context),
            own_account: own_account
                .resolve(account_of_arn(&event.context.invoked_function_arn))
                .await,
        };
        let reply = handler
            .handle_payload(event.payload, &invocation)
            .await
            .map_err(diagnostic)?;
        reply.reports.iter().for_each(emit_metrics);
        Ok::<Value, Diagnostic>(reply.body)
    }))
    .await
}

/// The invocation's deadline. Lambda always sends a future one; a runtime emulator may send a
/// relative or zero value, which would make every retry look too late, so it counts as none.
fn deadline(context: &lambda_runtime::Context) -> Option<SystemTime> {
    let deadline = context.deadline();
    if deadline > SystemTime::now() {
        Some(deadline)
    } else {
        tracing::warn!(
            deadline_ms = context.deadline,
            "the runtime sent a deadline in the past; running without one"
        );
        None
    }
}

fn emit_metrics(report: &Report) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if let Some(line) = metrics::emf_line(report, now_ms) {
        println!("{line}");
    }
}

fn diagnostic(err: HandlerError) -> Diagnostic {
    let error_type = match err {
        HandlerError::Decode(_) => "DecodeError",
        HandlerError::Hop(_) => "HopError",
        HandlerError::Publish(_) => "PublishError",
        HandlerError::Queue(_) => "QueueError",
        HandlerError::Store(_) => "StoreError",
        HandlerError::NoticeInFlight { .. } => "NoticeInFlight",
    };
    Diagnostic {
        error_type: error_type.to_owned(),
        error_message: err.to_string(),
    }
}
