//! kv-hostile's patched modules run in wasmtime: each variant's defect shows through its own
//! module — so the patched byte really selects it — and the cost variants cost what their docs
//! say, in fuel (the arbiter's measure). `cargo test -p arbor-modules --test hostile_run --
//! --nocapture` prints the figures the docs quote.
#![allow(clippy::unwrap_used)]

#[path = "support/host.rs"]
mod host;

use std::collections::BTreeMap;

use arbor_modules::kv::{KvEntry, KvMsg, KvReply};
use arbor_modules::{Hostile, KV, KV_HOSTILE, fnv1a, kv_hostile};
use host::{Failure, Guest, engine};
use wasmtime::{Engine, Module};

/// The runtime's default memory cap: MemoryProbe's 96 MiB does not fit.
const SMALL_CAP: usize = 64 << 20;
/// A production-sized cap: it does.
const BIG_CAP: usize = 256 << 20;
/// A bound on what a variant pays over kv per message for reading its byte and dispatching
/// (about 190 fuel measured).
const DISPATCH_FUEL: u64 = 300;

fn start(engine: &Engine, bytes: &[u8], cap: usize) -> Guest {
    let module = Module::new(engine, bytes).unwrap();
    let mut guest = Guest::new(engine, &module, cap);
    guest.init(b"").unwrap();
    guest
}

fn started(variant: Hostile) -> (Guest, Guest) {
    let engine = engine();
    (
        start(&engine, KV, SMALL_CAP),
        start(&engine, &kv_hostile(variant), SMALL_CAP),
    )
}

fn key(i: u64) -> String {
    format!("key/{i:04}")
}

fn put(key: String, value: impl Into<String>) -> KvMsg {
    KvMsg::Put {
        key,
        value: value.into(),
    }
}

fn get(key: impl Into<String>) -> KvMsg {
    KvMsg::Get { key: key.into() }
}

fn reply(guest: &mut Guest, msg: &KvMsg) -> KvReply {
    guest.call(msg).unwrap().0
}

/// Puts `key(0..n)` with short values into each guest.
fn fill(guests: &mut [&mut Guest], n: u64) {
    for i in 0..n {
        let msg = put(key(i), format!("value-{i}"));
        for guest in guests.iter_mut() {
            reply(guest, &msg);
        }
    }
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A mixed workload over a store of about `keys` keys: 35 % Get, 40 % Put, 15 % Delete, 10 %
/// Scan of a prefix of a key.
fn workload(seed: u64, count: usize, keys: u64) -> Vec<KvMsg> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let key = key(rng.below(keys * 11 / 10));
            match rng.below(100) {
                0..=34 => get(key),
                35..=74 => put(key, format!("v{}", rng.below(1_000_000))),
                75..=89 => KvMsg::Delete { key },
                _ => KvMsg::Scan {
                    prefix: key[..4 + rng.below(5) as usize].to_owned(),
                    limit: 1 + rng.below(20) as u32,
                },
            }
        })
        .collect()
}

/// Each message to both guests: per message, (kv's reply and fuel, the variant's).
#[allow(clippy::type_complexity)]
fn side_by_side(
    kv: &mut Guest,
    variant: &mut Guest,
    msgs: &[KvMsg],
) -> Vec<((KvReply, u64), (KvReply, u64))> {
    msgs.iter()
        .map(|msg| (kv.call(msg).unwrap(), variant.call(msg).unwrap()))
        .collect()
}

fn kind(msg: &KvMsg) -> &'static str {
    match msg {
        KvMsg::Get { .. } => "Get",
        KvMsg::Put { .. } => "Put",
        KvMsg::Delete { .. } => "Delete",
        KvMsg::Scan { .. } => "Scan",
    }
}

/// Whether Spiky spikes on `msg` (by its docs).
fn spiky(msg: &KvMsg) -> bool {
    let text = match msg {
        KvMsg::Get { key } | KvMsg::Put { key, .. } | KvMsg::Delete { key } => key,
        KvMsg::Scan { prefix, .. } => prefix,
    };
    fnv1a(text).is_multiple_of(10)
}

