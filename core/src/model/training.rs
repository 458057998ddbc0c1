//! On-device training: examples made from the sealed history, SGD through the
//! model's training-step graph, and the update that may leave the device:
//! `delta = local - global`, clipped to L2 norm at most C.
//!
//! An example is one item the user engaged with (played, completed, liked),
//! in the context of that engagement (device class, local hour, language),
//! against negatives drawn uniformly from catalog items the user has not
//! engaged with. Its features are the ones ranking would have computed just
//! before that engagement: the history is replayed in time order into a
//! fresh profile, and the user features and the weighted history are taken
//! from it as they stood then (so the positive itself, and everything
//! watched after it, are not among its inputs). Ranking asks "what next,
//! given what came before"; examples made from today's profile would instead
//! teach the model which items sit together in a finished history, which
//! ranks the next item worse (measured on MovieLens-100K: README). The
//! update carries no example: only the weight delta and a coarse count.

use std::collections::{HashMap, HashSet};

use log::debug;

use crate::error::FederatedFailure;
use crate::error::{Error, Result};
use crate::model::features::{self, ITEM_WIDTH, ItemScale, RankContext};
use crate::model::{Model, ScoreInputs, Weights};
use crate::random::SplitMix;
use crate::store::history::{Catalog, CatalogItem, Event};
use crate::store::profile::Profile;

/// How one round trains. Defaults come from the model manifest's
/// `training`; a coordinator's round config overrides them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrainingPlan {
    pub epochs: u32,
    pub learning_rate: f32,
    /// Examples whose gradients are averaged per SGD step.
    pub batch_examples: usize,
    pub negatives_per_positive: usize,
    /// The most recent this many positives are used.
    pub max_examples: usize,
    /// L2 bound C of the update.
    pub clip_norm: f64,
    /// The factor the dense parameters' part of the delta is scaled by
    /// before clipping (1: none).
    pub dense_weight: f32,
    pub seed: u64,
}

/// The smallest dense weight a round may ask for: below it the dense
/// parameters would carry over a million times the noise, and an f32
/// weight would round towards zero.
pub const MIN_DENSE_WEIGHT: f64 = 1e-6;

/// What a round asks of local training; `None` keeps the model manifest's
/// default. A coordinator's train config fills this in.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundSettings {
    /// L2 bound C of the update.
    pub clip_norm: f64,
    pub epochs: u32,
    pub learning_rate: Option<f64>,
    pub negatives_per_positive: Option<usize>,
    /// Train on at most this many positives, the newest (500 when `None`):
    /// bounds a round's time on a device with a long history.
    pub max_examples: Option<usize>,
    /// Scales the dense parameters' part of the update (every parameter
    /// but the id tables) by this weight, from [`MIN_DENSE_WEIGHT`] to 1,
    /// before clipping, so the bound C spends itself on the id tables,
    /// whose rows few devices touch, rather than on the towers every
    /// device moves (1 when `None`). The update leaves with that part
    /// still scaled: the coordinator divides it out after the noise, so
    /// the dense parameters carry 1 / weight times the noise, which they
    /// bear.
    pub dense_weight: Option<f64>,
    /// Seeds the shuffling and the negatives.
    pub seed: u64,
}

impl RoundSettings {
    pub fn new(clip_norm: f64, seed: u64) -> RoundSettings {
        RoundSettings {
            clip_norm,
            epochs: 1,
            learning_rate: None,
            negatives_per_positive: None,
            max_examples: None,
            dense_weight: None,
            seed,
        }
    }
}

impl TrainingPlan {
    /// The manifest's defaults with the round's settings over them.
    pub(crate) fn for_round(model: &Model, round: &RoundSettings) -> TrainingPlan {
        let base = TrainingPlan::from_model(model, round.clip_norm, round.seed);
        TrainingPlan {
            epochs: round.epochs,
            learning_rate: round.learning_rate.map_or(base.learning_rate, |lr| lr as f32),
            negatives_per_positive: round.negatives_per_positive.unwrap_or(base.negatives_per_positive),
            max_examples: round.max_examples.unwrap_or(base.max_examples),
            dense_weight: round.dense_weight.map_or(base.dense_weight, |w| w as f32),
            ..base
        }
    }

