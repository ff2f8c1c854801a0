//! Charging in virtual time: the clock only moves to the machine's next deadline
//! (quinn's `Pair::step`), so an hour-long call runs in microseconds.

use super::*;
use crate::clock::epoch;
use proptest::prelude::*;
use ChargingAction::*;

fn m(s: &str) -> Money {
    s.parse().unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn plan(cost: &str, increment: u64, max: u64, lead: u64) -> ChargingPlan {
    ChargingPlan {
        cost_per_increment: m(cost),
        increment: secs(increment),
        max_duration: secs(max),
        warning_lead: secs(lead),
        debit_timeout: secs(5),
    }
}

/// A driver with a fake ledger that answers debits at once (unless `ledger_silent`).
struct Harness {
    machine: Charging,
    t0: Instant,
    now: Instant,
    balance: Money,
    ledger_silent: bool,
    /// Every action with the virtual time (since start) it was emitted at.
    log: Vec<(Duration, ChargingAction)>,
    /// The balance when a cut was drained.
    balance_at_cut: Option<Money>,
}

impl Harness {
    fn new(plan: ChargingPlan, balance: &str) -> Harness {
        let t0 = epoch();
        Harness {
            machine: Charging::new(plan).unwrap(),
            t0,
            now: t0,
            balance: m(balance),
            ledger_silent: false,
            log: Vec::new(),
            balance_at_cut: None,
        }
    }

    fn start(mut self) -> Harness {
        self.machine.start(self.now, self.balance);
        self.drain();
        self
    }

    fn drain(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            self.log.push((self.now - self.t0, action));
            match action {
                Debit { increment, amount } => self.pay(increment, amount),
                Cut { .. } => self.balance_at_cut = Some(self.balance),
                CheckBalance { after_increment } if !self.ledger_silent => {
                    self.machine
                        .balance_checked(self.now, after_increment, Some(self.balance));
                }
                _ => {}
            }
        }
    }

    fn pay(&mut self, increment: u32, amount: Money) {
        if self.ledger_silent {
            return;
        }
        if self.balance >= amount {
            self.balance = self.balance - amount;
            self.machine
                .debit_succeeded(self.now, increment, self.balance);
        } else {
            self.machine.debit_refused(self.now, increment);
        }
    }

    /// Runs every deadline strictly before `t` (inputs at `t` come before timers at `t`),
    /// then moves the clock to `t`.
    fn run_until(&mut self, t: Duration) {
        let end = self.t0 + t;
        while let Some(at) = self.machine.poll_timeout().filter(|&at| at < end) {
            self.step_to(at);
        }
        self.now = end;
    }

    fn run_to_end(&mut self) {
        while let Some(at) = self.machine.poll_timeout() {
            self.step_to(at);
        }
    }

    fn step_to(&mut self, at: Instant) {
        self.now = self.now.max(at);
        self.machine.handle_timeout(self.now);
        self.drain();
    }

    fn hang_up_at(&mut self, t: Duration) {
        self.run_until(t);
        self.machine.hung_up(self.now);
        self.drain();
    }

    fn pause_at(&mut self, t: Duration) {
        self.run_until(t);
        self.machine.pause(self.now);
        self.drain();
    }

    fn resume_at(&mut self, t: Duration) {
        self.run_until(t);
        self.machine.resume(self.now);
        self.drain();
    }

    /// Debits asked for (paid or refused), with when.
    fn debits(&self) -> Vec<(u64, u32)> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                Debit { increment, .. } => Some((t.as_secs(), *increment)),
                _ => None,
            })
            .collect()
    }

    /// Warnings and cuts: what the parties hear of billing.
    fn others(&self) -> Vec<(u64, ChargingAction)> {
        self.log
            .iter()
            .filter(|(_, a)| !matches!(a, Debit { .. } | CheckBalance { .. } | Count { .. }))
            .map(|(t, a)| (t.as_secs(), *a))
            .collect()
    }
}

