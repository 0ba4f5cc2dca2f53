//! Episode: the retry sequence of one failed call, as a small state machine.
//!
//! [`Episode::next`] says what to do next (a [`Step`]), [`Episode::record`] and
//! [`Episode::record_lookup`] take what ECS answered, [`Episode::halt`] ends it early. Between
//! invocations it travels in a [`crate::core::hop::Hop`]: its fields and their serde names are
//! the delay queue's message format.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::fallback_state::{FallbackState, capacity_failures};
use super::{Policy, human};
use crate::core::classify::{self, Action, ReasonClass, Rules, Subject, Verdict};
use crate::core::fallback::FallbackError;
use crate::core::launch::{LaunchResult, Lookup};
use crate::core::lookup::{self, TaskQuery};
use crate::core::marks;
use crate::core::outcome::{AttemptLog, Conclusion, FallbackReport, Outcome, deciding};
use crate::core::request::RunTaskRequest;
use crate::core::schedule::Schedule;

/// How many task ARNs a conclusion names (the rest are counted).
const MAX_TASK_ARNS: usize = 10;

/// The next thing to do in an episode.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Wait, then look for tasks the caller's own retry may have started.
    Lookup {
        /// Backoff first.
        wait: Duration,
        /// What to list.
        query: TaskQuery,
    },
    /// Wait, then send this request.
    Launch {
        /// 1-based call number.
        call: u32,
        /// Backoff first.
        wait: Duration,
        /// The exact request to send.
        request: Box<RunTaskRequest>,
    },
    /// Stop here.
    Done(Conclusion),
}

/// Why the next call's token may be older than it looks.
#[derive(Debug, Clone, Copy)]
enum Exposure {
    /// The recorded call used it (or, for the look-up, started the job) at the record's time.
    Recorded,
    /// This copy of the episode runs behind the schedule every copy follows.
    Behind,
}

/// Where an episode stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Phase {
    /// An API-error record without a token: look for the caller's own retry first.
    Lookup,
    /// An API-error record with a token: resend the recorded call as it was.
    Original,
    /// ecs-rerun's own attempts, with its own tokens and tags.
    Own,
}

/// The retry sequence of one failed call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Episode {
    /// Identity of the original call: every token derives from it.
    pub(super) key: String,
    pub(super) call_tag: String,
    /// Calls the job had in earlier episodes (a rerun of a task that failed to start): they
    /// count toward `max_attempts`.
    #[serde(default)]
    pub(super) prior_calls: u32,
    /// What rules may know about the call, for classifying the answers. (Absent in a hop
    /// written before rules knew it: then no caller, cluster or family rule applies.)
    #[serde(default)]
    pub(super) subject: Subject,
    /// How long the last failure needs before the next call.
    pub(super) schedule: Schedule,
    /// `RunTask` calls this episode may make.
    pub(super) max_attempts: u32,
    /// The request of the own attempts, before count, token and tags.
    pub(super) template: RunTaskRequest,
    /// The recorded call, for the exact replay and the look-up (with CloudTrail's redaction
    /// marker still in place, so that the look-up knows not to compare the environment).
    pub(super) recorded: RunTaskRequest,
    pub(super) phase: Phase,
    pub(super) missing: i32,
    pub(super) recorded_at: SystemTime,
    /// The own attempt the next own call belongs to: moves on only after ECS answered.
    pub(super) own_attempt: u32,
    /// When the current token was first sent: tasks created before were not started by it.
    pub(super) token_first_sent: Option<SystemTime>,
    /// How often the current token was sent.
    pub(super) token_sends: u32,
    /// The current token got an unclear answer (5xx, timeout) at least once: ECS may have
    /// started tasks for it that no answer showed yet.
    pub(super) token_ambiguous: bool,
    /// A wait already spent before the look-up, not to be spent again before the next call.
    pub(super) prewaited: Option<Duration>,
    pub(super) original: Vec<Verdict>,
    pub(super) attempts: Vec<AttemptLog>,
    pub(super) started_by_retries: u32,
    pub(super) already_running: u32,
    /// Every task ARN counted so far (the record's own started tasks included), so that a task
    /// named twice (by a look-up and a `ConflictException`, say) is counted once.
    pub(super) known: Vec<String>,
    pub(super) task_arns: Vec<String>,
    pub(super) pending: Option<AttemptLog>,
    pub(super) done: Option<(Outcome, ReasonClass, String)>,
    /// The capacity fallback fixed for this episode, and where it stands. (Absent in a hop
    /// written before fallbacks existed: such an episode never falls back.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) fallback: Option<FallbackState>,
    /// An API-error record's fallback is not fixed yet: the first answer with failures fixes
    /// it (see `decide`).
    #[serde(default)]
    pub(super) fallback_open: bool,
    /// While the fallback is open: the recorded caller, with which the answer that fixes it is
    /// classified, as the call's final record is. (Absent in a hop written before it existed:
    /// that answer is classified without a caller, as it was then.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) open_caller: Option<String>,
}

