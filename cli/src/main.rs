//! `hearth`: run Hearth on a laptop.
//!
//! * `hearth simulate`: a fleet of devices (a synthetic audience or
//!   MovieLens-100K), each with its own encrypted store, and federated
//!   rounds among them.
//! * `hearth chart`: NDCG@10 against rounds from `simulate --json` records.
//! * `hearth inspect DIR`: what a store holds, in summary.
//! * `hearth export DIR`: everything a store holds, as the export document.
//! * `hearth evaluate`: ranking quality through the on-device path.
//! * `hearth model keygen|sign|pubkey|nnef`: keys and signatures for model packages,
//!   and the NNEF copies of their graphs.

mod adaptive_clip;
mod chart;
mod evaluate;
mod experiment_sim;
mod fedavg;
mod gate_sim;
mod model_cmd;
mod movielens;
mod person;
mod population;
mod simulate;

use std::fmt::Write as _;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use fedavg::Sampling;
use hearth_core::{Hearth, HearthConfig, PASSPHRASE_ITERATIONS, PassphraseKeyProvider, SCHEMA_VERSION};
use population::PopulationSpec;
use simulate::{Federated, Source};

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
    /// Simulate a fleet of devices, each with its own encrypted store, on a
    /// synthetic audience or on MovieLens-100K (one device per user); rank
    /// each device's held-out item; with --rounds, train by federated
    /// averaging in-process.
    Simulate(Box<SimulateArgs>),
    /// Chart NDCG@10 against rounds from the `--json` records of one or more
    /// `simulate` runs of the same fleet, as one PNG.
    Chart {
        /// A record written by `simulate --json` (repeatable; runs in order).
        #[arg(long = "json", required = true)]
        records: Vec<PathBuf>,
        /// A horizontal reference line, LABEL=NDCG (repeatable).
        #[arg(long = "reference", value_name = "LABEL=NDCG")]
        references: Vec<String>,
        #[arg(long)]
        out: PathBuf,
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

#[derive(clap::Args)]
struct SimulateArgs {
    /// Number of simulated devices (one user each); 50 for the synthetic
    /// audience, every user for MovieLens.
    #[arg(long)]
    devices: Option<usize>,
    /// An ml-100k directory (ml-100k.inter, ml-100k.item, as
    /// models/movielens/run.sh fetches them): one device per user, each
    /// user's last rating by time held out.
    #[arg(long, value_name = "DIR")]
    movielens: Option<PathBuf>,
    /// Output directory (`catalog.json`, `devices/<n>/`); a temporary
    /// directory, removed at the end, when absent.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Catalog size (synthetic audience).
    #[arg(long, default_value_t = 1500)]
    items: usize,
    /// Days of history per device (synthetic audience).
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
    /// Noise multiplier z: Gaussian noise of std z*C/n on each coordinate
    /// of the mean of n updates. A comma-separated list runs the rounds
    /// once per value, each from the built-in model, same devices, same
    /// samples.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    noise_multiplier: Vec<f64>,
    /// Where the noise is added: `central` (by the coordinator, to the
    /// mean) or `distributed` (by the devices: each quantizes its update
    /// and adds a discrete Gaussian share, as in a secure round, so that
    /// --honest-fraction of the cohort alone carries z*C; epsilon amplified
    /// only by the devices' own coin, --device-sampling-rate).
    #[arg(long, default_value = "central", value_parser = ["central", "distributed"])]
    noise_mode: String,
    /// With --noise-mode distributed: the fraction of each round's cohort
    /// the devices count on for the noise.
    #[arg(long, default_value_t = 2.0 / 3.0)]
    honest_fraction: f64,
    /// With --noise-mode distributed: the sum's integers are modulo 2^bits.
    #[arg(long, default_value_t = 20)]
    secagg_bits: u32,
    /// With --noise-mode distributed: each device's own coin puts its
    /// update in the sum with this probability (1: no coin); the devices
    /// account each round as Poisson-sampled at this rate.
    #[arg(long, default_value_t = 1.0)]
    device_sampling_rate: f64,
    /// Fleet-scale simulation: the size N of the fleet the run stands for
    /// (with --cohort). The rounds train on the real devices as drawn, but
    /// the coordinator's noise on the mean is z*C/K and the accountant's
    /// sampling rate K/N (delta 1/N^1.1 by default): what a fleet of N
    /// devices with cohorts of K would get, assuming the real devices' mean
    /// stands for K devices' (McMahan et al., ICLR 2018).
    #[arg(long, requires = "cohort")]
    population: Option<u64>,
    /// Fleet-scale simulation: the cohort K of each round (with
    /// --population).
    #[arg(long, requires = "population")]
    cohort: Option<u64>,
    /// Fleet-scale simulation: make the noise from a stream of normal
    /// deviates seeded by --seed alone, the same in both --noise-mode
    /// values (central: deviate x z*C/K; distributed: the devices' summed
    /// discrete noise as the deviate x its std on their integer grid,
    /// rounded). A central and a distributed run with the same seed then
    /// differ by what the mode changes, not by where the noise fell: the
    /// paired comparison of models/movielens/modes.sh.
    #[arg(long, requires = "population")]
    paired_noise: bool,
    /// Adaptive clipping (central mode): the clip norm starts at --clip and
    /// follows this quantile of the devices' update norms (Andrew et al.,
    /// NeurIPS 2021), each device reporting whether it was clipped, the
    /// count noised; the round's z is shared between the update and the
    /// count.
    #[arg(long)]
    adaptive_clip: Option<f64>,
    /// With --adaptive-clip: the clip norm's geometric step.
    #[arg(long, default_value_t = 0.2)]
    clip_lr: f64,
    /// With --adaptive-clip: the std of the noise on the count of unclipped
    /// updates (the expected cohort / 20 by default, or K / 20 with --cohort).
    #[arg(long)]
    clip_count_noise: Option<f64>,
    /// Poisson sampling: each device takes part in a round with this
    /// probability (1: every device).
    #[arg(long, conflicts_with = "clients_per_round")]
    sample_rate: Option<f64>,
    /// Fixed-size sampling: this many devices drawn per round.
    #[arg(long)]
    clients_per_round: Option<usize>,
    /// Local SGD learning rate (the model manifest's when absent).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 1)]
    local_epochs: u32,
    /// Negatives per positive in local training (the manifest's when absent).
    #[arg(long)]
    negatives: Option<usize>,
    /// How the server applies the noised mean update: `avg` (FedAvg, or
    /// FedAvgM with --server-momentum) or `adam` (FedAdam).
    #[arg(long, default_value = "avg", value_parser = ["avg", "adam"])]
    server_opt: String,
    /// Server learning rate (default 1 for avg, 0.01 for adam).
    #[arg(long)]
    server_lr: Option<f64>,
    /// Let the server learning rate fall linearly to this by each run's
    /// last round.
    #[arg(long)]
    server_lr_final: Option<f64>,
    /// The devices scale the dense parameters' part of their update (all
    /// but the id tables) by this weight in (0, 1] before clipping, so C
    /// bounds mostly the id tables; the coordinator divides it out after
    /// the noise, which the dense parameters then carry 1 / weight times.
    #[arg(long)]
    dense_weight: Option<f64>,
    /// Server momentum of `avg` (FedAvgM; 0: plain FedAvg).
    #[arg(long, default_value_t = 0.0)]
    server_momentum: f64,
    /// Start from this model package's weights (a directory of the five
    /// package files, for example one trained centrally) instead of the
    /// built-in model; the coordinator re-signs it.
    #[arg(long, value_name = "DIR")]
    initial_model: Option<PathBuf>,
    /// Measure quality every this many rounds (and after the last).
    #[arg(long, default_value_t = 1)]
    eval_every: u32,
    /// Delta of the epsilon column (1/N^1.1 for N devices when absent).
    #[arg(long)]
    delta: Option<f64>,
    /// Write a PNG chart of NDCG@10 against rounds here.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// A horizontal reference line on the chart, LABEL=NDCG (repeatable),
    /// for example "central=0.0632".
    #[arg(long = "reference", value_name = "LABEL=NDCG")]
    references: Vec<String>,
    /// Write every number of the rounds as JSON here (rewritten after
    /// each round).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Worker threads for recording, training and ranking.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Run the rounds against a real Flower SuperLink (its Fleet API,
    /// http://HOST:PORT) and Hearth's ServerApp instead of in process: every
    /// device calls `participate` once per round.
    #[arg(long, value_name = "URL")]
    flower: Option<String>,
    /// With --flower: the coordinator's model-signing public key (64 hex
    /// digits), so devices install the global model it sends (repeatable).
    #[arg(long = "trust-key", value_name = "HEX")]
    trust_keys: Vec<String>,
    /// With --flower: seconds a device waits for each round.
    #[arg(long, default_value_t = 300)]
    round_wait: u32,
    /// Run this many two-arm experiments (model against the fallback, arms
    /// drawn on the devices), each device reporting its held-out item's
    /// NDCG@10 in its arm, and check each arm's noisy estimate against the
    /// devices' own value (0: none).
    #[arg(long, default_value_t = 0)]
    experiment_seeds: u32,
    /// The noise multiplier of an experiment report: every per-arm sum gets
    /// Gaussian noise of std z * sqrt(5).
    #[arg(long, default_value_t = 1.0)]
    experiment_noise: f64,
    /// With --rounds: after each run, the release gate. Every device with a
    /// held-out item evaluates the run's final model against the one the
    /// run started from and the fallback; the sums get Gaussian noise of
    /// std z * sqrt(6), and the model is published only if it beats both by
    /// more than its 95% interval.
    #[arg(long)]
    gate_noise: Option<f64>,
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
    /// Write DIR/inference.nnef.tar and DIR/train_step.nnef.tar, tract's
    /// NNEF of the package's ONNX graphs (what a library built with the
    /// core's `nnef` feature loads). models/build.py runs it; re-sign after.
    Nnef { dir: PathBuf },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(args) => (|| {
            let SimulateArgs {
                devices,
                movielens,
                data,
                seed,
                items,
                days,
                passphrase,
                rounds,
                clip,
                noise_multiplier,
                noise_mode,
                honest_fraction,
                secagg_bits,
                device_sampling_rate,
                population,
                cohort,
                paired_noise,
                adaptive_clip,
                clip_lr,
                clip_count_noise,
                sample_rate,
                clients_per_round,
                lr,
                local_epochs,
                negatives,
                server_opt,
                server_lr,
                server_lr_final,
                dense_weight,
                server_momentum,
                initial_model,
                eval_every,
                delta,
                chart,
                references,
                json,
                threads,
                flower,
                trust_keys,
                round_wait,
                experiment_seeds,
                experiment_noise,
                gate_noise,
            } = *args;
            let passphrase = passphrase.unwrap_or_else(|| SIMULATION_PASSPHRASE.to_string());
            let source = match movielens {
                Some(dir) => Source::MovieLens { dir, devices },
                None => Source::Synthetic {
                    spec: PopulationSpec { items, days, ..Default::default() },
                    devices: devices.unwrap_or(50),
                },
            };
            let sampling = match (sample_rate, clients_per_round) {
                (Some(q), _) if !(q > 0.0 && q <= 1.0) => bail!("--sample-rate must be in (0, 1]"),
                (Some(q), _) => Sampling::Poisson(q),
                (None, Some(0)) => bail!("--clients-per-round must be at least 1"),
                (None, Some(k)) => Sampling::Fixed(k),
                (None, None) => Sampling::Poisson(1.0),
            };
            if noise_multiplier.iter().any(|z| !(z.is_finite() && *z >= 0.0)) {
                bail!("--noise-multiplier must be numbers >= 0");
            }
            if delta.is_some_and(|d| !(d > 0.0 && d < 1.0)) {
                bail!("--delta must be in (0, 1)");
            }
            let noise_mode = match noise_mode.as_str() {
                "distributed" if flower.is_some() => {
                    bail!("with --flower the coordinator's run config sets the noise mode (noise-mode=\"distributed\")")
                }
                "distributed" => fedavg::NoiseMode::Distributed {
                    bits: secagg_bits,
                    honest_fraction,
                    sampling_rate: device_sampling_rate,
                },
                _ if device_sampling_rate != 1.0 => bail!("--device-sampling-rate needs --noise-mode distributed"),
                _ => fedavg::NoiseMode::Central,
            };
            let fleet = match (population, cohort) {
                (Some(n), Some(k)) => {
                    if !(k >= 1 && n >= k) {
                        bail!("--cohort must be at least 1 and at most --population");
                    }
                    if flower.is_some() {
                        bail!("--population and --cohort simulate a fleet's noise in process, not with --flower");
                    }
                    if let fedavg::NoiseMode::Distributed { sampling_rate, .. } = noise_mode {
                        // The round's devices, K / rate, must be in the fleet.
                        if fedavg::fleet_setup_cohort(k, sampling_rate) > n {
                            bail!(
                                "--device-sampling-rate below --cohort / --population puts more devices in a round than the fleet has"
                            );
                        }
                    }
                    Some(simulate::FleetScale { population: n, cohort: k, paired_noise })
                }
                _ => None,
            };
            if dense_weight.is_some() && flower.is_some() {
                bail!("with --flower the coordinator's run config sets dense-weight");
            }
            if let Some(z) = gate_noise {
                if !(z.is_finite() && z > 0.0) {
                    bail!("--gate-noise must be a number > 0");
                }
                if rounds == 0 || flower.is_some() {
                    bail!("--gate-noise gates the model of in-process rounds: it needs --rounds and no --flower");
                }
            }
            let references = parse_references(&references)?;
            let server = match server_opt.as_str() {
                "adam" => fedavg::ServerOptimizer::adam(server_lr.unwrap_or(0.01)),
                _ => fedavg::ServerOptimizer::Momentum { lr: server_lr.unwrap_or(1.0), momentum: server_momentum },
            };
            let fed = (rounds > 0).then(|| Federated {
                rounds,
                clip,
                noise_multipliers: noise_multiplier,
                noise_mode,
                sampling,
                learning_rate: lr,
                local_epochs,
                negatives,
                server,
                server_lr_final,
                dense_weight,
                initial_model,
                eval_every,
                delta,
                chart,
                references,
                json,
                threads: threads.max(1),
                flower: flower.map(|url| simulate::FlowerLink { url, trust_keys, wait_seconds: round_wait }),
                fleet,
                adaptive: adaptive_clip.map(|quantile| simulate::AdaptiveTerms {
                    quantile,
                    learning_rate: clip_lr,
                    count_noise: clip_count_noise,
                }),
                gate_noise,
            });
            if !(experiment_noise.is_finite() && experiment_noise >= 0.0) {
                bail!("--experiment-noise must be a number >= 0");
            }
            let experiment = (experiment_seeds > 0)
                .then_some(experiment_sim::Settings { seeds: experiment_seeds, noise_multiplier: experiment_noise });
            simulate::simulate(source, data, seed, &passphrase, fed, experiment)
        })(),
        Command::Chart { records, references, out } => (|| {
            simulate::chart_from_records(&records, parse_references(&references)?, &out)?;
            println!("chart {}", out.display());
            Ok(())
        })(),
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
            ModelCommand::Nnef { dir } => model_cmd::nnef(&dir).map(|files| println!("wrote {}", files.join(", "))),
        },
    };
    if let Err(e) = result {
        // `hearth export | head`: the reader went away; nothing to report.
        if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)) {
            std::process::exit(0);
        }
        eprintln!("hearth: {e:#}");
        std::process::exit(1);
    }
}

