//! The user profile: a summary of the history kept current as events arrive,
//! so that ranking never rescans the history.
//!
//! Every weight decays exponentially with a half-life (30 days by default).
//! Aggregates over a handful of slots (categories, hours, device classes) are
//! kept at a common reference time and rescaled when it moves; per-item state
//! carries its own timestamp and is decayed when read.
//!
//! The profile is sealed in the store with the id of the last event folded in
//! (its watermark): the aggregates as one record, each item's state as a row
//! of its own. It is written every so many events (only the items that
//! changed) and on close; after a crash, opening the store folds in the events
//! past the watermark, so the stored profile can lag the history but never
//! lose it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::store::history::{Catalog, CatalogItem, DeviceClass, Event, EventKind};

/// Default half-life of engagement weights.
pub const DEFAULT_HALF_LIFE_DAYS: f64 = 30.0;
const DAY_MS: f64 = 86_400_000.0;

/// How much each kind of event says about the user's taste.
pub(crate) fn engagement_weight(event: &Event) -> f64 {
    match event.kind {
        EventKind::Impression => 0.0,
        EventKind::Play => 1.0,
        EventKind::Progress => 0.5 * event.progress_fraction().unwrap_or(0.5),
        EventKind::Complete => 2.0,
        EventKind::Skip => -1.0,
        EventKind::Like => 3.0,
        EventKind::Dislike => -4.0,
        EventKind::Search => 0.5,
    }
}

/// What the profile keeps about one item the user met.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ItemState {
    /// The item's id (kept inside the sealed record).
    #[serde(default)]
    pub id: String,
    /// Changed since the profile was last written.
    #[serde(skip)]
    pub dirty: bool,
    /// Engagement, decayed to `at_ms`.
    pub engagement: f64,
    pub at_ms: i64,
    pub last_ms: i64,
    pub plays: u32,
    pub completed: bool,
    pub liked: bool,
    pub disliked: bool,
    /// Furthest progress seen, 0 to 1.
    pub progress: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Profile {
    /// Id of the last event folded in.
    pub watermark: i64,
    pub half_life_days: f64,
    /// The time the decayed aggregates refer to: the newest event seen.
    pub reference_ms: i64,
    pub first_ms: Option<i64>,
    pub event_count: u64,
    pub kind_counts: [u64; 8],
    pub category_affinity: BTreeMap<String, f64>,
    pub device_mix: [f64; 5],
    pub hour_mix: [f64; 24],
    /// Per-item state: stored as rows of its own (`profile_items`), not in
    /// the aggregate record, so a write touches only what changed.
    #[serde(skip)]
    pub items: HashMap<String, ItemState>,
    /// How many items changed since the profile was last written.
    #[serde(skip)]
    pub dirty_count: usize,
    /// The items with engagement above 0, most recently engaged first (ties
    /// by id): `features::history` reads the first few instead of sorting
    /// every item on every ranking. `fold` keeps it in step; `reindex`
    /// rebuilds it after `items` is replaced.
    #[serde(skip)]
    engaged_by_recency: BTreeSet<(Reverse<i64>, String)>,
    /// `items.len()` and `event_count` when the index was last in step. A
    /// mismatch (items changed some other way) leaves the index unused.
    #[serde(skip)]
    index_stamp: (usize, u64),
}

impl Profile {
    pub(crate) fn new(half_life_days: f64) -> Self {
        Profile {
            watermark: 0,
            half_life_days,
            reference_ms: 0,
            first_ms: None,
            event_count: 0,
            kind_counts: [0; 8],
            category_affinity: BTreeMap::new(),
            device_mix: [0.0; 5],
            hour_mix: [0.0; 24],
            items: HashMap::new(),
            dirty_count: 0,
            engaged_by_recency: BTreeSet::new(),
            index_stamp: (0, 0),
        }
    }

    /// Rebuilds the recency index from `items` (after they are loaded).
    pub(crate) fn reindex(&mut self) {
        self.engaged_by_recency =
            self.items.values().filter(|s| s.engagement > 0.0).map(|s| (Reverse(s.last_ms), s.id.clone())).collect();
        self.index_stamp = (self.items.len(), self.event_count);
    }

