//! The facility reports in a real browser: Debian's Chromium, headless, driven through
//! chromedriver, against the real `sallyport serve` on a SQLite database holding a
//! generated facility-year (`sallyport::reports::sample`).
//!
//! `investigator_reads_every_report_with_chart_table_and_csv`: an investigator of the
//! facility opens each report page; the chart is drawn by the vendored uPlot (a canvas
//! with ink on it), the table under it has the gateway's numbers, "Download CSV" saves the
//! gateway's CSV of that table (audited as `report.read` with format csv); the form picks a
//! report; axe-core finds no serious violation on a report page.
//!
//! Without Chromium/chromedriver a test prints why and passes, unless
//! `SALLYPORT_REQUIRE_EXTERNAL=1`. A screenshot of each report is saved into
//! `target/browser-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use sallyport::db::Db;
use sallyport::reports::sample::{generate, Spec};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use support::api::Api;
use support::axe;
use support::gateway::Gateway;
use support::sipp;
use support::webdriver::{self, Browser};
use support::Workdir;

const PASSWORD: &str = "correct horse battery staple";
const F: &str = "RPTB";
const QUERY: &str = "facility=RPTB&from=2025-01-01&to=2025-12-31";
const REPORTS: [&str; 10] = [
    "deposits",
    "spending",
    "revenue",
    "sessions-daily",
    "sessions-hourly",
    "call-length",
    "end-reasons",
    "top-numbers",
    "welfare",
    "balances",
];

fn screenshots() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .map_or(tmp.clone(), |t| t.to_path_buf())
        .join("browser-screenshots")
}

/// A cell as the page shows it (amounts are strings, counts numbers).
fn cell_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), String::from)
}

#[test]
fn investigator_reads_every_report_with_chart_table_and_csv() {
    if !webdriver::present("report browser test") {
        return;
    }
    let dir = Workdir::new("report_browser", "reports");
    let ports = sipp::ports();
    let gateway = Gateway::start(&dir, &ports);
    // A facility-year written straight into the gateway's database (it is running: WAL).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = Db::connect(&format!("sqlite://{}/db.sqlite", dir.display()), 2)
            .await
            .unwrap();
        let spec = Spec {
            facility_id: F.into(),
            time_zone: "America/Chicago".into(),
            year: 2025,
            inmates: 40,
            calls: 3_000,
            deposits: 600,
            visits: 120,
            purchases: 300,
            releases: 3,
            seed: 5,
        };
        generate(&db, &spec).await.unwrap();
        db.close().await;
    });
    let admin: Api = gateway.api.clone();
    admin.add_user("rep-inv", PASSWORD, "investigator", &[F]);

    let b = Browser::start(&dir.join("chromedriver.log"));
    let shot = |what: &str| b.screenshot(&screenshots().join(format!("reports-{what}.png")));
    b.goto(&format!("{}/console/", gateway.base_url()));
    b.wait_for("body[data-ready='1']");
    b.fill("#login-username", "rep-inv");
    b.fill("#login-password", PASSWORD);
    b.click("#login-submit");
    b.wait_js(
        "rep-inv logs in",
        Duration::from_secs(10),
        "return !document.getElementById('search-view').hidden;",
        |v| v == true,
    );
    b.window_size(1280, 1000);

    for name in REPORTS {
        let want = admin.get(&format!("/api/v1/reports/{name}?{QUERY}"));
        b.goto(&format!(
            "{}/console/#/reports/{name}?{QUERY}",
            gateway.base_url()
        ));
        let seen = b.wait_js(
            &format!("{name}: chart drawn and table filled"),
            Duration::from_secs(20),
            "const box = document.getElementById('report-chart');
             const canvas = box.querySelector('canvas');
             let ink = 0;
             if (canvas && canvas.width > 0) {
               const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
               for (let i = 3; i < px.length; i += 4) if (px[i] > 0) ink++;
             }
             const rows = [...document.querySelectorAll('#report-body tr')]
               .map(tr => [...tr.children].map(td => td.textContent));
             return { drawn: box.dataset.drawn, report: box.dataset.report, ink, rows,
                      error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
                      visible: !document.getElementById('report-output').hidden };",
            |v| {
                (v["drawn"] == "1" && v["report"] == name)
                    || !v["error"].as_str().unwrap_or("").is_empty()
            },
        );
        assert_eq!(seen["error"], "", "{name}: {seen}");
        assert_eq!(seen["visible"], true);
        assert!(
            seen["ink"].as_u64().unwrap() > 500,
            "{name}: the chart has ink: {}",
            seen["ink"]
        );
        let table: Vec<Vec<String>> = want["table"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(cell_text).collect())
            .collect();
        let shown: Vec<Vec<String>> = serde_json::from_value(seen["rows"].clone()).unwrap();
        assert_eq!(shown, table, "{name}: the page's table is the gateway's");
        assert!(!table.is_empty(), "{name} has rows");

        // Download CSV: the gateway's CSV of the same table.
        b.click("#report-csv");
        let saved = b.wait_js(
            &format!("{name}: CSV saved"),
            Duration::from_secs(10),
            "return { status: document.getElementById('report-csv-status').textContent,
                      csv: Reports.lastCsv };",
            |v| {
                v["status"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Saved "))
            },
        );
        let file = format!("{name}-{F}-2025-01-01-2025-12-31.csv");
        assert_eq!(saved["csv"]["name"], file.as_str());
        let (s, _, direct) = admin.send(
            "GET",
            &format!("/api/v1/reports/{name}.csv?{QUERY}"),
            None,
            &[],
        );
        assert_eq!(s, 200);
        assert_eq!(saved["csv"]["text"], direct, "{name}: the CSV saved");
        let lines = direct.as_str().unwrap().lines().count();
        assert_eq!(
            lines,
            table.len() + 1,
            "{name}: header and one line per row"
        );
        shot(name);
        if name == "deposits" || name == "welfare" {
            axe::assert_accessible(&b, &format!("the {name} report"));
        }
    }

    // The form picks a report and its range.
    b.goto(&format!("{}/console/#/reports", gateway.base_url()));
    b.wait_js(
        "the report form",
        Duration::from_secs(10),
        "return document.getElementById('report-name').options.length;",
        |v| v == 10,
    );
    b.js(
        "document.getElementById('report-name').value = 'end-reasons';
         document.getElementById('report-facility').value = arguments[0];
         document.getElementById('report-from').value = '2025-06-01';
         document.getElementById('report-to').value = '2025-06-30';
         return true;",
        json!([F]),
    );
    b.click("#report-show");
    let title = b.wait_js(
        "the chosen report",
        Duration::from_secs(10),
        "return document.getElementById('report-output').hidden ? '' :
                document.getElementById('report-title').textContent;",
        |v| v.as_str().is_some_and(|t| t.contains("2025-06-30")),
    );
    assert!(
        title.as_str().unwrap().starts_with("End reasons"),
        "{title}"
    );

    // Every CSV download was audited, with its format.
    let log = admin.get("/api/v1/audit?limit=200");
    let csv_reads = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["action"] == "report.read"
                && e["actor"] == "rep-inv"
                && e["detail"]["format"] == "csv"
        })
        .count();
    assert_eq!(csv_reads, REPORTS.len(), "{log}");
}
