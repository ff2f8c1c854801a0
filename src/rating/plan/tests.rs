use super::*;
use crate::rating::caps::FacilityCapCategory::*;

fn m(s: &str) -> Money {
    s.parse().unwrap()
}

fn t(rate: &str, secs: u32) -> Tariff {
    Tariff::new(m(rate), secs).unwrap()
}

#[test]
fn increment_cost_is_rounded_once_toward_zero() {
    assert_eq!(t("0.021", 60).cost_of_increment(), m("0.021"));
    assert_eq!(t("0.021", 6).cost_of_increment(), m("0.0021"));
    assert_eq!(t("0.021", 6).cost_of(10), m("0.021"));
    assert_eq!(t("0.06", 6).cost_of_increment(), m("0.006"));
    // 0.07 × 7 / 60 = 0.0081666… → 0.0081, and n increments cost exactly n × 0.0081.
    let odd = t("0.07", 7);
    assert_eq!(odd.cost_of_increment(), m("0.0081"));
    assert_eq!(odd.cost_of(3), m("0.0243"));
    assert!(odd.effective_per_minute() < m("0.07").decimal());
    assert_eq!(t("0.021", 60).cost_of(61), m("1.281"));
    assert_eq!(t("0", 60).cost_of(1_000), Money::ZERO);
}

#[test]
fn affordability() {
    let per_min = t("0.021", 60);
    assert_eq!(per_min.increments_affordable(m("1.00")), 47);
    assert_eq!(per_min.increments_affordable(m("0.021")), 1);
    assert_eq!(per_min.increments_affordable(m("0.0209")), 0);
    assert_eq!(per_min.increments_affordable(Money::ZERO), 0);
    assert_eq!(per_min.increments_affordable(m("-5")), 0);
    let six = t("0.021", 6);
    assert_eq!(six.increments_affordable(m("0.021")), 10);
    assert_eq!(six.increments_affordable(m("0.0041")), 1);
    let free = t("0", 60);
    assert_eq!(free.increments_affordable(m("0.01")), u64::MAX);
    assert_eq!(free.increments_affordable(Money::ZERO), 0);
}

#[test]
fn tariff_bounds() {
    assert_eq!(
        Tariff::new(m("0.1"), 0),
        Err(PlanError::IncrementOutOfRange { secs: 0 })
    );
    assert!(Tariff::new(m("0.1"), 3601).is_err());
    assert_eq!(
        Tariff::new(m("-0.1"), 60),
        Err(PlanError::NegativeRate { rate: m("-0.1") })
    );
}

fn plan_with(entries: &[(CallClass, Service, &str, u32)]) -> RatePlan {
    let mut p = RatePlan::new(PlanSettings::new("test")).unwrap();
    for &(c, s, r, i) in entries {
        p.add_tariff(c, s, t(r, i)).unwrap();
    }
    p
}

#[test]
fn caps_reject_plans_above_them() {
    let caps = CapTable::fcc_2024().unwrap();
    let p = plan_with(&[
        (CallClass::Local, Service::Audio, "0.07", 60),
        (CallClass::International, Service::Video, "0.16", 60),
    ]);
    assert_eq!(
        p.validate(&caps, Prison),
        Err(PlanError::AboveCap {
            class: CallClass::Local,
            service: Service::Audio,
            rate: m("0.07"),
            cap: m("0.06"),
            category: Prison,
        })
    );
    let msg = p.validate(&caps, LargeJail).unwrap_err().to_string();
    assert_eq!(
        msg,
        "local audio at 0.07/min is above the large_jail cap of 0.06/min"
    );
    assert_eq!(
        p.validate(&caps, MediumJail),
        Err(PlanError::AboveCap {
            class: CallClass::International,
            service: Service::Video,
            rate: m("0.16"),
            cap: m("0.12"),
            category: MediumJail,
        })
    );
    assert_eq!(p.validate(&caps, VerySmallJail), Ok(()));
    assert_eq!(p.validate(&CapTable::new("none"), Prison), Ok(()));
    let at_cap = plan_with(&[(CallClass::Domestic, Service::Audio, "0.06", 6)]);
    assert_eq!(at_cap.validate(&caps, Prison), Ok(()));
    let tiny_over = plan_with(&[(CallClass::Domestic, Service::Audio, "0.0601", 6)]);
    assert!(
        tiny_over.validate(&caps, Prison).is_err(),
        "stated rate above the cap"
    );
}

const TOML_PLAN: &str = r#"
name = "County standard"
default_increment_secs = 60
max_duration_secs = 1200

[[tariff]]
class = "local"
service = "audio"
per_minute = "0.021"
increment_secs = 6

[[tariff]]
class = "international"
service = "audio"
per_minute = "0.06"

[[tariff]]
class = "domestic"
service = "video"
per_minute = "0.11"
"#;

#[test]
fn toml_plan() {
    let p = RatePlan::from_toml(TOML_PLAN).unwrap();
    assert_eq!(p.name(), "County standard");
    assert_eq!(p.max_duration(), Duration::from_secs(1200));
    assert_eq!(
        p.tariff(CallClass::Local, Service::Audio),
        Some(t("0.021", 6))
    );
    assert_eq!(
        p.tariff(CallClass::International, Service::Audio),
        Some(t("0.06", 60))
    );
    assert_eq!(p.tariff(CallClass::Local, Service::Video), None);
    assert_eq!(p.tariffs().count(), 3);
    let defaults = RatePlan::from_toml("name = \"x\"").unwrap();
    assert_eq!(defaults.default_increment_secs(), 60);
    assert_eq!(defaults.max_duration(), Duration::from_secs(900));
}

