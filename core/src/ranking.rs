//! Ranking: candidates in, an ordered row out, each item with a reason the
//! app can show.
//!
//! 1. Candidates are resolved against their inline metadata or the catalog
//!    cache, de-duplicated, and filtered: blocked categories and disliked
//!    items never appear, whatever the scorer; watched or completed items go
//!    when the options say so.
//! 2. They are scored by the model (tract, one call for all candidates) or,
//!    when personalization is off or no model is usable, by the
//!    non-personalized ranker: recent popularity, favouring the request's
//!    language. The result says which answered and why.
//! 3. The order is re-ranked for diversity (maximal marginal relevance over
//!    category sets, or a cap per category), and a share of the slots can be
//!    given to exploration: items from below the cut, placed at random
//!    positions and marked as such.
//! 4. Each item gets a reason: "because you watched X" (an item in the
//!    user's own history that shares its categories), "new in a category you
//!    like", "popular in your language", "popular", or "something new" for an
//!    exploration slot. Reasons only ever name what the user did or what the
//!    item is; never a blocked category, never an inference.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::features::{self, HistoryEntry, ITEM_WIDTH, ItemScale, RankContext};
use crate::model::{Model, ScoreInputs};
use crate::random::SplitMix;
use crate::store::history::{Catalog, CatalogItem};
use crate::store::profile::Profile;
use crate::store::settings::PrivacySettings;

/// Most candidates one call takes.
pub const MAX_CANDIDATES: usize = 20_000;
/// Most items one call returns.
pub const MAX_LIMIT: u32 = 1_000;
/// Largest share of the returned slots given to exploration.
pub const MAX_EXPLORATION_SHARE: f64 = 0.5;

/// An item to rank: its id, and optionally its metadata when the catalog
/// cache may not have it (metadata given here is used for this call only).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Candidate {
    pub item_id: String,
    #[uniffi(default = None)]
    pub item: Option<CatalogItem>,
}

impl Candidate {
    pub fn id(item_id: impl Into<String>) -> Self {
        Candidate { item_id: item_id.into(), item: None }
    }
}

/// How to spread a row across categories.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, uniffi::Enum)]
pub enum Diversity {
    /// Pure score order.
    Off,
    /// Maximal marginal relevance: each next item maximizes
    /// `lambda * relevance - (1 - lambda) * max similarity to those above`,
    /// similarity being the overlap of category sets. `lambda` in [0, 1]:
    /// 1 is pure score order.
    Mmr { lambda: f64 },
    /// At most this many items per category (an item counts for each of its
    /// categories); items past the caps fill the row only if nothing else
    /// is left.
    CategoryCap { max_per_category: u32 },
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RankOptions {
    pub context: RankContext,
    pub diversity: Diversity,
    /// How many items to return (1 to 1,000).
    #[uniffi(default = 20)]
    pub limit: u32,
    /// Share of the returned slots given to exploration, 0 to 0.5.
    #[uniffi(default = 0.0)]
    pub exploration_share: f64,
    /// Leave out items the user has started or finished.
    #[uniffi(default = false)]
    pub exclude_watched: bool,
    /// Leave out items the user has finished.
    #[uniffi(default = true)]
    pub exclude_completed: bool,
    /// Seed of the exploration draw (same seed, same row); random when
    /// absent.
    #[uniffi(default = None)]
    pub seed: Option<u64>,
    /// The id of an experiment defined on this device (`define_experiment`):
    /// the row is ranked as this install's arm says, and what it shows is
    /// logged, sealed, for the experiment's reports.
    #[uniffi(default = None)]
    pub experiment: Option<String>,
}

impl RankOptions {
    pub fn new(context: RankContext) -> Self {
        RankOptions {
            context,
            diversity: Diversity::Off,
            limit: 20,
            exploration_share: 0.0,
            exclude_watched: false,
            exclude_completed: true,
            seed: None,
            experiment: None,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(Error::invalid("limit", format!("must be 1 to {MAX_LIMIT}")));
        }
        if !(0.0..=MAX_EXPLORATION_SHARE).contains(&self.exploration_share) {
            return Err(Error::invalid("exploration_share", format!("must be 0 to {MAX_EXPLORATION_SHARE}")));
        }
        if self.context.local_hour > 23 {
            return Err(Error::invalid("context.local_hour", "must be 0 to 23"));
        }
        self.diversity.validate()
    }
}

impl Diversity {
    pub(crate) fn validate(&self) -> Result<()> {
        match *self {
            Diversity::Mmr { lambda } if !(0.0..=1.0).contains(&lambda) => {
                Err(Error::invalid("diversity.lambda", "must be 0 to 1"))
            }
            Diversity::CategoryCap { max_per_category: 0 } => {
                Err(Error::invalid("diversity.max_per_category", "must be at least 1"))
            }
            _ => Ok(()),
        }
    }
}

/// Why an item is in the row, in terms safe to show the user.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum Reason {
    /// It shares categories with an item the user engaged with.
    BecauseYouWatched {
        item_id: String,
        title: String,
    },
    /// Released this year or last, in a category the user engages with.
    NewInCategoryYouLike {
        category: String,
    },
    /// Popular, and in the language of the request.
    PopularInYourLanguage {
        language: String,
    },
    Popular,
    /// Placed by an exploration slot.
    SomethingDifferent,
}

