//! Segments, computed on the device: lifecycle stage, engagement level,
//! content affinities, binge and abandonment signals, preferred hours and
//! device; and the segment report that may leave the device, randomized
//! there first (local differential privacy).
//!
//! Inputs are the sealed profile (category affinities, hour and device mix,
//! per-item progress) and the user's activity, a compact summary of the
//! history kept current as events arrive: the first and last action and the
//! sessions of the last [`SESSION_RETENTION_DAYS`] days. The activity is
//! built from the history once per process (on first use) and then folded
//! event by event by `Session::store_events`; deletions (forget, retention,
//! delete-all) drop it and it is rebuilt on next use. Every definition is in
//! the README's "Segments and notifications" section.
//!
//! ## The report
//! The device's memberships are a vector of bits over a public schema
//! ([`SegmentConfig`] fixes it; every device of an app uses the same
//! config). Each bit is sent through randomized response: kept with
//! probability `p = e^b / (1 + e^b)`, flipped otherwise, with
//! `b = epsilon / sensitivity` where `sensitivity` is the largest number of
//! bits in which two devices' true vectors can differ (2 per one-of group, 1
//! per flag, `min(2 * top_categories, report_categories)` for the category
//! bits). For any two true vectors and any output the likelihood ratio is at
//! most `e^(b * sensitivity) = e^epsilon`: the report is epsilon-LDP.
//!
//! Why per-bit symmetric randomized response and not k-ary randomized
//! response or optimized unary encoding (OUE) per group: the category bits
//! are a set, not a one-of choice, and flags are single bits, so one
//! mechanism over bits serves every group with one unbiased estimator; and
//! at the per-group budgets this schema leaves (`2b`, about 0.2 to 0.8 at
//! epsilon 1 to 4), the variance of symmetric unary encoding is within a few
//! percent of OUE's (`e^(g/2)/(e^(g/2)-1)^2` against `4e^g/(e^g-1)^2`; at
//! g = 0.5 they are 15.9 and 15.7 per device).
//!
//! A report for a true vector the device already reported under the same
//! schema and epsilon is the same randomized vector again (memoized and
//! sealed, as RAPPOR's permanent randomized response): asking again reveals
//! nothing new, and spends no epsilon.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::history::{DeviceClass, Event, EventKind, MIN_TIMESTAMP_MS, now_ms};
use crate::store::profile::Profile;
use crate::store::settings::PrivacySettings;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// A session ends when the user does nothing for longer than this.
pub const SESSION_GAP_MINUTES: i64 = 30;
const SESSION_GAP_MS: i64 = SESSION_GAP_MINUTES * MINUTE_MS;
/// Sessions older than this (before the last action) are dropped from the
/// activity summary; engagement windows are at most this long.
pub const SESSION_RETENTION_DAYS: u32 = 56;
/// Progress at or past which an item counts as finished.
const FINISHED_PROGRESS: f64 = 0.9;
/// Distinct finished items remembered per session (enough for any binge
/// threshold accepted).
const MAX_FINISHED_PER_SESSION: usize = 32;
/// Distinct true vectors whose randomized report is remembered.
const CONFIG_KEY: &str = "segments.config";

/// Where the user is in their life with the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleStage {
    /// First action less than `new_days` ago (or none yet), and active lately.
    New,
    /// Acted within the last `at_risk_after_days`.
    Active,
    /// Last action `at_risk_after_days` to `dormant_after_days` ago.
    AtRisk,
    /// Last action `dormant_after_days` or more ago.
    Dormant,
}

/// How much the user uses the app, by sessions and minutes a week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum EngagementLevel {
    Light,
    Regular,
    Power,
}

/// A quarter of the local day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum Daypart {
    /// 00:00 to 05:59.
    Night,
    /// 06:00 to 11:59.
    Morning,
    /// 12:00 to 17:59.
    Afternoon,
    /// 18:00 to 23:59.
    Evening,
}

impl Daypart {
    const ALL: [Daypart; 4] = [Daypart::Night, Daypart::Morning, Daypart::Afternoon, Daypart::Evening];
}