#[test]
fn sixty_one_minute_call_is_61_increments() {
    let mut h = Harness::new(plan("0.021", 60, 7200, 60), "100").start();
    h.hang_up_at(secs(61 * 60));
    let expected: Vec<(u64, u32)> = (1..=61).map(|k| (u64::from(k - 1) * 60, k)).collect();
    assert_eq!(h.debits(), expected);
    assert_eq!(h.machine.increments_charged(), 61);
    assert_eq!(h.machine.charged(), m("1.281"));
    assert_eq!(h.balance, m("98.719"));
    assert_eq!(h.others(), vec![], "no warning, no cut");
    assert_eq!(h.machine.state(), ChargingState::HungUp);
    assert_eq!(h.machine.poll_timeout(), None);
}

#[test]
fn a_millisecond_past_61_minutes_is_62_increments() {
    let mut h = Harness::new(plan("0.021", 60, 7200, 60), "100").start();
    h.hang_up_at(secs(61 * 60) + Duration::from_millis(1));
    assert_eq!(h.machine.increments_charged(), 62);
    assert_eq!(h.machine.charged(), m("1.302"));
}

#[test]
fn warns_before_the_last_affordable_increment_and_cuts_at_its_end() {
    // 0.11 pays 5 increments of 0.021 (0.105); 0.005 is left.
    let mut h = Harness::new(plan("0.021", 60, 7200, 30), "0.11").start();
    h.run_to_end();
    // The sixth is asked for and refused: the refusal is the cut.
    assert_eq!(
        h.debits(),
        vec![(0, 1), (60, 2), (120, 3), (180, 4), (240, 5), (300, 6)]
    );
    assert_eq!(h.machine.increments_charged(), 5);
    assert_eq!(
        h.others(),
        vec![
            (
                270,
                PlayWarning {
                    reason: WarningReason::FundsLow
                }
            ),
            (
                300,
                Cut {
                    reason: CutReason::FundsExhausted
                }
            ),
        ]
    );
    assert_eq!(h.machine.charged(), m("0.105"));
    assert_eq!(h.balance, m("0.005"));
    assert_eq!(
        h.machine.state(),
        ChargingState::Cut(CutReason::FundsExhausted)
    );
}

#[test]
fn a_lead_longer_than_the_increment_warns_at_once() {
    let mut h = Harness::new(plan("0.021", 60, 7200, 90), "0.042").start();
    h.run_to_end();
    assert_eq!(h.debits(), vec![(0, 1), (60, 2), (120, 3)]);
    assert_eq!(h.machine.increments_charged(), 2);
    assert_eq!(
        h.others(),
        vec![
            (
                60,
                PlayWarning {
                    reason: WarningReason::FundsLow
                }
            ),
            (
                120,
                Cut {
                    reason: CutReason::FundsExhausted
                }
            ),
        ]
    );
}

#[test]
fn six_second_increments() {
    // $0.021/min in 6 s increments: 0.0021 each; $0.01 pays 4 of them (24 s).
    let tariff = Tariff::new(m("0.021"), 6).unwrap();
    let p = ChargingPlan::for_tariff(&tariff, secs(900), secs(5), secs(2));
    let mut h = Harness::new(p, "0.01").start();
    h.run_to_end();
    assert_eq!(h.debits(), vec![(0, 1), (6, 2), (12, 3), (18, 4), (24, 5)]);
    assert_eq!(h.machine.charged(), m("0.0084"));
    assert_eq!(
        h.others(),
        vec![
            (
                19,
                PlayWarning {
                    reason: WarningReason::FundsLow
                }
            ),
            (
                24,
                Cut {
                    reason: CutReason::FundsExhausted
                }
            ),
        ]
    );
}

#[test]
fn cut_at_maximum_duration_with_its_warning() {
    let mut h = Harness::new(plan("0.021", 60, 600, 60), "100").start();
    h.run_to_end();
    let expected: Vec<(u64, u32)> = (1..=10).map(|k| (u64::from(k - 1) * 60, k)).collect();
    assert_eq!(
        h.debits(),
        expected,
        "no debit for an increment starting at 10:00"
    );
    assert_eq!(
        h.others(),
        vec![
            (
                540,
                PlayWarning {
                    reason: WarningReason::MaxDuration
                }
            ),
            (
                600,
                Cut {
                    reason: CutReason::MaxDuration
                }
            ),
        ]
    );
    assert_eq!(h.machine.increments_charged(), 10);
}

