//! Helpers of the end-to-end tests that drive a browser against the real gateway.
#![allow(dead_code)]

pub mod gateway;
pub mod sipp;
pub mod webdriver;