/// Thresholds of every segment, and the schema and epsilon of the report.
/// Kept sealed in the store (`set_segment_config`); the defaults apply until
/// the app sets one. Every device of an app should use the same config, so
/// that their reports share a schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Record)]
#[serde(default)]
pub struct SegmentConfig {
    /// `New` while the first action is less than this many days old.
    #[uniffi(default = 14)]
    pub new_days: u32,
    /// `AtRisk` once the last action is this many days old.
    #[uniffi(default = 7)]
    pub at_risk_after_days: u32,
    /// `Dormant` once the last action is this many days old.
    #[uniffi(default = 30)]
    pub dormant_after_days: u32,
    /// Engagement, binges and abandonment look back this many days (at most
    /// 56), or to the first action if that is more recent (but at least 7).
    #[uniffi(default = 28)]
    pub window_days: u32,
    /// `Regular` from this many sessions a week...
    #[uniffi(default = 1.0)]
    pub regular_sessions_per_week: f64,
    /// ...and this many minutes a week.
    #[uniffi(default = 30.0)]
    pub regular_minutes_per_week: f64,
    /// `Power` from this many sessions a week...
    #[uniffi(default = 5.0)]
    pub power_sessions_per_week: f64,
    /// ...and this many minutes a week.
    #[uniffi(default = 300.0)]
    pub power_minutes_per_week: f64,
    /// How many categories `top_categories` lists at most.
    #[uniffi(default = 3)]
    pub top_categories: u32,
    /// A category is listed only with at least this share of the user's
    /// positive affinity (0 to 1).
    #[uniffi(default = 0.1)]
    pub min_category_share: f64,
    /// A session is a binge when the user finishes this many distinct items
    /// in it.
    #[uniffi(default = 3)]
    pub binge_items_per_session: u32,
    /// An item counts as abandoned from this progress (0 to 1)...
    #[uniffi(default = 0.1)]
    pub abandon_min_progress: f64,
    /// ...when untouched for this many days (and not finished).
    #[uniffi(default = 7)]
    pub abandon_after_days: u32,
    /// `abandoner` from this many abandoned items in the window.
    #[uniffi(default = 2)]
    pub abandoner_min_items: u32,
    /// The categories the report has a bit for (the app's public list; none
    /// by default). A category the user blocked is never reported.
    #[uniffi(default)]
    pub report_categories: Vec<String>,
    /// The report's epsilon (local differential privacy), 0.01 to 10.
    #[uniffi(default = 2.0)]
    pub report_epsilon: f64,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            new_days: 14,
            at_risk_after_days: 7,
            dormant_after_days: 30,
            window_days: 28,
            regular_sessions_per_week: 1.0,
            regular_minutes_per_week: 30.0,
            power_sessions_per_week: 5.0,
            power_minutes_per_week: 300.0,
            top_categories: 3,
            min_category_share: 0.1,
            binge_items_per_session: 3,
            abandon_min_progress: 0.1,
            abandon_after_days: 7,
            abandoner_min_items: 2,
            report_categories: Vec::new(),
            report_epsilon: 2.0,
        }
    }
}

