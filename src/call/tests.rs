//! The call machine in virtual time: every branch of the call flow in `docs/behaviour.md`.

use super::*;
use crate::clock::epoch;

fn plan(cost: &str, inc_secs: u64, max_secs: u64) -> ChargingPlan {
    ChargingPlan {
        cost_per_increment: cost.parse().unwrap(),
        increment: Duration::from_secs(inc_secs),
        max_duration: Duration::from_secs(max_secs),
        warning_lead: Duration::from_secs(2),
        debit_timeout: Duration::from_secs(5),
    }
}

fn auth(privileged: bool, balance: &str, cost: &str) -> Destination {
    Destination::Authorized(Authorization {
        number: "+15551230001".into(),
        privileged,
        charging: plan(cost, 6, 1800),
        balance: balance.parse().unwrap(),
        account_id: "acct-inmate".into(),
    })
}

fn drain(c: &mut Call) -> Vec<CallAction> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn ended(actions: &[CallAction]) -> Option<&CallSummary> {
    actions.iter().find_map(|a| match a {
        CallAction::Ended(s) => Some(s),
        _ => None,
    })
}

fn plays(actions: &[CallAction], leg: Leg) -> Vec<PromptId> {
    actions
        .iter()
        .filter_map(|a| match a {
            CallAction::Play { leg: l, prompt } if *l == leg => Some(*prompt),
            _ => None,
        })
        .collect()
}

/// Keys `keys` on the handset (an ID, `#`, a PIN, `#`…); the actions that follow.
fn type_pin(c: &mut Call, now: Instant, keys: &str) -> Vec<CallAction> {
    for d in keys.chars() {
        c.digit(now, Leg::Handset, d);
    }
    drain(c)
}

fn check(calling_id: &str, pin: &str) -> CallAction {
    CallAction::CheckPin {
        calling_id: calling_id.into(),
        pin: Digits::from(pin.to_string()),
    }
}

/// A call up to the point the destination is being checked.
fn to_destination(t0: Instant) -> Call {
    to_destination_with(t0, CallTimers::default())
}

fn to_destination_with(t0: Instant, timers: CallTimers) -> Call {
    let mut c = Call::new(t0, "5551230001", timers);
    let a = drain(&mut c);
    assert_eq!(a[0], CallAction::AnswerHandset);
    assert_eq!(plays(&a, Leg::Handset), vec![PromptId::EnterId]);
    let a = type_pin(&mut c, t0, "100001#");
    assert_eq!(plays(&a, Leg::Handset), vec![PromptId::EnterPin]);
    assert_eq!(c.state(), CallState::CollectingPin);
    let a = type_pin(&mut c, t0, "1234#");
    assert!(a.contains(&check("100001", "1234")), "{a:?}");
    c.pin_checked(
        t0,
        PinVerdict::Valid {
            inmate_id: "inm_1".into(),
        },
    );
    let a = drain(&mut c);
    assert_eq!(
        a,
        vec![CallAction::CheckDestination {
            inmate_id: "inm_1".into(),
            dialed: "5551230001".into()
        }]
    );
    c
}

/// A call up to the announcement to the called party.
fn to_announcing(t0: Instant, d: Destination) -> Call {
    let mut c = to_destination(t0);
    c.destination_checked(t0, d);
    let a = drain(&mut c);
    assert!(
        a.contains(&CallAction::PlaceTrunkCall {
            number: "+15551230001".into()
        }),
        "{a:?}"
    );
    c.trunk_ringing(t0);
    assert_eq!(drain(&mut c), vec![CallAction::Ringback { on: true }]);
    c.trunk_answered(t0 + Duration::from_secs(3));
    let a = drain(&mut c);
    assert_eq!(c.state(), CallState::Announcing);
    assert_eq!(plays(&a, Leg::Trunk).len(), 1);
    c
}

/// Steps virtual time through the call, confirming every debit against `balance`, until
/// the call ends or `limit` passes, with both parties sending RTP all along. Returns all
/// actions with their times.
fn run(c: &mut Call, now: Instant, balance: Money, limit: Instant) -> Vec<(Instant, CallAction)> {
    run_with_media(c, now, balance, limit, |_, now| Some(now))
}

/// [`run`] where `heard(leg, now)` is what the media engine says at `now` of the leg's
/// last RTP packet; the driver reports it before every timeout, and so does this.
fn run_with_media(
    c: &mut Call,
    mut now: Instant,
    mut balance: Money,
    limit: Instant,
    heard: impl Fn(Leg, Instant) -> Option<Instant>,
) -> Vec<(Instant, CallAction)> {
    let mut log = Vec::new();
    loop {
        let actions = drain(c);
        let mut progressed = false;
        for a in actions {
            match &a {
                CallAction::Debit { increment, amount } => {
                    if balance >= *amount {
                        balance = balance - *amount;
                        c.debit_succeeded(now, *increment, balance);
                    } else {
                        c.debit_refused(now, *increment);
                    }
                    progressed = true;
                }
                CallAction::CheckBalance { after_increment } => {
                    c.balance_checked(now, *after_increment, Some(balance));
                    progressed = true;
                }
                CallAction::Play {
                    leg: Leg::Handset, ..
                } if c.state() == CallState::Ending => {
                    c.prompt_finished(now, Leg::Handset);
                    progressed = true;
                }
                _ => {}
            }
            log.push((now, a));
        }
        if c.is_ended() && !progressed {
            return log;
        }
        if !progressed {
            match c.poll_timeout() {
                Some(at) if at <= limit => {
                    now = at;
                    for leg in [Leg::Handset, Leg::Trunk] {
                        if let Some(h) = heard(leg, now) {
                            c.rtp_received(leg, h);
                        }
                    }
                    c.handle_timeout(now);
                }
                _ => return log,
            }
        }
    }
}

