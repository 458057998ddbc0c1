//! Notification decisions: the toggle, blocked categories and dislikes,
//! quiet hours in the user's zone across daylight-saving changes, caps per
//! local day and week (also across restarts), and reasons safe to show.

mod common;

use common::*;
use hearth_core::*;

/// Milliseconds of a UTC instant written as "2024-03-10T12:30Z".
fn utc(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

fn candidate(zone: &str, at: &str) -> NotificationCandidate {
    NotificationCandidate {
        kind: NotificationKind::NewEpisode,
        item_id: None,
        category: None,
        urgency: Urgency::Normal,
        time_zone: zone.into(),
        at_ms: Some(utc(at)),
    }
}

fn no_quiet_hours(max_per_day: u32, max_per_week: u32) -> NotificationPolicy {
    NotificationPolicy { max_per_day, max_per_week, quiet_start_minute: 0, quiet_end_minute: 0 }
}

const NY: &str = "America/New_York";

#[test]
fn quiet_hours_follow_new_york_into_and_out_of_daylight_saving() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    assert_eq!(h.notification_policy().unwrap(), NotificationPolicy::default());
    h.set_notification_policy(NotificationPolicy { max_per_day: 10, max_per_week: 50, ..Default::default() }).unwrap();

    // Saturday 9 March 2024, EST (UTC-5): 12:30Z is 07:30, quiet until 08:00 = 13:00Z.
    let d = h.should_notify(candidate(NY, "2024-03-09T12:30Z")).unwrap();
    assert_eq!((d.allowed, d.reason), (false, NotifyReason::QuietHours));
    assert_eq!(d.retry_at_ms, Some(utc("2024-03-09T13:00Z")));
    assert_eq!(d.reason_text, "Quiet hours, 22:00 to 08:00");
    // Sunday 10 March, after the 02:00 change to EDT (UTC-4): 12:30Z is
    // 08:30, allowed (a fixed UTC-5 would call it 07:30 and hold it).
    let d = h.should_notify(candidate(NY, "2024-03-10T12:30Z")).unwrap();
    assert_eq!((d.allowed, d.reason, d.retry_at_ms), (true, NotifyReason::Allowed, None));
    // 11:30Z is 07:30 EDT: held until 08:00 EDT = 12:00Z (not 13:00Z).
    let d = h.should_notify(candidate(NY, "2024-03-10T11:30Z")).unwrap();
    assert_eq!((d.reason, d.retry_at_ms), (NotifyReason::QuietHours, Some(utc("2024-03-10T12:00Z"))));

    // Sunday 3 November, back to EST at 02:00: 12:30Z is 07:30 again.
    let d = h.should_notify(candidate(NY, "2024-11-02T12:30Z")).unwrap();
    assert!(d.allowed, "08:30 EDT on Saturday");
    let d = h.should_notify(candidate(NY, "2024-11-03T12:30Z")).unwrap();
    assert_eq!((d.reason, d.retry_at_ms), (NotifyReason::QuietHours, Some(utc("2024-11-03T13:00Z"))));

    // Evening quiet hours start at 22:00 local: 02:30Z on 4 November is
    // 21:30 EST (allowed), 03:30Z is 22:30 EST (held).
    assert!(h.should_notify(candidate(NY, "2024-11-04T02:30Z")).unwrap().allowed);
    let d = h.should_notify(candidate(NY, "2024-11-04T03:30Z")).unwrap();
    assert_eq!((d.reason, d.retry_at_ms), (NotifyReason::QuietHours, Some(utc("2024-11-04T13:00Z"))));

    // Low urgency is dropped, not deferred.
    let low = NotificationCandidate { urgency: Urgency::Low, ..candidate(NY, "2024-11-04T03:30Z") };
    let d = h.should_notify(low).unwrap();
    assert_eq!((d.allowed, d.reason, d.retry_at_ms), (false, NotifyReason::QuietHours, None));
}

#[test]
fn lord_howe_half_hour_shift_and_other_zones() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.set_notification_policy(NotificationPolicy { max_per_day: 10, max_per_week: 50, ..Default::default() }).unwrap();
    let lh = "Australia/Lord_Howe";
    // 5 April 2024, +11:00: 21:15Z is 08:15 on the 6th, allowed.
    assert!(h.should_notify(candidate(lh, "2024-04-05T21:15Z")).unwrap().allowed);
    // On 7 April the clocks went back half an hour (+10:30): 21:15Z on the
    // 6th is 07:45 on the 7th, quiet until 08:00 = 21:30Z.
    let d = h.should_notify(candidate(lh, "2024-04-06T21:15Z")).unwrap();
    assert_eq!((d.reason, d.retry_at_ms), (NotifyReason::QuietHours, Some(utc("2024-04-06T21:30Z"))));

    // One instant, three zones: 2024-06-01T21:30Z is 23:30 in Paris
    // (quiet), 06:30 on the 2nd in Tokyo (quiet), 17:30 in New York.
    let at = "2024-06-01T21:30Z";
    assert_eq!(h.should_notify(candidate("Europe/Paris", at)).unwrap().reason, NotifyReason::QuietHours);
    let d = h.should_notify(candidate("Asia/Tokyo", at)).unwrap();
    assert_eq!((d.reason, d.retry_at_ms), (NotifyReason::QuietHours, Some(utc("2024-06-01T23:00Z"))));
    assert!(h.should_notify(candidate(NY, at)).unwrap().allowed);
    assert!(h.should_notify(candidate("UTC", "2024-06-01T12:00Z")).unwrap().allowed);
}

