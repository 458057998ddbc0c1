//! Notification decisions, on the device: may the app send this message
//! now? The answer respects the user's notification toggle, their blocked
//! categories and dislikes, quiet hours in the user's local time, and caps
//! per local day and per week; it comes with a reason that is safe to show,
//! because it names only what the user set or did and what the app already
//! sent, never an inference (a segment, an affinity, a prediction).
//!
//! Local time is the IANA zone the app passes with each candidate (the
//! device's zone changes when the user travels, and the app always knows the
//! current one), converted with jiff, so quiet hours and local days follow
//! daylight-saving changes (a 23-hour or 25-hour day; Lord Howe's half-hour
//! shift). An allowed candidate is counted as sent: the log of sends is
//! sealed in the store, so caps hold across restarts.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::history::Catalog;
use crate::store::history::{MIN_TIMESTAMP_MS, now_ms};
use crate::store::profile::Profile;
use crate::store::settings::PrivacySettings;

const DAY_MS: i64 = 86_400_000;
const POLICY_KEY: &str = "notify.policy";
const SENT_KEY: &str = "notify.sent";
/// Sends older than this before the newest one are forgotten (a week of
/// local days, and a day on each side for time zones).
const SENT_RETENTION_MS: i64 = 9 * DAY_MS;
/// At most this many sends are remembered.
const MAX_SENT: usize = 1024;
const MINUTES_PER_DAY: u32 = 24 * 60;

/// What a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    NewEpisode,
    NewContent,
    Recommendation,
    ContinueWatching,
    LiveEvent,
    /// Something the user asked to be reminded of.
    Reminder,
    Other,
}

/// How much the message matters to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// Worth sending only now: when held, it is dropped (no `retry_at_ms`).
    Low,
    /// Held by quiet hours and caps; `retry_at_ms` says when it could go.
    Normal,
    /// Time-critical (a live event starting, a reminder the user set): not
    /// held by the caps (though counted), still held by the toggle, blocked
    /// categories, dislikes and quiet hours.
    High,
}

/// A message the app would like to send.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct NotificationCandidate {
    pub kind: NotificationKind,
    /// The item it is about, when there is one (its categories and the
    /// user's dislike of it are checked).
    #[uniffi(default = None)]
    pub item_id: Option<String>,
    /// The category it is about, when there is one.
    #[uniffi(default = None)]
    pub category: Option<String>,
    pub urgency: Urgency,
    /// The device's current IANA time zone (`TimeZone.getDefault().id`,
    /// `TimeZone.current.identifier`), for example "Europe/Paris".
    pub time_zone: String,
    /// When it would be delivered, ms since the Unix epoch (none: now).
    #[uniffi(default = None)]
    pub at_ms: Option<i64>,
}

/// Caps and quiet hours. Kept sealed in the store; the defaults apply until
/// the app sets one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, uniffi::Record)]
#[serde(default)]
pub struct NotificationPolicy {
    /// At most this many per local calendar day.
    #[uniffi(default = 2)]
    pub max_per_day: u32,
    /// At most this many per week: the local day and the six before it.
    #[uniffi(default = 6)]
    pub max_per_week: u32,
    /// Quiet hours start at this local minute of the day (0 to 1439;
    /// 22:00 by default)...
    #[uniffi(default = 1320)]
    pub quiet_start_minute: u32,
    /// ...and end at this one (08:00 by default). Equal: no quiet hours.
    #[uniffi(default = 480)]
    pub quiet_end_minute: u32,
}

impl Default for NotificationPolicy {
    fn default() -> Self {
        NotificationPolicy { max_per_day: 2, max_per_week: 6, quiet_start_minute: 22 * 60, quiet_end_minute: 8 * 60 }
    }
}

impl NotificationPolicy {
    fn validate(&self) -> Result<()> {
        if self.quiet_start_minute >= MINUTES_PER_DAY {
            return Err(Error::invalid("quiet_start_minute", "must be 0 to 1439"));
        }
        if self.quiet_end_minute >= MINUTES_PER_DAY {
            return Err(Error::invalid("quiet_end_minute", "must be 0 to 1439"));
        }
        if self.max_per_day > 100 {
            return Err(Error::invalid("max_per_day", "must be 0 to 100"));
        }
        if self.max_per_week > 700 {
            return Err(Error::invalid("max_per_week", "must be 0 to 700"));
        }
        Ok(())
    }

    fn quiet(&self, minute_of_day: u32) -> bool {
        let (s, e) = (self.quiet_start_minute, self.quiet_end_minute);
        if s <= e { s <= minute_of_day && minute_of_day < e } else { minute_of_day >= s || minute_of_day < e }
    }
}

