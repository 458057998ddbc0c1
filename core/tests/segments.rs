//! Segments over scripted histories, the segment report's consent and
//! memoization, and a 10,000-device simulation of the report and the
//! coordinator's estimator.

mod common;

use common::*;
use hearth_core::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

fn at(item: &str, kind: EventKind, t: i64, progress: f64) -> Event {
    let mut e = event(item, kind, t);
    e.duration_ms = Some(3_600_000);
    e.position_ms = Some((3_600_000.0 * progress) as u64);
    e
}

/// One evening session starting at `t`: `items` watched to the end, one
/// after the other, an hour each (and an impression, which is no action).
fn binge(t: i64, day: i64, items: &[&str]) -> Vec<Event> {
    let mut out = vec![event(&format!("shown{day}"), EventKind::Impression, t - 5 * MIN)];
    for (k, id) in items.iter().enumerate() {
        let start = t + k as i64 * HOUR;
        out.push(at(id, EventKind::Play, start, 0.0));
        out.push(at(id, EventKind::Progress, start + 30 * MIN, 0.5));
        out.push(at(id, EventKind::Complete, start + 59 * MIN, 1.0));
    }
    out
}

fn catalog() -> Vec<CatalogItem> {
    let mut items = Vec::new();
    for d in 0..60 {
        items.push(item(&format!("d{d}"), "Drama", &["drama"]));
    }
    items.push(item("c1", "Comedy", &["comedy"]));
    items.push(item("a1", "Long one", &["documentary"]));
    items.push(item("a2", "Another long one", &["documentary"]));
    items
}

