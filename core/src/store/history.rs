//! What the app records: the user's events, and the catalog metadata it feeds.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What happened to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The item was shown to the user.
    Impression,
    /// Playback started.
    Play,
    /// Playback reached `position_ms` (periodic or on pause).
    Progress,
    /// The item was watched or listened to the end.
    Complete,
    /// The user skipped it (or abandoned it early).
    Skip,
    Like,
    Dislike,
    /// The item was opened from a search.
    Search,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::Impression,
        EventKind::Play,
        EventKind::Progress,
        EventKind::Complete,
        EventKind::Skip,
        EventKind::Like,
        EventKind::Dislike,
        EventKind::Search,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Whether the event is an engagement local training learns from (a
    /// positive), which is also what a device's evaluation holds out.
    pub(crate) fn is_engagement(self) -> bool {
        matches!(self, EventKind::Play | EventKind::Complete | EventKind::Like)
    }
}

/// The kind of screen the event happened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    Phone,
    Tablet,
    Tv,
    Car,
    Speaker,
}

impl DeviceClass {
    pub const ALL: [DeviceClass; 5] =
        [DeviceClass::Phone, DeviceClass::Tablet, DeviceClass::Tv, DeviceClass::Car, DeviceClass::Speaker];

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Where and when, as the device sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Record)]
pub struct EventContext {
    pub device: DeviceClass,
    /// The user's local hour, 0 to 23.
    pub local_hour: u8,
    /// BCP 47 language tag of the UI, when known (for example "en-GB").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[uniffi(default = None)]
    pub locale: Option<String>,
}

/// One thing the user did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Record)]
pub struct Event {
    /// The app's id of the item (1 to 256 bytes).
    pub item_id: String,
    pub kind: EventKind,
    /// Milliseconds since the Unix epoch, UTC.
    pub timestamp_ms: i64,
    /// Playback position when the event happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[uniffi(default = None)]
    pub position_ms: Option<u64>,
    /// The item's duration, when the player knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[uniffi(default = None)]
    pub duration_ms: Option<u64>,
    pub context: EventContext,
}

/// Item metadata the app feeds into the on-device catalog cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Record)]
pub struct CatalogItem {
    pub id: String,
    pub title: String,
    /// Genres, topics, leagues: whatever the app groups items by.
    #[serde(default)]
    #[uniffi(default)]
    pub categories: Vec<String>,
    /// BCP 47 language of the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[uniffi(default = None)]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[uniffi(default = None)]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[uniffi(default = None)]
    pub release_year: Option<u16>,
    /// Recent popularity from the app's backend, any non-negative scale.
    #[serde(default)]
    #[uniffi(default = 0.0)]
    pub popularity: f64,
    /// For example "PG-13", "TV-MA".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[uniffi(default = None)]
    pub content_rating: Option<String>,
}

/// Earliest timestamp accepted: 2000-01-01T00:00:00Z.
pub const MIN_TIMESTAMP_MS: i64 = 946_684_800_000;
/// Events may be at most this far in the future of the device clock (clock skew).
pub const MAX_FUTURE_SKEW_MS: i64 = 24 * 3600 * 1000;
pub(crate) const MAX_ID_BYTES: usize = 256;
const MAX_TEXT_BYTES: usize = 1024;
const MAX_TAG_BYTES: usize = 64;
const MAX_CATEGORIES: usize = 32;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(field, format!("longer than {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains control characters"));
    }
    Ok(())
}

fn check_tag(field: &str, value: &Option<String>) -> Result<()> {
    if let Some(v) = value {
        check_text(field, v, MAX_TAG_BYTES)?;
        if !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Error::invalid(field, "not a language tag"));
        }
    }
    Ok(())
}

impl Event {
    pub(crate) fn validate(&self, now_ms: i64) -> Result<()> {
        check_text("item_id", &self.item_id, MAX_ID_BYTES)?;
        if self.timestamp_ms < MIN_TIMESTAMP_MS {
            return Err(Error::invalid("timestamp_ms", "before the year 2000"));
        }
        if self.timestamp_ms > now_ms + MAX_FUTURE_SKEW_MS {
            return Err(Error::invalid("timestamp_ms", "more than a day in the future"));
        }
        if self.context.local_hour > 23 {
            return Err(Error::invalid("context.local_hour", "must be 0 to 23"));
        }
        check_tag("context.locale", &self.context.locale)?;
        if let (Some(p), Some(d)) = (self.position_ms, self.duration_ms)
            && p > d
        {
            return Err(Error::invalid("position_ms", "beyond duration_ms"));
        }
        Ok(())
    }

