//! `deploy/` against a live runtime: a runtime with its metrics endpoint runs agents under load
//! (with traps, restarts, a supervisor giving up, full mailboxes, a refused module, shadow
//! evaluations with mismatches, a promotion and a rollback) while a real Prometheus, run with
//! `deploy/prometheus/prometheus.yml` and `alerts.yml`, scrapes it; then every expression of
//! `deploy/grafana/arbor.json` must return data (but for those on the cluster gauges only,
//! which a single-node runtime does not export), every alert rule must evaluate, and promtool
//! must accept the config, the rules (and their unit tests) and the runtime's `/metrics`.
//!
//! Needs `prometheus` and `promtool` on PATH (Debian's `prometheus` package).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbor::admin::{AdminConfig, AdminToken};
use arbor::agent::CheckpointPolicy;
use arbor::agent::tools::Tools;
use arbor::agent::wasm::Capabilities;
use arbor::shadow::{Approval, ArbiterConfig, Outcome, Policy, ShadowLimits, Stage};
use arbor::{Error, Spawn};
use arbor_modules::counter::{CounterMsg, CounterReply};
use arbor_testkit::watchdog;
use serde_json::Value;
use setup::{
    Deploy, Echo, Live, Load, Sleepy, TOKEN, catalog_metric, check_names, cluster_mode_only, get,
    get_with, lenient, metric_names, on_path, promtool, settled, substitute,
};

#[path = "support/prometheus.rs"]
mod setup;

/// The dashboard and the alerts name only catalog metrics, the dashboard shows every one, and
/// every panel and target uses the `${datasource}` variable.
#[test]
fn the_dashboard_and_the_alerts_name_only_catalog_metrics() {
    let deploy = Deploy::load();
    check_names(&deploy.queries, &deploy.alerts);
}

/// promtool accepts the deploy config, the rules and their unit tests.
#[test]
fn promtool_accepts_the_deploy_config_the_rules_and_their_tests() {
    let deploy = Deploy::load();
    promtool(
        &["check", "config", deploy.config_path.to_str().unwrap()],
        None,
    );
    promtool(
        &["check", "rules", deploy.alerts_path.to_str().unwrap()],
        None,
    );
    let rule_tests = deploy.dir.join("prometheus/alerts_test.yml");
    promtool(&["test", "rules", rule_tests.to_str().unwrap()], None);
}

/// The live runtime under load, every kind of event happening once, scraped by a real
/// Prometheus: every dashboard query returns data, every alert rule evaluates, promtool
/// accepts the config as run and the runtime's exposition. One scenario because every
/// panel needs its own event in the same Prometheus.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_the_runtime_and_every_dashboard_query_and_alert_works() {
    let _watchdog = watchdog("prometheus", Duration::from_secs(180));
    let started = Instant::now();
    let deploy = Deploy::load();
    // Fail early (before building anything) if Prometheus is missing.
    on_path("prometheus");
    on_path("promtool");

    let mut live = Live::start(&deploy, configure).await;
    spawn_agents(&live).await;
    live.prometheus.wait_ready().await;
    println!(
        "prometheus ready at {} after {:?}",
        live.prometheus.addr,
        started.elapsed()
    );
    start_evaluations(&live).await;
    let load = Load::start(&live.runtime);
    admin_requests_answered_failed_and_refused(&live).await;
    a_supervisor_gives_up_and_a_mailbox_fills(&live).await;
    evaluations_conclude(&live).await;
    println!("events done after {:?}", started.elapsed());
    scraped_after_the_events(&live).await;

    let exposition = exposition(&live).await;
    every_dashboard_query_returns_data(&live, &deploy, &exposition).await;
    every_alert_rule_evaluates(&live, &deploy).await;

    let (ok, failed) = load.stop().await;
    println!("load: {ok} calls answered, {failed} failed (crashes, restarts, pauses)");
    // promtool accepts the config as the test ran it, and the runtime's exposition.
    promtool(
        &["check", "config", live.test_config.to_str().unwrap()],
        None,
    );
    promtool(&["check", "metrics"], Some(&exposition));

    live.runtime.shutdown().await.unwrap();
    drop(live);
    println!("done in {:?}", started.elapsed());
}