#[test]
fn a_scripted_history_moves_through_every_stage_and_level() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.upsert_catalog(catalog()).unwrap();
    let t0 = T0 + 20 * HOUR; // 2023-11-15T18:13:20Z, the local hour is 21

    // Installed, nothing done yet.
    let s = h.segments_at(t0).unwrap();
    assert_eq!(s.lifecycle, LifecycleStage::New);
    assert_eq!(s.engagement, EngagementLevel::Light);
    assert_eq!(s.days_since_last_action, None);
    assert!(s.top_categories.is_empty() && s.preferred_hours.is_empty());
    assert_eq!((s.daypart, s.primary_device), (None, None));

    // Day 0: one film of 90 minutes. The window is the 7-day floor: 1
    // session and 90 minutes a week: Regular.
    // (The player reports progress every 25 minutes: one session.)
    h.record_batch(vec![
        at("d0", EventKind::Play, t0, 0.0),
        at("d0", EventKind::Progress, t0 + 25 * MIN, 0.25),
        at("d0", EventKind::Progress, t0 + 50 * MIN, 0.5),
        at("d0", EventKind::Progress, t0 + 75 * MIN, 0.8),
        at("d0", EventKind::Complete, t0 + 90 * MIN, 1.0),
    ])
    .unwrap();
    let s = h.segments_at(t0 + 2 * HOUR).unwrap();
    assert_eq!(s.lifecycle, LifecycleStage::New);
    assert_eq!(s.engagement, EngagementLevel::Regular);
    assert!((s.sessions_per_week - 1.0).abs() < 1e-9, "{}", s.sessions_per_week);
    assert!((s.minutes_per_week - 90.0).abs() < 1e-9, "{}", s.minutes_per_week);
    assert_eq!(s.days_since_last_action, Some(0));
    assert!(!s.binge_watcher);
    assert_eq!(s.top_categories, vec![CategoryStrength { category: "drama".into(), strength: 1.0 }]);
    assert_eq!(s.preferred_hours, vec![21]);
    assert_eq!(s.daypart, Some(Daypart::Evening));
    assert_eq!(s.primary_device, Some(DeviceClass::Tv));

    // Days 1 to 20: three dramas every evening (a binge each), a comedy on
    // day 3, and two long documentaries left half-way on days 5 and 6.
    for day in 1..=20 {
        let t = t0 + day * DAY;
        let ids: Vec<String> = (0..3).map(|k| format!("d{}", (day * 3 + k) % 60)).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut evs = binge(t, day, &refs);
        if day == 3 {
            evs.push(at("c1", EventKind::Complete, t + 3 * HOUR + 10 * MIN, 1.0));
        }
        if day == 5 || day == 6 {
            let id = if day == 5 { "a1" } else { "a2" };
            evs.push(at(id, EventKind::Play, t + 3 * HOUR + 5 * MIN, 0.0));
            evs.push(at(id, EventKind::Progress, t + 3 * HOUR + 25 * MIN, 0.5));
        }
        h.record_batch(evs).unwrap();
        let s = h.segments_at(t + 4 * HOUR).unwrap();
        // New for 14 days from the first action, then Active.
        let stage = if day < 14 { LifecycleStage::New } else { LifecycleStage::Active };
        assert_eq!(s.lifecycle, stage, "day {day}");
        assert!(s.binge_watcher, "day {day}");
        // A session every day of the window (the 7-day floor, then the
        // days since the first action): 7 a week or more, 3 h each: Power
        // from day 6, once the window holds five sessions a week.
        if day >= 6 {
            assert_eq!(s.engagement, EngagementLevel::Power, "day {day}: {s:?}");
        }
    }
    let day20 = t0 + 20 * DAY + 4 * HOUR;
    let s = h.segments_at(day20).unwrap();
    assert_eq!(s.lifecycle, LifecycleStage::Active);
    assert_eq!(s.engagement, EngagementLevel::Power);
    assert_eq!(s.binge_sessions, 20);
    // a1 and a2: half-way, untouched for 14 and 15 days.
    assert_eq!(s.abandoned_items, 2);
    assert!(s.abandoner);
    assert_eq!(s.top_categories[0].category, "drama");
    assert!(s.top_categories[0].strength > 0.8, "{:?}", s.top_categories);
    let shares: f64 = s.top_categories.iter().map(|c| c.strength).sum();
    assert!(shares <= 1.0 + 1e-9);
    assert_eq!(s.preferred_hours[0], 21);

    // Quiet from here: AtRisk after 7 idle days, Dormant after 30; the
    // window no longer holds the sessions, and the binges age out of it.
    let s = h.segments_at(day20 + 6 * DAY).unwrap();
    assert_eq!((s.lifecycle, s.days_since_last_action), (LifecycleStage::Active, Some(6)));
    let s = h.segments_at(day20 + 8 * DAY).unwrap();
    assert_eq!((s.lifecycle, s.days_since_last_action), (LifecycleStage::AtRisk, Some(8)));
    assert_eq!(s.engagement, EngagementLevel::Power, "20 sessions in the last 28 days");
    let s = h.segments_at(day20 + 31 * DAY).unwrap();
    assert_eq!(s.lifecycle, LifecycleStage::Dormant);
    assert_eq!(s.engagement, EngagementLevel::Light);
    assert!(!s.binge_watcher && !s.abandoner);

    // Back after 40 days: Active again (no longer new), Light so far.
    let back = day20 + 40 * DAY;
    h.record(at("d1", EventKind::Play, back, 0.0)).unwrap();
    let s = h.segments_at(back + MIN).unwrap();
    assert_eq!((s.lifecycle, s.engagement), (LifecycleStage::Active, EngagementLevel::Light));

    // The same answers after reopening (the activity summary is rebuilt
    // from the sealed history).
    let before = h.segments_at(back + MIN).unwrap();
    h.close().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    assert_eq!(h.segments_at(back + MIN).unwrap(), before);

    // Blocking a category takes it out of the affinities.
    h.set_blocked_categories(vec!["drama".into()]).unwrap();
    let s = h.segments_at(back + MIN).unwrap();
    assert!(s.top_categories.iter().all(|c| c.category != "drama"), "{:?}", s.top_categories);
}

