//! The catalog of arbor's metrics: every `arbor_*` metric with its kind,
//! labels, unit and meaning, in one place. The crates record through the `metrics` facade with
//! these names; [`describe`] registers the descriptions with whatever recorder the host
//! installed (arbor's own Prometheus exporter, or the host's).
//!
//! Label cardinality: labels take values from small fixed sets (`outcome`, `stage`, `verdict`,
//! `reason`, `supervisor` paths the host declared), except `agent`, which is added only when the
//! operator enables it ([`set_agent_labels`]) — a host with 10,000 agents would otherwise export
//! 10,000 series per per-agent metric.
//!
//! Cluster mode: the `arbor_cluster_*` metrics describe this node's part in a cluster (the
//! membership it sees, the agents it owns, the leases it claims, hands off and loses, the calls
//! it forwards to other nodes). And every metric, the cluster ones and all others, carries a
//! [`NODE_LABEL`] label with the node's name: a global label of the runtime's Prometheus
//! exporter, one value per process, so it adds no series. A single-node runtime has no `node`
//! label; it exports the cluster counters at zero (as [`describe`] creates every counter) and
//! no cluster gauge. Dashboards and alerts aggregate `by (node)` where a per-node breakdown
//! matters, which a series without the label joins as one group, so the same queries work in
//! both modes.

use std::sync::atomic::{AtomicBool, Ordering};

/// What kind of metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (exported as a Prometheus histogram).
    Histogram,
}

/// One metric of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Its name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// The unit of its values.
    pub unit: metrics::Unit,
    /// What it means.
    pub help: &'static str,
}

macro_rules! catalog {
    ($($ident:ident = $name:literal, $kind:ident, [$($label:literal),*], $unit:ident, $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $ident: &str = $name;
        )*
        /// Every metric arbor records.
        pub const CATALOG: &[Metric] = &[
            $(Metric {
                name: $name,
                kind: Kind::$kind,
                labels: &[$($label),*],
                unit: metrics::Unit::$unit,
                help: $help,
            },)*
        ];
    };
}