#[test]
fn a_partial_last_increment_before_the_maximum_is_charged_in_full() {
    let mut h = Harness::new(plan("0.021", 60, 630, 60), "100").start();
    h.run_to_end();
    assert_eq!(h.debits().last(), Some(&(600, 11)));
    assert_eq!(
        h.others().last(),
        Some(&(
            630,
            Cut {
                reason: CutReason::MaxDuration
            }
        ))
    );
}

#[test]
fn funds_ending_exactly_at_the_maximum_is_a_maximum_duration_cut() {
    let mut h = Harness::new(plan("0.021", 60, 300, 30), "0.105").start();
    h.run_to_end();
    assert_eq!(h.debits().len(), 5);
    assert_eq!(
        h.others(),
        vec![
            (
                270,
                PlayWarning {
                    reason: WarningReason::MaxDuration
                }
            ),
            (
                300,
                Cut {
                    reason: CutReason::MaxDuration
                }
            ),
        ]
    );
}

#[test]
fn a_refused_debit_cuts_at_once_and_is_not_charged() {
    let mut h = Harness::new(plan("0.021", 60, 7200, 30), "1.00").start();
    h.run_until(secs(30));
    h.balance = m("0.01"); // another session spent the account meanwhile
    h.run_to_end();
    assert_eq!(h.debits(), vec![(0, 1), (60, 2)]);
    assert_eq!(
        h.others(),
        vec![(
            60,
            Cut {
                reason: CutReason::FundsExhausted
            }
        )]
    );
    assert_eq!(h.machine.increments_charged(), 1);
    assert_eq!(h.machine.charged(), m("0.021"));
}

#[test]
fn an_unconfirmed_debit_times_out() {
    let mut h = Harness::new(plan("0.021", 60, 7200, 30), "1.00");
    h.ledger_silent = true;
    let mut h = h.start();
    h.run_to_end();
    assert_eq!(h.debits(), vec![(0, 1)]);
    assert_eq!(
        h.others(),
        vec![(
            5,
            Cut {
                reason: CutReason::DebitTimeout
            }
        )]
    );
    assert_eq!(h.machine.charged(), Money::ZERO);
    // The ledger commits late: the books follow, nothing else happens.
    h.machine.debit_succeeded(h.now + secs(1), 1, m("0.979"));
    assert_eq!(h.machine.charged(), m("0.021"));
    assert_eq!(h.machine.poll_action(), None);
    assert_eq!(h.machine.poll_timeout(), None);
}

#[test]
fn a_confirmation_after_the_increment_ended_debits_the_next_at_once() {
    let mut p = plan("0.021", 60, 7200, 30);
    p.debit_timeout = secs(90);
    let t0 = epoch();
    let mut c = Charging::new(p).unwrap();
    c.start(t0, m("1"));
    assert_eq!(
        c.poll_action(),
        Some(Debit {
            increment: 1,
            amount: m("0.021")
        })
    );
    let late = t0 + secs(70);
    c.debit_succeeded(late, 1, m("0.979"));
    assert_eq!(c.poll_timeout(), Some(t0 + secs(60)), "already due");
    c.handle_timeout(late);
    assert_eq!(
        c.poll_action(),
        Some(Debit {
            increment: 2,
            amount: m("0.021")
        })
    );
    assert_eq!(c.timer(Timer::DebitTimeout), Some(late + secs(90)));
}

#[test]
fn hang_up_mid_increment_charges_only_started_increments() {
    let mut h = Harness::new(plan("0.021", 60, 7200, 30), "1.00").start();
    h.hang_up_at(secs(90));
    assert_eq!(h.debits(), vec![(0, 1), (60, 2)]);
    assert_eq!(h.machine.charged(), m("0.042"));
    assert_eq!(h.others(), vec![]);
    assert_eq!(h.machine.poll_timeout(), None);
}

#[test]
fn inputs_after_a_cut_are_ignored() {
    let mut h = Harness::new(plan("0.021", 60, 7200, 30), "0.021").start();
    h.run_to_end();
    let state = h.machine.state();
    let charged = h.machine.charged();
    let later = h.now + secs(3600);
    h.machine.start(later, m("100"));
    h.machine.debit_succeeded(later, 2, m("100"));
    h.machine.debit_refused(later, 2);
    h.machine.handle_timeout(later);
    h.machine.hung_up(later);
    assert_eq!(h.machine.poll_action(), None);
    assert_eq!(h.machine.poll_timeout(), None);
    assert_eq!(h.machine.state(), state);
    assert_eq!(h.machine.charged(), charged);
}