#[test]
fn funds_run_out_after_three_increments() {
    let t0 = epoch();
    let mut c = to_announcing(t0, auth(false, "0.03", "0.01"));
    let accept_at = t0 + Duration::from_secs(5);
    c.digit(accept_at, Leg::Trunk, '1');
    let log = run(
        &mut c,
        accept_at,
        "0.03".parse().unwrap(),
        t0 + Duration::from_secs(600),
    );
    let actions: Vec<CallAction> = log.iter().map(|(_, a)| a.clone()).collect();
    assert!(actions.contains(&CallAction::Bridge));
    assert!(actions
        .iter()
        .any(|a| matches!(a, CallAction::StartRecording { .. })));
    let debits: Vec<u32> = actions
        .iter()
        .filter_map(|a| match a {
            CallAction::Debit { increment, .. } => Some(*increment),
            _ => None,
        })
        .collect();
    // The fourth is asked for and refused: the ledger's refusal is the cut.
    assert_eq!(debits, vec![1, 2, 3, 4]);
    assert!(plays(&actions, Leg::Handset).contains(&PromptId::FundsWarning));
    assert!(plays(&actions, Leg::Handset).contains(&PromptId::FundsExhausted));
    assert!(
        plays(&actions, Leg::Trunk).contains(&PromptId::FundsExhausted),
        "both legs hear the notice"
    );
    assert!(actions.contains(&CallAction::Hangup { leg: Leg::Trunk }));
    assert!(actions.contains(&CallAction::Hangup { leg: Leg::Handset }));
    let s = ended(&actions).unwrap();
    assert_eq!(s.reason, EndReason::FundsExhausted);
    assert_eq!((s.increments, s.charged.to_string().as_str()), (3, "0.03"));
    // Cut exactly at the end of the third 6-second increment.
    let cut_at = log
        .iter()
        .find(|(_, a)| {
            matches!(
                a,
                CallAction::Play {
                    prompt: PromptId::FundsExhausted,
                    ..
                }
            )
        })
        .unwrap()
        .0;
    assert_eq!(cut_at - accept_at, Duration::from_secs(18));
    assert!(
        matches!(actions.last(), Some(CallAction::Ended(_))),
        "Ended is last"
    );
}

#[test]
fn three_wrong_pins_end_the_call_uncharged() {
    let t0 = epoch();
    let mut c = Call::new(t0, "5551230001", CallTimers::default());
    drain(&mut c);
    for attempt in 1..=3 {
        let a = type_pin(&mut c, t0, "100001#9999#");
        assert!(a.contains(&check("100001", "9999")));
        c.pin_checked(t0, PinVerdict::Wrong);
        let a = drain(&mut c);
        if attempt < 3 {
            assert_eq!(
                plays(&a, Leg::Handset),
                vec![PromptId::PinInvalid, PromptId::EnterId]
            );
        } else {
            assert_eq!(plays(&a, Leg::Handset), vec![PromptId::PinInvalid]);
        }
    }
    c.prompt_finished(t0, Leg::Handset);
    let a = drain(&mut c);
    let s = ended(&a).unwrap();
    assert_eq!((s.reason, s.increments), (EndReason::PinFailed, 0));
    assert!(!a
        .iter()
        .any(|x| matches!(x, CallAction::PlaceTrunkCall { .. })));
}

#[test]
fn silence_at_the_pin_prompt_counts_as_an_attempt() {
    let t0 = epoch();
    let mut c = Call::new(t0, "5551230001", CallTimers::default());
    drain(&mut c);
    let at = c.poll_timeout().unwrap();
    assert_eq!(at - t0, Duration::from_secs(10), "first-digit timeout");
    c.handle_timeout(at);
    assert_eq!(
        plays(&drain(&mut c), Leg::Handset),
        vec![PromptId::PinInvalid, PromptId::EnterId]
    );
    assert_eq!(c.state(), CallState::CollectingId);
}

#[test]
fn locked_out_hears_the_lockout_notice() {
    let t0 = epoch();
    let mut c = Call::new(t0, "5551230001", CallTimers::default());
    drain(&mut c);
    type_pin(&mut c, t0, "100001#1234#");
    c.pin_checked(t0, PinVerdict::Locked);
    let a = drain(&mut c);
    assert_eq!(plays(&a, Leg::Handset), vec![PromptId::PinLocked]);
    // The notice never reports finishing: the prompt guard ends the call anyway.
    let at = c.poll_timeout().unwrap();
    c.handle_timeout(at);
    assert_eq!(ended(&drain(&mut c)).unwrap().reason, EndReason::PinFailed);
}

#[test]
fn a_locked_account_hears_so_and_the_call_ends() {
    let t0 = epoch();
    let mut c = Call::new(t0, "5551230001", CallTimers::default());
    drain(&mut c);
    type_pin(&mut c, t0, "100001#1234#");
    c.pin_checked(t0, PinVerdict::AccountLocked);
    let a = drain(&mut c);
    assert_eq!(plays(&a, Leg::Handset), vec![PromptId::AccountLocked]);
    c.prompt_finished(t0, Leg::Handset);
    let s = ended(&drain(&mut c)).cloned().unwrap();
    assert_eq!((s.reason, s.inmate_id), (EndReason::PinFailed, None));
}