/// Why a decision went the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum NotifyReason {
    Allowed,
    /// The user turned notifications off.
    NotificationsOff,
    /// The item or category is one the user blocked.
    BlockedCategory,
    /// The user disliked the item.
    DislikedItem,
    QuietHours,
    DailyCapReached,
    WeeklyCapReached,
}

/// The answer to `should_notify`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NotificationDecision {
    /// Send it. An allowed candidate has been counted as sent.
    pub allowed: bool,
    pub reason: NotifyReason,
    /// A sentence safe to show the user: it names only the user's own
    /// settings and actions and what was already sent.
    pub reason_text: String,
    /// When held (not for `Low` urgency): the earliest time the same
    /// candidate would be allowed, if sends stay as they are.
    pub retry_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sent {
    at_ms: i64,
    kind: NotificationKind,
}

fn local(at_ms: i64, tz: &TimeZone) -> Result<ZonedDateTime> {
    let ts = Timestamp::from_millisecond(at_ms).map_err(|_| Error::invalid("at_ms", "out of range"))?;
    Ok(ts.to_zoned_datetime(tz.clone()))
}

fn minute_of_day(z: &ZonedDateTime) -> u32 {
    z.hour() as u32 * 60 + z.minute() as u32
}

fn days_before(date: Date, n: u32) -> Result<Date> {
    let mut d = date;
    for _ in 0..n {
        d = d.yesterday().map_err(|_| Error::invalid("at_ms", "out of range"))?;
    }
    Ok(d)
}

fn days_after(date: Date, n: u32) -> Result<Date> {
    let mut d = date;
    for _ in 0..n {
        d = d.tomorrow().map_err(|_| Error::invalid("at_ms", "out of range"))?;
    }
    Ok(d)
}

/// The instant `date` at local `minute` in `tz` (a time in a DST gap moves
/// forward past it; an ambiguous one takes the earlier instant).
fn instant(date: Date, minute: u32, tz: &TimeZone) -> Result<i64> {
    let dt = date.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
    let z = dt.to_zoned_datetime(tz.clone()).map_err(|_| Error::invalid("at_ms", "out of range"))?;
    Ok(z.timestamp().as_millisecond())
}

/// Counts of sends in the local day of `date` and in the week ending on it.
fn counts(sent_dates: &[Date], date: Date) -> Result<(u32, u32)> {
    let week_start = days_before(date, 6)?;
    let day = sent_dates.iter().filter(|d| **d == date).count() as u32;
    let week = sent_dates.iter().filter(|d| **d >= week_start && **d <= date).count() as u32;
    Ok((day, week))
}

struct Checker<'a> {
    policy: &'a NotificationPolicy,
    tz: &'a TimeZone,
    sent_dates: Vec<Date>,
    capped: bool,
}

impl Checker<'_> {
    /// What holds a send at `at`, if anything.
    fn hold(&self, at: i64) -> Result<Option<NotifyReason>> {
        let z = local(at, self.tz)?;
        if self.policy.quiet(minute_of_day(&z)) {
            return Ok(Some(NotifyReason::QuietHours));
        }
        if self.capped {
            let (day, week) = counts(&self.sent_dates, z.date())?;
            if day >= self.policy.max_per_day {
                return Ok(Some(NotifyReason::DailyCapReached));
            }
            if week >= self.policy.max_per_week {
                return Ok(Some(NotifyReason::WeeklyCapReached));
            }
        }
        Ok(None)
    }

    /// The earliest instant after `at` at which nothing holds a send: at
    /// the end of quiet hours or the start of a later local day.
    fn retry_at(&self, at: i64) -> Result<Option<i64>> {
        let today = local(at, self.tz)?.date();
        let end = self.policy.quiet_end_minute;
        for d in 0..=8 {
            let date = days_after(today, d)?;
            let mut tries = Vec::with_capacity(2);
            if d > 0 {
                tries.push(instant(date, 0, self.tz)?);
            }
            tries.push(instant(date, end, self.tz)?);
            for t in tries {
                if t > at && self.hold(t)?.is_none() {
                    return Ok(Some(t));
                }
            }
        }
        Ok(None)
    }
}

fn text(reason: NotifyReason, policy: &NotificationPolicy) -> String {
    let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
    match reason {
        NotifyReason::Allowed => "Allowed by your notification settings".into(),
        NotifyReason::NotificationsOff => "Notifications are off".into(),
        NotifyReason::BlockedCategory => "You chose not to get this category".into(),
        NotifyReason::DislikedItem => "You marked this as not for you".into(),
        NotifyReason::QuietHours => {
            format!("Quiet hours, {} to {}", hhmm(policy.quiet_start_minute), hhmm(policy.quiet_end_minute))
        }
        NotifyReason::DailyCapReached => match policy.max_per_day {
            1 => "Already 1 notification today".into(),
            n => format!("Already {n} notifications today"),
        },
        NotifyReason::WeeklyCapReached => match policy.max_per_week {
            1 => "Already 1 notification this week".into(),
            n => format!("Already {n} notifications this week"),
        },
    }
}

