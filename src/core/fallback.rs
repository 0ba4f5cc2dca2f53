//! Capacity fallback: where a rule sends the last attempts of a job when its placement has no
//! capacity (Fargate Spot → Fargate, one zone → more zones), and the rewrite of the request.
//!
//! A rule in `ECS_RERUN_RULES` may carry a `fallback` ([`FallbackSpec`], validated into a
//! [`Fallback`]); [`crate::core::plan`] decides *when* an episode switches to it. This module
//! says *what* the switched request is ([`Fallback::apply`]), refuses one that the fallback
//! placement cannot take as it stands (aws-facts §14.5: `platformVersion` onto EC2, placement
//! constraints onto Fargate), and names placements for tags, matchers and notifications.
//!
//! AWS does not fall back by itself ("Fargate doesn't replace Spot capacity with on-demand
//! capacity", aws-facts §14.2), and the answer to a failed call never says which provider
//! lacked capacity: only the recorded request does ([`Placement::of`]).

use serde::{Deserialize, Serialize};

use crate::core::classify::Glob;
use crate::core::request::{CapacityProviderStrategyItem, RunTaskRequest};

/// The Fargate capacity providers; any other provider is an Auto Scaling group's (EC2).
const FARGATE_PROVIDERS: &[&str] = &["FARGATE", "FARGATE_SPOT"];
/// The provider a fallback may not name: it is what a fallback falls back from.
const SPOT: &str = "FARGATE_SPOT";
/// ECS limits (RunTask model): strategy items, subnets, a tag value's length.
const MAX_STRATEGY_ITEMS: usize = 20;
const MAX_SUBNETS: usize = 16;
const MAX_TAG_VALUE: usize = 256;
/// What `onCapacityProvider` matches when the record had neither a strategy nor a launch type:
/// the cluster's default strategy applied, which the record does not show (aws-facts §14.1).
pub const DEFAULT_PLACEMENT: &str = "default";

/// A rule's `fallback`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FallbackSpec {
    capacity_provider_strategy: Option<Vec<StrategySpec>>,
    launch_type: Option<String>,
    subnets: Option<Vec<String>>,
    #[serde(default)]
    drop_placement_constraints: bool,
}

/// One item of a fallback's `capacityProviderStrategy`, as written (the API's own names).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StrategySpec {
    capacity_provider: String,
    weight: Option<i32>,
    base: Option<i32>,
}

/// Where a request runs: the two mutually exclusive fields of `RunTask`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Placement {
    /// `launchType` (`FARGATE` or `EC2`).
    LaunchType(String),
    /// `capacityProviderStrategy`.
    Strategy(Vec<CapacityProviderStrategyItem>),
    /// Neither: the cluster's default strategy.
    Default,
}

impl Placement {
    /// The placement of `request`, as recorded.
    pub fn of(request: &RunTaskRequest) -> Self {
        if let Some(strategy) = request
            .capacity_provider_strategy
            .as_ref()
            .filter(|s| !s.is_empty())
        {
            return Self::Strategy(strategy.clone());
        }
        match &request.launch_type {
            Some(launch_type) => Self::LaunchType(launch_type.clone()),
            None => Self::Default,
        }
    }

    /// What `onCapacityProvider` is matched against: each provider name of the strategy,
    /// `launchType:<type>`, or [`DEFAULT_PLACEMENT`].
    pub fn matcher_names(&self) -> Vec<String> {
        match self {
            Self::Strategy(items) => items.iter().map(|i| provider(i).to_owned()).collect(),
            Self::LaunchType(launch_type) => vec![format!("launchType:{launch_type}")],
            Self::Default => vec![DEFAULT_PLACEMENT.to_owned()],
        }
    }

    /// A short name a person and a tag value can read: the providers joined by `+`, the launch
    /// type, or `default`; only tag characters (aws-facts §5), at most 256 of them.
    pub fn label(&self) -> String {
        let label = match self {
            Self::Strategy(items) => items.iter().map(provider).collect::<Vec<_>>().join("+"),
            Self::LaunchType(launch_type) => launch_type.clone(),
            Self::Default => DEFAULT_PLACEMENT.to_owned(),
        };
        label
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || " _.=+-@/".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(MAX_TAG_VALUE / 2 - 1)
            .collect()
    }

    /// Whether tasks placed here run on Fargate (`None`: the cluster's default, unknown).
    fn on_fargate(&self) -> Option<bool> {
        match self {
            Self::LaunchType(launch_type) => Some(launch_type == "FARGATE"),
            Self::Strategy(items) => Some(
                items
                    .iter()
                    .all(|i| FARGATE_PROVIDERS.contains(&provider(i))),
            ),
            Self::Default => None,
        }
    }
}

/// The provider name of a strategy item (empty when the record left it out).
fn provider(item: &CapacityProviderStrategyItem) -> &str {
    item.capacity_provider.as_deref().unwrap_or_default()
}

