//! The words of every email the family portal sends, in one place (English for now; a
//! Spanish set comes with the portal's translation).

use crate::mail::Email;

/// The email that verifies a new account's address.
pub fn verify(to: &str, link: &str, hours: u64) -> Email {
    Email {
        to: to.into(),
        subject: "Confirm your email address for the family portal".into(),
        body: format!(
            "Welcome to the family portal.\n\n\
             To confirm this email address and finish creating your account, open this \
             link (it works once, for {hours} hours):\n\n{link}\n\n\
             If you did not create an account, ignore this email: nothing happens \
             without the link.\n"
        ),
    }
}

/// Sent instead of [`verify`] when someone registers an address that already has a
/// verified account: the answer on the page is the same, so it tells nobody that the
/// address has an account; its owner learns here.
pub fn already_registered(to: &str, reset_link: &str, hours: u64) -> Email {
    Email {
        to: to.into(),
        subject: "Someone tried to register this email address".into(),
        body: format!(
            "Someone (perhaps you) tried to create a family portal account with this \
             email address, which already has one.\n\n\
             If it was you and you forgot your password, open this link to choose a new \
             one (it works once, for {hours} hours):\n\n{reset_link}\n\n\
             Otherwise, ignore this email: your account has not changed.\n"
        ),
    }
}

/// The email with a password-reset link.
pub fn reset(to: &str, link: &str, hours: u64) -> Email {
    Email {
        to: to.into(),
        subject: "Reset your family portal password".into(),
        body: format!(
            "To choose a new password for your family portal account, open this link \
             (it works once, for {hours} hours):\n\n{link}\n\n\
             Every place you are logged in will be logged out. If you did not ask for \
             this, ignore this email: your password has not changed.\n"
        ),
    }
}

/// Sent to the new address of a change of email.
pub fn confirm_new_address(to: &str, link: &str, hours: u64) -> Email {
    Email {
        to: to.into(),
        subject: "Confirm your new email address for the family portal".into(),
        body: format!(
            "To use this address for your family portal account, open this link (it \
             works once, for {hours} hours):\n\n{link}\n\n\
             If you did not ask for this, ignore this email.\n"
        ),
    }
}

/// Sent to the old address when a change of email or password is made, or the account
/// closed, so a stolen session cannot act unseen.
pub fn notice(to: &str, what: &str) -> Email {
    Email {
        to: to.into(),
        subject: "Your family portal account changed".into(),
        body: format!(
            "{what}\n\nIf this was not you, reset your password from the portal's login \
             page at once, and tell the facility.\n"
        ),
    }
}

pub const PASSWORD_CHANGED: &str =
    "The password of your family portal account was changed; every session was logged out.";
pub const PASSWORD_RESET: &str = "The password of your family portal account was reset by \
     an emailed link; every session was logged out.";
pub const EMAIL_CHANGED: &str = "The email address of your family portal account was \
     changed; this address no longer receives its messages.";
pub const ACCOUNT_CLOSED: &str = "Your family portal account was closed.";

/// Link lifetimes are configured in seconds and written in hours (at least one).
pub fn hours(secs: u64) -> u64 {
    secs.div_ceil(3_600).max(1)
}

/// Tells a family that a message from an inmate waits in the portal. Never what the
/// message says: email is not where correspondence is read (nor audited).
pub fn new_message(to: &str, inmate_name: &str, facility_name: &str, base: &str) -> Email {
    Email {
        to: to.into(),
        subject: "You have a new message in the family portal".into(),
        body: format!(
            "{inmate_name} at {facility_name} sent you a message.\n\n\
             Log in to the family portal to read it and answer:\n\n{base}/family/#messages\n"
        ),
    }
}

/// The notice that an idle prepaid balance is still the family's ([`super::notices`]).
pub fn idle_balance(
    to: &str,
    balance: crate::money::Money,
    facility_id: &str,
    days: i64,
    portal: &str,
) -> Email {
    Email {
        to: to.into(),
        subject: "Your prepaid calling balance is still yours".into(),
        body: format!(
            "Your prepaid calling account at facility {facility_id} holds ${balance} and \
             has not been used for {days} days.\n\n\
             This money stays yours however long it waits: it is never taken for \
             inactivity and no fee is ever charged. You can keep it for future calls and \
             visits, or have it refunded to the way you paid, without a fee, at any \
             time from your account page:\n\n{portal}/family/\n"
        ),
    }
}
