//! The visit core in virtual time, with a fake ledger that answers at once.

use super::*;
use crate::clock::epoch;
use ChargingAction::{Count, Debit};
use VisitAction::*;

fn m(s: &str) -> Money {
    s.parse().unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A 20-minute slot opening 5 minutes after t0, $0.25 a minute in 1-minute increments,
/// 2-minute warnings, no-show 10 minutes into the slot.
fn plan(t0: Instant, cost: &str) -> VisitPlan {
    VisitPlan {
        opens_at: t0 + secs(300),
        ends_at: t0 + secs(300 + 1200),
        no_show_at: t0 + secs(300 + 600),
        charging: ChargingPlan {
            cost_per_increment: m(cost),
            increment: secs(60),
            max_duration: Duration::ZERO,
            warning_lead: secs(120),
            debit_timeout: secs(5),
        },
        privileged: false,
    }
}

struct Harness {
    core: VisitCore,
    t0: Instant,
    now: Instant,
    balance: Money,
    /// Every action with the seconds since t0 it came at (debits and counts included).
    log: Vec<(u64, VisitAction)>,
}

impl Harness {
    fn new(plan: impl FnOnce(Instant) -> VisitPlan, balance: &str) -> Harness {
        let t0 = epoch();
        let plan = plan(t0);
        let mut h = Harness {
            core: VisitCore::new(plan, t0).unwrap(),
            t0,
            now: t0,
            balance: m(balance),
            log: Vec::new(),
        };
        h.drain();
        h
    }

    fn at(&self) -> u64 {
        (self.now - self.t0).as_secs()
    }

    fn drain(&mut self) {
        while let Some(a) = self.core.poll_action() {
            self.log.push((self.at(), a));
            match a {
                ReadBalance => self.core.balance_read(self.now, Some(self.balance)),
                Charging(Debit { increment, amount }) => {
                    if self.balance >= amount {
                        self.balance = self.balance - amount;
                        self.core.debit_succeeded(self.now, increment, self.balance);
                    } else {
                        self.core.debit_refused(self.now, increment);
                    }
                }
                Charging(ChargingAction::CheckBalance { after_increment }) => {
                    self.core
                        .balance_checked(self.now, after_increment, Some(self.balance));
                }
                _ => {}
            }
        }
    }

    /// Runs every deadline strictly before `t` s, then moves the clock to `t`.
    fn run_until(&mut self, t: u64) {
        let end = self.t0 + secs(t);
        while let Some(at) = self.core.poll_timeout().filter(|&at| at < end) {
            self.now = self.now.max(at);
            self.core.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
    }

    fn run_to_end(&mut self) {
        while let Some(at) = self.core.poll_timeout() {
            self.now = self.now.max(at);
            self.core.handle_timeout(self.now);
            self.drain();
        }
    }

    fn input(&mut self, t: u64, f: impl FnOnce(&mut VisitCore, Instant)) {
        self.run_until(t);
        f(&mut self.core, self.now);
        self.drain();
    }

    fn both_flow(&mut self, t: u64) {
        self.input(t, |c, now| {
            c.media_flowing(Side::Visitor, now);
            c.media_flowing(Side::Inmate, now);
        });
    }

    fn debits(&self) -> Vec<(u64, u32)> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                Charging(Debit { increment, .. }) => Some((*t, *increment)),
                _ => None,
            })
            .collect()
    }

    /// What the pages hear of (not the ledger's traffic).
    fn told(&self) -> Vec<(u64, VisitAction)> {
        self.log
            .iter()
            .filter(|(_, a)| !matches!(a, Charging(_) | ReadBalance))
            .copied()
            .collect()
    }
}

#[test]
fn nothing_flows_or_bills_in_the_lobby() {
    let mut h = Harness::new(|t0| plan(t0, "0.25"), "100");
    h.input(10, |c, now| {
        c.joined(Side::Visitor, now);
        c.media_flowing(Side::Visitor, now);
        c.media_flowing(Side::Inmate, now);
    });
    assert_eq!(h.core.state(), VisitState::Lobby);
    assert!(h.log.is_empty(), "{:?}", h.log);
    h.run_until(301);
    assert_eq!(h.told(), vec![(300, Open)]);
    assert_eq!(h.core.state(), VisitState::Waiting);
}