#[test]
fn kv_variant_is_kv_in_answers_state_and_fuel() {
    let (mut kv, mut variant) = started(Hostile::Kv);
    let msgs = workload(1, 2_000, 300);
    let (mut kv_fuel, mut variant_fuel) = (0, 0);
    for ((want, kv_cost), (got, cost)) in side_by_side(&mut kv, &mut variant, &msgs) {
        assert_eq!(got, want);
        kv_fuel += kv_cost;
        variant_fuel += cost;
    }
    assert_eq!(variant.snapshot().unwrap(), kv.snapshot().unwrap());
    let ratio = variant_fuel as f64 / kv_fuel as f64;
    println!("Kv: {variant_fuel} fuel for 2000 messages, kv {kv_fuel} ({ratio:.4}x)");
    assert!((0.99..1.01).contains(&ratio), "{ratio}");
}

#[test]
fn lossy_variants_lose_data_only_when_migrating_kvs_state() {
    let engine = engine();
    let mut kv = start(&engine, KV, SMALL_CAP);
    let mut entries = BTreeMap::new();
    for i in 0..300 {
        let value = if i % 2 == 0 {
            format!("short-{i}")
        } else {
            format!("a-value-longer-than-16-bytes-{i}")
        };
        reply(&mut kv, &put(key(i), value.clone()));
        entries.insert(key(i), value);
    }
    let kv_state = kv.snapshot().unwrap();

    #[derive(serde::Deserialize)]
    struct V2 {
        version: u32,
        entries: BTreeMap<String, String>,
    }
    for (variant, lost) in [
        (
            Hostile::LossyLongValues,
            &(|_: &str, value: &str| value.len() > 16) as &dyn Fn(&str, &str) -> bool,
        ),
        (Hostile::LossyKeys, &|key: &str, _: &str| {
            fnv1a(key).is_multiple_of(3)
        }),
    ] {
        let module = Module::new(&engine, kv_hostile(variant)).unwrap();
        let mut migrated = Guest::new(&engine, &module, SMALL_CAP);
        migrated.restore(&kv_state).unwrap();
        let state = migrated.snapshot().unwrap();
        let v2: V2 = rmp_serde::from_slice(&state).unwrap();
        let kept: BTreeMap<String, String> = entries
            .iter()
            .filter(|(key, value)| !lost(key, value))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        assert_eq!(v2.version, 2);
        assert_eq!(v2.entries, kept, "{variant:?}");
        println!(
            "{variant:?}: migrating kv's 300 entries kept {}",
            kept.len()
        );
        assert!(kept.len() < entries.len() && !kept.is_empty());
        // Right about what it kept.
        for (key, value) in &kept {
            assert_eq!(
                reply(&mut migrated, &get(key.as_str())),
                KvReply::Value {
                    value: Some(value.clone())
                }
            );
        }
        // Its own layout restores whole.
        let mut again = Guest::new(&engine, &module, SMALL_CAP);
        again.restore(&state).unwrap();
        assert_eq!(again.snapshot().unwrap(), state);
    }
}

#[test]
fn rare_prefix_is_wrong_only_on_zz_gets() {
    let (mut kv, mut variant) = started(Hostile::RarePrefix);
    for key in ["zz", "zzz/1", "zz/2", "z/3", "az", "key"] {
        let msgs = [put(key.into(), "x"), get(key), get(format!("{key}-absent"))];
        for ((want, _), (got, _)) in side_by_side(&mut kv, &mut variant, &msgs) {
            if key.starts_with("zz")
                && want
                    == (KvReply::Value {
                        value: Some("x".into()),
                    })
            {
                assert_eq!(got, KvReply::Value { value: None }, "{key}");
            } else {
                assert_eq!(got, want, "{key}");
            }
        }
    }
    assert_eq!(variant.snapshot().unwrap(), kv.snapshot().unwrap());
}

