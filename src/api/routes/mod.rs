//! Route handlers, one file per area.
pub(super) mod auth;
pub(super) mod calls;
pub(super) mod cluster;
pub(super) mod facilities;
pub(super) mod inmates;
pub(super) mod integrity;
pub(super) mod listen;
pub(super) mod money;
pub(super) mod rates;
pub(super) mod recordings;
pub(super) mod tokens;
pub(super) mod users;
pub(super) mod visit_join;
pub(super) mod visit_watch;
pub(super) mod visit_ws;
pub(super) mod visiting;
pub(super) mod visits;
