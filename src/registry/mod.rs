pub mod client;
pub mod events;
pub mod manifest;
pub mod sync;
pub mod token;
pub mod token_key;