#[test]
fn thresholds_come_from_the_config_and_bad_configs_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.upsert_catalog(catalog()).unwrap();
    assert_eq!(h.segment_config().unwrap(), SegmentConfig::default());
    h.record_batch(binge(T0, 0, &["d1", "d2"])).unwrap();
    let as_of = T0 + 3 * HOUR;
    let s = h.segments_at(as_of).unwrap();
    assert!(!s.binge_watcher, "2 items is below the default of 3");
    assert_eq!(s.engagement, EngagementLevel::Regular);

    let config = SegmentConfig {
        binge_items_per_session: 2,
        regular_sessions_per_week: 2.0,
        new_days: 1,
        ..SegmentConfig::default()
    };
    h.set_segment_config(config.clone()).unwrap();
    let s = h.segments_at(as_of).unwrap();
    assert!(s.binge_watcher);
    assert_eq!(s.engagement, EngagementLevel::Light, "1 session a week is below 2");
    assert_eq!(s.lifecycle, LifecycleStage::New);
    assert_eq!(h.segments_at(as_of + 2 * DAY).unwrap().lifecycle, LifecycleStage::Active);

    let bad = [
        (SegmentConfig { dormant_after_days: 5, ..config.clone() }, "dormant_after_days"),
        (SegmentConfig { window_days: 90, ..config.clone() }, "window_days"),
        (SegmentConfig { power_sessions_per_week: 0.5, ..config.clone() }, "power_sessions_per_week"),
        (SegmentConfig { min_category_share: f64::NAN, ..config.clone() }, "min_category_share"),
        (SegmentConfig { report_epsilon: 0.0, ..config.clone() }, "report_epsilon"),
        (SegmentConfig { report_categories: vec!["a".into(), "a".into()], ..config.clone() }, "report_categories"),
        (SegmentConfig { binge_items_per_session: 1, ..config.clone() }, "binge_items_per_session"),
    ];
    for (c, field) in bad {
        match h.set_segment_config(c) {
            Err(HearthError::InvalidInput { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(h.segment_config().unwrap(), config);
    }
    assert!(matches!(h.segments_at(5), Err(HearthError::InvalidInput { field, .. }) if field == "as_of_ms"));
    // The config is sealed with the store and survives reopening.
    h.close().unwrap();
    assert_eq!(open(dir.path(), KEY_A).unwrap().segment_config().unwrap(), config);
}

#[test]
fn forgetting_and_retention_update_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.upsert_catalog(catalog()).unwrap();
    h.record_batch(binge(T0, 0, &["d1", "d2", "d3"])).unwrap();
    let as_of = T0 + 4 * HOUR;
    assert!(h.segments_at(as_of).unwrap().binge_watcher);
    h.forget_item("d3".into()).unwrap();
    let s = h.segments_at(as_of).unwrap();
    assert!(!s.binge_watcher, "two finished items left in the session");
    h.delete_all().unwrap();
    let s = h.segments_at(as_of).unwrap();
    assert_eq!((s.lifecycle, s.days_since_last_action, s.sessions_per_week), (LifecycleStage::New, None, 0.0));
}

#[test]
fn the_report_needs_consent_and_repeats_itself_for_the_same_memberships() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    assert!(!h.settings().unwrap().segment_reports_opt_in, "off by default");
    assert_eq!(h.segment_report().unwrap(), SegmentReportOutcome::NoConsent);

    let config = SegmentConfig { report_categories: vec!["drama".into(), "comedy".into()], ..SegmentConfig::default() };
    h.set_segment_config(config.clone()).unwrap();
    h.set_segment_reports_opt_in(true).unwrap();
    let SegmentReportOutcome::Report { report } = h.segment_report().unwrap() else { panic!("no report") };
    assert_eq!(report.labels, config.report_labels());
    assert_eq!(report.bits.len(), config.report_labels().len().div_ceil(8));
    assert_eq!(report.epsilon, config.report_epsilon);
    assert_eq!(report.epsilon_spent, config.report_epsilon);
    assert!((report.bit_epsilon * config.report_sensitivity() as f64 - report.epsilon).abs() < 1e-12);
    assert!((report.keep_probability - config.report_keep_probability()).abs() < 1e-12);

    // Unchanged memberships: the same randomized bits, nothing spent, also
    // after reopening.
    let SegmentReportOutcome::Report { report: again } = h.segment_report().unwrap() else { panic!() };
    assert_eq!((again.bits.clone(), again.epsilon_spent), (report.bits.clone(), 0.0));
    h.close().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    let SegmentReportOutcome::Report { report: later } = h.segment_report().unwrap() else { panic!() };
    assert_eq!((later.bits, later.epsilon_spent), (report.bits, 0.0));

    // A new epsilon is a new randomization, spent again.
    h.set_segment_config(SegmentConfig { report_epsilon: 1.0, ..config }).unwrap();
    let SegmentReportOutcome::Report { report: fresh } = h.segment_report().unwrap() else { panic!() };
    assert_eq!(fresh.epsilon_spent, 1.0);

    h.set_segment_reports_opt_in(false).unwrap();
    assert_eq!(h.segment_report().unwrap(), SegmentReportOutcome::NoConsent);
}

