//! Config: the `ECS_RERUN_*` environment variables, read and validated once at start-up.
//!
//! A missing or malformed value stops start-up with a message that names the variable, so a
//! deployment mistake shows at the first invocation instead of as a silent misbehaviour.

use std::time::Duration;

use crate::core::classify::{RuleError, Rules};
use crate::core::guard::DEFAULT_TTL;
use crate::core::message::NotificationFormat;
use crate::core::org::AllowedAccounts;
use crate::core::plan::Policy;
use crate::core::schedule::Schedule;

/// Everything the handler needs to know from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// SNS topic for notifications (`ECS_RERUN_TOPIC_ARN`, required).
    pub topic_arn: String,
    /// Attempts, backoff, replay of redacted environments.
    pub policy: Policy,
    /// The classification table, with the operator's rules first.
    pub rules: Rules,
    /// Also notify when a retry recovered the tasks (`ECS_RERUN_NOTIFY_ON_RECOVERY`).
    pub notify_on_recovery: bool,
    /// How notifications are written (`ECS_RERUN_NOTIFICATION_FORMAT`: `text`, the default,
    /// or `chat`).
    pub notification_format: NotificationFormat,
    /// Accounts besides the function's own whose events are acted on (`ECS_RERUN_ALLOWED_ACCOUNTS`:
    /// a list, or `*` for any account the bus lets in).
    pub allowed_accounts: AllowedAccounts,
    /// The role, by name, assumed in each allowed account to rerun its tasks there
    /// (`ECS_RERUN_MEMBER_ROLE`); without it, other accounts' failures are only notified.
    pub member_role: Option<String>,
    /// Decide, log and notify, but launch nothing (`ECS_RERUN_DRY_RUN`).
    pub dry_run: bool,
    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`, set by Lambda): its calls are made by a
    /// session of that name, which is how it knows its own records.
    pub function_name: Option<String>,
    /// The function's Region (`AWS_REGION`, set by Lambda). A record of its own account made
    /// elsewhere keeps its job apart from one made here ([`crate::core::org::Place::is_own`]);
    /// `None` (a local run): every Region counts as its own.
    pub region: Option<String>,
    /// The SQS queue that carries an episode through a wait (`ECS_RERUN_DELAY_QUEUE_URL`);
    /// without it, the invocation waits itself, within its deadline.
    pub delay_queue_url: Option<String>,
    /// Waits longer than this go through the delay queue (`ECS_RERUN_HOP_AFTER_MS`, 5 s).
    pub hop_after: Duration,
    /// The DynamoDB table that keeps launches and notifications (`ECS_RERUN_STORE_TABLE`);
    /// without it, tasks that fail to start are not rerun and duplicates may notify twice.
    pub store_table: Option<String>,
    /// How long the store keeps a launch (`ECS_RERUN_STORE_TTL_HOURS`, 24).
    pub store_ttl: Duration,
    /// The EventBridge rules (default bus) the self-check finds enabled, or complains about
    /// (`ECS_RERUN_SELF_CHECK_RULES`, comma-separated names).
    pub self_check_rules: Vec<String>,
}

/// A configuration problem, naming the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{0} is not set; it is required (see the README's configuration table)")]
    Missing(&'static str),
    /// A variable has a value that cannot be used.
    #[error("{var}={value:?} is invalid: expected {expected}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What would be valid.
        expected: &'static str,
    },
    /// `ECS_RERUN_RULES` does not parse.
    #[error(transparent)]
    Rules(#[from] RuleError),
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let defaults = Policy::default();

        let topic_arn =
            get("ECS_RERUN_TOPIC_ARN").ok_or(ConfigError::Missing("ECS_RERUN_TOPIC_ARN"))?;
        if !(topic_arn.starts_with("arn:") && topic_arn.contains(":sns:")) {
            return Err(ConfigError::Invalid {
                var: "ECS_RERUN_TOPIC_ARN",
                value: topic_arn,
                expected: "an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)",
            });
        }
        let max_attempts = number(
            &get,
            "ECS_RERUN_MAX_ATTEMPTS",
            defaults.max_attempts.into(),
            1..=10,
            "a whole number from 1 to 10",
        )?;
        // Either variable replaces every rule's schedule with one (tests, quick local runs).
        let delay_override = if get("ECS_RERUN_BASE_DELAY_MS").is_some()
            || get("ECS_RERUN_MAX_DELAY_MS").is_some()
        {
            let base_delay = millis(&get, "ECS_RERUN_BASE_DELAY_MS", Duration::from_secs(20))?;
            let max_delay = millis(&get, "ECS_RERUN_MAX_DELAY_MS", Duration::from_secs(120))?;
            if base_delay > max_delay {
                return Err(ConfigError::Invalid {
                    var: "ECS_RERUN_MAX_DELAY_MS",
                    value: max_delay.as_millis().to_string(),
                    expected: "at least ECS_RERUN_BASE_DELAY_MS",
                });
            }
            Some(Schedule::fixed(base_delay, max_delay))
        } else {
            None
        };
        let rules = match get("ECS_RERUN_RULES") {
            Some(json) => Rules::with_overrides(
                &json,
                u32::try_from(max_attempts).unwrap_or(defaults.max_attempts),
            )?,
            None => Rules::defaults(),
        };
        let allowed_accounts = allowed_accounts(&get)?;
        let member_role = get("ECS_RERUN_MEMBER_ROLE")
            .map(|name| {
                let name = name.trim().to_owned();
                // IAM role names: 1 to 64 of these characters; a path or an ARN is not a name.
                if name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
                {
                    Ok(name)
                } else {
                    Err(ConfigError::Invalid {
                        var: "ECS_RERUN_MEMBER_ROLE",
                        value: name,
                        expected: "an IAM role name (not an ARN): up to 64 letters, digits and +=,.@_-",
                    })
                }
            })
            .transpose()?;
        let self_check_rules = list(
            &get,
            "ECS_RERUN_SELF_CHECK_RULES",
            |r| {
                r.len() <= 64
                    && r.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            },
            "a comma-separated list of EventBridge rule names (up to 64 of A-Z a-z 0-9 . - _ each)",
        )?;
        let notification_format = match get("ECS_RERUN_NOTIFICATION_FORMAT") {
            None => NotificationFormat::default(),
            Some(value) => NotificationFormat::named(&value).ok_or(ConfigError::Invalid {
                var: "ECS_RERUN_NOTIFICATION_FORMAT",
                value,
                expected: "text or chat",
            })?,
        };

        Ok(Self {
            topic_arn,
            policy: Policy {
                max_attempts: u32::try_from(max_attempts).unwrap_or(defaults.max_attempts),
                delay_override,
                deadline_reserve: millis(
                    &get,
                    "ECS_RERUN_DEADLINE_RESERVE_MS",
                    defaults.deadline_reserve,
                )?,
                replay_redacted_env: flag(&get, "ECS_RERUN_REPLAY_REDACTED_ENV")?,
                max_record_age: Duration::from_secs(number(
                    &get,
                    "ECS_RERUN_MAX_RECORD_AGE_S",
                    defaults.max_record_age.as_secs(),
                    60..=82_800,
                    "seconds from 60 to 82800 (23 hours; ECS keeps a token at most 24 hours)",
                )?),
            },
            rules,
            notify_on_recovery: flag(&get, "ECS_RERUN_NOTIFY_ON_RECOVERY")?,
            notification_format,
            allowed_accounts,
            member_role,
            dry_run: flag(&get, "ECS_RERUN_DRY_RUN")?,
            function_name: get("AWS_LAMBDA_FUNCTION_NAME"),
            region: get("AWS_REGION").map(|r| r.trim().to_owned()),
            delay_queue_url: get("ECS_RERUN_DELAY_QUEUE_URL"),
            hop_after: millis(&get, "ECS_RERUN_HOP_AFTER_MS", Duration::from_secs(5))?,
            store_table: get("ECS_RERUN_STORE_TABLE"),
            store_ttl: Duration::from_secs(
                3600 * number(
                    &get,
                    "ECS_RERUN_STORE_TTL_HOURS",
                    DEFAULT_TTL.as_secs() / 3600,
                    1..=168,
                    "hours from 1 to 168 (a week)",
                )?,
            ),
            self_check_rules,
        })
    }
}

/// `ECS_RERUN_ALLOWED_ACCOUNTS`: `*` (any account the bus lets in) or a list of account IDs.
fn allowed_accounts(get: &impl Fn(&str) -> Option<String>) -> Result<AllowedAccounts, ConfigError> {
    const VAR: &str = "ECS_RERUN_ALLOWED_ACCOUNTS";
    if get(VAR).is_some_and(|value| value.trim() == "*") {
        return Ok(AllowedAccounts::Any);
    }
    list(
        get,
        VAR,
        |a| a.len() == 12 && a.chars().all(|c| c.is_ascii_digit()),
        "`*`, or a comma-separated list of 12-digit account IDs",
    )
    .map(AllowedAccounts::Listed)
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    expected: &'static str,
) -> Result<u64, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(value) => match value.trim().parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ConfigError::Invalid {
                var,
                value,
                expected,
            }),
        },
    }
}

/// A comma-separated list whose every item is `valid`; empty when unset.
fn list(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    valid: fn(&str) -> bool,
    expected: &'static str,
) -> Result<Vec<String>, ConfigError> {
    let Some(value) = get(var) else {
        return Ok(Vec::new());
    };
    let items: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect();
    if items.iter().all(|item| valid(item)) {
        Ok(items)
    } else {
        Err(ConfigError::Invalid {
            var,
            value,
            expected,
        })
    }
}

fn millis(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let default = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    number(
        get,
        var,
        default,
        0..=900_000,
        "milliseconds from 0 to 900000 (15 minutes)",
    )
    .map(Duration::from_millis)
}

fn flag(get: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<bool, ConfigError> {
    match get(var) {
        None => Ok(false),
        Some(value) => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(ConfigError::Invalid {
                var,
                value,
                expected: "true or false",
            }),
        },
    }
}
