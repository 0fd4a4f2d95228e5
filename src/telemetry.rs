//! arbor's Prometheus exporter: one process-wide recorder (the `metrics` facade allows one),
//! `/metrics` served on the address the host chose, and the gauges only a reading can give,
//! sampled every second.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{OnceLock, Weak};
use std::time::Duration;

use arbor_supervisor::{ChildState, SupervisorTree};
use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::Error;
use crate::runtime::Inner;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder: installed on first use (histograms with buckets, every
/// catalog metric described), shared by every later runtime of the process. Fails if the
/// host installed another recorder first (arbor's metrics then go to that one).
/// The process's Prometheus recorder (installed on first use); `node` labels every metric
/// (cluster mode) when this call installs it.
pub(crate) fn prometheus(node: Option<&str>) -> Result<PrometheusHandle, Error> {
    if let Some(handle) = PROMETHEUS.get() {
        return Ok(handle.clone());
    }
    let failed = |e: metrics_exporter_prometheus::BuildError| Error::Metrics(e.to_string());
    let mut builder = PrometheusBuilder::new();
    if let Some(node) = node {
        builder = builder.add_global_label("node", node);
    }
    let builder = builder
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            arbor_metrics::SECONDS_BUCKETS,
        )
        .map_err(failed)?
        .set_buckets_for_metric(
            Matcher::Suffix("_bytes".into()),
            arbor_metrics::BYTES_BUCKETS,
        )
        .map_err(failed)?;
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // Two runtimes starting at once: the loser's recorder is dropped and the winner's used.
    match metrics::set_global_recorder(recorder) {
        Ok(()) => {
            arbor_metrics::describe();
            Ok(PROMETHEUS.get_or_init(|| handle).clone())
        }
        Err(_) => PROMETHEUS.get().cloned().ok_or_else(|| {
            Error::Metrics(
                "another metrics recorder is installed in this process; arbor records into it \
                 (leave RuntimeBuilder::metrics unset)"
                    .into(),
            )
        }),
    }
}

/// Serves `handle` at `/metrics` on `addr` until `stop`; returns the bound address.
pub(crate) async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, Error> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Metrics(format!("binding {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Metrics(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

/// Every second, while the runtime lives: the sampled gauges, and the recorder's upkeep.
pub(crate) fn sample_every_second(runtime: Weak<Inner>, upkeep: Option<PrometheusHandle>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            tick.tick().await;
            let Some(inner) = runtime.upgrade() else {
                return;
            };
            if inner.is_shut_down() {
                return;
            }
            inner.system.sample_metrics();
            sample_tree(&inner.root.tree(), &inner.quarantined());
            ticks += 1;
            if let Some(handle) = &upkeep
                && ticks.is_multiple_of(5)
            {
                handle.run_upkeep();
            }
        }
    });
}

fn sample_tree(tree: &SupervisorTree, quarantined: &BTreeSet<String>) {
    let (mut running, mut restarting, mut terminated) = (0u64, 0u64, 0u64);
    for (_, child) in tree.walk() {
        if child.supervisor.is_some() || quarantined.contains(&child.id) {
            continue;
        }
        match child.state {
            ChildState::Running => running += 1,
            ChildState::Restarting => restarting += 1,
            ChildState::Terminated { .. } => terminated += 1,
        }
    }
    metrics::gauge!(arbor_metrics::AGENTS, "state" => "quarantined").set(quarantined.len() as f64);
    metrics::gauge!(arbor_metrics::AGENTS, "state" => "running").set(running as f64);
    metrics::gauge!(arbor_metrics::AGENTS, "state" => "restarting").set(restarting as f64);
    metrics::gauge!(arbor_metrics::AGENTS, "state" => "terminated").set(terminated as f64);
    intensity(tree);
}

fn intensity(tree: &SupervisorTree) {
    let ratio = tree.recent_restarts as f64 / f64::from(tree.intensity.max_restarts.max(1));
    metrics::gauge!(arbor_metrics::SUPERVISOR_INTENSITY, "supervisor" => tree.name.clone())
        .set(ratio);
    for child in &tree.children {
        if let Some(sub) = &child.supervisor {
            intensity(sub);
        }
    }
}
