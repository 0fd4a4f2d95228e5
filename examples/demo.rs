//! The arbor demo: `cargo run --release --example demo`.
//!
//! It grows with the project. Today it shows the storage foundation every agent stands on, with
//! real components and real crashes:
//!
//! 1. 64 concurrent writers journal inputs into the write-ahead log under group commit;
//! 2. a child process journals under `Always` and is killed with SIGKILL mid-write, several times;
//!    after each kill the log is reopened and every acknowledged record is checked to be there;
//! 3. the inputs are folded into an agent state, checkpointed (zstd) into the vault, and the WAL
//!    is released up to what the checkpoints safely cover;
//! 4. the state is recovered from the latest checkpoint plus a replay of the WAL after it, and
//!    compared with the state computed directly.
//!
//! It creates a fresh data directory under the system temp dir (printed; set `ARBOR_DEMO_DIR` to
//! choose one) and exits non-zero if any step does not do what it says.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arbor::vault::{self, AgentId, ModuleHash, NewCheckpoint, Vault};
use arbor::wal::{self, Durability, Wal};
use serde::{Deserialize, Serialize};

/// One journaled input: a deposit into an account of the demo's ledger agent.
#[derive(Debug, Serialize, Deserialize)]
struct Deposit {
    account: String,
    amount: u64,
}

/// The ledger agent's state: balance per account.
type Ledger = BTreeMap<String, u64>;

fn apply(ledger: &mut Ledger, payload: &[u8]) -> Result<(), String> {
    let deposit: Deposit =
        rmp_serde::from_slice(payload).map_err(|e| format!("bad record: {e}"))?;
    *ledger.entry(deposit.account).or_default() += deposit.amount;
    Ok(())
}

fn deposit(n: u64) -> Vec<u8> {
    let record = Deposit {
        account: format!("acct-{:02}", n % 37),
        amount: n % 1000 + 1,
    };
    rmp_serde::to_vec_named(&record).unwrap_or_default()
}

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The demo's log: 1 MiB segments, so that checkpoints let whole segments go.
fn wal_config() -> wal::Config {
    wal::Config::default()
        .segment_bytes(1 << 20)
        .max_record_bytes(64 << 10)
}

