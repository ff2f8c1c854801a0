//! Call policy that needs no I/O: calling IDs and PIN hashing, the PIN-guessing lockout,
//! calling hours.
//!
//! Owns: the rules. Called by: the record store (booking, setting a PIN) and the call flow
//! (checking an ID + PIN and counting failures, checking the hour). Pure functions; `now`
//! is always passed in.

pub mod hours;
pub mod lockout;
pub mod net;
pub mod pin;
