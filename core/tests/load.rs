//! The load test of secure aggregation (`#[ignore]`d; tests/federated/load.sh
//! runs it against a real SuperLink and the ServerApp in secure mode):
//! HEARTH_DEVICES lightweight devices, each a real Fleet client on its own
//! thread that takes part in HEARTH_ROUNDS secure rounds with a synthetic
//! update of the built-in model's size (no store, no training), some
//! dropping at a stage. Prints what each device saw; the script adds the
//! coordinator's side.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::flower::{Dropping, env};
use hearth_core::federated::*;

#[test]
#[ignore = "a load test: tests/federated/load.sh"]
fn many_lightweight_devices_take_part_in_secure_rounds() {
    let link = env("HEARTH_SUPERLINK", "http://127.0.0.1:9092");
    let devices: usize = env("HEARTH_DEVICES", "1000").parse().unwrap();
    let rounds: usize = env("HEARTH_ROUNDS", "2").parse().unwrap();
    let wait = Duration::from_secs(env("HEARTH_ROUND_WAIT_S", "900").parse().unwrap());
    // Between two pulls while waiting (a thousand devices polling every 3 s
    // are 333 requests a second for one SuperLink process).
    let poll = Duration::from_secs(env("HEARTH_POLL_S", "3").parse().unwrap());
    // How long a device stays online after its last reply: the SuperLink
    // answers a pull for an offline node's stored reply with "node
    // unavailable", and with a thousand devices the ServerApp pulls a
    // stage's replies minutes after they arrive (6 s, the default, lost
    // 514 of the unmask replies of a 1,000-device round).
    let linger = Duration::from_secs(env("HEARTH_LINGER_S", "120").parse().unwrap());
    let outcomes: Arc<Mutex<Vec<(usize, usize, String)>>> = Arc::default();
    let started = Instant::now();
    std::thread::scope(|s| {
        for n in 0..devices {
            let (link, outcomes, started, poll, linger) = (&link, &outcomes, &started, poll, linger);
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn_scoped(s, move || {
                    // 5% of the devices drop in each round, at stages 1 to 3 in turn.
                    let drops = |round: usize| (n % 20 == round % 20).then_some(1 + (n / 20 + round) % 3);
                    for round in 1..=rounds {
                        let transport = Dropping::new(HttpTransport::new(link), drops(round));
                        let options = ClientOptions {
                            poll_interval: poll,
                            heartbeat_interval: 120.0,
                            call_timeout: Duration::from_secs(120),
                            object_wait: wait,
                            linger,
                            ..ClientOptions::default()
                        };
                        // A fresh node key each round (as issue 17 will make every device do).
                        let mut client = FleetClient::new(transport, NodeKey::generate().unwrap(), options);
                        let mut trainer = |ins: &TrainInstruction| {
                            let len: usize = ins.arrays.iter().map(|(_, a)| a.len()).sum();
                            let delta: Vec<f32> =
                                (0..len).map(|i| ((i % 7) as f32 - 3.0) / (8.0 * len as f32).sqrt()).collect();
                            Ok(LocalResult { delta, examples: 10, segment_report: None })
                        };
                        let outcome = match client.participate(wait, &mut trainer) {
                            Ok(RoundOutcome::Done(_)) => "sent".to_string(),
                            Ok(RoundOutcome::NoMessage) => "no round".to_string(),
                            Err(e) => format!("error: {e}"),
                        };
                        if outcome.starts_with("error") {
                            // At once: a failing round shows why while it runs.
                            eprintln!(
                                "load: device {n} round {round} at {:.1} s: {outcome}",
                                started.elapsed().as_secs_f64()
                            );
                        }
                        outcomes.lock().unwrap().push((n, round, outcome));
                        if drops(round).is_some() {
                            std::thread::sleep(Duration::from_secs(20));
                        }
                    }
                })
                .unwrap();
        }
    });
    let outcomes = outcomes.lock().unwrap();
    for round in 1..=rounds {
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for (_, _, o) in outcomes.iter().filter(|(_, r, _)| *r == round) {
            let kind = if o.starts_with("error") { "error" } else { o.as_str() };
            *counts.entry(kind).or_default() += 1;
        }
        println!("load: round {round}: {counts:?}");
    }
    let mut errors = std::collections::BTreeMap::<String, usize>::new();
    for (_, _, o) in outcomes.iter().filter(|(_, _, o)| o.starts_with("error")) {
        *errors.entry(o.clone()).or_default() += 1;
    }
    println!("load: errors: {errors:?}");
    println!("load: {devices} devices x {rounds} rounds in {:.1} s", started.elapsed().as_secs_f64());
}