#[test]
fn settings_stored_before_the_new_toggles_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    let json = h.export_json().unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let settings = doc["settings"].as_object_mut().unwrap();
    assert!(settings.remove("notifications_enabled").is_some());
    assert!(settings.remove("segment_reports_opt_in").is_some());
    settings.insert("history_paused".into(), true.into());
    let dir2 = tempfile::tempdir().unwrap();
    let h2 = open(dir2.path(), KEY_B).unwrap();
    h2.import_json(doc.to_string()).unwrap();
    let s = h2.settings().unwrap();
    assert!(s.history_paused && s.notifications_enabled && !s.segment_reports_opt_in, "{s:?}");
}

// ----- the 10,000-device simulation

/// A device's true segments, drawn with uneven prevalences.
fn random_segments(rng: &mut StdRng, categories: &[&str]) -> Segments {
    let pick = |rng: &mut StdRng, weights: &[f64]| {
        let u: f64 = rng.random::<f64>() * weights.iter().sum::<f64>();
        let mut acc = 0.0;
        for (i, w) in weights.iter().enumerate() {
            acc += w;
            if u < acc {
                return i;
            }
        }
        weights.len() - 1
    };
    let lifecycle = [LifecycleStage::New, LifecycleStage::Active, LifecycleStage::AtRisk, LifecycleStage::Dormant]
        [pick(rng, &[0.1, 0.55, 0.2, 0.15])];
    let engagement =
        [EngagementLevel::Light, EngagementLevel::Regular, EngagementLevel::Power][pick(rng, &[0.5, 0.35, 0.15])];
    let daypart =
        [None, Some(Daypart::Night), Some(Daypart::Morning), Some(Daypart::Afternoon), Some(Daypart::Evening)]
            [pick(rng, &[0.05, 0.05, 0.15, 0.2, 0.55])];
    let primary_device = [Some(DeviceClass::Phone), Some(DeviceClass::Tablet), Some(DeviceClass::Tv), None]
        [pick(rng, &[0.5, 0.1, 0.35, 0.05])];
    let mut top: Vec<CategoryStrength> = Vec::new();
    for (c, share) in categories.iter().zip([0.6, 0.4, 0.25, 0.1, 0.05]) {
        if top.len() < 3 && rng.random::<f64>() < share {
            top.push(CategoryStrength { category: c.to_string(), strength: 0.3 });
        }
    }
    Segments {
        as_of_ms: T0,
        lifecycle,
        engagement,
        sessions_per_week: 0.0,
        minutes_per_week: 0.0,
        days_since_last_action: Some(1),
        top_categories: top,
        binge_sessions: 0,
        binge_watcher: rng.random::<f64>() < 0.3,
        abandoned_items: 0,
        abandoner: rng.random::<f64>() < 0.12,
        preferred_hours: vec![],
        daypart,
        primary_device,
    }
}

