//! Writes a generated facility-year into a database for the reports' benchmark
//! (`bench/reports.sh`): one facility, 2,000 inmates, 1,000,000 calls, 25,000 visits,
//! 100,000 commissary purchases, 200,000 deposits and 120 releases by default, from
//! `sallyport::reports::sample` (seeded: the same data every time).
//!
//!   cargo run --release --example report_data -- --database-url sqlite:///tmp/r/db.sqlite
//!   cargo run --release --example report_data -- --database-url postgres://postgres@127.0.0.1/bench --calls 1000000
//!
//! The database is migrated first; the facility (`--facility`, default `BIG`) must not
//! exist yet. Prints what it wrote (the known totals) and how long it took.

use sallyport::db::Db;
use sallyport::reports::sample::{generate, Spec};
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn number(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match arg(args, name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("{name}: not a whole number: {v}")),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, "--database-url").ok_or("--database-url is required")?;
    let mut spec = Spec::facility_year(&arg(&args, "--facility").unwrap_or_else(|| "BIG".into()));
    spec.calls = number(&args, "--calls", spec.calls)?;
    spec.deposits = number(&args, "--deposits", spec.deposits)?;
    spec.visits = number(&args, "--visits", spec.visits)?;
    spec.purchases = number(&args, "--purchases", spec.purchases)?;
    spec.inmates = u32::try_from(number(&args, "--inmates", u64::from(spec.inmates))?)?;
    let db = Db::connect(&url, 4).await?;
    db.migrate().await?;
    let started = Instant::now();
    let totals = generate(&db, &spec).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "facility {} ({}), year {}: {} calls ({} connected, {} talk seconds, charged {} minor), \
         {} visits, {} purchases, deposits {:?}, {} releases refunding {} minor; \
         {} inmates never contacted; written in {secs:.1} s",
        spec.facility_id,
        spec.time_zone,
        spec.year,
        totals.calls,
        totals.connected_calls,
        totals.talk_secs,
        totals.call_charges,
        totals.visits,
        totals.purchases,
        totals.deposits,
        totals.releases_refunded,
        totals.released_amount,
        totals.silent_inmates,
    );
    db.close().await;
    Ok(())
}
