//! kv-hostile's variants against kv, natively, through `kv_hostile::handle_as` and friends (a
//! native build cannot patch its variant byte): each variant answers exactly as the table in
//! [`expected`] says — kv's answer except where its one defect applies — its state is kv's (or
//! kv-v2's layout of kv's), and each defect shows about as often as the crate docs claim.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use arbor_guest::abi::{ERR_INIT_FAILED, ERR_RESTORE_REJECTED};
use arbor_guest::testing::Harness;
use arbor_guest::{decode, encode};
use kv::Kv;
use kv_hostile::{
    AGING_CALLS, Instance, KvHostile, LONG_VALUE_BYTES, Variant, WRONG, handle_as, is_spiky,
    lost_in_migration, restore_as, snapshot_as, traps_on_put,
};
use kv_store::{KvMsg, KvReply, Store, fnv1a};
use kv_v2::KvV2;
use support::Rng;

const SEED: u64 = 0x0bad_cafe;
/// More than [`AGING_CALLS`], so `Aging` shows its defect.
const COUNT: usize = 5_000;

/// Keys under a few prefixes, `zz` (RarePrefix's) among them, so gets hit and miss.
fn key(rng: &mut Rng) -> String {
    let prefix = ["user", "order", "zz", "zzz", "z", "item"][rng.below(6) as usize];
    format!("{prefix}/{}", rng.below(150))
}

/// Short values and values longer than [`LONG_VALUE_BYTES`], about half each.
fn value(rng: &mut Rng) -> String {
    let n = rng.below(1_000_000);
    if rng.below(2) == 0 {
        format!("v{n}")
    } else {
        format!("a-longer-value-{n}")
    }
}

fn messages(seed: u64, count: usize) -> Vec<KvMsg> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| match rng.below(100) {
            0..=34 => KvMsg::Get { key: key(&mut rng) },
            35..=74 => KvMsg::Put {
                key: key(&mut rng),
                value: value(&mut rng),
            },
            75..=89 => KvMsg::Delete { key: key(&mut rng) },
            _ => {
                let mut prefix = key(&mut rng);
                prefix.truncate(rng.below(prefix.len() as u64 + 1) as usize);
                KvMsg::Scan {
                    prefix,
                    limit: rng.below(12) as u32,
                }
            }
        })
        .collect()
}

/// What a variant must do with one message, given kv's answer to it.
#[derive(Debug, PartialEq)]
enum Expected {
    /// Answer exactly this.
    Reply(KvReply),
    /// Trap (a panic, natively); the message is not applied.
    Trap,
    /// Answer something of the same kind that is not kv's answer.
    WrongOfTheSameKind,
}

/// The decision table: for the `call`-th message (1-based) of an instance, whose memory probe
/// found `big_memory`, what `variant` must do where kv answers `kv`.
fn expected(variant: Variant, call: u64, big_memory: bool, msg: &KvMsg, kv: &KvReply) -> Expected {
    let nil = || Expected::Reply(KvReply::Value { value: None });
    match (variant, msg) {
        (Variant::RarePrefix, KvMsg::Get { key }) if key.starts_with("zz") => nil(),
        (Variant::RareTrap, KvMsg::Put { key, value }) if traps_on_put(key, value) => {
            Expected::Trap
        }
        (Variant::MemoryProbe, KvMsg::Get { .. }) if big_memory => nil(),
        (Variant::Aging, KvMsg::Get { .. }) if call > AGING_CALLS => nil(),
        (Variant::AllWrong, _) => Expected::WrongOfTheSameKind,
        _ => Expected::Reply(kv.clone()),
    }
}

fn same_kind(a: &KvReply, b: &KvReply) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// What running a variant against kv found.
struct Run {
    /// The variant's store afterwards.
    store: Store,
    /// kv's, having skipped the messages the variant trapped on.
    kv: Harness<Kv>,
    /// How many replies differed from kv's, and how many messages trapped.
    wrong: usize,
    trapped: usize,
}

