//! New-image notifications: subscriptions' outbox, signed deliveries, retries, access records.

pub mod deliver;
pub mod guard;
pub mod outbox;
pub mod payload;
pub mod signing;
