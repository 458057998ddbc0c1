//! A secure-aggregation round in process: the coordinator's half of the
//! protocol (`hearth_secagg::CoordinatorRound`) and honest devices, with one
//! Hearth device among them served through the Fleet API as a SuperLink
//! would serve it. Each stage message for the device is made only once its
//! reply to the one before has been read, so the device's own answers
//! drive the round; every request it makes is logged.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_core::federated::objects::{ConfigValue, Deflated, Record};
use hearth_core::federated::proto;
use hearth_core::federated::*;
use hearth_secagg::wire::{self, Reply, ReplyBody, Stage, StageBody};
use hearth_secagg::{Aggregate, CoordinatorRound, DevicePolicy, DeviceRound, RoundConfig, RoundStage};
use prost::Message;

use super::flower::pushed_replies;
use super::superlink::{Log, message_with, tree_ids};

/// The Hearth device's node id.
pub const DEVICE: u64 = 1;

/// The round: a transport for the Hearth device, and what the coordinator
/// made of it.
#[derive(Clone)]
pub struct SecureRound {
    state: Arc<Mutex<State>>,
    pub log: Log,
}

struct State {
    coordinator: Option<CoordinatorRound>,
    config: RoundConfig,
    others: BTreeMap<u64, DeviceRound>,
    /// What each honest device sums.
    vector: Vec<f32>,
    /// The device's message for this stage, until it pulls it.
    waiting: Option<(proto::Metadata, Deflated)>,
    objects: HashMap<String, Vec<u8>>,
    /// The masked-input stage's message also carries these (the arrays and
    /// the config of a plain round).
    masked_input: Vec<(String, Record)>,
    /// The stage whose message the device has (0 setup ... 3 unmask).
    stage: usize,
    /// Replies of the device read so far.
    read: usize,
    aggregate: Option<Aggregate>,
    /// Replies of the device the coordinator refused.
    refused: Vec<String>,
}

impl SecureRound {
    /// A round of `n` devices (node ids 1 to n) under `config`, the honest
    /// ones each summing `vector`; the masked-input message carries
    /// `masked_input` besides the stage.
    pub fn new(config: RoundConfig, n: u64, vector: Vec<f32>, masked_input: Vec<(String, Record)>) -> SecureRound {
        let cohort: Vec<u64> = (1..=n).collect();
        let coordinator = CoordinatorRound::new(config.clone(), &cohort).expect("an honest round's terms");
        let state = State {
            coordinator: Some(coordinator),
            config,
            others: BTreeMap::new(),
            vector,
            waiting: None,
            objects: HashMap::new(),
            masked_input,
            stage: 0,
            read: 0,
            aggregate: None,
            refused: Vec::new(),
        };
        let round = SecureRound { state: Arc::new(Mutex::new(state)), log: Arc::default() };
        round.state.lock().unwrap().advance();
        round
    }

    /// The coordinator's sum, once the device's last reply is read (None
    /// when the round did not finish).
    pub fn aggregate(&self) -> Option<Aggregate> {
        let mut state = self.state.lock().unwrap();
        state.read_replies(&self.log);
        state.aggregate.clone()
    }

    /// The stage the device reached, and the coordinator's refusals of its
    /// replies.
    pub fn reached(&self) -> (usize, Vec<String>) {
        let state = self.state.lock().unwrap();
        (state.stage, state.refused.clone())
    }
}

impl State {
    /// The next stage: the coordinator's messages, the honest devices'
    /// answers, the Hearth device's message waiting for it.
    fn advance(&mut self) {
        let Some(coordinator) = self.coordinator.as_mut() else { return };
        let messages = coordinator.advance().expect("the next stage");
        for (&node, message) in messages.iter().filter(|(n, _)| **n != DEVICE) {
            let reply = self.answer(node, message);
            self.coordinator.as_mut().unwrap().receive(node, &reply).expect("an honest reply");
        }
        let mut content = vec![(
            "hearth.secagg".to_string(),
            Record::Config(vec![("stage".into(), ConfigValue::Bytes(messages[&DEVICE].clone()))]),
        )];
        if matches!(self.coordinator.as_ref().unwrap().stage(), RoundStage::Masked) {
            content.extend(self.masked_input.iter().cloned());
        }
        let (meta, deflated) = message_with(DEVICE, content);
        self.objects = deflated.objects.iter().map(|o| (o.id.clone(), o.content.clone())).collect();
        self.waiting = Some((meta, deflated));
    }

