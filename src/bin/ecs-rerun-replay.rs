//! Replays event files through the same handler as the Lambda, for local runs and debugging.
//!
//! `ecs-rerun-replay [--dry-run] [--fresh] [--expect FILE] FILE.json...`
//!
//! A file holds an EventBridge event, or what CloudTrail gives an operator: a record copied from
//! Event history, a `lookup-events` answer, or a trail's log file (`{"Records": [...]}`). Its
//! RunTask records are wrapped as EventBridge would send them, and the command says so: that is
//! how to ask what ecs-rerun would have done with last night's failure.
//!
//! Prints one JSON line per event on stdout (the handler's report plus `file`), logs on stderr.
//! With `--dry-run` it makes no AWS call: it logs the RunTask request and prints the Publish
//! request it would send. Otherwise it uses real SDK clients from the standard configuration
//! chain, so `AWS_ENDPOINT_URL` points it at a local endpoint. With `--expect FILE` (a JSON map
//! from file name to `{"dry_run": outcome, "local": outcome}`) it checks every outcome.
//! Each episode runs whole, every hop of it: the command plays the delay queue's part itself,
//! waiting each hop's delay (as configured; a dry run stops before the first wait).
//! Records older than `ECS_RERUN_MAX_RECORD_AGE_S` are not rerun, here as in Lambda; `--fresh`
//! moves each file's records in time (the newest `eventTime` to now, the others by the same
//! offset) first, which is how the
//! sample events, recorded in 2025, are replayed as if they had just happened.
//! The scheduled self-check event (`{"source": "ecs-rerun.self-check", ...}`) asks CloudTrail and
//! EventBridge; a dry run has no client for them, so it reports the check as skipped (`ignored`).
//! Exits 1 if any event could not be processed or had an unexpected outcome, 2 on bad usage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ecs_rerun::aws::ecs::EcsLauncher;
use ecs_rerun::aws::hearing::AwsHearing;
use ecs_rerun::aws::sns::SnsNotifier;
use ecs_rerun::config::Config;
use ecs_rerun::core::event::envelopes;
use ecs_rerun::handler::{Handler, HandlerError, Invocation, Report};
use ecs_rerun::ports::clock::Clock;
use ecs_rerun::ports::clock::TokioClock;
use ecs_rerun::ports::hearing::Hearing;
use ecs_rerun::ports::notify::{Notifier, PrintNotifier};
use ecs_rerun::ports::queue::LocalQueue;
use ecs_rerun::ports::store::MemoryStore;
use serde_json::{Value, json};

const USAGE: &str = "usage: ecs-rerun-replay [--dry-run] [--fresh] [--expect FILE] EVENT.json...";

