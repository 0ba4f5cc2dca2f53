//! Capacity fallback rules: what `ECS_RERUN_RULES` accepts and refuses at start-up, what
//! `onCapacityProvider` matches, and the request a fallback sends (or refuses to send).

mod common;

use common::{config, failure};
use ecs_rerun::config::Config;
use ecs_rerun::core::classify::{Action, Rules, Subject};
use ecs_rerun::core::fallback::{Fallback, FallbackError, Placement};
use ecs_rerun::core::request::{
    AwsVpcConfiguration, CapacityProviderStrategyItem, NetworkConfiguration, PlacementConstraint,
    PlacementStrategy, RunTaskRequest,
};
use std::collections::HashMap;

const CAPACITY: &str = "Capacity is unavailable at this time. Please try again later or in a different availability zone";

/// The fallback of the first rule of `json`, as the verdict on a capacity failure of a Spot
/// request carries it.
fn fallback_of(json: &str) -> Fallback {
    let rules = Rules::with_overrides(json, 3).expect("valid rules");
    let verdict = rules.placement(&failure(CAPACITY), &spot_subject());
    verdict.fallback.as_deref().cloned().expect("a fallback")
}

fn spot_subject() -> Subject {
    Subject {
        family: "nightly-report".to_owned(),
        placements: Placement::of(&spot_request()).matcher_names(),
        ..Subject::default()
    }
}

fn strategy(names: &[&str]) -> Option<Vec<CapacityProviderStrategyItem>> {
    Some(
        names
            .iter()
            .map(|n| CapacityProviderStrategyItem {
                capacity_provider: Some((*n).to_owned()),
                weight: Some(1),
                base: None,
            })
            .collect(),
    )
}

/// A Fargate Spot job in two subnets.
fn spot_request() -> RunTaskRequest {
    RunTaskRequest {
        cluster: Some("batch".to_owned()),
        task_definition: Some("nightly-report:7".to_owned()),
        count: Some(2),
        capacity_provider_strategy: strategy(&["FARGATE_SPOT"]),
        platform_version: Some("1.4.0".to_owned()),
        network_configuration: Some(NetworkConfiguration {
            awsvpc_configuration: Some(AwsVpcConfiguration {
                subnets: Some(vec!["subnet-a".to_owned(), "subnet-b".to_owned()]),
                security_groups: Some(vec!["sg-1".to_owned()]),
                assign_public_ip: Some("DISABLED".to_owned()),
            }),
        }),
        started_by: Some("scheduler".to_owned()),
        ..RunTaskRequest::default()
    }
}

const SPOT_TO_FARGATE: &str = r#"[{"onReason": "*Capacity is unavailable*",
    "onCapacityProvider": "fargate_spot", "action": "retry",
    "fallback": {"capacityProviderStrategy": [{"capacityProvider": "FARGATE"}]}}]"#;

// ---- start-up validation --------------------------------------------------------------------