    /// The items with engagement above 0, most recently engaged first (ties
    /// by id), or None when the index is not in step with `items`.
    pub(crate) fn engaged_by_recency(&self) -> Option<impl Iterator<Item = &ItemState>> {
        if self.index_stamp != (self.items.len(), self.event_count) {
            return None;
        }
        Some(self.engaged_by_recency.iter().filter_map(|(_, id)| self.items.get(id)))
    }

    fn decay(&self, dt_ms: i64) -> f64 {
        if dt_ms <= 0 {
            return 1.0;
        }
        (-(dt_ms as f64) / DAY_MS * std::f64::consts::LN_2 / self.half_life_days).exp()
    }

    /// Folds one stored event in. `catalog` resolves the item's categories.
    pub(crate) fn fold(&mut self, id: i64, event: &Event, catalog: Option<&CatalogItem>) {
        let t = event.timestamp_ms;
        if t > self.reference_ms {
            let f = self.decay(t - self.reference_ms);
            if f < 1.0 {
                self.category_affinity.values_mut().for_each(|v| *v *= f);
                self.device_mix.iter_mut().for_each(|v| *v *= f);
                self.hour_mix.iter_mut().for_each(|v| *v *= f);
            }
            self.reference_ms = t;
        }
        let age = self.decay(self.reference_ms - t);
        let index_in_step = self.index_stamp == (self.items.len(), self.event_count);
        self.watermark = self.watermark.max(id);
        self.first_ms = Some(self.first_ms.map_or(t, |f| f.min(t)));
        self.event_count += 1;
        self.kind_counts[event.kind.index()] += 1;

        let w = engagement_weight(event);
        if event.kind != EventKind::Impression {
            self.device_mix[event.context.device.index()] += age;
            self.hour_mix[event.context.local_hour as usize % 24] += age;
        }
        if let Some(item) = catalog
            && w != 0.0
            && !item.categories.is_empty()
        {
            let share = w * age / item.categories.len() as f64;
            for c in &item.categories {
                match self.category_affinity.get_mut(c) {
                    Some(v) => *v += share,
                    None => {
                        self.category_affinity.insert(c.clone(), share);
                    }
                }
            }
        }

        let half_life = self.half_life_days;
        let state = match self.items.get_mut(&event.item_id) {
            Some(s) => s,
            None => {
                let fresh = ItemState { id: event.item_id.clone(), ..ItemState::default() };
                self.items.entry(event.item_id.clone()).or_insert(fresh)
            }
        };
        if !state.dirty {
            state.dirty = true;
            self.dirty_count += 1;
        }
        let before = (state.engagement > 0.0).then_some(Reverse(state.last_ms));
        let decay_to = |from: i64, to: i64| {
            if to <= from { 1.0 } else { (-((to - from) as f64) / DAY_MS * std::f64::consts::LN_2 / half_life).exp() }
        };
        if t >= state.at_ms {
            state.engagement = state.engagement * decay_to(state.at_ms, t) + w;
            state.at_ms = t;
        } else {
            state.engagement += w * decay_to(t, state.at_ms);
        }
        state.last_ms = state.last_ms.max(t);
        match event.kind {
            EventKind::Play => state.plays += 1,
            EventKind::Complete => {
                state.completed = true;
                state.progress = 1.0;
            }
            EventKind::Like => {
                state.liked = true;
                state.disliked = false;
            }
            EventKind::Dislike => {
                state.disliked = true;
                state.liked = false;
            }
            _ => {}
        }
        if let Some(p) = event.progress_fraction() {
            state.progress = state.progress.max(p);
        }
        if index_in_step {
            let after = (state.engagement > 0.0).then_some(Reverse(state.last_ms));
            match (before, after) {
                (Some(old), Some(new)) if old == new => {}
                (Some(old), new) => {
                    let mut entry = (old, state.id.clone());
                    self.engaged_by_recency.remove(&entry);
                    if let Some(new) = new {
                        entry.0 = new;
                        self.engaged_by_recency.insert(entry);
                    }
                }
                (None, Some(new)) => {
                    self.engaged_by_recency.insert((new, state.id.clone()));
                }
                (None, None) => {}
            }
            self.index_stamp = (self.items.len(), self.event_count);
        }
    }

