//! Who pays for a session: the inmate's debit account, or the prepaid account of the
//! family member whose number is called (or who booked the visit).
//!
//! One payer pays for a whole session. It is chosen once, at authorization, from the
//! balances read with the destination's other facts: the facility's [`PayerOrder`] says
//! which account is asked first, and the first one that can pay the first increment pays.
//! If neither can, the session is refused for funds as before, and the inmate's account is
//! named (its balance is the one the refusal reports). A session never moves to a second
//! payer midway: each increment's debit names the account that paid the ones before it, so
//! a statement reads as whole calls, and a family that funded calls to its number is never
//! surprised by the inmate's account paying for part of one (or the reverse).

use crate::money::Money;
use serde::{Deserialize, Serialize};

/// Which account a facility asks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayerOrder {
    /// The family's prepaid account pays for calls to its verified numbers and for the
    /// visits it books; the inmate's account only when the family's cannot.
    #[default]
    FamilyFirst,
    /// The inmate's account first; the family's prepaid account when the inmate's cannot
    /// pay the first increment.
    InmateFirst,
}

impl PayerOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            PayerOrder::FamilyFirst => "family_first",
            PayerOrder::InmateFirst => "inmate_first",
        }
    }

    pub fn parse(s: &str) -> Option<PayerOrder> {
        match s {
            "family_first" => Some(PayerOrder::FamilyFirst),
            "inmate_first" => Some(PayerOrder::InmateFirst),
            _ => None,
        }
    }
}

/// An account that could pay, with its balance when the facts were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub account_id: String,
    pub balance: Money,
}

/// The payer of a session: its account and balance at authorization.
pub type Payer = Candidate;

/// Picks the payer: the first account in the facility's order whose balance covers
/// `first_increment`; the inmate's account when none does (the refusal names its balance).
/// A free first increment is covered by any balance, so the first in the order pays.
pub fn choose(
    order: PayerOrder,
    inmate: Candidate,
    family: Option<Candidate>,
    first_increment: Money,
) -> Payer {
    let Some(family) = family else {
        return inmate;
    };
    let covers = |c: &Candidate| c.balance >= first_increment;
    match order {
        PayerOrder::FamilyFirst if covers(&family) => family,
        PayerOrder::InmateFirst if !covers(&inmate) && covers(&family) => family,
        _ => inmate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, cents: i64) -> Candidate {
        Candidate {
            account_id: id.into(),
            balance: Money::from_minor(cents * 100),
        }
    }

    #[test]
    fn the_facility_order_decides_who_is_asked_first() {
        let fam = Some(c("fam", 500));
        let p = choose(
            PayerOrder::FamilyFirst,
            c("inm", 500),
            fam.clone(),
            c("", 21).balance,
        );
        assert_eq!(p.account_id, "fam");
        let p = choose(
            PayerOrder::InmateFirst,
            c("inm", 500),
            fam,
            c("", 21).balance,
        );
        assert_eq!(p.account_id, "inm");
    }

    #[test]
    fn the_first_that_covers_the_first_increment_pays() {
        let first = c("", 21).balance;
        let p = choose(
            PayerOrder::FamilyFirst,
            c("inm", 500),
            Some(c("fam", 20)),
            first,
        );
        assert_eq!(p.account_id, "inm", "the family's 20 cents do not cover 21");
        let p = choose(
            PayerOrder::InmateFirst,
            c("inm", 0),
            Some(c("fam", 21)),
            first,
        );
        assert_eq!(p.account_id, "fam");
    }

    #[test]
    fn without_a_family_account_or_funds_the_inmate_is_named() {
        let first = c("", 21).balance;
        let p = choose(PayerOrder::FamilyFirst, c("inm", 3), None, first);
        assert_eq!(p, c("inm", 3));
        let p = choose(
            PayerOrder::FamilyFirst,
            c("inm", 3),
            Some(c("fam", 4)),
            first,
        );
        assert_eq!(p, c("inm", 3), "a refusal reports the inmate's balance");
        let p = choose(
            PayerOrder::InmateFirst,
            c("inm", 3),
            Some(c("fam", 4)),
            first,
        );
        assert_eq!(p, c("inm", 3));
    }

    #[test]
    fn a_free_first_increment_goes_to_the_first_in_order() {
        let p = choose(
            PayerOrder::FamilyFirst,
            c("inm", 0),
            Some(c("fam", 0)),
            Money::ZERO,
        );
        assert_eq!(p.account_id, "fam");
    }
}
