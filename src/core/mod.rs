//! The pure core: records in, decisions out, no I/O.
//!
//! In the order the data flows: [`event`] and [`task_change`] are the wire formats; [`decode`]
//! validates a CloudTrail record into a [`decode::FailedRunTask`] (naming the [`caller`]), and
//! [`guard`] turns a task that failed to start, with the request stored when it was launched,
//! into the same type; [`classify`] says retry, notify or leave; [`plan`] decides and runs the
//! retry episode step by step ([`schedule`] paces it, [`marks`] tags and tokens its calls,
//! [`lookup`] finds a caller's own retry, [`launch`] is what a launcher answers, [`hop`] carries
//! it through the delay queue) to an [`outcome`]; [`message`] is what a person reads ([`chat`]
//! when it is read in Slack or Teams), with [`redact`] keeping secrets out. [`org`] says where a
//! record of another account of the organization is rerun. [`request`] is the shared
//! vocabulary: the `RunTask` parameters as CloudTrail records them. Apart from that flow,
//! [`self_check`] judges whether failed calls can reach ecs-rerun at all.

pub mod caller;
pub mod chat;
pub mod classify;
pub mod decode;
pub mod event;
pub mod fallback;
pub mod guard;
pub mod hop;
pub mod launch;
pub mod lookup;
pub mod marks;
pub mod message;
pub mod org;
pub mod outcome;
pub mod plan;
pub mod redact;
pub mod request;
pub mod schedule;
pub mod self_check;
pub mod task_change;
