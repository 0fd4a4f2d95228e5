//! `arborctl`, the real binary, against a running host (its admin endpoint, token required)
//! and offline on the host's data directory once it stopped: one test per area, each with its
//! own host (`support/arborctl.rs`); `cluster status` against nodes on a real 3-server NATS
//! cluster.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arbor::admin::{Admin, AdminConfig, AdminError, AdminToken, Operator};
use arbor::{ClusterOptions, Runtime, Spawn};
use arbor_cluster::harness::NatsCluster;
use fixture::{Ctl, Fixture, get, host, load, private_token_file};
use support::Unlucky;

#[path = "support/arborctl.rs"]
mod fixture;
mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_token_are_refused_and_reveal_nothing() {
    let fx = Fixture::start().await;
    let ctl = &fx.ctl;
    let anonymous = ctl.run(&["--admin", &ctl.admin, "--json", "agents"]).await;
    assert_eq!(anonymous.code, 4, "{}", anonymous.stderr);
    let wrong = ctl
        .run(&[
            "--admin",
            &ctl.admin,
            "--token",
            "not-the-token-at-all-0000",
            "agents",
        ])
        .await;
    assert_eq!(wrong.code, 4);
    assert!(!wrong.stdout.contains("kv") && !wrong.stderr.contains("kv"));
    assert!(wrong.stderr.contains("unauthorized"), "{}", wrong.stderr);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_agents_show_the_running_host() {
    let fx = Fixture::start().await;
    let ctl = &fx.ctl;
    let status = ctl.online(&["--json", "status"]).await.ok().json();
    assert_eq!(status["mode"], "online");
    assert_eq!(status["agents"]["running"], 2);
    let agents = ctl.online(&["--json", "agents"]).await.ok().json();
    let kv = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "kv")
        .unwrap();
    assert_eq!(kv["state"], "running");
    assert!(kv["module"].as_str().unwrap().starts_with("wasm:"));
    let table = ctl.online(&["agents"]).await.ok();
    assert!(table.stdout.starts_with("AGENT"), "{}", table.stdout);
    assert!(table.stdout.contains("counter"));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_listed_shown_exported_and_restored_while_running() {
    let fx = Fixture::start().await;
    let ctl = &fx.ctl;
    let saved = fx.checkpoint_between_two_puts().await;
    let list = ctl
        .online(&["--json", "checkpoint", "list", "kv"])
        .await
        .ok()
        .json();
    assert!(
        list.as_array().unwrap().iter().any(|c| c["lsn"] == saved),
        "{list}"
    );
    let lsn = saved.to_string();
    let shown = ctl
        .online(&["--json", "checkpoint", "show", "kv", &lsn])
        .await
        .ok()
        .json();
    assert_eq!(shown["checkpoint"]["lsn"], saved);
    assert!(shown["state"].to_string().contains('a'), "{shown}");
    let export = fx.file("kv.ckpt");
    ctl.online(&[
        "checkpoint",
        "export",
        "kv",
        &lsn,
        "--out",
        export.to_str().unwrap(),
    ])
    .await
    .ok();
    assert!(std::fs::metadata(&export).unwrap().len() > 0);
    assert_eq!(
        ctl.online(&["checkpoint", "show", "kv", "999999999"])
            .await
            .code,
        3
    );
    assert_eq!(ctl.online(&["checkpoint", "list", "nobody"]).await.code, 3);

    // Restore while running: discard drops a=2; replay from the file brings it back.
    let restored = ctl
        .online(&[
            "--json",
            "checkpoint",
            "restore",
            "kv",
            "--lsn",
            &lsn,
            "--after",
            "discard",
        ])
        .await
        .ok()
        .json();
    assert_eq!(restored["replayed"], 0);
    assert_eq!(get(&fx.runtime, "a").await.as_deref(), Some("1"));
    let replayed = ctl
        .online(&[
            "--json",
            "checkpoint",
            "restore",
            "kv",
            "--file",
            export.to_str().unwrap(),
            "--after",
            "replay",
        ])
        .await
        .ok()
        .json();
    assert!(replayed["replayed"].as_u64().unwrap() >= 1, "{replayed}");
    assert_eq!(get(&fx.runtime, "a").await.as_deref(), Some("2"));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_verified_and_its_records_decoded() {
    let fx = Fixture::start().await;
    let ctl = &fx.ctl;
    // A restore journals a rebase among the inputs.
    let lsn = fx.checkpoint_between_two_puts().await.to_string();
    ctl.online(&[
        "checkpoint",
        "restore",
        "kv",
        "--lsn",
        &lsn,
        "--after",
        "discard",
    ])
    .await
    .ok();
    let verify = ctl.online(&["--json", "wal", "verify"]).await.ok().json();
    assert_eq!(verify["clean"], true);
    assert!(verify["records"].as_u64().unwrap() > 0);
    let records = ctl
        .online(&[
            "--json", "wal", "inspect", "--agent", "kv", "--limit", "1000",
        ])
        .await
        .ok()
        .json();
    let entries: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["entry"].as_str().unwrap())
        .collect();
    assert!(
        entries.contains(&"input") && entries.contains(&"rebase"),
        "{entries:?}"
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_are_added_and_listed_and_junk_is_refused() {
    let fx = Fixture::start().await;
    let ctl = &fx.ctl;
    let v2 = fx.file("kv-v2.wasm");
    std::fs::write(&v2, arbor_modules::KV_V2).unwrap();
    let added = ctl
        .online(&["--json", "module", "add", "kv-v2", v2.to_str().unwrap()])
        .await
        .ok()
        .json();
    let v2_hash = added[0]["hash"].as_str().unwrap().to_string();
    let modules = ctl.online(&["--json", "module", "list"]).await.ok().json();
    assert!(modules.to_string().contains(&v2_hash));
    let junk = fx.file("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    assert_eq!(
        ctl.online(&["module", "add", "junk", junk.to_str().unwrap()])
            .await
            .code,
        2
    );
    fx.stop().await;
}

/// kv-v2 admitted, gated, shadowed under load, approved, promoted, rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evolution_is_started_awaited_promoted_rolled_back_and_explained() {
    let fx = Fixture::start().await;
    let ctl = &fx.ctl;
    let v2_hash = fx
        .runtime
        .add_module("kv-v2", arbor_modules::KV_V2)
        .unwrap()
        .to_string();
    let (stop, traffic) = load(&fx.runtime);
    let started = ctl
        .online(&["--json", "evolve", "start", "kv", "--module", &v2_hash])
        .await
        .ok()
        .json();
    assert_eq!(started["candidate"], v2_hash.as_str());
    let settled = ctl
        .online(&["--json", "evolve", "status", "kv", "--wait"])
        .await;
    // Approved and waiting for a person: not promoted, so --wait does not say failure.
    assert_eq!(
        settled.json()["stage"],
        "awaiting_approval",
        "{}",
        settled.stdout
    );
    let promoted = ctl
        .online(&["--json", "evolve", "promote", "kv"])
        .await
        .ok()
        .json();
    assert_eq!(promoted["stage"], "watching");
    let rolled = ctl
        .online(&["--json", "evolve", "rollback", "kv", "--reason", "drill"])
        .await
        .ok()
        .json();
    assert_eq!(rolled["stage"], serde_json::json!({"done": "rolled_back"}));
    stop.store(true, Ordering::Release);
    traffic.await.unwrap();
    let history = ctl
        .online(&["--json", "evolve", "history", "kv"])
        .await
        .ok()
        .json();
    let events: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for event in ["admitted", "verdict", "promoted", "rolled_back"] {
        assert!(events.contains(&event), "{event} missing from {events:?}");
    }
    let verdict = history
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "verdict")
        .unwrap();
    assert!(verdict["evidence"]["shadow"]["samples"].as_u64().unwrap() >= 60);
    let summary = verdict["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("Approved: ") && !summary.contains("Approved: Approved"),
        "{summary}"
    );
    assert_eq!(ctl.online(&["evolve", "promote", "kv"]).await.code, 6);
    assert_eq!(ctl.online(&["evolve", "status", "nobody"]).await.code, 3);
    fx.stop().await;
}

/// An objective the candidate cannot meet rejects it; a person accepts the rejection with a
/// reason (kept in the lineage) and it awaits promotion; bad specs and a missing reason are
/// usage errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_objective_rejects_and_a_person_accepts_with_a_reason() {
    let fx = Fixture::start().await;
    let ctl = &fx.ctl;
    let v2_hash = fx
        .runtime
        .add_module("kv-v2", arbor_modules::KV_V2)
        .unwrap()
        .to_string();
    let bad = ctl
        .online(&[
            "evolve",
            "start",
            "kv",
            "--module",
            &v2_hash,
            "--objective",
            "fuel:faster",
        ])
        .await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let (stop, traffic) = load(&fx.runtime);
    let start = [
        "--json",
        "evolve",
        "start",
        "kv",
        "--module",
        &v2_hash,
        "--ignore",
        "*.generated_at",
        "--objective",
        "fuel:better:0.9",
        "--shadows",
        "here",
    ];
    ctl.online(&start).await.ok();
    let settled = ctl
        .online(&["--json", "evolve", "status", "kv", "--wait"])
        .await
        .json();
    assert_eq!(settled["stage"], serde_json::json!({"done": "rejected"}));
    let reasons = settled["decision"]["reasons"].to_string();
    assert!(
        reasons.contains("objective fuel:better:0.9 not met"),
        "{reasons}"
    );
    assert_eq!(
        settled["decision"]["objectives"][0]["met"],
        serde_json::json!(false)
    );
    assert_eq!(ctl.online(&["evolve", "accept", "kv"]).await.code, 2);
    let accepted = ctl
        .online(&[
            "--json",
            "evolve",
            "accept",
            "kv",
            "--reason",
            "fuel is fine",
        ])
        .await
        .ok()
        .json();
    assert_eq!(accepted["stage"], "awaiting_approval");
    assert_eq!(accepted["accepted"], "fuel is fine");
    // Accepted once: the second is a conflict.
    assert_eq!(
        ctl.online(&["evolve", "accept", "kv", "--reason", "again"])
            .await
            .code,
        6
    );
    stop.store(true, Ordering::Release);
    traffic.await.unwrap();
    let history = ctl
        .online(&["--json", "evolve", "history", "kv"])
        .await
        .ok()
        .json();
    assert!(
        history.to_string().contains("fuel is fine"),
        "the reason is in the lineage: {history}"
    );
    fx.stop().await;
}

