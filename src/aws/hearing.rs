//! The self-check's describe calls on AWS CloudTrail (`DescribeTrails`, `GetTrailStatus`,
//! `GetEventSelectors`) and Amazon EventBridge (`DescribeRule`).

use aws_sdk_cloudtrail::types::{AdvancedFieldSelector, EventSelector};
use aws_sdk_eventbridge::operation::describe_rule::DescribeRuleError;
// One `SdkError` type for every SDK crate; CloudTrail's re-exports serve EventBridge's too.
use aws_sdk_cloudtrail::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::core::self_check::{
    AdvancedSelector, CallFailure, ClassicSelector, FieldSelector, Selectors, TrailSummary,
};
use crate::ports::hearing::Hearing;

/// Asks CloudTrail and EventBridge, with clients built once at start-up.
#[derive(Debug, Clone)]
pub struct AwsHearing {
    cloudtrail: aws_sdk_cloudtrail::Client,
    events: aws_sdk_eventbridge::Client,
    region: String,
}

impl AwsHearing {
    /// Builds both clients from the shared configuration (once, at start-up), asking about its
    /// Region.
    pub fn from_config(aws: &aws_config::SdkConfig) -> Self {
        Self::new(
            aws_sdk_cloudtrail::Client::new(aws),
            aws_sdk_eventbridge::Client::new(aws),
            aws.region()
                .map_or_else(|| "(no Region configured)".to_owned(), ToString::to_string),
        )
    }

    /// Wraps the two clients; `region` is the one they call (the function's).
    pub fn new(
        cloudtrail: aws_sdk_cloudtrail::Client,
        events: aws_sdk_eventbridge::Client,
        region: String,
    ) -> Self {
        Self {
            cloudtrail,
            events,
            region,
        }
    }
}

impl Hearing for AwsHearing {
    fn region(&self) -> &str {
        &self.region
    }

    async fn trails(&self) -> Result<Vec<TrailSummary>, CallFailure> {
        // Shadow trails included (the default, said explicitly): a multi-Region trail created in
        // another Region, or an organization trail seen from a member account, is one of them.
        let out = self
            .cloudtrail
            .describe_trails()
            .include_shadow_trails(true)
            .send()
            .await
            .map_err(|e| failure("cloudtrail:DescribeTrails", e))?;
        Ok(out
            .trail_list()
            .iter()
            .map(|t| TrailSummary {
                name: t.name().unwrap_or("(unnamed)").to_owned(),
                arn: t.trail_arn().or(t.name()).unwrap_or_default().to_owned(),
                home_region: t.home_region().map(str::to_owned),
                multi_region: t.is_multi_region_trail().unwrap_or(false),
            })
            .collect())
    }

    async fn logging(&self, arn: &str) -> Result<bool, CallFailure> {
        let out = self
            .cloudtrail
            .get_trail_status()
            .name(arn)
            .send()
            .await
            .map_err(|e| failure("cloudtrail:GetTrailStatus", e))?;
        Ok(out.is_logging().unwrap_or(false))
    }

    async fn selectors(&self, arn: &str) -> Result<Selectors, CallFailure> {
        let out = self
            .cloudtrail
            .get_event_selectors()
            .trail_name(arn)
            .send()
            .await
            .map_err(|e| failure("cloudtrail:GetEventSelectors", e))?;
        // A trail has one kind or the other; advanced ones, when present, are what it uses.
        if out.advanced_event_selectors().is_empty() {
            Ok(Selectors::Classic(
                out.event_selectors().iter().map(classic).collect(),
            ))
        } else {
            Ok(Selectors::Advanced(
                out.advanced_event_selectors()
                    .iter()
                    .map(|s| AdvancedSelector {
                        name: s.name().map(str::to_owned),
                        fields: s.field_selectors().iter().map(field).collect(),
                    })
                    .collect(),
            ))
        }
    }

    async fn rule_state(&self, name: &str) -> Result<Option<String>, CallFailure> {
        match self.events.describe_rule().name(name).send().await {
            Ok(out) => Ok(Some(
                out.state().map_or("(no state)", |s| s.as_str()).to_owned(),
            )),
            Err(SdkError::ServiceError(service))
                if matches!(
                    service.err(),
                    DescribeRuleError::ResourceNotFoundException(_)
                ) =>
            {
                Ok(None)
            }
            Err(err) => Err(failure("events:DescribeRule", err)),
        }
    }
}

fn classic(selector: &EventSelector) -> ClassicSelector {
    ClassicSelector {
        include_management_events: selector.include_management_events(),
        read_write_type: selector.read_write_type().map(|t| t.as_str().to_owned()),
        exclude_management_event_sources: selector.exclude_management_event_sources().to_vec(),
    }
}

fn field(selector: &AdvancedFieldSelector) -> FieldSelector {
    FieldSelector {
        field: selector.field().to_owned(),
        equals: selector.equals().to_vec(),
        starts_with: selector.starts_with().to_vec(),
        ends_with: selector.ends_with().to_vec(),
        not_equals: selector.not_equals().to_vec(),
        not_starts_with: selector.not_starts_with().to_vec(),
        not_ends_with: selector.not_ends_with().to_vec(),
    }
}

/// What a failed call said: the service's error code and message, or for a call that got no
/// answer (timeout, connection), the kind of failure.
fn failure<E, R>(action: &'static str, err: SdkError<E, R>) -> CallFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(service) => CallFailure {
            action,
            code: service.err().code().unwrap_or("UnknownError").to_owned(),
            message: service.err().message().unwrap_or("(no message)").to_owned(),
        },
        SdkError::TimeoutError(_) => CallFailure {
            action,
            code: "Timeout".to_owned(),
            message: "no answer within the call's timeout".to_owned(),
        },
        _ => CallFailure {
            action,
            code: "NoAnswer".to_owned(),
            message: DisplayErrorContext(&err).to_string(),
        },
    }
}