#[test]
fn bad_fallback_rules_stop_start_up_naming_the_variable_the_rule_and_the_field() {
    let rule = |extra: &str| {
        format!(r#"[{{"onReason": "*Capacity*", "action": "retry", "MaxAttempts": 3, {extra}}}]"#)
    };
    for (json, says) in [
        (
            rule(r#""fallback": {"launchType": "FARGATE", "subnet": ["s"]}"#),
            "unknown field `subnet`",
        ),
        (
            rule(
                r#""fallback": {"capacityProviderStrategy": [{"capacityProvider": "FARGATE", "weigth": 1}]}"#,
            ),
            "unknown field `weigth`",
        ),
        (
            rule(
                r#""fallback": {"launchType": "FARGATE", "capacityProviderStrategy": [{"capacityProvider": "FARGATE"}]}"#,
            ),
            "fallback: give exactly one of capacityProviderStrategy and launchType, not both",
        ),
        (
            rule(r#""fallback": {"subnets": ["subnet-c"]}"#),
            "fallback: give exactly one of capacityProviderStrategy and launchType",
        ),
        (
            rule(
                r#""fallback": {"capacityProviderStrategy": [{"capacityProvider": "FARGATE"}, {"capacityProvider": "my-asg"}]}"#,
            ),
            "fallback.capacityProviderStrategy: mixes Fargate and EC2",
        ),
        (
            rule(
                r#""fallback": {"capacityProviderStrategy": [{"capacityProvider": "FARGATE_SPOT"}]}"#,
            ),
            "fallback.capacityProviderStrategy: FARGATE_SPOT has no place in a fallback",
        ),
        (
            rule(r#""fallback": {"capacityProviderStrategy": []}"#),
            "fallback.capacityProviderStrategy: give 1 to 20",
        ),
        (
            rule(
                r#""fallback": {"capacityProviderStrategy": [{"capacityProvider": "a", "base": 1}, {"capacityProvider": "b", "base": 2}]}"#,
            ),
            "only one provider may have a base",
        ),
        (
            rule(r#""fallback": {"launchType": "EXTERNAL"}"#),
            "fallback.launchType: \"EXTERNAL\" is not FARGATE or EC2",
        ),
        (
            rule(r#""fallback": {"launchType": "FARGATE", "subnets": []}"#),
            "fallback.subnets: give 1 to 16",
        ),
        (
            rule(r#""fallback": {"launchType": "FARGATE"}, "fallbackFromAttempt": 4"#),
            "fallbackFromAttempt: 4 is outside 1..3",
        ),
        (
            rule(r#""fallback": {"launchType": "FARGATE"}, "fallbackFromAttempt": 0"#),
            "fallbackFromAttempt: 0 is outside 1..3",
        ),
        (
            rule(r#""fallbackFromAttempt": 2"#),
            "fallbackFromAttempt: given without a fallback",
        ),
        (
            r#"[{"onReason": "*Capacity*", "action": "notify", "fallback": {"launchType": "FARGATE"}}]"#
                .to_owned(),
            "fallback: only a rule whose action is retry can fall back; this one says notify",
        ),
    ] {
        let err = Rules::with_overrides(&json, 3).unwrap_err().to_string();
        assert!(
            err.starts_with("ECS_RERUN_RULES") && err.contains(says),
            "{json}: {err}"
        );
        if says.starts_with("unknown field") {
            assert!(err.contains("ECS_RERUN_RULES: rule 0: unknown field"), "{err}");
        } else {
            assert!(err.contains("rule 0 (onReason=*Capacity* -> "), "{err}");
        }
    }
}

#[test]
fn fallback_from_attempt_defaults_to_the_rules_max_attempts_else_the_global_one() {
    let own = fallback_of(
        r#"[{"onReason": "*Capacity*", "action": "retry", "MaxAttempts": 5,
             "fallback": {"launchType": "FARGATE"}}]"#,
    );
    assert_eq!(own.from_attempt, 5);
    let global = fallback_of(
        r#"[{"onReason": "*Capacity*", "action": "retry", "fallback": {"launchType": "FARGATE"}}]"#,
    );
    assert_eq!(global.from_attempt, 3);
    // The global bound is ECS_RERUN_MAX_ATTEMPTS, as the configuration reads it.
    let vars = HashMap::from([
        (
            "ECS_RERUN_TOPIC_ARN",
            "arn:aws:sns:us-east-1:111122223333:t",
        ),
        ("ECS_RERUN_MAX_ATTEMPTS", "2"),
        (
            "ECS_RERUN_RULES",
            r#"[{"onReason": "*Capacity*", "action": "retry", "fallback": {"launchType": "FARGATE"}, "fallbackFromAttempt": 3}]"#,
        ),
    ]);
    let err = Config::from_lookup(|k| vars.get(k).map(|v| (*v).to_owned()))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fallbackFromAttempt: 3 is outside 1..2"),
        "{err}"
    );
    assert!(
        config(&[("ECS_RERUN_RULES", SPOT_TO_FARGATE)])
            .rules
            .placement(&failure(CAPACITY), &spot_subject())
            .fallback
            .is_some()
    );
}

// ---- onCapacityProvider ---------------------------------------------------------------------

#[test]
fn on_capacity_provider_matches_the_recorded_placement() {
    let rules = Rules::with_overrides(
        r#"[{"onCapacityProvider": "*spot*", "onReason": "*Capacity*", "action": "notify"},
            {"onCapacityProvider": "launchType:EC2", "onReason": "*Capacity*", "action": "notify"},
            {"onCapacityProvider": "default", "onReason": "*Capacity*", "action": "notify"}]"#,
        3,
    )
    .unwrap();
    let action = |request: &RunTaskRequest| {
        let subject = Subject {
            placements: Placement::of(request).matcher_names(),
            ..Subject::default()
        };
        rules.placement(&failure(CAPACITY), &subject).action
    };
    let mut request = spot_request();
    assert_eq!(action(&request), Action::Notify, "FARGATE_SPOT, any case");
    request.capacity_provider_strategy = strategy(&["FARGATE", "FARGATE_SPOT"]);
    assert_eq!(action(&request), Action::Notify, "one provider is enough");
    request.capacity_provider_strategy = strategy(&["FARGATE"]);
    assert_eq!(action(&request), Action::Retry, "no Spot: the default rule");
    request.capacity_provider_strategy = None;
    request.launch_type = Some("FARGATE".to_owned());
    assert_eq!(action(&request), Action::Retry, "launchType:FARGATE");
    request.launch_type = Some("EC2".to_owned());
    assert_eq!(action(&request), Action::Notify, "launchType:EC2");
    request.launch_type = None;
    assert_eq!(action(&request), Action::Notify, "neither: default");
}

// ---- the rewrite ----------------------------------------------------------------------------

#[test]
fn the_fallback_replaces_the_placement_and_nothing_else() {
    let fallback = fallback_of(SPOT_TO_FARGATE);
    let original = spot_request();
    let moved = fallback.apply(&original).expect("fits");
    assert_eq!(
        moved.capacity_provider_strategy,
        strategy(&["FARGATE"]),
        "a fallback that gives no weight weighs each provider 1 (ECS wants one above 0)"
    );
    assert_eq!(moved.launch_type, None);
    let mut rest = moved.clone();
    rest.capacity_provider_strategy = original.capacity_provider_strategy.clone();
    assert_eq!(rest, original, "nothing else of the request changes");
    assert_eq!(
        fallback.tag_value(&Placement::of(&original)),
        "FARGATE_SPOT:FARGATE"
    );
    assert_eq!(
        fallback.cost_sentence(&Placement::of(&original)),
        "ran on FARGATE instead of FARGATE_SPOT: it costs more and is no longer interruptible"
    );
}

#[test]
fn a_launch_type_fallback_replaces_a_strategy_and_subnets_replace_the_list() {
    let fallback = fallback_of(
        r#"[{"onReason": "*Capacity*", "action": "retry",
             "fallback": {"launchType": "FARGATE", "subnets": ["subnet-c", "subnet-d", "subnet-e"]}}]"#,
    );
    let moved = fallback.apply(&spot_request()).expect("fits");
    assert_eq!(moved.launch_type.as_deref(), Some("FARGATE"));
    assert_eq!(moved.capacity_provider_strategy, None);
    let vpc = moved
        .network_configuration
        .and_then(|n| n.awsvpc_configuration)
        .unwrap();
    assert_eq!(
        vpc.subnets.unwrap(),
        ["subnet-c", "subnet-d", "subnet-e"],
        "a full replacement list"
    );
    assert_eq!(vpc.security_groups.unwrap(), ["sg-1"], "kept");
}

#[test]
fn the_same_placement_with_more_subnets_keeps_the_strategy_and_says_so() {
    let fallback = fallback_of(
        r#"[{"onReason": "*Capacity*", "action": "retry",
             "fallback": {"capacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1}],
                          "subnets": ["subnet-a", "subnet-b", "subnet-c"]}}]"#,
    );
    let mut request = spot_request();
    request.capacity_provider_strategy = strategy(&["FARGATE"]);
    let moved = fallback.apply(&request).unwrap();
    assert_eq!(
        moved.capacity_provider_strategy,
        request.capacity_provider_strategy
    );
    assert_eq!(
        fallback.cost_sentence(&Placement::of(&request)),
        "ran on FARGATE in other subnets than the job names: check that they reach what the job needs"
    );
}

#[test]
fn a_request_the_fallback_cannot_take_is_refused_naming_the_rule() {
    let ec2 = fallback_of(
        r#"[{"onReason": "*Capacity*", "action": "retry",
             "fallback": {"capacityProviderStrategy": [{"capacityProvider": "my-asg"}]}}]"#,
    );
    let err = ec2.apply(&spot_request()).unwrap_err();
    assert!(
        matches!(&err, FallbackError::Unfit { problem, .. } if problem.contains("platformVersion")),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("configuration error in rule onReason=*Capacity* -> retry")
    );
    let mut without_version = spot_request();
    without_version.platform_version = None;
    assert!(ec2.apply(&without_version).is_ok(), "EC2 takes it without");

    let mut constrained = spot_request();
    constrained.launch_type = Some("EC2".to_owned());
    constrained.capacity_provider_strategy = None;
    constrained.platform_version = None;
    constrained.placement_constraints = Some(vec![PlacementConstraint {
        kind: Some("memberOf".to_owned()),
        expression: Some("attribute:ecs.instance-type =~ g5.*".to_owned()),
    }]);
    let onto_fargate = fallback_of(SPOT_TO_FARGATE);
    let err = onto_fargate.apply(&constrained).unwrap_err().to_string();
    assert!(err.contains("dropPlacementConstraints"), "{err}");
    constrained.placement_constraints = None;
    constrained.placement_strategy = Some(vec![PlacementStrategy {
        kind: Some("spread".to_owned()),
        field: Some("attribute:ecs.availability-zone".to_owned()),
    }]);
    assert!(onto_fargate.apply(&constrained).is_err(), "a strategy too");

    let dropping = fallback_of(
        r#"[{"onReason": "*Capacity*", "action": "retry",
             "fallback": {"launchType": "FARGATE", "dropPlacementConstraints": true}}]"#,
    );
    let moved = dropping.apply(&constrained).expect("dropped");
    assert_eq!(
        (moved.placement_constraints, moved.placement_strategy),
        (None, None)
    );

    let mut bridge = spot_request();
    bridge.network_configuration = None;
    let err = onto_fargate.apply(&bridge).unwrap_err().to_string();
    assert!(err.contains("awsvpc"), "Fargate needs awsvpc: {err}");
    let subnets = fallback_of(
        r#"[{"onReason": "*Capacity*", "action": "retry",
             "fallback": {"launchType": "EC2", "subnets": ["subnet-c"]}}]"#,
    );
    bridge.platform_version = None;
    let err = subnets.apply(&bridge).unwrap_err().to_string();
    assert!(err.contains("no awsvpc network configuration"), "{err}");
}