/// A submitted module carries its author and description into the lineage and the archive;
/// `evolve tree` shows the archive online and offline; a submission without an author or of
/// bytes that are not a module is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_says_who_and_why_and_the_tree_shows_it() {
    let fx = Fixture::start().await;
    let ctl = &fx.ctl;
    let v2 = fx.tmp.path().join("kv-v2.wasm");
    std::fs::write(&v2, arbor_modules::KV_V2).unwrap();
    let junk = fx.tmp.path().join("junk.wasm");
    std::fs::write(&junk, b"not a module").unwrap();
    let (v2, junk) = (v2.to_str().unwrap(), junk.to_str().unwrap());
    let blank = ctl
        .online(&[
            "evolve",
            "submit",
            "kv",
            v2,
            "--author",
            " ",
            "--description",
            "x",
        ])
        .await;
    assert_eq!(blank.code, 2, "{}", blank.stderr);
    let refused = ctl
        .online(&[
            "evolve",
            "submit",
            "kv",
            junk,
            "--author",
            "mallory",
            "--description",
            "junk",
        ])
        .await;
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    let (stop, traffic) = load(&fx.runtime);
    let submit = [
        "--json",
        "evolve",
        "submit",
        "kv",
        v2,
        "--author",
        "ana@example.com",
        "--description",
        "direct lookups",
        "--ignore",
        "*.generated_at",
        "--wait",
    ];
    let settled = ctl.online(&submit).await.json();
    stop.store(true, Ordering::Release);
    traffic.await.unwrap();
    assert_eq!(settled["stage"], "awaiting_approval", "{settled}");
    let history = ctl
        .online(&["--json", "evolve", "history", "kv"])
        .await
        .ok()
        .json()
        .to_string();
    assert!(
        history.contains("submitted by ana@example.com: direct lookups"),
        "{history}"
    );
    let tree = ctl
        .online(&["--json", "evolve", "tree", "kv"])
        .await
        .ok()
        .json();
    let rows = tree.as_array().unwrap();
    let reached = |origin: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r["origin"] == origin)
            .map(|r| r["reached"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(reached("production"), ["promoted"], "{tree}");
    let mut submitted = reached("submitted");
    submitted.sort();
    assert_eq!(submitted, ["approved", "refused"], "{tree}");
    let text = ctl.online(&["evolve", "tree", "kv"]).await.ok().stdout;
    let v2_line = text
        .lines()
        .find(|l| l.contains("direct lookups"))
        .unwrap_or_else(|| panic!("{text}"));
    // Under the root, indented, with what it measured.
    assert!(
        v2_line.starts_with("  ") && v2_line.contains("fuel="),
        "{text}"
    );
    let (_tmp, ctl) = fx.stop().await;
    let offline = ctl
        .offline_once_released(&["--json", "evolve", "tree", "kv"])
        .await
        .ok()
        .json();
    assert_eq!(offline.as_array().unwrap().len(), 3, "{offline}");
}

/// `evolve loop`: refused for a module with nothing to tune and unknown when none runs; a
/// one-cycle loop over the cache agent's parameters and placebos runs, reports its candidates
/// (JSON and Markdown) and writes its cycle into the lineage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evolution_loop_runs_its_cycles_and_reports_them() {
    use arbor_modules::cache::{CacheMsg, CacheReply};
    let fx = Fixture::start().await;
    let ctl = &fx.ctl;
    let no_tunables = ctl
        .online(&["evolve", "loop", "start", "kv", "--source", "params"])
        .await;
    assert_eq!(no_tunables.code, 2, "{}", no_tunables.stderr);
    assert!(
        no_tunables.stderr.contains("tunable"),
        "{}",
        no_tunables.stderr
    );
    assert_eq!(
        ctl.online(&["evolve", "loop", "status", "kv"]).await.code,
        3
    );
    fx.runtime
        .spawn(Spawn::wasm_bytes("cache", arbor_modules::CACHE))
        .await
        .unwrap();
    for key in 0..40 {
        let put = CacheMsg::Put {
            key,
            value: format!("record {key}"),
        };
        let _: CacheReply = fx.runtime.call("cache", &put).await.unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (runtime, stop) = (fx.runtime.clone(), std::sync::Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Acquire) {
                let get = CacheMsg::Get { key: n % 7 };
                let _ = runtime.call::<_, CacheReply>("cache", &get).await;
                n += 1;
            }
        })
    };
    let start = [
        "--json",
        "evolve",
        "loop",
        "start",
        "cache",
        "--source",
        "params",
        "--source",
        "placebo",
        "--candidates",
        "2",
        "--population",
        "2",
        "--cycles",
        "1",
        "--pause-ms",
        "10",
        "--wait",
    ];
    let status = ctl.online(&start).await.ok().json();
    stop.store(true, Ordering::Release);
    traffic.await.unwrap();
    assert_eq!(status["running"], false, "{status}");
    assert_eq!(status["cycles"], 1, "{status}");
    let tried = status["reports"][0]["tried"].as_array().unwrap().clone();
    assert!(!tried.is_empty() && tried.len() <= 2, "{status}");
    for t in &tried {
        let outcome = t["outcome"].as_str().unwrap();
        assert!(
            ["gate", "shadows", "awaiting approval"].contains(&outcome),
            "{status}"
        );
    }
    let human = ctl
        .online(&["evolve", "loop", "status", "cache"])
        .await
        .ok();
    assert!(
        human.stdout.contains("loop stopped, 1 cycle(s)"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("| candidate | source |"),
        "{}",
        human.stdout
    );
    let history = ctl
        .online(&["--json", "evolve", "history", "cache"])
        .await
        .ok()
        .json()
        .to_string();
    assert!(history.contains("cycle 1:"), "{history}");
    // A stopped loop can be asked to stop again; it stays stopped.
    let stopped = ctl
        .online(&["--json", "evolve", "loop", "stop", "cache"])
        .await
        .ok()
        .json();
    assert_eq!(stopped["running"], false);
    fx.stop().await;
}