impl SegmentConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let days = |field: &str, v: u32, lo: u32, hi: u32| {
            if (lo..=hi).contains(&v) { Ok(()) } else { Err(Error::invalid(field, format!("must be {lo} to {hi}"))) }
        };
        days("new_days", self.new_days, 1, 365)?;
        days("at_risk_after_days", self.at_risk_after_days, 1, 365)?;
        days("dormant_after_days", self.dormant_after_days, 2, 3650)?;
        if self.dormant_after_days <= self.at_risk_after_days {
            return Err(Error::invalid("dormant_after_days", "must be more than at_risk_after_days"));
        }
        days("window_days", self.window_days, 7, SESSION_RETENTION_DAYS)?;
        let rate = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 { Ok(()) } else { Err(Error::invalid(field, "must be a finite number >= 0")) }
        };
        rate("regular_sessions_per_week", self.regular_sessions_per_week)?;
        rate("regular_minutes_per_week", self.regular_minutes_per_week)?;
        rate("power_sessions_per_week", self.power_sessions_per_week)?;
        rate("power_minutes_per_week", self.power_minutes_per_week)?;
        if self.power_sessions_per_week < self.regular_sessions_per_week {
            return Err(Error::invalid("power_sessions_per_week", "must be at least regular_sessions_per_week"));
        }
        if self.power_minutes_per_week < self.regular_minutes_per_week {
            return Err(Error::invalid("power_minutes_per_week", "must be at least regular_minutes_per_week"));
        }
        days("top_categories", self.top_categories, 1, 32)?;
        let share = |field: &str, v: f64| {
            if (0.0..=1.0).contains(&v) { Ok(()) } else { Err(Error::invalid(field, "must be 0 to 1")) }
        };
        share("min_category_share", self.min_category_share)?;
        days("binge_items_per_session", self.binge_items_per_session, 2, MAX_FINISHED_PER_SESSION as u32)?;
        share("abandon_min_progress", self.abandon_min_progress)?;
        if self.abandon_min_progress >= FINISHED_PROGRESS {
            return Err(Error::invalid("abandon_min_progress", "must be below 0.9 (finished)"));
        }
        days("abandon_after_days", self.abandon_after_days, 1, SESSION_RETENTION_DAYS)?;
        days("abandoner_min_items", self.abandoner_min_items, 1, 1000)?;
        if self.report_categories.len() > 256 {
            return Err(Error::invalid("report_categories", "more than 256"));
        }
        for (i, c) in self.report_categories.iter().enumerate() {
            if c.is_empty() || c.len() > 64 || c.chars().any(char::is_control) {
                return Err(Error::invalid("report_categories", "each must be 1 to 64 bytes of text"));
            }
            if self.report_categories[..i].contains(c) {
                return Err(Error::invalid("report_categories", "listed twice"));
            }
        }
        if !(self.report_epsilon.is_finite() && (0.01..=10.0).contains(&self.report_epsilon)) {
            return Err(Error::invalid("report_epsilon", "must be 0.01 to 10"));
        }
        Ok(())
    }

    /// The report's bits, in order: their public names.
    pub fn report_labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = Vec::new();
        labels
            .extend(["lifecycle.new", "lifecycle.active", "lifecycle.at_risk", "lifecycle.dormant"].map(String::from));
        labels.extend(["engagement.light", "engagement.regular", "engagement.power"].map(String::from));
        labels.extend(["daypart.night", "daypart.morning", "daypart.afternoon", "daypart.evening"].map(String::from));
        labels.extend(["device.phone", "device.tablet", "device.tv", "device.car", "device.speaker"].map(String::from));
        labels.extend(["binge_watcher", "abandoner"].map(String::from));
        labels.extend(self.report_categories.iter().map(|c| format!("category.{c}")));
        labels
    }

    /// The most bits in which two devices' true vectors can differ: 2 per
    /// one-of group (lifecycle, engagement, daypart, device), 1 per flag,
    /// and for the categories twice the most a device can list, at most
    /// their number.
    pub fn report_sensitivity(&self) -> u32 {
        let categories = (2 * self.top_categories).min(self.report_categories.len() as u32);
        4 * 2 + 2 + categories
    }

    /// The probability that a bit of the report is its true value.
    pub fn report_keep_probability(&self) -> f64 {
        keep_probability(self.report_epsilon / self.report_sensitivity() as f64)
    }
}

pub(crate) fn keep_probability(bit_epsilon: f64) -> f64 {
    let e = bit_epsilon.exp();
    e / (1.0 + e)
}

/// One category the user leans to, with its share of the user's positive
/// affinity (0 to 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Record)]
pub struct CategoryStrength {
    pub category: String,
    pub strength: f64,
}