#[test]
fn billing_starts_when_both_sides_flow_and_the_slot_end_cuts() {
    let mut h = Harness::new(|t0| plan(t0, "0.25"), "100");
    h.input(310, |c, now| c.media_flowing(Side::Visitor, now));
    assert!(h.debits().is_empty(), "one side alone is not billed");
    h.both_flow(400);
    assert_eq!(h.core.state(), VisitState::Connected);
    h.run_to_end();
    // Connected 400 s → 1500 s (the slot's end): 1,100 s, 19 increments begun (0..1080 s).
    let debits = h.debits();
    assert_eq!(debits.len(), 19);
    assert_eq!(debits.first(), Some(&(400, 1)));
    assert_eq!(debits.last(), Some(&(400 + 18 * 60, 19)));
    assert_eq!(h.core.charging().charged(), m("4.75"));
    assert_eq!(
        h.told(),
        vec![
            (300, Open),
            (400, StartRecording),
            (1380, Warn(WarningReason::MaxDuration)),
            (1500, Ended(EndReason::SlotEnded)),
        ]
    );
    assert_eq!(h.core.connected_for(h.now), secs(1100));
}

#[test]
fn funds_run_out_with_a_warning_and_the_visit_is_cut() {
    let mut h = Harness::new(|t0| plan(t0, "0.25"), "1.00");
    h.both_flow(300);
    // The countdown shows the money's end (four minutes from 300 s), not the slot's.
    assert_eq!(h.core.remaining(h.t0 + secs(310)), secs(230));
    h.run_to_end();
    // Four paid; the fifth asked for and refused (the ledger decides the cut).
    assert_eq!(h.debits().len(), 5);
    assert_eq!(h.core.charging().increments_charged(), 4);
    assert_eq!(h.balance, Money::ZERO);
    assert_eq!(
        h.told(),
        vec![
            (300, Open),
            (300, StartRecording),
            // Known at the last affordable increment's debit (the lead is longer than it).
            (480, Warn(WarningReason::FundsLow)),
            (540, Ended(EndReason::FundsExhausted)),
        ]
    );
}

#[test]
fn a_drop_pauses_billing_and_the_rejoin_resumes_it() {
    let mut h = Harness::new(|t0| plan(t0, "0.25"), "100");
    h.both_flow(300);
    h.input(330, |c, now| c.dropped(Side::Visitor, now)); // a reload
    h.input(630, |c, now| c.media_flowing(Side::Visitor, now));
    h.input(700, |c, now| c.left(Side::Inmate, now));
    // Billed: 300–330 and 630–700 = 100 s: increments at 300 and (30 s left of it) 660.
    assert_eq!(h.debits(), vec![(300, 1), (660, 2)]);
    assert_eq!(
        h.told(),
        vec![
            (300, Open),
            (300, StartRecording),
            (330, Paused(true)),
            (630, Paused(false)),
            (700, Ended(EndReason::InmateLeft)),
        ]
    );
    assert_eq!(h.core.connected_for(h.now), secs(100));
}

#[test]
fn a_side_that_never_connects_is_a_no_show_and_costs_nothing() {
    let mut h = Harness::new(|t0| plan(t0, "0.25"), "100");
    h.input(320, |c, now| c.media_flowing(Side::Inmate, now));
    h.run_to_end();
    assert!(h.debits().is_empty());
    assert_eq!(h.told(), vec![(300, Open), (900, Ended(EndReason::NoShow))]);
    assert_eq!(h.balance, m("100"));
}

