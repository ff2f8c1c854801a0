//! Books that tests start from, through the store as staff would make them.

use sallyport::ledger::{DepositMethod, DepositRequest, RequestKey};
use sallyport::money::Money;
use sallyport::store::{Booking, ContactStatus, NewContact, NewFacility, Store};

/// What [`inmate_with_contact`] made.
pub(crate) struct Seeded {
    pub inmate: String,
    pub account: String,
    pub contact: String,
}

/// Facility F1 (Chicago, calls all day), one inmate (B1, PIN 2468) with `balance`
/// deposited and one approved contact, allowed video when `video`.
pub(crate) async fn inmate_with_contact(store: &Store, balance: &str, video: bool) -> Seeded {
    store
        .create_facility(NewFacility {
            id: "F1".into(),
            name: "F1 Jail".into(),
            time_zone: "America/Chicago".into(),
            country_code: "1".into(),
            cap_category: "prison".into(),
            calling_hours_start: "00:00".into(),
            calling_hours_end: "23:59".into(),
            deposit_max: "100".parse().unwrap(),
            deposit_daily_max: "200".parse().unwrap(),
            daily_call_limit: 0,
            recording_retention_days: 30,
        })
        .await
        .unwrap();
    let b = Booking {
        booking_number: "B1".into(),
        first_name: "A".into(),
        last_name: "B".into(),
        pin: Some("2468".into()),
        calling_id: None,
        housing_unit: None,
    };
    let inmate = store.book_inmate("F1", b).await.unwrap();
    let c = store
        .add_contact(
            &inmate.id,
            NewContact {
                number: "5551230001".into(),
                name: "C".into(),
                relationship: String::new(),
                privileged: false,
                video_allowed: video,
            },
        )
        .await
        .unwrap();
    store
        .decide_contact(&c.id, ContactStatus::Approved, "staff")
        .await
        .unwrap();
    let amount: Money = balance.parse().unwrap();
    let dep = DepositRequest {
        account_id: inmate.account_id.clone(),
        method: DepositMethod::Online,
        amount,
        depositor: String::new(),
        reference: String::new(),
    };
    store
        .ledger()
        .deposit(&RequestKey::new("tests", "seed").unwrap(), dep)
        .await
        .unwrap();
    Seeded {
        inmate: inmate.id,
        account: inmate.account_id,
        contact: c.id,
    }
}
