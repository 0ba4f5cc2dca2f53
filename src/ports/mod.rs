//! Ports: the small traits through which the handler meets the outside world, and the adapters
//! that need no AWS (in memory, printing, tokio's clock). The AWS adapters are in [`crate::aws`].

pub mod clock;
pub mod hearing;
pub mod launch;
pub mod notify;
pub mod queue;
pub mod store;
