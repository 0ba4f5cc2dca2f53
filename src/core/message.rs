//! Message: the one notification a person reads when ecs-rerun could not help.
//!
//! The subject says what happened to which task family on which cluster, in under 100 ASCII
//! characters. The body is indented JSON: readable in an email, parseable by a machine; or,
//! with [`NotificationFormat::Chat`], the custom notification of [`crate::core::chat`]. The
//! attributes let SNS subscriptions filter (outcome, reason class, cluster, task family).
//! Every text that came from outside passes through [`crate::core::redact::scrub`].

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::core::chat;
use crate::core::classify::ReasonClass;
use crate::core::decode::Origin;
use crate::core::outcome::{Conclusion, Outcome};
use crate::core::redact;

/// SNS caps subjects at fewer than 100 characters.
const MAX_SUBJECT: usize = 99;

/// A notification, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// One line, ASCII, under 100 characters.
    pub subject: String,
    /// Indented JSON.
    pub body: String,
    /// SNS message attributes (all strings).
    pub attributes: BTreeMap<String, String>,
}

/// SNS's default `MaximumMessageSize` (256 KiB): body and attributes together.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 262_144;
/// How many verdict groups a notification lists per answer before it counts the rest.
pub(super) const MAX_GROUPS: usize = 5;
/// Strings longer than this are cut when a notification would not fit otherwise.
pub(super) const MAX_TEXT: usize = 1024;

/// How a notification's body is written (`ECS_RERUN_NOTIFICATION_FORMAT`). Subject and
/// attributes are the same in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotificationFormat {
    /// Indented JSON, for email, SQS and scripts ([`compose`]).
    #[default]
    Text,
    /// The custom notification that Amazon Q Developer in chat applications (formerly AWS
    /// Chatbot) renders in Slack and Microsoft Teams ([`crate::core::chat::compose`]).
    Chat,
}

impl NotificationFormat {
    /// The format called `name` (`text` or `chat`, in any case), if there is one.
    pub fn named(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "text" => Some(Self::Text),
            "chat" => Some(Self::Chat),
            _ => None,
        }
    }

    /// Builds the notification in this format, within `max_size` bytes.
    pub fn compose(
        self,
        origin: &Origin,
        conclusion: &Conclusion,
        max_size: usize,
    ) -> Notification {
        match self {
            Self::Text => compose(origin, conclusion, max_size),
            Self::Chat => chat::compose(origin, conclusion, max_size),
        }
    }
}

/// What every format says: the subject line, the one-paragraph summary and the attributes,
/// with the values to mask.
pub(super) struct Gist<'a> {
    /// The finished subject: masked, one ASCII line under 100 characters.
    pub subject: String,
    /// The summary paragraph, not yet masked.
    pub summary: String,
    /// The SNS message attributes.
    pub attributes: BTreeMap<String, String>,
    /// The values of the request's environment overrides.
    pub secrets: Vec<&'a str>,
    /// The cluster's short name.
    pub cluster: &'a str,
    /// The task definition family (or the task definition as recorded).
    pub family: &'a str,
    /// The task definition as recorded.
    pub task_definition: &'a str,
}

impl Gist<'_> {
    /// The notification of this gist with `body`: its secrets masked, then cut by the format's
    /// `fit` to the bytes the topic takes besides the attributes.
    pub(super) fn seal(
        self,
        body: Value,
        max_size: usize,
        fit: fn(Value, usize) -> String,
    ) -> Notification {
        seal(
            self.subject,
            self.attributes,
            body,
            &self.secrets,
            max_size,
            fit,
        )
    }
}