/// The runtime: evolution, small WAL segments, frequent checkpoints, small mailboxes, a
/// supervisor that gives up, a native agent and a tool.
fn configure(builder: arbor::RuntimeBuilder) -> arbor::RuntimeBuilder {
    builder
        .admin(AdminConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            AdminToken::new(TOKEN).unwrap(),
        ))
        .evolution(ArbiterConfig {
            approval: Approval::Suggest,
            policy: Policy {
                // Judged on answers, state and fuel: on a busy test machine latency says more
                // about the neighbours than about the module.
                latency_tolerance: 5.0,
                // < 1 % at 95 %: 299 clean samples, as this test's traffic provides.
                target_failure_rate: 0.01,
                ..Policy::default()
            },
            limits: ShadowLimits {
                max_evaluations: 3,
                // Small, so kv-slow's shadows overflow it and drop mirrored inputs (gaps).
                queue: 16,
                deadline: Duration::from_secs(60),
                ..ShadowLimits::default()
            },
            // Long enough for the operator's rollback.
            watch: Duration::from_secs(120),
            ..ArbiterConfig::default()
        })
        // Small segments, so the WAL rotates while the test runs.
        .wal(
            arbor::wal::Config::default()
                .segment_bytes(1 << 20)
                .max_record_bytes(256 << 10),
        )
        .checkpoints(CheckpointPolicy {
            every_records: 200,
            every: Duration::from_secs(1),
            keep: 2,
            ..CheckpointPolicy::default()
        })
        .mailbox(64)
        .root(lenient(10_000))
        .supervisor("pool", lenient(10_000))
        // Tolerates no restart: its agent's first trap makes it give up.
        .supervisor("fragile", lenient(0))
        .native("sleepy", || Box::new(Sleepy))
        .tools(Tools::new().with("echo", Echo))
}

/// kv-a..c, four counters, `flaky` and `sleepy` under `pool`, `brittle` under `fragile`,
/// `toolbox`; and a module the runtime refuses.
async fn spawn_agents(live: &Live) {
    let runtime = &live.runtime;
    for name in ["kv-a", "kv-b", "kv-c"] {
        runtime
            .spawn(Spawn::wasm_bytes(name, arbor_modules::KV))
            .await
            .unwrap();
    }
    for i in 0..4 {
        runtime
            .spawn(Spawn::wasm_bytes(format!("counter-{i}"), arbor_modules::COUNTER).under("pool"))
            .await
            .unwrap();
    }
    runtime
        .spawn(Spawn::wasm_bytes("flaky", arbor_modules::COUNTER).under("pool"))
        .await
        .unwrap();
    runtime
        .spawn(Spawn::wasm_bytes("brittle", arbor_modules::COUNTER).under("fragile"))
        .await
        .unwrap();
    runtime
        .spawn(Spawn::native("sleepy", "sleepy").under("pool"))
        .await
        .unwrap();
    runtime
        .spawn(
            Spawn::wasm_bytes("toolbox", arbor_modules::TOOLBOX)
                .capabilities(Capabilities::all(["echo"])),
        )
        .await
        .unwrap();
    // A module the runtime refuses.
    assert!(runtime.add_module("junk", b"not wasm").is_err());
}

/// Evaluations, started before any traffic (so each gate has no history to judge): kv-v2 on
/// kv-a (approved, promoted, rolled back by the operator), kv-buggy on kv-b (mismatches,
/// rejected), kv-slow on kv-c (its shadows fall behind bursts of casts: gaps).
async fn start_evaluations(live: &Live) {
    let arbiter = live.runtime.arbiter();
    for (agent, name, bytes) in [
        ("kv-a", "kv-v2", arbor_modules::KV_V2),
        ("kv-b", "kv-buggy", arbor_modules::KV_BUGGY),
        ("kv-c", "kv-slow", arbor_modules::KV_SLOW),
    ] {
        let candidate = arbiter.admit(agent, name, bytes).unwrap();
        arbiter.evaluate(agent, candidate, Vec::new()).unwrap();
    }
    for agent in ["kv-a", "kv-b", "kv-c"] {
        tokio::time::timeout(
            Duration::from_secs(30),
            arbiter.wait(agent, |s| s.stage != Stage::Gate),
        )
        .await
        .unwrap()
        .unwrap();
    }
}

/// Admin requests: answered, failed (an unknown agent), unauthorized.
async fn admin_requests_answered_failed_and_refused(live: &Live) {
    let admin = live
        .runtime
        .admin_addr()
        .expect("the runtime serves the admin API");
    let bearer = format!("Bearer {TOKEN}");
    for (path, token, expected) in [
        ("/v1/status", Some(bearer.as_str()), Some(200)),
        ("/v1/agents", Some(bearer.as_str()), Some(200)),
        ("/v1/agents/nobody/checkpoints", Some(bearer.as_str()), None),
        ("/v1/status", None, Some(401)),
        ("/v1/status", Some("Bearer not-the-token-at-all"), Some(401)),
    ] {
        let (status, body) = get_with(admin, path, token).await.unwrap();
        println!("admin GET {path}: {status}");
        match expected {
            Some(expected) => assert_eq!(status, expected, "GET {path}: {body}"),
            None => assert!(status >= 400, "GET {path}: {status} {body}"),
        }
    }
}

async fn a_supervisor_gives_up_and_a_mailbox_fills(live: &Live) {
    let runtime = &live.runtime;
    // A supervisor giving up: `fragile` tolerates no restart; the root restarts it.
    let crashed = runtime
        .call::<_, CounterReply>("brittle", &CounterMsg::Fail)
        .await;
    assert!(crashed.is_err());
    // Full mailboxes: `sleepy` takes 2 ms an input, its mailbox holds 64.
    let mut full = 0;
    for _ in 0..200 {
        if let Err(Error::Agent(arbor::agent::AgentError::MailboxFull { .. })) =
            runtime.cast("sleepy", &1u64)
        {
            full += 1;
        }
    }
    assert!(full > 0, "no cast found sleepy's mailbox full");
}

