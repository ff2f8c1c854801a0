//! Investigative leads: where to listen, instead of everything.
//!
//! Three kinds, each linking to the sessions behind it:
//!
//! - **Shared numbers**: a number called by at least `min_inmates` different inmates
//!   within the period, across the facilities in the investigator's scope, with the
//!   graph of who called it (computed in the database, [`crate::store`]).
//! - **New numbers**: a number first called within the period (never before, in the
//!   scope) and by at least `min_inmates` inmates within `burst_hours` of that first call.
//! - **PIN sharing** ([`pin_sharing`], this module's pure core): one inmate's PIN used
//!   successfully from handsets in different housing units within `pin_window_minutes`
//!   (a handset's housing unit is its `location`), or a PIN that failed for one inmate
//!   and then succeeded for another on the same handset within that window.
//!
//! Privileged calls are never part of a lead: leads exist to choose what to listen to,
//! and a privileged call is never listened to.

use serde::Serialize;

/// One PIN attempt as the PIN-sharing core reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: i64,
    pub facility_id: String,
    pub handset_id: String,
    /// The handset's housing unit (its location; empty: unknown).
    pub housing_unit: String,
    /// The inmate the keyed ID named, if any.
    pub inmate_id: Option<String>,
    /// Whether the ID and PIN matched.
    pub valid: bool,
    /// Unix microseconds.
    pub at: i64,
    /// The time zone of the attempt's facility (its time is shown in it).
    pub time_zone: Option<String>,
}

/// Which PIN-sharing pattern a lead is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PinPattern {
    /// One inmate's PIN used from handsets in different housing units.
    AcrossUnits,
    /// A PIN failed for one inmate, then one succeeded for another, on one handset.
    FailedThenOther,
}

/// A PIN-sharing lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinLead {
    /// Stable while the attempts stand: `pin-<first attempt id>-<pattern>`.
    pub id: String,
    pub pattern: PinPattern,
    pub facility_id: String,
    /// The inmate whose PIN was used (across units), or who failed (failed then other).
    pub inmate_id: String,
    /// The inmate who then succeeded (failed then other).
    pub other_inmate_id: Option<String>,
    pub handset_ids: Vec<String>,
    pub housing_units: Vec<String>,
    pub attempt_ids: Vec<i64>,
    /// Unix microseconds of the first and last attempt.
    pub first_at: i64,
    pub last_at: i64,
    /// The time zones of the facilities of the first and the last attempt (a lead's
    /// attempts may span facilities): each time is shown in its own.
    pub first_time_zone: Option<String>,
    pub last_time_zone: Option<String>,
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

