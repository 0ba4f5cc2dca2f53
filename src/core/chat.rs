//! Chat: the notification as the custom notification that Amazon Q Developer in chat
//! applications (formerly AWS Chatbot) renders in Slack and Microsoft Teams (aws-facts §15.3).
//!
//! `version` "1.0" and `source` "custom" are what the service requires; `content` is what a
//! person reads (title, a markdown description, next steps with console links, keywords) and
//! `metadata` what the chat app groups by: every notification of one episode (one failed call,
//! or one task that failed to start) carries the same `threadId`, so its updates share a thread.
//! The self-check's notice ([`crate::core::self_check::Verdict::notification`]) is one too, its
//! thread one per Region, cut to fit the same way.
//! Subject and attributes are those of the text format ([`crate::core::message`]); every text
//! from outside is masked as there, before anything is cut.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::core::classify::Verdict;
use crate::core::decode::Origin;
use crate::core::marks;
use crate::core::message::{
    MAX_GROUPS, MAX_TEXT, Notification, char_prefix, console_url, gist, truncate, what_to_do,
};
use crate::core::outcome::{AttemptLog, Conclusion, Outcome};
use crate::core::redact;

/// What a description cut to fit ends with.
const CUT: &str = "... [cut to fit the topic's MaximumMessageSize]";

/// Builds the chat notification of a concluded episode; body and attributes stay within
/// `max_size` bytes (the topic's `MaximumMessageSize`): the description is cut first.
pub fn compose(origin: &Origin, conclusion: &Conclusion, max_size: usize) -> Notification {
    let gist = gist(origin, conclusion);
    // Masked before it is cut: a secret cut in half would no longer be recognised.
    let text = |raw: &str| clip(&redact::scrub(raw, gist.secrets.iter().copied()));
    let region = &origin.region;
    let outcome = conclusion.outcome.as_str();
    let class = conclusion.class.as_str();
    let deciding = text(&conclusion.deciding);

    let mut lines = vec![text(&gist.summary), String::new()];
    lines.push(format!("*Why:* {}", text(&conclusion.why)));
    lines.push(format!(
        "*Deciding failure:* {} ({class}; rule {})",
        code(&deciding),
        code(&text(&conclusion.rule))
    ));
    if let Some(token) = &conclusion.may_have_started {
        lines.push(format!(
            "*May have started:* the call with clientToken {} got no clear answer",
            code(token)
        ));
    }
    if conclusion.attempts.is_empty() {
        lines.push("*Calls:* none".to_owned());
    } else {
        lines.push("*Calls:*".to_owned());
        lines.extend(conclusion.attempts.iter().map(|a| attempt_line(a, &text)));
    }
    if !conclusion.task_arns.is_empty() {
        lines.push(format!("*Tasks:* {}", conclusion.task_arns.join(", ")));
    }
    if let Some(task) = &origin.stopped_task {
        lines.push(format!("*Stopped task:* {task}"));
    }
    lines.push(format!(
        "*Called by:* {}",
        text(&origin.called_by.describe())
    ));
    lines.push(format!(
        "*Record:* {} at {}, account {}, {region}",
        code(&origin.event_id),
        origin.event_time.as_deref().unwrap_or("(no time)"),
        origin.account
    ));

    let mut next_steps = vec![
        what_to_do(conclusion).to_owned(),
        format!(
            "ECS console, tasks of cluster {}: {}",
            gist.cluster,
            console_url(region, gist.cluster)
        ),
    ];
    if let Some(url) = cloudtrail_url(origin) {
        next_steps.push(format!("CloudTrail, the failed call's record: {url}"));
    }

    let mut related = vec![
        origin.request.cluster_or_default().to_owned(),
        gist.task_definition.to_owned(),
    ];
    related.extend(origin.stopped_task.iter().cloned());
    related.extend(conclusion.task_arns.iter().cloned());

    let mut context = json!({
        "outcome": outcome,
        "reasonClass": class,
        "cluster": gist.cluster,
        "taskFamily": gist.family,
        "decidingFailure": deciding,
        "calls": conclusion.attempts.len().to_string(),
        "tasksStarted": conclusion.started_by_retries.to_string(),
        "stillMissing": conclusion.still_missing.to_string(),
        "caller": origin.called_by.name(),
        "eventId": origin.event_id,
        "account": origin.account,
        "region": region,
    });
    if let Some(fields) = context.as_object_mut() {
        if let Some(token) = &conclusion.may_have_started {
            fields.insert("mayHaveStartedToken".to_owned(), json!(token));
        }
        if let Some(task) = &origin.stopped_task {
            fields.insert("stoppedTask".to_owned(), json!(task));
        }
    }

    let body = json!({
        "version": "1.0",
        "source": "custom",
        "id": origin.event_id,
        "content": {
            "textType": "client-markdown",
            "title": format!("{} {}", emoji(conclusion), gist.subject),
            "description": lines.join("\n"),
            "nextSteps": next_steps,
            "keywords": [outcome, class, gist.cluster, gist.family],
        },
        "metadata": {
            "threadId": thread_id(origin),
            "summary": gist.subject,
            "eventType": format!("ecs-rerun-{}", outcome.replace('_', "-")),
            "relatedResources": related,
            "additionalContext": context,
        },
    });
    gist.seal(body, max_size, fit)
}