#[test]
fn capacity_failures_are_fargates_message_resource_fargate_and_what_on_reason_names() {
    let spot = fallback_of(SPOT_TO_FARGATE);
    assert!(spot.is_capacity_failure(CAPACITY));
    assert!(spot.is_capacity_failure("RESOURCE:FARGATE"));
    assert!(
        !spot.is_capacity_failure("RESOURCE:MEMORY"),
        "not named by onReason"
    );
    assert!(!spot.is_capacity_failure(
        "You've reached the limit on the number of vCPUs you can run concurrently"
    ));
    assert!(!spot.is_capacity_failure("AGENT"));
    let memory = Rules::with_overrides(
        r#"[{"onReason": "RESOURCE:MEMORY", "action": "retry",
             "fallback": {"capacityProviderStrategy": [{"capacityProvider": "big-asg"}]}}]"#,
        3,
    )
    .unwrap()
    .placement(&failure("RESOURCE:MEMORY"), &Subject::default())
    .fallback
    .unwrap();
    assert!(memory.is_capacity_failure("RESOURCE:MEMORY"));
    assert!(!memory.is_capacity_failure("RESOURCE:CPU"));
}

#[test]
fn placement_labels_hold_tag_characters_only() {
    let mut request = spot_request();
    request.capacity_provider_strategy = strategy(&["FARGATE_SPOT", "FARGATE"]);
    assert_eq!(Placement::of(&request).label(), "FARGATE_SPOT+FARGATE");
    request.capacity_provider_strategy = strategy(&["odd:name"]);
    assert_eq!(
        Placement::of(&request).label(),
        "odd_name",
        "':' separates from and to"
    );
    request.capacity_provider_strategy = strategy(&[&"x".repeat(300)]);
    assert!(Placement::of(&request).label().len() <= 127);
    request.capacity_provider_strategy = None;
    assert_eq!(Placement::of(&request).label(), "default");
}

