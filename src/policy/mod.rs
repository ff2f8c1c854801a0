//! Call policy that needs no I/O: PIN hashing and checks, calling hours.
//!
//! Owns: the rules. Called by: the record store (setting a PIN) and the call flow (checking
//! one, checking the hour). Pure functions; `now` is always passed in.

pub mod hours;
pub mod net;
pub mod pin;
