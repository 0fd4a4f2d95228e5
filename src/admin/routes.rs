//! The admin API's routes, named once: the server mounts these patterns and the HTTP client
//! fills them in, so the two cannot drift apart.

use std::fmt::Display;

/// `GET`: [`Status`](super::api::Status).
pub(crate) const STATUS: &str = "/v1/status";
/// `GET`: every [`AgentRow`](super::api::AgentRow).
pub(crate) const AGENTS: &str = "/v1/agents";
/// `POST`: forgets an agent that is not running.
pub(crate) const AGENT_REMOVE: &str = "/v1/agents/{agent}/remove";
/// `GET`: an agent's checkpoints.
pub(crate) const CHECKPOINTS: &str = "/v1/agents/{agent}/checkpoints";
/// `GET`: one checkpoint with its state.
pub(crate) const CHECKPOINT: &str = "/v1/agents/{agent}/checkpoints/{lsn}";
/// `GET`: one checkpoint as an export file (`application/octet-stream`).
pub(crate) const CHECKPOINT_EXPORT: &str = "/v1/agents/{agent}/checkpoints/{lsn}/export";
/// `POST ?after=replay|discard[&lsn=N]`: restores an agent (without `lsn`, the body is an
/// export file).
pub(crate) const RESTORE: &str = "/v1/agents/{agent}/restore";
/// `GET`: the evaluation; `POST ?module=HASH` or `?name=LABEL` with the module as the body
/// (and `author`, `description`, `options`): starts one.
pub(crate) const EVOLUTION: &str = "/v1/agents/{agent}/evolution";
/// `POST`: promotes the approved candidate.
pub(crate) const EVOLUTION_PROMOTE: &str = "/v1/agents/{agent}/evolution/promote";
/// `POST ?reason=TEXT`: rolls the watched promotion back.
pub(crate) const EVOLUTION_ROLLBACK: &str = "/v1/agents/{agent}/evolution/rollback";
/// `POST`: stops the evaluation or watch.
pub(crate) const EVOLUTION_CANCEL: &str = "/v1/agents/{agent}/evolution/cancel";
/// POST `?reason=`: accept a rejected candidate.
pub(crate) const EVOLUTION_ACCEPT: &str = "/v1/agents/{agent}/evolution/accept";
/// `GET`: the agent's evolution loop; `POST ?spec=JSON` (a `LoopSpec`): starts one.
pub(crate) const EVOLUTION_LOOP: &str = "/v1/agents/{agent}/evolution/loop";
/// `POST`: stops the agent's evolution loop.
pub(crate) const EVOLUTION_LOOP_STOP: &str = "/v1/agents/{agent}/evolution/loop/stop";
/// `GET`: the agent's evolution archive.
pub(crate) const EVOLUTION_ARCHIVE: &str = "/v1/agents/{agent}/evolution/archive";
/// `GET`: the agent's lineage.
pub(crate) const LINEAGE: &str = "/v1/agents/{agent}/lineage";
/// `GET`: a check of every WAL segment.
pub(crate) const WAL_VERIFY: &str = "/v1/wal/verify";
/// `GET ?from=LSN&limit=N[&agent=NAME]`: decoded WAL records.
pub(crate) const WAL_RECORDS: &str = "/v1/wal/records";
/// `GET`: stored modules; `POST ?name=LABEL` with the module as the body: adds one.
pub(crate) const MODULES: &str = "/v1/modules";
/// `GET`: the cluster as the answering node sees it ([`ClusterStatus`](crate::ClusterStatus)).
pub(crate) const CLUSTER: &str = "/v1/cluster";

/// `pattern` with its `{…}` segments replaced by `values`, in order.
pub(crate) fn path(pattern: &str, values: &[&(dyn Display + Sync)]) -> String {
    let mut values = values.iter();
    let filled: Vec<String> = pattern
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                values.next().map_or_else(String::new, ToString::to_string)
            } else {
                segment.to_string()
            }
        })
        .collect();
    // Our bug, not the caller's input: a route takes exactly its placeholders.
    debug_assert!(values.next().is_none(), "{pattern}: too many values");
    filled.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fill_their_segments_in_order() {
        assert_eq!(path(STATUS, &[]), "/v1/status");
        assert_eq!(
            path(CHECKPOINT_EXPORT, &[&"kv", &42u64]),
            "/v1/agents/kv/checkpoints/42/export"
        );
        assert_eq!(path(LINEAGE, &[&"kv"]), "/v1/agents/kv/lineage");
        assert_eq!(path(CLUSTER, &[]), "/v1/cluster");
    }
}