impl Episode {
    /// What to do next at `now`, given the time left before the deadline (`None`: no deadline).
    pub fn next(&mut self, policy: &Policy, now: SystemTime, time_left: Option<Duration>) -> Step {
        if let Some((outcome, class, why)) = self.done.take() {
            return Step::Done(self.conclusion(outcome, class, why));
        }
        let call = self.calls().saturating_add(1);
        // The replay of the recorded call is that call's second chance, not one of the job's
        // attempts: every copy of one SDK call (from its throttled try, from its final answer)
        // then makes the same attempts, and none gives up while another still reruns.
        let replayed = self.attempts.first().is_some_and(|a| a.attempt.is_none());
        if call - u32::from(replayed) > self.max_attempts {
            let why = format!(
                "{} call(s) made, {}; last failure: {}",
                self.calls(),
                self.missing_phrase(),
                self.last_failure()
            );
            return Step::Done(self.conclusion(Outcome::GaveUp, ReasonClass::Transient, why));
        }
        let wait = match self.prewaited {
            Some(_) => Duration::ZERO,
            None => self.wait_before(policy),
        };
        if let Some(left) = time_left
            && wait + policy.deadline_reserve > left
        {
            let why = format!(
                "the Lambda deadline is too close for call {call} (needs {}s, {}s left); {}; \
                 last failure: {}",
                (wait + policy.deadline_reserve).as_secs(),
                left.as_secs(),
                self.missing_phrase(),
                self.last_failure()
            );
            return Step::Done(self.conclusion(Outcome::GaveUp, ReasonClass::Transient, why));
        }
        let (age, exposure) = self.token_age(now + wait, wait);
        if age > policy.max_record_age {
            let token = self.current_token();
            let used = match exposure {
                Exposure::Recorded => format!("the recorded call used it {} before", human(age)),
                Exposure::Behind => format!(
                    "this copy of the episode runs {} behind its schedule (resent calls, a late \
                     or redriven delivery), so another copy, or this one's own earlier call, may \
                     have sent its token that much earlier",
                    human(age)
                ),
            };
            let why = format!(
                "call {call} not sent: {used}, beyond ECS_RERUN_MAX_RECORD_AGE_S ({}); ECS may \
                 have forgotten the token (or stopped listing the tasks) that keeps the call from \
                 starting the job twice. An event or a delay-queue message delivered long after \
                 its time (a redrive from a dead-letter queue) does this. {} task(s) may have \
                 started: check the task ARNs / token {token}, then start the job by hand if it \
                 did not run",
                human(policy.max_record_age),
                self.missing
            );
            let mut stale = self.conclusion(Outcome::Stale, ReasonClass::Transient, why);
            stale.may_have_started = Some(token);
            return Step::Done(stale);
        }
        if self.phase == Phase::Lookup {
            if let Some(query) = TaskQuery::for_request(&self.template) {
                self.prewaited.get_or_insert(wait);
                return Step::Lookup { wait, query };
            }
            self.phase = Phase::Own;
        }
        let request = match self.phase {
            Phase::Original => {
                let mut request = self.recorded.clone();
                request.drop_redacted_environment();
                request
            }
            Phase::Lookup | Phase::Own => {
                self.switch_to_fallback();
                match self.own_request() {
                    Ok(request) => request,
                    Err(unfit) => {
                        return Step::Done(self.conclusion(
                            Outcome::NotRetryable,
                            ReasonClass::Permanent,
                            format!("{unfit}; {}", self.missing_phrase()),
                        ));
                    }
                }
            }
        };
        let waited = self.prewaited.take().unwrap_or(wait);
        self.pending = Some(AttemptLog {
            call,
            attempt: (self.phase == Phase::Own).then_some(self.own_attempt),
            count: request.requested_count(),
            token: request.client_token.clone().unwrap_or_default(),
            waited_ms: millis(waited),
            started: 0,
            already_running: 0,
            failures: Vec::new(),
            ambiguous: false,
            on_fallback: self.on_fallback(),
        });
        Step::Launch {
            call,
            wait,
            request: Box::new(request),
        }
    }

