//! Helpers shared by the Wasm host's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::OnceLock;

use arbor_agent::wasm::{EngineConfig, WasmHost};

/// The test binary's one engine, with a pool of `max_instances` slots (fixed by the first call).
pub fn shared_host(max_instances: u32) -> &'static WasmHost {
    static HOST: OnceLock<WasmHost> = OnceLock::new();
    HOST.get_or_init(|| {
        WasmHost::new(EngineConfig {
            max_instances,
            ..EngineConfig::default()
        })
        .unwrap()
    })
}

/// counter's messages (and the native `Tally`'s, which speaks the same protocol).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum CounterMsg {
    Inc { by: i64 },
    Get,
    Reset,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CounterReply {
    pub count: i64,
}

/// kv's messages (the `kv-store` protocol).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum KvMsg {
    Get { key: String },
    Put { key: String, value: String },
    Delete { key: String },
    Scan { prefix: String, limit: u32 },
}

impl KvMsg {
    /// `Put { key, value }`.
    pub fn put(key: impl Into<String>, value: impl Into<String>) -> KvMsg {
        KvMsg::Put {
            key: key.into(),
            value: value.into(),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: String,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum KvReply {
    Value { value: Option<String> },
    Stored { replaced: bool },
    Deleted { existed: bool },
    Entries { entries: Vec<KvEntry> },
}

/// A native counter speaking counter's protocol; its state is `{"count": i64}` like counter's.
#[derive(Default)]
pub struct Tally {
    count: i64,
}

impl arbor_agent::Behaviour for Tally {
    fn handle(
        &mut self,
        input: &[u8],
        _host: &mut arbor_agent::Host,
    ) -> Result<Vec<u8>, arbor_agent::BehaviourError> {
        let message: CounterMsg = rmp_serde::from_slice(input)
            .map_err(|e| arbor_agent::BehaviourError::BadInput(e.to_string()))?;
        match message {
            CounterMsg::Inc { by } => self.count = self.count.wrapping_add(by),
            CounterMsg::Get => {}
            CounterMsg::Reset => self.count = 0,
        }
        Ok(rmp_serde::to_vec_named(&CounterReply { count: self.count }).unwrap())
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, arbor_agent::BehaviourError> {
        Ok(rmp_serde::to_vec_named(&CounterReply { count: self.count }).unwrap())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), arbor_agent::BehaviourError> {
        let state: CounterReply = rmp_serde::from_slice(state)
            .map_err(|e| arbor_agent::BehaviourError::StateRejected(e.to_string()))?;
        self.count = state.count;
        Ok(())
    }

    fn describe(&self) -> String {
        "native:tally".into()
    }
}

/// A counter agent's count (`Get`).
pub async fn count(agent: &arbor_agent::AgentRef) -> i64 {
    let reply: CounterReply = agent.call_msg(&CounterMsg::Get).await.unwrap();
    reply.count
}

/// Every entry of a kv agent.
pub async fn kv_entries(
    agent: &arbor_agent::AgentRef,
) -> std::collections::BTreeMap<String, String> {
    let reply: KvReply = agent
        .call_msg(&KvMsg::Scan {
            prefix: String::new(),
            limit: u32::MAX,
        })
        .await
        .unwrap();
    match reply {
        KvReply::Entries { entries } => entries.into_iter().map(|e| (e.key, e.value)).collect(),
        other => panic!("scan answered {other:?}"),
    }
}