/// Offline: refused while a host holds the directory; once it stopped, inspected and restored
/// in place, and the next host starts from the restored state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_hosts_directory_is_inspected_and_restored_offline() {
    let fx = Fixture::start().await;
    let lsn = fx.checkpoint_between_two_puts().await.to_string();
    let export = fx.file("kv.ckpt");
    fx.ctl
        .online(&[
            "checkpoint",
            "export",
            "kv",
            &lsn,
            "--out",
            export.to_str().unwrap(),
        ])
        .await
        .ok();
    let v2_hash = fx
        .runtime
        .add_module("kv-v2", arbor_modules::KV_V2)
        .unwrap()
        .to_string();

    // Offline while the host holds the directory: refused politely.
    let busy = fx.ctl.offline(&["status"]).await;
    assert_eq!(busy.code, 5, "{}", busy.stderr);
    assert!(
        busy.stderr.contains("running host holds"),
        "{}",
        busy.stderr
    );

    // Stop the host; offline inspection and restore work on the directory.
    let before: BTreeMap<&str, Option<String>> =
        BTreeMap::from([("a", get(&fx.runtime, "a").await)]);
    let (_tmp, ctl) = fx.stop().await;
    let status = ctl
        .offline_once_released(&["--json", "status"])
        .await
        .ok()
        .json();
    assert_eq!(status["mode"], "offline");
    assert_eq!(status["agents"]["registered"], 2);
    let offline_agents = ctl.offline(&["--json", "agents"]).await.ok().json();
    assert_eq!(offline_agents.as_array().unwrap().len(), 2);
    ctl.offline(&["wal", "verify"]).await.ok();
    ctl.offline(&["checkpoint", "list", "kv"]).await.ok();
    assert_eq!(
        ctl.offline(&["evolve", "start", "kv", "--module", &v2_hash])
            .await
            .code,
        5
    );
    ctl.offline(&["evolve", "history", "kv"]).await.ok();
    let offline_restore = ctl
        .offline(&[
            "--json",
            "checkpoint",
            "restore",
            "kv",
            "--file",
            export.to_str().unwrap(),
            "--after",
            "discard",
        ])
        .await
        .ok()
        .json();
    assert_eq!(offline_restore["replayed"], 0);

    // The next host starts from the restored state.
    let runtime = host(&ctl.data_dir, &ctl.token_file).await;
    assert_eq!(before["a"].as_deref(), Some("2"));
    assert_eq!(get(&runtime, "a").await.as_deref(), Some("1"));
    runtime.shutdown().await.unwrap();
}

