//! Route handlers, one file per area.
pub mod calls;
pub mod facilities;
pub mod inmates;
pub mod listen;
pub mod money;
pub mod rates;
pub mod tokens;