/// Runs `msgs` through `variant` (in `instance`) and kv side by side, checking every reply
/// against [`expected`].
fn run(variant: Variant, mut instance: Instance, msgs: &[KvMsg]) -> Run {
    let kv = Harness::<Kv>::initialised();
    let mut store = Store::default();
    let (mut wrong, mut trapped) = (0, 0);
    for (index, msg) in msgs.iter().enumerate() {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            handle_as(variant, &mut instance, &mut store, msg.clone())
        }));
        let Ok(reply) = outcome else {
            // A trap would end the instance; natively the message simply was not applied.
            assert_eq!(
                expected(variant, 0, false, msg, &KvReply::Value { value: None }),
                Expected::Trap,
                "{variant:?} trapped on message {index}: {msg:?}"
            );
            trapped += 1;
            continue;
        };
        let want: KvReply = kv.call(msg).unwrap();
        let big_memory = instance.big_memory.unwrap_or(false);
        match expected(variant, instance.handled, big_memory, msg, &want) {
            Expected::Reply(expected) => assert_eq!(
                reply, expected,
                "{variant:?}, message {index}: {msg:?} (kv: {want:?})"
            ),
            Expected::Trap => panic!("{variant:?} did not trap on message {index}: {msg:?}"),
            Expected::WrongOfTheSameKind => {
                assert_ne!(reply, want, "{variant:?}, message {index}: {msg:?}");
                assert!(
                    same_kind(&reply, &want),
                    "{variant:?}: {reply:?} for {msg:?}"
                );
            }
        }
        wrong += usize::from(reply != want);
    }
    Run {
        store,
        kv,
        wrong,
        trapped,
    }
}

fn entries(store: &Store) -> BTreeMap<String, String> {
    store.entries().clone()
}

#[test]
fn every_variant_answers_as_the_table_says_and_keeps_kvs_state() {
    let msgs = messages(SEED, COUNT);
    for variant in Variant::ALL {
        let run = run(variant, Instance::new(), &msgs);
        let kv_state = run.kv.snapshot().unwrap();
        let state = snapshot_as(variant, &run.store).unwrap();
        if variant.has_v2_layout() {
            // kv-v2's layout of the same entries, byte for byte.
            let v2 = Harness::<KvV2>::new();
            v2.restore(&kv_state).unwrap();
            assert_eq!(state, v2.snapshot().unwrap(), "{variant:?}");
        } else {
            assert_eq!(state, kv_state, "{variant:?}");
        }
        let expect_wrong = matches!(
            variant,
            Variant::RarePrefix | Variant::Aging | Variant::AllWrong
        );
        assert_eq!(run.wrong > 0, expect_wrong, "{variant:?}: {}", run.wrong);
        assert_eq!(run.trapped > 0, variant == Variant::RareTrap, "{variant:?}");
        println!(
            "{variant:?}: {} of {COUNT} replies wrong, {} trapped",
            run.wrong, run.trapped
        );
    }
}

#[test]
fn the_exported_agent_unpatched_is_kv() {
    let msgs = messages(SEED, 1_000);
    let hostile = Harness::<KvHostile>::initialised();
    let kv = Harness::<Kv>::initialised();
    for msg in &msgs {
        assert_eq!(
            hostile.call::<_, KvReply>(msg).unwrap(),
            kv.call::<_, KvReply>(msg).unwrap()
        );
    }
    let state = kv.snapshot().unwrap();
    assert_eq!(hostile.snapshot().unwrap(), state);
    let restored = Harness::<KvHostile>::new();
    restored.restore(&state).unwrap();
    assert_eq!(restored.snapshot().unwrap(), state);
    assert_eq!(hostile.init(b"x").unwrap_err().code, ERR_INIT_FAILED);
}