    /// Ends the episode before its next call: the place it runs in cannot be reached (the
    /// member role could not be assumed), so nothing more is launched. Its notification says
    /// `why` and what the calls so far did: not retryable before any call, given up after.
    pub fn halt(&mut self, why: String) {
        let outcome = if self.attempts.is_empty() {
            Outcome::NotRetryable
        } else {
            Outcome::GaveUp
        };
        self.done = Some((outcome, ReasonClass::NotReplayable, why));
    }

    /// Takes what the look-up asked for by [`Step::Lookup`] found.
    pub fn record_lookup(&mut self, lookup: Lookup) {
        self.phase = Phase::Own;
        match lookup {
            Lookup::Skipped => {}
            Lookup::Failed(error) => {
                self.done = Some((
                    Outcome::NotRetryable,
                    ReasonClass::Unknown,
                    format!(
                        "could not check whether the caller's own retry already started the job \
                         ({error}); not rerun, so as not to start it twice. Check the cluster, \
                         then start it by hand if it is missing"
                    ),
                ));
            }
            Lookup::Found(tasks) => {
                let same: Vec<String> = tasks
                    .into_iter()
                    .filter(|t| {
                        lookup::same_job(&self.recorded, self.recorded_at, &self.call_tag, t)
                    })
                    .map(|t| t.arn)
                    .collect();
                self.count_existing(same.into_iter());
                if self.missing <= 0 {
                    self.done = Some((
                        Outcome::AlreadyStarted,
                        ReasonClass::Transient,
                        format!(
                            "the job was already started after the failed call (by the caller's \
                             own retry or an earlier rerun): {} matching task(s) found, nothing \
                             launched",
                            self.already_running
                        ),
                    ));
                }
            }
        }
    }

