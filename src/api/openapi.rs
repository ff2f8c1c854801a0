//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, built from one table of
//! operations so that a test can check it against the router (every route documented,
//! nothing documented that is not routed).

use crate::ledger::idempotency::MAX_KEY_CHARS;
use crate::session::EndReason;
use crate::text::{self, Form, Rule};
use serde_json::{json, Map, Value};

/// One documented operation.
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    /// Request body schema name in `components.schemas`, or `"csv"` for a CSV upload.
    pub body: Option<&'static str>,
    /// Needs an `Idempotency-Key` header.
    pub idempotent: bool,
    pub ok: u16,
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
) -> Op {
    Op {
        method,
        path,
        summary,
        tag,
        body: None,
        idempotent: false,
        ok: 200,
    }
}

const fn with_body(mut o: Op, body: &'static str, ok: u16) -> Op {
    o.body = Some(body);
    o.ok = ok;
    o
}

const fn money(mut o: Op) -> Op {
    o.idempotent = true;
    o
}

/// Every route under `/api/v1`.
pub const OPERATIONS: &[Op] = &[
    op("get", "/openapi.json", "This document", "meta"),
    with_body(op("post", "/tokens", "Issue a bearer token for a user of a role and facilities", "auth"), "NewToken", 201),
    with_body(op("post", "/auth/login", "Log in with a username and password -> {token, expires_at, username, role, facilities}; 401 invalid_credentials alike for unknown user, wrong password, lockout, and a username or password that breaks the rules (refused before any work). The attempt is counted before the password is checked, so concurrent guesses cannot pass the lockout", "auth"), "Login", 200),
    Op { ok: 204, ..op("post", "/auth/logout", "End the caller's token now", "auth") },
    op("get", "/auth/me", "The caller: {username, role, facilities, expires_at}", "auth"),
    with_body(op("post", "/users", "Create a user with a password (argon2id; >= 12 characters); global admins", "auth"), "NewUser", 201),
    with_body(op("post", "/family/register", "Register a family account -> 202 check_email, the same answer whether or not the address has an account (the address's owner learns by email); 422 names a bad field; 429 too_many_attempts from one peer address", "family"), "FamilyCredentials", 202),
    with_body(op("post", "/family/verify", "Use an emailed verification link (single use, expires) -> {status: verified}; 400 invalid_link", "family"), "FamilyLink", 200),
    with_body(op("post", "/family/login", "Log in -> sets the sp_family cookie (HttpOnly, SameSite=Strict, Secure behind https) and returns {email, expires_at, csrf_token}; 401 invalid_credentials alike for unknown address, wrong password and lockout; 403 email_not_verified only after the right password", "family"), "FamilyCredentials", 200),
    Op { ok: 204, ..op("post", "/family/logout", "End this family session (X-CSRF-Token with the cookie)", "family") },
    op("get", "/family/session", "The family account of the session: {email, created_at, expires_at, csrf_token}", "family"),
    with_body(op("post", "/family/password/forgot", "Email a password-reset link (single use, expires) -> 202 check_email whether or not the address has an account", "family"), "FamilyAddress", 202),
    with_body(op("post", "/family/password/reset", "Set a new password by a reset link; every session ends -> {status: password_reset}; 400 invalid_link", "family"), "FamilyReset", 200),
    with_body(op("post", "/family/password", "Change the password (current one required); every session ends, this one is replaced (new cookie)", "family"), "FamilyPasswordChange", 200),
    with_body(op("post", "/family/email", "Change the address: a confirmation link goes to the new one -> 202 check_email; 403 wrong_password", "family"), "FamilyEmailChange", 202),
    with_body(op("post", "/family/email/confirm", "Use a change-of-address link; every session ends -> {status: email_changed}; 409 email_taken", "family"), "FamilyLink", 200),
    op("get", "/family/prepaid", "The caller's prepaid accounts (one per facility), each {account, facility_name, payer_order}", "family"),
    with_body(op("post", "/family/prepaid", "The caller's prepaid account at a facility, opened on first use (idempotent) -> Account; fund it by card with POST /family/deposits; 404 facility_not_found", "family"), "FamilyPrepaidOpen", 200),
    Op { idempotent: true, ..op("post", "/family/prepaid/{id}/refund", "Refund the whole balance of the caller's prepaid account, without a fee: back to the cards that paid it, newest deposit first (each part at most what is left of its deposit); what no card covers is owed by the facility and paid outside -> {request_id, total, parts: [{amount, deposit_id, confirmation, card_last4, confirmed_at}]}; 409 invalid_state when empty; 404 for any account not the caller's", "family") },
    op("get", "/family/prepaid/{id}/statement", "The caller's own prepaid account's statement: lines with running balance, each charge naming its session and increment, and per session {kind, number, inmate_name, started_at, billed_increments, amount}; format=csv for CSV; 404 for any account not the caller's", "family"),
    with_body(Op { ok: 204, ..op("post", "/family/close", "Close the account (password required): password, sessions and links end, the address is freed", "family") }, "FamilyPassword", 204),
    op("get", "/family/facilities", "The facilities a roster search may name: {facilities: [{id, name}]} (a family session)", "family"),
    op("get", "/family/roster", "Roster search: ?facility=ID and booking_number=, or last_name= (whole, any case) [&first_name= start] -> {inmates: [{inmate_id, first_name, last_name, booking_number, facility_id, facility_name}], more} (at most 20; only inmates in custody; nothing else of them); 422 invalid_search for an empty or partial query; 429 too_many_attempts past family.searches_per_account", "family"),
    op("get", "/family/links", "The account's link requests, newest first: {links: [{id, status (pending_verification, verification_failed, pending_approval, approved, denied, withdrawn), inmate_name, booking_number, number, video, calls, wrong_codes, code_expires_at, reason, ...}]}", "family"),
    with_body(op("post", "/family/links", "Ask to become a contact of an inmate for one of the family's numbers -> 201, pending_verification; 404 unknown or released inmate; 409 number blocked (never called), already a contact, already asked, or too many requests waiting", "family"), "FamilyLinkRequest", 201),
    Op { ok: 202, ..op("post", "/family/links/{id}/call", "The gateway calls the request's number through the trunk and asks for the code -> 202 {link, code, expires_at}: show the code, the person who answers keys it then #. 409 not_verifying; 429 too_many_attempts (calls per number and per account per day); 503 calls_unavailable", "family") },
    op("post", "/family/links/{id}/withdraw", "Withdraw a request (and the contact it created, denied as withdrawn by the family) -> the request; 409 when it is closed already", "family"),
    op("get", "/facilities", "Facilities the caller may see", "facilities"),
    with_body(op("post", "/facilities", "Create a facility (and its system accounts)", "facilities"), "NewFacility", 201),
    op("get", "/facilities/{fid}", "One facility", "facilities"),
    with_body(op("patch", "/facilities/{fid}", "Update a facility; a rate plan is checked against the cap", "facilities"), "FacilityPatch", 200),
    op("get", "/facilities/{fid}/inmates", "Inmates of a facility", "inmates"),
    with_body(op("post", "/facilities/{fid}/inmates", "Book an inmate (opens the debit account)", "inmates"), "Booking", 201),
    op("get", "/facilities/{fid}/handsets", "Handsets of a facility", "devices"),
    with_body(op("post", "/facilities/{fid}/handsets", "Add a handset (digest credentials or none)", "devices"), "NewHandset", 201),
    op("post", "/handsets/{id}/unlock", "Clear a handset's PIN lock and restart its failure count; audited handset.unlock", "devices"),
    op("get", "/facilities/{fid}/pin-locks", "PIN locks in force: [{subject: inmate|handset|line, id, name, locked_until}]", "devices"),
    Op { ok: 204, ..op("post", "/facilities/{fid}/lines/{address}/unlock", "Clear the PIN lock of a line (a source address); audited line.unlock", "devices") },
    op("get", "/facilities/{fid}/trusted-networks", "Trusted handset networks", "devices"),
    with_body(op("post", "/facilities/{fid}/trusted-networks", "Trust a network (CIDR)", "devices"), "NewNetwork", 201),
    op("get", "/facilities/{fid}/blocks", "Facility block list", "blocks"),
    with_body(op("post", "/facilities/{fid}/blocks", "Block a number in a facility", "blocks"), "NewBlock", 201),
    op("get", "/blocks", "Global block list", "blocks"),
    with_body(op("post", "/blocks", "Block a number everywhere", "blocks"), "NewBlock", 201),
    Op { ok: 204, ..op("delete", "/blocks/{id}", "Remove a block", "blocks") },
    op("get", "/inmates/{id}", "One inmate", "inmates"),
    op("post", "/inmates/{id}/suspend", "Suspend an inmate's calling", "inmates"),
    op("post", "/inmates/{id}/reinstate", "Reinstate a suspended inmate", "inmates"),
    with_body(op("put", "/inmates/{id}/pin", "Set an inmate's PIN (and optionally calling ID); clears the inmate's PIN lock", "inmates"), "SetPin", 200),
    op("post", "/inmates/{id}/unlock", "Clear the inmate's PIN lock and restart the failure count; audited inmate.unlock", "inmates"),
    money(op("post", "/inmates/{id}/release", "Release: refund the balance and close the account, then end the inmate's live call at once, on whichever node carries it (reason released; a call whose node cannot be reached ends released at its next increment; a refused release ends nothing) -> {inmate, release, ended_calls, calls_elsewhere (left to an unreachable node)}", "inmates")),
    op("get", "/inmates/{id}/contacts", "An inmate's contacts", "contacts"),
    with_body(op("post", "/inmates/{id}/contacts", "Add a contact (pending approval)", "contacts"), "NewContact", 201),
    op("post", "/contacts/{id}/approve", "Approve a contact", "contacts"),
    op("post", "/contacts/{id}/deny", "Deny a contact; an optional JSON body {reason} is shown to the family that asked for it", "contacts"),
    op("get", "/rate-caps", "The rate-cap table in force today and the next one scheduled (FCC 24-75, FCC 25-75 from 2026-04-06, or the configured tables)", "rating"),
    op("get", "/rate-decks", "Rate decks", "rating"),
    with_body(op("post", "/rate-decks", "Upload a rate deck (CSV prefix,class,description; ?id=&name=)", "rating"), "csv", 201),
    op("get", "/rate-decks/{id}", "One rate deck", "rating"),
    op("get", "/rate-decks/{id}/lookup/{number}", "Longest-prefix match of a number", "rating"),
    op("get", "/rate-plans", "Rate plans", "rating"),
    with_body(op("post", "/rate-plans", "Upload a rate plan (CSV class,service,per_minute,increment_secs; ?id=&name=&max_call_secs=)", "rating"), "csv", 201),
    op("get", "/rate-plans/{id}", "One rate plan", "rating"),
    op("get", "/accounts/{id}", "An account and its balance", "money"),
    op("get", "/accounts/{id}/deposits", "Deposits to an account", "money"),
    money(with_body(op("post", "/accounts/{id}/deposits", "Deposit (online, kiosk, money_order)", "money"), "DepositBody", 201)),
    money(with_body(op("post", "/accounts/{id}/purchases", "Commissary purchase (conditional debit)", "money"), "SpendBody", 201)),
    money(with_body(op("post", "/accounts/{id}/refunds", "Refund to an account", "money"), "SpendBody", 201)),
    op("get", "/accounts/{id}/statement", "Statement with running balance (?from&to RFC 3339, &format=csv)", "money"),
    money(op("post", "/deposits/{id}/post", "Post a pending money order", "money")),
    money(op("post", "/deposits/{id}/void", "Void a pending money order", "money")),
    money(with_body(op("post", "/family/deposits", "A family's card deposit through the payment provider (session + X-CSRF-Token, or a family token) -> 201 the deposit as it stands: posted, authorized (waiting for the provider), declined or held with the reason; 422 invalid_card / card_expired", "money"), "FamilyDepositBody", 201)),
    op("get", "/family/deposits", "The family user's own online deposits, newest first, each with its confirmation number and timeline", "money"),
    op("get", "/deposits/{id}", "An online deposit's status, confirmation number and timeline (the family user who made it, or staff of its facility; 404 for anyone else)", "money"),
    money(op("post", "/deposits/{id}/refund", "Refund a posted online deposit to its card (staff, or the family user who made it): a reversing ledger transaction; 409 when the account no longer holds the amount", "money")),
    op("post", "/payments/webhook", "The payment provider's signed event (Sallyport-Signature: t=..,v1=HMAC-SHA256 over t.body); 400/401 bad_signature changes nothing and is audited", "money"),
    op("get", "/payments/info", "What the family page shows: money order instructions, fees (none), the test provider's cards", "money"),
    op("get", "/ledger/check", "Check the ledger's invariants", "money"),
    op("get", "/calls", "Search session records, scoped to the caller's facilities, newest first -> {items, total, limit, offset}: calls, or with kind=visit video visits' sessions, kind=all both (each item's kind says which); audited call.search", "calls"),
    op("get", "/calls/active", "Calls in progress, each with listenable (accepted, not privileged, on a node) and the increments and amount debited so far, and balance (the paying account's balance now; null before the inmate is identified)", "calls"),
    op("get", "/calls/{id}", "One session record (the tariff applied, the times that explain its charge, the digits dialed) with its charges, its recording (a call's, or null) and recordings (every recording of the session; empty when privileged); a video visit's session (kind visit) also has visit (the booking: visitor, station, slot) and timeline [{at, kind: joined|media|dropped|paused|resumed|left, side: visitor|inmate|''}]; a call's timeline is [{at, kind: invite|pin|checks|trunk_answer|announcement|accepted|recording_started|increment|warning|cut|ended, detail?, increment?, amount?, balance_after?, by?}] in time order", "calls"),
    op("get", "/calls/{id}/recording", "The call's recording metadata; 403 privileged (audited recording.refused) for a privileged call", "recordings"),
    op("get", "/calls/{id}/recordings", "Every recording of a session, oldest first: a call's one, a video visit's two (participant inmate and visitor, each with its started_at: play them side by side offset by the difference); 403 privileged (audited recording.refused) for a privileged call or visit", "recordings"),
    op("get", "/recordings/{id}", "Recording metadata (status, format, participant, times, size, sha256, chain_seq)", "recordings"),
    op("post", "/recordings/{id}/play", "A playback ticket -> {url, expires_at, sha256}; audited recording.play. Valid http.ticket_ttl_secs plus the recording's length (at most 4 h of it), and only while the bearer token that asked for it lives and its user may reach the recording; never serves download=1", "recordings"),
    with_body(op("post", "/recordings/{id}/heard", "What a player actually played ({ranges: [{from_ms, to_ms}], 1-100}): audited recording.heard with the ranges and their total (the console sends every range its player played so far, when playback pauses or ends and when the session is left: the last entry of a sitting is the whole of it); 403 privileged, 422 invalid", "recordings"), "HeardBody", 204),
    op("post", "/recordings/{id}/download", "A download ticket -> {url, expires_at, sha256}; audited recording.download. Bound to the asking token like a playback ticket; always answered as an attachment", "recordings"),
    op("get", "/recordings/{id}/audio", "The file (a call: WAV, audio/wav; a visit participant: WebM, video/webm) with single-range support (206, 416), X-Content-SHA256; Bearer token or ?ticket=; &download=1 for an attachment; 410 when purged; 401 ticket_revoked when the ticket's token ended, 403 when its user lost the role or facility. Audited (recording.play / recording.download, detail.range): every bearer fetch, every download-ticket fetch, play-ticket fetches from byte 0", "recordings"),
    with_body(op("post", "/evidence-packages", "Build an evidence package of ended sessions ({session_ids: 1-50, reason}) -> 201 {id, sha256, bytes, built_at, sessions, intact, failed_checks, omitted, download}: a tar of their records, charges (JSON, CSV), recordings, chain entries and the chain head anchored in the audit log, stored and checked at once. Admins and investigators of every session's facility; 403 privileged (audited evidence_package.refused), 409 session_active. Audited evidence_package.build with the package's SHA-256. Check one offline with `sallyport verify-package FILE`", "recordings"), "EvidencePackageBody", 201),
    op("get", "/evidence-packages/{id}", "Download a stored evidence package (application/x-tar, attachment, X-Content-SHA256); admins and investigators of every facility its sessions belong to. Audited evidence_package.download with the SHA-256 of the bytes served", "recordings"),
    op("get", "/reports", "The facility reports there are: name, title, description. Admins and investigators", "reports"),
    op("get", "/reports/{name}", "A facility report over facility-local days (facility, from, to; welfare: days; top-numbers: limit): title, summary, chart {kind, x, series} and table {columns, rows}; {name}.csv answers the same table as CSV (attachment). Admins and investigators of the facility. Audited report.read", "reports"),
    op("get", "/notes", "Investigators' notes and bookmarks as they stand (not deleted), within the caller's facilities: of a session (in recording order), an inmate, a number (E.164) or a facility (newest first); q finds notes containing every word. Admins and investigators", "notes"),
    with_body(op("post", "/notes", "Mark a moment (start_ms into the session's recording) or a range (to end_ms) of a session with a note, shared with the investigators of its facility -> 201 the note at version 1; 403 privileged (audited note.refused). Audited note.create", "notes"), "NoteBody", 201),
    op("get", "/notes/{id}", "A note as it stands with every version (versions, oldest first: an edit appends a version, a delete a tombstone; nothing is overwritten)", "notes"),
    with_body(op("put", "/notes/{id}", "Edit a note: appends a version ({version: the one edited, start_ms, end_ms, body}); 409 when it was edited or deleted meanwhile. Audited note.edit", "notes"), "NoteEdit", 200),
    op("delete", "/notes/{id}", "Delete a note: appends a tombstone version (?version= the one deleted: 409 when it is no longer current); the versions stay. Audited note.delete", "notes"),
    op("get", "/leads", "Investigative leads in the period, within the caller's facilities (or ?facility_id): shared_numbers (called by at least min_inmates inmates), new_numbers (first called in the period, by min_inmates within burst_hours of the first call), pin_sharing (one inmate's PIN from handsets in different housing units within pin_window_minutes; a PIN failing for one inmate then succeeding for another on one handset), keyword_alerts (watch words heard), spotting (available or why not, the queue), people (the inmates the PIN leads and alerts name, by id: name, booking_number, housing_unit). Every time comes with the time zone of the facility it happened in (first_time_zone and last_time_zone of a number or PIN lead, which may span facilities; time_zone of an alert). Privileged calls are never part of a lead. Admins and investigators; audited lead.list", "leads"),
    op("get", "/leads/numbers/{number}", "A number's lead: who called it (callers, one per inmate, with counts, first_at and last_at each with its facility's first_time_zone and last_time_zone) and the calls (sessions, each with its facility's time_zone), within the caller's facilities and the period (?days). Audited lead.open with the session ids", "leads"),
    op("get", "/leads/pin/{id}", "A PIN-sharing lead (its id from GET /leads) with the calls its attempts opened (sessions) and its inmates (people); 404 when it is not in the period or the caller's facilities. Audited lead.open with the session ids", "leads"),
    op("get", "/keyword-alerts", "Watch words heard by the spotter: of a session (?session_id, in recording order; 403 outside the caller's facilities) or the period's (?days, newest call first). Each names the side (party inmate or called), the word, offset_ms and end_ms into the recording and the recognizer's confidence. Audited keyword_alert.list", "leads"),
    op("get", "/keyword-alerts/{id}", "One alert, to open its session at offset_ms. Audited lead.open", "leads"),
    op("get", "/keywords/status", "Whether keyword spotting runs on this node (available, or reason: library or model missing, disabled) and the spotting queue (pending, running, done, skipped, failed). Admins and investigators", "leads"),
    op("get", "/audit", "The audit log, newest first (?limit&offset); global admins", "audit"),
    op("get", "/audit/verify", "Walk the audit hash chain: entries changed, removed or moved", "audit"),
    op("post", "/calls/{id}/terminate", "End a live call now (reason terminated), on whichever node carries it; returns the closed record. 409 call_ended when it has ended (its node found dead included: the node asked closes the dead node's sessions); 503 node_unknown, 502 node_unreachable / node_refused when the carrying node cannot be reached", "calls"),
    op("get", "/recordings/verify", "Check a range of the recordings hash chain (?after_seq=&limit=, at most 10000 entries; next_after_seq in the answer), its rows and files: changed, removed, reordered...; global admins. The whole check is `sallyport verify-recordings`", "recordings"),
    op("get", "/recordings/{id}/verify", "Check one recording against the chain: its file's hash, its row, its links", "recordings"),
    with_body(op("post", "/calls/{id}/listen", "Listen live over WebRTC: answers the browser's recvonly offer ({sdp}) with {listener_id, sdp}, from the node that carries the call (its media address); 403 privileged, 409 call_ended / not_connected; 503 node_unknown, 502 node_unreachable / node_refused when the carrying node cannot be reached", "calls"), "ListenOffer", 201),
    Op { ok: 204, ..op("delete", "/calls/{id}/listen/{listener_id}", "Stop a live listener (on the node that carries the call)", "calls") },
    op("get", "/visits", "Video visits in the caller's reach, in start order -> {items, total, limit, offset}: staff their facilities, a family user the visits of the contacts it is bound to; kiosks are refused (they read their station's day)", "visits"),
    with_body(op("post", "/visits", "Book a video visit for an inmate with an approved, video-allowed contact (staff, or a family user bound to the contact). Checked against the facility's visiting rules (422: inmate_inactive, contact_not_approved, video_not_allowed, no_visiting_rules, slot_length_invalid, notice_too_short, too_far_ahead, outside_visiting_hours, slot_start_invalid, weekly_limit_reached, station_inactive, station_not_in_housing_unit, no_station), then the inmate's time and a station place are claimed in the database (409: inmate_double_booked, station_full, no_station_free, contended). Staff bookings and auto-approval facilities: approved; otherwise pending. Audited visit.request", "visits"), "VisitRequest", 201),
    op("get", "/visits/{id}", "One visit (staff of its facility, the family user bound to its contact, the kiosk of its station)", "visits"),
    op("post", "/visits/{id}/approve", "Approve a pending visit (staff); 409 invalid_transition otherwise. Audited visit.approve", "visits"),
    op("post", "/visits/{id}/deny", "Deny a pending visit (staff); its places are free again. 409 invalid_transition otherwise. Audited visit.deny", "visits"),
    op("post", "/visits/{id}/cancel", "Cancel a pending or approved visit before its slot ends (staff, or the family user bound to its contact); its places are free again. 409 invalid_transition, visit_over. Audited visit.cancel", "visits"),
    op("post", "/visits/{id}/no-show", "Mark an approved visit a no-show, from its start (staff); it keeps counting against the week. 409 invalid_transition, visit_not_started. Audited visit.no_show", "visits"),
    Op { ok: 201, ..op("post", "/visits/{id}/join-link", "The visitor's join link of an approved visit (staff of its facility, or the family user bound to its contact) -> {visit_id, side, url, valid_from, expires_at}: url is /visit/join#<pass>, a pass valid from visits.join_lead_secs before the slot until its end, for this visit only (no bearer token). 409 visit_cancelled, visit_not_open (not approved), visit_over. Audited visit.join_link", "visits") },
    with_body(op("post", "/visits/{id}/kiosk-join", "The inmate confirms a visit at the kiosk of its station with calling ID and PIN (kiosk token bound to the station) -> {visit_id, side: inmate, secret, valid_from, expires_at}: secret is a pass of the inmate's side, the same kind as the join link's. Checked in this order: 403 wrong_station; 409 visit_cancelled, visit_not_open (not approved, or outside the join window), inmate_inactive; 422 invalid (not digits); then the ID + PIN as on the handsets, counted against the inmate and the station (403 pin_invalid, account_locked, station_locked). Audited visit.kiosk_join (never the PIN)", "visits"), "KioskJoin", 200),
    with_body(op("post", "/kiosk/sittings", "An inmate signs in at the calling kiosk with calling ID and PIN (a kiosk token serving one facility) -> {sitting, inmate_id, expires_at}: send sitting in the X-Kiosk-Sitting header with the kiosk's token to read that inmate's record, account, deposits, statement and contacts (for 10 minutes). The ID + PIN are checked as on the handsets, counted against the inmate and the kiosk's station (or the kiosk): 403 pin_invalid, account_locked, station_locked; 422 invalid; 409 inmate_released. Audited kiosk.sitting (never the PIN)", "kiosk"), "KioskJoin", 201),
    op("get", "/kiosk/sitting", "What the kiosk shows the inmate of its sitting (X-Kiosk-Sitting) -> {inmate, account {id, balance, status}, pending_deposits, statement (31 days), visits (ahead), sitting_expires_at}. 403 sitting_required; 401 sitting_invalid, sitting_expired, sitting_other_kiosk", "kiosk"),
    op("get", "/kiosk/messages", "The sitting inmate's messages (X-Kiosk-Sitting) -> {inmate, contacts (approved), messages (what they sent with status and a rejection's reason; what was delivered to them, marked read), max_chars, price}", "messages"),
    op("post", "/kiosk/messages", "The sitting inmate writes {contact_id, body} to an approved contact (Idempotency-Key required) -> 201 the message (status held or delivered); a retry -> 200 the first; 409 idempotency_conflict, contact_not_approved; 422 invalid, insufficient_funds (nothing stored or charged). Audited message.send", "messages"),
    op("get", "/family/messages", "The family user's contacts (those it is bound to, approved) with each facility's limits, and the conversations: what it wrote (any status) and what the inmate's delivered messages say (marked read)", "messages"),
    op("post", "/family/messages/photos", "Upload a photo (body: PNG or JPEG, checked by its first bytes; ?contact_id=) -> 201 {id, content_type, bytes, width, height}, re-encoded without metadata; 413 photo_too_large, 415 photo_type, 422 photo_unreadable", "messages"),
    op("post", "/family/messages", "The family writes {contact_id, body, photos: [photo ids]} to the inmate (Idempotency-Key required) -> 201 the message; paid from its prepaid account at the facility when messages are priced. Audited message.send", "messages"),
    op("get", "/message-photos/{id}", "A message's photo, to the inmate's kiosk sitting, the family bound to the contact (or its uploader) and staff of the facility (audited message.photo; 403 privileged): image/png or image/jpeg with nosniff, Content-Disposition inline and Content-Security-Policy sandbox", "messages"),
    op("get", "/messages", "Search messages (admins and investigators, within their facilities; never privileged ones): ?facility_id&inmate_id&contact_id&q (words of the text)&status (held, delivered, rejected)&flagged&from&to&limit (default 50, at most 500)&offset -> {items (newest first), total (matches in all pages), limit, offset}, paged as GET /calls. Audited message.search with the ids", "messages"),
    op("get", "/messages/review", "The messages waiting for review (?facility_id), oldest first, each with the watch words it holds and its facility's time_zone (its times are shown in it). Audited message.queue", "messages"),
    op("get", "/messages/{id}", "One message (staff of its facility); 403 privileged (audited message.refused). Audited message.read", "messages"),
    op("post", "/messages/{id}/approve", "Deliver a held message; 409 when it is no longer held. The family bound to the contact is emailed that a message waits. Audited message.approve", "messages"),
    op("post", "/messages/{id}/reject", "Reject a held message with {reason} (required; the sender sees it); its price is credited back. 409 when no longer held. Audited message.reject", "messages"),
    op("get", "/facilities/{fid}/messaging", "The facility's messaging settings {review (all, flagged, none), max_chars, price, max_photo_bytes, max_photos, retention_days} (admins and investigators)", "messages"),
    op("put", "/facilities/{fid}/messaging", "Replace the facility's messaging settings (admins of the facility); 422 naming the field out of range. Audited messaging.settings", "messages"),
    op("get", "/facilities/{fid}/watch-words", "The facility's watch words and phrases, alphabetically (admins of the facility). Audited", "messages"),
    op("post", "/facilities/{fid}/watch-words", "Add {word} (kept lower-case, trimmed, at most 64 characters) -> 201; 409 when the list has it. Audited watch_word.add", "messages"),
    op("delete", "/facilities/{fid}/watch-words", "Remove ?word= from the list. Audited watch_word.remove", "messages"),
    op("delete", "/facilities/{fid}/watch-words/{wid}", "Remove a word by its id. Audited watch_word.remove", "messages"),
    op("get", "/visit-session", "What a participant pass (Authorization: Visit <pass>) lets in -> {visit_id, side, status, slot_start, slot_end, valid_from, expires_at, opens_in_secs, ends_in_secs, inmate_name (first name, last initial), visitor_pays, recorded}. 401 link_invalid, link_expired; 409 link_not_yet_valid, visit_cancelled, visit_not_open. Changes nothing", "visits"),
    Op { ok: 101, ..op("get", "/visit-session/ws", "The visit page's WebSocket (upgrade; 101). First message {type: hello, credential: <pass>} within 10 s; then from the page offer {sdp}, leave, ping, and to it answer {sdp}, state {phase, remaining_secs, opens_in_secs, other_side}, warning {reason, remaining_secs}, ended {reason}, error {code, message}, pong. A refused pass or message is an error with its code (hello_first, hello_timeout, link_invalid, link_expired, link_not_yet_valid, visit_cancelled, visit_not_open, no_video_rate, bad_json, not_text, unknown_type, missing_field, not_sdp, offer_refused); a page that a newer page of its side (a reload, another tab) replaced gets error opened_elsewhere and is closed; 503 visits_unavailable on a node without visits", "visits") },
    op("get", "/visits/live", "Visits in progress in the caller's facilities (admins, investigators), oldest first: each visit with its live session {id, node_id, started_at, ...}, watchable (not privileged), the inmate's booking_number and housing_unit, the visitor_relationship and the facility's time_zone (its times are shown in it)", "visits"),
    with_body(op("post", "/visits/{id}/watch", "Watch a visit live over WebRTC (admins, investigators of its facility): answers the browser's recvonly offer ({sdp}: audio, video of the visitor, then audio, video of the inmate) with {watcher_id, sdp, type: answer}, from the node that runs the visit (its media address). 403 privileged (audited visit.watch_refused), 404 visit_not_live, 400 bad_offer; 503 node_unknown, 502 node_unreachable / node_refused when the running node cannot be reached. Audited visit.watch", "visits"), "WatchOffer", 201),
    Op { ok: 204, ..op("delete", "/visits/{id}/watch/{watcher_id}", "Stop a watcher (on the node that runs the visit); 404 when the visit has no such watcher. Audited visit.unwatch", "visits") },
    op("post", "/visits/{id}/terminate", "End a visit in progress now (reason terminated), on whichever node runs it: both pages get ended {reason: terminated}, billing stops, the session is closed -> the session {id, visit_id, state, end_reason, node_id, ...}. 404 visit_not_live; 503 node_unknown, 502 node_unreachable / node_refused. Audited visit.terminate", "visits"),
    op("get", "/inmates/{id}/visits", "An inmate's visits (a family user: those of its own contacts) -> {items, total, limit, offset}", "visits"),
    op("get", "/contacts/{id}/visits", "A contact's visits -> {items, total, limit, offset}", "visits"),
    op("get", "/visit-stations/{id}/visits/today", "The visits of a station that start on the facility's today -> {station, visits}: staff every status, the kiosk bound to the station its approved visits (another kiosk: 403)", "visits"),
    op("get", "/facilities/{fid}/visiting-rules", "The facility's visiting rules with its time_zone; 404 when it has none (it takes no visits)", "visits"),
    with_body(op("put", "/facilities/{fid}/visiting-rules", "Set the facility's visiting rules (all of them; omitted fields take their defaults); booked visits stay. Audited visiting_rules.set", "visits"), "VisitingRules", 200),
    Op { ok: 204, ..op("delete", "/facilities/{fid}/visiting-rules", "Remove the visiting rules: the facility takes no new visits. Audited visiting_rules.delete", "visits") },
    op("get", "/facilities/{fid}/visit-stations", "The facility's visit stations (retired ones too)", "visits"),
    with_body(op("post", "/facilities/{fid}/visit-stations", "Add a visit station to a housing unit. Audited visit_station.create", "visits"), "NewVisitStation", 201),
    op("get", "/visit-stations/{id}", "One visit station", "visits"),
    with_body(op("patch", "/visit-stations/{id}", "Rename, move, resize or reactivate a station; a lower capacity keeps booked visits. Audited visit_station.update", "visits"), "VisitStationPatch", 200),
    op("delete", "/visit-stations/{id}", "Retire a station (never deleted: visits name it): it takes no new visits -> the station. Audited visit_station.retire", "visits"),
    with_body(op("put", "/inmates/{id}/housing-unit", "Assign an inmate to a housing unit (null: none); its visits use that unit's stations. Audited inmate.housing_unit", "inmates"), "HousingUnit", 200),
    op("post", "/cluster/calls/{id}/terminate", "Between nodes: end a call this node carries (reason terminated) -> the record; 409 call_ended when it is not live here. Node credential only", "cluster"),
    op("post", "/cluster/calls/{id}/release", "Between nodes: end a released inmate's call this node carries (reason released) -> the record; 409 call_ended when it is not live here. Node credential only", "cluster"),
    with_body(op("post", "/cluster/calls/{id}/listen", "Between nodes: a listener on a call this node carries -> {listener_id, sdp, type}; 403 privileged, 409 call_ended / not_connected. Node credential only", "cluster"), "ListenOffer", 201),
    Op { ok: 204, ..op("delete", "/cluster/calls/{id}/listen/{listener_id}", "Between nodes: stop a listener of a call this node carries; 404 when it is not here. Node credential only", "cluster") },
    with_body(op("post", "/cluster/visits/{id}/watch", "Between nodes: a watcher on a visit this node runs -> {watcher_id, sdp, type}; 403 privileged, 404 visit_not_live. Node credential only", "cluster"), "WatchOffer", 201),
    Op { ok: 204, ..op("delete", "/cluster/visits/{id}/watch/{watcher_id}", "Between nodes: stop a watcher of a visit this node runs; 404 when it is not here. Node credential only", "cluster") },
    op("post", "/cluster/visits/{id}/terminate", "Between nodes: end a visit this node runs (reason terminated) -> its session; 404 visit_not_live when it does not run here. Node credential only", "cluster"),
];