/// The thread of the episode of `origin`: the same for every notification of one failed call
/// (every record and delivery of it) or of one task that failed to start, and different for
/// another. A digest, so that neither the call's token nor its caller shows in it.
pub fn thread_id(origin: &Origin) -> String {
    let digest = Sha256::digest(origin.episode_key().as_bytes());
    format!("ecs-rerun-{}", marks::hex(&digest, 16))
}

/// The CloudTrail console's page of the record, in its Region; none for a task that failed to
/// start (its event is ECS's, not CloudTrail's) or an event ID that does not look like one.
fn cloudtrail_url(origin: &Origin) -> Option<String> {
    let id = &origin.event_id;
    let plain = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    (origin.stopped_task.is_none() && plain).then(|| {
        let region = &origin.region;
        format!(
            "https://{region}.console.aws.amazon.com/cloudtrail/home?region={region}#/events/{id}"
        )
    })
}

/// One call of the episode, on one line of the description.
fn attempt_line(attempt: &AttemptLog, text: &impl Fn(&str) -> String) -> String {
    let which = attempt.attempt.map_or_else(
        || "replay of the recorded call".to_owned(),
        |n| format!("attempt {n}"),
    );
    let mut line = format!(
        "{}. {which}, after {} s: {} of {} started",
        attempt.call,
        attempt.waited_ms / 1000,
        attempt.started,
        attempt.count
    );
    if attempt.already_running > 0 {
        line.push_str(&format!(", {} already running", attempt.already_running));
    }
    if attempt.ambiguous {
        line.push_str(", no clear answer");
    }
    if !attempt.failures.is_empty() {
        line.push_str("; ");
        line.push_str(&failures(&attempt.failures, text));
    }
    line
}

/// The failure reasons of one answer, each with how many entries had it, the first
/// [`MAX_GROUPS`] by name.
fn failures(verdicts: &[Verdict], text: &impl Fn(&str) -> String) -> String {
    let mut named: Vec<String> = verdicts
        .iter()
        .take(MAX_GROUPS)
        .map(|v| format!("{} x{}", code(&text(&v.failure)), v.count))
        .collect();
    if verdicts.len() > MAX_GROUPS {
        named.push(format!("{} more reason(s)", verdicts.len() - MAX_GROUPS));
    }
    named.join(", ")
}

fn emoji(conclusion: &Conclusion) -> &'static str {
    match conclusion.outcome {
        _ if conclusion.may_have_started.is_some() => ":warning:",
        Outcome::Recovered | Outcome::RecoveredOnFallback | Outcome::AlreadyStarted => {
            ":white_check_mark:"
        }
        Outcome::WouldRetry => ":information_source:",
        Outcome::Stale => ":hourglass:",
        _ => ":x:",
    }
}

/// `text` as inline code; a backquote in it would end the span early.
fn code(text: &str) -> String {
    format!("`{}`", text.replace('`', "'"))
}

/// A text from outside, at most [`MAX_TEXT`] bytes: a chat message is read, not parsed.
fn clip(text: &str) -> String {
    if text.len() > MAX_TEXT {
        truncate(text, MAX_TEXT)
    } else {
        text.to_owned()
    }
}

fn render(body: &Value) -> String {
    serde_json::to_string(body).unwrap_or_default()
}

/// Cuts the body until it fits `budget` bytes: the description first; on a topic too small
/// even for that, everything but the title, a shorter description and the thread.
pub(super) fn fit(body: Value, budget: usize) -> String {
    let mut cut = body.clone();
    shorten(&mut cut, "/content/description", budget);
    let text = render(&cut);
    if text.len() <= budget {
        return text;
    }
    let field = |pointer: &str| body.pointer(pointer).cloned().unwrap_or(Value::Null);
    let mut minimal = json!({
        "version": "1.0",
        "source": "custom",
        "content": {
            "textType": "client-markdown",
            "title": field("/content/title"),
            "description": field("/content/description"),
        },
        "metadata": { "threadId": field("/metadata/threadId") },
    });
    for pointer in ["/content/description", "/content/title"] {
        shorten(&mut minimal, pointer, budget);
    }
    render(&minimal)
}

/// Cuts the string at `pointer` by as much as `body` is over `budget`, and marks the cut.
/// Each byte cut from the string takes at least one byte from the rendered JSON (escapes only
/// make it longer), so one cut is enough when the string is long enough.
fn shorten(body: &mut Value, pointer: &str, budget: usize) {
    let excess = render(body).len().saturating_sub(budget);
    if excess == 0 {
        return;
    }
    if let Some(Value::String(s)) = body.pointer_mut(pointer) {
        let keep = s.len().saturating_sub(excess + CUT.len());
        *s = if keep == 0 {
            String::new()
        } else {
            format!("{}{CUT}", char_prefix(s, keep))
        };
    }
}
