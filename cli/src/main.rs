//! `hearth`: run Hearth on a laptop.
//!
//! * `hearth simulate`: a synthetic audience, each device with its own
//!   encrypted store.
//! * `hearth inspect DIR`: what a store holds, in summary.
//! * `hearth export DIR`: everything a store holds, as the export document.
//! * `hearth evaluate`: ranking quality through the on-device path.
//! * `hearth model keygen|sign|pubkey`: keys and signatures for model packages.

mod evaluate;
mod fedavg;
mod model_cmd;
mod population;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hearth_core::{
    Event, EventKind, Hearth, HearthConfig, PASSPHRASE_ITERATIONS, PassphraseKeyProvider, RankContext, RecordOutcome,
    SCHEMA_VERSION,
};
use indicatif::{ProgressBar, ProgressStyle};
use population::{Population, PopulationSpec};

/// Used by `simulate` when no passphrase is given: the data is synthetic.
const SIMULATION_PASSPHRASE: &str = "hearth-simulation";

#[derive(Parser)]
#[command(name = "hearth", version, about = "On-device personalization that keeps watch history on the device")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a synthetic audience and record each device's history into its
    /// own encrypted store.
    Simulate {
        /// Number of simulated devices (one user each).
        #[arg(long, default_value_t = 50)]
        devices: usize,
        /// Output directory (`catalog.json`, `devices/<n>/`); a temporary
        /// directory, removed at the end, when absent.
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Catalog size.
        #[arg(long, default_value_t = 1500)]
        items: usize,
        /// Days of history per device.
        #[arg(long, default_value_t = 60)]
        days: i64,
        /// Passphrase for the device stores.
        #[arg(long, env = "HEARTH_PASSPHRASE", hide_env_values = true)]
        passphrase: Option<String>,
        /// Federated rounds after recording (in-process FedAvg; 0: none).
        #[arg(long, default_value_t = 0)]
        rounds: u32,
        /// L2 bound C of each device's update.
        #[arg(long, default_value_t = 1.0)]
        clip: f64,
    },
    /// Summarize a store: events, profile, settings, files.
    Inspect {
        /// The store's directory (for example `DATA/devices/0`).
        dir: PathBuf,
        #[arg(long, env = "HEARTH_PASSPHRASE", hide_env_values = true)]
        passphrase: String,
    },
    /// Rank held-out items through the on-device path and report NDCG@10 and
    /// HR@10 as JSON. INPUT: {"catalog": [CatalogItem], "users": [{"events":
    /// [Event], "held_out": "id", "context"?: RankContext}]}.
    Evaluate {
        #[arg(long)]
        input: PathBuf,
        /// A model package directory to install in every store (the built-in
        /// model when absent).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Ed25519 public keys (hex) trusted to sign the package.
        #[arg(long = "trust-key")]
        trust_keys: Vec<String>,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Model package keys and signatures.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Write everything a store holds as one JSON document.
    Export {
        dir: PathBuf,
        #[arg(long, env = "HEARTH_PASSPHRASE", hide_env_values = true)]
        passphrase: String,
        /// Output file (standard output when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Write a new Ed25519 signing key (PKCS#8) and print its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign DIR/manifest.json into DIR/manifest.sig.
    Sign {
        #[arg(long)]
        key: PathBuf,
        dir: PathBuf,
    },
    /// Print the public key of a signing key.
    Pubkey { key: PathBuf },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate { devices, data, seed, items, days, passphrase, rounds, clip } => {
            let passphrase = passphrase.unwrap_or_else(|| SIMULATION_PASSPHRASE.to_string());
            let spec = PopulationSpec { items, days, ..Default::default() };
            simulate(devices, data, seed, spec, &passphrase, Rounds { rounds, clip })
        }
        Command::Inspect { dir, passphrase } => inspect(&dir, &passphrase),
        Command::Export { dir, passphrase, out } => export(&dir, &passphrase, out.as_deref()),
        Command::Evaluate { input, model, trust_keys, threads } => (|| {
            let text = std::fs::read_to_string(&input).with_context(|| format!("reading {}", input.display()))?;
            let input: evaluate::EvalInput = serde_json::from_str(&text).context("parsing the evaluation input")?;
            let metrics = evaluate::evaluate(&input, model.as_deref(), &trust_keys, threads)?;
            println!("{}", serde_json::to_string(&metrics)?);
            Ok(())
        })(),
        Command::Model { command } => match command {
            ModelCommand::Keygen { out } => model_cmd::keygen(&out).map(|k| println!("{k}")),
            ModelCommand::Sign { key, dir } => model_cmd::sign(&key, &dir).map(|k| println!("signed by {k}")),
            ModelCommand::Pubkey { key } => model_cmd::public(&key).map(|k| println!("{k}")),
        },
    };
    if let Err(e) = result {
        eprintln!("hearth: {e:#}");
        std::process::exit(1);
    }
}