/// A PIN alone never reaches the database as a credential: with no ID keyed (`#` at
/// once, or silence) the entry is a wrong one, and the ID prompt comes back.
#[test]
fn a_pin_without_an_id_is_a_wrong_entry_and_never_checked() {
    let t0 = epoch();
    let mut c = Call::new(t0, "5551230001", CallTimers::default());
    drain(&mut c);
    let a = type_pin(&mut c, t0, "#");
    assert_eq!(
        plays(&a, Leg::Handset),
        vec![PromptId::PinInvalid, PromptId::EnterId]
    );
    assert_eq!(c.state(), CallState::CollectingId);
    // The ID times out after its digits: it counts as keyed; an empty PIN is wrong.
    let a = type_pin(&mut c, t0, "1000");
    assert!(plays(&a, Leg::Handset).is_empty());
    let at = c.poll_timeout().unwrap();
    assert_eq!(at - t0, Duration::from_secs(5), "inter-digit timeout");
    c.handle_timeout(at);
    assert_eq!(
        plays(&drain(&mut c), Leg::Handset),
        vec![PromptId::EnterPin]
    );
    let a = type_pin(&mut c, at, "#");
    assert!(
        !a.iter().any(|x| matches!(x, CallAction::CheckPin { .. })),
        "{a:?}"
    );
    assert_eq!(
        plays(&a, Leg::Handset),
        vec![PromptId::PinInvalid, PromptId::EnterId]
    );
    // The third entry (silence) spends the call's attempts: never a check.
    let at = c.poll_timeout().unwrap();
    c.handle_timeout(at);
    let a = drain(&mut c);
    assert_eq!(plays(&a, Leg::Handset), vec![PromptId::PinInvalid]);
    c.prompt_finished(at, Leg::Handset);
    let s = ended(&drain(&mut c)).cloned().unwrap();
    assert_eq!(s.reason, EndReason::PinFailed);
}

/// Keys typed ahead (the whole `ID#PIN#` while the first prompt plays) stop the prompt
/// and make one check; nothing of it is lost between the two entries.
#[test]
fn id_and_pin_typed_ahead_make_one_check() {
    let t0 = epoch();
    let mut c = Call::new(t0, "5551230001", CallTimers::default());
    drain(&mut c);
    let a = type_pin(&mut c, t0, "123456#987654#");
    let checks: Vec<_> = a
        .iter()
        .filter(|x| matches!(x, CallAction::CheckPin { .. }))
        .collect();
    assert_eq!(checks, vec![&check("123456", "987654")]);
    assert_eq!(
        a.iter()
            .filter(|x| matches!(x, CallAction::StopPlaying { leg: Leg::Handset }))
            .count(),
        2,
        "the ID prompt and the PIN prompt stop at the first key of each"
    );
    // The PIN's digits never show in a debug print.
    assert!(!format!("{a:?}").contains("987654"));
}

#[test]
fn each_refusal_has_its_prompt_and_reason_and_no_trunk_call() {
    for (reason, prompt) in [
        (EndReason::NotApproved, PromptId::NotApproved),
        (EndReason::Blocked, PromptId::Blocked),
        (EndReason::OutsideHours, PromptId::OutsideHours),
        (EndReason::CallLimit, PromptId::CallLimit),
        (EndReason::InmateInactive, PromptId::NotApproved),
    ] {
        let t0 = epoch();
        let mut c = to_destination(t0);
        c.destination_checked(t0, Destination::Refused(reason));
        let a = drain(&mut c);
        assert_eq!(plays(&a, Leg::Handset), vec![prompt], "{reason:?}");
        assert!(!a
            .iter()
            .any(|x| matches!(x, CallAction::PlaceTrunkCall { .. })));
        c.prompt_finished(t0, Leg::Handset);
        let a = drain(&mut c);
        assert_eq!(ended(&a).unwrap().reason, reason);
        assert_eq!(
            a.last(),
            a.iter().rev().find(|x| matches!(x, CallAction::Ended(_)))
        );
    }
}

#[test]
fn insufficient_funds_is_released_uncharged_without_dialing() {
    let t0 = epoch();
    let mut c = to_destination(t0);
    c.destination_checked(t0, auth(false, "0.009", "0.01"));
    let a = drain(&mut c);
    assert_eq!(plays(&a, Leg::Handset), vec![PromptId::InsufficientFunds]);
    assert!(!a.iter().any(|x| matches!(
        x,
        CallAction::PlaceTrunkCall { .. } | CallAction::Debit { .. }
    )));
    c.prompt_finished(t0, Leg::Handset);
    let s = ended(&drain(&mut c)).cloned().unwrap();
    assert_eq!(
        (s.reason, s.charged),
        (EndReason::InsufficientFunds, Money::ZERO)
    );
}

#[test]
fn called_party_presses_two_no_charge() {
    let t0 = epoch();
    let mut c = to_announcing(t0, auth(false, "5.00", "0.01"));
    c.digit(t0 + Duration::from_secs(4), Leg::Trunk, '2');
    let a = drain(&mut c);
    assert!(!a
        .iter()
        .any(|x| matches!(x, CallAction::Debit { .. } | CallAction::Bridge)));
    c.prompt_finished(t0 + Duration::from_secs(6), Leg::Handset);
    let a = drain(&mut c);
    assert!(
        a.contains(&CallAction::Hangup { leg: Leg::Trunk })
            && a.contains(&CallAction::Hangup { leg: Leg::Handset })
    );
    let s = ended(&a).unwrap();
    assert_eq!((s.reason, s.increments), (EndReason::Declined, 0));
    assert!(s.answered_at.is_some() && s.accepted_at.is_none());
}

