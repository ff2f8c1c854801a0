//! The demo facility: what `sallyport demo` and the first start seed, idempotently.
//!
//! A facility `DEMO` (calls allowed all day so a newcomer can try it at any hour), a small
//! rate deck and a plan under the FCC prison caps, one inmate with a fixed calling ID and
//! PIN (what to key is printed), one approved contact, a handset with digest credentials,
//! the loopback network trusted (for that handset, without its password), a funded
//! account, and an investigator of the facility who logs in with a password. Running it
//! again finds what exists and creates only what is missing (and gives the demo inmate
//! back its demo calling ID if an upgrade drew another).

use crate::config::Config;
use crate::ledger::{DepositMethod, DepositRequest, RequestKey};
use crate::money::Money;
use crate::policy::pin::CredentialRules;
use crate::store::{
    Booking, ContactStatus, FacilityPatch, NewContact, NewFacility, NewHandset, NewUser, Role,
    Store, StoreError,
};
use serde::Serialize;

pub const FACILITY: &str = "DEMO";
pub const BOOKING: &str = "D-1001";
/// The demo inmate's PIN (with the default PIN lengths; see [`demo_pin`]).
pub const PIN: &str = "1234";
/// What the demo prints for a PIN staff changed: the gateway cannot show it.
pub const STAFF_PIN: &str = "(set by staff, not shown)";

/// The demo inmate's calling ID (with the default 6 digits; see [`demo_calling_id`]).
pub const CALLING_ID: &str = "100001";
pub const CONTACT_NUMBER: &str = "+15551230001";
pub const HANDSET_USER: &str = "handset-1";
pub const HANDSET_PASSWORD: &str = "demo-handset-pass";
/// The demo investigator (scoped to the demo facility) and its password: for trying the
/// console on a fresh install only; README says to change it.
pub const INVESTIGATOR: &str = "investigator";
pub const INVESTIGATOR_PASSWORD: &str = "demo-investigator-pass";
pub const DECK_ID: &str = "demo-deck";
pub const PLAN_ID: &str = "demo-plan";
const DEPOSIT_KEY: &str = "demo-seed-deposit-1";
/// Whose idempotency key the seed's deposit is (see [`crate::ledger::idempotency`]).
const DEMO_CALLER: &str = "demo";

/// A small North American deck: the demo's own area code is local.
const DECK_CSV: &str = "prefix,class,description\n1555,local,Demo local area\n1,domestic,North America\n44,international,United Kingdom\n52,international,Mexico\n";
/// Rates (per minute) under the FCC 24-75 audio and video caps for prisons.
const PLAN_CSV: &str = "class,service,per_minute,increment_secs\nlocal,audio,0.05,60\ndomestic,audio,0.05,60\ninternational,audio,0.05,60\nlocal,video,0.15,60\ndomestic,video,0.15,60\ninternational,video,0.15,60\n";

/// What the demo made, printed for the newcomer (and as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct DemoInfo {
    pub facility: String,
    pub inmate_id: String,
    pub booking_number: String,
    pub calling_id: String,
    pub pin: String,
    /// What to key after dialing: the calling ID, `#`, the PIN, `#`.
    pub keys: String,
    pub account_id: String,
    pub balance: Money,
    pub approved_number: String,
    pub handset_username: String,
    pub handset_password: String,
    pub sip_realm: String,
    pub trusted_network: String,
    pub sip_address: String,
    pub trunk_address: String,
    pub http_address: String,
    pub admin_token: String,
    pub investigator_username: String,
    pub investigator_password: String,
}