struct Args {
    dry_run: bool,
    fresh: bool,
    expect: Option<PathBuf>,
    files: Vec<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    lambda_runtime::tracing::init_default_subscriber_with_writer(std::io::stderr);
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let expected = match args.expect.as_deref().map(read_expectations).transpose() {
        Ok(e) => e.unwrap_or_default(),
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    // A dry run publishes nothing, so it needs no topic.
    let config = Config::from_lookup(|name| {
        std::env::var(name).ok().or_else(|| {
            (args.dry_run && name == "ECS_RERUN_TOPIC_ARN")
                .then(|| "arn:aws:sns:us-east-1:000000000000:ecs-rerun-dry-run".to_owned())
        })
    });
    let mut config = match config {
        Ok(config) => config,
        Err(err) => {
            eprintln!("configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    config.dry_run |= args.dry_run;
    if args.fresh {
        eprintln!(
            "--fresh: each file's records are moved in time so that the newest eventTime is now, \
             so records older than ECS_RERUN_MAX_RECORD_AGE_S are replayed as if just recorded"
        );
    }
    let key = if args.dry_run { "dry_run" } else { "local" };
    let ok = if args.dry_run {
        // Built without the credential and region chain: a dry run must not touch the network.
        let ecs = aws_sdk_ecs::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let launcher = EcsLauncher::new(aws_sdk_ecs::Client::from_conf(ecs));
        let handler = Handler::new(config, launcher, PrintNotifier, TokioClock)
            .with_queue(LocalQueue::default())
            .with_store(MemoryStore::default());
        replay(&handler, &args, &expected, key).await
    } else {
        let aws = ecs_rerun::aws::setup::aws_config().await;
        let launcher = EcsLauncher::new(aws_sdk_ecs::Client::new(&aws));
        let notifier = SnsNotifier::new(aws_sdk_sns::Client::new(&aws), config.topic_arn.clone());
        let hearing = AwsHearing::from_config(&aws);
        let handler = Handler::new(config, launcher, notifier, TokioClock)
            .with_queue(LocalQueue::default())
            .with_store(MemoryStore::default())
            .with_hearing(hearing);
        replay(&handler, &args, &expected, key).await
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn replay<N: Notifier, H: Hearing>(
    handler: &Handler<EcsLauncher, N, TokioClock, LocalQueue, MemoryStore, H>,
    args: &Args,
    expected: &BTreeMap<String, Value>,
    key: &str,
) -> bool {
    let mut all_ok = true;
    for file in &args.files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let events = match read_event(file).and_then(envelopes) {
            Ok(found) => {
                if let Some(note) = &found.note {
                    eprintln!("{name}: {note}");
                }
                if args.fresh {
                    retime(found.events)
                } else {
                    found.events
                }
            }
            Err(msg) => {
                println!(
                    "{}",
                    json!({"file": name, "outcome": "error", "error": msg})
                );
                all_ok = false;
                continue;
            }
        };
        let many = events.len() > 1;
        for (index, event) in events.into_iter().enumerate() {
            let mut line = match run_episode(handler, event).await {
                Ok(report) => serde_json::to_value(&report).unwrap_or_default(),
                Err(err) => json!({"outcome": "error", "error": err.to_string()}),
            };
            line["file"] = Value::from(name.clone());
            if many {
                line["record"] = Value::from(index);
            }
            let outcome = line["outcome"].as_str().unwrap_or("error").to_owned();
            all_ok &= outcome != "error";
            if let Some(want) = expected
                .get(&name)
                .and_then(|e| e.get(key))
                .and_then(Value::as_str)
                && want != outcome
            {
                eprintln!("{name}: expected outcome {want}, got {outcome}");
                all_ok = false;
            }
            println!("{line}");
        }
    }
    all_ok
}

/// Handles an event, then plays the delay queue until the episode has ended.
async fn run_episode<N: Notifier, H: Hearing>(
    handler: &Handler<EcsLauncher, N, TokioClock, LocalQueue, MemoryStore, H>,
    event: Value,
) -> Result<Report, HandlerError> {
    let invocation = Invocation::default();
    let mut report = handler.handle(event, &invocation).await?;
    while let Some((body, delay)) = handler.queue().pop() {
        eprintln!(
            "replay: {}; playing the delay queue: {}s",
            report.reason,
            delay.as_secs()
        );
        TokioClock.sleep(delay).await;
        report = handler.handle_message(&body, &invocation).await?;
    }
    Ok(report)
}

/// Moves a file's records by one offset, so that the newest `detail.eventTime` (or a task
/// state change's `detail.stoppedAt`) is now: records
/// keep their order and the time between them (two nights of one job stay two calls, not one).
fn retime(events: Vec<Value>) -> Vec<Value> {
    let parse = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    // A CloudTrail record's time, or a task state change's.
    let recorded = ["/detail/eventTime", "/detail/stoppedAt"];
    let Some(newest) = events
        .iter()
        .flat_map(|e| recorded.map(|p| parse(e.pointer(p))))
        .flatten()
        .max()
    else {
        return events;
    };
    let shift = chrono::Utc::now().signed_duration_since(newest);
    let format =
        |t: chrono::DateTime<chrono::Utc>| Value::from(t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    events
        .into_iter()
        .map(|mut event| {
            for pointer in recorded.iter().chain(&["/time"]) {
                if let Some(at) = parse(event.pointer(pointer))
                    && let Some(slot) = event.pointer_mut(pointer)
                {
                    *slot = format(at + shift);
                }
            }
            event
        })
        .collect()
}

fn read_event(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))
}

fn read_expectations(path: &Path) -> Result<BTreeMap<String, Value>, String> {
    let value = read_event(path)?;
    serde_json::from_value(value).map_err(|e| {
        format!(
            "{}: expected a JSON object of file names: {e}",
            path.display()
        )
    })
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        dry_run: false,
        fresh: false,
        expect: None,
        files: Vec::new(),
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dry-run" => parsed.dry_run = true,
            "--fresh" => parsed.fresh = true,
            "--expect" => parsed.expect = Some(args.next().ok_or("--expect needs a file")?.into()),
            "-h" | "--help" => {
                return Err(
                    "ecs-rerun-replay: replay EventBridge events through the ecs-rerun handler"
                        .to_owned(),
                );
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            file => parsed.files.push(file.into()),
        }
    }
    if parsed.files.is_empty() {
        return Err("no event file given".to_owned());
    }
    Ok(parsed)
}