#[test]
fn cannot_pay_the_first_increment() {
    let h = Harness::new(plan("0.021", 60, 7200, 30), "0.02").start();
    assert_eq!(h.debits(), vec![]);
    assert_eq!(
        h.others(),
        vec![(
            0,
            Cut {
                reason: CutReason::FundsExhausted
            }
        )]
    );
    assert_eq!(h.machine.charged(), Money::ZERO);
}

#[test]
fn zero_maximum_duration_cuts_before_any_debit() {
    let h = Harness::new(plan("0.021", 60, 0, 30), "1").start();
    assert_eq!(h.debits(), vec![]);
    assert_eq!(
        h.others().last(),
        Some(&(
            0,
            Cut {
                reason: CutReason::MaxDuration
            }
        ))
    );
}

#[test]
fn free_plans_count_increments_without_debits() {
    let mut h = Harness::new(plan("0", 60, 300, 60), "0").start();
    h.run_to_end();
    assert_eq!(h.debits(), vec![]);
    assert_eq!(h.machine.increments_charged(), 5);
    // Each is announced for the CDR as it begins.
    let counted: Vec<(u64, u32)> = h
        .log
        .iter()
        .filter_map(|(t, a)| match a {
            Count { increment } => Some((t.as_secs(), *increment)),
            _ => None,
        })
        .collect();
    assert_eq!(counted, vec![(0, 1), (60, 2), (120, 3), (180, 4), (240, 5)]);
    assert_eq!(h.machine.charged(), Money::ZERO);
    assert_eq!(
        h.others(),
        vec![
            (
                240,
                PlayWarning {
                    reason: WarningReason::MaxDuration
                }
            ),
            (
                300,
                Cut {
                    reason: CutReason::MaxDuration
                }
            ),
        ]
    );
}

#[test]
fn duplicate_and_stray_confirmations_are_ignored() {
    let t0 = epoch();
    let mut c = Charging::new(plan("0.021", 60, 7200, 30)).unwrap();
    c.debit_succeeded(t0, 1, m("5")); // before start
    c.start(t0, m("1"));
    assert_eq!(
        c.poll_action(),
        Some(Debit {
            increment: 1,
            amount: m("0.021")
        })
    );
    c.debit_succeeded(t0, 2, m("5"));
    assert_eq!(c.pending_debit(), Some(1));
    c.debit_succeeded(t0, 1, m("0.979"));
    c.debit_succeeded(t0, 1, m("0.958"));
    assert_eq!(c.charged(), m("0.021"));
    assert_eq!(c.more_affordable(), 46);
    assert_eq!(c.timer(Timer::NextIncrement), Some(t0 + secs(60)));
    assert_eq!(c.poll_action(), None);
}

#[test]
fn a_hang_up_drops_an_undrained_debit() {
    let t0 = epoch();
    let mut c = Charging::new(plan("0.021", 60, 7200, 30)).unwrap();
    c.start(t0, m("1"));
    c.hung_up(t0);
    assert_eq!(c.poll_action(), None);
    assert_eq!(c.pending_debit(), None);
    assert_eq!(c.increments_charged(), 0);
}

/// Issue 9, item 7, as found: two increments affordable (60 s each, the default 60 s
/// lead), a 5.00 deposit 8 s into the second. The warning played when the second was
/// debited (true then); the call is not cut at the end of the second: the third is
/// debited and paid, and so on until the hang-up.
#[test]
fn a_deposit_during_the_last_paid_increment_keeps_the_call_going() {
    let mut h = Harness::new(plan("0.021", 60, 7200, 60), "0.042").start();
    h.run_until(secs(68));
    assert_eq!(
        h.machine.more_affordable(),
        0,
        "the second is the last affordable"
    );
    h.balance = h.balance + m("5.00");
    h.hang_up_at(secs(300));
    assert_eq!(
        h.debits(),
        vec![(0, 1), (60, 2), (120, 3), (180, 4), (240, 5)]
    );
    assert_eq!(h.machine.increments_charged(), 5);
    assert_eq!(h.machine.charged(), m("0.105"));
    assert_eq!(h.balance, m("4.937"));
    let warn = PlayWarning {
        reason: WarningReason::FundsLow,
    };
    assert_eq!(h.others(), vec![(60, warn)], "no cut");
    assert_eq!(h.machine.state(), ChargingState::HungUp);
}

