//! Route handlers, one file per area.
pub mod auth;
pub mod calls;
pub mod cluster;
pub mod facilities;
pub mod inmates;
pub mod integrity;
pub mod listen;
pub mod money;
pub mod rates;
pub mod recordings;
pub mod tokens;
pub mod users;
