//! Model inputs made on the device: the user's features from the sealed
//! profile, the request's context, one row per candidate item, and the
//! weighted history. Every slot is defined in the model manifest
//! (`features.*.groups[].compute`, `hashing`); this module is the device's
//! side of that contract and `models/build.py` the training side.

use crate::store::history::{Catalog, CatalogItem, DeviceClass, EventKind};
use crate::store::profile::Profile;

/// Widths and sizes this code produces. A manifest that says otherwise is
/// rejected at load time (`model::Manifest::check_schema`).
pub(crate) const CATEGORY_BUCKETS: usize = 32;
pub(crate) const ID_ROWS: u64 = 4096;
pub(crate) const USER_WIDTH: usize = CATEGORY_BUCKETS + 5 + 3;
pub(crate) const CONTEXT_WIDTH: usize = 5 + 2;
pub(crate) const ITEM_WIDTH: usize = CATEGORY_BUCKETS + 6;
pub(crate) const MAX_HISTORY: usize = 50;

const SLOT_LOG_POPULARITY: usize = CATEGORY_BUCKETS;
const SLOT_AGE: usize = CATEGORY_BUCKETS + 1;
const SLOT_LOG_DURATION: usize = CATEGORY_BUCKETS + 2;
const SLOT_LANGUAGE_MATCH: usize = CATEGORY_BUCKETS + 3;
const SLOT_YEAR_MISSING: usize = CATEGORY_BUCKETS + 4;
const SLOT_DURATION_MISSING: usize = CATEGORY_BUCKETS + 5;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const DAY_MS: f64 = 86_400_000.0;

/// FNV-1a, 64 bit, over the UTF-8 bytes, no normalization.
pub(crate) fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(FNV_OFFSET, |h, b| (h ^ b as u64).wrapping_mul(FNV_PRIME))
}

pub(crate) fn category_bucket(category: &str) -> usize {
    (fnv1a64(category) % CATEGORY_BUCKETS as u64) as usize
}

/// The row of the id tables an item id hashes to.
pub(crate) fn item_row(item_id: &str) -> i64 {
    (fnv1a64(item_id) % ID_ROWS) as i64
}

/// Where and when a ranking request is made.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, uniffi::Record)]
pub struct RankContext {
    pub device: DeviceClass,
    /// The user's local hour, 0 to 23.
    pub local_hour: u8,
    /// BCP 47 tag of the UI language (for example "en-GB"), when known.
    #[serde(default)]
    #[uniffi(default = None)]
    pub locale: Option<String>,
}

impl RankContext {
    pub(crate) fn features(&self) -> [f32; CONTEXT_WIDTH] {
        let mut x = [0f32; CONTEXT_WIDTH];
        x[self.device.index()] = 1.0;
        let a = 2.0 * std::f64::consts::PI * (self.local_hour % 24) as f64 / 24.0;
        x[5] = a.sin() as f32;
        x[6] = a.cos() as f32;
        x
    }
}

/// The profile's features. Aggregates are kept decayed to one reference time
/// and every group is normalized by its own sum, so no further decay is needed.
pub(crate) fn user_features(profile: &Profile) -> [f32; USER_WIDTH] {
    let mut u = [0f32; USER_WIDTH];
    let mut buckets = [0f64; CATEGORY_BUCKETS];
    let mut total = 0.0;
    for (category, &affinity) in &profile.category_affinity {
        if affinity > 0.0 {
            buckets[category_bucket(category)] += affinity;
            total += affinity;
        }
    }
    if total > 0.0 {
        for (slot, v) in buckets.iter().enumerate() {
            u[slot] = (v / total) as f32;
        }
    }
    let mix: f64 = profile.device_mix.iter().sum();
    if mix > 0.0 {
        for (i, v) in profile.device_mix.iter().enumerate() {
            u[CATEGORY_BUCKETS + i] = (v / mix) as f32;
        }
    }
    let count = |k: EventKind| profile.kind_counts[k.index()] as f64;
    let (plays, completes, skips) = (count(EventKind::Play), count(EventKind::Complete), count(EventKind::Skip));
    if plays > 0.0 {
        u[CATEGORY_BUCKETS + 5] = (completes / plays).min(1.0) as f32;
    }
    if plays + skips > 0.0 {
        u[CATEGORY_BUCKETS + 6] = (skips / (plays + skips)) as f32;
    }
    u[CATEGORY_BUCKETS + 7] = ((1.0 + profile.event_count as f64).ln() / 10.0) as f32;
    u
}

/// One history slot: an item the user engaged with, and how much, now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistoryEntry {
    pub item_id: String,
    pub weight: f64,
    pub last_ms: i64,
}