/// The user's segments as of a moment. Computed on the device; nothing here
/// leaves it (the report is randomized first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Record)]
pub struct Segments {
    pub as_of_ms: i64,
    pub lifecycle: LifecycleStage,
    pub engagement: EngagementLevel,
    /// Sessions started in the window, per week.
    pub sessions_per_week: f64,
    /// Session minutes in the window, per week.
    pub minutes_per_week: f64,
    /// Whole days since the last action (none: no action yet).
    pub days_since_last_action: Option<u32>,
    /// Strongest first; blocked categories are left out.
    pub top_categories: Vec<CategoryStrength>,
    /// Sessions in the window in which the user finished
    /// `binge_items_per_session` distinct items or more.
    pub binge_sessions: u32,
    /// At least one binge session in the window.
    pub binge_watcher: bool,
    /// Items started in the window (progress at least `abandon_min_progress`),
    /// not finished, untouched for `abandon_after_days`.
    pub abandoned_items: u32,
    /// `abandoned_items >= abandoner_min_items`.
    pub abandoner: bool,
    /// Up to three local hours (0 to 23) with the most activity, most first.
    pub preferred_hours: Vec<u32>,
    /// The quarter of the day with the most activity.
    pub daypart: Option<Daypart>,
    /// The device class with the most activity.
    pub primary_device: Option<DeviceClass>,
}

/// The device's segment memberships, randomized on the device. Holds no
/// true membership: every bit was kept with probability `keep_probability`
/// and flipped otherwise, independently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Record)]
pub struct SegmentReport {
    /// The public name of each bit (`SegmentConfig::report_labels`).
    pub labels: Vec<String>,
    /// The randomized bits, packed eight to a byte, least significant first.
    pub bits: Vec<u8>,
    /// The report's epsilon (local differential privacy).
    pub epsilon: f64,
    /// Epsilon per bit (`epsilon / sensitivity`): what the coordinator needs
    /// to estimate sizes.
    pub bit_epsilon: f64,
    /// The probability that a bit is its true value.
    pub keep_probability: f64,
    /// The epsilon this call spent: `epsilon` for a new randomization, 0 when
    /// the device repeats the report it made before for the same
    /// memberships.
    pub epsilon_spent: f64,
}

/// What `segment_report` gives.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum SegmentReportOutcome {
    Report {
        report: SegmentReport,
    },
    /// The user has not agreed to segment reports (`segment_reports_opt_in`):
    /// nothing was computed or spent.
    NoConsent,
}

/// One session: a run of actions with no gap longer than the session gap.
#[derive(Debug, Clone, PartialEq)]
struct SessionSpan {
    start_ms: i64,
    end_ms: i64,
    /// Hashes of the distinct items finished in it.
    finished: Vec<u64>,
}

/// The history as segments need it, kept current as events arrive.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Activity {
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    /// Sorted by start, disjoint, separated by more than the session gap.
    sessions: Vec<SessionSpan>,
}

