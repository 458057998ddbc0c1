//! `hearth simulate`: a fleet of devices, each with its own encrypted store,
//! on a synthetic audience or on MovieLens-100K (one device per user); each
//! device's held-out item ranked by the built-in model and by popularity;
//! then, with `--rounds`, federated averaging run in-process (see
//! `fedavg.rs`), with a row per round and optionally a PNG chart and a JSON
//! record of every number.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hearth_core::federated::accountant::{DistributedGaussian, RdpAccountant};
use hearth_core::testing::RoundSettings;
use hearth_core::{
    CatalogItem, Event, EventKind, Hearth, HearthConfig, ModelPackage, PASSPHRASE_ITERATIONS, PassphraseKeyProvider,
    RankContext, RecordOutcome,
};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::adaptive_clip::AdaptiveClip;
use crate::chart::{Chart, Series};
use crate::evaluate;
use crate::experiment_sim;
use crate::fedavg::{self, Coordinator, NoiseMode, Sampling, ServerOptimizer};
use crate::gate_sim;
use crate::human_bytes;
use crate::movielens::MovieLens;
use crate::person;
use crate::population::{Population, PopulationSpec};

/// Where the devices' histories come from.
pub enum Source {
    Synthetic {
        spec: PopulationSpec,
        devices: usize,
    },
    /// An ml-100k directory; the first `devices` users (all when `None`).
    MovieLens {
        dir: PathBuf,
        devices: Option<usize>,
    },
}

/// A simulated fleet (`--population N --cohort K`): the rounds train on the
/// real devices as drawn, but the central noise on the mean is z C / K and
/// the accountant's sampling rate K / N, so a run estimates what a fleet
/// of N devices with cohorts of K would get (McMahan et al., ICLR 2018).
/// The assumption: the mean of the real devices' updates stands for the
/// mean of K devices' (their signal is alike; only the noise shrinks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetScale {
    pub population: u64,
    pub cohort: u64,
    /// `--paired-noise`: the noise made from a stream of normal deviates
    /// seeded by `--seed` alone, the same in either noise mode
    /// (`Coordinator::set_paired_noise`).
    pub paired_noise: bool,
}

/// `--adaptive-clip` and its options: the count's noise is the expected
/// cohort / 20 when not given (the paper's choice).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveTerms {
    pub quantile: f64,
    pub learning_rate: f64,
    pub count_noise: Option<f64>,
}

/// What `--rounds` and its options ask for.
#[derive(Debug, Clone)]
pub struct Federated {
    pub rounds: u32,
    pub clip: f64,
    /// One run of `rounds` rounds per noise multiplier, each from the
    /// built-in model, over the same devices and the same samples.
    pub noise_multipliers: Vec<f64>,
    /// Where the noise is added.
    pub noise_mode: NoiseMode,
    pub sampling: Sampling,
    pub learning_rate: Option<f64>,
    pub local_epochs: u32,
    pub negatives: Option<usize>,
    pub server: ServerOptimizer,
    /// The server learning rate falls linearly from the optimizer's to this
    /// over each run's rounds (constant when `None`).
    pub server_lr_final: Option<f64>,
    /// `--dense-weight`: the devices' weight on the dense part of their
    /// update before clipping, divided out by the coordinator.
    pub dense_weight: Option<f64>,
    /// A model package to start from instead of the built-in model (its
    /// weights, re-signed by the coordinator and installed on every device
    /// before anything is ranked).
    pub initial_model: Option<PathBuf>,
    /// Quality is measured every this many rounds (and after the last).
    pub eval_every: u32,
    /// Delta of the epsilon column; 1 / N^1.1 when absent.
    pub delta: Option<f64>,
    pub chart: Option<PathBuf>,
    /// Horizontal lines on the chart: (label, NDCG@10).
    pub references: Vec<(String, f64)>,
    pub json: Option<PathBuf>,
    pub threads: usize,
    /// Run the rounds against a real SuperLink instead of in process.
    pub flower: Option<FlowerLink>,
    /// Fleet-scale simulation: noise and accounting for a fleet of this
    /// size and cohort, trained on the real devices.
    pub fleet: Option<FleetScale>,
    /// Adaptive clipping, when asked for.
    pub adaptive: Option<AdaptiveTerms>,
    /// The release gate after each run, its sums noised at this z.
    pub gate_noise: Option<f64>,
}

/// A Flower SuperLink the devices take part through (`--flower`).
#[derive(Debug, Clone)]
pub struct FlowerLink {
    /// Its Fleet API, http://HOST:PORT.
    pub url: String,
    /// The coordinator's model-signing keys the devices trust.
    pub trust_keys: Vec<String>,
    pub wait_seconds: u32,
}

/// A device's recorded history and its held-out item (with the context of
/// the request that ranks it), by device number.
type HistoryOf = Box<dyn Fn(usize) -> (Vec<Event>, Option<(String, RankContext)>) + Sync>;

/// Per device: its open store, the held-out item and its context, and what
/// it recorded.
struct Device {
    hearth: Arc<Hearth>,
    /// The coordinator's version of the model it has installed (0: built-in).
    installed: std::sync::atomic::AtomicU64,
    held_out: Option<(String, RankContext)>,
    history: Vec<Event>,
}

