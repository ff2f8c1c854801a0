//! The investigator console in a browser, as the browser tests drive it: where
//! screenshots go (and the documentation's, `docs/img/`, with
//! `SALLYPORT_DOC_SCREENSHOTS=1`), waiting for a view, the keyboard (Tab to a control,
//! keys where the focus is) and the widths a page must stay readable at (1024 and 1280
//! px: nothing runs off the side, axe-core finds no serious violation).

use super::axe;
use super::webdriver::Browser;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// `target/browser-screenshots/`, where every browser test leaves its screenshots.
pub(crate) fn screenshots() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .map_or(tmp.clone(), |t| t.to_path_buf())
        .join("browser-screenshots")
}

/// Saves a screenshot for the documentation (`docs/img/<name>.png`) when
/// `SALLYPORT_DOC_SCREENSHOTS=1`, else beside the other screenshots.
pub(crate) fn doc_screenshot(b: &Browser, name: &str) {
    let path = if std::env::var_os("SALLYPORT_DOC_SCREENSHOTS").is_some_and(|v| v == "1") {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("docs/img")
            .join(format!("{name}.png"))
    } else {
        screenshots().join(format!("doc-{name}.png"))
    };
    b.screenshot(&path);
}

/// Waits (10 s at most) until the element `id` is shown.
pub(crate) fn wait_visible(b: &Browser, id: &str) {
    b.wait_js(
        &format!("#{id} shown"),
        Duration::from_secs(10),
        &format!("return !document.getElementById('{id}').hidden;"),
        |v| v == true,
    );
}

/// Presses `keys` wherever the focus is, as someone at the keyboard would (WebDriver sends
/// keys to an element: the focused one, marked for the moment; the page itself when the
/// focused element has just been hidden).
pub(crate) fn press(b: &Browser, keys: &str) {
    b.js(
        "for (const e of document.querySelectorAll('[data-kbd]')) e.removeAttribute('data-kbd');
         const a = document.activeElement;
         (a && a.getClientRects().length ? a : document.body).setAttribute('data-kbd', '');",
        json!([]),
    );
    b.send_keys("[data-kbd]", keys);
}

/// Tabs until the focus is on `css` (at most 200 presses): every stop on the way is
/// something on screen, and the target shows that it has the focus (an outline).
pub(crate) fn tab_to(b: &Browser, css: &str) {
    for _ in 0..200 {
        press(b, "\u{E004}");
        let at = b.js(
            "const e = document.activeElement; const r = e.getBoundingClientRect();
             return { on: e.matches(arguments[0]), what: e.tagName + '#' + e.id + '.' + e.className,
                      body: e === document.body, w: r.width, h: r.height,
                      outline: getComputedStyle(e).outlineStyle };",
            json!([css]),
        );
        if at["body"] == true {
            continue; // past the last stop, before the first
        }
        assert!(
            at["w"].as_f64() > Some(0.0) && at["h"].as_f64() > Some(0.0),
            "the focus on something not on screen, tabbing to {css}: {at}"
        );
        if at["on"] == true {
            assert_ne!(at["outline"], "none", "{css} shows no focus: {at}");
            return;
        }
    }
    panic!("{css} is not reached with Tab");
}

/// What runs off the side of the page: the page's own horizontal scrolling, boxes whose
/// content is wider than they are (a table's scrolling box included), tables past the
/// window's edge.
const OVERFLOW_JS: &str = "const d = document.documentElement;
    const wide = [...document.querySelectorAll('table, .table-wrap, section, form, dl')]
      .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1 &&
                   (getComputedStyle(e).overflowX !== 'auto' || e.classList.contains('table-wrap')))
      .map(e => e.tagName + '#' + e.id + ' ' + e.scrollWidth + '>' + e.clientWidth);
    const tables = [...document.querySelectorAll('table')]
      .filter(t => t.offsetParent !== null && t.getBoundingClientRect().right > d.clientWidth + 1)
      .map(t => 'table#' + t.id + '.' + t.className + ' ends at ' + t.getBoundingClientRect().right);
    return { page: d.scrollWidth - d.clientWidth, wide, tables };";

/// The page is readable at 1280 px and on a laptop at 1024 px: nothing runs off the
/// side (no horizontal scrolling, every table fits its box) and axe-core finds no
/// serious violation, at both widths.
pub(crate) fn readable_at_both_widths(b: &Browser, what: &str) {
    for (w, h) in [(1024, 768), (1280, 1000)] {
        b.window_size(w, h);
        b.wait_js(
            &format!("the window is {w} px wide"),
            Duration::from_secs(5),
            "return window.outerWidth;",
            |v| v.as_f64().is_some_and(|x| (x - f64::from(w)).abs() < 16.0),
        );
        // (A chart follows the window a moment later: up to 3 s to settle.)
        let fits = |v: &Value| {
            v["page"].as_f64() <= Some(1.0)
                && v["wide"].as_array().is_some_and(Vec::is_empty)
                && v["tables"].as_array().is_some_and(Vec::is_empty)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let overflow = loop {
            let v = b.js(OVERFLOW_JS, json!([]));
            if fits(&v) || std::time::Instant::now() > deadline {
                break v;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            fits(&overflow),
            "{what} at {w} px runs off the side: {overflow}"
        );
        axe::assert_accessible(b, &format!("{what} at {w} px"));
    }
}