/// The PIN-sharing leads in `attempts` (any order), `window_us` the longest gap between
/// two attempts of one lead. Oldest first.
pub fn pin_sharing(attempts: &[Attempt], window_us: i64) -> Vec<PinLead> {
    let mut sorted: Vec<&Attempt> = attempts.iter().collect();
    sorted.sort_by_key(|a| (a.at, a.id));
    let mut leads = Vec::new();

    // Across units: each inmate's valid attempts, in runs whose gaps are within the
    // window; a run is a lead when it spans two housing units or more.
    let mut inmates: Vec<&str> = sorted
        .iter()
        .filter(|a| a.valid)
        .filter_map(|a| a.inmate_id.as_deref())
        .collect();
    inmates.sort_unstable();
    inmates.dedup();
    for inmate in inmates {
        let mine: Vec<&&Attempt> = sorted
            .iter()
            .filter(|a| a.valid && a.inmate_id.as_deref() == Some(inmate))
            .collect();
        let mut run: Vec<&Attempt> = Vec::new();
        let mut flush = |run: &mut Vec<&Attempt>| {
            let mut units = Vec::new();
            for a in run.iter().filter(|a| !a.housing_unit.is_empty()) {
                push_unique(&mut units, &a.housing_unit);
            }
            if units.len() >= 2 {
                let mut handsets = Vec::new();
                for a in run.iter() {
                    push_unique(&mut handsets, &a.handset_id);
                }
                let first = run[0];
                let last = run[run.len() - 1];
                leads.push(PinLead {
                    id: format!("pin-{}-units", first.id),
                    pattern: PinPattern::AcrossUnits,
                    facility_id: first.facility_id.clone(),
                    inmate_id: inmate.to_string(),
                    other_inmate_id: None,
                    handset_ids: handsets,
                    housing_units: units,
                    attempt_ids: run.iter().map(|a| a.id).collect(),
                    first_at: first.at,
                    last_at: last.at,
                    first_time_zone: first.time_zone.clone(),
                    last_time_zone: last.time_zone.clone(),
                });
            }
            run.clear();
        };
        for a in mine {
            if run.last().is_some_and(|l| a.at - l.at > window_us) {
                flush(&mut run);
            }
            run.push(a);
        }
        flush(&mut run);
    }

    // Failed then other: on one handset, a valid attempt for B after failures naming A
    // (A != B) within the window before it.
    for (i, v) in sorted.iter().enumerate() {
        let Some(b) = v.inmate_id.as_deref().filter(|_| v.valid) else {
            continue;
        };
        let failed: Vec<&&Attempt> = sorted[..i]
            .iter()
            .filter(|a| {
                !a.valid
                    && a.handset_id == v.handset_id
                    && v.at - a.at <= window_us
                    && a.inmate_id.as_deref().is_some_and(|x| x != b)
            })
            .collect();
        let Some(first) = failed.first() else {
            continue;
        };
        let a_inmate = first.inmate_id.clone().unwrap_or_default();
        let mut ids: Vec<i64> = failed
            .iter()
            .filter(|a| a.inmate_id.as_deref() == Some(a_inmate.as_str()))
            .map(|a| a.id)
            .collect();
        ids.push(v.id);
        let units = if v.housing_unit.is_empty() {
            Vec::new()
        } else {
            vec![v.housing_unit.clone()]
        };
        leads.push(PinLead {
            id: format!("pin-{}-failed", first.id),
            pattern: PinPattern::FailedThenOther,
            facility_id: v.facility_id.clone(),
            inmate_id: a_inmate,
            other_inmate_id: Some(b.to_string()),
            handset_ids: vec![v.handset_id.clone()],
            housing_units: units,
            attempt_ids: ids,
            first_at: first.at,
            last_at: v.at,
            first_time_zone: first.time_zone.clone(),
            last_time_zone: v.time_zone.clone(),
        });
    }
    // A run of failures followed by two successes is one lead (the first).
    let mut seen = std::collections::HashSet::new();
    leads.retain(|l| seen.insert(l.id.clone()));
    leads.sort_by_key(|l| (l.first_at, l.id.clone()));
    leads
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    fn a(id: i64, handset: &str, unit: &str, inmate: &str, valid: bool, minute: i64) -> Attempt {
        Attempt {
            id,
            facility_id: "fac".into(),
            handset_id: handset.into(),
            housing_unit: unit.into(),
            inmate_id: (!inmate.is_empty()).then(|| inmate.to_string()),
            valid,
            at: minute * MIN,
            time_zone: Some(format!("Zone/{handset}")),
        }
    }

    #[test]
    fn one_pin_in_two_units_within_minutes_is_a_lead() {
        let leads = pin_sharing(
            &[
                a(1, "h1", "A", "i1", true, 0),
                a(2, "h2", "B", "i1", true, 5),
                // Far later in B: its own run, one unit.
                a(3, "h2", "B", "i1", true, 200),
                // Another inmate moving within one unit.
                a(4, "h3", "C", "i2", true, 1),
                a(5, "h4", "C", "i2", true, 2),
            ],
            10 * MIN,
        );
        assert_eq!(leads.len(), 1, "{leads:?}");
        let l = &leads[0];
        assert_eq!(l.pattern, PinPattern::AcrossUnits);
        assert_eq!(l.inmate_id, "i1");
        assert_eq!(l.attempt_ids, vec![1, 2]);
        assert_eq!(l.housing_units, vec!["A", "B"]);
        assert_eq!(l.id, "pin-1-units");
        // Each end in its own attempt's zone (here, one per handset).
        assert_eq!(
            (l.first_time_zone.as_deref(), l.last_time_zone.as_deref()),
            (Some("Zone/h1"), Some("Zone/h2"))
        );
    }

    #[test]
    fn a_failure_for_one_then_success_for_another_on_one_handset_is_a_lead() {
        let leads = pin_sharing(
            &[
                a(10, "h1", "A", "i1", false, 0),
                a(11, "h1", "A", "i1", false, 1),
                a(12, "h1", "A", "i2", true, 2),
                // Same inmate failing then succeeding: a typo, no lead.
                a(13, "h2", "A", "i3", false, 0),
                a(14, "h2", "A", "i3", true, 1),
                // Other handset: no lead.
                a(15, "h3", "A", "i4", false, 0),
                a(16, "h4", "A", "i5", true, 1),
                // Too long before.
                a(17, "h5", "A", "i6", false, 0),
                a(18, "h5", "A", "i7", true, 30),
            ],
            10 * MIN,
        );
        assert_eq!(leads.len(), 1, "{leads:?}");
        let l = &leads[0];
        assert_eq!(l.pattern, PinPattern::FailedThenOther);
        assert_eq!(
            (l.inmate_id.as_str(), l.other_inmate_id.as_deref()),
            ("i1", Some("i2"))
        );
        assert_eq!(l.attempt_ids, vec![10, 11, 12]);
    }
}