#[test]
fn ten_thousand_devices_estimated_within_four_standard_errors_and_no_report_in_clear() {
    const N: usize = 10_000;
    let categories = ["drama", "comedy", "news", "sports", "kids"];
    let config = SegmentConfig {
        report_categories: categories.iter().map(|c| c.to_string()).collect(),
        report_epsilon: 4.0,
        ..SegmentConfig::default()
    };
    let d = config.report_labels().len();
    // 4 one-of groups (2 bits each), 2 flags, min(2 * 3, 5) category bits.
    assert_eq!(config.report_sensitivity(), 15);
    let p = config.report_keep_probability();

    let mut rng = StdRng::seed_from_u64(20_240_310);
    let mut truth_sizes = vec![0u64; d];
    let mut reports = Vec::with_capacity(N);
    let mut flipped = 0u64;
    let mut in_clear = 0u64;
    for i in 0..N {
        let seg = random_segments(&mut rng, &categories);
        let truth = membership_bits(&seg, &config);
        assert_eq!(truth.len(), d);
        for (j, b) in truth.iter().enumerate() {
            truth_sizes[j] += *b as u64;
        }
        let report = simulated_report(&seg, &config, 0x5EED_0000 + i as u64);
        // Bytes-level: how far the report's bits are from the true vector's.
        let packed_truth = pack_bits(&truth);
        assert_eq!(report.bits.len(), packed_truth.len());
        let differing: u32 = report.bits.iter().zip(&packed_truth).map(|(a, b)| (a ^ b).count_ones()).sum();
        flipped += differing as u64;
        in_clear += (differing == 0) as u64;
        reports.push(report);
    }

    // Every bit is flipped with probability 1 - p, independently: the share
    // of flipped bits is within 4 binomial standard deviations of 1 - p.
    let bits = (N * d) as f64;
    let share = flipped as f64 / bits;
    let sd = (p * (1.0 - p) / bits).sqrt();
    assert!((share - (1.0 - p)).abs() < 4.0 * sd, "flipped {share:.4}, expected {:.4} +- {:.4}", 1.0 - p, 4.0 * sd);
    // A report equals its device's true vector with probability p^d (about
    // 2e-6 here): such a report is noise that happens to agree, no more
    // likely than any other vector near the truth.
    let expected_clear = N as f64 * p.powi(d as i32);
    assert!((in_clear as f64) < expected_clear + 4.0 * expected_clear.sqrt() + 1.0, "{in_clear} in clear");
    // The report carries the randomized bits and public parameters only.
    let v = serde_json::to_value(&reports[0]).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["bit_epsilon", "bits", "epsilon", "epsilon_spent", "keep_probability", "labels"]);

    // The coordinator's estimate: unbiased, with standard error
    // sigma = sqrt(N p (1 - p)) / (2p - 1) for every segment.
    let est = estimate_segment_sizes(&reports).unwrap();
    let sigma = (N as f64 * p * (1.0 - p)).sqrt() / (2.0 * p - 1.0);
    assert!((est.std_error - sigma).abs() < 1e-9);
    assert_eq!(est.labels, config.report_labels());
    println!("epsilon {} over {d} bits: p = {p:.4}, sigma = {sigma:.1} devices", config.report_epsilon);
    for ((label, size), truth) in est.labels.iter().zip(&est.sizes).zip(&truth_sizes) {
        let err = size - *truth as f64;
        println!("  {label:<20} true {truth:>5}  estimated {size:>8.1}  error {err:>+7.1}");
        assert!(err.abs() < 4.0 * sigma, "{label}: error {err:.1} beyond 4 sigma ({:.1})", 4.0 * sigma);
    }
}

#[test]
fn the_estimator_is_unbiased_over_repetitions() {
    // 40 populations of 2,000 devices: the mean error of each segment is
    // within 4 standard errors of the mean (sigma / sqrt(40)) of zero.
    const N: usize = 2_000;
    const R: usize = 40;
    let categories = ["drama", "comedy", "news", "sports", "kids"];
    let config = SegmentConfig {
        report_categories: categories.iter().map(|c| c.to_string()).collect(),
        report_epsilon: 2.0,
        ..SegmentConfig::default()
    };
    let d = config.report_labels().len();
    let p = config.report_keep_probability();
    let sigma = (N as f64 * p * (1.0 - p)).sqrt() / (2.0 * p - 1.0);
    let mut rng = StdRng::seed_from_u64(7);
    let mut mean_err = vec![0.0; d];
    for r in 0..R {
        let mut truth_sizes = vec![0u64; d];
        let mut reports = Vec::with_capacity(N);
        for i in 0..N {
            let seg = random_segments(&mut rng, &categories);
            for (j, b) in membership_bits(&seg, &config).into_iter().enumerate() {
                truth_sizes[j] += b as u64;
            }
            reports.push(simulated_report(&seg, &config, (r * N + i) as u64));
        }
        let est = estimate_segment_sizes(&reports).unwrap();
        for ((m, size), truth) in mean_err.iter_mut().zip(&est.sizes).zip(&truth_sizes) {
            *m += (size - *truth as f64) / R as f64;
        }
    }
    for (j, e) in mean_err.iter().enumerate() {
        assert!(e.abs() < 4.0 * sigma / (R as f64).sqrt(), "bit {j}: mean error {e:.1}");
    }
    // Mixed schemas are refused, not averaged.
    let a = simulated_report(&random_segments(&mut rng, &categories), &config, 1);
    let other = SegmentConfig { report_epsilon: 1.0, ..config };
    let b = simulated_report(&random_segments(&mut rng, &categories), &other, 2);
    assert!(matches!(estimate_segment_sizes(&[a, b]), Err(HearthError::InvalidInput { .. })));
    assert!(matches!(estimate_segment_sizes(&[]), Err(HearthError::InvalidInput { .. })));
}
