//! Rate decks and rate plans, stored as rows and rebuilt into the rating engine's
//! structures. Both are immutable once stored: a new deck or plan gets a new id, so a
//! CDR's rate can always be traced to what was in force.
//!
//! Because an id's content never changes, what a node has rebuilt stays true on every
//! node: decks and plans are kept in memory by id ([`RateCache`]), and a call set-up reads
//! neither from the database once its facility's deck and plan were loaded once (a
//! 100,000-prefix deck took 0.4–1 s to rebuild per set-up before).

use super::{conflict_on_unique, Store, StoreError};
use crate::db::from_micros;
use crate::money::Money;
use crate::rating::{
    CallClass, CapError, CapSchedule, CapTable, DeckEntry, FacilityCapCategory, PlanSettings,
    RateDeck, RatePlan, Service, Tariff,
};
use crate::text;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// Decks and plans rebuilt from their rows, by id (see the module doc). One rebuild per
/// id however many set-ups ask at once (the first call set-ups after a start would
/// otherwise each rebuild a large deck). Bounded: past [`CACHED`] ids of either, that map
/// starts afresh.
#[derive(Default)]
pub(crate) struct RateCache {
    decks: Mutex<HashMap<String, Slot<RateDeck>>>,
    plans: Mutex<HashMap<String, Slot<RatePlan>>>,
}

/// One id's rebuilt value, filled once.
type Slot<T> = Arc<tokio::sync::OnceCell<Arc<T>>>;

/// Decks (and plans) kept at most: a facility uses one of each.
const CACHED: usize = 64;

/// The slot of `id`, new if none.
fn slot<T>(map: &Mutex<HashMap<String, Slot<T>>>, id: &str) -> Slot<T> {
    let mut m = map.lock().unwrap_or_else(PoisonError::into_inner);
    if m.len() >= CACHED && !m.contains_key(id) {
        m.clear();
    }
    m.entry(id.to_string()).or_default().clone()
}

/// Rows per multi-row INSERT when storing a deck (3 binds each, well under SQLite's limit).
const DECK_BATCH: usize = 500;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeckSummary {
    pub id: String,
    pub name: String,
    pub prefixes: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TariffRow {
    pub class: CallClass,
    pub service: Service,
    pub per_minute: Money,
    pub increment_secs: u32,
    /// The charge of one increment after the one rounding rule.
    pub cost_per_increment: Money,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanSummary {
    pub id: String,
    pub name: String,
    pub max_call_secs: i64,
    pub tariffs: Vec<TariffRow>,
    pub created_at: DateTime<Utc>,
}

fn check_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "id",
            "1-64 letters, digits, '-', '_' or '.'",
        ))
    }
}

fn parse_category(s: &str) -> Result<FacilityCapCategory, StoreError> {
    s.parse().map_err(|e: crate::rating::UnknownCategory| {
        StoreError::invalid("cap_category", e.to_string())
    })
}

/// The checked-in cap tables (FCC 24-75, then 25-75), parsed once.
pub fn preset_caps() -> Result<&'static CapSchedule, StoreError> {
    static FCC: LazyLock<Result<CapSchedule, CapError>> = LazyLock::new(CapSchedule::fcc);
    FCC.as_ref().map_err(|e| StoreError::Corrupt {
        what: "rate cap table",
        message: e.to_string(),
    })
}

impl Store {
    /// The cap tables plans are checked against: the configured ones, else the presets.
    pub fn cap_schedule(&self) -> Result<&CapSchedule, StoreError> {
        match &self.caps {
            Some(s) => Ok(s),
            None => preset_caps(),
        }
    }

    /// The cap table in force today (the clock's date in UTC), if any.
    pub fn caps_in_force(&self) -> Result<Option<&CapTable>, StoreError> {
        Ok(self
            .cap_schedule()?
            .in_force(self.clock.wall().date_naive()))
    }
}

fn tariff_from_row(r: &AnyRow) -> Result<(CallClass, Service, Tariff), StoreError> {
    let corrupt = |m: String| StoreError::Corrupt {
        what: "rate plan",
        message: m,
    };
    let class: String = r.try_get("class")?;
    let service: String = r.try_get("service")?;
    let per_minute = Money::from_minor(r.try_get("per_minute_minor")?);
    let inc: i64 = r.try_get("increment_secs")?;
    let class: CallClass = class.parse().map_err(|_| corrupt(class.clone()))?;
    let service: Service = service.parse().map_err(|_| corrupt(service.clone()))?;
    let inc = u32::try_from(inc).map_err(|_| corrupt(format!("increment {inc}")))?;
    let tariff = Tariff::new(per_minute, inc).map_err(|e| corrupt(e.to_string()))?;
    Ok((class, service, tariff))
}