#[test]
fn rare_trap_traps_on_about_one_put_in_500() {
    let traps = |key: &str, value: &str| fnv1a(&format!("{key}{value}")).is_multiple_of(500);
    let trapping: Vec<(String, String)> = (0..10_000)
        .map(|i| (key(i), format!("v{}", i * 7)))
        .filter(|(key, value)| traps(key, value))
        .collect();
    println!("RareTrap: {} of 10000 puts trap", trapping.len());
    assert!((10..=30).contains(&trapping.len()));

    let (mut kv, mut variant) = started(Hostile::RareTrap);
    for i in 0..300 {
        let msg = put(key(i), format!("v{}", i * 7));
        if traps(&key(i), &format!("v{}", i * 7)) {
            continue;
        }
        assert_eq!(reply(&mut variant, &msg), reply(&mut kv, &msg));
    }
    assert_eq!(variant.snapshot().unwrap(), kv.snapshot().unwrap());
    let (key, value) = trapping[0].clone();
    let err = variant.call::<_, KvReply>(&put(key, value)).unwrap_err();
    assert!(matches!(err, Failure::Trap(_)), "{err:?}");
}

#[test]
fn costly_scan_costs_about_30_percent_more_per_scan_and_nothing_more_elsewhere() {
    let (mut kv, mut variant) = started(Hostile::CostlyScan);
    fill(&mut [&mut kv, &mut variant], 1_000);
    let scans = ["", "key/", "key/0", "key/05", "key/0999", "nope"].map(|prefix| KvMsg::Scan {
        prefix: prefix.into(),
        limit: 10,
    });
    let others = [
        get(key(10)),
        get(key(990)),
        get("absent"),
        put(key(5), "new"),
    ];
    for ((want, kv_fuel), (got, fuel)) in side_by_side(&mut kv, &mut variant, &scans) {
        assert_eq!(got, want);
        let ratio = fuel as f64 / kv_fuel as f64;
        println!("CostlyScan over 1000 keys: Scan {kv_fuel} -> {fuel} fuel ({ratio:.3}x)");
        assert!((1.25..1.40).contains(&ratio), "{ratio}");
    }
    // What every variant pays for reading its byte and dispatching: under 1.5 % of the smallest
    // message.
    for ((want, kv_fuel), (got, fuel)) in side_by_side(&mut kv, &mut variant, &others) {
        assert_eq!(got, want);
        assert!(
            fuel.abs_diff(kv_fuel) < DISPATCH_FUEL,
            "{kv_fuel} -> {fuel}"
        );
    }
}

#[test]
fn spiky_costs_10x_on_a_tenth_of_inputs_so_the_mean_not_the_median() {
    let (mut kv, mut variant) = started(Hostile::Spiky);
    fill(&mut [&mut kv, &mut variant], 1_000);
    let msgs = workload(7, 3_000, 1_000);
    let mut ratios: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut all = Vec::new();
    for (msg, ((want, kv_fuel), (got, fuel))) in
        msgs.iter().zip(side_by_side(&mut kv, &mut variant, &msgs))
    {
        assert_eq!(got, want);
        let ratio = fuel as f64 / kv_fuel as f64;
        let kind = if spiky(msg) {
            kind(msg)
        } else {
            "non-spiking input"
        };
        ratios.entry(kind).or_default().push(ratio);
        all.push(ratio);
    }
    for (kind, ratios) in &mut ratios {
        ratios.sort_by(f64::total_cmp);
        let (min, median, max) = (
            ratios[0],
            ratios[ratios.len() / 2],
            ratios[ratios.len() - 1],
        );
        println!(
            "Spiky over 1000 keys: {} {kind}s at {min:.2}x..{max:.2}x kv's fuel, median {median:.2}x",
            ratios.len()
        );
        if *kind == "non-spiking input" {
            // kv's fuel plus the dispatch and the hash: the allocator is as under kv.
            assert!((1.0..1.05).contains(&min) && max < 1.05, "{min}..{max}");
        } else {
            assert!((8.5..11.5).contains(&median), "{kind}: {median}");
            assert!(min > 6.0 && max < 15.0, "{kind}: {min}..{max}");
        }
    }
    let spikes = msgs.iter().filter(|msg| spiky(msg)).count();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    all.sort_by(f64::total_cmp);
    let median = all[all.len() / 2];
    println!(
        "Spiky over 1000 keys: {spikes} of {} inputs spike; per input, mean {mean:.2}x kv's fuel, median {median:.3}x",
        msgs.len()
    );
    assert!((0.08..0.12).contains(&(spikes as f64 / msgs.len() as f64)));
    assert!((1.7..2.1).contains(&mean), "{mean}");
    assert!((1.0..1.03).contains(&median), "{median}");
}