    pub(crate) fn from_model(model: &Model, clip_norm: f64, seed: u64) -> TrainingPlan {
        let t = &model.manifest.training;
        TrainingPlan {
            epochs: 1,
            learning_rate: t.learning_rate as f32,
            batch_examples: t.batch_examples,
            negatives_per_positive: t.negatives_per_positive,
            max_examples: 500,
            clip_norm,
            dense_weight: 1.0,
            seed,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.epochs > 20 {
            return Err(Error::invalid("epochs", "must be 1 to 20"));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate <= 10.0) {
            return Err(Error::invalid("learning_rate", "must be in (0, 10]"));
        }
        if self.batch_examples == 0 || self.negatives_per_positive == 0 || self.max_examples == 0 {
            return Err(Error::invalid("training plan", "batch, negatives and max examples must be at least 1"));
        }
        if self.negatives_per_positive > 256 {
            return Err(Error::invalid("negatives_per_positive", "at most 256"));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return Err(Error::invalid("clip_norm", "must be a positive number"));
        }
        if !(self.dense_weight.is_finite() && self.dense_weight >= MIN_DENSE_WEIGHT as f32 && self.dense_weight <= 1.0)
        {
            return Err(Error::invalid("dense_weight", "must be in [1e-6, 1]"));
        }
        Ok(())
    }
}

/// One positive, where it happened, and the inputs the model saw then.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Example {
    pub item_id: String,
    pub context: RankContext,
    /// The user features of the profile as it stood just before the event.
    pub user: [f32; features::USER_WIDTH],
    /// The weighted history as it stood just before the event (the item
    /// itself left out), as the graph's `history_ids` and `history_weights`.
    pub history_ids: Vec<i64>,
    pub history_weights: Vec<f32>,
}

/// The positives of a history: the latest engaging event per item, newest
/// first, at most `max`, leaving out items the user since disliked or
/// skipped past (engagement <= 0 in `profile`, today's). Each comes with the
/// features of the moment before it, from `events` replayed in time order
/// (ties in the order given) into a fresh profile with `profile`'s
/// half-life; `catalog` gives the categories as it does when recording.
pub(crate) fn examples(events: &[Event], profile: &Profile, catalog: &Catalog, max: usize) -> Vec<Example> {
    let mut latest: HashMap<&str, usize> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if e.kind.is_engagement()
            && latest.get(e.item_id.as_str()).is_none_or(|&l| events[l].timestamp_ms <= e.timestamp_ms)
        {
            latest.insert(&e.item_id, i);
        }
    }
    let mut picked: Vec<usize> = latest
        .into_values()
        .filter(|&i| profile.items.get(&events[i].item_id).is_some_and(|s| s.engagement > 0.0 && !s.disliked))
        .collect();
    picked.sort_by(|&a, &b| {
        let (a, b) = (&events[a], &events[b]);
        b.timestamp_ms.cmp(&a.timestamp_ms).then_with(|| a.item_id.cmp(&b.item_id))
    });
    picked.truncate(max);
    let wanted: HashSet<usize> = picked.iter().copied().collect();

    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| events[i].timestamp_ms);
    let mut then = Profile::new(profile.half_life_days);
    let mut made: HashMap<usize, Example> = HashMap::with_capacity(wanted.len());
    for (n, &i) in order.iter().enumerate() {
        if made.len() == wanted.len() {
            break; // events after the newest example feed no example
        }
        let e = &events[i];
        if wanted.contains(&i) {
            let history = features::history(&then, e.timestamp_ms, Some(&e.item_id));
            let (history_ids, history_weights) = features::history_tensors(&history);
            made.insert(
                i,
                Example {
                    item_id: e.item_id.clone(),
                    context: RankContext {
                        device: e.context.device,
                        local_hour: e.context.local_hour,
                        locale: e.context.locale.clone(),
                    },
                    user: features::user_features(&then),
                    history_ids,
                    history_weights,
                },
            );
        }
        then.fold(n as i64 + 1, e, catalog.get(&e.item_id).map(|i| i.as_ref()));
    }
    picked.into_iter().filter_map(|i| made.remove(&i)).collect()
}

/// What local training produced.
#[derive(Debug, Clone)]
pub struct LocalUpdate {
    /// `local - global` over weights.bin's layout, clipped.
    pub delta: Vec<f32>,
    pub norm_before_clip: f64,
    pub norm: f64,
    pub examples: usize,
    pub steps: usize,
    /// Mean training loss over the first and the last epoch.
    pub first_epoch_loss: f64,
    pub last_epoch_loss: f64,
}

pub(crate) fn l2(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt()
}

/// Scales `v` so its L2 norm is at most `c`; returns the norm before.
pub(crate) fn clip(v: &mut [f32], c: f64) -> f64 {
    let norm = l2(v);
    if norm > c {
        let s = (c / norm) as f32;
        v.iter_mut().for_each(|x| *x *= s);
        // f32 rounding can leave the norm a hair above c.
        while l2(v) > c {
            v.iter_mut().for_each(|x| *x *= 1.0 - 1e-6);
        }
    }
    norm
}

