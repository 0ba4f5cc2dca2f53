//! Clock: the port for time, so that tests run a three-minute retry schedule in microseconds.

use std::future::Future;
use std::time::{Duration, SystemTime};

/// Reads the time and sleeps.
pub trait Clock {
    /// Wall-clock time now (compared with the Lambda deadline).
    fn now(&self) -> SystemTime;
    /// Waits.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// The real clock, on tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}
