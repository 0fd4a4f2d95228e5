//! The catalog of arbor's metrics (WIP for issue 7): every `arbor_*` metric with its kind,
//! labels, unit and meaning, in one place. The crates record through the `metrics` facade with
//! these names; [`describe`] registers the descriptions with whatever recorder the host
//! installed (arbor's own Prometheus exporter, or the host's).
//!
//! Label cardinality: labels take values from small fixed sets (`outcome`, `stage`, `verdict`,
//! `supervisor` paths the host declared), except `agent`, which is added only when the operator
//! enables it ([`set_agent_labels`]) — a host with 10,000 agents would otherwise export 10,000
//! series per per-agent metric.

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
    MESSAGES_IN = "arbor_messages_in_total", Counter, ["outcome"], Count,
        "Inputs handled by agents, by outcome (applied, refused, crashed, rejected before the journal).";
    MESSAGES_OUT = "arbor_messages_out_total", Counter, [], Count,
        "Sends delivered from agents to agents.";
    HANDLE_SECONDS = "arbor_handle_seconds", Histogram, [], Seconds,
        "Time an agent's behaviour took to handle one input (the handle call, not journaling).";
    TRAPS = "arbor_traps_total", Counter, [], Count,
        "Inputs that crashed an agent's behaviour (traps, deadline, fuel, memory cap).";
    MAILBOX_FULL = "arbor_mailbox_full_total", Counter, [], Count,
        "Inputs refused because the agent's mailbox was full.";
    WAL_RECORDS = "arbor_wal_records_total", Counter, [], Count,
        "Records written to the WAL.";
    WAL_BYTES = "arbor_wal_bytes_total", Counter, [], Bytes,
        "Bytes written to the WAL (frames included).";
    WAL_FSYNC_SECONDS = "arbor_wal_fsync_seconds", Histogram, [], Seconds,
        "Time one fdatasync of the WAL took.";
    WAL_SEGMENTS_CREATED = "arbor_wal_segments_created_total", Counter, [], Count,
        "WAL segments created (rotations).";
}

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

/// Registers every metric's unit and description with the installed recorder.
pub fn describe() {
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
    use super::*;

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