/// The deposit made before the warning is due (a 30 s lead: due at 90 s): the balance is
/// checked then, pays on, and the warning is not played at all.
#[test]
fn a_deposit_before_the_warning_silences_it() {
    let mut h = Harness::new(plan("0.021", 60, 7200, 30), "0.042").start();
    h.run_until(secs(68));
    assert_eq!(h.machine.timer(Timer::Warning), Some(h.t0 + secs(90)));
    h.balance = h.balance + m("5.00");
    h.hang_up_at(secs(200));
    let checks: Vec<(u64, ChargingAction)> = h
        .log
        .iter()
        .filter(|(_, a)| matches!(a, CheckBalance { .. }))
        .map(|(t, a)| (t.as_secs(), *a))
        .collect();
    assert_eq!(checks, vec![(90, CheckBalance { after_increment: 2 })]);
    assert_eq!(h.others(), vec![], "no warning after the deposit, no cut");
    assert_eq!(h.machine.increments_charged(), 4);
}

/// The same deposit made after the warning played (it was true then): the call goes on
/// past the end it announced, and the warning comes again before the new last affordable
/// increment; the refusal of the next debit cuts.
#[test]
fn after_a_deposit_extends_a_warned_call_the_warning_comes_again() {
    let mut h = Harness::new(plan("0.021", 60, 7200, 30), "0.042").start();
    h.run_until(secs(100));
    h.balance = h.balance + m("0.021"); // exactly one more increment
    h.run_to_end();
    assert_eq!(h.debits(), vec![(0, 1), (60, 2), (120, 3), (180, 4)]);
    assert_eq!(h.machine.increments_charged(), 3);
    let warn = PlayWarning {
        reason: WarningReason::FundsLow,
    };
    let cut = Cut {
        reason: CutReason::FundsExhausted,
    };
    assert_eq!(h.others(), vec![(90, warn), (150, warn), (180, cut)]);
    assert_eq!(h.balance, Money::ZERO);
}

/// With a lead at least one increment long the warning is due when the last affordable
/// increment is confirmed: the balance that confirmation reports is fresh, so it plays
/// at once without asking the ledger again.
#[test]
fn a_warning_due_at_a_confirmation_plays_without_a_balance_check() {
    let mut h = Harness::new(plan("0.021", 60, 7200, 60), "0.042").start();
    h.run_to_end();
    let checks = h
        .log
        .iter()
        .filter(|(_, a)| matches!(a, CheckBalance { .. }))
        .count();
    assert_eq!(checks, 0);
    assert_eq!(
        h.others().first(),
        Some(&(
            60,
            PlayWarning {
                reason: WarningReason::FundsLow
            }
        ))
    );
}

/// A balance check answered after a newer debit is stale: ignored. An unreadable balance
/// leaves the prediction standing: the warning plays.
#[test]
fn stale_and_unreadable_balance_checks() {
    let t0 = epoch();
    let mut c = Charging::new(plan("0.021", 60, 7200, 30)).unwrap();
    c.start(t0, m("0.021"));
    assert!(matches!(c.poll_action(), Some(Debit { increment: 1, .. })));
    c.debit_succeeded(t0, 1, Money::ZERO);
    assert_eq!(c.poll_action(), None);
    c.handle_timeout(t0 + secs(30));
    assert_eq!(c.poll_action(), Some(CheckBalance { after_increment: 1 }));
    // No answer yet; the increment ends and the next debit is asked for and paid (a
    // deposit arrived).
    c.handle_timeout(t0 + secs(60));
    assert!(matches!(c.poll_action(), Some(Debit { increment: 2, .. })));
    c.debit_succeeded(t0 + secs(60), 2, m("1.00"));
    c.balance_checked(t0 + secs(61), 1, Some(Money::ZERO));
    assert_eq!(c.poll_action(), None, "the stale answer changes nothing");
    assert_eq!(c.more_affordable(), 47);

    let mut c = Charging::new(plan("0.021", 60, 7200, 30)).unwrap();
    c.start(t0, m("0.021"));
    c.poll_action();
    c.debit_succeeded(t0, 1, Money::ZERO);
    c.handle_timeout(t0 + secs(30));
    assert_eq!(c.poll_action(), Some(CheckBalance { after_increment: 1 }));
    c.balance_checked(t0 + secs(30), 1, None);
    assert_eq!(
        c.poll_action(),
        Some(PlayWarning {
            reason: WarningReason::FundsLow
        })
    );
}