/// Seeds the demo, creating only what is missing.
pub async fn seed(store: &Store, config: &Config) -> Result<DemoInfo, StoreError> {
    ensure_rates(store).await?;
    ensure_facility(store).await?;
    let rules = store.credential_rules();
    let (calling_id, pin) = (demo_calling_id(rules), demo_pin(rules));
    let inmate = match store.inmate_by_booking(FACILITY, BOOKING).await {
        Ok(i) if i.calling_id.as_deref() != Some(calling_id.as_str()) => {
            // Booked before calling IDs, the upgrade drew one: the demo's own again, so
            // what the demo prints is what works. Never over credentials staff set (the
            // PIN is no longer the demo's) or an ID another inmate holds.
            let untouched = store.pin_matches(&i, &pin).await?;
            let free = store
                .inmate_by_calling_id(FACILITY, &calling_id)
                .await?
                .is_none();
            if untouched && free {
                store
                    .set_credentials(&i.id, &pin, Some(&calling_id))
                    .await?
            } else {
                tracing::warn!(
                    inmate = %i.id,
                    "the demo inmate's calling ID or PIN was changed by staff: kept"
                );
                i
            }
        }
        Ok(i) => i,
        Err(StoreError::NotFound { .. }) => {
            let b = Booking {
                booking_number: BOOKING.into(),
                first_name: "John".into(),
                last_name: "Doe".into(),
                pin: Some(pin.clone()),
                calling_id: Some(calling_id.clone()),
                housing_unit: None,
            };
            store.book_inmate(FACILITY, b).await?
        }
        Err(e) => return Err(e),
    };
    ensure_contact(store, &inmate.id).await?;
    ensure_devices(store, config).await?;
    ensure_investigator(store).await?;
    let deposit = DepositRequest {
        account_id: inmate.account_id.clone(),
        method: DepositMethod::Online,
        amount: Money::from_minor(20 * crate::money::MINOR_PER_UNIT),
        depositor: "Demo family".into(),
        reference: "demo".into(),
    };
    if store.ledger().account(&inmate.account_id).await?.status
        == crate::ledger::AccountStatus::Open
    {
        let key = RequestKey::new(DEMO_CALLER, DEPOSIT_KEY)?;
        store.ledger().deposit(&key, deposit).await?;
    }
    let account = store.ledger().account(&inmate.account_id).await?;
    // What to key: the inmate's calling ID as it stands, and the demo PIN unless staff
    // changed it (then only they know it).
    let calling_id = inmate.calling_id.clone().unwrap_or(calling_id);
    let (pin, keys) = if store.pin_matches(&inmate, &pin).await? {
        (pin.clone(), format!("{calling_id}#{pin}#"))
    } else {
        (
            STAFF_PIN.to_string(),
            format!("{calling_id}#<the PIN staff set>#"),
        )
    };
    Ok(DemoInfo {
        facility: FACILITY.into(),
        inmate_id: inmate.id,
        booking_number: BOOKING.into(),
        keys,
        calling_id,
        pin,
        account_id: account.id,
        balance: account.balance,
        approved_number: CONTACT_NUMBER.into(),
        handset_username: HANDSET_USER.into(),
        handset_password: HANDSET_PASSWORD.into(),
        sip_realm: config.sip.realm.clone(),
        trusted_network: "127.0.0.0/8".into(),
        sip_address: config.sip.udp_listen.to_string(),
        trunk_address: config.sip.trunk.to_string(),
        http_address: config.http.listen.to_string(),
        admin_token: config.http.admin_token.clone(),
        investigator_username: INVESTIGATOR.into(),
        investigator_password: INVESTIGATOR_PASSWORD.into(),
    })
}

/// The demo calling ID for the configured length: 100001 with 6 digits.
pub fn demo_calling_id(rules: &CredentialRules) -> String {
    let zeros = rules.calling_id_digits.saturating_sub(2);
    format!("1{}1", "0".repeat(zeros))
}

/// The demo PIN for the configured lengths: 1234 unless PINs must be longer.
pub fn demo_pin(rules: &CredentialRules) -> String {
    "123456789012"
        .chars()
        .take(rules.pin_min_digits.max(PIN.len()))
        .collect()
}

async fn ensure_rates(store: &Store) -> Result<(), StoreError> {
    if store.rate_deck_summary(DECK_ID).await.is_err() {
        store
            .store_rate_deck(DECK_ID, "Demo deck", DECK_CSV.as_bytes())
            .await?;
    }
    if store.rate_plan_summary(PLAN_ID).await.is_err() {
        store
            .store_rate_plan(PLAN_ID, "Demo plan", 3600, PLAN_CSV.as_bytes())
            .await?;
    }
    Ok(())
}

