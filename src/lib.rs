//! sallyport: a SIP/WebRTC gateway for correctional facilities.
pub mod clock;
pub mod config;
pub mod db;
pub mod money;
