//! A device's own evaluation of rankers, for the release gate: the
//! candidate model, the model it ranks with now and the fallback, each
//! scored on engagements the device held out of every update it sent.
//!
//! An engagement is held out when it came after the device's last
//! federated contribution: local training reads the history as it stands
//! at a round, so nothing newer than the last round's watermark has been in
//! an update. Of those, the ones that count are first engagements (a play,
//! completion or like of an item the history had not played): the "next
//! new item" a row should have shown. The newest [`HELD_OUT_MAX`] count.
//!
//! Each is replayed as the device would have ranked it then: the history
//! before it folded into a fresh profile, every catalog item not yet
//! watched as the candidates, the event's own context and time, no
//! diversity or exploration. Its NDCG@10 under a ranker is
//! 1 / log2(position + 2) when the item is in the top 10, else 0; the
//! device's value is the mean over its held-out engagements. Nothing of
//! this leaves the device except through the gate's noisy sums.

use std::collections::HashSet;

use super::gate::Evaluation;
use crate::model::Model;
use crate::model::features::RankContext;
use crate::ranking::{self, Candidate, Diversity, RankOptions, Scores};
use crate::store::history::{Catalog, Event};
use crate::store::profile::Profile;
use crate::store::settings::PrivacySettings;

/// Held-out engagements a device evaluates on, at most (its newest).
pub const HELD_OUT_MAX: usize = 10;

/// The rank cutoff of NDCG.
const CUTOFF: usize = 10;

/// The rankers compared: the candidate, and the model the device ranks
/// with now (None: it ranks with the fallback, which is then both).
pub(crate) struct Rankers<'a> {
    pub candidate: &'a Model,
    pub published: Option<&'a Model>,
}

/// What a device's evaluation found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceEvaluation {
    /// Mean NDCG@10 of each ranker over the held-out engagements.
    pub evaluation: Evaluation,
    /// How many held-out engagements the means are over (1 to
    /// [`HELD_OUT_MAX`]).
    pub engagements: usize,
}

/// The events in time order (ties in the order given).
fn by_time(events: &[Event]) -> Vec<&Event> {
    let mut order: Vec<&Event> = events.iter().collect();
    order.sort_by_key(|e| e.timestamp_ms);
    order
}

/// Scores `rankers` on the first engagements among `held_out` (events that
/// came after all of `history`), each against what came before it. None
/// when personalization is off (the device ranks with no model, so it has
/// nothing to say of one) or when no held-out event is a first engagement
/// of a catalog item.
pub(crate) fn evaluate(
    history: &[Event],
    held_out: &[Event],
    half_life_days: f64,
    catalog: &Catalog,
    settings: &PrivacySettings,
    max_popularity: f64,
    rankers: &Rankers<'_>,
) -> Option<DeviceEvaluation> {
    if !settings.personalization_enabled {
        return None;
    }
    let (history, held_out) = (by_time(history), by_time(held_out));
    // Which held-out events are first engagements, the newest HELD_OUT_MAX.
    let mut engaged: HashSet<&str> =
        history.iter().filter(|e| e.kind.is_engagement()).map(|e| e.item_id.as_str()).collect();
    let mut counted = Vec::new();
    for (i, e) in held_out.iter().enumerate() {
        if e.kind.is_engagement() && engaged.insert(e.item_id.as_str()) && catalog.contains_key(&e.item_id) {
            counted.push(i);
        }
    }
    let counted: HashSet<usize> = counted.iter().rev().take(HELD_OUT_MAX).copied().collect();
    if counted.is_empty() {
        return None;
    }
    let mut ids: Vec<&String> = catalog.keys().collect();
    ids.sort();
    let mut then = Profile::new(half_life_days);
    let mut n = 0i64;
    for e in &history {
        n += 1;
        then.fold(n, e, catalog.get(&e.item_id).map(|i| i.as_ref()));
    }
    let mut sums = [0.0f64; 3];
    for (i, e) in held_out.iter().enumerate() {
        if counted.contains(&i) {
            let gains = gains_at(e, &then, &ids, catalog, settings, max_popularity, rankers);
            sums.iter_mut().zip(gains).for_each(|(s, g)| *s += g);
        }
        n += 1;
        then.fold(n, e, catalog.get(&e.item_id).map(|i| i.as_ref()));
    }
    let k = counted.len() as f64;
    Some(DeviceEvaluation {
        evaluation: Evaluation { candidate: sums[0] / k, published: sums[1] / k, fallback: sums[2] / k },
        engagements: counted.len(),
    })
}