#[test]
fn lossy_variants_lose_exactly_their_entries_when_migrating_kvs_state() {
    let (_, kv_state, kv_entries) = filled_kv(2_000);
    for variant in [Variant::LossyLongValues, Variant::LossyKeys] {
        let store = restore_as(variant, &kv_state).unwrap();
        let kept: BTreeMap<String, String> = kv_entries
            .iter()
            .filter(|(key, value)| !lost_in_migration(variant, key, value))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        assert_eq!(entries(&store), kept, "{variant:?}");
        let lost = kv_entries.len() - kept.len();
        assert!(lost > 0 && !kept.is_empty(), "{variant:?}: lost {lost}");
        println!(
            "{variant:?}: migration lost {lost} of {} entries",
            kv_entries.len()
        );

        // Its own layout restores whole.
        let own = snapshot_as(variant, &Store::from(kv_entries.clone())).unwrap();
        assert_eq!(entries(&restore_as(variant, &own).unwrap()), kv_entries);
    }
    for (key, value) in &kv_entries {
        assert_eq!(
            lost_in_migration(Variant::LossyLongValues, key, value),
            value.len() > LONG_VALUE_BYTES
        );
        assert_eq!(
            lost_in_migration(Variant::LossyKeys, key, value),
            fnv1a(key).is_multiple_of(3)
        );
    }
}

#[test]
fn after_a_lossy_migration_answers_are_right_for_what_was_kept() {
    let (_, kv_state, _) = filled_kv(1_000);
    let later = messages(SEED + 1, 2_000);
    for variant in [Variant::LossyLongValues, Variant::LossyKeys] {
        let mut store = restore_as(variant, &kv_state).unwrap();
        // kv holding exactly what the variant kept answers what the variant answers.
        let kv = Harness::<Kv>::new();
        kv.restore(&encode(&store).unwrap()).unwrap();
        let mut instance = Instance::new();
        for msg in &later {
            let reply = handle_as(variant, &mut instance, &mut store, msg.clone());
            assert_eq!(reply, kv.call::<_, KvReply>(msg).unwrap(), "{variant:?}");
        }
    }
}

#[test]
fn restores_refuse_what_kv_and_kv_v2_refuse() {
    let v2_state = Harness::<KvV2>::initialised().snapshot().unwrap();
    #[derive(serde::Serialize)]
    struct Layout {
        version: u32,
        entries: BTreeMap<String, String>,
    }
    let future = encode(&Layout {
        version: 3,
        entries: BTreeMap::new(),
    })
    .unwrap();
    for variant in Variant::ALL {
        if variant.has_v2_layout() {
            let err = restore_as(variant, &future).unwrap_err();
            assert!(
                err.contains("unknown kv state version 3"),
                "{variant:?}: {err}"
            );
            assert!(restore_as(variant, &v2_state).is_ok());
        } else {
            // No downgrades, as for kv.
            assert!(restore_as(variant, &v2_state).is_err(), "{variant:?}");
        }
        assert!(restore_as(variant, &[0xc1]).is_err(), "{variant:?}");
    }
    assert_eq!(
        Harness::<KvHostile>::new()
            .restore(&v2_state)
            .unwrap_err()
            .code,
        ERR_RESTORE_REJECTED
    );
}

#[test]
fn rare_trap_traps_on_about_one_put_in_500() {
    let mut rng = Rng(SEED);
    let puts = 200_000;
    let traps = (0..puts)
        .filter(|_| traps_on_put(&key(&mut rng), &value(&mut rng)))
        .count();
    let rate = traps as f64 / puts as f64;
    println!(
        "RareTrap: {traps} of {puts} puts trap (1 in {:.0})",
        1.0 / rate
    );
    assert!((0.0015..0.0025).contains(&rate), "{traps} of {puts}");

    // Key then value, as one hash: not the key's or the value's alone.
    let (key, value) = (0..)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .find(|(key, value)| traps_on_put(key, value))
        .unwrap();
    assert!(fnv1a(&format!("{key}{value}")).is_multiple_of(500));
    let mut store = Store::default();
    let put = KvMsg::Put { key, value };
    let trapped = catch_unwind(AssertUnwindSafe(|| {
        handle_as(
            Variant::RareTrap,
            &mut Instance::new(),
            &mut store,
            put.clone(),
        )
    }));
    assert!(trapped.is_err());
    assert!(store.entries().is_empty(), "the trapping Put was applied");
    handle_as(Variant::Kv, &mut Instance::new(), &mut store, put);
}

