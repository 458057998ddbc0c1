//! The Fleet API's protobuf messages, written by hand to match the
//! descriptors of the pinned `flwr` wheel (`flwr/proto/{fleet,message,node,
//! recorddict,heartbeat,error}.proto`, package `flwr.proto`). Only the
//! messages and fields a device uses are here; unknown fields in a reply are
//! skipped by prost, as by any protobuf decoder.
//!
//! Fields are declared in tag order: prost encodes in declaration order, and
//! the Message object's id is the SHA-256 of its encoding, so it must be the
//! canonical (tag-ordered) one that the Python side also makes.

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct Node {
    #[prost(uint64, tag = "1")]
    pub node_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct RegisterNodeFleetRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub public_key: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RegisterNodeFleetResponse {
    #[prost(uint64, tag = "1")]
    pub node_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ActivateNodeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub public_key: Vec<u8>,
    #[prost(double, tag = "2")]
    pub heartbeat_interval: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ActivateNodeResponse {
    #[prost(uint64, tag = "1")]
    pub node_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct DeactivateNodeRequest {
    #[prost(uint64, tag = "1")]
    pub node_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct DeactivateNodeResponse {}

#[derive(Clone, PartialEq, Message)]
pub struct SendNodeHeartbeatRequest {
    #[prost(message, optional, tag = "1")]
    pub node: Option<Node>,
    #[prost(double, tag = "2")]
    pub heartbeat_interval: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct SendNodeHeartbeatResponse {
    #[prost(bool, tag = "1")]
    pub success: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct PullMessagesRequest {
    #[prost(message, optional, tag = "1")]
    pub node: Option<Node>,
    #[prost(string, repeated, tag = "2")]
    pub message_ids: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Reconnect {
    #[prost(uint64, tag = "1")]
    pub reconnect: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct PullMessagesResponse {
    #[prost(message, optional, tag = "1")]
    pub reconnect: Option<Reconnect>,
    #[prost(message, repeated, tag = "2")]
    pub messages_list: Vec<ProtoMessage>,
    #[prost(message, repeated, tag = "3")]
    pub message_object_trees: Vec<ObjectTree>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PushMessagesRequest {
    #[prost(message, optional, tag = "1")]
    pub node: Option<Node>,
    #[prost(message, repeated, tag = "2")]
    pub messages_list: Vec<ProtoMessage>,
    #[prost(message, repeated, tag = "3")]
    pub message_object_trees: Vec<ObjectTree>,
    #[prost(double, repeated, tag = "4")]
    pub clientapp_runtime_list: Vec<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PushMessagesResponse {
    #[prost(message, optional, tag = "1")]
    pub reconnect: Option<Reconnect>,
    #[prost(map = "string, uint32", tag = "2")]
    pub results: std::collections::HashMap<String, u32>,
    #[prost(string, repeated, tag = "3")]
    pub objects_to_push: Vec<String>,
    #[prost(string, tag = "4")]
    pub session_id: String,
}

/// `flwr.proto.Message`. On the wire of Pull/PushMessages it carries only
/// metadata: the content travels as content-addressed objects.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoMessage {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    #[prost(message, optional, tag = "2")]
    pub content: Option<RecordDict>,
    #[prost(message, optional, tag = "3")]
    pub error: Option<ProtoError>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Metadata {
    #[prost(uint64, tag = "1")]
    pub run_id: u64,
    #[prost(string, tag = "2")]
    pub message_id: String,
    #[prost(uint64, tag = "3")]
    pub src_node_id: u64,
    #[prost(uint64, tag = "4")]
    pub dst_node_id: u64,
    #[prost(string, tag = "5")]
    pub reply_to_message_id: String,
    #[prost(string, tag = "6")]
    pub group_id: String,
    #[prost(double, tag = "7")]
    pub ttl: f64,
    #[prost(string, tag = "8")]
    pub message_type: String,
    #[prost(double, tag = "9")]
    pub created_at: f64,
    #[prost(uint64, optional, tag = "10")]
    pub src_task_id: Option<u64>,
    #[prost(uint64, optional, tag = "11")]
    pub dst_task_id: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoError {
    #[prost(sint64, tag = "1")]
    pub code: i64,
    #[prost(string, tag = "2")]
    pub reason: String,
}

/// Only ever empty on the wire here (content is sent as objects); declared
/// so `ProtoMessage` matches the descriptor.
#[derive(Clone, PartialEq, Message)]
pub struct RecordDict {}

#[derive(Clone, PartialEq, Message)]
pub struct ObjectTree {
    #[prost(string, tag = "1")]
    pub object_id: String,
    #[prost(message, repeated, tag = "2")]
    pub children: Vec<ObjectTree>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PushObjectRequest {
    #[prost(message, optional, tag = "1")]
    pub node: Option<Node>,
    #[prost(uint64, tag = "2")]
    pub run_id: u64,
    #[prost(string, tag = "3")]
    pub object_id: String,
    #[prost(bytes = "vec", tag = "4")]
    pub object_content: Vec<u8>,
    #[prost(string, tag = "5")]
    pub session_id: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct PushObjectResponse {
    #[prost(bool, tag = "1")]
    pub stored: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct PullObjectRequest {
    #[prost(message, optional, tag = "1")]
    pub node: Option<Node>,
    #[prost(uint64, tag = "2")]
    pub run_id: u64,
    #[prost(string, tag = "3")]
    pub object_id: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct PullObjectResponse {
    #[prost(bool, tag = "1")]
    pub object_found: bool,
    #[prost(bool, tag = "2")]
    pub object_available: bool,
    #[prost(bytes = "vec", tag = "3")]
    pub object_content: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ConfirmMessageReceivedRequest {
    #[prost(message, optional, tag = "1")]
    pub node: Option<Node>,
    #[prost(uint64, tag = "2")]
    pub run_id: u64,
    #[prost(string, tag = "3")]
    pub message_object_id: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ConfirmMessageReceivedResponse {}

// Record values, as the ConfigRecord and MetricRecord objects' bodies hold
// them (`flwr/proto/recorddict.proto`).

#[derive(Clone, PartialEq, Message)]
pub struct DoubleList {
    #[prost(double, repeated, tag = "1")]
    pub vals: Vec<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SintList {
    #[prost(sint64, repeated, tag = "1")]
    pub vals: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct UintList {
    #[prost(uint64, repeated, tag = "1")]
    pub vals: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct BoolList {
    #[prost(bool, repeated, tag = "1")]
    pub vals: Vec<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringList {
    #[prost(string, repeated, tag = "1")]
    pub vals: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct BytesList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub vals: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ConfigRecordValue {
    #[prost(oneof = "config_value::Value", tags = "1, 2, 3, 4, 5, 6, 21, 22, 23, 24, 25, 26")]
    pub value: Option<config_value::Value>,
}

pub mod config_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(double, tag = "1")]
        Double(f64),
        #[prost(sint64, tag = "2")]
        Sint64(i64),
        #[prost(uint64, tag = "3")]
        Uint64(u64),
        #[prost(bool, tag = "4")]
        Bool(bool),
        #[prost(string, tag = "5")]
        String(String),
        #[prost(bytes, tag = "6")]
        Bytes(Vec<u8>),
        #[prost(message, tag = "21")]
        DoubleList(super::DoubleList),
        #[prost(message, tag = "22")]
        SintList(super::SintList),
        #[prost(message, tag = "23")]
        UintList(super::UintList),
        #[prost(message, tag = "24")]
        BoolList(super::BoolList),
        #[prost(message, tag = "25")]
        StringList(super::StringList),
        #[prost(message, tag = "26")]
        BytesList(super::BytesList),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct ConfigRecordItem {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ConfigRecordValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ConfigRecord {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<ConfigRecordItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetricRecordValue {
    #[prost(oneof = "metric_value::Value", tags = "1, 2, 3, 21, 22, 23")]
    pub value: Option<metric_value::Value>,
}

pub mod metric_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(double, tag = "1")]
        Double(f64),
        #[prost(sint64, tag = "2")]
        Sint64(i64),
        #[prost(uint64, tag = "3")]
        Uint64(u64),
        #[prost(message, tag = "21")]
        DoubleList(super::DoubleList),
        #[prost(message, tag = "22")]
        SintList(super::SintList),
        #[prost(message, tag = "23")]
        UintList(super::UintList),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct MetricRecordItem {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<MetricRecordValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetricRecord {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<MetricRecordItem>,
}