/// The rules docs/capacity-fallback.md offers to copy: each ```json block of the page parses as
/// `ECS_RERUN_RULES` does at start-up, and moves the request it is written for (Spot for the
/// first, FARGATE for the second) when it lacked capacity, and no other.
#[test]
fn docs_examples_are_valid_rules() {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/capacity-fallback.md"
    ))
    .expect("docs/capacity-fallback.md");
    let examples: Vec<&str> = page
        .split("```json\n")
        .skip(1)
        .filter_map(|rest| rest.split("\n```").next())
        .collect();
    assert_eq!(examples.len(), 2, "the page's two ready-made rules");
    let on = |provider: &str| {
        let mut request = spot_request();
        request.capacity_provider_strategy = strategy(&[provider]);
        Subject {
            family: "nightly-report".to_owned(),
            placements: Placement::of(&request).matcher_names(),
            ..Subject::default()
        }
    };
    let moved = |json: &str, provider: &str| {
        let rules = Rules::with_overrides(json, 3)
            .unwrap_or_else(|e| panic!("docs example does not parse: {e}\n{json}"));
        let verdict = rules.placement(&failure(CAPACITY), &on(provider));
        assert_eq!(verdict.action, Action::Retry, "{json}");
        verdict.fallback.is_some()
    };
    let (spot, more_zones) = (examples[0], examples[1]);
    assert!(moved(spot, "FARGATE_SPOT") && !moved(spot, "FARGATE"));
    assert!(moved(more_zones, "FARGATE") && !moved(more_zones, "FARGATE_SPOT"));
}