    /// How far into the item the user got, 0 to 1, when known.
    pub(crate) fn progress_fraction(&self) -> Option<f64> {
        match (self.position_ms, self.duration_ms) {
            (Some(p), Some(d)) if d > 0 => Some((p as f64 / d as f64).clamp(0.0, 1.0)),
            _ => None,
        }
    }
}

/// The catalog cache in memory, by item id. Items are shared: a ranking
/// takes the ones it needs out of the session's lock without copying them.
pub(crate) type Catalog = std::collections::HashMap<String, std::sync::Arc<CatalogItem>>;

impl CatalogItem {
    pub(crate) fn validate(&self) -> Result<()> {
        check_text("id", &self.id, MAX_ID_BYTES)?;
        check_text("title", &self.title, MAX_TEXT_BYTES)?;
        if self.categories.len() > MAX_CATEGORIES {
            return Err(Error::invalid("categories", format!("more than {MAX_CATEGORIES}")));
        }
        for c in &self.categories {
            check_text("categories", c, MAX_TAG_BYTES)?;
        }
        check_tag("language", &self.language)?;
        if let Some(r) = &self.content_rating {
            check_text("content_rating", r, MAX_TAG_BYTES)?;
        }
        if !self.popularity.is_finite() || self.popularity < 0.0 {
            return Err(Error::invalid("popularity", "must be a finite number >= 0"));
        }
        if let Some(y) = self.release_year
            && !(1850..=2200).contains(&y)
        {
            return Err(Error::invalid("release_year", "out of range"));
        }
        Ok(())
    }
}

#[cfg(test)]
impl Event {
    /// The tests' shorthand: an event on a phone at 21:00, with no position,
    /// duration or locale.
    pub(crate) fn bare(item: &str, kind: EventKind, timestamp_ms: i64) -> Event {
        Event {
            item_id: item.into(),
            kind,
            timestamp_ms,
            position_ms: None,
            duration_ms: None,
            context: EventContext { device: DeviceClass::Phone, local_hour: 21, locale: None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            item_id: "m1".into(),
            kind: EventKind::Play,
            timestamp_ms: 1_700_000_000_000,
            position_ms: Some(10),
            duration_ms: Some(100),
            context: EventContext { device: DeviceClass::Tv, local_hour: 20, locale: Some("en-GB".into()) },
        }
    }

    fn field_of(r: Result<()>) -> String {
        match r {
            Err(Error::InvalidInput { field, .. }) => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn validation_names_the_field() {
        let now = 1_700_000_100_000;
        assert!(event().validate(now).is_ok());
        let mut e = event();
        e.item_id.clear();
        assert_eq!(field_of(e.validate(now)), "item_id");
        let mut e = event();
        e.item_id = "x".repeat(300);
        assert_eq!(field_of(e.validate(now)), "item_id");
        let mut e = event();
        e.timestamp_ms = 5;
        assert_eq!(field_of(e.validate(now)), "timestamp_ms");
        let mut e = event();
        e.timestamp_ms = now + 2 * MAX_FUTURE_SKEW_MS;
        assert_eq!(field_of(e.validate(now)), "timestamp_ms");
        let mut e = event();
        e.context.local_hour = 24;
        assert_eq!(field_of(e.validate(now)), "context.local_hour");
        let mut e = event();
        e.context.locale = Some("en GB\n".into());
        assert_eq!(field_of(e.validate(now)), "context.locale");
        let mut e = event();
        e.position_ms = Some(101);
        assert_eq!(field_of(e.validate(now)), "position_ms");
    }

    #[test]
    fn catalog_validation() {
        let item = CatalogItem {
            id: "m1".into(),
            title: "A film".into(),
            categories: vec!["drama".into()],
            language: Some("en".into()),
            duration_ms: Some(5_400_000),
            release_year: Some(1999),
            popularity: 3.5,
            content_rating: Some("PG-13".into()),
        };
        assert!(item.validate().is_ok());
        let mut bad = item.clone();
        bad.popularity = f64::NAN;
        assert_eq!(field_of(bad.validate()), "popularity");
        let mut bad = item.clone();
        bad.title = String::new();
        assert_eq!(field_of(bad.validate()), "title");
        let mut bad = item;
        bad.categories = vec!["x".into(); 40];
        assert_eq!(field_of(bad.validate()), "categories");
    }
}