/// The notification of `subject`, `attributes` and `body`: `secrets` (and secret-shaped text)
/// masked in `body`, then cut by the format's `fit` to the bytes the topic takes besides the
/// attributes.
pub(super) fn seal(
    subject: String,
    attributes: BTreeMap<String, String>,
    mut body: Value,
    secrets: &[&str],
    max_size: usize,
    fit: fn(Value, usize) -> String,
) -> Notification {
    scrub_json(&mut body, secrets);
    let budget = max_size.saturating_sub(attributes_size(&attributes));
    Notification {
        subject,
        body: fit(body, budget),
        attributes,
    }
}

/// The [`Gist`] of the notification of `conclusion`.
pub(super) fn gist<'a>(origin: &'a Origin, conclusion: &Conclusion) -> Gist<'a> {
    let request = &origin.request;
    let cluster = request.cluster_name();
    let task_definition = request.task_definition.as_deref().unwrap_or("(unknown)");
    let family = request.task_family().unwrap_or(task_definition);
    let requested = request.requested_count();
    let deciding = conclusion.deciding.as_str();
    let unclear = conclusion.may_have_started.as_deref();

    let headline = match (conclusion.outcome, unclear) {
        (Outcome::GaveUp | Outcome::GaveUpAfterFallback | Outcome::NotRetryable, Some(_)) => {
            "unclear, may have started"
        }
        (Outcome::Recovered, _) => "recovered",
        (Outcome::RecoveredOnFallback, _) => "recovered on fallback",
        (Outcome::AlreadyStarted, _) => "already running",
        (Outcome::GaveUp, None) => "gave up on",
        (Outcome::GaveUpAfterFallback, None) => "gave up after fallback on",
        (Outcome::NotRetryable, None) => "cannot retry",
        (Outcome::Stale, _) => "too old to rerun",
        (Outcome::WouldRetry, _) => "dry run, would retry",
        (Outcome::Left, _) => "left to the caller:",
        (
            Outcome::Ignored
            | Outcome::Waiting
            | Outcome::Guarded
            | Outcome::Unguarded
            | Outcome::SelfCheckOk
            | Outcome::SelfCheckFailed,
            _,
        ) => "ignored",
    };
    let subject = format!("[ecs-rerun] {headline} {family} on {cluster}: {deciding}");

    let missing_now = match unclear {
        Some(token) => format!(
            "{} may have started: check task ARNs / token {token} before rerunning",
            conclusion.still_missing
        ),
        None => format!("{} still missing", conclusion.still_missing),
    };
    let fallback = conclusion.fallback.as_ref().map_or_else(String::new, |f| {
        format!(
            " Capacity fallback (rule {}): after {}, attempt {} moved from {} to {} and started \
             {} task(s) there; {}.",
            f.rule,
            f.trigger,
            f.attempt,
            f.from,
            f.to,
            f.started,
            if f.started > 0 {
                f.cost.as_str()
            } else {
                "none started there"
            }
        )
    });
    let summary = format!(
        "ECS task family {family} on cluster {cluster}: {} of {requested} task(s) did not start \
         ({}). {}{fallback}",
        requested - i32::try_from(origin.started).unwrap_or(0),
        conclusion
            .original
            .first()
            .map_or("no reason recorded", |v| v.failure.as_str()),
        match conclusion.outcome {
            Outcome::Recovered | Outcome::RecoveredOnFallback => format!(
                "ecs-rerun started {} after {} call(s).",
                conclusion.started_by_retries,
                conclusion.attempts.len()
            ),
            Outcome::AlreadyStarted => format!(
                "They had already been started ({} found) by the caller's own retry or an \
                 earlier rerun; ecs-rerun started nothing.",
                conclusion.already_running
            ),
            Outcome::GaveUp | Outcome::GaveUpAfterFallback => format!(
                "ecs-rerun made {} call(s) and gave up; {missing_now}.",
                conclusion.attempts.len()
            ),
            Outcome::NotRetryable if unclear.is_some() => {
                format!("ecs-rerun stopped; {missing_now}.")
            }
            Outcome::NotRetryable => "ecs-rerun will not retry it.".to_owned(),
            Outcome::Stale if unclear.is_some() => format!(
                "ecs-rerun stopped: its next call came too late to send without risking a \
                 second run; {missing_now}."
            ),
            Outcome::Stale => "ecs-rerun did not rerun it: the record is too old.".to_owned(),
            Outcome::WouldRetry => "Dry run: ecs-rerun would retry it.".to_owned(),
            Outcome::Left => format!(
                "ecs-rerun left it to the caller ({}), which retries by itself.",
                origin.called_by.describe()
            ),
            Outcome::Ignored
            | Outcome::Waiting
            | Outcome::Guarded
            | Outcome::Unguarded
            | Outcome::SelfCheckOk
            | Outcome::SelfCheckFailed => {
                String::new()
            }
        }
    );

    let attributes = BTreeMap::from([
        ("outcome".to_owned(), conclusion.outcome.as_str().to_owned()),
        (
            "reason_class".to_owned(),
            conclusion.class.as_str().to_owned(),
        ),
        ("cluster".to_owned(), cluster.to_owned()),
        ("task_family".to_owned(), family.to_owned()),
        ("caller".to_owned(), origin.called_by.name().to_owned()),
    ]);
    let secrets: Vec<&str> = request.environment_values().collect();
    Gist {
        subject: subject_line(&redact::scrub(&subject, secrets.iter().copied())),
        summary,
        attributes,
        secrets,
        cluster,
        family,
        task_definition,
    }
}

