//! Route handlers, one file per area.
pub(super) mod auth;
pub(super) mod calls;
pub(super) mod cluster;
pub(super) mod deposits;
pub(super) mod evidence;
pub(super) mod facilities;
pub(super) mod family;
pub(super) mod family_links;
pub(super) mod family_prepaid;
pub(super) mod inmates;
pub(super) mod integrity;
pub(super) mod kiosk;
pub(super) mod leads;
pub(super) mod listen;
pub(super) mod messages;
pub(super) mod money;
pub(super) mod notes;
pub(super) mod rates;
pub(super) mod recordings;
pub(super) mod reports;
pub(super) mod tokens;
pub(super) mod users;
pub(super) mod visit_join;
pub(super) mod visit_watch;
pub(super) mod visit_ws;
pub(super) mod visiting;
pub(super) mod visits;

use super::error::ApiError;

/// A staff search's filters checked before they reach a query: each id given is a
/// setting-like token (named in the 400 when it is not), the free text a name-like one.
fn check_search_filters(
    ids: &[(&str, &Option<String>)],
    q: Option<&String>,
) -> Result<(), ApiError> {
    for &(name, value) in ids {
        if let Some(v) = value {
            crate::text::SETTING
                .check(name, v)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
    }
    if let Some(q) = q {
        crate::text::NAME
            .check("q", q)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(())
}