impl Reason {
    /// An English rendering; apps localize from the variant.
    pub fn text(&self) -> String {
        match self {
            Reason::BecauseYouWatched { title, .. } => format!("Because you watched {title}"),
            Reason::NewInCategoryYouLike { category } => format!("New in {category}"),
            Reason::PopularInYourLanguage { language } => format!("Popular in {}", language_name(language)),
            Reason::Popular => "Popular right now".into(),
            Reason::SomethingDifferent => "Something different".into(),
        }
    }
}

fn language_name(code: &str) -> String {
    let name = match code {
        "en" => "English",
        "fr" => "French",
        "de" => "German",
        "es" => "Spanish",
        "it" => "Italian",
        "pt" => "Portuguese",
        "ja" => "Japanese",
        "ko" => "Korean",
        "hi" => "Hindi",
        "zh" => "Chinese",
        "ar" => "Arabic",
        "nl" => "Dutch",
        "sv" => "Swedish",
        "pl" => "Polish",
        "tr" => "Turkish",
        _ => return format!("your language ({code})"),
    };
    name.into()
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RankedItem {
    pub item_id: String,
    /// The scorer's score (a logit for the model; higher ranks first).
    pub score: f64,
    pub reason: Reason,
    /// `reason` in English.
    pub reason_text: String,
    /// Placed by an exploration slot rather than by its score.
    pub explored: bool,
}

/// Why the non-personalized ranker answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FallbackReason {
    /// The user turned personalization off.
    PersonalizationOff,
    /// No model package verified (none installed and the built-in one
    /// failed).
    NoModel,
    /// The model failed on this request.
    ModelFailed,
    /// This install is in an experiment's fallback arm.
    ExperimentArm,
}

/// Which ranker produced a row.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum Ranker {
    Model { version: u64, digest: String },
    Fallback { why: FallbackReason },
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RankResult {
    pub items: Vec<RankedItem>,
    pub ranker: Ranker,
    /// True when the row was ordered with the user's history.
    pub personalized: bool,
    /// Candidates left out by blocked categories, dislikes or the
    /// watched/completed options.
    pub filtered: u32,
    /// The experiment arm that ranked the row, when the request named an
    /// experiment and personalization is on.
    pub experiment_arm: Option<String>,
}

/// A candidate that passed the filters.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub item_id: String,
    pub item: Option<Arc<CatalogItem>>,
    /// Category buckets as bits, for similarity.
    pub bits: u32,
}

/// Everything a ranking needs from the session, gathered under its lock so
/// that scoring runs outside it.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub candidates: Vec<Resolved>,
    pub filtered: u32,
    pub personalization: bool,
    pub user: [f32; features::USER_WIDTH],
    pub history: Vec<HistoryEntry>,
    /// Per `history` entry, its catalog item (for reasons), if known and
    /// not in a blocked category.
    pub history_items: Vec<Option<Arc<CatalogItem>>>,
    /// The user's liked categories, strongest first.
    pub liked_categories: Vec<String>,
    pub scale: ItemScale,
    pub now_ms: i64,
}