    fn answer(&mut self, node: u64, message: &[u8]) -> Vec<u8> {
        let stage: Stage = wire::decode(message, usize::MAX).unwrap();
        let policy = DevicePolicy { min_cohort: 3, ..DevicePolicy::default() };
        let body = match stage.body.expect("a stage") {
            StageBody::Setup(setup) => {
                let (round, keys) = DeviceRound::setup(&policy, node, self.config.vector_len, &setup).unwrap();
                self.others.insert(node, round);
                ReplyBody::Keys(keys)
            }
            StageBody::ShareKeys(keys) => {
                ReplyBody::Shares(self.others.get_mut(&node).unwrap().share_keys(&keys.peers).unwrap())
            }
            StageBody::MaskedInput(shares) => {
                let round = self.others.get_mut(&node).unwrap();
                ReplyBody::Masked(round.masked_input(&shares.shares, &self.vector).unwrap())
            }
            StageBody::Unmask(unmask) => {
                ReplyBody::Revealed(self.others.get_mut(&node).unwrap().unmask(&unmask).unwrap())
            }
        };
        Reply { body: Some(body) }.encode_to_vec()
    }

    /// Hands the device's new replies to the coordinator; after each, the
    /// next stage (or, after the unmask stage, the sum).
    fn read_replies(&mut self, log: &Log) {
        let replies = pushed_replies(&log.lock().unwrap());
        for content in replies.into_iter().skip(self.read) {
            self.read += 1;
            let Some((_, Record::Config(values))) = content.first() else { continue };
            let Some((_, ConfigValue::Bytes(bytes))) = values.first() else { continue };
            let Some(coordinator) = self.coordinator.as_mut() else { continue };
            if let Err(e) = coordinator.receive(DEVICE, bytes) {
                self.refused.push(format!("{e:?}"));
                continue;
            }
            if matches!(coordinator.stage(), RoundStage::Unmask) {
                self.aggregate = self.coordinator.take().unwrap().finish().ok();
            } else {
                self.stage += 1;
                self.advance();
            }
        }
    }
}

impl Transport for SecureRound {
    fn post(
        &self,
        path: &str,
        _headers: &[(String, String)],
        body: &[u8],
        _timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        self.log.lock().unwrap().push((path.to_string(), body.to_vec()));
        let mut state = self.state.lock().unwrap();
        let name = path.strip_prefix("/v1/fleet/").unwrap();
        Ok(match name {
            "activate-node" => proto::ActivateNodeResponse { node_id: DEVICE }.encode_to_vec(),
            "deactivate-node" | "confirm-message-received" => Vec::new(),
            "send-node-heartbeat" => proto::SendNodeHeartbeatResponse { success: true }.encode_to_vec(),
            "pull-messages" => {
                state.read_replies(&self.log);
                let (messages_list, message_object_trees) = match state.waiting.take() {
                    Some((meta, deflated)) => (
                        vec![proto::ProtoMessage { metadata: Some(meta), content: None, error: None }],
                        vec![deflated.tree],
                    ),
                    None => (Vec::new(), Vec::new()),
                };
                proto::PullMessagesResponse { reconnect: None, messages_list, message_object_trees }.encode_to_vec()
            }
            "pull-object" => {
                let req = proto::PullObjectRequest::decode(body).unwrap();
                let content = state.objects.get(&req.object_id).cloned();
                proto::PullObjectResponse {
                    object_found: content.is_some(),
                    object_available: content.is_some(),
                    object_content: content.unwrap_or_default(),
                }
                .encode_to_vec()
            }
            "push-messages" => {
                let req = proto::PushMessagesRequest::decode(body).unwrap();
                let ids = req.message_object_trees.iter().flat_map(tree_ids).collect();
                proto::PushMessagesResponse { objects_to_push: ids, session_id: "s".into(), ..Default::default() }
                    .encode_to_vec()
            }
            "push-object" => proto::PushObjectResponse { stored: true }.encode_to_vec(),
            other => panic!("unexpected call {other}"),
        })
    }
}