/// A flipped bit in the WAL: offline verify reports it (opening the log would refuse it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_verify_reports_a_damaged_wal() {
    let fx = Fixture::start().await;
    fx.checkpoint_between_two_puts().await;
    let (_tmp, ctl) = fx.stop().await;
    let mut segments: Vec<PathBuf> = std::fs::read_dir(ctl.data_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy() != "LOCK")
        .collect();
    segments.sort();
    let segment = segments.first().unwrap();
    let mut bytes = std::fs::read(segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(segment, bytes).unwrap();
    let damaged = ctl
        .offline_once_released(&["--json", "wal", "verify"])
        .await;
    assert_eq!(damaged.code, 1, "{}", damaged.stderr);
    let report = damaged.json();
    assert_eq!(report["clean"], false);
    assert!(!report["problems"].as_array().unwrap().is_empty());
}

/// Quarantined agents through `arborctl`: listed with the reason, one restored from an older
/// checkpoint (discarding what came after), one removed; a running agent cannot be removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_agents_are_listed_restored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let token_file = private_token_file(dir.path());
    let runtime = Runtime::builder()
        .data_dir(&data_dir)
        .native("unlucky", || Box::new(Unlucky(0)))
        .admin(AdminConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            AdminToken::from_file(&token_file).unwrap(),
        ))
        .build()
        .await
        .unwrap();
    let ctl = Ctl {
        admin: runtime.admin_addr().unwrap().to_string(),
        token_file,
        data_dir,
    };
    let mut at_five = BTreeMap::new();
    for name in ["unlucky", "doomed"] {
        runtime.spawn(Spawn::native(name, "unlucky")).await.unwrap();
        runtime.call::<_, u64>(name, &5u64).await.unwrap();
        at_five.insert(
            name,
            runtime.lookup(name).unwrap().checkpoint().await.unwrap(),
        );
        runtime.call::<_, u64>(name, &8u64).await.unwrap();
        runtime.lookup(name).unwrap().checkpoint().await.unwrap();
        // Crashes; its restart cannot restore 13, so it is quarantined.
        let _ = runtime.call::<_, u64>(name, &0u64).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while runtime.quarantined().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "not quarantined");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let agents = ctl.online(&["--json", "agents"]).await.ok().json();
    for name in ["unlucky", "doomed"] {
        let row = agents
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["name"] == name)
            .unwrap();
        assert_eq!(row["state"], "quarantined", "{row}");
        assert!(!row["reason"].as_str().unwrap().is_empty(), "{row}");
    }
    let table = ctl.online(&["agents"]).await.ok();
    assert!(table.stdout.contains("quarantined"), "{}", table.stdout);

    let lsn = at_five["unlucky"].to_string();
    ctl.online(&[
        "checkpoint",
        "restore",
        "unlucky",
        "--lsn",
        &lsn,
        "--after",
        "discard",
    ])
    .await
    .ok();
    assert_eq!(runtime.call::<_, u64>("unlucky", &1u64).await.unwrap(), 6);

    ctl.online(&["agent", "remove", "doomed"]).await.ok();
    let agents = ctl.online(&["--json", "agents"]).await.ok().json();
    let names: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["unlucky"]);
    assert_eq!(ctl.online(&["agent", "remove", "doomed"]).await.code, 3);
    // A running agent is not removed: stop it first.
    assert_eq!(ctl.online(&["agent", "remove", "unlucky"]).await.code, 6);
    assert_eq!(ctl.offline(&["agent", "remove", "unlucky"]).await.code, 5);
    runtime.shutdown().await.unwrap();
}

