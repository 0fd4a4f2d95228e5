//! Modules, lineage and the agent registry: round trips, ordering, dedup, bad input.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use arbor_vault::{
    AgentRecord, AgentState, Behaviour, Config, Error, Evidence, Limits, LineageEvent, ModuleHash,
    ModuleInfo, Vault, Verdict,
};
use support::{agent, open};

fn info(name: &str) -> ModuleInfo {
    ModuleInfo {
        name: name.into(),
        version_label: "1.2.0".into(),
        abi_version: 1,
        origin: "file:/srv/agents/kv.wasm".into(),
    }
}

/// A syntactically plausible module: header plus a custom section holding `tag`.
fn wasm(tag: &str) -> Vec<u8> {
    let mut out = b"\0asm\x01\0\0\0".to_vec();
    out.push(0); // custom section
    out.push((tag.len() + 1) as u8);
    out.push(tag.len() as u8);
    out.extend_from_slice(tag.as_bytes());
    out
}

#[test]
fn modules_round_trip_and_the_same_bytes_are_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second_hash) = {
        let vault = open(dir.path());
        let bytes = wasm("kv");
        let first = vault.put_module(&bytes, &info("kv")).unwrap();
        assert!(first.added);
        assert_eq!(first.meta.hash, ModuleHash::of(&bytes));
        assert_eq!(first.meta.size_bytes, bytes.len() as u64);
        assert_eq!(
            (first.meta.name.as_str(), first.meta.version_label.as_str()),
            ("kv", "1.2.0")
        );
        assert_eq!(first.meta.origin, "file:/srv/agents/kv.wasm");
        // Same bytes under another name: nothing changes, the first entry comes back.
        let again = vault.put_module(&bytes, &info("kv-renamed")).unwrap();
        assert!(!again.added);
        assert_eq!(again.meta, first.meta);
        let second = vault.put_module(&wasm("kv2"), &info("kv")).unwrap();
        assert!(second.added);
        assert_ne!(second.meta.hash, first.meta.hash);
        vault.flush().unwrap();
        (first.meta, second.meta.hash)
    };
    let vault = open(dir.path());
    assert_eq!(vault.module_meta(&first.hash).unwrap(), Some(first.clone()));
    assert_eq!(vault.module_bytes(&first.hash).unwrap(), Some(wasm("kv")));
    let listed: Vec<ModuleHash> = vault
        .list_modules()
        .unwrap()
        .iter()
        .map(|m| m.hash)
        .collect();
    let mut expected = vec![first.hash, second_hash];
    expected.sort();
    assert_eq!(listed, expected);
    let unknown = ModuleHash::of(b"never stored");
    assert!(vault.module_meta(&unknown).unwrap().is_none());
    assert!(vault.module_bytes(&unknown).unwrap().is_none());
}

#[test]
fn non_wasm_and_oversized_modules_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path(), Config::default().max_value_bytes(4 << 10)).unwrap();
    for (bytes, reason) in [
        (&b""[..], "shorter than the 8-byte wasm header"),
        (&b"\x7fELF\x02\x01\x01\0\0\0"[..], "no \\0asm magic"),
        (
            &b"\0asm\x0d\0\x01\0"[..],
            "not binary format version 1 (a component or a newer format)",
        ),
    ] {
        let err = vault.put_module(bytes, &info("bad")).unwrap_err();
        assert!(
            matches!(&err, Error::NotWasm { name, reason: r } if name == "bad" && *r == reason),
            "{err}"
        );
    }
    let mut big = wasm("big");
    big.resize((4 << 10) + 1, 0);
    let err = vault.put_module(&big, &info("big")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                size: 4097,
                max: 4096,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "module \"big\" is 4097 bytes, over the limit of 4096 bytes"
    );
    assert!(vault.list_modules().unwrap().is_empty());
}