#[test]
fn caps_count_local_days_across_the_23_hour_day_and_hold_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.set_notification_policy(no_quiet_hours(2, 3)).unwrap();
    // Sunday 10 March 2024 in New York lasts 23 hours, 05:00Z to 04:00Z.
    assert!(h.should_notify(candidate(NY, "2024-03-10T05:30Z")).unwrap().allowed); // 00:30 EST
    assert!(h.should_notify(candidate(NY, "2024-03-11T03:30Z")).unwrap().allowed); // 23:30 EDT
    let d = h.should_notify(candidate(NY, "2024-03-11T03:45Z")).unwrap();
    assert_eq!((d.allowed, d.reason), (false, NotifyReason::DailyCapReached));
    assert_eq!(d.reason_text, "Already 2 notifications today");
    // The next local day starts at 00:00 EDT = 04:00Z.
    assert_eq!(d.retry_at_ms, Some(utc("2024-03-11T04:00Z")));

    // Restart: the sends are sealed in the store.
    h.close().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    assert_eq!(h.should_notify(candidate(NY, "2024-03-11T03:50Z")).unwrap().reason, NotifyReason::DailyCapReached);
    // 04:30Z is 00:30 on Monday (a fixed UTC-5 would still say Sunday).
    assert!(h.should_notify(candidate(NY, "2024-03-11T04:30Z")).unwrap().allowed);

    // Three this week: Tuesday is held by the weekly cap until the Sunday
    // sends leave the seven-day window (Sunday 17th, 00:00 EDT = 04:00Z).
    let d = h.should_notify(candidate(NY, "2024-03-12T16:00Z")).unwrap();
    assert_eq!(
        (d.reason, d.reason_text.as_str()),
        (NotifyReason::WeeklyCapReached, "Already 3 notifications this week")
    );
    assert_eq!(d.retry_at_ms, Some(utc("2024-03-17T04:00Z")));
    let low = NotificationCandidate { urgency: Urgency::Low, ..candidate(NY, "2024-03-12T16:00Z") };
    assert_eq!(h.should_notify(low).unwrap().retry_at_ms, None);
    // High urgency is not held by caps (and is counted).
    let high = NotificationCandidate { urgency: Urgency::High, ..candidate(NY, "2024-03-12T16:00Z") };
    assert!(h.should_notify(high.clone()).unwrap().allowed);
    assert!(h.should_notify(high).unwrap().allowed);
    // ...so Tuesday's day cap is reached too (it is checked first), and
    // Sunday 17th no longer frees a slot in the week: the retry moves on.
    let d = h.should_notify(candidate(NY, "2024-03-12T16:30Z")).unwrap();
    assert_eq!(d.reason, NotifyReason::DailyCapReached);
    assert_eq!(d.retry_at_ms, Some(utc("2024-03-18T04:00Z")));
    // In Tokyo the same sends fall on other local days: the caps follow
    // the zone given with the candidate.
    assert_eq!(h.should_notify(candidate("Asia/Tokyo", "2024-03-20T03:00Z")).unwrap().reason, NotifyReason::Allowed);
}

#[test]
fn the_toggle_blocked_categories_and_dislikes_hold_every_urgency() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.set_notification_policy(no_quiet_hours(1, 7)).unwrap();
    h.upsert_catalog(vec![item("scary", "Night Terror", &["horror"]), item("meh", "Meh", &["drama"])]).unwrap();
    h.record(event("meh", EventKind::Dislike, T0)).unwrap();
    h.set_blocked_categories(vec!["horror".into()]).unwrap();
    let at = "2024-06-01T12:00Z";
    for urgency in [Urgency::Low, Urgency::Normal, Urgency::High] {
        let by_item = NotificationCandidate { item_id: Some("scary".into()), urgency, ..candidate("UTC", at) };
        let d = h.should_notify(by_item).unwrap();
        assert_eq!((d.allowed, d.reason, d.retry_at_ms), (false, NotifyReason::BlockedCategory, None));
        let by_category = NotificationCandidate { category: Some("horror".into()), urgency, ..candidate("UTC", at) };
        assert_eq!(h.should_notify(by_category).unwrap().reason, NotifyReason::BlockedCategory);
        let disliked = NotificationCandidate { item_id: Some("meh".into()), urgency, ..candidate("UTC", at) };
        assert_eq!(h.should_notify(disliked).unwrap().reason, NotifyReason::DislikedItem);
    }
    assert!(h.settings().unwrap().notifications_enabled, "on by default");
    h.set_notifications_enabled(false).unwrap();
    let high = NotificationCandidate { urgency: Urgency::High, ..candidate("UTC", at) };
    let d = h.should_notify(high.clone()).unwrap();
    assert_eq!(
        (d.allowed, d.reason, d.reason_text.as_str()),
        (false, NotifyReason::NotificationsOff, "Notifications are off")
    );
    h.set_notifications_enabled(true).unwrap();
    // Nothing held above was counted: the day's one slot is still free.
    assert!(h.should_notify(candidate("UTC", at)).unwrap().allowed);
    let d = h.should_notify(candidate("UTC", "2024-06-01T13:00Z")).unwrap();
    assert_eq!(d.reason_text, "Already 1 notification today");
}

