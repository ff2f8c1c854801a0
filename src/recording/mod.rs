//! Call recordings: capture to files, the integrity check of the recordings hash chain, and retention.
pub mod chain;
pub mod retention;
