//! The rating hot path (normalize → longest-prefix lookup → tariff) makes no allocation:
//! a counting global allocator (per thread, so the test harness does not interfere) sees
//! zero allocations across 10,000 lookups and ratings.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use sallyport::money::Money;
use sallyport::rating::{normalize_e164, rate, RateDeck, RatePlan, Service};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

const DIALED: [&str; 6] = [
    "+15551234567",
    "(555) 987-6543",
    "011 44 20 7946 0000",
    "sip:+447700900123@trunk.example;user=phone",
    "tel:+52-55-1234-5678",
    "+33 1 23 45 67 89",
];

fn fixtures() -> (RateDeck, RatePlan) {
    let deck = RateDeck::from_csv(&include_bytes!("fixtures/ratedeck_small.csv")[..]).unwrap();
    let plan = RatePlan::from_toml(
        r#"
        name = "no-alloc"
        [[tariff]]
        class = "local"
        service = "audio"
        per_minute = "0.021"
        increment_secs = 6
        [[tariff]]
        class = "domestic"
        service = "audio"
        per_minute = "0.05"
        [[tariff]]
        class = "international"
        service = "audio"
        per_minute = "0.06"
        "#,
    )
    .unwrap();
    (deck, plan)
}

#[test]
fn rating_hot_path_does_not_allocate() {
    let (deck, plan) = fixtures();
    let before = allocations();
    let mut total = Money::ZERO;
    let mut rated = 0;
    for dialed in DIALED.iter().cycle().take(10_000) {
        let number = normalize_e164(dialed, "1").unwrap();
        let found = deck.lookup(number.digits()).is_some();
        let rating = rate(&deck, &plan, &number, Service::Audio).unwrap();
        total = total + rating.tariff.cost_of(2);
        rated += usize::from(found);
    }
    let allocated = allocations() - before;
    assert_eq!(rated, 10_000);
    assert!(total.is_positive());
    assert_eq!(allocated, 0, "{allocated} allocations in 10,000 ratings");
    // The counter does count: an owned string allocates.
    let owned = normalize_e164(DIALED[0], "1").unwrap().to_string();
    assert!(
        allocations() > before,
        "counting allocator inactive ({owned})"
    );
}