fn item_hash(id: &str) -> u64 {
    // FNV-1a: a stable, cheap fingerprint (in memory only).
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

impl Activity {
    /// Builds the summary from every stored event.
    pub(crate) fn build(store: &Store) -> Result<Activity> {
        let mut activity = Activity::default();
        store.scan_events(0, |id, ev| {
            match ev {
                Ok(ev) => activity.fold(&ev),
                Err(e) => log::warn!("event {id} skipped while summarizing activity: {e}"),
            }
            Ok(())
        })?;
        Ok(activity)
    }

    /// Folds one stored event in (in any order).
    pub(crate) fn fold(&mut self, event: &Event) {
        if event.kind == EventKind::Impression {
            return;
        }
        let t = event.timestamp_ms;
        self.first_ms = Some(self.first_ms.map_or(t, |f| f.min(t)));
        let last = self.last_ms.map_or(t, |l| l.max(t));
        self.last_ms = Some(last);
        let cutoff = last - SESSION_RETENTION_DAYS as i64 * DAY_MS;
        if t < cutoff {
            return;
        }
        let finished =
            event.kind == EventKind::Complete || event.progress_fraction().unwrap_or(0.0) >= FINISHED_PROGRESS;
        // The first session that does not end more than a gap before `t`.
        let i = self.sessions.partition_point(|s| s.end_ms + SESSION_GAP_MS < t);
        if i < self.sessions.len() && self.sessions[i].start_ms - SESSION_GAP_MS <= t {
            let s = &mut self.sessions[i];
            s.start_ms = s.start_ms.min(t);
            s.end_ms = s.end_ms.max(t);
            if finished {
                add_finished(&mut s.finished, &event.item_id);
            }
            // `t` may bridge the gap to the next session.
            if i + 1 < self.sessions.len() && self.sessions[i + 1].start_ms - SESSION_GAP_MS <= self.sessions[i].end_ms
            {
                let next = self.sessions.remove(i + 1);
                let s = &mut self.sessions[i];
                s.end_ms = s.end_ms.max(next.end_ms);
                for h in next.finished {
                    if !s.finished.contains(&h) && s.finished.len() < MAX_FINISHED_PER_SESSION {
                        s.finished.push(h);
                    }
                }
            }
        } else {
            let mut s = SessionSpan { start_ms: t, end_ms: t, finished: Vec::new() };
            if finished {
                add_finished(&mut s.finished, &event.item_id);
            }
            self.sessions.insert(i, s);
        }
        let stale = self.sessions.partition_point(|s| s.end_ms < cutoff);
        if stale > 0 {
            self.sessions.drain(..stale);
        }
    }

    /// Sessions summarized (for tests and benchmarks).
    pub(crate) fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

fn add_finished(finished: &mut Vec<u64>, item: &str) {
    let h = item_hash(item);
    if !finished.contains(&h) && finished.len() < MAX_FINISHED_PER_SESSION {
        finished.push(h);
    }
}

/// Computes the segments as of `as_of` (meant to be at or after the newest
/// event: later actions are left out of recency and sessions, but the
/// profile's affinities and hour and device mix include them).
pub(crate) fn compute(
    as_of: i64,
    config: &SegmentConfig,
    activity: &Activity,
    profile: &Profile,
    settings: &PrivacySettings,
) -> Segments {
    let first = activity.first_ms.filter(|f| *f <= as_of);
    let last = match activity.last_ms {
        Some(l) if l <= as_of => Some(l),
        Some(_) => {
            activity.sessions.iter().filter(|s| s.start_ms <= as_of).map(|s| s.end_ms.min(as_of)).max().or(first)
        }
        None => None,
    };
    let days_since = |t: i64| ((as_of - t).max(0) / DAY_MS) as u32;
    let days_since_last = last.map(days_since);
    let lifecycle = match (first, days_since_last) {
        (None, _) | (_, None) => LifecycleStage::New,
        (Some(f), Some(idle)) => {
            if idle >= config.dormant_after_days {
                LifecycleStage::Dormant
            } else if idle >= config.at_risk_after_days {
                LifecycleStage::AtRisk
            } else if days_since(f) < config.new_days {
                LifecycleStage::New
            } else {
                LifecycleStage::Active
            }
        }
    };

    // The window: `window_days`, or back to the first action (at least 7 days).
    let window_days = match first {
        Some(f) => {
            let since_first = (as_of - f + DAY_MS - 1) / DAY_MS;
            since_first.clamp(7, config.window_days as i64)
        }
        None => config.window_days as i64,
    };
    let window_start = as_of - window_days * DAY_MS;
    let weeks = window_days as f64 / 7.0;
    let mut sessions = 0u32;
    let mut minutes = 0.0;
    let mut binge_sessions = 0u32;
    for s in activity.sessions.iter().filter(|s| s.start_ms >= window_start && s.start_ms <= as_of) {
        sessions += 1;
        minutes += ((s.end_ms.min(as_of) - s.start_ms).max(MINUTE_MS)) as f64 / MINUTE_MS as f64;
        if s.finished.len() as u32 >= config.binge_items_per_session {
            binge_sessions += 1;
        }
    }
    let sessions_per_week = sessions as f64 / weeks;
    let minutes_per_week = minutes / weeks;
    let engagement = if sessions_per_week >= config.power_sessions_per_week
        && minutes_per_week >= config.power_minutes_per_week
        && sessions > 0
    {
        EngagementLevel::Power
    } else if sessions_per_week >= config.regular_sessions_per_week
        && minutes_per_week >= config.regular_minutes_per_week
        && sessions > 0
    {
        EngagementLevel::Regular
    } else {
        EngagementLevel::Light
    };

    // Affinities: shares of the positive decayed affinity, blocked left out.
    let positive: Vec<(&String, f64)> = profile
        .category_affinity
        .iter()
        .filter(|(c, v)| **v > 0.0 && !settings.blocked_categories.contains(c))
        .map(|(c, v)| (c, *v))
        .collect();
    let total: f64 = positive.iter().map(|(_, v)| v).sum();
    let mut top_categories: Vec<CategoryStrength> = positive
        .into_iter()
        .map(|(c, v)| CategoryStrength { category: c.clone(), strength: v / total })
        .filter(|c| c.strength >= config.min_category_share)
        .collect();
    top_categories.sort_by(|a, b| b.strength.total_cmp(&a.strength).then_with(|| a.category.cmp(&b.category)));
    top_categories.truncate(config.top_categories as usize);

    let abandon_before = as_of - config.abandon_after_days as i64 * DAY_MS;
    let abandoned_items = profile
        .items
        .values()
        .filter(|i| {
            !i.completed
                && i.progress >= config.abandon_min_progress
                && i.progress < FINISHED_PROGRESS
                && i.last_ms >= window_start
                && i.last_ms <= abandon_before
        })
        .count() as u32;

    let hour_total: f64 = profile.hour_mix.iter().sum();
    let mut hours: Vec<(u32, f64)> =
        profile.hour_mix.iter().enumerate().filter(|(_, v)| **v > 0.0).map(|(h, v)| (h as u32, *v)).collect();
    hours.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let preferred_hours = hours.iter().take(3).map(|(h, _)| *h).collect();
    let daypart = (hour_total > 0.0)
        .then(|| {
            let sums = Daypart::ALL.map(|d| profile.hour_mix[d as usize * 6..d as usize * 6 + 6].iter().sum::<f64>());
            argmax(&sums).map(|i| Daypart::ALL[i])
        })
        .flatten();
    let primary_device = argmax(&profile.device_mix).map(|i| DeviceClass::ALL[i]);

    Segments {
        as_of_ms: as_of,
        lifecycle,
        engagement,
        sessions_per_week,
        minutes_per_week,
        days_since_last_action: days_since_last,
        top_categories,
        binge_sessions,
        binge_watcher: binge_sessions > 0,
        abandoned_items,
        abandoner: abandoned_items >= config.abandoner_min_items,
        preferred_hours,
        daypart,
        primary_device,
    }
}

/// Index of the largest positive value (the first on ties).
fn argmax(xs: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, x) in xs.iter().enumerate() {
        if *x > 0.0 && best.is_none_or(|b| *x > xs[b]) {
            best = Some(i);
        }
    }
    best
}

/// The thresholds in force (the defaults until the app sets them).
pub(crate) fn load_config(store: &Store) -> Result<SegmentConfig> {
    Ok(store.get_json(CONFIG_KEY)?.unwrap_or_default())
}

/// Replaces the thresholds; one that does not validate changes nothing.
pub(crate) fn save_config(store: &mut Store, config: &SegmentConfig) -> Result<()> {
    config.validate()?;
    store.put_json(CONFIG_KEY, config)
}

pub(crate) fn check_as_of(as_of_ms: i64) -> Result<()> {
    if as_of_ms < MIN_TIMESTAMP_MS {
        return Err(Error::invalid("as_of_ms", "before the year 2000"));
    }
    if as_of_ms > now_ms() + 366 * DAY_MS {
        return Err(Error::invalid("as_of_ms", "more than a year in the future"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audience::report::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn sessions_split_on_gaps_merge_on_bridges_and_ignore_impressions() {
        let m = MINUTE_MS;
        let mut a = Activity::default();
        a.fold(&Event::bare("a", EventKind::Play, T0));
        a.fold(&Event::bare("a", EventKind::Complete, T0 + 20 * m));
        a.fold(&Event::bare("b", EventKind::Play, T0 + 90 * m));
        a.fold(&Event::bare("x", EventKind::Impression, T0 + 60 * m));
        assert_eq!(a.sessions.len(), 2);
        assert_eq!(a.sessions[0].finished.len(), 1);
        // An event at +55 min bridges nothing (gap 35 to +20, 35 to +90).
        a.fold(&Event::bare("c", EventKind::Play, T0 + 55 * m));
        assert_eq!(a.sessions.len(), 3);
        // One at +40 joins the first and the +55 one: 20->40->55 (gaps 20, 15).
        a.fold(&Event::bare("c", EventKind::Progress, T0 + 40 * m));
        assert_eq!(a.sessions.len(), 2);
        assert_eq!((a.sessions[0].start_ms, a.sessions[0].end_ms), (T0, T0 + 55 * m));
        // Out of order gives the same sessions as in order.
        let mut evs = [
            Event::bare("a", EventKind::Play, T0),
            Event::bare("a", EventKind::Complete, T0 + 20 * m),
            Event::bare("c", EventKind::Progress, T0 + 40 * m),
            Event::bare("c", EventKind::Play, T0 + 55 * m),
            Event::bare("b", EventKind::Play, T0 + 90 * m),
        ];
        let mut b = Activity::default();
        evs.reverse();
        evs.iter().for_each(|e| b.fold(e));
        assert_eq!(a, b);
    }

    #[test]
    fn old_sessions_are_dropped() {
        let mut a = Activity::default();
        a.fold(&Event::bare("a", EventKind::Play, T0));
        a.fold(&Event::bare("a", EventKind::Play, T0 + (SESSION_RETENTION_DAYS as i64 + 1) * DAY_MS));
        assert_eq!(a.sessions.len(), 1);
        assert_eq!(a.first_ms, Some(T0));
    }

    #[test]
    fn bits_pack_and_unpack() {
        let bits = [true, false, true, true, false, false, false, false, true, false];
        let packed = pack_bits(&bits);
        assert_eq!(packed, vec![0b0000_1101, 0b0000_0001]);
        assert_eq!(unpack_bits(&packed, bits.len()), bits);
    }

    #[test]
    fn sensitivity_counts_groups_flags_and_categories() {
        let mut c = SegmentConfig::default();
        assert_eq!(c.report_sensitivity(), 10);
        c.report_categories = vec!["a".into(), "b".into()];
        assert_eq!(c.report_sensitivity(), 12);
        c.report_categories = (0..10).map(|i| format!("c{i}")).collect();
        assert_eq!(c.report_sensitivity(), 16);
        assert_eq!(c.report_labels().len(), 18 + 10);
    }

    #[test]
    fn the_estimator_on_a_hand_example() {
        // bit_epsilon = ln 3: p = 3/4. Ten reports, bit 0 set in 3, bit 1 in 7:
        // (3 - 2.5) / 0.5 = 1 and (7 - 2.5) / 0.5 = 9.
        let r = |b0: bool, b1: bool| SegmentReport {
            labels: vec!["x".into(), "y".into()],
            bits: pack_bits(&[b0, b1]),
            epsilon: 2.0 * 3f64.ln(),
            bit_epsilon: 3f64.ln(),
            keep_probability: 0.75,
            epsilon_spent: 0.0,
        };
        let reports: Vec<_> = (0..10).map(|i| r(i < 3, i < 7)).collect();
        let est = estimate_segment_sizes(&reports).unwrap();
        assert!((est.sizes[0] - 1.0).abs() < 1e-9 && (est.sizes[1] - 9.0).abs() < 1e-9, "{:?}", est.sizes);
        assert!((est.std_error - (10.0 * 0.75 * 0.25f64).sqrt() / 0.5).abs() < 1e-12);
    }
}
