//! A scripted SuperLink for the Fleet client's tests: one train message,
//! objects served from a map a test may tamper with, every request logged.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hearth_core::federated::objects::{self, Deflated};
use hearth_core::federated::proto;
use hearth_core::federated::*;
use prost::Message;

pub type Log = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

pub fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The config of a round: C, one local epoch, round 1.
pub fn round_config(clip: f64) -> Vec<(String, ConfigValue)> {
    vec![
        ("clip-norm".into(), ConfigValue::Double(clip)),
        ("local-epochs".into(), ConfigValue::Int(1)),
        ("server-round".into(), ConfigValue::Int(1)),
    ]
}

/// A train message as a SuperLink would hold it.
pub fn train_message(node_id: u64, arrays: Vec<(String, F32Array)>, clip: f64) -> (proto::Metadata, Deflated) {
    train_message_with(node_id, arrays, round_config(clip))
}

/// A train message with the given config.
pub fn train_message_with(
    node_id: u64,
    arrays: Vec<(String, F32Array)>,
    config: Vec<(String, ConfigValue)>,
) -> (proto::Metadata, Deflated) {
    let content = vec![("arrays".to_string(), Record::Arrays(arrays)), ("config".to_string(), Record::Config(config))];
    message_with(node_id, content)
}

/// A train message for `node_id` with any content.
pub fn message_with(node_id: u64, content: Vec<(String, Record)>) -> (proto::Metadata, Deflated) {
    let mut meta = proto::Metadata {
        run_id: 5,
        src_node_id: 1,
        dst_node_id: node_id,
        group_id: "1".into(),
        ttl: 600.0,
        message_type: "train".into(),
        created_at: now_secs(),
        ..Default::default()
    };
    let d = objects::deflate_message(&meta, &content);
    meta.message_id = d.message_id().to_string();
    (meta, d)
}

/// Every object id of a message's tree.
pub fn tree_ids(tree: &proto::ObjectTree) -> Vec<String> {
    let mut ids = Vec::new();
    let mut stack = vec![tree];
    while let Some(t) = stack.pop() {
        ids.push(t.object_id.clone());
        stack.extend(t.children.iter());
    }
    ids
}

pub fn small_arrays() -> Vec<(String, F32Array)> {
    vec![
        ("w".into(), F32Array { shape: vec![3, 2], data: vec![0.5; 6] }),
        ("b".into(), F32Array { shape: vec![2], data: vec![0.1, 0.2] }),
    ]
}

/// A scripted SuperLink: one train message for node 42, objects served from
/// `objects` (which a test may tamper with), every request logged.
pub struct FakeLink {
    pub meta: proto::Metadata,
    pub tree: proto::ObjectTree,
    pub objects: HashMap<String, Vec<u8>>,
    pub log: Log,
    pub stall: bool,
    /// The first push-messages is stored and its answer lost; the retry
    /// finds the message already taken by the ServerApp and asks for no
    /// object (what flwr 1.42 does), while the objects wait under the first
    /// push's session: only a push-object without a session id stores them.
    pub taken_before_retry: bool,
    pub push_messages_calls: Arc<std::sync::atomic::AtomicUsize>,
    /// This many pull-object calls are answered "found, not uploaded yet"
    /// first (a ServerApp still pushing the objects of a large cohort).
    pub uploading: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeLink {
    pub fn new(arrays: Vec<(String, F32Array)>, clip: f64) -> FakeLink {
        FakeLink::with_config(arrays, round_config(clip))
    }

    pub fn with_config(arrays: Vec<(String, F32Array)>, config: Vec<(String, ConfigValue)>) -> FakeLink {
        let content =
            vec![("arrays".to_string(), Record::Arrays(arrays)), ("config".to_string(), Record::Config(config))];
        FakeLink::with_content(content)
    }

    /// One train message of any content.
    pub fn with_content(content: Vec<(String, Record)>) -> FakeLink {
        let (meta, d) = message_with(42, content);
        let objects = d.objects.iter().map(|o| (o.id.clone(), o.content.clone())).collect();
        FakeLink {
            meta,
            tree: d.tree,
            objects,
            log: Arc::default(),
            stall: false,
            taken_before_retry: false,
            push_messages_calls: Arc::default(),
            uploading: Arc::default(),
        }
    }

    pub fn paths(&self) -> Vec<String> {
        self.log.lock().unwrap().iter().map(|(p, _)| p.clone()).collect()
    }
}

impl Transport for FakeLink {
    fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        assert_eq!(headers.len(), 3, "every request is signed");
        self.log.lock().unwrap().push((path.to_string(), body.to_vec()));
        if self.stall {
            std::thread::sleep(timeout);
            return Err(TransportError::Timeout);
        }
        let name = path.strip_prefix("/v1/fleet/").unwrap();
        Ok(match name {
            "activate-node" => proto::ActivateNodeResponse { node_id: 42 }.encode_to_vec(),
            "deactivate-node" | "confirm-message-received" => Vec::new(),
            "send-node-heartbeat" => proto::SendNodeHeartbeatResponse { success: true }.encode_to_vec(),
            "pull-messages" => proto::PullMessagesResponse {
                reconnect: None,
                messages_list: vec![proto::ProtoMessage {
                    metadata: Some(self.meta.clone()),
                    content: None,
                    error: None,
                }],
                message_object_trees: vec![self.tree.clone()],
            }
            .encode_to_vec(),
            "pull-object" => {
                let req = proto::PullObjectRequest::decode(body).unwrap();
                let content = self.objects.get(&req.object_id).cloned();
                let uploading =
                    self.uploading.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
                let content = content.filter(|_| !uploading);
                proto::PullObjectResponse {
                    object_found: content.is_some() || uploading,
                    object_available: content.is_some(),
                    object_content: content.unwrap_or_default(),
                }
                .encode_to_vec()
            }
            "push-messages" => {
                let req = proto::PushMessagesRequest::decode(body).unwrap();
                let mut ids = tree_ids(&req.message_object_trees[0]);
                let call = self.push_messages_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if self.taken_before_retry {
                    if call == 0 {
                        return Err(TransportError::Timeout);
                    }
                    ids.clear();
                }
                proto::PushMessagesResponse { objects_to_push: ids, session_id: "s".into(), ..Default::default() }
                    .encode_to_vec()
            }
            "push-object" => {
                let req = proto::PushObjectRequest::decode(body).unwrap();
                let stored = !self.taken_before_retry || req.session_id.is_empty();
                proto::PushObjectResponse { stored }.encode_to_vec()
            }
            other => panic!("unexpected call {other}"),
        })
    }
}