/// Writes `text` to standard output (an error, not a panic, when the reader
/// has gone: `hearth inspect | head`).
fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `LABEL=NDCG` pairs of `--reference`.
fn parse_references(references: &[String]) -> Result<Vec<(String, f64)>> {
    references
        .iter()
        .map(|r| {
            let (label, value) = r.rsplit_once('=').context("--reference takes LABEL=NDCG")?;
            Ok((label.to_string(), value.trim().parse::<f64>().context("--reference: NDCG is not a number")?))
        })
        .collect()
}

fn open_store(dir: &Path, passphrase: &str) -> Result<Arc<Hearth>> {
    if !dir.join(hearth_core::DB_FILE).exists() {
        bail!("no Hearth store in {}", dir.display());
    }
    let keys = PassphraseKeyProvider::for_dir(dir, passphrase, PASSPHRASE_ITERATIONS)?;
    Hearth::open(HearthConfig::new(dir.to_str().context("directory name is not UTF-8")?), Arc::new(keys))
        .with_context(|| format!("opening {}", dir.display()))
}

pub(crate) fn human_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    } else if b >= 1 << 10 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

fn inspect(dir: &Path, passphrase: &str) -> Result<()> {
    let h = open_store(dir, passphrase)?;
    let p = h.profile()?;
    let s = h.settings()?;
    let mut text = String::new();
    let integrity = h.integrity_check()?;
    writeln!(text, "Hearth store {} (schema v{SCHEMA_VERSION})", dir.display())?;
    writeln!(text, "  integrity         {}", integrity.replace('\n', "; "))?;
    writeln!(text, "  events            {}", h.event_count()?)?;
    writeln!(text, "  items seen        {}", p.items_seen)?;
    writeln!(text, "  catalog cache     {} items", h.catalog_size()?)?;
    writeln!(text, "  completion rate   {:.2}", p.completion_rate)?;
    writeln!(text, "  skip rate         {:.2}", p.skip_rate)?;
    let cats: Vec<String> =
        p.top_categories.iter().take(5).map(|c| format!("{} ({:.1})", c.category, c.affinity)).collect();
    writeln!(text, "  top categories    {}", cats.join(", "))?;
    let devices: Vec<String> = p
        .device_mix
        .iter()
        .filter(|d| d.share > 0.0)
        .map(|d| format!("{:?} {:.0}%", d.device, d.share * 100.0).to_lowercase())
        .collect();
    writeln!(text, "  devices           {}", devices.join(", "))?;
    let peak = p.hour_mix.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(h, _)| h).unwrap_or(0);
    writeln!(text, "  peak hour         {peak:02}:00")?;
    writeln!(
        text,
        "  settings          personalization={} history_paused={} federated_opt_in={} blocked={:?} retention_days={:?}",
        s.personalization_enabled, s.history_paused, s.federated_opt_in, s.blocked_categories, s.retention_days
    )?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        writeln!(
            text,
            "  file              {} ({})",
            entry.file_name().to_string_lossy(),
            human_bytes(entry.metadata()?.len())
        )?;
    }
    print_out(&text)?;
    if integrity != "ok" {
        bail!("the store failed its integrity check");
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
        None => print_out(&format!("{json}\n"))?,
    }
    Ok(())
}
