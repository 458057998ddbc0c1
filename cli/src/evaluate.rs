//! Ranking quality through the on-device path: each user's events go into a
//! fresh encrypted store, the store ranks candidates with `Hearth::rank`, and
//! the held-out item's position gives NDCG@10 and HR@10.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use hearth_core::{
    Candidate, CatalogItem, DeviceClass, Diversity, Event, FixedKeyProvider, Hearth, HearthConfig, RankContext,
    RankOptions, Ranker,
};
use serde::{Deserialize, Serialize};

pub const CUTOFF: usize = 10;

/// One user of an evaluation: their history and the item held out.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalUser {
    pub events: Vec<Event>,
    pub held_out: String,
    /// The context of the held-out interaction; phone at 20:00 when absent.
    #[serde(default)]
    pub context: Option<RankContext>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EvalInput {
    pub catalog: Vec<CatalogItem>,
    pub users: Vec<EvalUser>,
}

/// Means over users.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    pub users: usize,
    pub ndcg_at_10: f64,
    pub hit_rate_at_10: f64,
    /// Users whose row came from the fallback ranker.
    pub fallback_rows: usize,
}

/// NDCG@10 and HR@10 of one held-out item at 0-based `position`.
pub fn gains(position: Option<usize>) -> (f64, f64) {
    match position {
        Some(p) if p < CUTOFF => (1.0 / ((p + 2) as f64).log2(), 1.0),
        _ => (0.0, 0.0),
    }
}

pub fn default_context() -> RankContext {
    RankContext { device: DeviceClass::Phone, local_hour: 20, locale: None }
}

/// Every catalog item the user has no event for, as candidates.
pub fn unseen_candidates(catalog: &[CatalogItem], events: &[Event]) -> Vec<Candidate> {
    let seen: std::collections::HashSet<&str> = events.iter().map(|e| e.item_id.as_str()).collect();
    catalog.iter().filter(|i| !seen.contains(i.id.as_str())).map(|i| Candidate::id(i.id.clone())).collect()
}

/// Ranks every catalog item the user has no event for, in `hearth`, and
/// returns the held-out item's 0-based position within the top 10.
pub fn held_out_position(
    hearth: &Hearth,
    catalog: &[CatalogItem],
    events: &[Event],
    held_out: &str,
    context: RankContext,
) -> Result<(Option<usize>, bool)> {
    let candidates = unseen_candidates(catalog, events);
    let options = RankOptions {
        limit: CUTOFF as u32,
        diversity: Diversity::Off,
        exclude_completed: false,
        ..RankOptions::new(context)
    };
    let row = hearth.rank(candidates, options)?;
    let fallback = matches!(row.ranker, Ranker::Fallback { .. });
    Ok((row.items.iter().position(|r| r.item_id == held_out), fallback))
}

/// Runs the evaluation on `threads` threads.
pub fn evaluate(input: &EvalInput, model: Option<&Path>, trust_keys: &[String], threads: usize) -> Result<Metrics> {
    if input.users.is_empty() {
        bail!("no users to evaluate");
    }
    let next = AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(input.users.len()));
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let Some(user) = input.users.get(n) else {
                            return Ok(());
                        };
                        let dir = tempfile::tempdir()?;
                        let config = HearthConfig {
                            trusted_model_keys: trust_keys.to_vec(),
                            ..HearthConfig::new(dir.path().to_str().context("temp dir is not UTF-8")?)
                        };
                        let hearth = Hearth::open(config, Arc::new(FixedKeyProvider::new([7; 32])))?;
                        hearth.upsert_catalog(input.catalog.clone())?;
                        for chunk in user.events.chunks(10_000) {
                            hearth.record_batch(chunk.to_vec()).with_context(|| format!("user {n}: recording"))?;
                        }
                        if let Some(dir) = model {
                            hearth
                                .install_model_from_dir(dir.to_str().context("model path is not UTF-8")?.to_string())
                                .context("installing the model")?;
                        }
                        let context = user.context.clone().unwrap_or_else(default_context);
                        let r = held_out_position(&hearth, &input.catalog, &user.events, &user.held_out, context)?;
                        hearth.close()?;
                        results.lock().unwrap().push(r);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("evaluation worker panicked")?;
        }
        Ok(())
    })?;
    let results = results.into_inner().unwrap();
    let mut m = Metrics { users: results.len(), ..Default::default() };
    for (position, fallback) in results {
        let (ndcg, hit) = gains(position);
        m.ndcg_at_10 += ndcg;
        m.hit_rate_at_10 += hit;
        m.fallback_rows += fallback as usize;
    }
    m.ndcg_at_10 /= m.users as f64;
    m.hit_rate_at_10 /= m.users as f64;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gains_follow_the_definitions() {
        assert_eq!(gains(Some(0)), (1.0, 1.0));
        assert!((gains(Some(2)).0 - 0.5).abs() < 1e-12);
        assert_eq!(gains(Some(10)), (0.0, 0.0));
        assert_eq!(gains(None), (0.0, 0.0));
    }
}