fn check(ok: bool, what: &str) -> DemoResult<()> {
    if ok {
        println!("  ✓ {what}");
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

/// The child process of step 2: journal deposits under `Always`, print each acknowledged LSN.
fn child(dir: &Path) -> DemoResult<()> {
    let wal = Wal::open(dir, wal_config().durability(Durability::Always))?;
    println!("ready");
    loop {
        let lsn = wal.last_lsn() + 1;
        let appended = wal.append(&deposit(lsn))?;
        appended.wait_blocking()?;
        println!("ack {}", appended.lsn());
    }
}

fn main() -> DemoResult<()> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--child") {
        let dir = args.next().ok_or("--child needs a directory")?;
        return child(Path::new(&dir));
    }
    let data_dir = match std::env::var_os("ARBOR_DEMO_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("arbor-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data_dir)?;
    println!("arbor demo — data directory: {}\n", data_dir.display());
    let wal_dir = data_dir.join("wal");

    // 1. Group commit from 64 concurrent writers.
    println!("1. 64 writers journal 40,000 inputs under group commit (each waits for durability)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let wal = Wal::open(&wal_dir, wal_config())?;
    let started = Instant::now();
    runtime.block_on(async {
        let writers: Vec<_> = (0..64u64)
            .map(|writer| {
                let wal = wal.clone();
                tokio::spawn(async move {
                    for i in 0..625u64 {
                        let appended = wal.append(&deposit(writer * 625 + i))?;
                        appended.wait().await?;
                    }
                    Ok::<_, wal::Error>(())
                })
            })
            .collect();
        for writer in writers {
            writer.await??;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let elapsed = started.elapsed();
    let stats = wal.stats();
    println!(
        "  {} records in {:.0} ms ({:.0} records/s), {} fdatasyncs: {:.1} records per fdatasync",
        stats.records_written,
        elapsed.as_secs_f64() * 1e3,
        stats.records_written as f64 / elapsed.as_secs_f64(),
        stats.syncs,
        stats.records_written as f64 / stats.syncs.max(1) as f64
    );
    check(wal.durable_lsn() == 40_000, "all 40,000 records durable")?;
    check(
        stats.syncs < stats.records_written / 2,
        "concurrent writers shared fdatasyncs",
    )?;
    wal.close()?;

    // 2. Kill -9 a journaling child process, five times.
    println!(
        "\n2. a child process journals under Always; it is killed with SIGKILL mid-write, 5 times"
    );
    let exe = std::env::current_exe()?;
    for round in 1..=5 {
        let mut child = Command::new(&exe)
            .arg("--child")
            .arg(&wal_dir)
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("child has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        if lines.next().transpose()?.as_deref() != Some("ready") {
            return Err("child did not start".into());
        }
        std::thread::sleep(Duration::from_millis(30 + 20 * round));
        child.kill()?;
        child.wait()?;
        let acknowledged = lines
            .map_while(Result::ok)
            .filter_map(|line| {
                line.strip_prefix("ack ")
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .max()
            .unwrap_or(0);
        let wal = Wal::open(&wal_dir, wal_config())?;
        let last = wal.last_lsn();
        let torn = wal
            .recovery()
            .torn_tail
            .as_ref()
            .map_or(String::new(), |t| {
                format!(", cut a torn tail of {} bytes", t.bytes)
            });
        println!(
            "  kill {round}: child acknowledged up to lsn {acknowledged}; recovered log ends at {last}{torn}"
        );
        check(
            last >= acknowledged,
            "every acknowledged record survived the kill",
        )?;
        // The child's records (after step 1's 40,000) each carry the deposit for their LSN.
        let intact = wal
            .read_from(40_001)?
            .all(|r| r.is_ok_and(|r| r.payload == deposit(r.lsn)));
        check(intact, "the child's records read back intact")?;
        wal.close()?;
    }

    // 3. Fold into a state, checkpoint into the vault, release WAL segments.
    println!(
        "\n3. the inputs are folded into the ledger agent's state and checkpointed into the vault"
    );
    let wal = Wal::open(&wal_dir, wal_config())?;
    let vault = Vault::open(data_dir.join("vault"), vault::Config::default())?;
    let agent = AgentId::new("ledger")?;
    let module = ModuleHash::of(b"native:ledger");
    let mut ledger = Ledger::new();
    let mut checkpoints = 0;
    for record in wal.read_from(wal.first_lsn())? {
        let record = record?;
        apply(&mut ledger, &record.payload)?;
        if record.lsn % 10_000 == 0 {
            let state = rmp_serde::to_vec_named(&ledger)?;
            let meta = vault.put_checkpoint(&NewCheckpoint {
                agent: &agent,
                lsn: record.lsn,
                seq: 0,
                module,
                abi_version: 1,
                state_schema: 1,
                state: &state,
            })?;
            checkpoints += 1;
            println!(
                "  checkpoint at lsn {}: {} bytes of state, {} stored (zstd {:.1}x)",
                meta.lsn,
                meta.uncompressed_bytes,
                meta.compressed_bytes,
                meta.compression_ratio()
            );
        }
    }
    let last = wal.last_lsn();
    // More inputs after the last checkpoint: these are recovered by replay.
    for lsn in last + 1..=last + 2_500 {
        let appended = wal.append(&deposit(lsn))?;
        apply(&mut ledger, &deposit(lsn))?;
        if lsn == last + 2_500 {
            appended.wait_blocking()?;
        }
    }
    let safe = vault.safe_release_lsn(&agent)?;
    let released = match safe {
        Some(lsn) => wal.truncate_before(lsn + 1)?,
        None => 0,
    };
    match safe {
        Some(lsn) => println!(
            "  {checkpoints} checkpoints; WAL released below lsn {} (covered by the older of the two newest checkpoints): {released} segment(s) removed",
            lsn + 1
        ),
        None => println!("  {checkpoints} checkpoints; no WAL segment can be released yet"),
    }
    check(checkpoints >= 4, "checkpoints were taken")?;
    wal.close()?;
    drop(vault);

    // 4. Recover: checkpoint + replay.
    println!("\n4. recovery: latest valid checkpoint + replay of the WAL after it");
    let started = Instant::now();
    let wal = Wal::open(&wal_dir, wal_config())?;
    let vault = Vault::open(data_dir.join("vault"), vault::Config::default())?;
    let found = vault.latest_valid(&agent)?;
    let checkpoint = found.checkpoint.ok_or("no checkpoint")?;
    let mut recovered: Ledger = rmp_serde::from_slice(&checkpoint.state)?;
    let mut replayed = 0;
    for record in wal.read_from(checkpoint.meta.lsn + 1)? {
        apply(&mut recovered, &record?.payload)?;
        replayed += 1;
    }
    let elapsed = started.elapsed();
    println!(
        "  from the checkpoint at lsn {} plus {replayed} replayed records, in {:.1} ms",
        checkpoint.meta.lsn,
        elapsed.as_secs_f64() * 1e3
    );
    check(
        recovered == ledger,
        "recovered state equals the state computed directly",
    )?;
    let report = wal.verify()?;
    check(report.is_clean(), "wal verify finds no problem")?;

    println!(
        "\nSummary: {} records journaled, every acknowledged one recovered across 5 SIGKILLs; {} kept in the WAL after release; data in {}",
        wal.last_lsn(),
        report.records,
        data_dir.display()
    );
    println!(
        "Next in this demo (as the issues land): Wasm agents under supervision, hot swap, the evolution arbiter."
    );
    Ok(())
}
