//! The scheduled self-check: ask CloudTrail and EventBridge, let the core judge, and when
//! failed `RunTask` calls may not reach ecs-rerun, say so once, through the same topic.

use super::{Handler, HandlerError, Report};
use crate::core::outcome::Outcome;
use crate::core::self_check::{self, Observation, RuleAnswer, TrailProbe};
use crate::ports::clock::Clock;
use crate::ports::hearing::Hearing;
use crate::ports::launch::Launchers;
use crate::ports::notify::Notifier;
use crate::ports::queue::DelayQueue;
use crate::ports::store::LaunchStore;

impl<L: Launchers, N: Notifier, C: Clock, Q: DelayQueue, S: LaunchStore, H: Hearing>
    Handler<L, N, C, Q, S, H>
{
    /// Runs the self-check: `self_check_ok`, or `self_check_failed` with one notification
    /// listing every problem. Only a failed publish fails the invocation.
    pub(super) async fn self_check(&self) -> Result<Report, HandlerError> {
        if !self.hearing.enabled() {
            let reason = "self-check skipped: it needs AWS (no CloudTrail or EventBridge client \
                          in this run)";
            tracing::info!(reason, "self-check skipped");
            return Ok(Report::plain(None, Outcome::Ignored, reason.to_owned()));
        }
        if self.config.self_check_rules.is_empty() {
            tracing::warn!(
                "ECS_RERUN_SELF_CHECK_RULES is not set: the self-check checks the trail, no rule"
            );
        }
        let verdict = self_check::judge(&self.observe().await);
        let summary = verdict.summary();
        let Some(note) = verdict.notification(
            self.config.notification_format,
            self.notifier.max_message_size(),
        ) else {
            tracing::info!(
                outcome = Outcome::SelfCheckOk.as_str(),
                reason = %summary,
                "self-check passed"
            );
            return Ok(Report::plain(None, Outcome::SelfCheckOk, summary));
        };
        for problem in &verdict.problems {
            tracing::error!(
                outcome = Outcome::SelfCheckFailed.as_str(),
                region = %verdict.region,
                problem = %problem,
                "self-check: failed RunTask calls may not reach ecs-rerun"
            );
        }
        self.notifier.publish(&note).await?;
        Ok(Report {
            notified: true,
            subject: Some(note.subject),
            ..Report::plain(None, Outcome::SelfCheckFailed, summary)
        })
    }

    /// What the describe calls say: the trails, the status and selectors of each that covers
    /// the Region, the state of each rule.
    async fn observe(&self) -> Observation {
        let region = self.hearing.region().to_owned();
        let trails = self.hearing.trails().await;
        let mut probes = Vec::new();
        for trail in trails.iter().flatten().filter(|t| t.covers(&region)) {
            probes.push(TrailProbe {
                arn: trail.arn.clone(),
                logging: self.hearing.logging(&trail.arn).await,
                selectors: self.hearing.selectors(&trail.arn).await,
            });
        }
        let mut rules = Vec::new();
        for name in &self.config.self_check_rules {
            rules.push(RuleAnswer {
                name: name.clone(),
                state: self.hearing.rule_state(name).await,
            });
        }
        Observation {
            region,
            trails,
            probes,
            rules,
        }
    }
}