/// The ECS console's list of the tasks of `cluster`.
pub(super) fn console_url(region: &str, cluster: &str) -> String {
    format!(
        "https://{region}.console.aws.amazon.com/ecs/v2/clusters/{cluster}/tasks?region={region}"
    )
}

/// Builds the notification for a concluded episode; body and attributes stay within
/// `max_size` bytes (the topic's `MaximumMessageSize`), and the body says what was cut to fit.
pub fn compose(origin: &Origin, conclusion: &Conclusion, max_size: usize) -> Notification {
    let request = &origin.request;
    let gist = gist(origin, conclusion);
    let region = &origin.region;
    let mut body = json!({
        "summary": gist.summary,
        "outcome": conclusion.outcome.as_str(),
        "reason_class": conclusion.class.as_str(),
        "why": conclusion.why,
        "what_to_do": what_to_do(conclusion),
        "deciding_failure": conclusion.deciding,
        "cluster": request.cluster_or_default(),
        "task_definition": gist.task_definition,
        "requested": request.requested_count(),
        "started_originally": origin.started,
        "started_by_retries": conclusion.started_by_retries,
        "already_running": conclusion.already_running,
        "still_missing": conclusion.still_missing,
        "may_have_started_token": conclusion.may_have_started,
        "fallback": conclusion.fallback,
        "task_arns": conclusion.task_arns,
        "original_failure": conclusion.original,
        "attempts": conclusion.attempts,
        "event_id": origin.event_id,
        "event_time": origin.event_time,
        "caller": origin.caller,
        "called_by": origin.called_by.name(),
        "account": origin.account,
        "region": region,
        "console_url": console_url(region, gist.cluster),
    });
    if let Some(task) = &origin.stopped_task
        && let Some(fields) = body.as_object_mut()
    {
        fields.insert("stopped_task".to_owned(), json!(task));
    }
    if !conclusion.schedule_ms.is_empty()
        && let Some(fields) = body.as_object_mut()
    {
        fields.insert(
            "backoff_schedule_ms".to_owned(),
            json!(conclusion.schedule_ms),
        );
    }
    gist.seal(body, max_size, fit)
}

/// What SNS counts of the attributes: each name, data type and value.
fn attributes_size(attributes: &BTreeMap<String, String>) -> usize {
    attributes
        .iter()
        .map(|(k, v)| k.len() + "String".len() + v.len())
        .sum()
}

fn render(body: &Value) -> String {
    serde_json::to_string_pretty(body).unwrap_or_default()
}