/// A validated fallback, fixed for an episode when its rule matched (it travels in the
/// delay-queue hop, so a redeploy between hops cannot change it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Where the fallback attempts run.
    pub placement: Placement,
    /// A full replacement list of subnets, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<Vec<String>>,
    /// Leave the request's placement constraints and strategy out (Fargate takes none).
    #[serde(default)]
    pub drop_placement_constraints: bool,
    /// The first attempt (as `ecs-rerun:attempt` numbers them) that may run on the fallback.
    pub from_attempt: u32,
    /// The rule's `onReason`, if any: a `RESOURCE:*` failure counts as a capacity failure only
    /// when it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_reason: Option<String>,
    /// The rule, as notifications name it.
    pub rule: String,
}

/// Why a fallback cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FallbackError {
    /// The rule's `fallback` is not valid (start-up).
    #[error("{field}: {problem}")]
    Invalid {
        /// The field, as written (`fallback.launchType`, ...).
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The request as it stands cannot run on the fallback placement (at the switch).
    #[error(
        "configuration error in rule {rule}: the request cannot run on the fallback placement \
         {to} as it stands: {problem}; it was not sent. Fix the rule's fallback (or the job's \
         request), then start the missing task(s) by hand"
    )]
    Unfit {
        /// The rule.
        rule: String,
        /// The fallback placement.
        to: String,
        /// What stands in the way.
        problem: String,
    },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> FallbackError {
    FallbackError::Invalid {
        field,
        problem: problem.into(),
    }
}

impl FallbackSpec {
    /// Validates the spec of the rule `rule` (its text), whose `onReason` is `on_reason`, with
    /// `from_attempt` already resolved and checked against its `MaxAttempts`.
    pub fn validate(
        self,
        rule: &str,
        on_reason: Option<&str>,
        from_attempt: u32,
    ) -> Result<Fallback, FallbackError> {
        let placement = match (self.capacity_provider_strategy, self.launch_type) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "fallback",
                    "give exactly one of capacityProviderStrategy and launchType, not both \
                     (RunTask takes one or the other)",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "fallback",
                    "give exactly one of capacityProviderStrategy and launchType",
                ));
            }
            (None, Some(launch_type)) => {
                if !matches!(launch_type.as_str(), "FARGATE" | "EC2") {
                    return Err(invalid(
                        "fallback.launchType",
                        format!("{launch_type:?} is not FARGATE or EC2"),
                    ));
                }
                Placement::LaunchType(launch_type)
            }
            (Some(items), None) => Placement::Strategy(strategy(items)?),
        };
        if let Some(subnets) = &self.subnets
            && (subnets.is_empty()
                || subnets.len() > MAX_SUBNETS
                || subnets.iter().any(|s| s.trim().is_empty()))
        {
            return Err(invalid(
                "fallback.subnets",
                format!("give 1 to {MAX_SUBNETS} subnet IDs (all in one VPC)"),
            ));
        }
        Ok(Fallback {
            placement,
            subnets: self.subnets,
            drop_placement_constraints: self.drop_placement_constraints,
            from_attempt,
            on_reason: on_reason.map(str::to_owned),
            rule: rule.to_owned(),
        })
    }
}

fn strategy(items: Vec<StrategySpec>) -> Result<Vec<CapacityProviderStrategyItem>, FallbackError> {
    const FIELD: &str = "fallback.capacityProviderStrategy";
    if items.is_empty() || items.len() > MAX_STRATEGY_ITEMS {
        return Err(invalid(
            FIELD,
            format!("give 1 to {MAX_STRATEGY_ITEMS} capacity providers"),
        ));
    }
    if items.iter().any(|i| i.capacity_provider.trim().is_empty()) {
        return Err(invalid(FIELD, "a capacityProvider is empty"));
    }
    if items.iter().any(|i| i.capacity_provider == SPOT) {
        return Err(invalid(
            FIELD,
            "FARGATE_SPOT has no place in a fallback: a fallback is where a job goes when Spot \
             has no capacity",
        ));
    }
    let fargate = items
        .iter()
        .filter(|i| FARGATE_PROVIDERS.contains(&i.capacity_provider.as_str()))
        .count();
    if fargate != 0 && fargate != items.len() {
        return Err(invalid(
            FIELD,
            "mixes Fargate and EC2 (Auto Scaling group) providers; a strategy holds one kind",
        ));
    }
    if items
        .iter()
        .any(|i| i.weight.is_some_and(|w| !(0..=1000).contains(&w)))
    {
        return Err(invalid(FIELD, "a weight is outside 0..1000"));
    }
    if items
        .iter()
        .any(|i| i.base.is_some_and(|b| !(0..=100_000).contains(&b)))
    {
        return Err(invalid(FIELD, "a base is outside 0..100000"));
    }
    if items.iter().filter(|i| i.base.unwrap_or(0) > 0).count() > 1 {
        return Err(invalid(FIELD, "only one provider may have a base"));
    }
    // ECS takes a missing weight as 0, and a strategy needs one provider weighted above 0: a
    // fallback that gives no weight at all means "these providers", so each weighs 1.
    let unweighted = items.iter().all(|i| i.weight.is_none());
    Ok(items
        .into_iter()
        .map(|i| CapacityProviderStrategyItem {
            capacity_provider: Some(i.capacity_provider),
            weight: if unweighted { Some(1) } else { i.weight },
            base: i.base,
        })
        .collect())
}