#[test]
fn bad_plans_are_refused() {
    assert_eq!(
        Charging::new(plan("0.021", 0, 60, 0)).unwrap_err(),
        ChargingError::ZeroIncrement
    );
    assert!(matches!(
        Charging::new(plan("-1", 60, 60, 0)),
        Err(ChargingError::NegativeCost { .. })
    ));
    let mut no_timeout = plan("0.021", 60, 60, 0);
    no_timeout.debit_timeout = Duration::ZERO;
    assert_eq!(
        Charging::new(no_timeout).unwrap_err(),
        ChargingError::ZeroDebitTimeout
    );
}

#[test]
fn huge_durations_do_not_panic() {
    let mut p = plan("0.021", 60, 0, 30);
    p.max_duration = Duration::MAX;
    p.debit_timeout = Duration::MAX;
    p.warning_lead = Duration::MAX;
    let mut h = Harness::new(p, "0.05").start();
    h.run_to_end();
    assert_eq!(h.machine.increments_charged(), 2);
    assert_eq!(
        h.machine.state(),
        ChargingState::Cut(CutReason::FundsExhausted)
    );
}

#[test]
fn a_pause_mid_increment_uses_up_the_paid_rest_after_the_resume() {
    // 60 s increments; paused from 90 s to 150 s: increment 2 ([60, 120) of billed time)
    // still owes 30 s after the resume, so increment 3 begins at 180 s of wall time.
    let mut h = Harness::new(plan("0.50", 60, 3600, 0), "100").start();
    h.pause_at(secs(90));
    assert!(h.machine.is_paused());
    h.resume_at(secs(150));
    h.hang_up_at(secs(250));
    assert_eq!(h.debits(), vec![(0, 1), (60, 2), (180, 3), (240, 4)]);
    assert_eq!(h.machine.charged(), m("2.00"));
    assert_eq!(h.machine.paused_for(h.now), secs(60));
}

#[test]
fn no_increment_begins_while_paused() {
    let mut h = Harness::new(plan("0.50", 60, 3600, 0), "100").start();
    h.pause_at(secs(30));
    h.hang_up_at(secs(1000));
    assert_eq!(
        h.debits(),
        vec![(0, 1)],
        "only the increment begun before the pause"
    );
    assert_eq!(h.machine.paused_for(h.now), secs(970));
}

#[test]
fn a_resume_at_the_boundary_debits_at_once() {
    // Paused exactly at the end of increment 1 (inputs before timers at one instant: the
    // debit of increment 2 was not yet due), resumed 100 s later: increment 2 begins then,
    // on the timer due at the resume (after any other input at that instant).
    let mut h = Harness::new(plan("0.50", 60, 3600, 0), "100").start();
    h.pause_at(secs(60));
    h.resume_at(secs(160));
    h.run_until(secs(161));
    assert_eq!(h.debits(), vec![(0, 1), (160, 2)]);
    h.hang_up_at(secs(200));
    assert_eq!(h.machine.increments_charged(), 2);
}

#[test]
fn the_maximum_duration_is_wall_time_through_pauses() {
    // A 10-minute slot: the cut comes at 600 s of wall time however long the pause, with
    // its warning, and no debit for time that was never billed.
    let mut h = Harness::new(plan("1", 60, 600, 60), "100").start();
    h.pause_at(secs(100));
    h.resume_at(secs(400));
    h.run_to_end();
    assert_eq!(
        h.machine.state(),
        ChargingState::Cut(CutReason::MaxDuration)
    );
    assert_eq!(
        h.others(),
        vec![
            (
                540,
                PlayWarning {
                    reason: WarningReason::MaxDuration
                }
            ),
            (
                600,
                Cut {
                    reason: CutReason::MaxDuration
                }
            ),
        ]
    );
    // Billed time: 100 s before the pause + 200 s after = 300 s: 5 increments.
    assert_eq!(
        h.debits(),
        vec![(0, 1), (60, 2), (420, 3), (480, 4), (540, 5)]
    );
}

