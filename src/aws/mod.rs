//! The AWS adapters of the [`crate::ports`], one per service (the self-check's [`hearing`] asks
//! two), and the configuration they share.

pub mod dynamodb;
pub mod ecs;
pub mod hearing;
pub mod identity;
pub mod places;
pub mod setup;
pub mod sns;
pub mod sqs;
