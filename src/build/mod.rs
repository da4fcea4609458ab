pub mod context;
pub mod docker;
pub mod dockerignore;
pub mod git;
pub mod log;
pub mod path_filter;
pub mod queue;
pub mod worker;