#[derive(Default)]
struct Tally {
    events: u64,
    by_kind: [u64; 8],
    bytes: u64,
    per_device: Vec<u64>,
    /// NDCG@10 and HR@10 sums of the held-out items: model, then popularity.
    model: (f64, f64),
    popularity: (f64, f64),
    ranked: usize,
    /// Per device that ranked, its experiment reports, one per seed.
    experiment_reports: Vec<Vec<hearth_core::ExperimentReport>>,
}

/// Splits a history into what is recorded and the item held out: the item
/// most recently engaged with for the first time (played, completed or
/// liked); all of its events are held out.
fn hold_out(history: &[Event]) -> (Vec<Event>, Option<(String, RankContext)>) {
    let engaged = |e: &Event| matches!(e.kind, EventKind::Play | EventKind::Complete | EventKind::Like);
    let mut first_engaged: HashMap<&str, usize> = HashMap::new();
    for (i, e) in history.iter().enumerate() {
        if engaged(e) {
            first_engaged.entry(e.item_id.as_str()).or_insert(i);
        }
    }
    let Some((&item, &at)) = first_engaged.iter().max_by_key(|(id, i)| (**i, *id)) else {
        return (history.to_vec(), None);
    };
    let ctx = &history[at].context;
    let context = RankContext { device: ctx.device, local_hour: ctx.local_hour, locale: ctx.locale.clone() };
    let item = item.to_string();
    (history.iter().filter(|e| e.item_id != item).cloned().collect(), Some((item, context)))
}

/// The held-out item as the engagement that came next: a play a minute
/// after the newest recorded event, in the context it was ranked in.
fn next_engagement(history: &[Event], item: &str, context: &RankContext) -> Event {
    let last = history.iter().map(|e| e.timestamp_ms).max().unwrap_or(0);
    Event {
        item_id: item.to_string(),
        kind: EventKind::Play,
        timestamp_ms: last + 60_000,
        position_ms: None,
        duration_ms: None,
        context: hearth_core::EventContext {
            device: context.device,
            local_hour: context.local_hour,
            locale: context.locale.clone(),
        },
    }
}

/// One round's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoundRow {
    round: u32,
    participants: usize,
    mean_norm_before_clip: f64,
    /// Share of updates whose norm was above C.
    clipped_share: f64,
    /// The round's clip norm C (adaptive clipping moves it).
    #[serde(default)]
    clip_norm: f64,
    noise_std: f64,
    ndcg_at_10: Option<f64>,
    hit_rate_at_10: Option<f64>,
    /// `None` when unbounded (no noise).
    epsilon: Option<f64>,
    seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run {
    noise_multiplier: f64,
    rounds: Vec<RoundRow>,
    /// Added to the run's chart label (set when records are merged).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    note: String,
    /// The release gate's evaluation of the run's final model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gate: Option<gate_sim::GateRecord>,
}

/// Every number of a `simulate --rounds` invocation (`--json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    source: String,
    devices: usize,
    ranked: usize,
    seed: u64,
    clip_norm: f64,
    sampling: String,
    sampling_rate: f64,
    /// "central", or "distributed (bits B, honest fraction H)".
    #[serde(default = "central")]
    noise_mode: String,
    learning_rate: Option<f64>,
    local_epochs: u32,
    negatives_per_positive: Option<usize>,
    server_optimizer: String,
    #[serde(default)]
    server_lr_final: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dense_weight: Option<f64>,
    /// A simulated fleet's size N and cohort K (`--population`,
    /// `--cohort`): the noise is z C / K and `sampling_rate` K / N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    population: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cohort: Option<u64>,
    /// `--paired-noise`: the noise drawn from the seed's own stream of
    /// normal deviates, to pair a central run with a distributed one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    paired_noise: bool,
    delta: f64,
    initial: (f64, f64),
    popularity: (f64, f64),
    references: Vec<(String, f64)>,
    runs: Vec<Run>,
}

fn central() -> String {
    "central".into()
}

/// Mixed into `--seed` for the paired noise's stream, so it is not the
/// stream of anything else the seed draws.
const PAIRED_NOISE_STREAM: u64 = 0x7061_6972_6564;

/// The sampling rate the accountant is given: K / N for a simulated fleet,
/// else the draw's.
fn fleet_rate(fed: &Federated, devices: usize) -> f64 {
    fed.fleet.map_or(fed.sampling.rate(devices), |f| f.cohort as f64 / f.population as f64)
}