fn check_tag(field: &str, value: &Option<String>, max: usize) -> Result<()> {
    if let Some(v) = value
        && (v.is_empty() || v.len() > max || v.chars().any(char::is_control))
    {
        return Err(Error::invalid(field, format!("must be 1 to {max} bytes of text")));
    }
    Ok(())
}

/// The caps and quiet hours in force (the defaults until the app sets them).
pub(crate) fn load_policy(store: &Store) -> Result<NotificationPolicy> {
    Ok(store.get_json(POLICY_KEY)?.unwrap_or_default())
}

/// Replaces the caps and quiet hours; a policy that does not validate
/// changes nothing.
pub(crate) fn save_policy(store: &mut Store, policy: &NotificationPolicy) -> Result<()> {
    policy.validate()?;
    store.put_json(POLICY_KEY, policy)
}

fn sent_log(store: &Store) -> Result<Vec<Sent>> {
    Ok(store.get_json(SENT_KEY)?.unwrap_or_default())
}

/// What the device knows that a decision reads: the user's settings, the
/// catalog (for an item's categories) and the profile (for dislikes).
pub(crate) struct Context<'a> {
    pub store: &'a mut Store,
    pub settings: &'a PrivacySettings,
    pub catalog: &'a Catalog,
    pub profile: &'a Profile,
}

impl Context<'_> {
    /// Decides on `c`; an allowed candidate is counted as sent.
    pub(crate) fn should_notify(&mut self, c: &NotificationCandidate) -> Result<NotificationDecision> {
        // Input first: a bad candidate changes nothing.
        let tz =
            TimeZone::get(&c.time_zone).map_err(|_| Error::invalid("time_zone", "not a known IANA time zone name"))?;
        let now = now_ms();
        let at = c.at_ms.unwrap_or(now);
        if at < MIN_TIMESTAMP_MS {
            return Err(Error::invalid("at_ms", "before the year 2000"));
        }
        if at > now + 366 * DAY_MS {
            return Err(Error::invalid("at_ms", "more than a year in the future"));
        }
        check_tag("item_id", &c.item_id, 256)?;
        check_tag("category", &c.category, 64)?;
        let policy = load_policy(self.store)?;

        let decided = |reason: NotifyReason, retry_at_ms: Option<i64>| NotificationDecision {
            allowed: reason == NotifyReason::Allowed,
            reason,
            reason_text: text(reason, &policy),
            retry_at_ms: if c.urgency == Urgency::Low { None } else { retry_at_ms },
        };
        if !self.settings.notifications_enabled {
            return Ok(decided(NotifyReason::NotificationsOff, None));
        }
        let blocked = &self.settings.blocked_categories;
        let item = c.item_id.as_ref().and_then(|id| self.catalog.get(id));
        if c.category.as_ref().is_some_and(|cat| blocked.contains(cat))
            || item.is_some_and(|i| i.categories.iter().any(|cat| blocked.contains(cat)))
        {
            return Ok(decided(NotifyReason::BlockedCategory, None));
        }
        if c.item_id.as_ref().and_then(|id| self.profile.items.get(id)).is_some_and(|s| s.disliked) {
            return Ok(decided(NotifyReason::DislikedItem, None));
        }

        let mut log = sent_log(self.store)?;
        let sent_dates = log.iter().map(|s| local(s.at_ms, &tz).map(|z| z.date())).collect::<Result<Vec<_>>>()?;
        let checker = Checker { policy: &policy, tz: &tz, sent_dates, capped: c.urgency != Urgency::High };
        if let Some(reason) = checker.hold(at)? {
            let retry = if c.urgency == Urgency::Low { None } else { checker.retry_at(at)? };
            return Ok(decided(reason, retry));
        }

        log.push(Sent { at_ms: at, kind: c.kind });
        let newest = log.iter().map(|s| s.at_ms).max().unwrap_or(at);
        log.retain(|s| s.at_ms >= newest - SENT_RETENTION_MS);
        log.sort_by_key(|s| s.at_ms);
        if log.len() > MAX_SENT {
            log.drain(..log.len() - MAX_SENT);
        }
        self.store.put_json(SENT_KEY, &log)?;
        Ok(decided(NotifyReason::Allowed, None))
    }
}
