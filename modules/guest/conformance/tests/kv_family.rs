//! The kv variants against kv, natively, on a few thousand generated messages: who answers the
//! same, who differs and where, and whose state each can restore.
#![allow(clippy::unwrap_used)]

mod support;

use arbor_guest::Agent;
use arbor_guest::abi::ERR_RESTORE_REJECTED;
use arbor_guest::testing::Harness;
use kv::Kv;
use kv_badmigrate::KvBadMigrate;
use kv_buggy::{KvBuggy, is_unlucky};
use kv_placebo::KvPlacebo;
use kv_slow::KvSlow;
use kv_store::{KvMsg, KvReply};
use kv_v2::KvV2;
use support::Rng;

/// Keys from a space of 400 under a few prefixes, so gets hit and miss, scans match some.
fn key(rng: &mut Rng) -> String {
    let prefix = ["user", "order", "item", "u"][rng.below(4) as usize];
    format!("{prefix}/{}", rng.below(100))
}

fn messages(seed: u64, count: usize) -> Vec<KvMsg> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| match rng.below(100) {
            0..=34 => KvMsg::Get { key: key(&mut rng) },
            35..=74 => KvMsg::Put {
                key: key(&mut rng),
                value: format!("v{}", rng.below(1_000_000)),
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

fn replies<A: Agent<Msg = KvMsg, Reply = KvReply>>(
    agent: &Harness<A>,
    msgs: &[KvMsg],
) -> Vec<KvReply> {
    msgs.iter().map(|msg| agent.call(msg).unwrap()).collect()
}

fn run<A: Agent<Msg = KvMsg, Reply = KvReply>>(msgs: &[KvMsg]) -> (Vec<KvReply>, Harness<A>) {
    let agent = Harness::<A>::initialised();
    (replies(&agent, msgs), agent)
}

const SEED: u64 = 0x00c0_ffee;
const COUNT: usize = 5_000;

#[test]
fn v2_slow_placebo_and_badmigrate_answer_exactly_like_kv() {
    let msgs = messages(SEED, COUNT);
    let (expected, _) = run::<Kv>(&msgs);
    assert!(
        expected
            .iter()
            .any(|reply| matches!(reply, KvReply::Entries { entries } if entries.len() > 1))
    );
    assert!(
        expected
            .iter()
            .any(|reply| matches!(reply, KvReply::Value { value: Some(_) }))
    );
    assert_eq!(run::<KvV2>(&msgs).0, expected, "kv-v2");
    assert_eq!(run::<KvSlow>(&msgs[..500]).0, expected[..500], "kv-slow");
    assert_eq!(run::<KvPlacebo>(&msgs).0, expected, "kv-placebo");
    assert_eq!(run::<KvBadMigrate>(&msgs).0, expected, "kv-badmigrate");
}

#[test]
fn buggy_differs_only_on_gets_of_present_unlucky_keys() {
    let msgs = messages(SEED, COUNT);
    let (expected, _) = run::<Kv>(&msgs);
    let (buggy, _) = run::<KvBuggy>(&msgs);
    let mut wrong = 0;
    for ((msg, want), got) in msgs.iter().zip(&expected).zip(&buggy) {
        if want == got {
            continue;
        }
        wrong += 1;
        let KvMsg::Get { key } = msg else {
            panic!("{msg:?}: buggy answered {got:?}, kv {want:?}");
        };
        assert!(is_unlucky(key), "{key}");
        assert_eq!(got, &KvReply::Value { value: None });
    }
    let percent = wrong as f64 * 100.0 / COUNT as f64;
    assert!(
        wrong > 0 && percent < 2.0,
        "{wrong} wrong answers ({percent:.2}%)"
    );
}

#[test]
fn unlucky_keys_are_about_one_percent() {
    let unlucky = (0..100_000)
        .filter(|i| is_unlucky(&format!("key{i}")))
        .count();
    assert!((800..1200).contains(&unlucky), "{unlucky} of 100000");
}

#[test]
fn v1_variants_share_kvs_state_layout() {
    let msgs = messages(SEED, 1_000);
    let (_, kv) = run::<Kv>(&msgs);
    let state = kv.snapshot().unwrap();
    assert_eq!(run::<KvBuggy>(&msgs).1.snapshot().unwrap(), state);
    assert_eq!(run::<KvPlacebo>(&msgs).1.snapshot().unwrap(), state);
    assert_eq!(
        run::<KvSlow>(&msgs[..200]).1.snapshot().unwrap(),
        run::<Kv>(&msgs[..200]).1.snapshot().unwrap()
    );
}

#[test]
fn v2_migrates_kvs_state_and_carries_on_identically() {
    let msgs = messages(SEED, 4_000);
    let (before, after) = msgs.split_at(2_000);
    let (_, kv) = run::<Kv>(before);
    let v1_state = kv.snapshot().unwrap();

    let v2 = Harness::<KvV2>::new();
    v2.restore(&v1_state).unwrap();
    assert_eq!(replies(&v2, after), replies(&kv, after));

    // v2 writes its own layout, which it reads back to the same bytes.
    let v2_state = v2.snapshot().unwrap();
    assert_ne!(v2_state, kv.snapshot().unwrap());
    let again = Harness::<KvV2>::new();
    again.restore(&v2_state).unwrap();
    assert_eq!(again.snapshot().unwrap(), v2_state);
    // ... and with the same entries as kv's.
    let decoded: kv_v2::KvV2 = arbor_guest::decode(&v2_state).unwrap();
    let kv_entries: std::collections::BTreeMap<String, String> =
        arbor_guest::decode(&kv.snapshot().unwrap()).unwrap();
    assert_eq!(decoded.entries, kv_entries);
    assert_eq!(decoded.version, kv_v2::STATE_VERSION);
}

#[test]
fn v2_migrates_an_empty_kv() {
    let v2 = Harness::<KvV2>::new();
    v2.restore(&Harness::<Kv>::initialised().snapshot().unwrap())
        .unwrap();
    assert_eq!(
        v2.call::<_, KvReply>(&KvMsg::Get { key: "a".into() })
            .unwrap(),
        KvReply::Value { value: None }
    );
}

#[test]
fn v2_refuses_unknown_versions_and_kv_refuses_v2_state() {
    let future = arbor_guest::encode(&KvV2 {
        version: 3,
        entries: Default::default(),
    })
    .unwrap();
    let err = Harness::<KvV2>::new().restore(&future).unwrap_err();
    assert_eq!(err.code, ERR_RESTORE_REJECTED);
    assert!(err.message.contains("unknown kv state version 3"), "{err}");

    // No downgrades: rolling back means restoring kv's own older checkpoint.
    let v2_state = Harness::<KvV2>::initialised().snapshot().unwrap();
    assert_eq!(
        Harness::<Kv>::new().restore(&v2_state).unwrap_err().code,
        ERR_RESTORE_REJECTED
    );
}

#[test]
fn badmigrate_rejects_kvs_state_but_reads_its_own() {
    for msgs in [vec![], messages(SEED, 500)] {
        let (_, kv) = run::<Kv>(&msgs);
        let err = Harness::<KvBadMigrate>::new()
            .restore(&kv.snapshot().unwrap())
            .unwrap_err();
        assert_eq!(err.code, ERR_RESTORE_REJECTED);
        assert!(err.message.contains("schema"), "{err}");

        let (_, own) = run::<KvBadMigrate>(&msgs);
        let copy = Harness::<KvBadMigrate>::new();
        copy.restore(&own.snapshot().unwrap()).unwrap();
        assert_eq!(copy.snapshot().unwrap(), own.snapshot().unwrap());
    }
}