    /// Takes the answer to the launch that [`Step::Launch`] asked for; `sent_at` is when it
    /// was sent.
    pub fn record(&mut self, result: LaunchResult, sent_at: SystemTime, rules: &Rules) {
        let Some(mut log) = self.pending.take() else {
            return;
        };
        let first_sent = *self.token_first_sent.get_or_insert(sent_at);
        self.token_sends += 1;
        match result {
            LaunchResult::DryRun => {
                let fallback = self.fallback.as_ref().map_or_else(String::new, |state| {
                    let to = state.fallback.placement.label();
                    match state.switched_at {
                        Some(attempt) => format!(
                            "; would fall back to {to} at once (attempt {attempt}, rule {})",
                            state.fallback.rule
                        ),
                        None => format!(
                            "; would fall back to {to} from attempt {} if capacity stays \
                             unavailable (rule {})",
                            state.fallback.from_attempt, state.fallback.rule
                        ),
                    }
                });
                self.done = Some((
                    Outcome::WouldRetry,
                    ReasonClass::Transient,
                    format!(
                        "dry run: would re-run {} task(s), first after {}s{fallback}",
                        log.count,
                        log.waited_ms / 1000
                    ),
                ));
            }
            LaunchResult::Placed { tasks, failures } => {
                // A task without createdAt comes from a stored answer about a stopped task: ours
                // only if this episode had sent the token before.
                let resent = self.token_sends > 1;
                let (before, ours): (Vec<_>, Vec<_>) = tasks
                    .into_iter()
                    .filter(|t| !self.known.contains(&t.arn))
                    .partition(|t| t.created_at.map_or(!resent, |c| c < first_sent));
                log.started = len_u32(ours.len());
                self.started_by_retries += log.started;
                if let Some(state) = self.fallback.as_mut().filter(|_| log.on_fallback) {
                    state.started += log.started;
                }
                self.missing -= i32::try_from(ours.len()).unwrap_or(i32::MAX);
                for task in ours {
                    self.remember(task.arn);
                }
                log.already_running = self.count_existing(before.into_iter().map(|t| t.arn));
                self.advance_token();
                if self.missing <= 0 {
                    self.done = Some(self.all_running(&log));
                } else {
                    // The answer that fixes an open fallback is ECS's stored answer to the
                    // recorded call (or the first to this job): the recorded caller's, whose
                    // onCaller rules then apply to it as to the call's final record.
                    let settles = std::mem::take(&mut self.fallback_open);
                    log.failures = match self.open_caller.take().filter(|_| settles) {
                        Some(caller) => {
                            let subject = Subject {
                                caller: Some(caller),
                                ..self.subject.clone()
                            };
                            rules.placements(&failures, &subject)
                        }
                        None => rules.placements(&failures, &self.subject),
                    };
                    if settles {
                        self.fallback = classify::overall(&log.failures)
                            .and_then(|lead| lead.fallback.as_deref())
                            .map(|fallback| FallbackState::new(fallback, &self.template, None));
                    }
                    if let Some(state) = self.fallback.as_mut() {
                        state.capacity_answer = capacity_failures(&state.fallback, &failures);
                    }
                    self.stop_if_permanent(&log);
                }
            }
            LaunchResult::Rejected { code, existing, .. } if code == "ConflictException" => {
                if existing.is_empty() {
                    self.done = Some((
                        Outcome::NotRetryable,
                        ReasonClass::Unknown,
                        format!(
                            "ECS refused token {} (ConflictException) and named no task: the \
                             token was spent on an answer without tasks, so whether the job \
                             runs cannot be told from it; not rerun. Check the cluster, then \
                             start it by hand if it is missing",
                            log.token
                        ),
                    ));
                } else {
                    log.already_running = self.count_existing(existing.into_iter());
                    self.advance_token();
                    // Not a capacity answer: whatever was missing, the token says nothing of it.
                    if let Some(state) = self.fallback.as_mut() {
                        state.capacity_answer = None;
                    }
                    if self.missing <= 0 {
                        self.done = Some(self.all_running(&log));
                    }
                }
                log.failures = vec![rules.api_error(&code, "token already used", &self.subject)];
            }
            LaunchResult::Rejected { code, message, .. }
                if log.on_fallback && code == "InvalidParameterException" =>
            {
                // The fallback placement itself was refused (a provider not attached to the
                // cluster, a subnet of another VPC): a configuration error, never retried.
                let rule = self
                    .fallback
                    .as_ref()
                    .map_or_else(String::new, |s| s.fallback.rule.clone());
                self.done = Some((
                    Outcome::NotRetryable,
                    ReasonClass::Permanent,
                    format!(
                        "configuration error in rule {rule}: ECS refused the fallback placement \
                         ({code}: {message}); not retried. Fix the rule's fallback (attach the \
                         capacity provider to the cluster, or name subnets of the task's VPC); {}",
                        self.missing_phrase()
                    ),
                ));
                log.failures = vec![rules.api_error(&code, &message, &self.subject)];
            }
            LaunchResult::Rejected {
                code,
                message,
                ambiguous,
                ..
            } => {
                // No answer with tasks or failures: the token stays, and so does the request.
                log.ambiguous = ambiguous;
                self.token_ambiguous |= ambiguous;
                log.failures = vec![rules.api_error(&code, &message, &self.subject)];
                self.stop_if_permanent(&log);
            }
        }
        self.attempts.push(log);
    }

    /// `RunTask` calls the job has had so far, earlier episodes' included.
    pub fn calls(&self) -> u32 {
        self.prior_calls
            .saturating_add(len_u32(self.attempts.len()))
    }

    /// The waits before each call if every call failed alike: what a dry run shows.
    pub fn schedule(&self, policy: &Policy) -> Vec<Duration> {
        (self.prior_calls + 1..=self.max_attempts)
            .map(|step| self.wait_at(policy, step))
            .collect()
    }

    /// The wait that [`Episode::next`] asked for will be spent elsewhere (in a delay queue):
    /// the next [`Episode::next`] asks for the same step without it.
    pub fn defer(&mut self, wait: Duration) {
        self.pending = None;
        self.prewaited.get_or_insert(wait);
    }