pub fn simulate(
    source: Source,
    data: Option<PathBuf>,
    seed: u64,
    passphrase: &str,
    fed: Option<Federated>,
    experiment: Option<experiment_sim::Settings>,
) -> Result<()> {
    let started = Instant::now();
    let temp = match &data {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let root = match (&data, &temp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => bail!("no directory for the stores"),
    };
    std::fs::create_dir_all(root.join("devices"))?;

    // Each device's recorded history and held-out item, made on demand.
    let (catalog, label, devices, history_of): (Vec<CatalogItem>, String, usize, HistoryOf) = match source {
        Source::Synthetic { spec, devices } => {
            let pop = Population::generate(spec, seed);
            let catalog = pop.catalog.clone();
            let f = move |n: usize| hold_out(&pop.history(&pop.user(n, seed), seed));
            (catalog, format!("synthetic (seed {seed})"), devices, Box::new(f))
        }
        Source::MovieLens { dir, devices } => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
            let ml = MovieLens::load(&dir, now)?;
            let n = devices.unwrap_or(ml.users.len()).min(ml.users.len());
            let label = format!("MovieLens-100K ({} users, {} ratings, {})", ml.users.len(), ml.ratings, dir.display());
            let catalog = ml.catalog.clone();
            let users = ml.users;
            let f = move |n: usize| {
                let u = &users[n];
                (u.events.clone(), Some((u.held_out.clone(), u.context.clone())))
            };
            (catalog, label, n, Box::new(f))
        }
    };
    if devices == 0 {
        bail!("--devices must be at least 1");
    }
    let catalog_json = serde_json::to_string_pretty(&serde_json::json!({ "items": catalog }))?;
    std::fs::write(root.join("catalog.json"), catalog_json)?;

    let threads = fed.as_ref().map_or(2, |f| f.threads).max(1);
    let bar = ProgressBar::new(devices as u64);
    bar.set_style(ProgressStyle::with_template("{spinner} recording devices {bar:30} {pos}/{len} {elapsed_precise}")?);
    let next = AtomicUsize::new(0);
    let tally = Mutex::new(Tally { per_device: vec![0; devices], ..Default::default() });
    let flower = fed.as_ref().and_then(|f| f.flower.clone());
    let mut coordinator = match &fed {
        Some(f) if f.rounds > 0 && f.flower.is_none() => {
            let z = f.noise_multipliers.first().copied().unwrap_or(0.0);
            let mut c = match &f.initial_model {
                Some(dir) => Coordinator::from_package(fedavg::read_package(dir)?, f.clip, z, f.server, seed)?,
                None => Coordinator::new(f.clip, z, f.server, seed)?,
            };
            c.set_noise_mode(f.noise_mode)?;
            c.set_threads(f.threads);
            c.set_noise_cohort(f.fleet.map(|f| f.cohort));
            c.set_dense_weight(f.dense_weight)?;
            c.set_paired_noise(f.fleet.filter(|f| f.paired_noise).map(|_| seed ^ PAIRED_NOISE_STREAM));
            if let Some(a) = f.adaptive {
                // The expected cohort: the simulated one, or the draw's.
                let cohort = f.fleet.map_or(f.sampling.rate(devices) * devices as f64, |s| s.cohort as f64);
                let noise = a.count_noise.unwrap_or(cohort / 20.0);
                c.set_adaptive_clip(Some(AdaptiveClip::new(f.clip, a.quantile, a.learning_rate, noise)?))?;
            }
            Some(c)
        }
        _ => None,
    };
    let mut trusted: Vec<String> = coordinator.iter().map(|c| c.public_key()).collect();
    trusted.extend(flower.iter().flat_map(|f| f.trust_keys.clone()));
    // Every device installs the starting model, as it would download it.
    let start = match (&mut coordinator, fed.as_ref().and_then(|f| f.initial_model.as_ref())) {
        (Some(c), Some(_)) => Some((c.start()?, c.version)),
        _ => None,
    };
    let kept: Mutex<Vec<Option<Device>>> = Mutex::new((0..devices).map(|_| None).collect());
    let workers = threads.min(devices);
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= devices {
                            return Ok(());
                        }
                        let dir = root.join("devices").join(n.to_string());
                        let (history, held_out) = history_of(n);
                        let keys = PassphraseKeyProvider::for_dir(&dir, passphrase, PASSPHRASE_ITERATIONS)?;
                        let mut config = HearthConfig {
                            trusted_model_keys: trusted.clone(),
                            ..HearthConfig::new(dir.to_str().context("store path is not UTF-8")?)
                        };
                        if let Some(f) = &flower {
                            // A simulation takes part in every round it is
                            // offered: no budget, no minimum history or period.
                            config.federated_epsilon_budget = f64::INFINITY;
                            config.federated_min_new_examples = 0;
                            config.federated_min_interval_hours = 0;
                            config.federated_round_wait_seconds = f.wait_seconds.clamp(1, 3600);
                        }
                        let h = Hearth::open(config, Arc::new(keys))?;
                        h.upsert_catalog(catalog.clone())?;
                        let outcome = h.record_batch(history.clone())?;
                        if outcome != (RecordOutcome::Stored { count: history.len() as u32 }) {
                            bail!("device {n}: unexpected outcome {outcome:?}");
                        }
                        if let Some((package, _)) = &start {
                            h.install_model(package.clone()).with_context(|| format!("device {n}: installing"))?;
                        }
                        let mut ranked = None;
                        if let Some((item, context)) = held_out.clone() {
                            let by_model =
                                evaluate::held_out_position(&h, &catalog, &history, &item, context.clone())?.0;
                            h.set_personalization(false)?;
                            let by_popularity = evaluate::held_out_position(&h, &catalog, &history, &item, context)?.0;
                            h.set_personalization(true)?;
                            ranked = Some((evaluate::gains(by_model), evaluate::gains(by_popularity)));
                        }
                        let reports = match (experiment, &held_out) {
                            (Some(x), Some((item, context))) => Some(
                                experiment_sim::device_reports(&h, &catalog, &history, item, context, x.seeds)
                                    .with_context(|| format!("device {n}: experiment"))?,
                            ),
                            _ => None,
                        };
                        let bytes: u64 =
                            std::fs::read_dir(&dir)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
                        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                        t.events += history.len() as u64;
                        for e in &history {
                            if let Some(k) = EventKind::ALL.iter().position(|k| *k == e.kind) {
                                t.by_kind[k] += 1;
                            }
                        }
                        t.bytes += bytes;
                        t.per_device[n] = history.len() as u64;
                        if let Some((m, p)) = ranked {
                            t.model = (t.model.0 + m.0, t.model.1 + m.1);
                            t.popularity = (t.popularity.0 + p.0, t.popularity.1 + p.1);
                            t.ranked += 1;
                        }
                        t.experiment_reports.extend(reports);
                        drop(t);
                        if coordinator.is_some() || flower.is_some() {
                            h.set_federated_opt_in(true)?;
                            kept.lock().unwrap_or_else(|p| p.into_inner())[n] = Some(Device {
                                hearth: h,
                                installed: start.as_ref().map_or(0, |(_, v)| *v).into(),
                                held_out,
                                history,
                            });
                        } else {
                            h.close()?;
                        }
                        bar.inc(1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a device worker panicked"))??;
        }
        Ok(())
    })?;
    bar.finish_and_clear();

    let t = tally.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut per = t.per_device.clone();
    per.sort_unstable();
    println!("Hearth simulation: {label}");
    println!("  devices           {devices}");
    println!("  catalog           {} items -> {}", catalog.len(), root.join("catalog.json").display());
    println!(
        "  events recorded   {} (per device: median {}, min {}, max {})",
        t.events,
        per[per.len() / 2],
        per[0],
        per[per.len() - 1]
    );
    let kinds: Vec<String> =
        EventKind::ALL.iter().zip(t.by_kind).map(|(k, n)| format!("{}={n}", format!("{k:?}").to_lowercase())).collect();
    println!("  by kind           {}", kinds.join(" "));
    println!(
        "  encrypted stores  {} under {} ({:.1} KiB per device)",
        human_bytes(t.bytes),
        root.join("devices").display(),
        t.bytes as f64 / 1024.0 / devices as f64
    );
    let r = t.ranked.max(1) as f64;
    let initial = (t.model.0 / r, t.model.1 / r);
    let popularity = (t.popularity.0 / r, t.popularity.1 / r);
    if t.ranked > 0 {
        println!(
            "  ranking           each device's held-out item, ranked among all items it has no event for ({} devices)",
            t.ranked
        );
        println!("                    NDCG@10  HR@10");
        let which = if start.is_some() { "model (initial)" } else { "model (built-in)" };
        println!("    {which:<16} {:7.4}  {:5.3}", initial.0, initial.1);
        println!("    popularity       {:7.4}  {:5.3}", popularity.0, popularity.1);
    }
    if let Some(x) = experiment
        && !t.experiment_reports.is_empty()
    {
        let delta = fed.as_ref().and_then(|f| f.delta).unwrap_or(1.0 / (devices as f64).powf(1.1));
        experiment_sim::print(&experiment_sim::summarize(&t.experiment_reports, x, delta, seed)?);
    }
    println!("  recorded in       {:.1} s", started.elapsed().as_secs_f64());
    // The person whose device ends the output: device 0.
    let (person_history, person_held_out) = history_of(0);
    let person_context = person_held_out.map(|(_, c)| c).unwrap_or(RankContext {
        device: hearth_core::DeviceClass::Tv,
        local_hour: 21,
        locale: Some("en-GB".into()),
    });
    let show_person = |sent: &[person::Sent]| -> Result<()> {
        let text = person::report(
            &root.join("devices").join("0"),
            passphrase,
            trusted.clone(),
            &catalog,
            &person_history,
            person_context.clone(),
            sent,
        )?;
        println!();
        print!("{text}");
        Ok(())
    };
    if let (Some(link), Some(fed)) = (&flower, &fed) {
        let devices: Vec<Device> = kept.into_inner().unwrap_or_else(|p| p.into_inner()).into_iter().flatten().collect();
        let result = run_flower(&devices, &catalog, link, fed.rounds, initial, fed.threads);
        for d in &devices {
            d.hearth.close()?;
        }
        result?;
        println!("  took              {:.1} s", started.elapsed().as_secs_f64());
        show_person(&[])?;
        return Ok(());
    }
    let mut sent = Vec::new();
    if let (Some(mut coordinator), Some(fed)) = (coordinator, fed) {
        let devices: Vec<Device> = kept.into_inner().unwrap_or_else(|p| p.into_inner()).into_iter().flatten().collect();
        let mut record = Record {
            source: label,
            devices: devices.len(),
            ranked: t.ranked,
            seed,
            clip_norm: fed.clip,
            sampling: format!("{:?}", fed.sampling),
            sampling_rate: fleet_rate(&fed, devices.len()),
            noise_mode: match fed.noise_mode {
                NoiseMode::Central => central(),
                NoiseMode::Distributed { bits, honest_fraction, sampling_rate } => format!(
                    "distributed (bits {bits}, honest fraction {honest_fraction:.4}, device sampling rate {sampling_rate})"
                ),
            },
            learning_rate: fed.learning_rate,
            local_epochs: fed.local_epochs,
            negatives_per_positive: fed.negatives,
            server_optimizer: format!("{:?}", fed.server),
            server_lr_final: fed.server_lr_final,
            dense_weight: fed.dense_weight,
            population: fed.fleet.map(|f| f.population),
            cohort: fed.fleet.map(|f| f.cohort),
            paired_noise: fed.fleet.is_some_and(|f| f.paired_noise),
            delta: fed
                .delta
                .unwrap_or(1.0 / (fed.fleet.map_or(devices.len() as u64, |f| f.population) as f64).powf(1.1)),
            initial,
            popularity,
            references: fed.references.clone(),
            runs: Vec::new(),
        };
        let published = start.as_ref().map_or_else(ModelPackage::builtin, |(p, _)| p.clone());
        let result = run_all(&mut coordinator, &devices, &catalog, &fed, seed, &mut record, &mut sent, &published);
        for d in &devices {
            d.hearth.close()?;
        }
        result?;
    }
    println!("  took              {:.1} s", started.elapsed().as_secs_f64());
    show_person(&sent)?;
    if temp.is_some() {
        println!("  (temporary directory, removed; pass --data DIR to keep the stores)");
    }
    Ok(())
}