fn open_store(dir: &Path, passphrase: &str) -> Result<Arc<Hearth>> {
    if !dir.join(hearth_core::DB_FILE).exists() {
        bail!("no Hearth store in {}", dir.display());
    }
    let keys = PassphraseKeyProvider::for_dir(dir, passphrase, PASSPHRASE_ITERATIONS)?;
    Hearth::open(HearthConfig::new(dir.to_str().context("directory name is not UTF-8")?), Arc::new(keys))
        .with_context(|| format!("opening {}", dir.display()))
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
}

/// Splits a history into what is recorded and the item held out: the item
/// most recently engaged with for the first time (played, completed or
/// liked); all of its events are held out.
fn hold_out(history: &[Event]) -> (Vec<Event>, Option<(String, RankContext)>) {
    let engaged = |e: &Event| matches!(e.kind, EventKind::Play | EventKind::Complete | EventKind::Like);
    let mut first_engaged: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
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

struct Rounds {
    rounds: u32,
    clip: f64,
}

/// Per device: its open store (kept open for the rounds), the held-out
/// item and its context, and what it recorded.
type Device = (Arc<Hearth>, Option<(String, RankContext)>, Vec<Event>);

fn simulate(
    devices: usize,
    data: Option<PathBuf>,
    seed: u64,
    spec: PopulationSpec,
    passphrase: &str,
    fed: Rounds,
) -> Result<()> {
    if devices == 0 {
        bail!("--devices must be at least 1");
    }
    let started = Instant::now();
    let temp = match &data {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let root = data.clone().unwrap_or_else(|| temp.as_ref().unwrap().path().to_path_buf());
    std::fs::create_dir_all(root.join("devices"))?;

    let pop = Population::generate(spec, seed);
    let catalog_json = serde_json::to_string_pretty(&serde_json::json!({ "items": pop.catalog }))?;
    std::fs::write(root.join("catalog.json"), catalog_json)?;

    let bar = ProgressBar::new(devices as u64);
    bar.set_style(ProgressStyle::with_template("{spinner} simulating devices {bar:30} {pos}/{len} {elapsed_precise}")?);
    let next = AtomicUsize::new(0);
    let tally = Mutex::new(Tally { per_device: vec![0; devices], ..Default::default() });
    let coordinator = if fed.rounds > 0 { Some(Mutex::new(fedavg::Coordinator::new()?)) } else { None };
    let trusted: Vec<String> = coordinator.iter().map(|c| c.lock().unwrap().public_key()).collect();
    let kept: Mutex<Vec<Option<Device>>> = Mutex::new((0..devices).map(|_| None).collect());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(devices);
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
                        let user = pop.user(n, seed);
                        let history = pop.history(&user, seed);
                        let keys = PassphraseKeyProvider::for_dir(&dir, passphrase, PASSPHRASE_ITERATIONS)?;
                        let config = HearthConfig {
                            trusted_model_keys: trusted.clone(),
                            ..HearthConfig::new(dir.to_str().unwrap())
                        };
                        let h = Hearth::open(config, Arc::new(keys))?;
                        h.upsert_catalog(pop.catalog.clone())?;
                        let (history, held_out) = hold_out(&history);
                        let outcome = h.record_batch(history.clone())?;
                        if outcome != (RecordOutcome::Stored { count: history.len() as u32 }) {
                            bail!("device {n}: unexpected outcome {outcome:?}");
                        }
                        let mut ranked = None;
                        if let Some((item, context)) = held_out.clone() {
                            let by_model =
                                evaluate::held_out_position(&h, &pop.catalog, &history, &item, context.clone())?.0;
                            h.set_personalization(false)?;
                            let by_popularity =
                                evaluate::held_out_position(&h, &pop.catalog, &history, &item, context)?.0;
                            h.set_personalization(true)?;
                            ranked = Some((evaluate::gains(by_model), evaluate::gains(by_popularity)));
                        }
                        if fed.rounds > 0 {
                            h.set_federated_opt_in(true)?;
                            kept.lock().unwrap()[n] = Some((h.clone(), held_out.clone(), history.clone()));
                        } else {
                            h.close()?;
                        }
                        let bytes: u64 =
                            std::fs::read_dir(&dir)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
                        let mut t = tally.lock().unwrap();
                        t.events += history.len() as u64;
                        for e in &history {
                            t.by_kind[EventKind::ALL.iter().position(|k| *k == e.kind).unwrap()] += 1;
                        }
                        t.bytes += bytes;
                        t.per_device[n] = history.len() as u64;
                        if let Some((m, p)) = ranked {
                            t.model = (t.model.0 + m.0, t.model.1 + m.1);
                            t.popularity = (t.popularity.0 + p.0, t.popularity.1 + p.1);
                            t.ranked += 1;
                        }
                        drop(t);
                        bar.inc(1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("worker panicked")?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();

    let t = tally.into_inner().unwrap();
    let mut per = t.per_device.clone();
    per.sort_unstable();
    println!("Hearth simulation (seed {seed})");
    println!("  devices           {devices}");
    println!("  catalog           {} items -> {}", pop.catalog.len(), root.join("catalog.json").display());
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
    if t.ranked > 0 {
        let r = t.ranked as f64;
        println!(
            "  ranking           each device's most recent new item held out, ranked among all items it has not seen ({} devices)",
            t.ranked
        );
        println!("                    NDCG@10  HR@10");
        println!("    model (built-in) {:7.4}  {:5.3}", t.model.0 / r, t.model.1 / r);
        println!("    popularity       {:7.4}  {:5.3}", t.popularity.0 / r, t.popularity.1 / r);
    }
    if let Some(coordinator) = coordinator {
        let devices: Vec<Device> = kept.into_inner().unwrap().into_iter().flatten().collect();
        run_rounds(&mut coordinator.into_inner().unwrap(), &devices, &pop.catalog, &fed, seed)?;
    }
    println!("  took              {:.1} s", started.elapsed().as_secs_f64());
    if temp.is_some() {
        println!("  (temporary directory, removed; pass --data DIR to keep the stores)");
    }
    Ok(())
}

/// FedAvg rounds over the kept devices, with a quality row per round.
fn run_rounds(
    coordinator: &mut fedavg::Coordinator,
    devices: &[Device],
    catalog: &[hearth_core::CatalogItem],
    fed: &Rounds,
    seed: u64,
) -> Result<()> {
    let quality = |devices: &[Device]| -> Result<(f64, f64)> {
        let mut sum = (0.0, 0.0);
        let mut n = 0;
        for (h, held, history) in devices {
            if let Some((item, context)) = held {
                let (p, _) = evaluate::held_out_position(h, catalog, history, item, context.clone())?;
                let g = evaluate::gains(p);
                sum = (sum.0 + g.0, sum.1 + g.1);
                n += 1;
            }
        }
        Ok((sum.0 / n.max(1) as f64, sum.1 / n.max(1) as f64))
    };
    println!("  federated rounds  in-process FedAvg, C = {}, 1 local epoch, no noise", fed.clip);
    println!("    round  participants  mean norm (before clip)  NDCG@10  HR@10");
    let (ndcg, hr) = quality(devices)?;
    println!("    {:>5}  {:>12}  {:>23}  {ndcg:7.4}  {hr:5.3}", 0, "-", "-");
    for round in 1..=fed.rounds {
        let next = AtomicUsize::new(0);
        let updates = Mutex::new(Vec::new());
        std::thread::scope(|scope| -> Result<()> {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some((h, _, _)) = devices.get(i) else { return Ok(()) };
                            let round_seed = seed ^ ((round as u64) << 32) ^ i as u64;
                            if let Some(u) = fedavg::local_round(h, fed.clip, round_seed)? {
                                updates.lock().unwrap().push(u);
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().expect("device worker panicked")?;
            }
            Ok(())
        })?;
        let updates = updates.into_inner().unwrap();
        let norms: f64 = updates.iter().map(|(_, n)| n).sum::<f64>() / updates.len().max(1) as f64;
        let deltas: Vec<Vec<f32>> = updates.into_iter().map(|(d, _)| d).collect();
        let package = coordinator.aggregate(&deltas)?;
        for (h, _, _) in devices {
            h.install_model(package.clone())?;
        }
        let (ndcg, hr) = quality(devices)?;
        println!("    {round:>5}  {:>12}  {norms:>23.4}  {ndcg:7.4}  {hr:5.3}", deltas.len());
    }
    for (h, _, _) in devices {
        h.close()?;
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

fn inspect(dir: &Path, passphrase: &str) -> Result<()> {
    let h = open_store(dir, passphrase)?;
    let p = h.profile()?;
    let s = h.settings()?;
    println!("Hearth store {} (schema v{SCHEMA_VERSION})", dir.display());
    println!("  integrity         {}", h.integrity_check()?);
    println!("  events            {}", h.event_count()?);
    println!("  items seen        {}", p.items_seen);
    println!("  catalog cache     {} items", h.catalog_size()?);
    println!("  completion rate   {:.2}", p.completion_rate);
    println!("  skip rate         {:.2}", p.skip_rate);
    let cats: Vec<String> =
        p.top_categories.iter().take(5).map(|c| format!("{} ({:.1})", c.category, c.affinity)).collect();
    println!("  top categories    {}", cats.join(", "));
    let devices: Vec<String> = p
        .device_mix
        .iter()
        .filter(|d| d.share > 0.0)
        .map(|d| format!("{:?} {:.0}%", d.device, d.share * 100.0).to_lowercase())
        .collect();
    println!("  devices           {}", devices.join(", "));
    let peak = p.hour_mix.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(h, _)| h).unwrap_or(0);
    println!("  peak hour         {peak:02}:00");
    println!(
        "  settings          personalization={} history_paused={} federated_opt_in={} blocked={:?} retention_days={:?}",
        s.personalization_enabled, s.history_paused, s.federated_opt_in, s.blocked_categories, s.retention_days
    );
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        println!(
            "  file              {} ({})",
            entry.file_name().to_string_lossy(),
            human_bytes(entry.metadata()?.len())
        );
    }
    Ok(())
}

fn export(dir: &Path, passphrase: &str, out: Option<&Path>) -> Result<()> {
    let h = open_store(dir, passphrase)?;
    let json = h.export_json()?;
    match out {
        Some(path) => {
            std::fs::write(path, json)?;
            eprintln!("exported to {}", path.display());
        }
        None => println!("{json}"),
    }
    Ok(())
}