fn category_bits(item: Option<&CatalogItem>) -> u32 {
    item.map_or(0, |i| i.categories.iter().fold(0u32, |b, c| b | 1 << features::category_bucket(c)))
}

/// Resolves and filters candidates against the session's state.
pub(crate) fn prepare(
    candidates: Vec<Candidate>,
    options: &RankOptions,
    settings: &PrivacySettings,
    profile: &Profile,
    catalog: &Catalog,
    max_popularity: f64,
    now_ms: i64,
) -> Result<Prepared> {
    options.validate()?;
    if candidates.len() > MAX_CANDIDATES {
        return Err(Error::invalid("candidates", format!("at most {MAX_CANDIDATES} per call")));
    }
    let blocked: HashSet<String> = settings.blocked_categories.iter().map(|c| c.to_lowercase()).collect();
    let in_blocked_category =
        |item: &CatalogItem| !blocked.is_empty() && item.categories.iter().any(|c| blocked.contains(&c.to_lowercase()));
    let mut seen = HashSet::with_capacity(candidates.len());
    let mut resolved = Vec::with_capacity(candidates.len());
    let mut filtered = 0u32;
    let mut inline_max_popularity = 0f64;
    for c in candidates {
        if c.item_id.is_empty() || c.item_id.len() > 256 {
            return Err(Error::invalid("candidates.item_id", "must be 1 to 256 bytes"));
        }
        if let Some(item) = &c.item {
            item.validate()?;
            if item.id != c.item_id {
                return Err(Error::invalid("candidates.item", "item.id must equal item_id"));
            }
            inline_max_popularity = inline_max_popularity.max(item.popularity);
        }
        if !seen.insert(c.item_id.clone()) {
            continue;
        }
        let item = c.item.map(Arc::new).or_else(|| catalog.get(&c.item_id).cloned());
        let is_blocked = item.as_deref().is_some_and(in_blocked_category);
        let state = profile.items.get(&c.item_id);
        let disliked = state.is_some_and(|s| s.disliked);
        let completed = state.is_some_and(|s| s.completed);
        let watched = state.is_some_and(|s| s.plays > 0 || s.completed || s.progress > 0.0);
        if is_blocked || disliked || (options.exclude_completed && completed) || (options.exclude_watched && watched) {
            filtered += 1;
            continue;
        }
        let bits = category_bits(item.as_deref());
        resolved.push(Resolved { item_id: c.item_id, item, bits });
    }
    let mut scale = ItemScale::new(max_popularity, options.context.locale.clone(), now_ms);
    scale.max_popularity = scale.max_popularity.max(inline_max_popularity);
    let personalization = settings.personalization_enabled;
    let (user, history, history_items, liked_categories) = if personalization {
        let history = features::history(profile, now_ms, None);
        // An item in a category the user blocked is never named in a reason,
        // even when the candidate shares another category with it.
        let history_items =
            history.iter().map(|h| catalog.get(&h.item_id).filter(|i| !in_blocked_category(i)).cloned()).collect();
        let mut liked: Vec<(&String, f64)> = profile
            .category_affinity
            .iter()
            .filter(|(c, a)| **a > 0.0 && !blocked.contains(&c.to_lowercase()))
            .map(|(c, a)| (c, *a))
            .collect();
        liked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let liked = liked.into_iter().take(5).map(|(c, _)| c.clone()).collect();
        (features::user_features(profile), history, history_items, liked)
    } else {
        ([0.0; features::USER_WIDTH], Vec::new(), Vec::new(), Vec::new())
    };
    Ok(Prepared {
        candidates: resolved,
        filtered,
        personalization,
        user,
        history,
        history_items,
        liked_categories,
        scale,
        now_ms,
    })
}