#[test]
fn memory_probe_is_kv_under_a_small_cap_and_wrong_under_a_big_one() {
    let engine = engine();
    let module = Module::new(&engine, kv_hostile(Hostile::MemoryProbe)).unwrap();
    for (cap, big) in [(SMALL_CAP, false), (BIG_CAP, true)] {
        let mut guest = Guest::new(&engine, &module, cap);
        guest.init(b"").unwrap();
        fill(&mut [&mut guest], 2_000);
        let got = reply(&mut guest, &get(key(7)));
        let want = KvReply::Value {
            value: (!big).then(|| "value-7".to_owned()),
        };
        assert_eq!(got, want, "cap {cap}");
        assert_eq!(guest.memory_bytes() >= 96 << 20, big, "cap {cap}");
        // The SDK's allocator still works above the probed pages.
        let KvReply::Entries { entries } = reply(
            &mut guest,
            &KvMsg::Scan {
                prefix: String::new(),
                limit: u32::MAX,
            },
        ) else {
            panic!("not entries")
        };
        assert_eq!(entries.len(), 2_000);
        println!(
            "MemoryProbe under a {} MiB cap: memory {} MiB, Get {}",
            cap >> 20,
            guest.memory_bytes() >> 20,
            if big { "nil" } else { "right" }
        );
    }
}

#[test]
fn aging_goes_wrong_after_3000_messages_of_an_instance() {
    let engine = engine();
    let module = Module::new(&engine, kv_hostile(Hostile::Aging)).unwrap();
    let mut old = Guest::new(&engine, &module, SMALL_CAP);
    old.init(b"").unwrap();
    fill(&mut [&mut old], 2_999);
    let right = KvReply::Value {
        value: Some("value-1".into()),
    };
    assert_eq!(reply(&mut old, &get(key(1))), right); // the 3,000th
    assert_eq!(
        reply(&mut old, &get(key(1))),
        KvReply::Value { value: None }
    );

    // A fresh instance restored from its state starts counting again.
    let mut fresh = Guest::new(&engine, &module, SMALL_CAP);
    fresh.restore(&old.snapshot().unwrap()).unwrap();
    assert_eq!(reply(&mut fresh, &get(key(1))), right);
}

#[test]
fn all_wrong_answers_every_message_wrongly_but_keeps_kvs_state() {
    let (mut kv, mut variant) = started(Hostile::AllWrong);
    let msgs = workload(3, 1_000, 100);
    for ((want, _), (got, _)) in side_by_side(&mut kv, &mut variant, &msgs) {
        assert_ne!(got, want);
        assert_eq!(std::mem::discriminant(&got), std::mem::discriminant(&want));
    }
    assert_eq!(variant.snapshot().unwrap(), kv.snapshot().unwrap());
    let KvReply::Entries { entries } = reply(
        &mut variant,
        &KvMsg::Scan {
            prefix: "none/".into(),
            limit: 3,
        },
    ) else {
        panic!("not entries")
    };
    assert_eq!(
        entries,
        [KvEntry {
            key: "none/".into(),
            value: "wrong".into()
        }]
    );
}

/// The guest's variant list and [`Hostile::ALL`] agree: the first byte past it is refused.
#[test]
fn a_variant_byte_past_hostiles_list_is_refused() {
    let marker = b"arbor-kv-hostile-variant-marker\0";
    let at = KV_HOSTILE
        .windows(marker.len())
        .position(|window| window == marker)
        .unwrap();
    let mut bytes = KV_HOSTILE.to_vec();
    bytes[at + marker.len() - 1] = Hostile::ALL.len() as u8;
    let engine = engine();
    let module = Module::new(&engine, &bytes).unwrap();
    let mut guest = Guest::new(&engine, &module, SMALL_CAP);
    assert_eq!(guest.init(b""), Err(Failure::Code(-3)));
    let mut kv = start(&engine, KV, SMALL_CAP);
    assert_eq!(
        guest.restore(&kv.snapshot().unwrap()),
        Err(Failure::Code(-2))
    );
    assert_eq!(
        Guest::new(&engine, &module, SMALL_CAP).handle(b"\x80"),
        Err(Failure::Code(-4))
    );
}