/// A string of at most `rule.max_chars` characters (one line unless the rule is a note).
fn text(rule: Rule) -> Value {
    let mut v = json!({ "type": "string", "maxLength": rule.max_chars });
    match rule.form {
        Form::Line => {
            v["description"] = json!("one line: no control characters, line separators, bidirectional controls or other invisible formatting; white space around a name, reference or booking number is not kept")
        }
        Form::Note => {
            v["description"] = json!("line breaks and tabs allowed; no other control characters, no bidirectional controls or other invisible formatting")
        }
        Form::Token => v["pattern"] = json!(format!("^[!-~]{{1,{}}}$", rule.max_chars)),
    }
    v
}

/// The bodies of the family account routes (their own `json!`: one more would pass the
/// macro's recursion limit).
fn family_schemas(email: Value) -> Value {
    json!({
        "FamilyCredentials": { "type": "object", "required": ["email", "password"], "properties": {
            "email": email, "password": { "type": "string", "minLength": 12, "maxLength": 1024, "format": "password" } } },
        "FamilyAddress": { "type": "object", "required": ["email"], "properties": { "email": email } },
        "FamilyLink": { "type": "object", "required": ["token"], "properties": {
            "token": { "type": "string", "pattern": "^[0-9a-f]{64}$", "description": "The secret after #verify=, #email= or #reset= in the emailed link" } } },
        "FamilyReset": { "type": "object", "required": ["token", "password"], "properties": {
            "token": { "type": "string", "pattern": "^[0-9a-f]{64}$" }, "password": { "type": "string", "minLength": 12, "format": "password" } } },
        "FamilyPasswordChange": { "type": "object", "required": ["current_password", "new_password"], "properties": {
            "current_password": { "type": "string", "format": "password" }, "new_password": { "type": "string", "minLength": 12, "format": "password" } } },
        "FamilyEmailChange": { "type": "object", "required": ["password", "new_email"], "properties": {
            "password": { "type": "string", "format": "password" }, "new_email": email } },
        "FamilyPassword": { "type": "object", "required": ["password"], "properties": {
            "password": { "type": "string", "format": "password" } } },
        "FamilyLinkRequest": { "type": "object", "required": ["inmate_id", "number", "name"], "properties": {
            "inmate_id": { "type": "string", "description": "From a roster search" },
            "number": { "type": "string", "description": "The family's phone number (E.164, or national in the facility's country)" },
            "name": { "type": "string", "maxLength": 100 }, "relationship": { "type": "string", "maxLength": 100 },
            "video": { "type": "boolean", "description": "Ask for video visits too" } } },
        "FamilyPrepaidOpen": { "type": "object", "required": ["facility_id"], "properties": {
            "facility_id": { "type": "string" } } }
    })
}

