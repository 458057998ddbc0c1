//! One simulated person, as the product shows them: the home row their
//! device ranks (titles, reasons, explored slots, which ranker answered),
//! what their device's store holds and in what form, and what left the
//! device (from its privacy ledger, or from the in-process rounds).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use hearth_core::{
    CatalogItem, Diversity, Event, Hearth, HearthConfig, PASSPHRASE_ITERATIONS, PassphraseKeyProvider, RankContext,
    RankOptions, Ranker,
};

use crate::human_bytes;

/// What one in-process round sent from the person's device (rounds run by
/// `--flower` are in the device's own ledger instead).
#[derive(Debug, Clone)]
pub struct Sent {
    pub run: usize,
    pub round: u32,
    pub values: usize,
    pub norm_before_clip: f64,
    pub norm: f64,
    pub clip_norm: f64,
    /// The run's epsilon after this round (None: no noise).
    pub epsilon: Option<f64>,
}

/// The report for the device whose store is in `dir`.
pub fn report(
    dir: &Path,
    passphrase: &str,
    trusted_model_keys: Vec<String>,
    catalog: &[CatalogItem],
    history: &[Event],
    context: RankContext,
    in_process: &[Sent],
) -> Result<String> {
    let keys = PassphraseKeyProvider::for_dir(dir, passphrase, PASSPHRASE_ITERATIONS)?;
    let config =
        HearthConfig { trusted_model_keys, ..HearthConfig::new(dir.to_str().context("store path is not UTF-8")?) };
    let h = Hearth::open(config, Arc::new(keys)).with_context(|| format!("opening {}", dir.display()))?;
    let result = describe(&h, dir, catalog, history, context, in_process);
    h.close()?;
    result
}

fn describe(
    h: &Hearth,
    dir: &Path,
    catalog: &[CatalogItem],
    history: &[Event],
    context: RankContext,
    in_process: &[Sent],
) -> Result<String> {
    let titles: HashMap<&str, &str> = catalog.iter().map(|c| (c.id.as_str(), c.title.as_str())).collect();
    let mut text = String::new();
    writeln!(text, "One person's device ({})", dir.display())?;

    // The home row, as the app would ask for it.
    let options = RankOptions {
        limit: 10,
        diversity: Diversity::Mmr { lambda: 0.7 },
        exploration_share: 0.2,
        seed: Some(7),
        ..RankOptions::new(context.clone())
    };
    let row = h.rank_catalog(options)?;
    let ranker = match &row.ranker {
        Ranker::Model { version, digest } => {
            format!("model v{version} ({}), personalized", &digest[..digest.len().min(12)])
        }
        Ranker::Fallback { why } => format!("the non-personalized fallback ({why:?})"),
    };
    let locale = context.locale.as_deref().unwrap_or("no locale");
    writeln!(
        text,
        "  home row          {:?} at {:02}:00, {locale}; ranked by {ranker}",
        context.device, context.local_hour
    )?;
    let watched: BTreeSet<&str> = history.iter().map(|e| e.item_id.as_str()).collect();
    let width = row.items.iter().map(|i| titles.get(i.item_id.as_str()).map_or(0, |t| t.chars().count())).max();
    let width = width.unwrap_or(0).min(40);
    for (n, item) in row.items.iter().enumerate() {
        let title = titles.get(item.item_id.as_str()).copied().unwrap_or(item.item_id.as_str());
        let title: String = title.chars().take(40).collect();
        let explored = if item.explored { "  [explored]" } else { "" };
        writeln!(text, "    {:>2}. {title:<width$}  {}{explored}", n + 1, item.reason_text)?;
    }

    // What the store holds, and in what form.
    let mut files = Vec::new();
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let content = std::fs::read(entry.path())?;
            files.push(format!("{} {}", entry.file_name().to_string_lossy(), human_bytes(content.len() as u64)));
            bytes.push(content);
        }
    }
    files.sort();
    let profile = h.profile()?;
    writeln!(
        text,
        "  on the device     {} events, {} items in the profile, {} catalog items, all sealed (AES-256-GCM, padded): {}",
        h.event_count()?,
        profile.items_seen,
        h.catalog_size()?,
        files.join(", ")
    )?;
    // Looked at as someone holding the files but not the key would.
    let secrets: BTreeSet<&str> =
        watched.iter().flat_map(|id| [*id, titles.get(id).copied().unwrap_or("")]).filter(|s| s.len() >= 6).collect();
    let found = secrets.iter().filter(|s| bytes.iter().any(|b| contains(b, s.as_bytes()))).count();
    writeln!(
        text,
        "  read as bytes     {found} of the {} item ids and titles this person watched appear in those files",
        secrets.len()
    )?;

    // What left the device.
    let ledger = h.privacy_ledger()?;
    if !ledger.entries.is_empty() {
        for e in &ledger.entries {
            writeln!(
                text,
                "  sent (ledger)     round {}: {}, update norm {:.4} of C = {} (before clipping {:.4}), noise z = {}, epsilon so far {:.2}",
                e.round.map_or("?".into(), |r| r.to_string()),
                human_bytes(e.bytes_sent),
                e.norm_after_clip,
                e.clip_norm,
                e.norm_before_clip,
                e.noise_multiplier,
                e.epsilon_total
            )?;
        }
        writeln!(text, "  privacy budget    epsilon {:.2} spent at delta {:e}", ledger.epsilon_spent, ledger.delta)?;
    } else if !in_process.is_empty() {
        let runs: BTreeSet<usize> = in_process.iter().map(|s| s.run).collect();
        for run in runs {
            let sent: Vec<&Sent> = in_process.iter().filter(|s| s.run == run).collect();
            let last = sent.last().expect("a run with rounds");
            let norms: Vec<String> = sent.iter().map(|s| format!("{:.3}", s.norm)).collect();
            writeln!(
                text,
                "  sent (in process) run {}: {} of its rounds, each an update of {} float32 ({}) clipped to C = {}; norms {}; epsilon {}",
                run + 1,
                sent.len(),
                last.values,
                human_bytes(last.values as u64 * 4),
                last.clip_norm,
                norms.join(" "),
                last.epsilon.map_or("unbounded (no noise)".into(), |e| format!("{e:.2} after round {}", last.round))
            )?;
            let clipped = sent.iter().filter(|s| s.norm_before_clip > s.clip_norm).count();
            if clipped > 0 {
                writeln!(text, "                    {clipped} of them clipped")?;
            }
        }
    } else {
        writeln!(text, "  sent              nothing: no federated round ran (--rounds, --flower)")?;
    }
    Ok(text)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