/// Items with decayed engagement > 0, most recently engaged first (ties by
/// id bytes), at most `MAX_HISTORY`; `except` is left out (training).
pub(crate) fn history(profile: &Profile, now_ms: i64, except: Option<&str>) -> Vec<HistoryEntry> {
    let ln2 = std::f64::consts::LN_2;
    let decay = |at_ms: i64| (-((now_ms - at_ms).max(0) as f64) / DAY_MS * ln2 / profile.half_life_days).exp();
    let eligible = |s: &crate::store::profile::ItemState| {
        s.engagement > 0.0
            && except != Some(s.id.as_str())
            // Past about a thousand half-lives the decayed weight underflows to 0.
            && ((now_ms - s.at_ms).max(0) as f64) / DAY_MS / profile.half_life_days < 1000.0
    };
    // Select the most recent first, then decay and copy only those: a
    // profile can hold thousands of items. The profile's recency index gives
    // them in order; without it, every item is looked at.
    let recent: Vec<&crate::store::profile::ItemState> = match profile.engaged_by_recency() {
        Some(newest_first) => newest_first.filter(|s| eligible(s)).take(MAX_HISTORY).collect(),
        None => {
            let mut all: Vec<&crate::store::profile::ItemState> =
                profile.items.values().filter(|s| eligible(s)).collect();
            let newest_first = |a: &&crate::store::profile::ItemState, b: &&crate::store::profile::ItemState| {
                b.last_ms.cmp(&a.last_ms).then_with(|| a.id.as_bytes().cmp(b.id.as_bytes()))
            };
            if all.len() > MAX_HISTORY {
                all.select_nth_unstable_by(MAX_HISTORY - 1, newest_first);
                all.truncate(MAX_HISTORY);
            }
            all.sort_by(newest_first);
            all
        }
    };
    recent
        .into_iter()
        .map(|s| HistoryEntry { item_id: s.id.clone(), weight: s.engagement * decay(s.at_ms), last_ms: s.last_ms })
        .collect()
}

/// The history as the graph's `history_ids` and `history_weights`; one
/// padding slot (id 0, weight 0) when it is empty.
pub(crate) fn history_tensors(history: &[HistoryEntry]) -> (Vec<i64>, Vec<f32>) {
    if history.is_empty() {
        return (vec![0], vec![0.0]);
    }
    (history.iter().map(|h| item_row(&h.item_id)).collect(), history.iter().map(|h| h.weight as f32).collect())
}

/// What item rows are computed against: the catalog's largest popularity,
/// the request's language and the current year.
#[derive(Debug, Clone)]
pub(crate) struct ItemScale {
    pub max_popularity: f64,
    pub locale: Option<String>,
    pub year: i32,
}

impl ItemScale {
    pub(crate) fn new(max_popularity: f64, locale: Option<String>, now_ms: i64) -> Self {
        ItemScale { max_popularity, locale, year: utc_year(now_ms) }
    }
}

/// The largest popularity in a catalog (0 when empty).
pub(crate) fn max_popularity(catalog: &Catalog) -> f64 {
    catalog.values().map(|i| i.popularity).fold(0.0, f64::max)
}

impl ItemScale {}

/// The primary subtag of a BCP 47 tag, lowercased ("en" for "en-GB").
pub(crate) fn primary_language(tag: &str) -> String {
    tag.split(['-', '_']).next().unwrap_or("").to_ascii_lowercase()
}