impl Prepared {
    /// The model's inputs for every candidate.
    pub(crate) fn score_inputs(&self, context: &RankContext) -> ScoreInputs {
        let n = self.candidates.len();
        let mut items = vec![0f32; n * ITEM_WIDTH];
        for (c, row) in self.candidates.iter().zip(items.chunks_exact_mut(ITEM_WIDTH)) {
            features::item_features(c.item.as_deref(), &self.scale, row);
        }
        let (history_ids, history_weights) = features::history_tensors(&self.history);
        ScoreInputs {
            user: self.user.to_vec(),
            context: context.features().to_vec(),
            items,
            item_ids: self.candidates.iter().map(|c| features::item_row(&c.item_id)).collect(),
            history_ids,
            history_weights,
        }
    }

    /// The non-personalized score: popularity, favouring the request's
    /// language and recent releases.
    fn fallback_score(&self, c: &Resolved) -> f64 {
        let Some(item) = &c.item else {
            return 0.0;
        };
        let language = match features::language_match(item.language.as_deref(), self.scale.locale.as_deref()) {
            1.0 => 1.0,
            0.0 => 0.3,
            _ => 0.6,
        };
        let recency = match item.release_year {
            Some(y) => 1.0 / (1.0 + (self.scale.year - y as i32).max(0) as f64 / 5.0),
            None => 0.5,
        };
        (1.0 + item.popularity.max(0.0)).ln() * language * recency
    }

    fn reason(&self, c: &Resolved, personalized: bool) -> Reason {
        if personalized && let Some(item) = &c.item {
            let cats: HashSet<&str> = item.categories.iter().map(String::as_str).collect();
            let liked = self.liked_categories.iter().find(|l| cats.contains(l.as_str()));
            let recent = item.release_year.is_some_and(|y| y as i32 >= self.scale.year - 1);
            if let (Some(category), true) = (liked, recent) {
                return Reason::NewInCategoryYouLike { category: category.clone() };
            }
            // The heaviest history item sharing the most categories.
            let mut best: Option<(usize, f64, &HistoryEntry, &CatalogItem)> = None;
            for (h, hi) in self.history.iter().zip(&self.history_items) {
                let Some(hi) = hi else {
                    continue;
                };
                if h.item_id == c.item_id {
                    continue;
                }
                let shared = hi.categories.iter().filter(|x| cats.contains(x.as_str())).count();
                if shared > 0 && best.is_none_or(|(s, w, _, _)| (shared, h.weight) > (s, w)) {
                    best = Some((shared, h.weight, h, hi));
                }
            }
            if let Some((_, _, h, hi)) = best {
                return Reason::BecauseYouWatched { item_id: h.item_id.clone(), title: hi.title.clone() };
            }
        }
        match c.item.as_ref().and_then(|i| i.language.as_deref()) {
            Some(lang) if features::language_match(Some(lang), self.scale.locale.as_deref()) == 1.0 => {
                Reason::PopularInYourLanguage { language: features::primary_language(lang) }
            }
            _ => Reason::Popular,
        }
    }
}

/// The result of scoring: per candidate, in `Prepared.candidates` order.
pub(crate) enum Scores {
    Model { scores: Vec<f32>, version: u64, digest: String },
    Fallback(FallbackReason),
}

/// Scores with `model` when personalization allows, else (or on failure)
/// with the non-personalized ranker.
pub(crate) fn score(prepared: &Prepared, model: Option<&Model>, context: &RankContext) -> Scores {
    if !prepared.personalization {
        return Scores::Fallback(FallbackReason::PersonalizationOff);
    }
    let Some(model) = model else {
        return Scores::Fallback(FallbackReason::NoModel);
    };
    if prepared.candidates.is_empty() {
        return Scores::Model { scores: Vec::new(), version: model.version(), digest: model.digest.clone() };
    }
    match model.score(&prepared.score_inputs(context)) {
        Ok(scores) if scores.iter().all(|s| s.is_finite()) => {
            Scores::Model { scores, version: model.version(), digest: model.digest.clone() }
        }
        Ok(_) => {
            log::warn!("model gave non-finite scores; using the fallback ranker");
            Scores::Fallback(FallbackReason::ModelFailed)
        }
        Err(e) => {
            log::warn!("model failed ({e}); using the fallback ranker");
            Scores::Fallback(FallbackReason::ModelFailed)
        }
    }
}

