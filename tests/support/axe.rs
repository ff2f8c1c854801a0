//! Accessibility checks with axe-core (the npm package, run inside the page under test):
//! `.ci/run` installs a pinned version under `.ci/axe/`, and `SALLYPORT_AXE_JS` may point
//! at another copy of `axe.min.js`. Without it the check prints why and is skipped, unless
//! `SALLYPORT_REQUIRE_EXTERNAL=1`.

use super::webdriver::Browser;
use serde_json::{json, Value};
use std::path::PathBuf;

/// Where `axe.min.js` is.
pub(crate) fn script_path() -> PathBuf {
    std::env::var_os("SALLYPORT_AXE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(".ci/axe/node_modules/axe-core/axe.min.js")
        })
}

/// The serious and critical violations axe-core finds in the page now (WCAG 2.1 A and AA
/// rules), each as `{id, impact, help, nodes: [target…]}`; `None` when axe-core is not
/// installed (and external tools are not required).
pub(crate) fn serious_violations(b: &Browser) -> Option<Vec<Value>> {
    let path = script_path();
    let Ok(source) = std::fs::read_to_string(&path) else {
        sallyport::db::testing::skip_or_fail(&format!(
            "axe-core is not installed at {} (`.ci/run` installs it with npm): \
             the accessibility check is skipped",
            path.display()
        ));
        return None;
    };
    // Loaded by WebDriver (not a <script> of the page), so the page's CSP is unchanged.
    b.js(&format!("{source}\nreturn true;"), json!([]));
    let found = b.js_async(
        "const done = arguments[arguments.length - 1];
         axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
           .then(r => done(r.violations
             .filter(v => v.impact === 'serious' || v.impact === 'critical')
             .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                          nodes: v.nodes.map(n => n.target.join(' ')) }))))
           .catch(e => done({ error: String(e) }));",
        json!([]),
    );
    assert!(found.get("error").is_none(), "axe-core failed: {found}");
    Some(found.as_array().cloned().unwrap_or_default())
}

/// Asserts that the page has no serious or critical accessibility violations; `page`
/// names it in the failure.
pub(crate) fn assert_accessible(b: &Browser, page: &str) {
    if let Some(v) = serious_violations(b) {
        assert!(
            v.is_empty(),
            "{page}: axe-core found serious accessibility violations: {}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        );
    }
}