#[test]
fn lineage_is_append_only_in_order_and_per_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (ModuleHash::of(b"v1"), ModuleHash::of(b"v2"));
    let kv = agent("kv");
    let other = agent("kv-1");
    let mut fields = BTreeMap::new();
    fields.insert("samples".to_owned(), "2000".to_owned());
    fields.insert("mismatch_rate".to_owned(), "0.0".to_owned());
    let events = vec![
        LineageEvent::ModuleAdmitted {
            agent: kv.clone(),
            parent: None,
            candidate: v1,
        },
        LineageEvent::ModuleAdmitted {
            agent: other.clone(),
            parent: None,
            candidate: v1,
        },
        LineageEvent::ModuleAdmitted {
            agent: kv.clone(),
            parent: Some(v1),
            candidate: v2,
        },
        LineageEvent::Verdict {
            agent: kv.clone(),
            candidate: v2,
            verdict: Verdict::Approved,
            evidence: Evidence {
                summary: "2,000 samples, no mismatch, p99 -3%".into(),
                fields,
                detail: rmp_serde::to_vec_named(&("p99_us", 180u32)).unwrap(),
            },
        },
        LineageEvent::Promoted {
            agent: kv.clone(),
            from: v1,
            to: v2,
            checkpoint_lsn: 4_096,
        },
        LineageEvent::RolledBack {
            agent: kv.clone(),
            from: v2,
            to: v1,
            reason: "p99 regression in watch window".into(),
        },
    ];
    {
        let vault = open(dir.path());
        assert!(vault.lineage().unwrap().is_empty());
        for (i, event) in events.iter().enumerate() {
            let record = vault.append_lineage(event.clone()).unwrap();
            assert_eq!(record.seq, i as u64 + 1);
            assert_eq!(&record.event, event);
        }
        vault.flush().unwrap();
    }
    let vault = open(dir.path());
    let all = vault.lineage().unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        all.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
        events
    );
    assert!(all.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    let for_kv = vault.lineage_for(&kv).unwrap();
    assert_eq!(
        for_kv.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 3, 4, 5, 6]
    );
    let for_other = vault.lineage_for(&other).unwrap();
    assert_eq!(for_other.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
    assert_eq!(vault.lineage_from(5).unwrap().len(), 2);
    assert!(vault.lineage_from(7).unwrap().is_empty());
    // Numbering continues after a reopen.
    let next = vault
        .append_lineage(LineageEvent::ModuleAdmitted {
            agent: kv,
            parent: Some(v2),
            candidate: v1,
        })
        .unwrap();
    assert_eq!(next.seq, 7);
}

#[test]
fn registry_round_trip_list_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let records = vec![
        AgentRecord {
            id: agent("pool/worker-1"),
            behaviour: Behaviour::Wasm(ModuleHash::of(b"worker")),
            supervisor: vec!["root".into(), "pool".into()],
            limits: Limits {
                memory_bytes: 16 << 20,
                fuel: Some(1_000_000),
                deadline_ms: None,
                max_message_bytes: 64 << 10,
            },
            capabilities: vec!["log".into(), "send".into()],
            state: AgentState::Running,
            reason: None,
        },
        AgentRecord {
            id: agent("echo"),
            behaviour: Behaviour::Native("echo".into()),
            supervisor: vec!["root".into()],
            limits: Limits {
                deadline_ms: Some(50),
                ..Limits::default()
            },
            capabilities: vec![],
            state: AgentState::Stopped,
            reason: None,
        },
    ];
    {
        let vault = open(dir.path());
        for r in &records {
            vault.put_agent(r).unwrap();
        }
        vault.flush().unwrap();
    }
    let vault = open(dir.path());
    assert_eq!(
        vault.agent(&records[0].id).unwrap().as_ref(),
        Some(&records[0])
    );
    let listed = vault.agents().unwrap();
    assert_eq!(
        listed,
        vec![records[1].clone(), records[0].clone()],
        "in id order"
    );
    let mut stopped = records[0].clone();
    stopped.state = AgentState::Stopped;
    vault.put_agent(&stopped).unwrap();
    assert_eq!(vault.agent(&stopped.id).unwrap(), Some(stopped.clone()));
    assert!(vault.remove_agent(&stopped.id).unwrap());
    assert!(!vault.remove_agent(&stopped.id).unwrap());
    assert!(vault.agent(&stopped.id).unwrap().is_none());
    assert_eq!(vault.agents().unwrap(), vec![records[1].clone()]);
}