#[test]
fn a_side_that_connected_once_is_no_no_show_after_a_drop() {
    let mut h = Harness::new(|t0| plan(t0, "0.25"), "100");
    h.both_flow(300);
    h.input(350, |c, now| c.dropped(Side::Inmate, now));
    h.run_to_end();
    assert_eq!(h.core.state(), VisitState::Ended(EndReason::SlotEnded));
    // Only the 50 s together were billed: one increment.
    assert_eq!(h.debits(), vec![(300, 1)]);
}

#[test]
fn privileged_visits_are_never_recorded() {
    let mut h = Harness::new(
        |t0| VisitPlan {
            privileged: true,
            ..plan(t0, "0")
        },
        "0",
    );
    h.both_flow(300);
    h.input(400, |c, now| c.left(Side::Visitor, now));
    assert!(!h.core.is_recording());
    assert!(!h.log.iter().any(|(_, a)| *a == StartRecording));
    // A free plan counts its increments for the CDR and moves no money.
    let counted = h
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Charging(Count { .. })))
        .count();
    assert_eq!(counted, 2);
    assert!(h.debits().is_empty());
    assert_eq!(h.core.state(), VisitState::Ended(EndReason::VisitorLeft));
}

#[test]
fn a_terminate_ends_it_once_and_later_inputs_are_ignored() {
    let mut h = Harness::new(|t0| plan(t0, "0.25"), "100");
    h.both_flow(300);
    h.input(400, |c, now| c.stop(now, EndReason::Terminated));
    h.input(401, |c, now| {
        c.left(Side::Visitor, now);
        c.dropped(Side::Inmate, now);
        c.media_flowing(Side::Inmate, now);
        c.stop(now, EndReason::System);
    });
    h.run_to_end();
    let ends: Vec<_> = h
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Ended(_)))
        .collect();
    assert_eq!(ends, vec![&(400, Ended(EndReason::Terminated))]);
    assert_eq!(h.core.poll_timeout(), None);
    assert_eq!(h.debits(), vec![(300, 1), (360, 2)]);
}

#[test]
fn an_unreadable_balance_ends_the_visit_unbilled() {
    let mut h = Harness::new(|t0| plan(t0, "0.25"), "100");
    h.run_until(300);
    h.core.media_flowing(Side::Visitor, h.now);
    h.core.media_flowing(Side::Inmate, h.now);
    // Answer the read with nothing (the database failed).
    while let Some(a) = h.core.poll_action() {
        h.log.push((h.at(), a));
        if a == ReadBalance {
            h.core.balance_read(h.now, None);
        }
    }
    assert_eq!(h.core.state(), VisitState::Ended(EndReason::System));
    assert!(h.debits().is_empty());
}

#[test]
fn a_drop_during_the_balance_read_starts_billing_paused() {
    let mut h = Harness::new(|t0| plan(t0, "0.25"), "100");
    h.run_until(300);
    h.core.media_flowing(Side::Visitor, h.now);
    h.core.media_flowing(Side::Inmate, h.now);
    let mut read = false;
    while let Some(a) = h.core.poll_action() {
        h.log.push((h.at(), a));
        if a == ReadBalance {
            read = true;
        }
    }
    assert!(read);
    h.core.dropped(Side::Visitor, h.now);
    h.core.balance_read(h.now, Some(h.balance));
    h.drain();
    assert!(h.core.charging().is_paused());
    h.input(500, |c, now| c.left(Side::Inmate, now));
    // Increment 1 began with billing (the start is charged in full, as for calls); nothing
    // more while apart.
    assert_eq!(h.debits(), vec![(300, 1)]);
}

#[test]
fn a_visit_created_late_opens_at_once_and_one_past_its_end_ends() {
    let t0 = epoch();
    let p = plan(t0, "0.25");
    let mut core = VisitCore::new(p, t0 + secs(400)).unwrap();
    assert_eq!(core.poll_action(), Some(Open));
    let mut late = VisitCore::new(p, t0 + secs(2000)).unwrap();
    assert_eq!(late.poll_action(), Some(Open));
    assert_eq!(late.poll_action(), Some(Ended(EndReason::SlotEnded)));
    assert_eq!(core.remaining(t0 + secs(1400)), secs(100));
}