    /// How long before `at` the next call's token (or, in the look-up, the job) may first have
    /// been used, and by whom. ECS keeps a token at least an hour after its first use, and
    /// lists a stopped task about as long (aws-facts §4): a call is safe only while this is
    /// within the record-age limit.
    fn token_age(&self, at: SystemTime, wait: Duration) -> (Duration, Exposure) {
        let since_record = at.duration_since(self.recorded_at).unwrap_or_default();
        if matches!(self.phase, Phase::Original | Phase::Lookup) {
            return (since_record, Exposure::Recorded);
        }
        // Every copy of this episode (another delivery of the event, another record of the same
        // call, a redriven delay-queue message) sends the same own tokens after the same waits,
        // counted from the record (see `wait_before`): one that runs behind that schedule may
        // send a token that an on-time copy used that much earlier. Only the waits before the
        // first send of each own token are the schedule; a copy's replay of the recorded call
        // and its resends after errors are its own, and count as running behind (which also
        // covers its own unclear sends: the first send of a token is never before schedule).
        let mut scheduled: u64 = 0;
        let mut previous: Option<&str> = None;
        for attempt in &self.attempts {
            if attempt.attempt.is_some() && previous != Some(attempt.token.as_str()) {
                scheduled += attempt.waited_ms;
            }
            previous = Some(attempt.token.as_str());
        }
        let mut scheduled = Duration::from_millis(scheduled);
        if self.token_sends == 0 {
            scheduled += self.prewaited.unwrap_or(wait);
        }
        (since_record.saturating_sub(scheduled), Exposure::Behind)
    }

    /// The wait before the next call. A new token waits the step of its own attempt, not of the
    /// call: copies of this episode that got the same answers (ECS answers a token alike) then
    /// send each token after the same waits, however many throttled or unclear calls one of
    /// them had to resend. A resend waits one step more per send of its token.
    fn wait_before(&self, policy: &Policy) -> Duration {
        let step = self.own_attempt + self.token_sends;
        self.wait_at(policy, step)
    }

    fn wait_at(&self, policy: &Policy, step: u32) -> Duration {
        policy
            .delay_override
            .unwrap_or(self.schedule)
            .wait(step, &self.key)
    }

    fn all_running(&self, log: &AttemptLog) -> (Outcome, ReasonClass, String) {
        if self.started_by_retries == 0 {
            (
                Outcome::AlreadyStarted,
                ReasonClass::Transient,
                format!(
                    "call {} found the job already started ({} task(s), by the caller's own \
                     retry or an earlier delivery); nothing new was started",
                    log.call, self.already_running
                ),
            )
        } else {
            let before = if self.already_running > 0 {
                format!("; {} had been started before", self.already_running)
            } else {
                String::new()
            };
            (
                Outcome::Recovered,
                ReasonClass::Transient,
                format!(
                    "call {} started the missing task(s): {} started by ecs-rerun{before}",
                    log.call, self.started_by_retries
                ),
            )
        }
    }

    /// Counts the tasks someone else started that were not counted yet; returns how many.
    fn count_existing(&mut self, arns: impl Iterator<Item = String>) -> u32 {
        let mut new = 0;
        for arn in arns {
            if !self.known.contains(&arn) {
                self.remember(arn);
                new += 1;
            }
        }
        self.already_running += new;
        self.missing -= i32::try_from(new).unwrap_or(i32::MAX);
        new
    }

    fn remember(&mut self, arn: String) {
        if self.task_arns.len() < MAX_TASK_ARNS {
            self.task_arns.push(arn.clone());
        }
        self.known.push(arn);
    }

    fn advance_token(&mut self) {
        match self.phase {
            Phase::Own => self.own_attempt += 1,
            Phase::Original | Phase::Lookup => self.phase = Phase::Own,
        }
        self.token_first_sent = None;
        self.token_sends = 0;
        self.token_ambiguous = false;
    }

    /// The token the next call sends.
    fn current_token(&self) -> String {
        match self.phase {
            Phase::Original => self.recorded.client_token.clone().unwrap_or_default(),
            Phase::Lookup | Phase::Own => self.own_token(),
        }
    }

    fn stop_if_permanent(&mut self, log: &AttemptLog) {
        let Some(lead) = classify::overall(&log.failures) else {
            return;
        };
        if lead.action == Action::Retry {
            self.schedule = lead.schedule;
        } else {
            self.done = Some((
                Outcome::NotRetryable,
                lead.class,
                format!(
                    "call {} failed with a {} failure: {} ({}); {}",
                    log.call,
                    lead.class.as_str(),
                    lead.failure,
                    lead.rule,
                    self.missing_phrase()
                ),
            ));
        }
    }

