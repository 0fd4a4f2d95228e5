//! `arborctl`, the real binary, against a running host (its admin endpoint, token required)
//! and offline on the host's data directory once it stopped: one test per area, each with its
//! own host (`support/arborctl.rs`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arbor::admin::{AdminConfig, AdminToken};
use arbor::{Runtime, Spawn};
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