catalog! {
    // Traffic.
    MESSAGES_IN = "arbor_messages_in_total", Counter, ["outcome"], Count,
        "Inputs handled by agents, by outcome: applied, refused (the behaviour said no), crashed (trap, deadline, fuel, memory cap).";
    MESSAGES_OUT = "arbor_messages_out_total", Counter, [], Count,
        "Sends delivered from agents to agents.";
    HANDLE_SECONDS = "arbor_handle_seconds", Histogram, [], Seconds,
        "Time an agent's behaviour took to handle one input (the handle call, not journaling).";
    MAILBOX_DEPTH = "arbor_mailbox_depth", Gauge, [], Count,
        "Inputs waiting in all agents' mailboxes (sampled every second).";
    MAILBOX_DEPTH_MAX = "arbor_mailbox_depth_max", Gauge, [], Count,
        "Inputs waiting in the fullest agent mailbox (sampled every second).";
    MAILBOX_FULL = "arbor_mailbox_full_total", Counter, [], Count,
        "Inputs refused because the agent's mailbox was full.";
    AGENTS = "arbor_agents", Gauge, ["state"], Count,
        "Agents in the supervision tree by state: running, restarting, terminated, quarantined (their state could not be recovered; sampled every second).";
    AGENT_QUARANTINES = "arbor_agent_quarantines_total", Counter, [], Count,
        "Agents quarantined because their state could not be recovered (restore trapped or ran past its deadline, journal replay failed, module refused); the host runs without them.";
    // Failures.
    TRAPS = "arbor_traps_total", Counter, [], Count,
        "Inputs that crashed an agent's behaviour (traps, deadline, fuel, memory cap).";
    RESTARTS = "arbor_restarts_total", Counter, ["supervisor"], Count,
        "Children a supervisor restarted after they exited abnormally.";
    SUPERVISOR_INTENSITY = "arbor_supervisor_intensity_ratio", Gauge, ["supervisor"], Count,
        "Restarts within a supervisor's intensity period over the restarts it tolerates; above 1 it gives up (sampled every second).";
    SUPERVISOR_GIVEUPS = "arbor_supervisor_giveups_total", Counter, ["supervisor"], Count,
        "Times a supervisor exceeded its restart intensity, stopped its children and escalated.";
    // Durability.
    WAL_RECORDS = "arbor_wal_records_total", Counter, [], Count,
        "Records written to the WAL.";
    WAL_BYTES = "arbor_wal_bytes_total", Counter, [], Bytes,
        "Bytes written to the WAL (frames included).";
    WAL_FSYNC_SECONDS = "arbor_wal_fsync_seconds", Histogram, [], Seconds,
        "Time one fdatasync of the WAL took.";
    WAL_SEGMENTS_CREATED = "arbor_wal_segments_created_total", Counter, [], Count,
        "WAL segments created (rotations).";
    WAL_SEGMENTS = "arbor_wal_segments", Gauge, [], Count,
        "WAL segments on disk (sampled every second); grows while an agent or a promotion's hold pins old records.";
    CHECKPOINTS = "arbor_checkpoints_total", Counter, [], Count,
        "Agent checkpoints stored in the vault.";
    CHECKPOINT_BYTES = "arbor_checkpoint_bytes", Histogram, [], Bytes,
        "Size of one checkpointed state before compression.";
    CHECKPOINT_SECONDS = "arbor_checkpoint_seconds", Histogram, [], Seconds,
        "Time one checkpoint took: WAL sync, compression and the vault write.";
    CHECKPOINT_AGE_SECONDS = "arbor_checkpoint_age_seconds", Gauge, [], Seconds,
        "Age of the oldest input no checkpoint holds yet, over all agents (0 when every agent is saved; sampled every second). Recovery replays from there.";
    // Modules and evolution.
    MODULE_LOADS = "arbor_module_loads_total", Counter, ["outcome"], Count,
        "Wasm modules offered to the runtime, by outcome: loaded (checked, compiled, stored) or refused.";
    WASM_MODULES_LOADED = "arbor_wasm_modules_loaded", Gauge, [], Count,
        "Compiled Wasm modules held in memory: in use by an agent, shadow or evaluation, or idle in the bounded list of recently released ones (sampled every second). Each costs a file descriptor and mappings; it should not grow with the modules ever loaded.";
    SHADOWS_ACTIVE = "arbor_shadows_active", Gauge, [], Count,
        "Shadow instances (candidates, A/A controls, reverse shadows) alive in replay gates, live evaluations and watches.";
    SHADOW_COMPARISONS = "arbor_shadow_comparisons_total", Counter, [], Count,
        "Inputs compared between a candidate and production's module: replayed by the gate, mirrored to shadows, or watched after a promotion.";
    SHADOW_MISMATCHES = "arbor_shadow_mismatches_total", Counter, ["what"], Count,
        "Comparisons where the candidate differed, by what: reply, sends, tools, state, trap, error or imports.";
    SHADOW_GAPS = "arbor_shadow_gaps_total", Counter, [], Count,
        "Mirrored inputs dropped because a shadow's queue was full (production never waits; the shadows re-seed).";
    VERDICTS = "arbor_verdicts_total", Counter, ["verdict"], Count,
        "Evaluations decided, by verdict: approved, rejected or inconclusive.";
    PROMOTIONS = "arbor_promotions_total", Counter, [], Count,
        "Candidates promoted to production (hot swap with state migration).";
    PROMOTION_PAUSE_SECONDS = "arbor_promotion_pause_seconds", Histogram, [], Seconds,
        "Time an agent's mailbox was paused for a promotion's swap or a rollback's rebuild.";
    ROLLBACKS = "arbor_rollbacks_total", Counter, ["trigger"], Count,
        "Promotions rolled back, by trigger: watch (a regression in the watch window) or operator.";
    EVOLUTION_CYCLES = "arbor_evolution_cycles_total", Counter, [], Count,
        "Cycles of the continuous evolution loop (parents from the archive, candidates from the sources, each through the arbiter).";
    EVOLUTION_CANDIDATES = "arbor_evolution_candidates_total", Counter, ["outcome"], Count,
        "Candidates the evolution loop tried, by how far each got: refused, gate, shadows, approved, promoted, rolled_back, failed.";
    // Operation.
    ADMIN_REQUESTS = "arbor_admin_requests_total", Counter, ["outcome"], Count,
        "Admin API requests by outcome: ok, error (the operation failed) or unauthorized.";
    // Cluster (cluster mode only, but for the counters, which every runtime exports at zero).
    CLUSTER_NODES = "arbor_cluster_nodes", Gauge, [], Count,
        "Live nodes in the cluster's membership as this node sees it, itself included.";
    CLUSTER_AGENTS_OWNED = "arbor_cluster_agents_owned", Gauge, [], Count,
        "Agents this node owns: it holds their lease and runs them.";
    CLUSTER_AGENTS_UNOWNED = "arbor_cluster_agents_unowned", Gauge, [], Count,
        "Agents registered in the cluster that no live node owns, as this node sees them; above 0 only while a failover or a handoff is under way.";
    CLUSTER_CLAIMS = "arbor_cluster_claims_total", Counter, ["reason"], Count,
        "Agent leases this node claimed, by reason: spawn (an agent spawned here), placement (an agent the placement moved here: rebalance, drain) or failover (an agent whose owner was lost).";
    CLUSTER_HANDOFFS = "arbor_cluster_handoffs_total", Counter, [], Count,
        "Agents this node handed to another node gracefully (rebalance or drain).";
    CLUSTER_LEASES_LOST = "arbor_cluster_leases_lost_total", Counter, [], Count,
        "Agents this node stepped down from because their lease was lost or a journal append was fenced (another node claimed them).";
    CLUSTER_REMOTE_CALLS = "arbor_cluster_remote_calls_total", Counter, ["outcome"], Count,
        "Calls this node forwarded to the agent's owner on another node, by outcome: ok, error (the call failed) or unavailable (no owner could be reached).";
    CLUSTER_SHADOWS_HOSTED = "arbor_cluster_shadows_hosted", Gauge, [], Count,
        "Shadow instances this node runs for evaluations whose arbiter is on another node (their agent's owner).";
}