impl Fallback {
    /// `request` moved to the fallback placement: both placement fields replaced, the subnets
    /// too if the fallback names some, placement constraints and strategy left out if it says
    /// so; nothing else changes. A request the placement cannot take as it stands is refused.
    pub fn apply(&self, request: &RunTaskRequest) -> Result<RunTaskRequest, FallbackError> {
        let unfit = |problem: &str| FallbackError::Unfit {
            rule: self.rule.clone(),
            to: self.placement.label(),
            problem: problem.to_owned(),
        };
        let mut moved = request.clone();
        match &self.placement {
            Placement::LaunchType(launch_type) => {
                moved.launch_type = Some(launch_type.clone());
                moved.capacity_provider_strategy = None;
            }
            Placement::Strategy(items) => {
                moved.launch_type = None;
                moved.capacity_provider_strategy = Some(items.clone());
            }
            Placement::Default => return Err(unfit("no placement given")),
        }
        if let Some(subnets) = &self.subnets {
            let vpc = moved
                .network_configuration
                .as_mut()
                .and_then(|n| n.awsvpc_configuration.as_mut())
                .ok_or_else(|| {
                    unfit(
                        "the fallback names subnets, but the request has no awsvpc network \
                         configuration to put them in",
                    )
                })?;
            vpc.subnets = Some(subnets.clone());
        }
        if self.drop_placement_constraints {
            moved.placement_constraints = None;
            moved.placement_strategy = None;
        }
        let fargate = self.placement.on_fargate() == Some(true);
        if fargate {
            let constrained = moved
                .placement_constraints
                .as_ref()
                .is_some_and(|c| !c.is_empty())
                || moved
                    .placement_strategy
                    .as_ref()
                    .is_some_and(|s| !s.is_empty());
            if constrained {
                return Err(unfit(
                    "it has placement constraints or a placement strategy, which Fargate does \
                     not support; add \"dropPlacementConstraints\": true to the fallback",
                ));
            }
            let awsvpc = moved
                .network_configuration
                .as_ref()
                .and_then(|n| n.awsvpc_configuration.as_ref())
                .is_some_and(|v| v.subnets.as_ref().is_some_and(|s| !s.is_empty()));
            if !awsvpc {
                return Err(unfit(
                    "Fargate needs an awsvpc network configuration with subnets, and the \
                     request has none",
                ));
            }
        } else if moved.platform_version.is_some() {
            return Err(unfit(
                "it sets platformVersion, which only Fargate takes; EC2 refuses it",
            ));
        }
        Ok(moved)
    }

    /// The value of the `ecs-rerun:fallback` tag: `<from>:<to>`, e.g. `FARGATE_SPOT:FARGATE`.
    pub fn tag_value(&self, from: &Placement) -> String {
        format!("{}:{}", from.label(), self.placement.label())
    }

    /// Whether `reason` (a placement failure's, or a stopped task's reason) says the placement
    /// had no capacity: Fargate's "Capacity is unavailable", `RESOURCE:FARGATE`, or another
    /// `RESOURCE:*` the rule's `onReason` names. A quota message is not one: more capacity
    /// elsewhere would not lift it.
    pub fn is_capacity_failure(&self, reason: &str) -> bool {
        let glob = |pattern: &str| Glob::new_case_insensitive(pattern).matches(reason);
        if glob("*Capacity is unavailable*") || glob("*RESOURCE:FARGATE*") {
            return true;
        }
        glob("*RESOURCE:*")
            && self
                .on_reason
                .as_deref()
                .is_some_and(|on_reason| Glob::new_case_insensitive(on_reason).matches(reason))
    }

    /// The one sentence on what the switch costs, for the notification.
    pub fn cost_sentence(&self, from: &Placement) -> String {
        let (from, to) = (from.label(), self.placement.label());
        let spot = |p: &str| p.split('+').any(|name| name == SPOT);
        if spot(&from) && !spot(&to) {
            format!("ran on {to} instead of {from}: it costs more and is no longer interruptible")
        } else if self.subnets.is_some() && from == to {
            format!(
                "ran on {to} in other subnets than the job names: check that they reach what \
                 the job needs"
            )
        } else {
            format!("ran on {to} instead of {from}: its cost and interruptibility may differ")
        }
    }
}