#[test]
fn lossy_keys_drops_about_a_third_and_spiky_spikes_on_about_a_tenth() {
    let keys: Vec<String> = (0..30_000).map(|i| format!("key/{i}")).collect();
    let lossy = keys
        .iter()
        .filter(|key| lost_in_migration(Variant::LossyKeys, key, ""))
        .count();
    assert!((9_500..10_500).contains(&lossy), "{lossy} of 30000");

    let msgs = messages(SEED, 30_000);
    let spiky = msgs.iter().filter(|msg| is_spiky(msg)).count();
    println!("LossyKeys drops {lossy} of 30000 keys; Spiky spikes on {spiky} of 30000 inputs");
    assert!((2_500..3_500).contains(&spiky), "{spiky} of 30000");
}

#[test]
fn memory_probe_goes_wrong_only_where_it_got_big_memory() {
    let msgs = messages(SEED, 1_000);
    // Natively the probe always finds a small cap: kv.
    let small = run(Variant::MemoryProbe, Instance::new(), &msgs);
    assert_eq!(small.wrong, 0);
    let probed = Instance {
        handled: 0,
        big_memory: Some(true),
    };
    let big = run(Variant::MemoryProbe, probed, &msgs);
    assert!(big.wrong > 0);
    assert_eq!(entries(&big.store), entries(&small.store));
}

#[test]
fn aging_counts_per_instance_not_per_state() {
    let msgs = messages(SEED, AGING_CALLS as usize + 500);
    let old = run(Variant::Aging, Instance::new(), &msgs);
    assert!(old.wrong > 0);
    // A fresh instance restored from the old one's state starts counting from 0 again.
    let state = snapshot_as(Variant::Aging, &old.store).unwrap();
    let mut store = restore_as(Variant::Aging, &state).unwrap();
    let mut fresh = Instance::new();
    for msg in &msgs[..AGING_CALLS as usize] {
        let want = old.kv.call::<_, KvReply>(msg).unwrap();
        assert_eq!(
            handle_as(Variant::Aging, &mut fresh, &mut store, msg.clone()),
            want
        );
    }
    let present = store.entries().keys().next().cloned().unwrap();
    assert_eq!(
        handle_as(
            Variant::Aging,
            &mut fresh,
            &mut store,
            KvMsg::Get { key: present }
        ),
        KvReply::Value { value: None }
    );
}

#[test]
fn all_wrong_is_wrong_even_where_the_obvious_lie_is_true() {
    let mut store = Store::default();
    let mut instance = Instance::new();
    let mut send = |msg: KvMsg| handle_as(Variant::AllWrong, &mut instance, &mut store, msg);
    assert_eq!(
        send(KvMsg::Scan {
            prefix: "p".into(),
            limit: 0
        }),
        KvReply::Entries {
            entries: vec![kv_store::Entry {
                key: "p".into(),
                value: WRONG.into()
            }]
        }
    );
    assert_eq!(
        send(KvMsg::Put {
            key: "k".into(),
            value: WRONG.into()
        }),
        KvReply::Stored { replaced: true }
    );
    assert_eq!(
        send(KvMsg::Get { key: "k".into() }),
        KvReply::Value { value: None }
    );
    assert_eq!(
        send(KvMsg::Get {
            key: "absent".into()
        }),
        KvReply::Value {
            value: Some(WRONG.into())
        }
    );
}

/// kv after `puts` generated Puts: the harness, its state bytes and its entries.
fn filled_kv(puts: usize) -> (Harness<Kv>, Vec<u8>, BTreeMap<String, String>) {
    let kv = Harness::<Kv>::initialised();
    let mut rng = Rng(SEED ^ 0x5eed);
    for _ in 0..puts {
        let put = KvMsg::Put {
            key: key(&mut rng),
            value: value(&mut rng),
        };
        kv.call::<_, KvReply>(&put).unwrap();
    }
    let state = kv.snapshot().unwrap();
    let entries = decode(&state).unwrap();
    (kv, state, entries)
}