/// A cluster node with its admin endpoint on.
async fn cluster_node(
    cluster: &NatsCluster,
    name: &str,
    dir: &std::path::Path,
    admin: Option<&std::path::Path>,
    hosts_agents: bool,
) -> Runtime {
    // The default 6 s lease: nothing here waits for a failover, and a short lease lets a
    // heartbeat delayed by a loaded machine (every test of this file runs at once) make a
    // node look dead.
    let options = ClusterOptions::new(cluster.urls(), name)
        .tick(Duration::from_millis(200))
        .hosts_agents(hosts_agents);
    let mut builder = Runtime::builder()
        .data_dir(dir)
        .call_timeout(Duration::from_secs(10))
        .cluster(options);
    if let Some(token_file) = admin {
        builder = builder.admin(AdminConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            AdminToken::from_file(token_file).unwrap(),
        ));
    }
    builder
        .build()
        .await
        .unwrap_or_else(|e| panic!("node {name}: {}", arbor::agent::report::chain(&e)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_status_names_every_node_and_the_owner_of_every_agent() {
    let cluster = NatsCluster::start(3).await.expect("nats cluster");
    let tmp = tempfile::tempdir().unwrap();
    let token_file = private_token_file(tmp.path());
    let a = cluster_node(
        &cluster,
        "node-a",
        &tmp.path().join("a"),
        Some(&token_file),
        true,
    )
    .await;
    let b = cluster_node(
        &cluster,
        "node-b",
        &tmp.path().join("b"),
        Some(&token_file),
        true,
    )
    .await;
    // The agents are spawned from a third node that hosts none: placement must put every one
    // on node-a or node-b, and the status must list that node as taking no agents.
    let tool = cluster_node(&cluster, "tool", &tmp.path().join("t"), None, false).await;
    let until = std::time::Instant::now() + Duration::from_secs(10);
    // Every node sees the whole membership before the spawns, so no agent moves later.
    for node in [&a, &b, &tool] {
        while node.cluster_status().await.unwrap().unwrap().nodes.len() < 3 {
            assert!(
                std::time::Instant::now() < until,
                "the membership never had 3 nodes"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let agents: Vec<String> = (0..6).map(|i| format!("kv-{i}")).collect();
    for agent in &agents {
        let spawned = tool
            .spawn(Spawn::wasm_bytes(agent.clone(), arbor_modules::KV))
            .await
            .unwrap_or_else(|e| panic!("spawn {agent}: {}", arbor::agent::report::chain(&e)));
        assert_ne!(spawned.node(), Some("tool"), "{agent} placed on the client");
    }
    // Where each agent really runs (not what the status says): the node whose runtime has it.
    let mut running: BTreeMap<String, &str> = BTreeMap::new();
    while running.len() < agents.len() {
        assert!(
            std::time::Instant::now() < until + Duration::from_secs(10),
            "{running:?}"
        );
        for agent in &agents {
            if a.lookup(agent).is_some() {
                running.insert(agent.clone(), "node-a");
            } else if b.lookup(agent).is_some() {
                running.insert(agent.clone(), "node-b");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tool.agents().is_empty());

    let ctl = Ctl {
        admin: a.admin_addr().unwrap().to_string(),
        token_file: token_file.clone(),
        data_dir: tmp.path().join("a"),
    };
    let status = ctl
        .online(&["--json", "cluster", "status"])
        .await
        .ok()
        .json();
    assert_eq!(status["node"], "node-a");
    let nodes: BTreeMap<&str, &serde_json::Value> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n))
        .collect();
    assert_eq!(
        nodes.keys().copied().collect::<Vec<_>>(),
        ["node-a", "node-b", "tool"],
        "{status}"
    );
    for (name, node) in &nodes {
        assert_eq!(node["live"], true, "{name}: {status}");
        assert_eq!(node["draining"], *name == "tool", "{name}: {status}");
        let owned = running.values().filter(|owner| *owner == name).count();
        assert_eq!(node["agents"], owned, "{name}: {status}");
    }
    let listed: BTreeMap<&str, &serde_json::Value> = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row["name"].as_str().unwrap(), row))
        .collect();
    assert_eq!(listed.len(), agents.len(), "{status}");
    for (agent, owner) in &running {
        let row = listed[agent.as_str()];
        assert_eq!(row["owner"], *owner, "{agent}: {status}");
        assert_eq!(row["state"], "running", "{agent}: {status}");
        assert!(row["epoch"].as_u64().unwrap() >= 1, "{agent}: {status}");
        assert!(
            row["lease_left_ms"].as_u64().unwrap() > 0,
            "{agent}: {status}"
        );
    }

    // The table, from the other node: every node, and each agent's row names its owner.
    let ctl_b = Ctl {
        admin: b.admin_addr().unwrap().to_string(),
        ..ctl
    };
    let table = ctl_b.online(&["cluster", "status"]).await.ok().stdout;
    assert!(
        table.starts_with("seen from node-b: 3 nodes (3 live), 6 agents (6 owned)"),
        "{table}"
    );
    assert!(
        table.contains("NODE") && table.contains("LEASE LEFT"),
        "{table}"
    );
    for node in ["node-a", "node-b", "tool"] {
        assert!(
            table.lines().any(|line| line.starts_with(node)),
            "{node}: {table}"
        );
    }
    for (agent, owner) in &running {
        let line = table
            .lines()
            .find(|line| line.split_whitespace().next() == Some(agent.as_str()))
            .unwrap_or_else(|| panic!("no row for {agent}: {table}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells.get(1..3), Some(&["running", *owner][..]), "{line}");
    }
    tool.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_without_cluster_mode_is_a_typed_error() {
    let fx = Fixture::start().await;
    let ran = fx.ctl.online(&["cluster", "status"]).await;
    assert_eq!(ran.code, 7, "{}", ran.stderr);
    assert!(ran.stderr.contains("not in cluster mode"), "{}", ran.stderr);
    let json = fx.ctl.online(&["--json", "cluster", "status"]).await;
    assert_eq!(json.code, 7);
    assert_eq!(json.json()["kind"], "not_clustered");
    // In-process, the same kind.
    let operator = Operator::online(&fx.runtime);
    assert_eq!(
        operator.cluster_status().await,
        Err(AdminError::NotClustered)
    );
    // The host still answers everything else.
    fx.ctl.online(&["status"]).await.ok();

    // Offline there is no cluster to read: it needs a running node.
    let (_tmp, ctl) = fx.stop().await;
    let offline = ctl.offline(&["cluster", "status"]).await;
    assert_eq!(offline.code, 5, "{}", offline.stderr);
    assert!(
        offline.stderr.contains("needs a running node"),
        "{}",
        offline.stderr
    );
}