/// The label that carries the node's name in cluster mode, on every metric: the runtime sets
/// it as a global label of its Prometheus exporter. Absent in single-node mode.
pub const NODE_LABEL: &str = "node";

/// The histogram bucket bounds arbor's exporter gives every `*_seconds` metric: 1 µs to 10 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The histogram bucket bounds arbor's exporter gives every `*_bytes` metric: 64 B to 256 MiB.
pub const BYTES_BUCKETS: &[f64] = &[
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
];

static AGENT_LABELS: AtomicBool = AtomicBool::new(false);

/// Adds an `agent` label to the per-agent metrics from now on (off by default: see the crate
/// docs on cardinality).
pub fn set_agent_labels(enabled: bool) {
    AGENT_LABELS.store(enabled, Ordering::Relaxed);
}

/// Whether per-agent metrics carry the `agent` label.
pub fn agent_labels() -> bool {
    AGENT_LABELS.load(Ordering::Relaxed)
}

/// Counters whose labels take a fixed set of values, with those values: [`describe`] creates
/// each series at zero, so the first event is an increase Prometheus can see (a series that
/// first appears at 1 has no increase) and dashboards show 0, not "no data".
const FIXED_SERIES: &[(&str, &str, &[&str])] = &[
    (MESSAGES_IN, "outcome", &["applied", "refused", "crashed"]),
    (MODULE_LOADS, "outcome", &["loaded", "refused"]),
    (
        VERDICTS,
        "verdict",
        &["approved", "rejected", "inconclusive"],
    ),
    (ROLLBACKS, "trigger", &["watch", "operator"]),
    (
        EVOLUTION_CANDIDATES,
        "outcome",
        &[
            "refused",
            "gate",
            "shadows",
            "approved",
            "promoted",
            "rolled_back",
            "failed",
        ],
    ),
    (ADMIN_REQUESTS, "outcome", &["ok", "error", "unauthorized"]),
    (
        CLUSTER_CLAIMS,
        "reason",
        &["spawn", "placement", "failover"],
    ),
    (
        CLUSTER_REMOTE_CALLS,
        "outcome",
        &["ok", "error", "unavailable"],
    ),
];

/// Registers every metric's unit and description with the installed recorder, and creates the
/// counters without labels and those whose labels take a fixed set of values at zero.
pub fn describe() {
    for metric in CATALOG {
        if metric.kind == Kind::Counter && metric.labels.is_empty() {
            metrics::counter!(metric.name).increment(0);
        }
    }
    for (name, label, values) in FIXED_SERIES {
        for value in *values {
            metrics::counter!(*name, *label => *value).increment(0);
        }
    }
    for metric in CATALOG {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.unit, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.unit, metric.help),
            Kind::Histogram => {
                metrics::describe_histogram!(metric.name, metric.unit, metric.help)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fixed_series_are_labelled_counters_of_the_catalog() {
        for (name, label, _) in FIXED_SERIES {
            let metric = CATALOG.iter().find(|m| m.name == *name).unwrap();
            assert_eq!(metric.kind, Kind::Counter, "{name}");
            assert_eq!(metric.labels, &[*label], "{name}");
        }
    }

    #[test]
    fn the_node_label_is_global_not_declared_by_a_metric() {
        for metric in CATALOG {
            assert!(!metric.labels.contains(&NODE_LABEL), "{}", metric.name);
        }
    }

    #[test]
    fn names_are_unique_prefixed_and_suffixed_by_kind() {
        let mut names: Vec<&str> = CATALOG.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
        for metric in CATALOG {
            assert!(metric.name.starts_with("arbor_"), "{}", metric.name);
            if metric.kind == Kind::Counter {
                assert!(metric.name.ends_with("_total"), "{}", metric.name);
            }
        }
    }
}