/// kv-a approved, promoted and rolled back by the operator; kv-b rejected with mismatches.
async fn evaluations_conclude(live: &Live) {
    let runtime = &live.runtime;
    let arbiter = runtime.arbiter();
    let status = settled(runtime, "kv-a").await;
    assert_eq!(status.stage, Stage::AwaitingApproval, "{status:#?}");
    arbiter.promote("kv-a").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    arbiter
        .rollback("kv-a", "the operator changed their mind")
        .await
        .unwrap();
    let status = settled(runtime, "kv-b").await;
    assert_eq!(status.stage, Stage::Done(Outcome::Rejected), "{status:#?}");
    assert!(status.shadow.mismatches > 0, "{status:#?}");
}

/// Lets Prometheus scrape the last events a few times (rates need two samples): at least 3 s,
/// until it has seen the rollback 3 times (if it is exported at all: a metric that never is
/// shows in the dashboard check, with every query that needs it).
async fn scraped_after_the_events(live: &Live) {
    let prometheus = &live.prometheus;
    let events_done = Instant::now();
    loop {
        let scraped = prometheus
            .vector("count_over_time(arbor_rollbacks_total[1m])")
            .await
            .ok()
            .and_then(|result| result[0]["value"][1].as_str()?.parse::<f64>().ok());
        let waited = events_done.elapsed();
        if waited > Duration::from_secs(3) && scraped.is_some_and(|n| n >= 3.0) {
            break;
        }
        if waited > Duration::from_secs(10) {
            println!("arbor_rollbacks_total scraped {scraped:?} times in {waited:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The runtime's /metrics, for promtool and for the report of metrics never exported.
async fn exposition(live: &Live) -> String {
    let (status, exposition) = get(live.metrics_addr, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{exposition}");
    exposition
}

/// Every dashboard query returns data, and so do the template variables' queries.
async fn every_dashboard_query_returns_data(live: &Live, deploy: &Deploy, exposition: &str) {
    let (prometheus, queries, dashboard) = (&live.prometheus, &deploy.queries, &deploy.dashboard);
    let exported: BTreeSet<&str> = metric_names(exposition)
        .iter()
        .filter_map(|name| catalog_metric(name))
        .map(|metric| metric.name)
        .collect();
    let never_exported: Vec<&str> = arbor_metrics::CATALOG
        .iter()
        .map(|m| m.name)
        .filter(|name| !exported.contains(name))
        .collect();

    // Every dashboard query returns data.
    let mut failures = Vec::new();
    for query in queries {
        let expr = substitute(&query.expr);
        match prometheus.vector(&expr).await {
            Ok(result) => {
                let values: Vec<&str> = result
                    .iter()
                    .filter_map(|series| series["value"][1].as_str())
                    .collect();
                println!("{:>32}: {values:?}", query.panel);
            }
            // The cluster gauges exist in cluster mode only; this runtime is a single node.
            Err(error) if error == "no data" && cluster_mode_only(&expr) => {
                println!("{:>32}: no data (cluster mode only)", query.panel);
            }
            Err(error) => {
                failures.push(format!("panel {:?}: {expr}\n    -> {error}", query.panel));
            }
        }
    }
    // And the template variables' queries.
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let definition = substitute(variable["definition"].as_str().unwrap());
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .unwrap_or_else(|| panic!("not a label_values query: {definition}"));
        let (metric, label) = inner.rsplit_once(',').unwrap();
        let expr = format!("group by ({}) ({metric})", label.trim());
        if let Err(error) = prometheus.vector(&expr).await {
            failures.push(format!(
                "variable {}: {expr}\n    -> {error}",
                variable["name"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed (catalog metrics never exported: {never_exported:?}):\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
}

/// The alert rules loaded, and each evaluates without error.
async fn every_alert_rule_evaluates(live: &Live, deploy: &Deploy) {
    let (prometheus, alerts) = (&live.prometheus, &deploy.alerts);
    let expected_groups: BTreeSet<String> = alerts
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- name: "))
        .map(str::to_string)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let rules = loop {
        let (status, body) = get(prometheus.addr, "/api/v1/rules").await.unwrap();
        assert_eq!(status, 200, "{body}");
        let rules: Value = serde_json::from_str(&body).unwrap();
        let groups = rules["data"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let all: Vec<&Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        if !all.is_empty() && all.iter().all(|r| r["health"] != "unknown") {
            break groups;
        }
        assert!(Instant::now() < deadline, "rules not evaluated: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let loaded: BTreeSet<String> = rules
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(loaded, expected_groups);
    let mut states = BTreeMap::new();
    for rule in rules
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
    {
        assert_eq!(rule["health"], "ok", "{rule:#}");
        states.insert(
            rule["name"].as_str().unwrap().to_string(),
            rule["state"].as_str().unwrap_or("").to_string(),
        );
    }
    assert_eq!(
        states.len(),
        alerts.matches("- alert:").count(),
        "{states:?}"
    );
    println!("alert states: {states:?}");
}