#[test]
fn funds_run_out_on_billed_time_and_the_warning_waits_for_the_resume() {
    // $3 at $1 a minute: 3 increments. Paused inside the last one, before its warning:
    // no warning and no cut while apart; both come on billed time after the resume.
    let mut h = Harness::new(plan("1", 60, 3600, 30), "3").start();
    h.pause_at(secs(140));
    h.run_until(secs(500));
    assert!(
        h.others().is_empty(),
        "nothing is due while paused: {:?}",
        h.others()
    );
    h.resume_at(secs(500));
    h.run_to_end();
    // Increment 3 runs [120, 180) billed = [120, 140) + [500, 540) wall.
    assert_eq!(
        h.others(),
        vec![
            (
                510,
                PlayWarning {
                    reason: WarningReason::FundsLow
                }
            ),
            (
                540,
                Cut {
                    reason: CutReason::FundsExhausted
                }
            ),
        ]
    );
    assert_eq!(h.machine.charged(), m("3"));
}

#[test]
fn a_debit_confirmed_during_a_pause_is_charged_and_waits_for_the_resume() {
    let mut h = Harness::new(plan("1", 60, 3600, 0), "100");
    h.ledger_silent = true;
    let mut h = h.start();
    h.pause_at(secs(1));
    h.machine.debit_succeeded(h.now, 1, m("99"));
    h.drain();
    assert_eq!(h.machine.charged(), m("1"));
    assert_eq!(
        h.machine.timer(Timer::NextIncrement),
        None,
        "no increment armed while paused"
    );
    h.ledger_silent = false;
    h.resume_at(secs(31));
    h.hang_up_at(secs(100));
    // 1 s billed before the pause; increment 2 begins 59 s after the resume.
    assert_eq!(h.debits(), vec![(0, 1), (90, 2)]);
}

#[test]
fn free_plans_pause_their_count_too() {
    let mut h = Harness::new(plan("0", 60, 3600, 0), "0").start();
    h.pause_at(secs(30));
    h.resume_at(secs(300));
    h.hang_up_at(secs(335));
    let counted: Vec<_> = h
        .log
        .iter()
        .filter_map(|(t, a)| match a {
            Count { increment } => Some((t.as_secs(), *increment)),
            _ => None,
        })
        .collect();
    assert_eq!(counted, vec![(0, 1), (330, 2)]);
}

#[test]
fn pause_and_resume_are_ignored_out_of_place() {
    let mut h = Harness::new(plan("1", 60, 3600, 0), "100");
    h.machine.pause(h.now); // idle: ignored
    h.machine.resume(h.now);
    let mut h = h.start();
    assert!(!h.machine.is_paused());
    h.resume_at(secs(10)); // not paused: ignored
    h.pause_at(secs(20));
    h.pause_at(secs(40)); // already paused: the first pause stands
    h.resume_at(secs(50));
    h.hang_up_at(secs(100));
    assert_eq!(h.machine.paused_for(h.now), secs(30));
    h.machine.resume(h.now);
    h.machine.pause(h.now); // ended: ignored
    assert!(!h.machine.is_paused());
    assert_eq!(h.debits(), vec![(0, 1), (90, 2)]);
}

