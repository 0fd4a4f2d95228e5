//! Vault checkpoint save and restore beside a raw-file baseline, in the same run.
//!
//! - `save/zstdN`: compress + put (metadata and state in one sled transaction) + `flush`.
//! - `save_sync/zstd3`: the same plus `sync` (fsync of every sled file): power-loss durable.
//! - `restore/zstdN`: get + verify both frame checksums + decompress + verify the state checksum.
//! - `raw_save`: write the uncompressed bytes to a file + fsync. `raw_restore`: read them back.
//!
//! The state is a realistic key-value agent state in MessagePack (rmp-serde, named fields):
//! entries with varied keys, names, e-mails, notes, tokens, numbers, histories and attribute
//! maps — not zeros or repeated bytes. Compression ratios are printed once per size and level.
//!
//! Run: `cargo bench --bench vault`. Results and the table: `benches/README.md`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use arbor_vault::{AgentId, Config, ModuleHash, NewCheckpoint, Vault};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use serde::Serialize;

#[derive(Serialize)]
struct KvState {
    schema: u32,
    entries: Vec<Entry>,
    counters: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Entry {
    key: String,
    value: Profile,
    updated_at_ms: u64,
    version: u32,
    tags: Vec<String>,
    attrs: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Profile {
    name: String,
    email: String,
    score: f64,
    balance_cents: i64,
    active: bool,
    session: String,
    history: Vec<u32>,
    note: String,
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const SYLLABLES: [&str; 24] = [
    "ka", "ri", "mo", "ten", "sha", "lu", "vor", "el", "na", "dri", "pa", "sto", "qui", "ber",
    "an", "zo", "mel", "tri", "os", "fa", "gen", "ul", "wen", "ix",
];
const WORDS: [&str; 48] = [
    "order",
    "shipped",
    "pending",
    "refund",
    "invoice",
    "customer",
    "warehouse",
    "delayed",
    "priority",
    "express",
    "return",
    "address",
    "updated",
    "payment",
    "failed",
    "retry",
    "approved",
    "review",
    "quota",
    "limit",
    "region",
    "eu-west",
    "us-east",
    "cart",
    "discount",
    "coupon",
    "expired",
    "renewal",
    "annual",
    "monthly",
    "trial",
    "upgrade",
    "support",
    "ticket",
    "escalated",
    "resolved",
    "feedback",
    "rating",
    "the",
    "and",
    "for",
    "with",
    "after",
    "before",
    "again",
    "note",
    "call",
    "email",
];
const TAGS: [&str; 12] = [
    "vip",
    "beta",
    "churn-risk",
    "new",
    "enterprise",
    "free",
    "team",
    "mobile",
    "web",
    "api",
    "eu",
    "us",
];
const DOMAINS: [&str; 6] = [
    "example.com",
    "mail.test",
    "corp.invalid",
    "inbox.example",
    "shop.test",
    "co.example",
];

fn name(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..2 + rng.below(2) {
        s.push_str(rng.pick(&SYLLABLES));
    }
    s
}

fn entry(rng: &mut Rng, i: u64) -> Entry {
    let first = name(rng);
    let last = name(rng);
    let note_words = 4 + rng.below(20);
    let note = (0..note_words)
        .map(|_| rng.pick(&WORDS))
        .collect::<Vec<_>>()
        .join(" ");
    let mut attrs = BTreeMap::new();
    for _ in 0..rng.below(4) {
        attrs.insert(
            rng.pick(&WORDS).to_owned(),
            format!("{}-{}", rng.pick(&WORDS), rng.below(10_000)),
        );
    }
    Entry {
        key: match rng.below(3) {
            0 => format!("user:{:08}:profile", i * 7 + rng.below(7)),
            1 => format!("order:{}:{}", rng.below(1 << 40), rng.pick(&WORDS)),
            _ => format!("cart:{first}-{}", rng.below(1000)),
        },
        value: Profile {
            email: format!("{first}.{last}@{}", rng.pick(&DOMAINS)),
            name: format!("{first} {last}"),
            score: rng.below(1_000_000) as f64 / 1000.0,
            balance_cents: rng.below(10_000_000) as i64 - 2_000_000,
            active: rng.below(4) != 0,
            session: format!("{:016x}{:016x}", rng.next(), rng.next()),
            history: (0..rng.below(12))
                .map(|_| rng.below(100_000) as u32)
                .collect(),
            note,
        },
        updated_at_ms: 1_790_000_000_000 + rng.below(90 * 86_400_000),
        version: rng.below(50) as u32,
        tags: (0..rng.below(4))
            .map(|_| rng.pick(&TAGS).to_owned())
            .collect(),
        attrs,
    }
}

/// A MessagePack KV state of about `target` bytes.
fn kv_state(target: usize) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target as u64);
    let mut entries = Vec::new();
    let mut size = 0;
    while size < target {
        let e = entry(&mut rng, entries.len() as u64);
        size += rmp_serde::to_vec_named(&e).map(|v| v.len()).unwrap_or(64);
        entries.push(e);
    }
    let counters = (0..64)
        .map(|i| {
            (
                format!("counter.{}.{i}", WORDS[i % WORDS.len()]),
                rng.below(1 << 32),
            )
        })
        .collect();
    let state = KvState {
        schema: 3,
        entries,
        counters,
    };
    rmp_serde::to_vec_named(&state).expect("state serializes")
}

fn human(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{}MiB", bytes >> 20)
    } else {
        format!("{}KiB", bytes >> 10)
    }
}