/// Cuts the body, least useful parts first, until it fits `budget` bytes, and lists the cuts
/// under `cut` so that a reader knows what is missing.
fn fit(mut body: Value, budget: usize) -> String {
    type Cut = fn(&mut Value) -> Option<String>;
    let cuts: [Cut; 4] = [
        drop_examples,
        limit_groups,
        keep_last_attempt,
        shorten_texts,
    ];
    let mut done: Vec<String> = Vec::new();
    for cut in cuts {
        if render(&body).len() <= budget {
            break;
        }
        if let Some(what) = cut(&mut body) {
            done.push(what);
            if let Some(fields) = body.as_object_mut() {
                fields.insert("cut".to_owned(), json!(done));
            }
        }
    }
    let text = render(&body);
    if text.len() <= budget {
        return text;
    }
    // Still too big (a topic set to a tiny limit): the summary alone, cut to size.
    let summary = body.get("summary").and_then(Value::as_str).unwrap_or("");
    let mut minimal = json!({
        "summary": summary,
        "outcome": body.get("outcome"),
        "event_id": body.get("event_id"),
        "cut": "everything but the summary, to fit the topic's MaximumMessageSize",
    });
    while render(&minimal).len() > budget {
        let Some(s) = minimal.get("summary").and_then(Value::as_str) else {
            break;
        };
        let keep = s.len() / 2;
        if keep == 0 {
            break;
        }
        let shorter = truncate(s, keep);
        minimal["summary"] = json!(shorter);
    }
    render(&minimal)
}

fn verdict_lists(body: &mut Value) -> Vec<&mut Vec<Value>> {
    let mut lists = Vec::new();
    let Some(fields) = body.as_object_mut() else {
        return lists;
    };
    let mut original = None;
    let mut attempts = None;
    for (key, value) in fields.iter_mut() {
        match key.as_str() {
            "original_failure" => original = value.as_array_mut(),
            "attempts" => attempts = value.as_array_mut(),
            _ => {}
        }
    }
    lists.extend(original);
    for attempt in attempts.into_iter().flatten() {
        lists.extend(attempt.get_mut("failures").and_then(Value::as_array_mut));
    }
    lists
}

fn drop_examples(body: &mut Value) -> Option<String> {
    let mut cut = false;
    for list in verdict_lists(body) {
        for verdict in list.iter_mut().filter_map(Value::as_object_mut) {
            cut |= verdict.remove("examples").is_some();
        }
    }
    cut.then(|| "example ARNs of each failure reason".to_owned())
}

fn limit_groups(body: &mut Value) -> Option<String> {
    let mut dropped = 0;
    for list in verdict_lists(body) {
        if list.len() > MAX_GROUPS {
            let more = list.len() - MAX_GROUPS;
            let entries: u64 = list[MAX_GROUPS..]
                .iter()
                .filter_map(|v| v.get("count").and_then(Value::as_u64))
                .sum();
            list.truncate(MAX_GROUPS);
            list.push(json!({"failure": format!("... {more} more reason(s), {entries} failure entries"), "count": entries}));
            dropped += more;
        }
    }
    (dropped > 0).then(|| {
        format!("{dropped} failure reason(s) beyond the first {MAX_GROUPS} of each answer")
    })
}

fn keep_last_attempt(body: &mut Value) -> Option<String> {
    let attempts = body.get_mut("attempts")?.as_array_mut()?;
    if attempts.len() <= 1 {
        return None;
    }
    let cut = attempts.len() - 1;
    attempts.drain(..cut);
    Some(format!(
        "the details of the first {cut} call(s); the last is kept"
    ))
}

fn shorten_texts(body: &mut Value) -> Option<String> {
    fn walk(value: &mut Value, cut: &mut bool) {
        match value {
            Value::String(s) if s.len() > MAX_TEXT => {
                *s = truncate(s, MAX_TEXT);
                *cut = true;
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, cut)),
            Value::Object(map) => map.values_mut().for_each(|v| walk(v, cut)),
            _ => {}
        }
    }
    let mut cut = false;
    walk(body, &mut cut);
    cut.then(|| format!("texts longer than {MAX_TEXT} bytes"))
}