    /// The request of the current own attempt: the original, for the missing tasks only, with
    /// ecs-rerun's tags and the attempt's token.
    /// On the fallback placement once the episode switched; refused when the request cannot
    /// run there as it stands. The token stays the attempt's: every copy of the episode sends
    /// attempt n to the same placement, as they decide from the same answers.
    fn own_request(&self) -> Result<RunTaskRequest, FallbackError> {
        let (mut request, fallback_tag) =
            match self.fallback.as_ref().filter(|_| self.on_fallback()) {
                Some(state) => (
                    state.fallback.apply(&self.template)?,
                    Some(state.fallback.tag_value(&state.from)),
                ),
                None => (self.template.clone(), None),
            };
        request.count = Some(self.missing);
        request.client_token = Some(self.own_token());
        request.reference_id = None;
        request.tags = marks::retry_tags(
            self.template.tags.as_deref(),
            &self.call_tag,
            self.own_attempt,
            fallback_tag,
        );
        Ok(request)
    }

    /// Whether the episode runs on its fallback placement.
    fn on_fallback(&self) -> bool {
        self.fallback
            .as_ref()
            .is_some_and(|s| s.switched_at.is_some())
    }

    /// Moves the attempt about to be sent to the fallback placement when its time has come
    /// (`fallbackFromAttempt`) and the last definitive answer said only "no capacity". At most
    /// once: the switch is for good.
    fn switch_to_fallback(&mut self) {
        let attempt = self.own_attempt;
        if let Some(state) = self.fallback.as_mut()
            && state.switched_at.is_none()
            && attempt >= state.fallback.from_attempt
            && let Some(trigger) = &state.capacity_answer
        {
            state.trigger = trigger.clone();
            state.switched_at = Some(attempt);
        }
    }

    /// The token of the current own attempt. Numbered within this episode's key, not by the
    /// job's earlier calls: a stopped task's store entry may say 0 or 1 earlier calls depending
    /// on which record came last, and its rerun must send the same token either way.
    fn own_token(&self) -> String {
        marks::own_token(&self.key, self.own_attempt.saturating_sub(self.prior_calls))
    }

    fn ambiguous_token(&self) -> Option<String> {
        self.token_ambiguous.then(|| self.current_token())
    }

    fn missing_phrase(&self) -> String {
        match self.ambiguous_token() {
            Some(token) => format!(
                "{} task(s) may have started: the last call got no clear answer, so check the \
                 task ARNs / token {token} before rerunning",
                self.missing
            ),
            None => format!("{} task(s) still missing", self.missing),
        }
    }

    fn last_verdicts(&self) -> &[Verdict] {
        self.attempts
            .last()
            .map(|a| a.failures.as_slice())
            .filter(|f| !f.is_empty())
            .unwrap_or(&self.original)
    }

    fn last_failure(&self) -> String {
        self.last_verdicts()
            .iter()
            .map(|v| v.failure.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn conclusion(&self, outcome: Outcome, class: ReasonClass, why: String) -> Conclusion {
        let (deciding, rule) = deciding(self.last_verdicts());
        let fallback = self.fallback.as_ref().and_then(|state| {
            Some(Box::new(FallbackReport {
                rule: state.fallback.rule.clone(),
                trigger: state.trigger.clone(),
                attempt: state.switched_at?,
                from: state.from.label(),
                to: state.fallback.placement.label(),
                started: state.started,
                cost: state.fallback.cost_sentence(&state.from),
            }))
        });
        let outcome = match (outcome, &fallback) {
            (Outcome::Recovered, Some(f)) if f.started > 0 => Outcome::RecoveredOnFallback,
            (Outcome::GaveUp, Some(_)) => Outcome::GaveUpAfterFallback,
            (outcome, _) => outcome,
        };
        Conclusion {
            fallback,
            outcome,
            class,
            why,
            deciding,
            rule,
            original: self.original.clone(),
            attempts: self.attempts.clone(),
            started_by_retries: self.started_by_retries,
            already_running: self.already_running,
            still_missing: self.missing.max(0),
            task_arns: self.task_arns.clone(),
            may_have_started: match outcome {
                Outcome::GaveUp | Outcome::GaveUpAfterFallback | Outcome::NotRetryable => {
                    self.ambiguous_token()
                }
                _ => None,
            },
            schedule_ms: Vec::new(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