fn jaccard(a: u32, b: u32) -> f64 {
    let union = (a | b).count_ones();
    if union == 0 { 0.0 } else { (a & b).count_ones() as f64 / union as f64 }
}

/// Maximal marginal relevance: picks `take` of `order` (candidate indices,
/// best score first) one at a time, each the first with the largest
/// `lambda * relevance - (1 - lambda) * max similarity to those picked`,
/// relevance being the score scaled to [0, 1] and similarity the Jaccard
/// overlap of `bits` (by candidate index). `lambda` is in [0, 1].
///
/// The same picks as scanning every remaining candidate for every pick, in
/// far fewer steps: similarity depends only on a candidate's bits, so among
/// candidates with the same bits the first remaining one (the most relevant)
/// is never beaten by the others, and each pick compares one candidate per
/// distinct bit pattern.
fn mmr(order: &[usize], scores: &[f64], bits: &[u32], lambda: f64, take: usize) -> Vec<usize> {
    let (lo, hi) =
        order.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &i| (lo.min(scores[i]), hi.max(scores[i])));
    let span = if hi > lo { hi - lo } else { 1.0 };
    // Positions in `order` grouped by bit pattern, each group in order.
    let mut group_of: HashMap<u32, usize> = HashMap::new();
    let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
    for (j, &i) in order.iter().enumerate() {
        let g = *group_of.entry(bits[i]).or_insert_with(|| {
            groups.push((bits[i], Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(j);
    }
    // Per group: its next unpicked member, and the largest similarity of its
    // bits to anything picked so far.
    let mut next = vec![0usize; groups.len()];
    let mut max_sim = vec![0f64; groups.len()];
    let mut out = Vec::with_capacity(take.min(order.len()));
    while out.len() < take {
        // (value, position in order, group) of the best head so far.
        let mut best: Option<(f64, usize, usize)> = None;
        for (g, (_, members)) in groups.iter().enumerate() {
            let Some(&j) = members.get(next[g]) else { continue };
            let relevance = (scores[order[j]] - lo) / span;
            let value = lambda * relevance - (1.0 - lambda) * max_sim[g];
            // (Scores are finite; a NaN would rank last rather than stall.)
            let value = if value.is_nan() { f64::NEG_INFINITY } else { value };
            let better = best.is_none_or(|(v, at, _)| value > v || (value == v && j < at));
            if better {
                best = Some((value, j, g));
            }
        }
        let Some((_, j, g)) = best else { break };
        next[g] += 1;
        let picked = groups[g].0;
        for (h, (b, _)) in groups.iter().enumerate() {
            max_sim[h] = max_sim[h].max(jaccard(*b, picked));
        }
        out.push(order[j]);
    }
    out
}

/// Orders `idx` (indices into candidates, sorted by score) for diversity and
/// returns the first `take`.
fn diversify(order: &[usize], scores: &[f64], prepared: &Prepared, diversity: &Diversity, take: usize) -> Vec<usize> {
    match *diversity {
        Diversity::Off => order.iter().copied().take(take).collect(),
        Diversity::Mmr { lambda } => {
            let bits: Vec<u32> = prepared.candidates.iter().map(|c| c.bits).collect();
            mmr(order, scores, &bits, lambda, take)
        }
        Diversity::CategoryCap { max_per_category } => {
            let cap = max_per_category as usize;
            let mut counts: HashMap<&str, usize> = HashMap::new();
            let mut out = Vec::with_capacity(take);
            let mut over = Vec::new();
            for &i in order {
                if out.len() == take {
                    break;
                }
                let cats: Vec<&str> = prepared.candidates[i]
                    .item
                    .as_ref()
                    .map(|it| it.categories.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                if cats.iter().any(|c| counts.get(c).copied().unwrap_or(0) >= cap) {
                    over.push(i);
                    continue;
                }
                for c in cats {
                    *counts.entry(c).or_default() += 1;
                }
                out.push(i);
            }
            out.extend(over.into_iter().take(take - out.len()));
            out
        }
    }
}

/// Orders, diversifies, explores and explains.
pub(crate) fn finish(prepared: &Prepared, scores: Scores, options: &RankOptions) -> RankResult {
    let (values, ranker, personalized): (Vec<f64>, Ranker, bool) = match scores {
        Scores::Model { scores, version, digest } => {
            (scores.iter().map(|&s| s as f64).collect(), Ranker::Model { version, digest }, true)
        }
        Scores::Fallback(why) => {
            (prepared.candidates.iter().map(|c| prepared.fallback_score(c)).collect(), Ranker::Fallback { why }, false)
        }
    };
    let n = prepared.candidates.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        values[b]
            .total_cmp(&values[a])
            .then_with(|| prepared.candidates[a].item_id.cmp(&prepared.candidates[b].item_id))
    });
    let limit = (options.limit as usize).min(n);
    let explore = ((limit as f64) * options.exploration_share).floor() as usize;
    let exploit = limit - explore;
    let mut row: Vec<(usize, bool)> =
        diversify(&order, &values, prepared, &options.diversity, exploit).into_iter().map(|i| (i, false)).collect();
    if explore > 0 {
        let seed = options.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            t.as_nanos() as u64 ^ prepared.now_ms as u64
        });
        let mut rng = SplitMix::new(seed);
        let taken: HashSet<usize> = row.iter().map(|(i, _)| *i).collect();
        let mut pool: Vec<usize> = order.iter().copied().filter(|i| !taken.contains(i)).collect();
        for _ in 0..explore.min(pool.len()) {
            let pick = pool.swap_remove(rng.below(pool.len()));
            // Never the first slot: the top of the row stays the best guess.
            let at = 1 + rng.below(row.len().max(1));
            row.insert(at.min(row.len()), (pick, true));
        }
    }
    let items = row
        .into_iter()
        .map(|(i, explored)| {
            let c = &prepared.candidates[i];
            let reason = if explored { Reason::SomethingDifferent } else { prepared.reason(c, personalized) };
            RankedItem { item_id: c.item_id.clone(), score: values[i], reason_text: reason.text(), reason, explored }
        })
        .collect();
    RankResult { items, ranker, personalized, filtered: prepared.filtered, experiment_arm: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MMR as defined: every remaining candidate scanned for every pick.
    fn mmr_by_full_scan(order: &[usize], scores: &[f64], bits: &[u32], lambda: f64, take: usize) -> Vec<usize> {
        let lo = order.iter().map(|&i| scores[i]).fold(f64::INFINITY, f64::min);
        let hi = order.iter().map(|&i| scores[i]).fold(f64::NEG_INFINITY, f64::max);
        let span = if hi > lo { hi - lo } else { 1.0 };
        let mut rest = order.to_vec();
        let mut out: Vec<usize> = Vec::new();
        while out.len() < take && !rest.is_empty() {
            let value = |i: usize| {
                let sim = out.iter().map(|&p| jaccard(bits[i], bits[p])).fold(0.0, f64::max);
                let relevance = (scores[i] - lo) / span;
                lambda * relevance - (1.0 - lambda) * sim
            };
            let mut best = 0;
            for j in 1..rest.len() {
                if value(rest[j]) > value(rest[best]) {
                    best = j;
                }
            }
            out.push(rest.remove(best));
        }
        out
    }

    #[test]
    fn mmr_picks_what_a_full_scan_picks() {
        let mut rng = SplitMix::new(7);
        for case in 0..2000 {
            let n = 1 + rng.below(60);
            // Few distinct scores and few category bits: many ties.
            let scores: Vec<f64> = (0..n).map(|_| rng.below(8) as f64 * 0.25 - 1.0).collect();
            let bits: Vec<u32> = (0..n).map(|_| (rng.next_u64() & 0b1_1111) as u32).collect();
            let lambda = [0.0, 0.3, 0.5, 0.7, 1.0][case % 5];
            let take = rng.below(n + 3);
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            let got = mmr(&order, &scores, &bits, lambda, take);
            let want = mmr_by_full_scan(&order, &scores, &bits, lambda, take);
            assert_eq!(got, want, "case {case}: n {n}, lambda {lambda}, take {take}");
            assert_eq!(got.len(), take.min(n));
        }
    }
}
