pub mod api;
pub mod auth;
pub mod console;
pub mod error;
pub mod health;
pub mod hooks;
pub mod metrics;
pub mod router;