/// The first `max` bytes of `s` (at a character boundary), marked as cut.
pub(super) fn truncate(s: &str, max: usize) -> String {
    format!("{}... [cut]", char_prefix(s, max))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(super) fn char_prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What the reader should do now.
pub(super) fn what_to_do(conclusion: &Conclusion) -> &'static str {
    match (conclusion.outcome, conclusion.class) {
        (Outcome::Recovered | Outcome::AlreadyStarted, _) => {
            "Nothing: the missing tasks run now. Sent because ECS_RERUN_NOTIFY_ON_RECOVERY is on."
        }
        (Outcome::RecoveredOnFallback, _) => {
            "Nothing to restart: the missing tasks run now, on the rule's fallback placement (see `fallback`). Sent whatever ECS_RERUN_NOTIFY_ON_RECOVERY says, because the move changed what the job costs or where it runs."
        }
        (Outcome::Stale, _) if conclusion.may_have_started.is_some() => {
            "Check whether the job ran before you start it by hand: ecs-rerun's next call would have resent a token ECS may have forgotten, and an earlier send of it (another delivery of this episode, or the caller's) may have started the job. List the cluster's tasks of this family, or look for the token named in may_have_started_token. A delivery of this episode that came on time may also still be rerunning it on its schedule: check again after that schedule's last wait."
        }
        (Outcome::Stale, _) => {
            "Check whether the job ran (it may have been started by hand, by a later schedule, or by another delivery of this record that came on time and may still be rerunning it on its schedule); if not, start it again yourself. Records older than ECS_RERUN_MAX_RECORD_AGE_S are never rerun."
        }
        (Outcome::GaveUp | Outcome::GaveUpAfterFallback | Outcome::NotRetryable, _)
            if conclusion.may_have_started.is_some() =>
        {
            "Before rerunning, check whether the task started: list the cluster's tasks of this family, or look for the token named in may_have_started_token. The last call got no clear answer, so ECS may have started it."
        }
        (Outcome::WouldRetry, _) => {
            "Nothing was launched (dry run). Set ECS_RERUN_DRY_RUN=false (template parameter DryRun) to let ecs-rerun retry."
        }
        (Outcome::GaveUpAfterFallback, _) => {
            "Capacity did not come back in time, on the original placement nor on the rule's fallback (see `fallback`). Check both placements' capacity (Fargate availability in the subnets' zones, capacity providers), then start the missing task(s) again."
        }
        (Outcome::GaveUp, _) => {
            "Capacity did not come back in time. Check the cluster's capacity (container instances and their agents, capacity providers, Fargate availability in the subnets' zones), then start the missing task(s) again."
        }
        (_, ReasonClass::NotReplayable) => {
            "Start the task again yourself with its full parameters: ecs-rerun could not reproduce the original request."
        }
        _ => {
            "Fix the cause named in `why` (task definition, placement constraints, subnets, IAM, quotas), then start the task again."
        }
    }
}

/// ASCII only, no control characters, under 100 characters.
pub(crate) fn subject_line(raw: &str) -> String {
    let mut subject: String = raw
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if subject.len() > MAX_SUBJECT {
        subject.truncate(MAX_SUBJECT - 3);
        subject.push_str("...");
    }
    subject
}

/// Masks `secrets` and secret-shaped text in every string of `value`.
fn scrub_json(value: &mut Value, secrets: &[&str]) {
    match value {
        Value::String(s) => *s = redact::scrub(s, secrets.iter().copied()),
        Value::Array(items) => items.iter_mut().for_each(|v| scrub_json(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| scrub_json(v, secrets)),
        _ => {}
    }
}