/// Mean NDCG@10 and HR@10 of the held-out items, ranked by each device's
/// active model, on `threads` threads.
fn quality(devices: &[Device], catalog: &[CatalogItem], threads: usize) -> Result<(f64, f64)> {
    let next = AtomicUsize::new(0);
    let sums = Mutex::new((0.0, 0.0, 0usize));
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(d) = devices.get(i) else { return Ok(()) };
                        if let Some((item, context)) = &d.held_out {
                            let (p, _) =
                                evaluate::held_out_position(&d.hearth, catalog, &d.history, item, context.clone())?;
                            let g = evaluate::gains(p);
                            let mut s = sums.lock().unwrap_or_else(|p| p.into_inner());
                            *s = (s.0 + g.0, s.1 + g.1, s.2 + 1);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("an evaluation worker panicked"))??;
        }
        Ok(())
    })?;
    let (ndcg, hr, n) = sums.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok((ndcg / n.max(1) as f64, hr / n.max(1) as f64))
}

/// Installs `package` on the devices `which` (indices into `devices`) whose
/// model is older, on `threads` threads. A device fetches the global model
/// when it takes part in a round or when it ranks (here: is measured).
fn install_on(
    devices: &[Device],
    which: &[usize],
    package: &hearth_core::ModelPackage,
    version: u64,
    threads: usize,
) -> Result<()> {
    let which: Vec<usize> =
        which.iter().copied().filter(|&i| devices[i].installed.load(Ordering::Relaxed) < version).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = which.get(k) else { return Ok(()) };
                        let d = &devices[i];
                        d.hearth.install_model(package.clone()).with_context(|| format!("device {i}: installing"))?;
                        d.installed.store(version, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("an install worker panicked"))??;
        }
        Ok(())
    })
}