proptest! {
    #[test]
    fn never_overcharges(
        balance in 0i64..50_000,
        cost in 0i64..3_000,
        increment in 1u64..120,
        max in 0u64..5_400,
        lead in 0u64..120,
        hang_up in 0u64..6_000,
        drain_at in 0u64..6_000,
        drain in 0i64..50_000,
        deposit_at in 0u64..6_000,
        deposit in 0i64..20_000,
    ) {
        let p = ChargingPlan {
            cost_per_increment: Money::from_minor(cost),
            increment: secs(increment),
            max_duration: secs(max),
            warning_lead: secs(lead),
            debit_timeout: secs(3),
        };
        let initial = Money::from_minor(balance);
        let mut h = Harness::new(p, "0");
        h.balance = initial;
        let mut h = h.start();
        // Another spender takes `drain` (if available) at `drain_at`; a family deposits
        // `deposit` at `deposit_at`.
        let mut events = [(drain_at.min(hang_up), true), (deposit_at.min(hang_up), false)];
        events.sort();
        let mut drained = Money::ZERO;
        let deposited = Money::from_minor(deposit);
        for (at, is_drain) in events {
            h.run_until(secs(at));
            if is_drain {
                drained = Money::from_minor(drain.min(h.balance.to_minor()));
                h.balance = h.balance - drained;
            } else {
                h.balance = h.balance + deposited;
            }
        }
        h.hang_up_at(secs(hang_up));

        let c = &h.machine;
        let n = c.increments_charged();
        prop_assert_eq!(c.charged(), p.cost_per_increment.times(u64::from(n)));
        prop_assert!(c.charged() <= initial + deposited);
        prop_assert!(!h.balance.is_negative());
        prop_assert_eq!(initial + deposited - h.balance, c.charged() + drained);
        // A funds cut only when the ledger could not pay the next increment then.
        if c.state() == ChargingState::Cut(CutReason::FundsExhausted) {
            let left = h.balance_at_cut.unwrap_or_default();
            prop_assert!(left < p.cost_per_increment, "cut with {} left", left);
        }
        // Only increments that started before the end are charged.
        // (increment 1 starts with billing, so even an instant hang-up has one).
        let bound = if max == 0 { 0 } else { hang_up.min(max).div_ceil(increment).max(1) };
        prop_assert!(u64::from(n) <= bound, "{} increments, bound {}", n, bound);
        // At most one cut, and it is the last action; each warning at most once.
        let cuts = h.log.iter().filter(|(_, a)| matches!(a, Cut { .. })).count();
        prop_assert!(cuts <= 1);
        if cuts == 1 {
            let last_is_cut = matches!(h.log.last(), Some((_, Cut { .. })));
            prop_assert!(last_is_cut);
        }
        // Each warning at most once, the funds warning once more after the deposit.
        let extra = usize::from(deposit > 0);
        for (reason, most) in [(WarningReason::FundsLow, 1 + extra), (WarningReason::MaxDuration, 1)] {
            let plays = h.log.iter().filter(|(_, a)| *a == PlayWarning { reason }).count();
            prop_assert!(plays <= most, "{:?} played {} times", reason, plays);
        }
    }
}

proptest! {
    /// With a pause anywhere (also none, or one never resumed), only increments that began
    /// on billed time are charged, and never more than the account held.
    #[test]
    fn pauses_never_charge_time_apart(
        balance in 0i64..50_000,
        cost in 0i64..3_000,
        increment in 1u64..120,
        max in 0u64..3_000,
        lead in 0u64..120,
        pause_at in 0u64..3_000,
        pause_len in 0u64..3_000,
        hang_up in 0u64..4_000,
    ) {
        let p = ChargingPlan {
            cost_per_increment: Money::from_minor(cost),
            increment: secs(increment),
            max_duration: secs(max),
            warning_lead: secs(lead),
            debit_timeout: secs(3),
        };
        let initial = Money::from_minor(balance);
        let mut h = Harness::new(p, "0");
        h.balance = initial;
        let mut h = h.start();
        let pause_at = pause_at.min(hang_up);
        let resume_at = (pause_at + pause_len).min(hang_up);
        h.pause_at(secs(pause_at));
        h.resume_at(secs(resume_at));
        h.hang_up_at(secs(hang_up));

        let c = &h.machine;
        let n = c.increments_charged();
        prop_assert_eq!(c.charged(), p.cost_per_increment.times(u64::from(n)));
        prop_assert!(c.charged() <= initial);
        prop_assert_eq!(initial - h.balance, c.charged());
        // Billed time: the session's wall time (to the hang-up or the maximum) less the
        // pause (which ends at the resume, the hang-up or the maximum, whichever first).
        let end = hang_up.min(max);
        let apart = resume_at.min(end).saturating_sub(pause_at.min(end));
        let billed = end - apart;
        let bound = if max == 0 { 0 } else { billed.div_ceil(increment).max(1) };
        prop_assert!(u64::from(n) <= bound, "{} increments, billed {} s, bound {}", n, billed, bound);
        // No debit is asked for inside the pause.
        for (t, _) in h.log.iter().filter(|(_, a)| matches!(a, Debit { .. } | Count { .. })) {
            let t = t.as_secs();
            prop_assert!(!(t > pause_at && t < resume_at), "a debit at {} s inside the pause {}..{}", t, pause_at, resume_at);
        }
    }
}