/// NDCG@10 of `e`'s item under the candidate, the published model and the
/// fallback, ranked as of `then`.
fn gains_at(
    e: &Event,
    then: &Profile,
    ids: &[&String],
    catalog: &Catalog,
    settings: &PrivacySettings,
    max_popularity: f64,
    rankers: &Rankers<'_>,
) -> [f64; 3] {
    let context =
        RankContext { device: e.context.device, local_hour: e.context.local_hour, locale: e.context.locale.clone() };
    let options = RankOptions {
        limit: CUTOFF as u32,
        diversity: Diversity::Off,
        exploration_share: 0.0,
        exclude_watched: true,
        exclude_completed: true,
        ..RankOptions::new(context.clone())
    };
    // The whole catalog, or in a catalog above the ranking bound the item
    // and the first others by id.
    let others = ids.iter().filter(|id| ***id != e.item_id).take(ranking::MAX_CANDIDATES - 1);
    let candidates = std::iter::once(&e.item_id).chain(others.copied()).map(|id| Candidate::id(id.clone())).collect();
    let Ok(prepared) = ranking::prepare(candidates, &options, settings, then, catalog, max_popularity, e.timestamp_ms)
    else {
        return [0.0; 3];
    };
    let gain = |scores: Scores| {
        let row = ranking::finish(&prepared, scores, &options);
        match row.items.iter().position(|r| r.item_id == e.item_id) {
            Some(p) if p < CUTOFF => 1.0 / ((p + 2) as f64).log2(),
            _ => 0.0,
        }
    };
    let fallback = gain(ranking::score(&prepared, None, &context));
    let candidate = gain(ranking::score(&prepared, Some(rankers.candidate), &context));
    let published = match rankers.published {
        Some(m) => gain(ranking::score(&prepared, Some(m), &context)),
        None => fallback,
    };
    [candidate, published, fallback]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::ModelPackage;
    use crate::model::TrustedKey;
    use crate::store::history::{CatalogItem, DeviceClass, EventContext, EventKind};

    const T0: i64 = 1_700_000_000_000;

    fn catalog(n: usize) -> Catalog {
        (0..n)
            .map(|i| {
                let item = CatalogItem {
                    id: format!("i{i:03}"),
                    title: format!("Item {i}"),
                    categories: vec!["drama".into()],
                    language: None,
                    duration_ms: None,
                    release_year: None,
                    // i000 the most popular.
                    popularity: (n - i) as f64,
                    content_rating: None,
                };
                (item.id.clone(), Arc::new(item))
            })
            .collect()
    }

    fn play(item: usize, kind: EventKind, minute: i64) -> Event {
        Event {
            item_id: format!("i{item:03}"),
            kind,
            timestamp_ms: T0 + minute * 60_000,
            position_ms: None,
            duration_ms: None,
            context: EventContext { device: DeviceClass::Tv, local_hour: 21, locale: None },
        }
    }

    fn run(history: &[Event], held_out: &[Event], settings: &PrivacySettings) -> Option<DeviceEvaluation> {
        let model = Model::load(&ModelPackage::builtin(), &[TrustedKey::release()]).unwrap();
        let catalog = catalog(40);
        let max = catalog.values().map(|i| i.popularity).fold(0.0, f64::max);
        evaluate(history, held_out, 30.0, &catalog, settings, max, &Rankers { candidate: &model, published: None })
    }

    #[test]
    fn each_first_engagement_is_ranked_among_what_was_not_yet_watched() {
        let settings = PrivacySettings::default();
        // The two most popular were watched: the fallback puts i002 first
        // (NDCG 1); then, i002 watched and i003 only skipped, i004 second
        // (1 / log2 3). The skip is no engagement and counts for nothing.
        let history = [play(0, EventKind::Complete, 0), play(1, EventKind::Play, 1)];
        let held_out = [play(2, EventKind::Play, 2), play(3, EventKind::Skip, 3), play(4, EventKind::Like, 4)];
        let got = run(&history, &held_out, &settings).unwrap();
        assert_eq!(got.engagements, 2);
        let want = (1.0 + 1.0 / 3f64.log2()) / 2.0;
        assert!((got.evaluation.fallback - want).abs() < 1e-12, "{got:?}");
        // No installed model: the published ranker is the fallback.
        assert_eq!(got.evaluation.published, got.evaluation.fallback);
        assert!((0.0..=1.0).contains(&got.evaluation.candidate));
    }

    #[test]
    fn replays_other_events_and_unknown_items_do_not_count_and_the_newest_ten_do() {
        let settings = PrivacySettings::default();
        let history = [play(0, EventKind::Play, 0)];
        let replay = [play(0, EventKind::Complete, 1), play(1, EventKind::Dislike, 2)];
        assert_eq!(run(&history, &replay, &settings), None);
        let mut unknown = play(0, EventKind::Play, 3);
        unknown.item_id = "not-in-the-catalog".into();
        assert_eq!(run(&history, &[unknown], &settings), None);
        assert_eq!(run(&history, &[], &settings), None);
        let many: Vec<Event> = (1..30).map(|i| play(i, EventKind::Play, i as i64)).collect();
        assert_eq!(run(&history, &many, &settings).unwrap().engagements, HELD_OUT_MAX);
        // Personalization off: no model ranks, nothing to say of one.
        let off = PrivacySettings { personalization_enabled: false, ..PrivacySettings::default() };
        assert_eq!(run(&history, &many, &off), None);
    }
}