/// 1 when the item's language and the locale agree, 0 when not, 0.5 when
/// either is unknown.
pub(crate) fn language_match(item_language: Option<&str>, locale: Option<&str>) -> f32 {
    match (item_language.map(primary_language), locale.map(primary_language)) {
        (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => {
            if a == b {
                1.0
            } else {
                0.0
            }
        }
        _ => 0.5,
    }
}

/// Writes one candidate's row into `row` (`ITEM_WIDTH` long). `item` is
/// `None` for an id with no metadata: only the missing flags and the
/// language's "unknown" are set.
pub(crate) fn item_features(item: Option<&CatalogItem>, scale: &ItemScale, row: &mut [f32]) {
    row.fill(0.0);
    let Some(item) = item else {
        row[SLOT_LANGUAGE_MATCH] = 0.5;
        row[SLOT_YEAR_MISSING] = 1.0;
        row[SLOT_DURATION_MISSING] = 1.0;
        return;
    };
    for c in &item.categories {
        row[category_bucket(c)] = 1.0;
    }
    if scale.max_popularity > 0.0 {
        row[SLOT_LOG_POPULARITY] = ((1.0 + item.popularity.max(0.0)).ln() / (1.0 + scale.max_popularity).ln()) as f32;
    }
    match item.release_year {
        Some(y) => row[SLOT_AGE] = ((scale.year - y as i32) as f32 / 50.0).clamp(0.0, 2.0),
        None => row[SLOT_YEAR_MISSING] = 1.0,
    }
    match item.duration_ms {
        Some(ms) => row[SLOT_LOG_DURATION] = ((1.0 + ms as f64 / 60_000.0).ln() / 5.0) as f32,
        None => row[SLOT_DURATION_MISSING] = 1.0,
    }
    row[SLOT_LANGUAGE_MATCH] = language_match(item.language.as_deref(), scale.locale.as_deref());
}

/// The UTC calendar year of a Unix time in milliseconds.
pub(crate) fn utc_year(ms: i64) -> i32 {
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + if month <= 2 { 1 } else { 0 }) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_matches_the_manifest_test_vectors() {
        let manifest: serde_json::Value =
            serde_json::from_slice(crate::model::BUILTIN_MANIFEST).expect("built-in manifest is JSON");
        let vectors = manifest["hashing"]["test_vectors"].as_array().expect("test vectors");
        assert!(vectors.len() >= 3);
        for v in vectors {
            let text = v["text"].as_str().unwrap();
            assert_eq!(format!("{:016x}", fnv1a64(text)), v["fnv1a64"].as_str().unwrap(), "{text:?}");
            assert_eq!(category_bucket(text) as u64, v["category_bucket"].as_u64().unwrap());
            assert_eq!(item_row(text) as u64, v["item_row"].as_u64().unwrap());
        }
    }

    #[test]
    fn history_keeps_the_most_recent_engaged_items() {
        let mut profile = Profile::new(30.0);
        let now = 1_790_000_000_000;
        for i in 0..300i64 {
            let id = format!("item-{i:03}");
            let state = crate::store::profile::ItemState {
                id: id.clone(),
                engagement: if i % 7 == 0 { -1.0 } else { 1.0 + (i % 5) as f64 },
                at_ms: now - (i * 37 % 300) * 3_600_000,
                // Ties in last_ms are broken by id.
                last_ms: now - (i * 37 % 300 / 2) * 3_600_000,
                ..Default::default()
            };
            profile.items.insert(id, state);
        }
        let got = history(&profile, now, Some("item-001"));
        let mut want: Vec<&crate::store::profile::ItemState> =
            profile.items.values().filter(|s| s.engagement > 0.0 && s.id != "item-001").collect();
        want.sort_by(|a, b| b.last_ms.cmp(&a.last_ms).then_with(|| a.id.cmp(&b.id)));
        want.truncate(MAX_HISTORY);
        assert_eq!(
            got.iter().map(|h| h.item_id.as_str()).collect::<Vec<_>>(),
            want.iter().map(|s| s.id.as_str()).collect::<Vec<_>>()
        );
        for (h, s) in got.iter().zip(&want) {
            let expected = s.engagement * 0.5f64.powf((now - s.at_ms) as f64 / DAY_MS / 30.0);
            assert!((h.weight - expected).abs() < 1e-9 * expected);
        }
    }

    #[test]
    fn utc_year_at_boundaries() {
        assert_eq!(utc_year(0), 1970);
        assert_eq!(utc_year(946_684_800_000 - 1), 1999);
        assert_eq!(utc_year(946_684_800_000), 2000);
        assert_eq!(utc_year(1_798_761_600_000), 2027); // 2027-01-01T00:00:00Z
        assert_eq!(utc_year(1_798_761_600_000 - 1), 2026);
    }

    #[test]
    fn language_match_uses_primary_subtags() {
        assert_eq!(language_match(Some("en-GB"), Some("EN_us")), 1.0);
        assert_eq!(language_match(Some("fr"), Some("en-GB")), 0.0);
        assert_eq!(language_match(None, Some("en")), 0.5);
        assert_eq!(language_match(Some("en"), None), 0.5);
    }

    #[test]
    fn item_row_of_a_full_item() {
        let item = CatalogItem {
            id: "m1".into(),
            title: "T".into(),
            categories: vec!["drama".into(), "drama".into()],
            language: Some("en".into()),
            duration_ms: Some(60 * 60_000),
            release_year: Some(2016),
            popularity: 9.0,
            content_rating: None,
        };
        let scale = ItemScale { max_popularity: 99.0, locale: Some("en-US".into()), year: 2026 };
        let mut row = vec![9.0; ITEM_WIDTH];
        item_features(Some(&item), &scale, &mut row);
        assert_eq!(row[category_bucket("drama")], 1.0);
        assert_eq!(row[..CATEGORY_BUCKETS].iter().sum::<f32>(), 1.0);
        assert!((row[SLOT_LOG_POPULARITY] - 0.5).abs() < 1e-6);
        assert!((row[SLOT_AGE] - 0.2).abs() < 1e-6);
        assert!((row[SLOT_LOG_DURATION] - (61f32).ln() / 5.0).abs() < 1e-6);
        assert_eq!(row[SLOT_LANGUAGE_MATCH], 1.0);
        assert_eq!((row[SLOT_YEAR_MISSING], row[SLOT_DURATION_MISSING]), (0.0, 0.0));
        item_features(None, &scale, &mut row);
        assert_eq!(row.iter().sum::<f32>(), 2.5);
    }
}
