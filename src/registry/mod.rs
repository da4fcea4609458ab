pub mod client;
pub mod events;
pub mod manifest;
pub mod sync;