/// `rounds` rounds against a real SuperLink: every device calls
/// `participate` once per round, on a thread of its own (they wait on the
/// network most of the time); then a row per round from the devices'
/// privacy ledgers and the quality of the global model they installed.
fn run_flower(
    devices: &[Device],
    catalog: &[CatalogItem],
    link: &FlowerLink,
    rounds: u32,
    initial: (f64, f64),
    threads: usize,
) -> Result<()> {
    use hearth_core::federated::{ClientOptions, HttpTransport};
    use hearth_core::{DeviceConditions, LedgerEntry, ParticipationOutcome};
    println!("  federated rounds  {rounds} against the SuperLink at {} ({} devices)", link.url, devices.len());
    let ready = DeviceConditions { charging: true, unmetered_network: true, idle: true };
    let ledgers: Vec<Result<Vec<LedgerEntry>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(n, d)| {
                scope.spawn(move || -> Result<Vec<LedgerEntry>> {
                    let mut entries = Vec::new();
                    for round in 1..=rounds {
                        let options =
                            ClientOptions { poll_interval: Duration::from_millis(200), ..ClientOptions::default() };
                        match d.hearth.participate_using(HttpTransport::new(&link.url), ready, options)? {
                            ParticipationOutcome::Contributed { entry } => entries.push(entry),
                            other => bail!("device {n}, round {round}: {other:?}"),
                        }
                    }
                    Ok(entries)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a device panicked")))).collect()
    });
    let ledgers: Vec<Vec<LedgerEntry>> = ledgers.into_iter().collect::<Result<_>>()?;
    println!("    round  participants  mean norm (before clip)  epsilon (max)");
    let mut round_ids: Vec<Option<u64>> = ledgers.iter().flatten().map(|e| e.round).collect();
    round_ids.sort_unstable();
    round_ids.dedup();
    for r in round_ids {
        let entries: Vec<&LedgerEntry> = ledgers.iter().flatten().filter(|e| e.round == r).collect();
        let norm = entries.iter().map(|e| e.norm_before_clip).sum::<f64>() / entries.len() as f64;
        let eps = entries.iter().map(|e| e.epsilon_total).fold(0.0, f64::max);
        let round = r.map_or("-".to_string(), |r| r.to_string());
        println!(
            "    {round:>5}  {:>12}  {norm:>23.4}  {}",
            entries.len(),
            fmt_epsilon(eps.is_finite().then_some(eps))
        );
    }
    let (ndcg, hr) = quality(devices, catalog, threads)?;
    println!(
        "    the last round's global model, as the devices installed it: NDCG@10 {ndcg:.4}, HR@10 {hr:.3} (initial {:.4}, {:.3})",
        initial.0, initial.1
    );
    Ok(())
}

fn fmt_epsilon(e: Option<f64>) -> String {
    match e {
        Some(e) if e >= 1e4 => format!("{e:.3e}"),
        Some(e) => format!("{e:.2}"),
        None => "inf".into(),
    }
}

/// Epsilon in a chart legend: three significant figures at most, so that
/// the legend fits beside the plot.
fn legend_epsilon(e: Option<f64>) -> String {
    match e {
        Some(e) if e >= 1e3 => format!("{e:.1e}"),
        Some(e) if e >= 100.0 => format!("{e:.0}"),
        Some(e) => format!("{e:.2}"),
        None => "inf".into(),
    }
}

/// One run of `fed.rounds` rounds per noise multiplier.
fn run_all(
    coordinator: &mut Coordinator,
    devices: &[Device],
    catalog: &[CatalogItem],
    fed: &Federated,
    seed: u64,
    record: &mut Record,
    person: &mut Vec<person::Sent>,
    published: &ModelPackage,
) -> Result<()> {
    let q = fleet_rate(fed, devices.len());
    let mut sampling = match fed.sampling {
        Sampling::Poisson(q) if q >= 1.0 => "every device".to_string(),
        Sampling::Poisson(q) => format!("Poisson sampling q = {q}"),
        Sampling::Fixed(k) => format!("{k} devices drawn per round (q = {q:.4} for the accountant)"),
    };
    if let Some(f) = fed.fleet {
        sampling = match fed.noise_mode {
            NoiseMode::Central => format!(
                "{sampling}, standing for a fleet of {} with cohorts of {} (noise z*C/{}, q = {q:.3e} for the accountant)",
                f.population, f.cohort, f.cohort
            ),
            NoiseMode::Distributed { sampling_rate, .. } => {
                let setup = crate::fedavg::fleet_setup_cohort(f.cohort, sampling_rate);
                format!(
                    "{sampling}, standing for a fleet of {} with rounds of {setup} devices whose coins keep about {} \
                     (the real devices' mean for theirs, the {setup} devices' noise shares summed)",
                    f.population, f.cohort,
                )
            }
        };
    }
    let lr = fed.learning_rate.map_or("the manifest's".into(), |l| l.to_string());
    let negatives = fed.negatives.map_or("the manifest's".into(), |n| n.to_string());
    let clip = match fed.adaptive {
        Some(a) => {
            format!("C from {} following the {} quantile of the norms (step {})", fed.clip, a.quantile, a.learning_rate)
        }
        None => format!("C = {}", fed.clip),
    };
    println!(
        "  federated rounds  in-process, {clip}, {sampling}, {} local epoch(s), learning rate {lr}, {negatives} negatives per positive, server {:?}{}",
        fed.local_epochs,
        fed.server,
        fed.server_lr_final.map_or(String::new(), |l| format!(", its learning rate falling linearly to {l}"))
    );
    match fed.noise_mode {
        NoiseMode::Central => println!(
            "                    epsilon at delta = {:.3e} (RDP accountant, Poisson-subsampled Gaussian)",
            record.delta
        ),
        NoiseMode::Distributed { bits, honest_fraction, sampling_rate } => println!(
            "                    noise added by the devices: each quantizes to integers modulo 2^{bits} and adds a discrete \
             Gaussian share so that {honest_fraction:.4} of the cohort carries z*C; epsilon at delta = {:.3e} \
             (distributed discrete Gaussian, {})",
            record.delta,
            if sampling_rate < 1.0 {
                format!("each device's own coin keeping its update with probability {sampling_rate}")
            } else {
                "no sampling amplification".to_string()
            }
        ),
    }
    let everyone: Vec<usize> = (0..devices.len()).collect();
    let mut latest: Option<hearth_core::ModelPackage> = None;
    for (run, &z) in fed.noise_multipliers.iter().enumerate() {
        if run > 0 {
            // Back to the built-in weights, as a newer version the devices accept.
            latest = Some(coordinator.restart(z)?);
        }
        let noise = if z > 0.0 { format!("noise multiplier z = {z}") } else { "no noise".into() };
        println!("  run {}: {noise}", run + 1);
        println!("    round  participants  mean norm (before clip)  NDCG@10  HR@10  epsilon  seconds");
        println!(
            "    {:>5}  {:>12}  {:>23}  {:7.4}  {:5.3}  {:>7}  {:>7}",
            0, "-", "-", record.initial.0, record.initial.1, "-", "-"
        );
        std::io::stdout().flush()?;
        record.runs.push(Run { noise_multiplier: z, rounds: Vec::new(), note: String::new(), gate: None });
        let mut accountant = RdpAccountant::new();
        // The same samples for every noise multiplier: runs differ by noise only.
        let mut sampler = StdRng::seed_from_u64(seed ^ 0x5a4d_706c_6500);
        for round in 1..=fed.rounds {
            let t0 = Instant::now();
            if let Some(last) = fed.server_lr_final {
                let first = fed.server.lr();
                let at = if fed.rounds > 1 { (round - 1) as f64 / (fed.rounds - 1) as f64 } else { 0.0 };
                coordinator.set_server_lr(first + at * (last - first))?;
            }
            let cohort = fed.sampling.draw(devices.len(), &mut sampler);
            // The devices' own coins, in distributed mode with a sampling
            // rate: only those kept install the model and train here (a
            // real device does both either way and sends its noise share
            // over zeros when left out).
            let (drawn, left_out) = coordinator.flip_coins(&cohort);
            if let Some(package) = &latest {
                install_on(devices, &drawn, package, coordinator.version, fed.threads)?;
            }
            // The round's clip norm (adaptive clipping moves it).
            let clip = coordinator.clip();
            let next = AtomicUsize::new(0);
            let updates = Mutex::new(Vec::new());
            std::thread::scope(|scope| -> Result<()> {
                let workers: Vec<_> = (0..fed.threads)
                    .map(|_| {
                        scope.spawn(|| -> Result<()> {
                            loop {
                                let k = next.fetch_add(1, Ordering::Relaxed);
                                let Some(&i) = drawn.get(k) else { return Ok(()) };
                                let settings = RoundSettings {
                                    clip_norm: clip,
                                    epochs: fed.local_epochs,
                                    learning_rate: fed.learning_rate,
                                    negatives_per_positive: fed.negatives,
                                    max_examples: None,
                                    dense_weight: fed.dense_weight,
                                    seed: seed ^ ((round as u64) << 32) ^ ((run as u64) << 48) ^ i as u64,
                                };
                                if let Some(u) = fedavg::local_round(&devices[i].hearth, &settings)? {
                                    updates.lock().unwrap_or_else(|p| p.into_inner()).push((i, u));
                                }
                            }
                        })
                    })
                    .collect();
                for w in workers {
                    w.join().map_err(|_| anyhow::anyhow!("a device worker panicked"))??;
                }
                Ok(())
            })?;
            let mut updates = updates.into_inner().unwrap_or_else(|p| p.into_inner());
            // The sum is taken in device order: the same run gives the same weights.
            updates.sort_by_key(|(i, _)| *i);
            let n = updates.len();
            let norms: Vec<f64> = updates.iter().map(|(_, u)| u.norm_before_clip).collect();
            let mean_norm = norms.iter().sum::<f64>() / n.max(1) as f64;
            let clipped = norms.iter().filter(|&&norm| norm > clip).count() as f64 / n.max(1) as f64;
            // What device 0 sent, for the person's view.
            let sent = updates.iter().find(|(i, _)| *i == 0).map(|(_, u)| {
                let norm = u.delta.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
                (u.delta.len(), u.norm_before_clip, norm)
            });
            let mut noise_std = 0.0;
            let mut distributed = None;
            if n + left_out > 0 {
                let deltas: Vec<Vec<f32>> = updates.into_iter().map(|(_, u)| u.delta).collect();
                let (package, agg) = coordinator.aggregate(&deltas, left_out)?;
                noise_std = agg.noise_std;
                distributed = agg.distributed;
                latest = Some(package);
            }
            // The devices' bits, counted with noise, move the next round's C.
            coordinator.adapt_clip(&norms);
            match (fed.noise_mode, distributed) {
                (NoiseMode::Central, _) => accountant.compose(z, q, 1).context("privacy accounting")?,
                // A distributed round's terms, as the devices account them.
                (NoiseMode::Distributed { .. }, Some(terms)) => {
                    let round = DistributedGaussian::for_cohort(
                        terms.noise.multiplier,
                        terms.noise.honest_fraction,
                        terms.quantization.max_cohort,
                        terms.quantization.clip_norm,
                        terms.quantization.scale,
                        coordinator.weights.len() as u64,
                    )
                    .with_sampling_rate(terms.sampling_rate);
                    accountant.compose_distributed(&round, 1).context("privacy accounting")?;
                }
                // No update this round: nothing of anyone's left the devices.
                (NoiseMode::Distributed { .. }, None) => {}
            }
            let epsilon = accountant.epsilon(record.delta).context("privacy accounting")?;
            let epsilon = epsilon.is_finite().then_some(epsilon);
            if let Some((values, norm_before_clip, norm)) = sent {
                person.push(person::Sent { run, round, values, norm_before_clip, norm, clip_norm: clip, epsilon });
            }
            let measured = round % fed.eval_every.max(1) == 0 || round == fed.rounds;
            if let (true, Some(package)) = (measured, &latest) {
                install_on(devices, &everyone, package, coordinator.version, fed.threads)?;
            }
            let q_now = if measured { Some(quality(devices, catalog, fed.threads)?) } else { None };
            let row = RoundRow {
                round,
                participants: n,
                mean_norm_before_clip: mean_norm,
                clipped_share: clipped,
                clip_norm: clip,
                noise_std,
                ndcg_at_10: q_now.map(|q| q.0),
                hit_rate_at_10: q_now.map(|q| q.1),
                epsilon,
                seconds: t0.elapsed().as_secs_f64(),
            };
            let (ndcg, hr) = match q_now {
                Some((a, b)) => (format!("{a:7.4}"), format!("{b:5.3}")),
                None => (format!("{:>7}", "-"), format!("{:>5}", "-")),
            };
            println!(
                "    {round:>5}  {n:>12}  {mean_norm:>23.4}  {ndcg}  {hr}  {:>7}  {:>7.1}",
                fmt_epsilon(epsilon),
                row.seconds
            );
            std::io::stdout().flush()?;
            if let Some(run) = record.runs.last_mut() {
                run.rounds.push(row);
            }
            if let Some(path) = &fed.json {
                std::fs::write(path, serde_json::to_string_pretty(&record)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        if let (Some(z), Some(candidate)) = (fed.gate_noise, &latest) {
            let evaluators: Vec<gate_sim::Evaluator> = devices
                .iter()
                .filter_map(|d| {
                    let (item, context) = d.held_out.as_ref()?;
                    Some(gate_sim::Evaluator {
                        hearth: &d.hearth,
                        held_out: next_engagement(&d.history, item, context),
                    })
                })
                .collect();
            let gate = gate_sim::gate_round(
                &evaluators,
                candidate,
                published,
                z,
                record.delta,
                seed ^ run as u64,
                fed.threads,
            )?;
            gate_sim::print(&gate);
            if let Some(run) = record.runs.last_mut() {
                run.gate = Some(gate);
            }
            if let Some(path) = &fed.json {
                std::fs::write(path, serde_json::to_string_pretty(&record)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        if let Some(path) = &fed.chart {
            chart(record).write_png(path)?;
        }
    }
    if let Some(path) = &fed.chart {
        println!("  chart             {}", path.display());
    }
    Ok(())
}

/// The chart of several `--json` records of the same fleet (for example a
/// long run without noise and a shorter noise sweep run beside it): their
/// runs in order, the first record's levels, then `references`.
pub fn chart_from_records(paths: &[PathBuf], references: Vec<(String, f64)>, out: &std::path::Path) -> Result<()> {
    let mut merged: Option<Record> = None;
    for path in paths {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut r: Record = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        // Records of several server optimizers are told apart in the legend.
        let name = match &r.server_optimizer {
            o if o.starts_with("Adam") => "FedAdam",
            o if o.starts_with("Momentum") && !o.contains("momentum: 0.0") => "FedAvgM",
            _ => "FedAvg",
        };
        // ... and by their clipping norm (a run without noise may clip far
        // looser than a noise sweep); docs/federated.md gives the rate schedules.
        let note = format!("{name}, C={}", r.clip_norm);
        for run in r.runs.iter_mut().filter(|run| run.note.is_empty()) {
            run.note = note.clone();
        }
        match &mut merged {
            None => merged = Some(r),
            Some(m) => {
                if m.devices != r.devices || m.source != r.source {
                    bail!("{} is a run of another fleet", path.display());
                }
                m.runs.extend(r.runs);
                m.references.extend(r.references);
            }
        }
    }
    let mut record = merged.context("no record to chart")?;
    record.references.extend(references);
    chart(&record).write_png(out)
}

/// NDCG@10 against rounds: a line per run, dashed levels for the built-in
/// model's start, popularity and the references.
fn chart(record: &Record) -> Chart {
    let measured = record.runs.iter().flat_map(|r| &r.rounds).filter(|r| r.ndcg_at_10.is_some());
    let last = measured.map(|r| r.round).max().unwrap_or(1).max(1) as f64;
    let mut series: Vec<Series> = record
        .runs
        .iter()
        .map(|run| {
            let noise = if run.noise_multiplier > 0.0 {
                let eps = run.rounds.last().map_or("-".into(), |r| legend_epsilon(r.epsilon));
                format!("z={} (eps {eps})", run.noise_multiplier)
            } else {
                "no noise".to_string()
            };
            let who = if run.note.is_empty() { "federated" } else { run.note.as_str() };
            let label = format!("{who}, {noise}");
            let mut points = vec![(0.0, record.initial.0)];
            points.extend(run.rounds.iter().filter_map(|r| r.ndcg_at_10.map(|q| (r.round as f64, q))));
            Series { label, points, dashed: false }
        })
        .collect();
    let level = |label: String, v: f64| Series { label, points: vec![(0.0, v), (last, v)], dashed: true };
    for (label, v) in &record.references {
        series.push(level(label.clone(), *v));
    }
    series.push(level("popularity (fallback)".into(), record.popularity.0));
    Chart {
        title: format!("NDCG@10 of held-out items, {} devices", record.devices),
        x_label: "federated round".into(),
        y_label: "NDCG@10".into(),
        series,
    }
}