#[test]
fn toml_plan_errors() {
    let float = TOML_PLAN.replace("\"0.021\"", "0.021");
    let e = RatePlan::from_toml(&float).unwrap_err().to_string();
    assert!(e.contains("quote it"), "{e}");
    let dup = format!(
        "{TOML_PLAN}\n[[tariff]]\nclass = \"local\"\nservice = \"audio\"\nper_minute = \"0.01\"\n"
    );
    assert_eq!(
        RatePlan::from_toml(&dup),
        Err(PlanError::DuplicateTariff {
            class: CallClass::Local,
            service: Service::Audio
        })
    );
    assert!(RatePlan::from_toml(&TOML_PLAN.replace("max_duration_secs", "max_duration")).is_err());
    assert_eq!(
        RatePlan::from_toml(&TOML_PLAN.replace("1200", "0")),
        Err(PlanError::ZeroMaxDuration)
    );
    assert!(RatePlan::from_toml(&TOML_PLAN.replace("\"0.021\"", "\"0.00001\"")).is_err());
    assert!(RatePlan::from_toml(&TOML_PLAN.replace("\"local\"", "\"lunar\"")).is_err());
}

#[test]
fn csv_plan() {
    let csv = "class,service,per_minute,increment_secs\n\
               local,audio,0.021,6\n\
               domestic,audio,0.05,\n\
               international,video,\"0.11\",60\n";
    let p = RatePlan::from_csv(PlanSettings::new("csv"), csv.as_bytes()).unwrap();
    assert_eq!(
        p.tariff(CallClass::Local, Service::Audio),
        Some(t("0.021", 6))
    );
    assert_eq!(
        p.tariff(CallClass::Domestic, Service::Audio),
        Some(t("0.05", 60))
    );
    assert_eq!(
        p.tariff(CallClass::International, Service::Video),
        Some(t("0.11", 60))
    );
}

#[test]
fn csv_plan_errors_name_the_line() {
    let h = "class,service,per_minute,increment_secs\n";
    let parse =
        |body: &str| RatePlan::from_csv(PlanSettings::new("x"), format!("{h}{body}").as_bytes());
    assert_eq!(
        parse("local,audio,0.02,60\nlocal,fax,0.02,60\n"),
        Err(PlanError::BadService {
            line: 3,
            value: "fax".into()
        })
    );
    assert!(matches!(
        parse("local,audio,abc,60\n"),
        Err(PlanError::BadRate { line: 2, .. })
    ));
    assert!(matches!(
        parse("local,audio,0.02,1.5\n"),
        Err(PlanError::BadIncrement { line: 2, .. })
    ));
    // Issue 9 review (L1): one written form for numbers in a plan, as for amounts. The
    // spaces around an unquoted field are layout; inside the value, nothing but it.
    for bad in [
        "+60",
        "060",
        "6e1",
        "\"60 \"",
        "\" 60\"",
        "60\u{a0}",
        "4294967296",
    ] {
        assert!(
            matches!(
                parse(&format!("local,audio,0.02,{bad}\n")),
                Err(PlanError::BadIncrement { line: 2, .. })
            ),
            "{bad:?}"
        );
    }
    for bad in [
        "+0.05",
        "\" 0.05\"",
        "\"0.05 \"",
        "0.05\u{a0}",
        "00.05",
        ".05",
    ] {
        assert!(
            matches!(
                parse(&format!("local,audio,{bad},60\n")),
                Err(PlanError::BadRate { line: 2, .. })
            ),
            "{bad:?}"
        );
    }
    let laid_out = parse(" local , audio ,\t0.05\t, 60 \r\n").unwrap();
    assert_eq!(
        laid_out.tariff(CallClass::Local, Service::Audio),
        Some(t("0.05", 60))
    );
    assert_eq!(
        parse("local,audio,0.02\n"),
        Err(PlanError::FieldCount { line: 2, found: 3 })
    );
    assert!(matches!(
        parse("local,audio,-1,60\n"),
        Err(PlanError::BadRate { line: 2, .. })
    ));
    assert_eq!(
        RatePlan::from_csv(PlanSettings::new("x"), "".as_bytes()),
        Err(PlanError::MissingHeader)
    );
    assert!(matches!(
        RatePlan::from_csv(PlanSettings::new("x"), "a,b\n".as_bytes()),
        Err(PlanError::BadHeader { .. })
    ));
}

#[test]
fn tariff_json_is_exact() {
    let tariff = t("0.021", 6);
    let json = serde_json::to_string(&tariff).unwrap();
    assert_eq!(json, r#"{"per_minute":"0.021","increment_secs":6}"#);
    assert_eq!(serde_json::from_str::<Tariff>(&json).unwrap(), tariff);
    assert!(serde_json::from_str::<Tariff>(r#"{"per_minute":0.021,"increment_secs":6}"#).is_err());
    assert!(
        serde_json::from_str::<Tariff>(r#"{"per_minute":"0.021","increment_secs":0}"#).is_err()
    );
}
