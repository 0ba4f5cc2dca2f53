//! Schedule: how long to wait before each call, per failure class, in the vocabulary of the
//! Step Functions Retrier (`IntervalSeconds`, `BackoffRate`, `MaxDelaySeconds`,
//! `JitterStrategy`).
//!
//! A failure waits as long as it needs: throttling and server errors seconds, an agent
//! reconnecting tens of seconds, capacity (EC2 instances to launch, Fargate capacity to come
//! back) minutes. The jitter is drawn from a digest of the call, not a random source, so that a
//! replayed hop waits the same and a mass failure still spreads out.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How the waits are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Jitter {
    /// Anywhere from zero to the full step (Step Functions' `FULL`).
    Full,
    /// At least half the step, the other half drawn (the retry time an agent needs is kept).
    Equal,
    /// Exactly the step (Step Functions' `NONE`).
    None,
}

/// One retry schedule: the wait before step *n* (the job's attempt *n*, or a call's resend
/// *n − 1*) is `min(MaxDelaySeconds, IntervalSeconds × BackoffRate^(n−1))`, spread by the
/// jitter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Schedule {
    /// The first step, in seconds (may be fractional: tests and local runs use milliseconds).
    pub interval_seconds: f64,
    /// Each step is this many times the one before (at least 1).
    pub backoff_rate: f64,
    /// Cap on one step, in seconds.
    pub max_delay_seconds: f64,
    /// How each wait is spread within its step.
    pub jitter_strategy: Jitter,
}

impl Schedule {
    /// Throttling, 5xx and lost answers: the service asks for seconds.
    pub const SECONDS: Self = Self {
        interval_seconds: 2.0,
        backoff_rate: 2.0,
        max_delay_seconds: 20.0,
        jitter_strategy: Jitter::Full,
    };
    /// An agent reconnecting: tens of seconds.
    pub const TENS_OF_SECONDS: Self = Self {
        interval_seconds: 30.0,
        backoff_rate: 2.0,
        max_delay_seconds: 120.0,
        jitter_strategy: Jitter::Equal,
    };
    /// Capacity (`RESOURCE:*`, Fargate "Capacity is unavailable"): minutes. With three calls the
    /// waits add up to 15–30 minutes.
    pub const MINUTES: Self = Self {
        interval_seconds: 300.0,
        backoff_rate: 2.0,
        max_delay_seconds: 900.0,
        jitter_strategy: Jitter::Equal,
    };

    /// The schedule every failure gets when `ECS_RERUN_BASE_DELAY_MS` / `ECS_RERUN_MAX_DELAY_MS`
    /// are set: base doubled each time, capped, equal jitter.
    pub fn fixed(base: Duration, max: Duration) -> Self {
        Self {
            interval_seconds: base.as_secs_f64(),
            backoff_rate: 2.0,
            max_delay_seconds: max.as_secs_f64(),
            jitter_strategy: Jitter::Equal,
        }
    }

    /// The wait before step `call` (1-based); `seed` makes the jitter differ per episode.
    pub fn wait(&self, call: u32, seed: &str) -> Duration {
        let exponent = i32::try_from(call.saturating_sub(1)).unwrap_or(i32::MAX);
        let step = (self.interval_seconds * self.backoff_rate.powi(exponent))
            .min(self.max_delay_seconds)
            .max(0.0);
        let step = Duration::try_from_secs_f64(step).unwrap_or(Duration::ZERO);
        let digest = Sha256::digest(format!("jitter:{seed}:{call}"));
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        let fraction = u64::from_be_bytes(bytes) as f64 / u64::MAX as f64;
        match self.jitter_strategy {
            Jitter::None => step,
            Jitter::Full => step.mul_f64(fraction),
            Jitter::Equal => step / 2 + step.mul_f64(fraction / 2.0),
        }
    }

    /// Checks the numbers, naming the field that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be a number of seconds of 0 or more, not {v}"
                ))
            }
        };
        finite("IntervalSeconds", self.interval_seconds)?;
        finite("MaxDelaySeconds", self.max_delay_seconds)?;
        if !(self.backoff_rate.is_finite() && self.backoff_rate >= 1.0) {
            return Err(format!(
                "BackoffRate must be 1 or more, not {}",
                self.backoff_rate
            ));
        }
        if self.max_delay_seconds < self.interval_seconds {
            return Err("MaxDelaySeconds must be at least IntervalSeconds".to_owned());
        }
        Ok(())
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Self::TENS_OF_SECONDS
    }
}