#[test]
fn bad_input_is_refused_and_counts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.set_notification_policy(no_quiet_hours(1, 7)).unwrap();
    let field = |r: Result<NotificationDecision, HearthError>| match r {
        Err(HearthError::InvalidInput { field, .. }) => field,
        other => panic!("expected InvalidInput, got {other:?}"),
    };
    assert_eq!(field(h.should_notify(candidate("Mars/Olympus_Mons", "2024-06-01T12:00Z"))), "time_zone");
    assert_eq!(field(h.should_notify(candidate("", "2024-06-01T12:00Z"))), "time_zone");
    let early = NotificationCandidate { at_ms: Some(5), ..candidate("UTC", "2024-06-01T12:00Z") };
    assert_eq!(field(h.should_notify(early)), "at_ms");
    let empty = NotificationCandidate { category: Some(String::new()), ..candidate("UTC", "2024-06-01T12:00Z") };
    assert_eq!(field(h.should_notify(empty)), "category");
    let long = NotificationCandidate { item_id: Some("x".repeat(300)), ..candidate("UTC", "2024-06-01T12:00Z") };
    assert_eq!(field(h.should_notify(long)), "item_id");
    // The day's single slot is still free.
    assert!(h.should_notify(candidate("UTC", "2024-06-01T12:00Z")).unwrap().allowed);

    let policy = h.notification_policy().unwrap();
    for (bad, name) in [
        (NotificationPolicy { quiet_start_minute: 1440, ..policy.clone() }, "quiet_start_minute"),
        (NotificationPolicy { quiet_end_minute: 5000, ..policy.clone() }, "quiet_end_minute"),
        (NotificationPolicy { max_per_day: 1000, ..policy.clone() }, "max_per_day"),
    ] {
        match h.set_notification_policy(bad) {
            Err(HearthError::InvalidInput { field, .. }) => assert_eq!(field, name),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(h.notification_policy().unwrap(), policy);
    // Without `at_ms` the decision is for now.
    let now = NotificationCandidate { at_ms: None, ..candidate("UTC", "2024-06-01T12:00Z") };
    let d = h.should_notify(now).unwrap();
    assert!(matches!(d.reason, NotifyReason::Allowed | NotifyReason::DailyCapReached));
}

#[test]
fn reasons_never_reveal_an_inference() {
    // A dormant, at-risk-looking user with a strong affinity: no reason
    // text mentions a segment, a category or an item.
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.upsert_catalog(vec![item("d1", "Harbor Lights", &["drama"]), item("h1", "Night Terror", &["horror"])]).unwrap();
    h.record_batch(vec![event("d1", EventKind::Complete, T0), event("h1", EventKind::Dislike, T0 + 1)]).unwrap();
    h.set_blocked_categories(vec!["horror".into()]).unwrap();
    h.set_notification_policy(NotificationPolicy { max_per_day: 1, max_per_week: 1, ..Default::default() }).unwrap();
    let mut texts = Vec::new();
    for (item, cat, at) in [
        (Some("d1"), None, "2024-06-01T12:00Z"),
        (Some("d1"), Some("drama"), "2024-06-01T13:00Z"),
        (Some("d1"), None, "2024-06-03T13:00Z"),
        (Some("h1"), None, "2024-06-01T12:00Z"),
        (None, Some("horror"), "2024-06-01T12:00Z"),
        (None, None, "2024-06-01T23:00Z"),
    ] {
        let c = NotificationCandidate {
            kind: NotificationKind::Recommendation,
            item_id: item.map(String::from),
            category: cat.map(String::from),
            ..candidate("UTC", at)
        };
        texts.push(h.should_notify(c).unwrap().reason_text);
    }
    h.set_notifications_enabled(false).unwrap();
    texts.push(h.should_notify(candidate("UTC", "2024-06-09T12:00Z")).unwrap().reason_text);
    assert_eq!(texts.len(), 7);
    for t in &texts {
        let lower = t.to_lowercase();
        for word in [
            "risk",
            "dormant",
            "churn",
            "power",
            "binge",
            "abandon",
            "drama",
            "horror",
            "harbor",
            "terror",
            "because you",
        ] {
            assert!(!lower.contains(word), "{t:?} mentions {word}");
        }
    }
}
