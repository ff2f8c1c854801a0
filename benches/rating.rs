//! Rating hot path: normalize a dialed number, longest-prefix match on a 100,000-prefix
//! deck, pick the tariff. Also proves the path allocation-free with a counting allocator.
//!
//! `cargo bench --bench rating -- --warm-up-time 1 --measurement-time 3`
//!
//! On a shared machine criterion's wall-clock figures include time slices taken by other
//! processes; `RATING_BENCH_LOOP=rate:20000000 perf stat -e task-clock <bench binary> --bench`
//! (minus the same with `rate:0`) gives CPU time per operation instead (see `fixed_loop`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use criterion::{black_box, Criterion};
use sallyport::money::Money;
use sallyport::rating::{
    normalize_e164, rate, CallClass, DeckEntry, PlanSettings, RateDeck, RatePlan, Service, Tariff,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts every allocation, to check the hot path makes none.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Deterministic xorshift, so every run benches the same deck.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + (self.next() % 10) as u8))
            .collect()
    }
}

/// 100,000 prefixes of 1–8 digits: NANP area codes and exchanges under `1`, and country
/// codes with operator/area blocks elsewhere, like a real wholesale deck.
fn synthetic_deck(size: usize) -> RateDeck {
    let mut rng = Rng(0x5a11_9047_dead_beef);
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(size);
    while entries.len() < size {
        let len = [1, 2, 3, 4, 4, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8][(rng.next() % 15) as usize];
        let first = if rng.next() % 3 == 0 {
            '1'
        } else {
            char::from(b'2' + (rng.next() % 8) as u8)
        };
        let prefix = format!("{first}{}", rng.digits(len - 1));
        if !seen.insert(prefix.clone()) {
            continue;
        }
        let class = match (first, len) {
            ('1', 7..) => CallClass::Local,
            ('1', _) => CallClass::Domestic,
            _ => CallClass::International,
        };
        entries.push(DeckEntry {
            prefix,
            class,
            description: String::from("synthetic"),
        });
    }
    RateDeck::from_entries(entries).expect("unique digit prefixes")
}

fn plan() -> RatePlan {
    let mut plan = RatePlan::new(PlanSettings::new("bench")).expect("valid settings");
    for class in CallClass::ALL {
        let tariff = Tariff::new(Money::from_minor(210), 60).expect("valid tariff");
        plan.add_tariff(class, Service::Audio, tariff)
            .expect("one per class");
    }
    plan
}

/// Dialed numbers as handsets send them, half NANP, half international.
fn dialed(count: usize) -> Vec<String> {
    let mut rng = Rng(42);
    (0..count)
        .map(|i| match i % 4 {
            0 => format!("+1{}{}", 2 + rng.next() % 8, rng.digits(9)),
            1 => format!(
                "({}) {}-{}",
                200 + rng.next() % 800,
                rng.digits(3),
                rng.digits(4)
            ),
            2 => format!("011 {}{}", 2 + rng.next() % 8, rng.digits(10)),
            _ => format!(
                "sip:+{}{}@trunk.example",
                2 + rng.next() % 8,
                rng.digits(11)
            ),
        })
        .collect()
}

/// Normalize + lookup + tariff; returns something so nothing is optimized away.
fn rate_one(deck: &RateDeck, plan: &RatePlan, dialed: &str) -> Option<Money> {
    let number = normalize_e164(dialed, "1").ok()?;
    let rating = rate(deck, plan, &number, Service::Audio).ok()?;
    Some(rating.tariff.cost_of_increment())
}

/// Counts allocations over 10,000 ratings and 10,000 lookups on the built deck.
fn allocation_check(deck: &RateDeck, plan: &RatePlan, numbers: &[String], digits: &[String]) {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut rated = 0u32;
    for n in numbers.iter().cycle().take(10_000) {
        rated += u32::from(black_box(rate_one(deck, plan, n)).is_some());
    }
    for d in digits.iter().cycle().take(10_000) {
        black_box(deck.lookup(d));
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!("allocation check: {allocations} allocations in 10,000 ratings ({rated} rated) + 10,000 lookups");
    assert_eq!(allocations, 0, "the rating hot path allocated");
}

/// `RATING_BENCH_LOOP=rate:N` (or `lookup:N`, `normalize:N`) runs exactly N operations and
/// exits, for `perf stat -e cycles:u,instructions:u`: run it with N and with 0 and divide
/// the difference by N. Cycles counted in user space are immune to the time slices other
/// processes take on a shared machine, which skew criterion's wall-clock figures.
fn fixed_loop(spec: &str, deck: &RateDeck, plan: &RatePlan, numbers: &[String], digits: &[String]) {
    let (what, n) = spec.split_once(':').unwrap_or((spec, "0"));
    let n: usize = n.parse().expect("RATING_BENCH_LOOP=what:N");
    let mut hits = 0usize;
    for i in 0..n {
        hits += usize::from(match what {
            "rate" => rate_one(deck, plan, black_box(&numbers[i % numbers.len()])).is_some(),
            "lookup" => deck.lookup(black_box(&digits[i % digits.len()])).is_some(),
            "nl" => normalize_e164(black_box(&numbers[i % numbers.len()]), "1")
                .ok()
                .and_then(|n| deck.lookup(n.digits()).map(|m| m.class))
                .is_some(),
            "digits" => normalize_e164(black_box(&numbers[i % numbers.len()]), "1")
                .is_ok_and(|n| black_box(n.digits()).len() > 3),
            _ => normalize_e164(black_box(&numbers[i % numbers.len()]), "1").is_ok(),
        });
    }
    println!("{what}: {n} operations, {hits} hits");
}

fn main() {
    let deck = synthetic_deck(100_000);
    let plan = plan();
    let numbers = dialed(1024);
    let digits: Vec<String> = numbers
        .iter()
        .filter_map(|n| normalize_e164(n, "1").ok())
        .map(|e| e.digits().to_owned())
        .collect();
    println!(
        "deck: {} prefixes, {} trie nodes",
        deck.len(),
        deck.node_count()
    );
    allocation_check(&deck, &plan, &numbers, &digits);
    if let Ok(spec) = std::env::var("RATING_BENCH_LOOP") {
        return fixed_loop(&spec, &deck, &plan, &numbers, &digits);
    }

    let mut c = Criterion::default().configure_from_args();
    let mut i = 0usize;
    c.bench_function(
        "rate_one_call (normalize + lookup + tariff), 100k deck",
        |b| {
            b.iter(|| {
                i = (i + 1) % numbers.len();
                rate_one(&deck, &plan, black_box(&numbers[i]))
            })
        },
    );
    let mut j = 0usize;
    c.bench_function("lookup_only, 100k deck", |b| {
        b.iter(|| {
            j = (j + 1) % digits.len();
            deck.lookup(black_box(&digits[j])).map(|m| m.class)
        })
    });
    let mut k = 0usize;
    c.bench_function("normalize_only", |b| {
        b.iter(|| {
            k = (k + 1) % numbers.len();
            normalize_e164(black_box(&numbers[k]), "1").ok()
        })
    });
    c.final_summary();
}