    /// Recomputes category affinities from the per-item state, for when the
    /// catalog learns categories of items already in the history.
    pub(crate) fn recompute_affinities(&mut self, catalog: &Catalog) {
        let mut aff = BTreeMap::new();
        for (id, state) in &self.items {
            let Some(item) = catalog.get(id) else {
                continue;
            };
            if item.categories.is_empty() {
                continue;
            }
            let e = state.engagement * self.decay(self.reference_ms - state.at_ms);
            for c in &item.categories {
                *aff.entry(c.clone()).or_insert(0.0) += e / item.categories.len() as f64;
            }
        }
        self.category_affinity = aff;
    }

    /// Marks every item written: after a profile write.
    pub(crate) fn mark_clean(&mut self) {
        self.items.values_mut().for_each(|i| i.dirty = false);
        self.dirty_count = 0;
    }

    pub(crate) fn completion_rate(&self) -> f64 {
        let plays = self.kind_counts[EventKind::Play.index()];
        let completes = self.kind_counts[EventKind::Complete.index()];
        if plays == 0 { 0.0 } else { (completes as f64 / plays as f64).min(1.0) }
    }

    pub(crate) fn skip_rate(&self) -> f64 {
        let plays = self.kind_counts[EventKind::Play.index()];
        let skips = self.kind_counts[EventKind::Skip.index()];
        let n = plays + skips;
        if n == 0 { 0.0 } else { skips as f64 / n as f64 }
    }

    pub(crate) fn summary(&self, top: usize) -> ProfileSummary {
        let mut cats: Vec<CategoryAffinity> = self
            .category_affinity
            .iter()
            .filter(|(_, v)| **v > 0.0)
            .map(|(c, v)| CategoryAffinity { category: c.clone(), affinity: *v })
            .collect();
        cats.sort_by(|a, b| b.affinity.total_cmp(&a.affinity).then_with(|| a.category.cmp(&b.category)));
        cats.truncate(top);
        let norm = |xs: &[f64]| {
            let s: f64 = xs.iter().sum();
            xs.iter().map(|x| if s > 0.0 { x / s } else { 0.0 }).collect::<Vec<_>>()
        };
        let devices = norm(&self.device_mix);
        ProfileSummary {
            event_count: self.event_count,
            items_seen: self.items.len() as u64,
            completion_rate: self.completion_rate(),
            skip_rate: self.skip_rate(),
            top_categories: cats,
            device_mix: DeviceClass::ALL
                .iter()
                .zip(devices)
                .map(|(d, share)| DeviceShare { device: *d, share })
                .collect(),
            hour_mix: norm(&self.hour_mix),
            first_event_ms: self.first_ms,
            last_event_ms: if self.event_count > 0 { Some(self.reference_ms) } else { None },
        }
    }
}

/// How strongly the user leans to a category (decayed engagement).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Record)]
pub struct CategoryAffinity {
    pub category: String,
    pub affinity: f64,
}

/// Share of recent activity on one device class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Record)]
pub struct DeviceShare {
    pub device: DeviceClass,
    pub share: f64,
}