/// Local training that blew up (a learning rate too high for this history):
/// nothing can be sent, and the device sits the round out.
fn diverged(what: &str) -> Error {
    Error::Federated { kind: FederatedFailure::Update, reason: format!("local training diverged: {what}") }
}

/// Trains from `global` on `examples` and returns the clipped delta.
pub(crate) fn train(
    model: &Model,
    global: &Weights,
    examples: &[Example],
    profile: &Profile,
    catalog: &Catalog,
    plan: &TrainingPlan,
    now_ms: i64,
) -> Result<LocalUpdate> {
    plan.validate()?;
    if examples.is_empty() {
        return Err(Error::invalid("history", "no engaged items to learn from"));
    }
    let engaged: HashSet<&str> =
        profile.items.values().filter(|s| s.engagement > 0.0 || s.plays > 0).map(|s| s.id.as_str()).collect();
    let mut pool: Vec<&CatalogItem> =
        catalog.values().map(|i| i.as_ref()).filter(|i| !engaged.contains(i.id.as_str())).collect();
    pool.sort_by(|a, b| a.id.cmp(&b.id));
    if pool.len() < plan.negatives_per_positive {
        return Err(Error::invalid("catalog", "too few unseen items to draw negatives from"));
    }
    let max_popularity = features::max_popularity(catalog);
    let global_flat = global.flat();
    let mut local = global_flat.clone();
    let mut rng = SplitMix::new(plan.seed);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let n = 1 + plan.negatives_per_positive;
    let labels: Vec<f32> = (0..n).map(|i| (i == 0) as u8 as f32).collect();
    let sample_weights = vec![1.0f32; n];
    let (mut steps, mut first_loss, mut last_loss) = (0, 0.0, 0.0);
    for epoch in 0..plan.epochs {
        // Fisher-Yates with the plan's seed: the same history trains the same.
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut epoch_loss = 0.0;
        for batch in order.chunks(plan.batch_examples) {
            let weights = Weights::from_flat(model, &local)?;
            let mut sum = vec![0f32; local.len()];
            for &e in batch {
                let ex = &examples[e];
                let mut candidates: Vec<Option<&CatalogItem>> = vec![catalog.get(&ex.item_id).map(|i| i.as_ref())];
                let mut ids = vec![ex.item_id.as_str()];
                while candidates.len() < n {
                    let neg = pool[rng.below(pool.len())];
                    if !ids.contains(&neg.id.as_str()) {
                        ids.push(&neg.id);
                        candidates.push(Some(neg));
                    }
                }
                let scale = ItemScale::new(max_popularity, ex.context.locale.clone(), now_ms);
                let mut items = vec![0f32; n * ITEM_WIDTH];
                for (c, row) in candidates.iter().zip(items.chunks_exact_mut(ITEM_WIDTH)) {
                    features::item_features(*c, &scale, row);
                }
                let inputs = ScoreInputs {
                    user: ex.user.to_vec(),
                    context: ex.context.features().to_vec(),
                    items,
                    item_ids: ids.iter().map(|id| features::item_row(id)).collect(),
                    history_ids: ex.history_ids.clone(),
                    history_weights: ex.history_weights.clone(),
                };
                let loss = model.accumulate_step(&weights, &inputs, &labels, &sample_weights, &mut sum)?;
                if !loss.is_finite() {
                    return Err(diverged("the loss is not finite"));
                }
                epoch_loss += loss as f64;
            }
            let step = plan.learning_rate / batch.len() as f32;
            for (w, g) in local.iter_mut().zip(&sum) {
                *w -= step * g;
            }
            steps += 1;
        }
        let mean = epoch_loss / examples.len() as f64;
        if epoch == 0 {
            first_loss = mean;
        }
        last_loss = mean;
    }
    let mut delta: Vec<f32> = local.iter().zip(&global_flat).map(|(l, g)| l - g).collect();
    if delta.iter().any(|d| !d.is_finite()) {
        return Err(diverged("the update is not finite"));
    }
    if plan.dense_weight != 1.0 {
        let mut at = 0;
        for p in &model.manifest.parameters {
            if p.gradient_rows_of.is_none() {
                delta[at..at + p.count].iter_mut().for_each(|d| *d *= plan.dense_weight);
            }
            at += p.count;
        }
    }
    let norm_before_clip = clip(&mut delta, plan.clip_norm);
    let norm = l2(&delta);
    debug!("trained {} examples in {steps} steps; update norm {norm_before_clip:.4} -> {norm:.4}", examples.len());
    Ok(LocalUpdate {
        delta,
        norm_before_clip,
        norm,
        examples: examples.len(),
        steps,
        first_epoch_loss: first_loss,
        last_epoch_loss: last_loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::EventKind;

    #[test]
    fn clipping_bounds_the_norm_and_keeps_the_direction() {
        let mut v: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let before = v.clone();
        let norm = clip(&mut v, 1.5);
        assert!(norm > 1.5);
        assert!(l2(&v) <= 1.5);
        assert!((l2(&v) - 1.5).abs() < 1e-4);
        let ratio = v[3] / before[3];
        assert!(v.iter().zip(&before).all(|(a, b)| (a - b * ratio).abs() < 1e-5));
        let mut small = vec![0.1f32; 4];
        assert!((clip(&mut small, 1.0) - 0.2).abs() < 1e-6);
        assert_eq!(small, vec![0.1f32; 4], "an update inside the bound is untouched");
    }

    fn event(item: &str, kind: EventKind, day: i64) -> Event {
        Event {
            item_id: item.into(),
            kind,
            timestamp_ms: crate::store::history::MIN_TIMESTAMP_MS + day * 86_400_000,
            position_ms: None,
            duration_ms: None,
            context: crate::store::history::EventContext {
                device: crate::store::history::DeviceClass::Phone,
                local_hour: (day % 24) as u8,
                locale: None,
            },
        }
    }

    fn item(id: &str, category: &str) -> CatalogItem {
        CatalogItem {
            id: id.into(),
            title: id.into(),
            categories: vec![category.into()],
            language: None,
            duration_ms: None,
            release_year: None,
            popularity: 1.0,
            content_rating: None,
        }
    }

    #[test]
    fn an_example_sees_only_what_came_before_it() {
        let catalog: Catalog = [item("a", "drama"), item("b", "drama"), item("c", "comedy"), item("d", "news")]
            .into_iter()
            .map(|i| (i.id.clone(), std::sync::Arc::new(i)))
            .collect();
        // Recorded out of time order; "b" played twice; "d" disliked later.
        let events = vec![
            event("c", EventKind::Play, 3),
            event("a", EventKind::Play, 1),
            event("b", EventKind::Play, 2),
            event("d", EventKind::Play, 4),
            event("b", EventKind::Play, 5),
            event("d", EventKind::Dislike, 6),
        ];
        let mut today = Profile::new(30.0);
        for (i, e) in events.iter().enumerate() {
            today.fold(i as i64 + 1, e, catalog.get(&e.item_id).map(|i| i.as_ref()));
        }
        let ex = examples(&events, &today, &catalog, 10);
        let items: Vec<&str> = ex.iter().map(|e| e.item_id.as_str()).collect();
        assert_eq!(items, ["b", "c", "a"], "latest play per item, newest first; the disliked item is no positive");
        let rows = |e: &Example| -> Vec<i64> {
            e.history_ids.iter().zip(&e.history_weights).filter(|(_, w)| **w > 0.0).map(|(r, _)| *r).collect()
        };
        let row = |id: &str| features::item_row(id);
        // "a" was first: nothing before it (one padding slot), no affinities.
        assert_eq!(ex[2].history_ids, vec![0]);
        assert_eq!(ex[2].history_weights, vec![0.0]);
        assert!(ex[2].user[..features::CATEGORY_BUCKETS].iter().all(|v| *v == 0.0));
        // "c" (day 3) saw "b" then "a", most recent first, not itself nor "d".
        assert_eq!(rows(&ex[1]), vec![row("b"), row("a")]);
        // "b"'s latest play (day 5) saw d, c, a and not its own earlier play.
        assert_eq!(rows(&ex[0]), vec![row("d"), row("c"), row("a")]);
        assert_eq!(ex[1].context.local_hour, 3);
        // The user features are the replayed profile's at that moment: before
        // "c" only drama had been watched.
        let mut before_c = Profile::new(30.0);
        for e in [&events[1], &events[2]] {
            before_c.fold(0, e, catalog.get(&e.item_id).map(|i| i.as_ref()));
        }
        assert_eq!(ex[1].user, features::user_features(&before_c));
        assert_ne!(ex[0].user, ex[1].user);
        // At most `max`, the newest kept.
        let two = examples(&events, &today, &catalog, 2);
        assert_eq!(two, ex[..2].to_vec());
    }
}
