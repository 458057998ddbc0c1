//! A hostile coordinator against one device: every trick in the issue gets
//! a typed refusal, after which the device answers nothing more, and no
//! secret leaves it.

use std::collections::BTreeMap;

use hearth_secagg::keys::KeyError;
use hearth_secagg::wire::{self, PeerKeys, PublicKeys, SealedShare, Setup, Stage, Unmask, WireError};
use hearth_secagg::{CoordinatorRound, DevicePolicy, DeviceRound, Quantization, Refusal, RoundConfig, RoundError};

const LEN: usize = 50;
const N: u64 = 12;

fn setup_for(node: u64) -> Setup {
    let neighbours: Vec<u64> = (1..=N).filter(|&n| n != node).collect();
    let bits = 16;
    Setup {
        run_id: 1,
        round: 4,
        bits,
        scale: Quantization::largest_scale(bits, 1.0, 100),
        clip_norm: 1.0,
        max_cohort: 100,
        cohort: N as u32,
        threshold: 8, // 2/3 of 11, rounded up
        neighbours,
        vector_len: LEN as u64,
        noise_multiplier: 0.0,
        sampling_rate: 0.0,
        count_weight: 0.0,
        task: 0,
    }
}

/// A named change a hostile coordinator makes to what it relays.
type Tamper<T> = (&'static str, Box<dyn Fn(&mut Vec<T>)>);

fn policy() -> DevicePolicy {
    DevicePolicy::default()
}

/// Twelve honest devices through the share-keys stage: their rounds, their
/// keys, and the sealed shares addressed to each.
struct Cohort {
    rounds: BTreeMap<u64, DeviceRound>,
    keys: BTreeMap<u64, PublicKeys>,
    inbox: BTreeMap<u64, Vec<SealedShare>>,
}

fn peers_of(keys: &BTreeMap<u64, PublicKeys>, node: u64) -> Vec<PeerKeys> {
    keys.iter().filter(|(n, _)| **n != node).map(|(n, k)| PeerKeys { node: *n, keys: Some(k.clone()) }).collect()
}

fn cohort_after_setup() -> Cohort {
    let mut rounds = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for node in 1..=N {
        let (round, public) = DeviceRound::setup(&policy(), node, LEN, &setup_for(node)).unwrap();
        rounds.insert(node, round);
        keys.insert(node, public);
    }
    Cohort { rounds, keys, inbox: BTreeMap::new() }
}

fn cohort_after_shares() -> Cohort {
    let mut c = cohort_after_setup();
    for node in 1..=N {
        let peers = peers_of(&c.keys, node);
        let sealed = c.rounds.get_mut(&node).unwrap().share_keys(&peers).unwrap();
        for share in sealed.shares {
            c.inbox.entry(share.dst).or_default().push(share);
        }
    }
    c
}

fn cohort_after_masked() -> Cohort {
    let mut c = cohort_after_shares();
    for node in 1..=N {
        let shares = c.inbox[&node].clone();
        c.rounds.get_mut(&node).unwrap().masked_input(&shares, &[0.01; LEN]).unwrap();
    }
    c
}

fn refused_setup(setup: Setup) -> Refusal {
    DeviceRound::setup(&policy(), 1, LEN, &setup).unwrap_err()
}

#[test]
fn setup_terms_below_the_policy_are_refused() {
    assert_eq!(refused_setup(Setup { cohort: 9, ..setup_for(1) }), Refusal::CohortTooSmall { cohort: 9, min: 10 });
    // A threshold of 7 of 11 neighbours is below 2/3; 12 is above 11.
    assert_eq!(
        refused_setup(Setup { threshold: 7, ..setup_for(1) }),
        Refusal::Threshold { threshold: 7, neighbours: 11, min: 8 }
    );
    assert!(matches!(refused_setup(Setup { threshold: 12, ..setup_for(1) }), Refusal::Threshold { .. }));
    // Neighbour lists that are not lists of other devices.
    let mut twice = setup_for(1);
    twice.neighbours.push(2);
    assert!(matches!(refused_setup(twice), Refusal::Neighbours(_)));
    let mut itself = setup_for(1);
    itself.neighbours[0] = 1;
    assert!(matches!(refused_setup(itself), Refusal::Neighbours(_)));
    let many =
        Setup { neighbours: (2..=1200).collect(), cohort: 2000, max_cohort: 2000, threshold: 800, ..setup_for(1) };
    assert!(matches!(refused_setup(many), Refusal::Neighbours(_)));
    assert!(matches!(refused_setup(Setup { cohort: 11, ..setup_for(1) }), Refusal::Neighbours(_)));
    // Integers that could wrap, and a vector that is not the model's.
    assert!(matches!(refused_setup(Setup { scale: 1e9, ..setup_for(1) }), Refusal::Quantization(_)));
    assert!(matches!(refused_setup(Setup { max_cohort: 11, ..setup_for(1) }), Refusal::Quantization(_)));
    assert!(matches!(refused_setup(Setup { bits: 64, ..setup_for(1) }), Refusal::Quantization(_)));
    assert_eq!(
        refused_setup(Setup { vector_len: 51, ..setup_for(1) }),
        Refusal::VectorLength { got: 51, want: LEN as u64 }
    );
}

#[test]
fn noise_terms_the_device_cannot_keep_are_refused() {
    // Not a multiplier.
    for z in [f64::NAN, -1.0, f64::INFINITY] {
        assert!(matches!(refused_setup(Setup { noise_multiplier: z, ..setup_for(1) }), Refusal::Noise(_)), "{z}");
    }
    // The scale of a noiseless round leaves no room for the noise in the
    // sum: it could wrap.
    assert!(matches!(refused_setup(Setup { noise_multiplier: 1.0, ..setup_for(1) }), Refusal::Quantization(_)));
    // At a scale with room for it, the device takes its share, sized by its
    // own honest fraction whatever the coordinator assumed: (z C s)^2 /
    // ceil(h * 12).
    let room = Quantization::largest_scale_with_noise(16, 1.0, 100, 100f64.sqrt());
    let setup = Setup { noise_multiplier: 1.0, scale: room, ..setup_for(1) };
    for (h, honest) in [(2.0 / 3.0, 8.0), (0.5, 6.0)] {
        let policy = DevicePolicy { honest_fraction: h, ..policy() };
        let (round, _) = DeviceRound::setup(&policy, 1, LEN, &setup).unwrap();
        let want = (room * room) / honest;
        let got = round.noise().unwrap().variance();
        assert!(got >= want && got - want <= 1.0 / 65536.0, "{got} vs {want}");
    }
    // A policy fraction outside (0, 1] is refused too.
    let policy = DevicePolicy { honest_fraction: 0.0, ..policy() };
    assert!(matches!(DeviceRound::setup(&policy, 1, LEN, &setup), Err(Refusal::Noise(_))));
    // A coin's rate outside [0, 1], or a coin without noise, is refused.
    for rate in [f64::NAN, -0.5, 1.5, f64::INFINITY] {
        let bad = Setup { sampling_rate: rate, ..setup.clone() };
        assert!(matches!(refused_setup(bad), Refusal::Noise(_)), "{rate}");
    }
    assert!(matches!(refused_setup(Setup { sampling_rate: 0.5, ..setup_for(1) }), Refusal::Noise(_)));
}

#[test]
fn a_count_weight_the_vector_cannot_hold_is_refused() {
    // The count's value, beta / 2, must be within the vector's bound C.
    for beta in [f64::NAN, -1.0, 2.01, f64::INFINITY] {
        assert!(matches!(refused_setup(Setup { count_weight: beta, ..setup_for(1) }), Refusal::Count(_)), "{beta}");
    }
    let (device, _) = DeviceRound::setup(&policy(), 1, LEN, &Setup { count_weight: 0.5, ..setup_for(1) }).unwrap();
    assert_eq!(device.count_weight(), 0.5);
}

#[test]
fn a_task_the_device_does_not_know_or_an_evaluation_with_a_count_is_refused() {
    use hearth_secagg::wire::Task;
    for task in [3, -1, i32::MAX] {
        assert!(matches!(refused_setup(Setup { task, ..setup_for(1) }), Refusal::Task(_)), "{task}");
    }
    let evaluate = Task::EvaluateModel as i32;
    for task in [evaluate, Task::ExperimentReport as i32] {
        let with_count = Setup { task, count_weight: 0.5, ..setup_for(1) };
        assert!(matches!(refused_setup(with_count), Refusal::Task(_)));
    }
    let (device, _) = DeviceRound::setup(&policy(), 1, LEN, &Setup { task: evaluate, ..setup_for(1) }).unwrap();
    assert_eq!(device.task(), Task::EvaluateModel);
    // The rounds before tasks existed are training rounds.
    let (device, _) = DeviceRound::setup(&policy(), 1, LEN, &setup_for(1)).unwrap();
    assert_eq!(device.task(), Task::Train);
    // The coordinator will not announce one either.
    let config = RoundConfig {
        run_id: 9,
        round: 2,
        quantization: Quantization {
            bits: 16,
            scale: Quantization::largest_scale(16, 1.0, 5),
            clip_norm: 1.0,
            max_cohort: 5,
        },
        degree: 4,
        threshold_fraction: 2.0 / 3.0,
        vector_len: 6,
        noise: RoundConfig::NO_NOISE,
        sampling_rate: 0.0,
        count_weight: 0.5,
        task: Task::EvaluateModel,
    };
    let cohort = [1, 2, 3, 4, 5];
    assert!(matches!(CoordinatorRound::new(config.clone(), &cohort), Err(RoundError::Terms(_))));
    let mut round = CoordinatorRound::new(RoundConfig { count_weight: 0.0, ..config }, &cohort).unwrap();
    for (_, bytes) in round.advance().unwrap() {
        let stage: Stage = wire::decode(&bytes, usize::MAX).unwrap();
        let Some(wire::StageBody::Setup(setup)) = stage.body else { panic!("not a setup") };
        assert_eq!(setup.task, evaluate);
    }
}

#[test]
fn the_local_coin_is_flipped_on_the_device_at_the_announced_rate() {
    let room = Quantization::largest_scale_with_noise(16, 1.0, 100, 100f64.sqrt());
    let setup = Setup { noise_multiplier: 1.0, scale: room, ..setup_for(1) };
    // 0 and 1 are no coin.
    for rate in [0.0, 1.0] {
        let (round, _) =
            DeviceRound::setup(&policy(), 1, LEN, &Setup { sampling_rate: rate, ..setup.clone() }).unwrap();
        assert_eq!(round.coin(), None);
    }
    // 600 setups at 0.3: 180 +- 11.2 kept (5 standard deviations either way).
    let kept = (0..600)
        .filter(|_| {
            let (round, _) =
                DeviceRound::setup(&policy(), 1, LEN, &Setup { sampling_rate: 0.3, ..setup.clone() }).unwrap();
            let coin = round.coin().unwrap();
            assert_eq!(coin.rate, 0.3);
            coin.included
        })
        .count();
    assert!((124..=236).contains(&kept), "{kept} of 600 kept at 0.3");
}

#[test]
fn malformed_or_oversized_stage_messages_are_refused_before_decoding() {
    let huge = vec![0u8; wire::MAX_MESSAGE_BYTES + 1];
    assert!(matches!(wire::decode::<Stage>(&huge, wire::MAX_MESSAGE_BYTES), Err(WireError::TooLarge(..))));
    for garbage in [&[0xff, 0xff, 0xff][..], &[0x0a, 0x80][..], &[0x0a, 0x05, 0x01][..]] {
        assert!(matches!(wire::decode::<Stage>(garbage, wire::MAX_MESSAGE_BYTES), Err(WireError::Malformed(_))));
    }
}

#[test]
fn bad_neighbour_keys_are_refused_and_end_the_round() {
    let cases: Vec<Tamper<PeerKeys>> = vec![
        ("a stranger", Box::new(|p| p.push(PeerKeys { node: 99, keys: p[0].keys.clone() }))),
        ("twice", Box::new(|p| p.push(p[0].clone()))),
        ("too few", Box::new(|p| p.truncate(7))),
        ("a short key", Box::new(|p| p[0].keys.as_mut().unwrap().channel.truncate(31))),
        ("no key", Box::new(|p| p[0].keys = None)),
    ];
    for (what, tamper) in cases {
        let mut c = cohort_after_setup();
        let mut peers = peers_of(&c.keys, 1);
        tamper(&mut peers);
        let round = c.rounds.get_mut(&1).unwrap();
        let refusal = round.share_keys(&peers).unwrap_err();
        assert!(matches!(refusal, Refusal::Neighbours(_) | Refusal::TooFewPeers { .. }), "{what}: {refusal:?}");
        // Nothing more from this round, even the honest message.
        assert_eq!(round.share_keys(&peers_of(&c.keys, 1)), Err(Refusal::Aborted), "{what}");
    }
    // A low-order point as a neighbour's key gives no secret.
    let mut c = cohort_after_setup();
    let mut peers = peers_of(&c.keys, 1);
    peers[0].keys.as_mut().unwrap().channel = vec![0; 32];
    let refusal = c.rounds.get_mut(&1).unwrap().share_keys(&peers).unwrap_err();
    assert_eq!(refusal, Refusal::Key(KeyError::NotContributory));
}

#[test]
fn shares_that_are_tampered_misaddressed_or_too_few_are_refused() {
    let cases: Vec<Tamper<SealedShare>> = vec![
        ("tampered", Box::new(|s| s[0].ciphertext[3] ^= 1)),
        ("for another", Box::new(|s| s[0].dst = 5)),
        ("relabelled sender", Box::new(|s| s[0].src = s[1].src)),
        ("from a stranger", Box::new(|s| s[0].src = 99)),
        ("too few", Box::new(|s| s.truncate(7))),
    ];
    for (what, tamper) in cases {
        let mut c = cohort_after_shares();
        let mut shares = c.inbox[&1].clone();
        tamper(&mut shares);
        let round = c.rounds.get_mut(&1).unwrap();
        let refusal = round.masked_input(&shares, &[0.01; LEN]).unwrap_err();
        assert!(matches!(refusal, Refusal::BadShare(_) | Refusal::TooFewPeers { .. }), "{what}: {refusal:?}");
        assert_eq!(round.masked_input(&c.inbox[&1].clone(), &[0.01; LEN]), Err(Refusal::Aborted));
    }
    // An update longer than the model's, or above the clip norm.
    let mut c = cohort_after_shares();
    let shares = c.inbox[&1].clone();
    let refusal = c.rounds.get_mut(&1).unwrap().masked_input(&shares, &[0.01; LEN + 1]).unwrap_err();
    assert!(matches!(refusal, Refusal::VectorLength { .. }));
    let mut c = cohort_after_shares();
    let shares = c.inbox[&1].clone();
    let refusal = c.rounds.get_mut(&1).unwrap().masked_input(&shares, &[2.0; LEN]).unwrap_err();
    assert!(matches!(refusal, Refusal::Quantization(_)));
}

#[test]
fn both_shares_of_one_neighbour_are_never_revealed() {
    let others: Vec<u64> = (2..=N).collect();
    // The same node among the survivors and the dropped.
    let mut c = cohort_after_masked();
    let round = c.rounds.get_mut(&1).unwrap();
    let both = Unmask { survivors: others.clone(), dropped: vec![2] };
    assert_eq!(round.unmask(&both), Err(Refusal::BothShares(2)));
    // Asked once as survivors, then again as dropped: the second is refused.
    let mut c = cohort_after_masked();
    let round = c.rounds.get_mut(&1).unwrap();
    let revealed = round.unmask(&Unmask { survivors: others.clone(), dropped: vec![] }).unwrap();
    assert_eq!(revealed.shares.len(), others.len());
    let again = Unmask { survivors: others[..9].to_vec(), dropped: others[9..].to_vec() };
    assert!(matches!(round.unmask(&again), Err(Refusal::OutOfOrder { .. })));
    assert_eq!(round.unmask(&again), Err(Refusal::Aborted));
}

#[test]
fn survivor_lists_that_do_not_match_or_are_too_short_are_refused() {
    let others: Vec<u64> = (2..=N).collect();
    let cases = [
        ("one left out", Unmask { survivors: others[1..].to_vec(), dropped: vec![] }),
        ("a stranger", Unmask { survivors: others.clone(), dropped: vec![99] }),
        ("listed twice", Unmask { survivors: [others.clone(), vec![2]].concat(), dropped: vec![] }),
        ("too few survivors", Unmask { survivors: others[..7].to_vec(), dropped: others[7..].to_vec() }),
    ];
    for (what, unmask) in cases {
        let mut c = cohort_after_masked();
        let refusal = c.rounds.get_mut(&1).unwrap().unmask(&unmask).unwrap_err();
        assert!(
            matches!(refusal, Refusal::InconsistentNeighbours | Refusal::TooFewPeers { .. }),
            "{what}: {refusal:?}"
        );
    }
}

#[test]
fn stages_out_of_order_are_refused() {
    let mut c = cohort_after_setup();
    let round = c.rounds.get_mut(&1).unwrap();
    assert!(matches!(round.masked_input(&[], &[0.0; LEN]), Err(Refusal::OutOfOrder { .. })));
    let mut c = cohort_after_setup();
    let round = c.rounds.get_mut(&1).unwrap();
    assert!(matches!(round.unmask(&Unmask::default()), Err(Refusal::OutOfOrder { .. })));
}