/// What the profile says, for the user's privacy screen and for tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, uniffi::Record)]
pub struct ProfileSummary {
    pub event_count: u64,
    pub items_seen: u64,
    /// Completions per play.
    pub completion_rate: f64,
    /// Skips per (play + skip).
    pub skip_rate: f64,
    /// Strongest categories first.
    pub top_categories: Vec<CategoryAffinity>,
    pub device_mix: Vec<DeviceShare>,
    /// 24 shares, local hour 0 to 23, summing to 1 (or all 0).
    pub hour_mix: Vec<f64>,
    pub first_event_ms: Option<i64>,
    pub last_event_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, cats: &[&str]) -> CatalogItem {
        CatalogItem {
            id: id.into(),
            title: id.into(),
            categories: cats.iter().map(|c| c.to_string()).collect(),
            language: None,
            duration_ms: None,
            release_year: None,
            popularity: 0.0,
            content_rating: None,
        }
    }

    #[test]
    fn affinity_decays_by_half_life() {
        let mut p = Profile::new(30.0);
        let t0 = 1_700_000_000_000;
        let a = item("a", &["drama"]);
        p.fold(1, &Event::bare("a", EventKind::Complete, t0), Some(&a));
        assert!((p.category_affinity["drama"] - 2.0).abs() < 1e-9);
        // 30 days later another item moves the reference: drama halves.
        let b = item("b", &["comedy"]);
        p.fold(2, &Event::bare("b", EventKind::Play, t0 + 30 * 86_400_000), Some(&b));
        assert!((p.category_affinity["drama"] - 1.0).abs() < 1e-9);
        assert!((p.category_affinity["comedy"] - 1.0).abs() < 1e-9);
        assert_eq!(p.watermark, 2);
        assert_eq!(p.completion_rate(), 1.0);
        let s = p.summary(10);
        assert_eq!(s.event_count, 2);
        assert_eq!(s.hour_mix[21], 1.0);
    }

    #[test]
    fn out_of_order_events_fold_the_same_as_in_order() {
        let t0 = 1_700_000_000_000;
        let a = item("a", &["drama", "crime"]);
        let evs = [Event::bare("a", EventKind::Play, t0), Event::bare("a", EventKind::Like, t0 + 5 * 86_400_000)];
        let mut p1 = Profile::new(30.0);
        p1.fold(1, &evs[0], Some(&a));
        p1.fold(2, &evs[1], Some(&a));
        let mut p2 = Profile::new(30.0);
        p2.fold(1, &evs[1], Some(&a));
        p2.fold(2, &evs[0], Some(&a));
        for c in ["drama", "crime"] {
            assert!((p1.category_affinity[c] - p2.category_affinity[c]).abs() < 1e-9);
        }
        assert!((p1.items["a"].engagement - p2.items["a"].engagement).abs() < 1e-9);
        // Recomputing from item state gives the same affinities.
        let catalog: Catalog = [("a".to_string(), std::sync::Arc::new(a))].into();
        let before = p1.category_affinity.clone();
        p1.recompute_affinities(&catalog);
        for (c, v) in before {
            assert!((p1.category_affinity[&c] - v).abs() < 1e-9);
        }
    }

    #[test]
    fn the_recency_index_gives_the_history_a_full_scan_gives() {
        let mut rng = crate::random::SplitMix::new(11);
        let kinds = [EventKind::Play, EventKind::Skip, EventKind::Dislike, EventKind::Like, EventKind::Impression];
        let t0 = 1_750_000_000_000i64;
        let mut p = Profile::new(DEFAULT_HALF_LIFE_DAYS);
        for n in 1..=3000i64 {
            // 400 items, timestamps out of order, repeated last_ms (ties by id).
            let item = format!("item-{}", rng.below(400));
            let t = t0 + rng.below(2000) as i64 * 3_600_000;
            p.fold(n, &Event::bare(&item, kinds[rng.below(kinds.len())], t), None);
            if n % 250 != 0 {
                continue;
            }
            let mut scanned = p.clone();
            scanned.index_stamp = (usize::MAX, 0);
            assert!(p.engaged_by_recency().is_some() && scanned.engaged_by_recency().is_none());
            let now = t0 + 2100 * 3_600_000;
            for except in [None, Some("item-7")] {
                let got = crate::model::features::history(&p, now, except);
                assert_eq!(got, crate::model::features::history(&scanned, now, except), "after {n} events");
                assert_eq!(got.len(), crate::model::features::MAX_HISTORY);
            }
            let mut rebuilt = p.clone();
            rebuilt.reindex();
            assert_eq!(rebuilt.engaged_by_recency, p.engaged_by_recency, "after {n} events");
        }
        // Items changed without `fold`: the index is not used.
        p.items.insert("elsewhere".into(), ItemState { id: "elsewhere".into(), ..ItemState::default() });
        assert!(p.engaged_by_recency().is_none());
    }
}