impl Store {
    /// Parses and stores a rate deck from CSV (`prefix,class,description`).
    pub async fn store_rate_deck(
        &self,
        id: &str,
        name: &str,
        csv: &[u8],
    ) -> Result<DeckSummary, StoreError> {
        check_id(id)?;
        let name = text::NAME.accept_required("name", name)?;
        let deck =
            RateDeck::from_csv(csv).map_err(|e| StoreError::invalid("csv", e.to_string()))?;
        for e in deck.entries() {
            let field = format!("description of prefix {}", e.prefix);
            text::NOTE.check(&field, &e.description)?;
        }
        let mut tx = self.db.begin_write().await?;
        sqlx::query("INSERT INTO rate_decks (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(self.now_us())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                conflict_on_unique(
                    e,
                    format!("rate deck '{id}' exists; decks are immutable, use a new id"),
                )
            })?;
        for chunk in deck.entries().chunks(DECK_BATCH) {
            let mut sql = String::from(
                "INSERT INTO rate_deck_entries (deck_id, prefix, class, description) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 3;
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("($1, ${}, ${}, ${})", b + 2, b + 3, b + 4));
            }
            let mut q = sqlx::query(&sql).bind(id);
            for e in chunk {
                q = q
                    .bind(e.prefix.as_str())
                    .bind(e.class.as_str())
                    .bind(e.description.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.rate_deck_summary(id).await
    }

    pub async fn rate_deck_summary(&self, id: &str) -> Result<DeckSummary, StoreError> {
        let row = sqlx::query(
            "SELECT d.id, d.name, d.created_at, (SELECT COUNT(*) FROM rate_deck_entries e WHERE e.deck_id = d.id) AS n \
             FROM rate_decks d WHERE d.id = $1",
        )
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("rate deck", id))?;
        Ok(DeckSummary {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            prefixes: row.try_get("n")?,
            created_at: from_micros(row.try_get("created_at")?),
        })
    }

    pub async fn rate_decks(&self) -> Result<Vec<DeckSummary>, StoreError> {
        let ids = self.ids("SELECT id FROM rate_decks ORDER BY id").await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.rate_deck_summary(&id).await?);
        }
        Ok(out)
    }

    /// The `id` column of a query's rows.
    async fn ids(&self, sql: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(sql).fetch_all(self.db.pool()).await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?)
    }

    /// A stored deck, ready for rating: from memory once loaded (decks are immutable).
    pub async fn load_rate_deck(&self, id: &str) -> Result<Arc<RateDeck>, StoreError> {
        slot(&self.rates.decks, id)
            .get_or_try_init(|| async { Ok(Arc::new(self.rebuild_rate_deck(id).await?)) })
            .await
            .cloned()
    }

    /// Loads into memory the rate deck and plan of every facility that has both (what a
    /// call set-up rates with), so no call waits for a deck to be built. A pair that cannot
    /// be loaded is logged and left for the call that needs it to load (or refuse). Returns
    /// the number of (plan, deck) pairs loaded.
    pub async fn warm_rates(&self) -> Result<usize, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT rate_plan_id, rate_deck_id, cap_category FROM facilities \
             WHERE rate_plan_id IS NOT NULL AND rate_deck_id IS NOT NULL",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut loaded = 0;
        for r in &rows {
            let plan: String = r.try_get("rate_plan_id")?;
            let deck: String = r.try_get("rate_deck_id")?;
            let category: String = r.try_get("cap_category")?;
            let pair = async {
                self.load_rate_plan(&plan, &category).await?;
                self.load_rate_deck(&deck).await
            };
            match pair.await {
                Ok(_) => loaded += 1,
                Err(e) => tracing::warn!(plan = %plan, deck = %deck, error = %e,
                    "cannot load a facility's rate plan and deck ahead of calls"),
            }
        }
        Ok(loaded)
    }

    /// Whether the deck `id` is in memory (built by a call, a lookup or [`Store::warm_rates`]).
    pub fn rate_deck_in_memory(&self, id: &str) -> bool {
        let m = self
            .rates
            .decks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        m.get(id).is_some_and(|slot| slot.initialized())
    }

    /// Rebuilds a stored deck from its rows.
    async fn rebuild_rate_deck(&self, id: &str) -> Result<RateDeck, StoreError> {
        self.rate_deck_summary(id).await?;
        let rows = sqlx::query(
            "SELECT prefix, class, description FROM rate_deck_entries WHERE deck_id = $1",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for r in &rows {
            let class: String = r.try_get("class")?;
            entries.push(DeckEntry {
                prefix: r.try_get("prefix")?,
                class: class.parse().map_err(|_| StoreError::Corrupt {
                    what: "rate deck",
                    message: class.clone(),
                })?,
                description: r.try_get("description")?,
            });
        }
        RateDeck::from_entries(entries).map_err(|e| StoreError::Corrupt {
            what: "rate deck",
            message: e.to_string(),
        })
    }

    /// Parses and stores a rate plan from CSV (`class,service,per_minute,increment_secs`).
    pub async fn store_rate_plan(
        &self,
        id: &str,
        name: &str,
        max_call_secs: u32,
        csv: &[u8],
    ) -> Result<PlanSummary, StoreError> {
        check_id(id)?;
        let name = text::NAME.accept_required("name", name)?;
        let mut settings = PlanSettings::new(name);
        settings.max_duration_secs = max_call_secs;
        let plan = RatePlan::from_csv(settings, csv)
            .map_err(|e| StoreError::invalid("csv", e.to_string()))?;
        if plan.tariffs().next().is_none() {
            return Err(StoreError::invalid(
                "csv",
                "a plan needs at least one tariff row",
            ));
        }
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO rate_plans (id, name, max_call_secs, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(name)
        .bind(i64::from(max_call_secs))
        .bind(self.now_us())
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            conflict_on_unique(
                e,
                format!("rate plan '{id}' exists; plans are immutable, use a new id"),
            )
        })?;
        for (class, service, t) in plan.tariffs() {
            sqlx::query(
                "INSERT INTO rate_plan_tariffs (plan_id, class, service, per_minute_minor, increment_secs) VALUES ($1,$2,$3,$4,$5)",
            )
            .bind(id)
            .bind(class.as_str())
            .bind(service.as_str())
            .bind(t.per_minute().to_minor())
            .bind(i64::from(t.increment_secs()))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.rate_plan_summary(id).await
    }

    pub async fn rate_plan_summary(&self, id: &str) -> Result<PlanSummary, StoreError> {
        let head =
            sqlx::query("SELECT id, name, max_call_secs, created_at FROM rate_plans WHERE id = $1")
                .bind(id)
                .fetch_optional(self.db.pool())
                .await?
                .ok_or_else(|| StoreError::not_found("rate plan", id))?;
        let rows = sqlx::query(
            "SELECT class, service, per_minute_minor, increment_secs FROM rate_plan_tariffs WHERE plan_id = $1 ORDER BY class, service",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await?;
        let mut tariffs = Vec::with_capacity(rows.len());
        for r in &rows {
            let (class, service, t) = tariff_from_row(r)?;
            tariffs.push(TariffRow {
                class,
                service,
                per_minute: t.per_minute(),
                increment_secs: t.increment_secs(),
                cost_per_increment: t.cost_of_increment(),
            });
        }
        Ok(PlanSummary {
            id: head.try_get("id")?,
            name: head.try_get("name")?,
            max_call_secs: head.try_get("max_call_secs")?,
            tariffs,
            created_at: from_micros(head.try_get("created_at")?),
        })
    }

    pub async fn rate_plans(&self) -> Result<Vec<PlanSummary>, StoreError> {
        let ids = self.ids("SELECT id FROM rate_plans ORDER BY id").await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.rate_plan_summary(&id).await?);
        }
        Ok(out)
    }

    /// A stored plan, ready for rating (from memory once loaded: plans are immutable),
    /// checked against the cap of `category` in force today every time: a plan above its
    /// cap is refused even if the cap table changed after it was set.
    pub async fn load_rate_plan(
        &self,
        id: &str,
        category: &str,
    ) -> Result<Arc<RatePlan>, StoreError> {
        let plan = slot(&self.rates.plans, id)
            .get_or_try_init(|| async {
                Ok::<_, StoreError>(Arc::new(self.rebuild_rate_plan(id).await?))
            })
            .await?
            .clone();
        if let Some(caps) = self.caps_in_force()? {
            plan.validate(caps, parse_category(category)?)
                .map_err(|e| StoreError::invalid("rate_plan_id", e.to_string()))?;
        }
        Ok(plan)
    }

    /// Rebuilds a stored plan from its rows.
    async fn rebuild_rate_plan(&self, id: &str) -> Result<RatePlan, StoreError> {
        let s = self.rate_plan_summary(id).await?;
        let corrupt = |e: crate::rating::PlanError| StoreError::Corrupt {
            what: "rate plan",
            message: e.to_string(),
        };
        let mut settings = PlanSettings::new(s.name);
        settings.max_duration_secs = u32::try_from(s.max_call_secs).unwrap_or(u32::MAX);
        let mut plan = RatePlan::new(settings).map_err(corrupt)?;
        for t in s.tariffs {
            plan.add_tariff(
                t.class,
                t.service,
                Tariff::new(t.per_minute, t.increment_secs).map_err(corrupt)?,
            )
            .map_err(corrupt)?;
        }
        Ok(plan)
    }

    /// Refuses to give a facility of `category` a plan above its cap.
    pub(crate) async fn check_plan_for_facility(
        &self,
        plan_id: &str,
        category: &str,
    ) -> Result<(), StoreError> {
        self.load_rate_plan(plan_id, category).await.map(|_| ())
    }
}