fn schemas() -> Value {
    let money = json!({ "type": "string", "pattern": "^(0|[1-9][0-9]*)(\\.[0-9]{1,4})?$", "example": "25.00",
        "description": "An amount: a JSON string of digits, optionally a point and 1 to 4 decimals; no sign, spaces or leading zeros. JSON numbers are refused (422 invalid_amount). Deposits take at most 2 decimals." });
    let name = text(text::NAME);
    let note = text(text::NOTE);
    let reference = text(text::REFERENCE);
    let setting = text(text::SETTING);
    let email = json!({ "type": "string", "maxLength": crate::family::MAX_EMAIL_BYTES, "format": "email",
        "description": "Trimmed and lower-cased; plain ASCII local@domain.tld (422 otherwise)" });
    let pin = || {
        json!({ "type": "string", "pattern": "^[0-9]+$",
        "description": "security.pin_min_digits to pin_max_digits digits (default 4-8); never shown again" })
    };
    let calling_id = || {
        json!({ "type": "string", "pattern": "^[0-9]+$",
        "description": "The number keyed before the PIN: security.calling_id_digits digits (default 6), unique in the facility; omitted at booking, a random free one is drawn" })
    };
    let payer_order = json!({ "enum": ["family_first", "inmate_first"], "default": "family_first",
        "description": "Which account pays for a call to a family's verified number (or a visit it booked): the family's prepaid account first (default), or the inmate's first; the other pays when the first cannot pay the first increment, and one account pays the whole session" });
    let mut all = json!({
        "Money": money,
        "Error": { "type": "object", "required": ["error"], "properties": { "error": {
            "type": "object", "required": ["code", "message"],
            "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } } },
        "NewToken": { "type": "object", "required": ["username", "role"], "properties": {
            "username": { "type": "string", "pattern": "^[!-~]{1,64}$" }, "role": { "enum": ["admin", "investigator", "family", "kiosk"] },
            "facilities": { "type": "array", "items": { "type": "string" } }, "ttl_secs": { "type": "integer" },
            "contacts": { "type": "array", "items": { "type": "string" }, "description": "Family users only: the contacts the user visits as (its visits are theirs); replaces what the user had, omitted keeps it" },
            "station_id": { "type": "string", "description": "Kiosk users only: the visit station the device is; replaces what the user had, omitted keeps it" } } },
        "NewFacility": { "type": "object", "required": ["id", "name", "time_zone", "deposit_max", "deposit_daily_max"], "properties": {
            "id": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$" }, "name": name, "time_zone": { "type": "string", "maxLength": 64, "example": "America/Chicago" },
            "country_code": setting, "cap_category": setting,
            "calling_hours_start": { "type": "string", "example": "07:00" }, "calling_hours_end": { "type": "string" },
            "deposit_max": { "$ref": "#/components/schemas/Money" }, "deposit_daily_max": { "$ref": "#/components/schemas/Money" },
            "daily_call_limit": { "type": "integer" }, "recording_retention_days": { "type": "integer" } } },
        "FacilityPatch": { "type": "object", "properties": {
            "name": name, "time_zone": setting, "cap_category": setting,
            "calling_hours_start": { "type": "string" }, "calling_hours_end": { "type": "string" },
            "deposit_max": { "$ref": "#/components/schemas/Money" }, "deposit_daily_max": { "$ref": "#/components/schemas/Money" },
            "daily_call_limit": { "type": "integer" }, "rate_plan_id": { "type": "string" }, "rate_deck_id": { "type": "string" },
            "recording_retention_days": { "type": "integer" }, "payer_order": payer_order } },
        "Booking": { "type": "object", "required": ["booking_number", "first_name", "last_name"], "properties": {
            "booking_number": text(text::BOOKING_NUMBER), "first_name": name, "last_name": name,
            "pin": pin(), "calling_id": calling_id() } },
        "SetPin": { "type": "object", "required": ["pin"], "properties": { "pin": pin(), "calling_id": calling_id() } },
        "NewHandset": { "type": "object", "required": ["name"], "properties": {
            "name": name, "location": name,
            "sip_username": text(text::SIP_USERNAME), "sip_password": { "type": "string", "minLength": 8, "maxLength": text::SECRET.max_chars } } },
        "NewNetwork": { "type": "object", "required": ["cidr"], "properties": { "cidr": { "type": "string" }, "description": note } },
        "NewBlock": { "type": "object", "required": ["number"], "properties": { "number": { "type": "string" }, "reason": note } },
        "NewContact": { "type": "object", "required": ["number", "name"], "properties": {
            "number": { "type": "string" }, "name": name, "relationship": name,
            "privileged": { "type": "boolean" }, "video_allowed": { "type": "boolean" } } },
        "DepositBody": { "type": "object", "required": ["amount", "method"], "properties": {
            "amount": { "$ref": "#/components/schemas/Money" }, "method": { "enum": ["online", "kiosk", "money_order"] },
            "depositor": name, "reference": reference } },
        "Login": { "type": "object", "required": ["username", "password"], "properties": {
            "username": { "type": "string", "maxLength": 64 }, "password": { "type": "string", "maxLength": 1024, "format": "password" } } },
        "NewUser": { "type": "object", "required": ["username", "password", "role"], "properties": {
            "username": { "type": "string", "pattern": "^[!-~]{1,64}$" },
            "password": { "type": "string", "minLength": 12, "format": "password" },
            "role": { "enum": ["admin", "investigator", "family", "kiosk"] },
            "facilities": { "type": "array", "items": { "type": "string" }, "description": "Required (>= 1) except for admins; empty = every facility" } } },
        "ListenOffer": { "type": "object", "required": ["sdp"], "properties": {
            "sdp": { "type": "string", "description": "SDP offer: one or two recvonly audio m-lines (first = inmate, second = called party), PCMU and/or PCMA" },
            "type": { "enum": ["offer"] } } },
        "WatchOffer": { "type": "object", "required": ["sdp"], "properties": {
            "sdp": { "type": "string", "description": "SDP offer: recvonly audio, video, audio, video m-lines (first pair = the visitor, second pair = the inmate), Opus and VP8" },
            "type": { "enum": ["offer"] } } },
        "SpendBody": { "type": "object", "required": ["amount"], "properties": {
            "amount": { "$ref": "#/components/schemas/Money" }, "reference": reference, "memo": note } },
        "Cdr": cdr_schema(),
        "VisitRequest": { "type": "object", "required": ["inmate_id", "contact_id", "starts_at", "length_minutes"], "properties": {
            "inmate_id": { "type": "string" }, "contact_id": { "type": "string", "description": "An approved, video-allowed contact of the inmate; a privileged (attorney) contact makes a privileged visit, never recorded or watched" },
            "starts_at": { "type": "string", "format": "date-time" },
            "length_minutes": { "type": "integer", "description": "One of the facility's slot_lengths_minutes" },
            "station_id": { "type": "string", "description": "A station of the inmate's housing unit; omitted, the first (by name) with room" } } },
        "VisitingRules": visiting_rules_schema(),
        "KioskJoin": { "type": "object", "required": ["calling_id", "pin"], "properties": {
            "calling_id": { "type": "string", "pattern": "^[0-9]{1,20}$", "description": "The inmate's calling ID" },
            "pin": { "type": "string", "pattern": "^[0-9]{1,20}$", "format": "password", "description": "The inmate's PIN: never logged or audited" } } },
        "NewVisitStation": { "type": "object", "required": ["name", "housing_unit"], "properties": {
            "name": name, "housing_unit": name,
            "capacity": { "type": "integer", "minimum": 1, "maximum": crate::store::MAX_STATION_CAPACITY, "default": 1, "description": "Visits it hosts at the same time" } } },
        "VisitStationPatch": { "type": "object", "properties": {
            "name": name, "housing_unit": name,
            "capacity": { "type": "integer", "minimum": 1, "maximum": crate::store::MAX_STATION_CAPACITY },
            "active": { "type": "boolean" } } },
        "HousingUnit": { "type": "object", "required": ["housing_unit"], "properties": { "housing_unit": { "type": ["string", "null"], "maxLength": text::NAME.max_chars } } },
        "Visit": visit_schema(),
        "AppliedTariff": { "type": "object", "description": "The tariff a call was charged by, recorded at authorization: amount = billed_increments × cost_per_increment",
            "required": ["class", "service", "per_minute", "increment_secs", "cost_per_increment"], "properties": {
            "rate_plan_id": { "type": ["string", "null"], "description": "The rate plan in force (plans are immutable; a new version has a new id)" },
            "rate_deck_id": { "type": ["string", "null"], "description": "The rate deck that classified the number" },
            "prefix": { "type": ["string", "null"], "description": "The deck prefix that matched" },
            "class": { "enum": ["local", "domestic", "international"] },
            "service": { "enum": ["audio", "video"] },
            "per_minute": { "$ref": "#/components/schemas/Money" },
            "increment_secs": { "type": "integer" },
            "cost_per_increment": { "$ref": "#/components/schemas/Money", "description": "One increment's charge, rounded toward zero to 1/10,000 once" } } },
        "CallDetail": call_detail_schema(),
        "NoteBody": { "type": "object", "required": ["session_id", "start_ms", "body"], "additionalProperties": false, "properties": {
            "session_id": { "type": "string" },
            "start_ms": { "type": "integer", "minimum": 0, "description": "The moment marked, in milliseconds into the session's recording" },
            "end_ms": { "type": ["integer", "null"], "description": "The end of a range (not before start_ms); null for a moment" },
            "body": note.clone() } },
        "NoteEdit": { "type": "object", "required": ["version", "start_ms", "body"], "additionalProperties": false, "properties": {
            "version": { "type": "integer", "description": "The version edited: the current one, or 409" },
            "start_ms": { "type": "integer", "minimum": 0 }, "end_ms": { "type": ["integer", "null"] },
            "body": note.clone() } },
        "FamilyDepositBody": family_deposit_schema(name.clone())
    });
    if let (Some(all), Value::Object(family)) = (all.as_object_mut(), family_schemas(email)) {
        all.extend(family);
    }
    if let Some(all) = all.as_object_mut() {
        all.insert("EvidencePackageBody".into(), evidence_package_schema());
        all.insert("HeardBody".into(), heard_schema());
    }
    all
}

/// `POST /recordings/{id}/heard`'s body.
fn heard_schema() -> Value {
    json!({ "type": "object", "required": ["ranges"], "additionalProperties": false, "properties": {
        "ranges": { "type": "array", "minItems": 1, "maxItems": 100, "items": { "type": "object",
            "required": ["from_ms", "to_ms"], "additionalProperties": false, "properties": {
            "from_ms": { "type": "integer", "minimum": 0, "description": "Milliseconds from the recording's start" },
            "to_ms": { "type": "integer", "minimum": 0, "description": "Not before from_ms" } } } } } })
}

/// `POST /evidence-packages`'s body.
fn evidence_package_schema() -> Value {
    json!({ "type": "object", "required": ["session_ids", "reason"], "additionalProperties": false, "properties": {
        "session_ids": { "type": "array", "minItems": 1, "maxItems": 50, "items": { "type": "string" } },
        "reason": { "type": "string", "maxLength": 1000, "description": "Why the package is made (the case, the request): in the manifest and the audit log" } } })
}

/// A family's card deposit (`POST /family/deposits`).
fn family_deposit_schema(name: Value) -> Value {
    json!({ "type": "object", "required": ["account_id", "amount", "card_number", "exp_month", "exp_year", "cvc"], "properties": {
        "account_id": { "type": "string" }, "amount": { "$ref": "#/components/schemas/Money" }, "depositor": name,
        "card_number": { "type": "string", "description": "12 to 19 digits, spaces or dashes allowed" },
        "exp_month": { "type": "integer", "minimum": 1, "maximum": 12 }, "exp_year": { "type": "integer" },
        "cvc": { "type": "string", "pattern": "^[0-9]{3,4}$" } } })
}

/// A session with its charges and recordings (`GET /calls/{id}`).
fn call_detail_schema() -> Value {
    json!({ "allOf": [ { "$ref": "#/components/schemas/Cdr" }, { "type": "object", "properties": {
            "charges": { "type": "array", "description": "The session's debits, in increment order", "items": { "type": "object" } },
            "recording": { "type": ["object", "null"], "description": "A call's recording's metadata (its own started_at, ended_at, duration_ms), or null (a visit's are in recordings)" },
            "recordings": { "type": "array", "items": { "type": "object" }, "description": "Every recording of the session, oldest first (a visit: one per participant, each with its started_at); empty when privileged" },
            "visit": { "$ref": "#/components/schemas/Visit", "description": "A visit session's booking; absent for a call" },
            "timeline": { "type": "array", "description": "A visit session's events in order; absent for a call", "items": { "type": "object", "properties": {
                "at": { "type": "string", "format": "date-time" },
                "kind": { "enum": ["joined", "media", "dropped", "paused", "resumed", "left"] },
                "side": { "enum": ["visitor", "inmate", ""] } } } } } } ] })
}

/// A facility's visiting rules (`visit::rules::VisitingRules`).
fn visiting_rules_schema() -> Value {
    use crate::visit::rules::{
        GRAIN_MINUTES, MAX_DAYS_AHEAD, MAX_NOTICE_MINUTES, MAX_SLOT_MINUTES, MAX_VISITS_PER_WEEK,
    };
    let minutes = |max: u32, d: &str| json!({ "type": "integer", "minimum": 0, "maximum": max, "multipleOf": GRAIN_MINUTES, "description": d });
    json!({ "type": "object", "required": ["windows", "slot_lengths_minutes"], "properties": {
        "approval": { "enum": ["auto", "staff"], "default": "staff", "description": "auto: a visitor's request is approved at once; staff: it waits for staff. Staff bookings are approved at once either way" },
        "windows": { "type": "array", "items": { "type": "object", "required": ["day", "start", "end"], "properties": {
            "day": { "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] },
            "start": { "type": "string", "example": "09:00" }, "end": { "type": "string", "example": "12:00" } } },
            "description": "Local times (the facility's time_zone) on the 5-minute grain, start before end within one day; windows of a day do not overlap. A visit lies wholly inside one" },
        "slot_lengths_minutes": { "type": "array", "minItems": 1, "maxItems": crate::visit::rules::MAX_SLOT_LENGTHS, "items": minutes(MAX_SLOT_MINUTES, "A visit length") },
        "start_step_minutes": minutes(MAX_SLOT_MINUTES, "Visits start every this many minutes from a window's start (default 30)"),
        "min_notice_minutes": minutes(MAX_NOTICE_MINUTES, "Booked at least this long before the start (default 1440)"),
        "max_days_ahead": { "type": "integer", "minimum": 1, "maximum": MAX_DAYS_AHEAD, "default": 14, "description": "Starting at most this many calendar days after today (facility-local)" },
        "visits_per_week": { "type": "integer", "minimum": 0, "maximum": MAX_VISITS_PER_WEEK, "default": 0, "description": "Per inmate per facility-local week, Monday to Sunday; pending, approved and no-show visits count; 0: no limit" },
        "time_zone": { "type": "string", "readOnly": true, "description": "The facility's zone the windows are read in (answers only)" } } })
}

/// A visit (`store::Visit`).
fn visit_schema() -> Value {
    let text = || json!({ "type": "string" });
    let time = || json!({ "type": "string", "format": "date-time" });
    let maybe = |t: &str| json!({ "type": [t, "null"] });
    json!({ "type": "object", "properties": {
        "id": text(), "facility_id": text(), "inmate_id": text(), "inmate_name": text(),
        "contact_id": text(), "visitor_name": text(), "station_id": text(), "station_name": text(),
        "starts_at": time(), "ends_at": time(), "length_minutes": { "type": "integer" },
        "status": { "enum": crate::visit::VisitStatus::ALL.map(crate::visit::VisitStatus::as_str) },
        "privileged": { "type": "boolean", "description": "With an attorney: never recorded, never watched" },
        "requested_by": text(), "requested_role": { "enum": ["admin", "investigator", "family", "kiosk"] },
        "decided_by": maybe("string"), "decided_at": maybe("string"),
        "closed_by": maybe("string"), "closed_at": maybe("string"),
        "created_at": time() } })
}

/// A call record (`store::Cdr`); what each time means is `sessions`' module doc.
fn cdr_schema() -> Value {
    let time =
        |d: &str| json!({ "type": ["string", "null"], "format": "date-time", "description": d });
    let mut cdr = json!({ "type": "object", "properties": {
        "id": { "type": "string" }, "facility_id": { "type": "string" },
        "kind": { "enum": ["call", "visit"], "description": "A call, or a video visit's session (no handset, number or digits; accepted_at is when both sides' media flowed)" },
        "visit_id": { "type": ["string", "null"], "description": "The visit a visit session ran" },
        "paused_ms": { "type": "integer", "description": "Time billing stood paused while a side of a visit was away (0 for a call)" },
        "inmate_id": { "type": ["string", "null"] }, "handset_id": { "type": ["string", "null"] },
        "number": { "type": ["string", "null"], "description": "The number called in E.164, once the dialed digits were normalized (null for calls refused before)" },
        "dialed": { "type": "string", "description": "The digits exactly as dialed, refused calls included" },
        "contact_id": { "type": ["string", "null"], "description": "The approved contact the number belongs to" },
        "state": { "enum": ["active", "ended"] },
        "end_reason": { "type": ["string", "null"], "enum": EndReason::ALL.map(EndReason::as_str).into_iter().map(Some).chain([None]).collect::<Vec<_>>() },
        "privileged": { "type": "boolean" }, "recorded": { "type": "boolean" },
        "recording_id": { "type": ["string", "null"] }, "node_id": { "type": "string" },
        "invite_at": { "type": "string", "format": "date-time", "description": "The handset's INVITE arrived" },
        "answer_at": time("The trunk answered"),
        "accepted_at": time("The called party accepted: bridging, recording and billing start"),
        "billed_until": time("accepted_at + billed_increments × tariff.increment_secs: the end of the last billed increment (after a hang-up mid-increment it lies after media_end_at; a started increment is charged in full); null if never accepted or the tariff is unknown"),
        "media_end_at": time("The parties stopped hearing each other: a cut (its notice starting), a BYE, a terminate; written at that moment (a live call being cut shows it with its end_reason); after a crash with no cut under way, the last moment the call is known to have been up"),
        "end_at": time("The call ended, closing notice included; after a crash, the last moment the call is known to have been up (never before media_end_at)"),
        "closed_at": time("The record was written ended (after a crash: the restart that closed it)"),
        "billed_increments": { "type": "integer", "description": "From the ledger (a live call: as debited so far); on a free plan, as counted" },
        "amount": { "$ref": "#/components/schemas/Money" },
        "tariff": { "oneOf": [ { "$ref": "#/components/schemas/AppliedTariff" }, { "type": "null" } ],
                    "description": "The tariff applied; null if the call was refused before rating or predates tariffs being kept" },
        "listenable": { "type": "boolean" },
        "account_id": { "type": ["string", "null"], "description": "The account that paid (or pays), once the inmate was identified" },
        "payer": { "type": ["string", "null"], "enum": ["inmate", "family", null], "description": "Whose money: the inmate's debit account, or the prepaid account of the family whose number was called or who booked the visit" } } });
    if let Some(props) = cdr["properties"].as_object_mut() {
        props.extend(people_schema());
    }
    cdr
}

/// The fields of a record that name people rather than ids, with its time zone and talk
/// time.
fn people_schema() -> Map<String, Value> {
    let fields = json!({
        "inmate_name": { "type": ["string", "null"], "description": "The inmate's name (First Last), as it is now; null before the inmate was identified" },
        "booking_number": { "type": ["string", "null"] },
        "housing_unit": { "type": ["string", "null"], "description": "The inmate's housing unit, when known" },
        "contact_name": { "type": ["string", "null"], "description": "The approved contact called (null: the number is not on the inmate's list; dialed says what was attempted)" },
        "contact_relationship": { "type": ["string", "null"] },
        "time_zone": { "type": ["string", "null"], "description": "The facility's IANA time zone, the one its staff read times in" },
        "duration_secs": { "type": ["integer", "null"], "description": "Talk time: acceptance to media_end_at (or end_at); null while live or if never accepted" },
        "terminated_by": { "type": ["string", "null"], "description": "The user who ended the call with a terminate" } });
    match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn operation(o: &Op) -> Value {
    let mut params: Vec<Value> = o
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    if o.idempotent {
        params.push(json!({ "name": "Idempotency-Key", "in": "header", "required": true,
            "description": "Keys belong to the caller (a user, across all its tokens; the configured admin token): the same caller replaying the same request with the same key gets the first answer; a different request under it gets 409. Another caller's use of the same key is another request.",
            "schema": { "type": "string", "pattern": format!("^[!-~]{{1,{MAX_KEY_CHARS}}}$") } }));
    }
    let error = json!({ "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let mut responses = Map::new();
    responses.insert(o.ok.to_string(), json!({ "description": "Success" }));
    for code in ["400", "401", "403", "404", "409", "422"] {
        responses.insert(code.into(), error.clone());
    }
    if o.body.is_some() {
        responses.insert(
            "413".into(),
            json!({ "description": body_limit(o), "content": error["content"].clone() }),
        );
    }
    params.extend(query_params(o));
    special_responses(o, &mut responses, &error);
    let mut v = json!({ "summary": o.summary, "tags": [o.tag], "parameters": params, "responses": responses });
    match o.body {
        Some("csv") => {
            v["requestBody"] = json!({ "required": true, "content": { "text/csv": { "schema": { "type": "string" } } } })
        }
        Some(name) => {
            v["requestBody"] = json!({ "required": true, "content": { "application/json": {
            "schema": { "$ref": format!("#/components/schemas/{name}") } } } })
        }
        None => {}
    }
    match o.path {
        "/openapi.json" | "/auth/login" => v["security"] = json!([]),
        "/family/register"
        | "/family/verify"
        | "/family/login"
        | "/family/password/forgot"
        | "/family/password/reset"
        | "/family/email/confirm" => v["security"] = json!([]),
        p if p.starts_with("/family/") => {
            v["security"] = json!([{ "bearer": [] }, { "family": [] }])
        }
        p if p.starts_with("/cluster/") => v["security"] = json!([{ "node": [] }]),
        "/recordings/{id}/audio" => v["security"] = json!([{ "bearer": [] }, { "ticket": [] }]),
        "/visit-session" => v["security"] = json!([{ "visit": [] }]),
        _ => {}
    }
    v
}

/// What the 413 of an operation with a body says.
fn body_limit(o: &Op) -> String {
    let (limit, what) = match o.body {
        Some("csv") => (crate::api::MAX_UPLOAD_BODY_BYTES, "CSV upload"),
        _ => (crate::api::MAX_JSON_BODY_BYTES, "JSON body"),
    };
    format!("payload_too_large: the {what} is over {limit} bytes")
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": description })
}

/// Query parameters of the operations that take some.
fn query_params(o: &Op) -> Vec<Value> {
    let text = || json!({ "type": "string" });
    let time = || json!({ "type": "string", "description": "RFC 3339 or YYYY-MM-DD (UTC)" });
    match (o.method, o.path) {
        ("get", "/calls") => vec![
            query(
                "facility_id",
                text(),
                "Facility (must be one of the caller's)",
            ),
            query("inmate_id", text(), "Inmate id"),
            query("booking_number", text(), "Inmate booking number"),
            query(
                "inmate_name",
                text(),
                "Words of the inmate's name, each the start of the first or last name (case-insensitive)",
            ),
            query(
                "sort",
                json!({ "type": "string", "enum": crate::store::SESSION_SORTS, "default": "time" }),
                "Order by start time, talk time (duration) or amount",
            ),
            query(
                "order",
                json!({ "type": "string", "enum": crate::store::SORT_ORDERS, "default": "desc" }),
                "Descending (the default) or ascending",
            ),
            query(
                "kind",
                json!({ "type": "string", "enum": crate::store::SESSION_KINDS, "default": "call" }),
                "Which sessions: call (the default), visit (video visits) or all",
            ),
            query(
                "number",
                text(),
                "Number as dialed or in E.164; punctuation ignored",
            ),
            query(
                "end_reason",
                json!({ "type": "string", "enum": EndReason::ALL.map(EndReason::as_str) }),
                "How the call ended (the CDR's end_reason)",
            ),
            query(
                "from",
                time(),
                "Started at or after (a date: its midnight UTC)",
            ),
            query(
                "to",
                time(),
                "Started before (a date: the whole day included)",
            ),
            query(
                "limit",
                json!({ "type": "integer", "minimum": 1, "maximum": 500, "default": 50 }),
                "Page size",
            ),
            query(
                "offset",
                json!({ "type": "integer", "minimum": 0, "default": 0 }),
                "Matches to skip",
            ),
        ],
        ("get", "/visits") | ("get", "/inmates/{id}/visits") | ("get", "/contacts/{id}/visits") => {
            let mut ps = vec![
                query(
                    "facility_id",
                    text(),
                    "Facility (must be one of the caller's)",
                ),
                query("inmate_id", text(), "Inmate id"),
                query("contact_id", text(), "Contact id"),
                query("station_id", text(), "Visit station id"),
                query(
                    "status",
                    json!({ "enum": crate::visit::VisitStatus::ALL.map(crate::visit::VisitStatus::as_str) }),
                    "Status",
                ),
                query(
                    "from",
                    json!({ "type": "string", "format": "date-time" }),
                    "Starting at or after",
                ),
                query(
                    "to",
                    json!({ "type": "string", "format": "date-time" }),
                    "Starting before",
                ),
                query(
                    "limit",
                    json!({ "type": "integer", "minimum": 1, "maximum": crate::store::MAX_VISIT_PAGE, "default": 100 }),
                    "Page size",
                ),
                query(
                    "offset",
                    json!({ "type": "integer", "minimum": 0, "default": 0 }),
                    "Matches to skip",
                ),
            ];
            // The path names the inmate or the contact already.
            let named = match o.path {
                "/inmates/{id}/visits" => "inmate_id",
                "/contacts/{id}/visits" => "contact_id",
                _ => "",
            };
            ps.retain(|p| p["name"] != named);
            ps
        }
        ("get", "/leads") | ("get", "/leads/numbers/{number}") | ("get", "/leads/pin/{id}") => vec![
            query("days", json!({ "type": "integer", "minimum": 1, "maximum": 366, "default": 30 }), "The period: calls and attempts of the last days"),
            query("min_inmates", json!({ "type": "integer", "minimum": 2, "maximum": 1000, "default": 3 }), "Inmates a number needs to be a lead"),
            query("burst_hours", json!({ "type": "integer", "minimum": 1, "maximum": 8784, "default": 72 }), "How soon after its first call a new number must reach min_inmates"),
            query("pin_window_minutes", json!({ "type": "integer", "minimum": 1, "maximum": 1440, "default": 15 }), "The longest gap between two attempts of one PIN-sharing lead"),
            query("facility_id", text(), "Facility (must be one of the caller's)"),
        ],
        ("get", "/keyword-alerts") => vec![
            query("session_id", text(), "A session's alerts"),
            query("facility_id", text(), "Facility (must be one of the caller's)"),
            query("days", json!({ "type": "integer", "minimum": 1, "maximum": 366, "default": 30 }), "Without session_id: calls of the last days"),
        ],
        ("get", "/notes") => vec![
            query("session_id", text(), "A session's notes"),
            query("inmate_id", text(), "An inmate's notes (on any of its sessions)"),
            query("number", text(), "A number's notes (E.164; digits alone are read as E.164)"),
            query("facility_id", text(), "Facility (must be one of the caller's)"),
            query("q", text(), "Words the text must contain (case-insensitive)"),
        ],
        ("get", "/reports/{name}") => {
            let day = || json!({ "type": "string", "format": "date" });
            vec![
                query("facility", text(), "Facility (required; one of the caller's)"),
                query("from", day(), "First facility-local day (required)"),
                query("to", day(), "Last facility-local day, included (required; at most 731 days)"),
                query("days", json!({ "type": "integer", "minimum": 1, "maximum": 365 }), "welfare: no contact for this many days (default 14)"),
                query("limit", json!({ "type": "integer", "minimum": 1, "maximum": 200 }), "top-numbers: how many (default 20)"),
            ]
        }
        ("delete", "/notes/{id}") => vec![query(
            "version",
            json!({ "type": "integer", "minimum": 1 }),
            "The version deleted (409 when it is no longer current)",
        )],
        ("get", "/recordings/{id}/audio") => vec![
            query(
                "ticket",
                text(),
                "A ticket from POST /recordings/{id}/play or /download (instead of a bearer token)",
            ),
            query(
                "download",
                json!({ "enum": ["1"] }),
                "Answer as an attachment (needs a download ticket or a bearer token)",
            ),
            json!({ "name": "Range", "in": "header", "required": false, "schema": { "type": "string", "example": "bytes=0-1023" },
                    "description": "One byte range: a-b, a- or -n" }),
        ],
        _ => Vec::new(),
    }
}

/// Answers particular to some operations.
fn special_responses(o: &Op, responses: &mut Map<String, Value>, error: &Value) {
    if o.path.starts_with("/recordings/") {
        responses.insert("410".into(), error.clone());
    }
    if o.path == "/recordings/{id}/audio" {
        let binary = json!({ "type": "string", "format": "binary" });
        let wav = json!({ "audio/wav": { "schema": binary }, "video/webm": { "schema": binary } });
        responses.insert(
            "200".into(),
            json!({ "description": "The whole file", "content": wav }),
        );
        responses.insert(
            "206".into(),
            json!({ "description": "One range (Content-Range)", "content": wav }),
        );
        responses.insert("416".into(), error.clone());
    }
    let schema = |name: &str| json!({ "application/json": { "schema": { "$ref": format!("#/components/schemas/{name}") } } });
    let list = |name: &str| json!({ "application/json": { "schema": { "type": "array", "items": { "$ref": format!("#/components/schemas/{name}") } } } });
    match (o.method, o.path) {
        ("get", "/visits/live") => {
            responses.insert(
                "200".into(),
                json!({ "description": "Visits in progress, each with its session and watchable", "content": list("Visit") }),
            );
        }
        ("get", "/calls") => {
            let page = json!({ "application/json": { "schema": { "type": "object", "properties": {
                "items": { "type": "array", "items": { "$ref": "#/components/schemas/Cdr" } },
                "total": { "type": "integer" }, "limit": { "type": "integer" }, "offset": { "type": "integer" } } } } });
            responses.insert(
                "200".into(),
                json!({ "description": "One page of call records", "content": page }),
            );
        }
        ("get", "/calls/active") => {
            responses.insert(
                "200".into(),
                json!({ "description": "Live call records", "content": list("Cdr") }),
            );
        }
        ("get", "/calls/{id}") => {
            responses.insert(
                "200".into(),
                json!({ "description": "The call record", "content": schema("CallDetail") }),
            );
        }
        ("get", "/visits") | ("get", "/inmates/{id}/visits") | ("get", "/contacts/{id}/visits") => {
            let page = json!({ "application/json": { "schema": { "type": "object", "properties": {
                "items": { "type": "array", "items": { "$ref": "#/components/schemas/Visit" } },
                "total": { "type": "integer" }, "limit": { "type": "integer" }, "offset": { "type": "integer" } } } } });
            responses.insert(
                "200".into(),
                json!({ "description": "One page of visits", "content": page }),
            );
        }
        ("post", "/visits") => {
            responses.insert(
                "201".into(),
                json!({ "description": "The visit booked", "content": schema("Visit") }),
            );
        }
        ("get", "/visits/{id}")
        | ("post", "/visits/{id}/approve")
        | ("post", "/visits/{id}/deny")
        | ("post", "/visits/{id}/cancel")
        | ("post", "/visits/{id}/no-show") => {
            responses.insert(
                "200".into(),
                json!({ "description": "The visit", "content": schema("Visit") }),
            );
        }
        ("post", "/calls/{id}/terminate") => {
            responses.insert(
                "200".into(),
                json!({ "description": "The closed record", "content": schema("Cdr") }),
            );
        }
        _ => {}
    }
    let forwarded = matches!(
        (o.method, o.path),
        ("post", "/calls/{id}/terminate")
            | ("post", "/calls/{id}/listen")
            | ("delete", "/calls/{id}/listen/{listener_id}")
            | ("post", "/visits/{id}/terminate")
            | ("post", "/visits/{id}/watch")
            | ("delete", "/visits/{id}/watch/{watcher_id}")
    );
    if forwarded {
        let said = |what: &str| json!({ "description": what, "content": error["content"].clone() });
        responses.insert("502".into(), said("node_unreachable (no answer within cluster.forward_timeout_secs) or node_refused (the credential): the node carrying the call (running the visit), named, cannot be reached"));
        responses.insert(
            "503".into(),
            said(
                "node_unknown: the node carrying the call (running the visit), named, never registered its API address",
            ),
        );
    }
    if o.path == "/auth/login" {
        responses.insert("401".into(), json!({ "description": "invalid_credentials (unknown user, wrong password, locked, or a username/password breaking the rules)",
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }));
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for o in OPERATIONS {
        let entry = paths.entry(o.path.to_string()).or_insert_with(|| json!({}));
        entry[o.method] = operation(o);
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "sallyport API", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Facilities, inmates, contacts, rates, the prepaid ledger, call records, recordings and video visit scheduling. Amounts are decimal strings in one form (see Money). Stored strings have a maxLength (422 invalid past it); bodies are bounded (413 payload_too_large). Errors are {\"error\":{\"code\",\"message\"}}." },
        "servers": [{ "url": "/api/v1" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "ticket": { "type": "apiKey", "in": "query", "name": "ticket",
                            "description": "Short-lived HMAC-signed capability for one recording, bound to the bearer token that asked for it (key from http.ticket_secret)" },
                "visit": { "type": "apiKey", "in": "header", "name": "Authorization",
                           "description": "'Visit <pass>': a participant pass of one visit and side (the visitor's join link, or the inmate's kiosk confirmation), HMAC-signed, valid from visits.join_lead_secs before the slot until its end; refused once the visit is cancelled. Never a bearer token" },
                "family": { "type": "apiKey", "in": "cookie", "name": "sp_family",
                            "description": "A family portal session (POST /family/login). With it, every request but GET and HEAD must carry the session's X-CSRF-Token, or 403 csrf_failed" },
                "node": { "type": "apiKey", "in": "header", "name": "sallyport-node-token",
                          "description": "Inter-node credential: HMAC-signed, valid 10 s, bound to one request (method, path, body, target node); key from cluster.secret. Only nodes of the cluster hold it" }
            },
            "schemas": schemas()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AppliedTariff, Cdr};

    /// The documented record names every field the API returns, and nothing else.
    #[test]
    fn the_cdr_schema_documents_every_field() {
        let now = chrono::Utc::now();
        let cdr = Cdr {
            id: "c".into(),
            kind: "call".into(),
            visit_id: None,
            paused_ms: 0,
            facility_id: "F".into(),
            inmate_id: None,
            handset_id: None,
            number: None,
            dialed: String::new(),
            contact_id: None,
            state: "ended".into(),
            end_reason: None,
            privileged: false,
            recorded: false,
            recording_id: None,
            node_id: String::new(),
            invite_at: now,
            answer_at: None,
            accepted_at: None,
            billed_until: None,
            media_end_at: None,
            end_at: None,
            closed_at: None,
            billed_increments: 0,
            amount: crate::money::Money::ZERO,
            tariff: Some(AppliedTariff {
                rate_plan_id: None,
                rate_deck_id: None,
                prefix: None,
                class: "local".into(),
                service: "audio".into(),
                per_minute: crate::money::Money::ZERO,
                increment_secs: 60,
                cost_per_increment: crate::money::Money::ZERO,
            }),
            listenable: false,
            account_id: None,
            payer: None,
            inmate_name: None,
            booking_number: None,
            housing_unit: None,
            contact_name: None,
            contact_relationship: None,
            time_zone: None,
            duration_secs: None,
            terminated_by: None,
        };
        let v = serde_json::to_value(&cdr).unwrap();
        let keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(keys(&v), keys(&schemas["Cdr"]["properties"]));
        assert_eq!(
            keys(&v["tariff"]),
            keys(&schemas["AppliedTariff"]["properties"])
        );
        let reasons = schemas["Cdr"]["properties"]["end_reason"]["enum"].clone();
        assert!(reasons.as_array().unwrap().contains(&json!("released")));
    }
}
