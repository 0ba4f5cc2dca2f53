//! Per-event cost of the pure core, on every failure sample event and the large one.
//!
//! For each event, two benchmarks:
//! - `parse/<event>`: the JSON text to a `serde_json::Value`, as the Lambda runtime does before the
//!   handler sees the event (the floor the core is compared with);
//! - `core/<event>`: decode + classify + plan on that `Value`: `decode`, `decide` (which
//!   classifies the failures with the rule table) and, for a retry, the first `Episode::next`,
//!   which builds the exact `RunTask` request to replay (or, for an API error without a token,
//!   the look-up that comes first).
//!
//! The plan does not rerun a record older than `Policy::max_record_age`, and the sample events
//! are from 2025: each event is planned at its own `eventTime` plus a minute, so that the retry
//! path is measured, not the early "stale" exit.
//!
//! `make bench` runs this (`cargo bench --bench core`) and reads the medians criterion writes to
//! `target/criterion/<group>/<event>/new/estimates.json`. Run alone: `cargo bench --bench core`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ecs_rerun::core::classify::Rules;
use ecs_rerun::core::decode::{Decoded, decode};
use ecs_rerun::core::guard::GuardedLaunch;
use ecs_rerun::core::org::AllowedAccounts;
use ecs_rerun::core::outcome::Outcome;
use ecs_rerun::core::plan::episode::Step;
use ecs_rerun::core::plan::{Context, Decision, Policy, decide};
use serde_json::Value;

/// The failure events (01-07), the guarded successful launch (09) and the large failure, as
/// (name, JSON text).
fn events() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("events"))
        .expect("events/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let prefix = name.get(..2).unwrap_or("");
            name.ends_with(".json") && (("01".."08").contains(&prefix) || prefix == "09")
        })
        .collect();
    files.sort();
    files.push(root.join("bench/events/large.json"));
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_stem()
                .and_then(|n| n.to_str())
                .unwrap_or("?")
                .to_owned();
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, text)
        })
        .collect()
}

/// A minute after the event's record: when the handler would see it.
fn just_after(event: &Value) -> SystemTime {
    let origin = match decode(event.clone()) {
        Ok(Decoded::Failed(failed)) => failed.origin,
        Ok(Decoded::Started(started)) => started.origin,
        other => panic!("neither a failed nor a successful RunTask: {other:?}"),
    };
    origin.recorded_at.expect("a sample event has an eventTime") + Duration::from_secs(60)
}

/// decode + classify + plan: what the handler computes before its first AWS call.
fn core(event: Value, rules: &Rules, policy: &Policy, now: SystemTime) -> usize {
    let ctx = Context {
        now,
        own_account: None,
        allowed_accounts: &AllowedAccounts::NONE,
        member_role: None,
        function_name: None,
    };
    match decode(event) {
        Ok(Decoded::Failed(failed)) => match decide(&failed, rules, policy, ctx) {
            Decision::Retry(mut episode) => match episode.next(policy, now, None) {
                Step::Launch { request, .. } => usize::from(request.overrides.is_some()) + 2,
                Step::Lookup { query, .. } => query.family.len() + 2,
                Step::Done(conclusion) => conclusion.attempts.len() + 1,
            },
            Decision::Conclude(conclusion) => {
                assert_ne!(
                    conclusion.outcome,
                    Outcome::Stale,
                    "planned at the wrong time"
                );
                conclusion.original.len()
            }
            Decision::Ignore(_) => 0,
        },
        // What the handler computes before it writes a guarded launch to the store.
        Ok(Decoded::Started(started)) => {
            let launch = GuardedLaunch::recorded(&started.origin, started.replay_blocker);
            serde_json::to_string(&launch).map_or(0, |body| body.len())
        }
        Ok(Decoded::Ignored(_) | Decoded::Stopped(_) | Decoded::SelfCheck) => 0,
        Err(err) => panic!("a sample event does not decode: {err}"),
    }
}

fn bench(c: &mut Criterion) {
    let rules = Rules::defaults();
    let policy = Policy::default();
    let events = events();

    let mut parse = c.benchmark_group("parse");
    for (name, text) in &events {
        parse.bench_function(name.as_str(), |b| {
            b.iter(|| serde_json::from_str::<Value>(black_box(text)).expect("valid JSON"));
        });
    }
    parse.finish();

    // Decoding alone, to see what classify + plan add on top.
    let mut decoding = c.benchmark_group("decode");
    for (name, text) in &events {
        let value: Value = serde_json::from_str(text).expect("valid JSON");
        decoding.bench_function(name.as_str(), |b| {
            b.iter_batched(
                || value.clone(),
                |v| decode(black_box(v)),
                BatchSize::SmallInput,
            )
        });
    }
    decoding.finish();

    let mut group = c.benchmark_group("core");
    for (name, text) in &events {
        let value: Value = serde_json::from_str(text).expect("valid JSON");
        let now = just_after(&value);
        assert!(
            core(value.clone(), &rules, &policy, now) > 0,
            "{name}: not a failure event"
        );
        group.bench_function(name.as_str(), |b| {
            // The handler owns the parsed event; the copy each iteration needs is not timed.
            b.iter_batched(
                || value.clone(),
                |v| core(black_box(v), &rules, &policy, now),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short but stable on a small machine: the whole run (16 benchmarks) takes about a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench
}
criterion_main!(benches);