async fn ensure_facility(store: &Store) -> Result<(), StoreError> {
    if store.facility(FACILITY).await.is_ok() {
        return Ok(());
    }
    store
        .create_facility(NewFacility {
            id: FACILITY.into(),
            name: "Demo County Jail".into(),
            time_zone: "America/Chicago".into(),
            country_code: "1".into(),
            cap_category: "prison".into(),
            calling_hours_start: "00:00".into(),
            calling_hours_end: "00:00".into(),
            deposit_max: Money::from_minor(300 * crate::money::MINOR_PER_UNIT),
            deposit_daily_max: Money::from_minor(500 * crate::money::MINOR_PER_UNIT),
            daily_call_limit: 0,
            recording_retention_days: 365,
        })
        .await?;
    let patch = FacilityPatch {
        rate_plan_id: Some(PLAN_ID.into()),
        rate_deck_id: Some(DECK_ID.into()),
        ..FacilityPatch::default()
    };
    store.update_facility(FACILITY, patch).await?;
    Ok(())
}

async fn ensure_contact(store: &Store, inmate_id: &str) -> Result<(), StoreError> {
    let contact = match store.contact_for_number(inmate_id, CONTACT_NUMBER).await? {
        Some(c) => c,
        None => {
            let c = NewContact {
                number: CONTACT_NUMBER.into(),
                name: "Jane Doe".into(),
                relationship: "mother".into(),
                privileged: false,
                video_allowed: true,
            };
            store.add_contact(inmate_id, c).await?
        }
    };
    if contact.status != ContactStatus::Approved {
        store
            .decide_contact(&contact.id, ContactStatus::Approved, "demo")
            .await?;
    }
    Ok(())
}

async fn ensure_devices(store: &Store, config: &Config) -> Result<(), StoreError> {
    let handsets = store.handsets(FACILITY).await?;
    if !handsets
        .iter()
        .any(|h| h.sip_username.as_deref() == Some(HANDSET_USER))
    {
        let h = NewHandset {
            name: "Demo handset".into(),
            location: "Housing unit A".into(),
            sip_username: Some(HANDSET_USER.into()),
            sip_password: Some(HANDSET_PASSWORD.into()),
        };
        store.add_handset(FACILITY, &config.sip.realm, h).await?;
    }
    let nets = store.trusted_networks(FACILITY).await?;
    if !nets.iter().any(|n| n.cidr == "127.0.0.0/8") {
        store
            .add_trusted_network(FACILITY, "127.0.0.0/8", "loopback (demo)")
            .await?;
    }
    Ok(())
}

/// The demo investigator, unless a user of that name exists.
async fn ensure_investigator(store: &Store) -> Result<(), StoreError> {
    let u = NewUser {
        username: INVESTIGATOR.into(),
        password: INVESTIGATOR_PASSWORD.into(),
        role: Role::Investigator,
        facilities: vec![FACILITY.into()],
    };
    match store.create_user(&u).await {
        Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

impl DemoInfo {
    /// The newcomer's summary.
    pub fn describe(&self) -> String {
        format!(
            "Demo facility {fac} is ready.\n\
             \n  inmate          {bk} (id {iid}), calling ID {cid}, PIN {pin}\n  account         {acc}, balance {bal}\n  approved number {num}\n  handset         '{hu}': SIP digest password '{hp}' realm '{realm}' from anywhere, or no password from the trusted network {net} (a trusted network admits provisioned handsets only: another From user gets 403)\n  SIP             {sip} (UDP and TCP); calls to approved numbers go to the trunk at {trunk}\n  HTTP API        http://{http}/api/v1  (admin token: {tok})\n  investigator    user '{iu}' password '{ip}' (POST /api/v1/auth/login; change it)\n\
             \nPlace a call: dial {num} from handset '{hu}', then key the calling ID and the PIN, each followed by #: {keys}\nREADME \"Placing a call\" has sipp commands for both ends.\nTry: curl -H 'Authorization: Bearer {tok}' http://{http}/api/v1/accounts/{acc}\n",
            fac = self.facility,
            bk = self.booking_number,
            iid = self.inmate_id,
            cid = self.calling_id,
            pin = self.pin,
            keys = self.keys,
            acc = self.account_id,
            bal = self.balance,
            num = self.approved_number,
            hu = self.handset_username,
            hp = self.handset_password,
            realm = self.sip_realm,
            net = self.trusted_network,
            sip = self.sip_address,
            trunk = self.trunk_address,
            http = self.http_address,
            tok = self.admin_token,
            iu = self.investigator_username,
            ip = self.investigator_password,
        )
    }
}