#[test]
fn no_acceptance_in_time_is_no_answer_uncharged() {
    let t0 = epoch();
    let mut c = to_announcing(t0, auth(false, "5.00", "0.01"));
    c.digit(t0 + Duration::from_secs(4), Leg::Trunk, '5');
    let log = run(
        &mut c,
        t0 + Duration::from_secs(4),
        "5.00".parse().unwrap(),
        t0 + Duration::from_secs(120),
    );
    let s = log
        .iter()
        .find_map(|(_, a)| {
            if let CallAction::Ended(s) = a {
                Some(s.clone())
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!((s.reason, s.increments), (EndReason::NoAnswer, 0));
    assert_eq!(
        s.ended_at - t0,
        Duration::from_secs(33),
        "30 s accept timeout after the answer at 3 s"
    );
}

#[test]
fn trunk_failures_map_to_reasons() {
    for (failure, reason) in [
        (TrunkFailure::Status(486), EndReason::Busy),
        (TrunkFailure::Status(480), EndReason::NoAnswer),
        (TrunkFailure::Status(503), EndReason::TrunkError),
        (TrunkFailure::Timeout, EndReason::TrunkError),
    ] {
        let t0 = epoch();
        let mut c = to_destination(t0);
        c.destination_checked(t0, auth(false, "5.00", "0.01"));
        drain(&mut c);
        c.trunk_failed(t0, failure);
        let a = drain(&mut c);
        assert!(!a
            .iter()
            .any(|x| matches!(x, CallAction::Hangup { leg: Leg::Trunk })));
        c.prompt_finished(t0, Leg::Handset);
        assert_eq!(ended(&drain(&mut c)).unwrap().reason, reason, "{failure:?}");
    }
}

#[test]
fn caller_hangs_up_while_ringing_cancels_the_trunk() {
    let t0 = epoch();
    let mut c = to_destination(t0);
    c.destination_checked(t0, auth(false, "5.00", "0.01"));
    drain(&mut c);
    c.hangup_from(t0 + Duration::from_secs(2), Leg::Handset);
    let a = drain(&mut c);
    assert!(a.contains(&CallAction::CancelTrunk), "{a:?}");
    assert!(
        !a.contains(&CallAction::Hangup { leg: Leg::Handset }),
        "the handset hung up itself"
    );
    assert_eq!(ended(&a).unwrap().reason, EndReason::CallerHangup);
}

#[test]
fn dial_timeout_cancels_and_ends_no_answer() {
    let t0 = epoch();
    let mut c = to_destination(t0);
    c.destination_checked(t0, auth(false, "5.00", "0.01"));
    drain(&mut c);
    let at = c.poll_timeout().unwrap();
    assert_eq!(at - t0, Duration::from_secs(60));
    c.handle_timeout(at);
    let a = drain(&mut c);
    assert!(a.contains(&CallAction::CancelTrunk));
    c.prompt_finished(at, Leg::Handset);
    assert_eq!(ended(&drain(&mut c)).unwrap().reason, EndReason::NoAnswer);
}

#[test]
fn caller_hangs_up_mid_call_only_started_increments_charged() {
    let t0 = epoch();
    let mut c = to_announcing(t0, auth(false, "5.00", "0.01"));
    let accept_at = t0 + Duration::from_secs(5);
    c.digit(accept_at, Leg::Trunk, '1');
    // Run 14 s: increments at 0, 6, 12 s have started.
    let log = run(
        &mut c,
        accept_at,
        "5.00".parse().unwrap(),
        accept_at + Duration::from_secs(14),
    );
    let debits = log
        .iter()
        .filter(|(_, a)| matches!(a, CallAction::Debit { .. }))
        .count();
    assert_eq!(debits, 3);
    c.hangup_from(accept_at + Duration::from_secs(14), Leg::Handset);
    let a = drain(&mut c);
    assert!(a.contains(&CallAction::Hangup { leg: Leg::Trunk }));
    let s = ended(&a).unwrap();
    assert_eq!(
        (s.reason, s.increments, s.charged.to_string().as_str()),
        (EndReason::CallerHangup, 3, "0.03")
    );
    assert!(
        !a.iter().any(|x| matches!(x, CallAction::Debit { .. })),
        "no debit after the hang-up"
    );
}

#[test]
fn callee_hangs_up() {
    let t0 = epoch();
    let mut c = to_announcing(t0, auth(false, "5.00", "0.01"));
    c.digit(t0, Leg::Trunk, '1');
    drain(&mut c);
    c.debit_succeeded(t0, 1, "4.99".parse().unwrap());
    c.hangup_from(t0 + Duration::from_secs(3), Leg::Trunk);
    let a = drain(&mut c);
    assert!(a.contains(&CallAction::Hangup { leg: Leg::Handset }));
    assert!(!a.contains(&CallAction::Hangup { leg: Leg::Trunk }));
    let s = ended(&a).unwrap();
    assert_eq!((s.reason, s.increments), (EndReason::CalleeHangup, 1));
}

#[test]
fn privileged_call_is_announced_as_not_recorded_and_never_recorded() {
    let t0 = epoch();
    let mut c = to_destination(t0);
    c.destination_checked(t0, auth(true, "5.00", "0.01"));
    drain(&mut c);
    c.trunk_answered(t0);
    let a = drain(&mut c);
    assert_eq!(
        plays(&a, Leg::Trunk),
        vec![PromptId::AnnouncementPrivileged]
    );
    c.digit(t0, Leg::Trunk, '1');
    let a = drain(&mut c);
    assert!(a.contains(&CallAction::Bridge));
    assert!(!a
        .iter()
        .any(|a| matches!(a, CallAction::StartRecording { .. })));
    c.hangup_from(t0, Leg::Handset);
    let s = ended(&drain(&mut c)).cloned().unwrap();
    assert!(s.privileged && !s.recorded);
}

#[test]
fn maximum_duration_cuts_with_warning() {
    let t0 = epoch();
    let mut c = to_destination(t0);
    let d = Destination::Authorized(Authorization {
        number: "+15551230001".into(),
        privileged: false,
        charging: plan("0.05", 60, 600),
        balance: "100.00".parse().unwrap(),
        account_id: "acct-inmate".into(),
    });
    c.destination_checked(t0, d);
    drain(&mut c);
    c.trunk_answered(t0);
    c.digit(t0, Leg::Trunk, '1');
    let log = run(
        &mut c,
        t0,
        "100.00".parse().unwrap(),
        t0 + Duration::from_secs(3600),
    );
    let actions: Vec<CallAction> = log.iter().map(|(_, a)| a.clone()).collect();
    assert!(plays(&actions, Leg::Handset).contains(&PromptId::DurationWarning));
    let s = ended(&actions).unwrap();
    assert_eq!((s.reason, s.increments), (EndReason::MaxDuration, 10));
    assert_eq!(s.charged.to_string(), "0.50");
}

#[test]
fn a_refused_debit_cuts_for_funds() {
    let t0 = epoch();
    let mut c = to_announcing(t0, auth(false, "5.00", "0.01"));
    c.digit(t0, Leg::Trunk, '1');
    let a = drain(&mut c);
    assert!(a.contains(&CallAction::Debit {
        increment: 1,
        amount: "0.01".parse().unwrap()
    }));
    // Another spender emptied the account between authorization and the first debit.
    c.debit_refused(t0, 1);
    let a = drain(&mut c);
    assert_eq!(plays(&a, Leg::Handset), vec![PromptId::FundsExhausted]);
    c.prompt_finished(t0, Leg::Handset);
    let s = ended(&drain(&mut c)).cloned().unwrap();
    assert_eq!(
        (s.reason, s.increments, s.charged),
        (EndReason::FundsExhausted, 0, Money::ZERO)
    );
}

#[test]
fn terminate_ends_both_legs_at_once() {
    let t0 = epoch();
    let mut c = to_announcing(t0, auth(false, "5.00", "0.01"));
    c.digit(t0, Leg::Trunk, '1');
    drain(&mut c);
    c.terminate(t0 + Duration::from_secs(1));
    let a = drain(&mut c);
    assert!(
        a.contains(&CallAction::Hangup { leg: Leg::Trunk })
            && a.contains(&CallAction::Hangup { leg: Leg::Handset })
    );
    assert_eq!(ended(&a).unwrap().reason, EndReason::Terminated);
    c.hangup_from(t0 + Duration::from_secs(2), Leg::Handset);
    assert!(drain(&mut c).is_empty(), "nothing after the end");
    assert_eq!(c.poll_timeout(), None);
}

// ---- issue 9: the money path and the record's times ----------------------------------

/// Item 7 through the call: $0.02 pays two 6 s increments; the warning plays 2 s before
/// the end of the second (10 s after acceptance); $5.00 arrives at 11 s. The third is
/// debited at 12 s and the call goes on (it used to be cut there, the $5.00 unused).
#[test]
fn a_deposit_during_the_last_paid_increment_keeps_the_call_up() {
    let t0 = epoch();
    let mut c = to_announcing(t0, auth(false, "0.02", "0.01"));
    let accept_at = t0 + Duration::from_secs(5);
    c.digit(accept_at, Leg::Trunk, '1');
    let at = |s: u64| accept_at + Duration::from_secs(s);
    let log = run(&mut c, accept_at, "0.02".parse().unwrap(), at(11));
    assert_eq!(debits(&log).len(), 2);
    let warned: Vec<(Instant, PromptId)> = log
        .iter()
        .filter_map(|(t, a)| match a {
            CallAction::Play {
                leg: Leg::Handset,
                prompt: PromptId::FundsWarning,
            } => Some((*t, PromptId::FundsWarning)),
            _ => None,
        })
        .collect();
    assert_eq!(warned, vec![(at(10), PromptId::FundsWarning)]);
    // The deposit: the ledger now holds $5.00 after the second increment.
    let log = run(&mut c, at(11), "5.00".parse().unwrap(), at(30));
    assert_eq!(c.state(), CallState::Connected, "not cut at 12 s");
    let paid: Vec<(Instant, u32)> = debits(&log);
    assert_eq!(
        paid,
        vec![(at(12), 3), (at(18), 4), (at(24), 5), (at(30), 6)]
    );
    c.hangup_from(at(31), Leg::Handset);
    let s = ended(&drain(&mut c)).cloned().unwrap();
    assert_eq!(
        (s.reason, s.increments, s.charged.to_string().as_str()),
        (EndReason::CallerHangup, 6, "0.06")
    );
}

/// Item 9 in the machine: on exhaustion the parties stop hearing each other at the cut,
/// the end of the last paid increment (18 s after acceptance); the call ends after the
/// notice, 2.5 s later.
#[test]
fn the_media_end_is_the_cut_and_the_end_follows_the_notice() {
    let t0 = epoch();
    let mut c = to_announcing(t0, auth(false, "0.03", "0.01"));
    let accept_at = t0 + Duration::from_secs(5);
    c.digit(accept_at, Leg::Trunk, '1');
    let mut balance: Money = "0.03".parse().unwrap();
    let mut now = accept_at;
    while c.state() == CallState::Connected {
        for a in drain(&mut c) {
            match a {
                CallAction::Debit { increment, amount } if balance >= amount => {
                    balance = balance - amount;
                    c.debit_succeeded(now, increment, balance);
                }
                CallAction::Debit { increment, .. } => c.debit_refused(now, increment),
                CallAction::CheckBalance { after_increment } => {
                    c.balance_checked(now, after_increment, Some(balance))
                }
                _ => {}
            }
        }
        if c.state() != CallState::Connected {
            break;
        }
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
    }
    assert_eq!(c.state(), CallState::Ending);
    let notice_done = now + Duration::from_millis(2_500);
    c.prompt_finished(notice_done, Leg::Handset);
    let s = ended(&drain(&mut c)).cloned().unwrap();
    assert_eq!(s.reason, EndReason::FundsExhausted);
    assert_eq!(s.increments, 3);
    assert_eq!(s.accepted_at, Some(accept_at));
    assert_eq!(s.media_ended_at, Some(accept_at + Duration::from_secs(18)));
    assert_eq!(s.ended_at, notice_done);
}

/// Review, L5: the moment a bridged call is cut, the machine's first action says how and
/// when ([`CallAction::MediaEnded`]), before the notice plays, so the driver writes it on
/// the session before a crash during the notice could lose it. Every way out of
/// `Connected` says it once, first; a call never bridged never says it.
#[test]
fn the_cut_is_announced_first_and_once() {
    let t0 = epoch();
    let first_of_the_end = |a: &[CallAction]| a.first().cloned();
    // Funds: the debit of an increment refused (another spender emptied the account).
    let mut c = to_announcing(t0, auth(false, "5.00", "0.01"));
    c.digit(t0, Leg::Trunk, '1');
    drain(&mut c);
    let cut_at = t0 + Duration::from_millis(40);
    c.debit_refused(cut_at, 1);
    let a = drain(&mut c);
    assert_eq!(
        first_of_the_end(&a),
        Some(CallAction::MediaEnded {
            reason: EndReason::FundsExhausted,
            at: cut_at
        }),
        "{a:?}"
    );
    assert_eq!(plays(&a, Leg::Handset), vec![PromptId::FundsExhausted]);
    // A BYE during the notice: no second cut, the first reason stands.
    c.hangup_from(cut_at + Duration::from_secs(1), Leg::Handset);
    let a = drain(&mut c);
    assert!(
        !a.iter().any(|x| matches!(x, CallAction::MediaEnded { .. })),
        "{a:?}"
    );
    assert_eq!(ended(&a).unwrap().reason, EndReason::FundsExhausted);

    // A BYE, a terminate, a release, a failure, the media timeout: first, once.
    type End = fn(&mut Call, Instant);
    let ends: [(End, EndReason); 5] = [
        (|c, t| c.hangup_from(t, Leg::Trunk), EndReason::CalleeHangup),
        (|c, t| c.terminate(t), EndReason::Terminated),
        (|c, t| c.inmate_released(t), EndReason::Released),
        (|c, t| c.fail(t), EndReason::System),
        (
            |c, t| c.handle_timeout(t + Duration::from_secs(120)),
            EndReason::MediaTimeout,
        ),
    ];
    for (end, reason) in ends {
        let mut c = accepted_with(t0, CallTimers::default());
        drain(&mut c);
        let at = t0 + Duration::from_secs(4);
        end(&mut c, at);
        let a = drain(&mut c);
        let cuts: Vec<&CallAction> = a
            .iter()
            .filter(|x| matches!(x, CallAction::MediaEnded { .. }))
            .collect();
        assert_eq!(cuts.len(), 1, "{reason:?}: {a:?}");
        let Some(CallAction::MediaEnded {
            reason: r,
            at: when,
        }) = a.first()
        else {
            panic!("{reason:?}: the cut is not first: {a:?}");
        };
        assert_eq!(*r, reason);
        assert_eq!(Some(*when), ended(&a).unwrap().media_ended_at);
    }

    // Never bridged: nothing to record.
    let mut c = to_announcing(t0, auth(false, "5.00", "0.01"));
    c.hangup_from(t0 + Duration::from_secs(4), Leg::Trunk);
    let a = drain(&mut c);
    assert!(
        !a.iter().any(|x| matches!(x, CallAction::MediaEnded { .. })),
        "{a:?}"
    );
}

/// A call that never reached the parties has no media end; a hang-up's is its end.
#[test]
fn media_end_only_for_bridged_calls() {
    let t0 = epoch();
    let mut c = to_announcing(t0, auth(false, "5.00", "0.01"));
    c.hangup_from(t0 + Duration::from_secs(4), Leg::Trunk);
    assert_eq!(ended(&drain(&mut c)).unwrap().media_ended_at, None);
    let mut c = accepted_with(t0, CallTimers::default());
    drain(&mut c);
    c.hangup_from(t0 + Duration::from_secs(4), Leg::Trunk);
    let s = ended(&drain(&mut c)).cloned().unwrap();
    assert_eq!(s.media_ended_at, Some(t0 + Duration::from_secs(4)));
    assert_eq!(s.ended_at, t0 + Duration::from_secs(4));
}

/// Item 10: releasing the inmate ends a live call at once with its own reason, both legs
/// BYE, no notice, and no increment after it.
#[test]
fn a_released_inmate_s_call_ends_at_once() {
    let t0 = epoch();
    let mut c = accepted_with(t0, CallTimers::default());
    let log = run(
        &mut c,
        t0,
        "5.00".parse().unwrap(),
        t0 + Duration::from_secs(8),
    );
    assert_eq!(debits(&log).len(), 2);
    c.inmate_released(t0 + Duration::from_secs(8));
    let a = drain(&mut c);
    assert!(a.contains(&CallAction::Hangup { leg: Leg::Trunk }));
    assert!(a.contains(&CallAction::Hangup { leg: Leg::Handset }));
    assert!(plays(&a, Leg::Handset).is_empty() && plays(&a, Leg::Trunk).is_empty());
    assert!(!a.iter().any(|x| matches!(x, CallAction::Debit { .. })));
    let s = ended(&a).unwrap();
    assert_eq!((s.reason, s.increments), (EndReason::Released, 2));
    assert_eq!(s.ended_at, t0 + Duration::from_secs(8));
    assert_eq!(c.poll_timeout(), None);
    // Also before the called party answered (the trunk INVITE is cancelled).
    let mut c = to_destination(t0);
    c.destination_checked(t0, auth(false, "5.00", "0.01"));
    drain(&mut c);
    c.inmate_released(t0 + Duration::from_secs(1));
    let a = drain(&mut c);
    assert!(a.contains(&CallAction::CancelTrunk), "{a:?}");
    assert_eq!(ended(&a).unwrap().reason, EndReason::Released);
}

/// Item 10: a free plan's increments are announced to the driver as they begin (for the
/// session) and counted in the summary; nothing is debited.
#[test]
fn a_free_call_counts_its_increments() {
    let t0 = epoch();
    let mut c = to_announcing(t0, auth(false, "0.00", "0"));
    c.digit(t0, Leg::Trunk, '1');
    let log = run(&mut c, t0, Money::ZERO, t0 + Duration::from_secs(13));
    let counted: Vec<u32> = log
        .iter()
        .filter_map(|(_, a)| match a {
            CallAction::CountIncrement { increment } => Some(*increment),
            _ => None,
        })
        .collect();
    assert_eq!(counted, vec![1, 2, 3]);
    assert!(debits(&log).is_empty());
    c.hangup_from(t0 + Duration::from_secs(13), Leg::Handset);
    let s = ended(&drain(&mut c)).cloned().unwrap();
    assert_eq!((s.increments, s.charged), (3, Money::ZERO));
}

// ---- media timeout ----------------------------------------------------------------------

/// An accepted call at `t0` on 6-second increments of $0.01 with $5.00 (max 30 min).
fn accepted_with(t0: Instant, timers: CallTimers) -> Call {
    let mut c = to_destination_with(t0, timers);
    c.destination_checked(t0, auth(false, "5.00", "0.01"));
    drain(&mut c);
    c.trunk_answered(t0);
    c.digit(t0, Leg::Trunk, '1');
    c
}

fn debits(log: &[(Instant, CallAction)]) -> Vec<(Instant, u32)> {
    log.iter()
        .filter_map(|(at, a)| match a {
            CallAction::Debit { increment, .. } => Some((*at, *increment)),
            _ => None,
        })
        .collect()
}

fn actions(log: &[(Instant, CallAction)]) -> Vec<CallAction> {
    log.iter().map(|(_, a)| a.clone()).collect()
}

#[test]
fn a_leg_that_goes_silent_ends_the_call_after_the_media_timeout() {
    // Either leg: the other keeps talking all along, which does not keep the call up.
    for dead in [Leg::Trunk, Leg::Handset] {
        let t0 = epoch();
        let mut c = accepted_with(t0, CallTimers::default());
        let dies = t0 + Duration::from_secs(20);
        let log = run_with_media(
            &mut c,
            t0,
            "5.00".parse().unwrap(),
            t0 + Duration::from_secs(600),
            |leg, now| Some(if leg == dead { now.min(dies) } else { now }),
        );
        let a = actions(&log);
        let s = ended(&a).cloned().unwrap();
        assert_eq!(s.reason, EndReason::MediaTimeout, "{dead:?}");
        assert_eq!(s.ended_at - dies, Duration::from_secs(60), "{dead:?}");
        assert!(
            a.contains(&CallAction::Hangup { leg: Leg::Trunk })
                && a.contains(&CallAction::Hangup { leg: Leg::Handset }),
            "BYE to both legs: {a:?}"
        );
        // At once: no notice (the silent leg cannot hear it), so no wait for one.
        assert!(!log
            .iter()
            .any(|(at, a)| *at == s.ended_at && matches!(a, CallAction::Play { .. })));
        // Increments begun before the media was known dead (0, 6, …, 78 s) stand; none
        // after.
        let d = debits(&log);
        assert_eq!(d.len(), 14, "{d:?}");
        assert!(d.iter().all(|(at, _)| *at < s.ended_at), "{d:?}");
        assert_eq!((s.increments, s.charged.to_string().as_str()), (14, "0.14"));
        assert_eq!(c.poll_timeout(), None);
    }
}

#[test]
fn a_media_timeout_due_with_an_increment_starts_no_new_increment() {
    // The trunk never sends after acceptance: dead at 60 s, exactly when increment 11
    // would start. The cut wins the tie, as the charging cuts do.
    let t0 = epoch();
    let mut c = accepted_with(t0, CallTimers::default());
    let log = run_with_media(
        &mut c,
        t0,
        "5.00".parse().unwrap(),
        t0 + Duration::from_secs(600),
        |leg, now| (leg == Leg::Handset).then_some(now),
    );
    let s = ended(&actions(&log)).cloned().unwrap();
    assert_eq!(
        (s.reason, s.ended_at - t0, s.increments),
        (EndReason::MediaTimeout, Duration::from_secs(60), 10)
    );
    assert_eq!(debits(&log).last().map(|d| d.1), Some(10));
}

#[test]
fn a_late_wake_up_past_the_media_timeout_debits_nothing_more() {
    // The driver was busy (a slow database) and wakes at 70 s, past the media deadline
    // (60 s) and the increments due at 60 and 66 s: the call ends, neither is debited.
    let t0 = epoch();
    let mut c = accepted_with(t0, CallTimers::default());
    let handset_only = |leg: Leg, now: Instant| (leg == Leg::Handset).then_some(now);
    let log = run_with_media(
        &mut c,
        t0,
        "5.00".parse().unwrap(),
        t0 + Duration::from_secs(57),
        handset_only,
    );
    assert_eq!(debits(&log).len(), 10);
    let late = t0 + Duration::from_secs(70);
    c.rtp_received(Leg::Handset, late);
    c.handle_timeout(late);
    let a = drain(&mut c);
    assert!(
        !a.iter().any(|x| matches!(x, CallAction::Debit { .. })),
        "{a:?}"
    );
    let s = ended(&a).unwrap();
    assert_eq!(
        (s.reason, s.increments, s.ended_at),
        (EndReason::MediaTimeout, 10, late)
    );
}

#[test]
fn flowing_media_moves_the_deadline_and_old_reports_do_not_move_it_back() {
    let t0 = epoch();
    let mut c = accepted_with(t0, CallTimers::default());
    drain(&mut c);
    c.debit_succeeded(t0, 1, "4.99".parse().unwrap());
    drain(&mut c);
    let at = |s: u64| t0 + Duration::from_secs(s);
    // Silence counts from acceptance at the earliest (the call began at t0 here too), not
    // from what the legs sent before it.
    c.rtp_received(Leg::Handset, t0 - Duration::from_secs(30));
    c.rtp_received(Leg::Trunk, t0 - Duration::from_secs(30));
    let media_deadline = |c: &Call| c.media_deadline();
    assert_eq!(media_deadline(&c), Some(at(60)));
    c.rtp_received(Leg::Handset, at(50));
    c.rtp_received(Leg::Trunk, at(45));
    assert_eq!(media_deadline(&c), Some(at(105)), "the quieter leg decides");
    c.rtp_received(Leg::Trunk, at(10));
    assert_eq!(
        media_deadline(&c),
        Some(at(105)),
        "a stale report changes nothing"
    );
    // Due at 105 s only if nothing came meanwhile: the driver refreshes first.
    c.rtp_received(Leg::Trunk, at(100));
    c.handle_timeout(at(105));
    assert!(!drain(&mut c)
        .iter()
        .any(|a| matches!(a, CallAction::Ended(_))));
    assert_eq!(c.state(), CallState::Connected);
    assert_eq!(media_deadline(&c), Some(at(110)));
}

#[test]
fn a_handset_dead_while_the_called_party_rang_is_not_bridged_nor_charged() {
    // The inmate's handset sent its PIN and then nothing; the called party answers after
    // 70 s of ringing and presses 1 five seconds later: the handset has been silent for
    // 74 s, past the 60 s timeout, so the call ends at acceptance, before increment 1.
    let t0 = epoch();
    let mut c = to_destination_with(t0, CallTimers::default());
    c.destination_checked(t0, auth(false, "5.00", "0.01"));
    drain(&mut c);
    c.rtp_received(Leg::Handset, t0 + Duration::from_secs(1));
    c.trunk_answered(t0 + Duration::from_secs(70));
    drain(&mut c);
    let accept = t0 + Duration::from_secs(75);
    c.rtp_received(Leg::Trunk, accept);
    c.digit(accept, Leg::Trunk, '1');
    let a = drain(&mut c);
    assert!(
        !a.iter().any(|x| matches!(
            x,
            CallAction::Debit { .. } | CallAction::Bridge | CallAction::StartRecording { .. }
        )),
        "{a:?}"
    );
    let s = ended(&a).cloned().unwrap();
    assert_eq!(
        (s.reason, s.increments, s.ended_at),
        (EndReason::MediaTimeout, 0, accept)
    );
    // The same call with a live handset is bridged and charged.
    let mut c = to_destination_with(t0, CallTimers::default());
    c.destination_checked(t0, auth(false, "5.00", "0.01"));
    c.trunk_answered(t0 + Duration::from_secs(70));
    drain(&mut c);
    c.rtp_received(Leg::Handset, accept);
    c.digit(accept, Leg::Trunk, '1');
    let a = drain(&mut c);
    assert!(a.contains(&CallAction::Bridge), "{a:?}");
    assert!(a.iter().any(|x| matches!(x, CallAction::Debit { .. })));
}

#[test]
fn a_disabled_media_timeout_never_ends_a_silent_call() {
    let t0 = epoch();
    let timers = CallTimers {
        media: None,
        ..CallTimers::default()
    };
    let mut c = accepted_with(t0, timers);
    let log = run_with_media(
        &mut c,
        t0,
        "100.00".parse().unwrap(),
        t0 + Duration::from_secs(3 * 3600),
        |_, _| None,
    );
    let s = ended(&actions(&log)).cloned().unwrap();
    assert_eq!(s.reason, EndReason::MaxDuration);
}

#[test]
fn the_media_timeout_applies_only_once_bridged() {
    // 5 s of tolerated silence, but the called party listens to the announcement for its
    // whole 30 s without sending anything: the accept timeout decides, not the media.
    let t0 = epoch();
    let timers = CallTimers {
        media: Some(Duration::from_secs(5)),
        ..CallTimers::default()
    };
    let mut c = to_destination_with(t0, timers);
    c.destination_checked(t0, auth(false, "5.00", "0.01"));
    drain(&mut c);
    c.trunk_answered(t0);
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    c.handle_timeout(t0 + Duration::from_secs(30));
    c.prompt_finished(t0 + Duration::from_secs(31), Leg::Handset);
    let s = ended(&drain(&mut c)).cloned().unwrap();
    assert_eq!((s.reason, s.increments), (EndReason::NoAnswer, 0));
    // And in the closing notice after a cut, the prompt guard bounds the wait.
    let mut c = accepted_with(t0, timers);
    drain(&mut c);
    c.debit_refused(t0, 1);
    drain(&mut c);
    assert_eq!(c.state(), CallState::Ending);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(30)));
}

#[test]
fn every_end_reason_is_listed_once_and_parses_back() {
    for r in EndReason::ALL {
        assert_eq!(EndReason::parse(r.as_str()), Some(r));
        assert_eq!(EndReason::ALL.iter().filter(|x| **x == r).count(), 1);
    }
    assert_eq!(
        EndReason::parse("media_timeout"),
        Some(EndReason::MediaTimeout)
    );
    assert_eq!(EndReason::parse("Media_Timeout"), None);
    // A new reason does not compile here until it is sorted into ALL as well.
    let listed = |r: EndReason| match r {
        EndReason::CallerHangup
        | EndReason::CalleeHangup
        | EndReason::FundsExhausted
        | EndReason::MaxDuration
        | EndReason::MediaTimeout
        | EndReason::DebitTimeout
        | EndReason::Declined
        | EndReason::NoAnswer
        | EndReason::Busy
        | EndReason::TrunkError
        | EndReason::PinFailed
        | EndReason::InmateInactive
        | EndReason::InvalidNumber
        | EndReason::NotApproved
        | EndReason::Blocked
        | EndReason::OutsideHours
        | EndReason::CallLimit
        | EndReason::InsufficientFunds
        | EndReason::Terminated
        | EndReason::Released
        | EndReason::SlotEnded
        | EndReason::NoShow
        | EndReason::InmateLeft
        | EndReason::VisitorLeft
        | EndReason::System => EndReason::ALL.contains(&r),
    };
    assert!(EndReason::ALL.into_iter().all(listed));
    assert_eq!(EndReason::ALL.len(), 25);
}