fn raw_baseline(c: &mut Criterion, dir: &Path, label: &str, state: &[u8], slow: bool) {
    let mut group = c.benchmark_group(format!("vault/{label}"));
    configure(&mut group, state.len(), slow);
    let file = dir.join(format!("raw-{label}"));
    group.bench_function("raw_save", |b| {
        b.iter(|| {
            let mut f = std::fs::File::create(&file).expect("create");
            f.write_all(state).expect("write");
            f.sync_all().expect("fsync");
        })
    });
    group.bench_function("raw_restore", |b| {
        b.iter(|| black_box(std::fs::read(&file).expect("read")))
    });
    group.finish();
}

fn configure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    bytes: usize,
    slow: bool,
) {
    group.throughput(Throughput::Bytes(bytes as u64));
    if slow {
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
    } else {
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
    }
}

fn vault_cases(c: &mut Criterion, dir: &Path, label: &str, state: &[u8], slow: bool) {
    let agent = AgentId::new("kv-bench").expect("agent id");
    let module = ModuleHash::of(b"kv bench module");
    for level in [1, 3, 9] {
        let vault = Vault::open(
            dir.join(format!("vault-{label}-{level}")),
            Config::default().zstd_level(level),
        )
        .expect("open vault");
        let mut lsn = 0u64;
        let mut save = |vault: &Vault, sync: bool| {
            lsn += 1;
            let start = Instant::now();
            vault
                .put_checkpoint(&NewCheckpoint {
                    agent: &agent,
                    lsn,
                    seq: 0,
                    module,
                    abi_version: 1,
                    state_schema: 3,
                    state,
                })
                .expect("put");
            if sync {
                vault.sync().expect("sync");
            } else {
                vault.flush().expect("flush");
            }
            let took = start.elapsed();
            // Untimed: keep the database from growing without bound.
            vault.retain(&agent, 2).expect("retain");
            took
        };
        save(&vault, false);
        let meta = vault.latest_meta(&agent).expect("meta").expect("stored");
        eprintln!(
            "vault/{label} zstd {level}: {} -> {} bytes, ratio {:.2}",
            meta.uncompressed_bytes,
            meta.compressed_bytes,
            meta.compression_ratio()
        );

        let mut group = c.benchmark_group(format!("vault/{label}"));
        configure(&mut group, state.len(), slow);
        group.bench_function(BenchmarkId::new("save", format!("zstd{level}")), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| save(&vault, false)).sum())
        });
        if level == 3 {
            group.bench_function(BenchmarkId::new("save_sync", "zstd3"), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| save(&vault, true)).sum())
            });
        }
        group.bench_function(BenchmarkId::new("restore", format!("zstd{level}")), |b| {
            b.iter(|| {
                let checkpoint = vault.latest(&agent).expect("get").expect("stored");
                assert_eq!(checkpoint.state.len(), state.len());
                black_box(checkpoint)
            })
        });
        group.finish();
    }
}

fn checkpoints(c: &mut Criterion) {
    let dir = tempfile::Builder::new()
        .prefix("arbor-vault-bench")
        .tempdir_in(std::env::temp_dir())
        .expect("tempdir");
    for (bytes, slow) in [(100 << 10, false), (10 << 20, true)] {
        let state = kv_state(bytes);
        let label = human(bytes);
        eprintln!(
            "vault/{label}: MessagePack KV state of {} bytes",
            state.len()
        );
        raw_baseline(c, dir.path(), &label, &state, slow);
        vault_cases(c, dir.path(), &label, &state, slow);
    }
}

criterion_group!(benches, checkpoints);
criterion_main!(benches);
