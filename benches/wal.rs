//! `cargo bench --bench wal`: arbor-wal's append throughput under each durability policy with 1,
//! 8 and 64 concurrent appenders, beside its baselines measured in the same run and directory:
//!
//! - `raw-write-fdatasync`: a plain `write` + `fdatasync` loop on one file, one record per
//!   fdatasync (what `Always` must stay within 1.2x of);
//! - `raw-write`: a plain `write` per record, no fdatasync (the page-cache baseline for `Never`);
//! - `okaywal`: the okaywal crate doing the same work (`begin_entry`, `write_chunk`, `commit`,
//!   which fsyncs and groups concurrent committers).
//!
//! One iteration is one round in which every appender thread appends one record and waits for
//! it to be durable under the policy, so criterion's element throughput is records per second
//! whatever the thread count. `never-pipelined` appends a round without waiting and waits only on
//! the last record: the log's own throughput when the caller does not need per-record
//! acknowledgement. `*-async` runs the appenders as tokio tasks on a 2-worker runtime, as arbor's
//! agents do, awaiting durability (`Appended::wait`) instead of blocking a thread: 64 waiting
//! tasks cost far less to wake than 64 waiting threads on 2 cores.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use arbor::wal::{Config, Durability, Wal};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [(usize, &str); 2] = [(64, "64B"), (1024, "1KiB")];
const APPENDERS: [usize; 3] = [1, 8, 64];

/// Runs `per_thread(thread, iters)` on `threads` threads started together; returns the time from
/// the start signal until the last one finished.
fn run_threads(threads: usize, iters: u64, per_thread: impl Fn(usize, u64) + Sync) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let barrier = &barrier;
                let per_thread = &per_thread;
                scope.spawn(move || {
                    barrier.wait();
                    per_thread(thread, iters);
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        for handle in handles {
            handle.join().expect("bench thread panicked");
        }
        started.elapsed()
    })
}

fn raw_file(dir: &Path, name: &str) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("open raw baseline file")
}

fn open_wal(dir: &Path, durability: Durability) -> Wal {
    let _ = std::fs::remove_dir_all(dir);
    Wal::open(dir, Config::default().durability(durability)).expect("open wal")
}

#[derive(Debug)]
struct NoCheckpoints;

impl okaywal::LogManager for NoCheckpoints {
    fn recover(&mut self, _entry: &mut okaywal::Entry<'_>) -> std::io::Result<()> {
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: okaywal::EntryId,
        _checkpointed_entries: &mut okaywal::SegmentReader,
        _wal: &okaywal::WriteAheadLog,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

fn bench_wal(c: &mut Criterion) {
    let root = tempfile::tempdir_in(std::env::temp_dir()).expect("bench directory");
    eprintln!("wal bench directory: {}", root.path().display());
    for (size, size_name) in SIZES {
        let payload = vec![0xa5u8; size];
        let mut group = c.benchmark_group(format!("wal/{size_name}"));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(3));

        group.throughput(Throughput::Elements(1));
        group.bench_function("raw-write-fdatasync/1", |b| {
            let mut file = raw_file(root.path(), "raw-fdatasync");
            b.iter(|| {
                file.write_all(&payload).expect("write");
                file.sync_data().expect("fdatasync");
            });
        });
        group.bench_function("raw-write/1", |b| {
            let mut file = raw_file(root.path(), "raw-write");
            b.iter(|| file.write_all(&payload).expect("write"));
        });

        for threads in APPENDERS {
            group.throughput(Throughput::Elements(threads as u64));
            for (policy_name, durability) in [
                ("never", Durability::Never),
                (
                    "group-commit",
                    Durability::GroupCommit {
                        max_delay: Duration::ZERO,
                    },
                ),
                ("always", Durability::Always),
            ] {
                let wal = open_wal(
                    &root.path().join(format!("arbor-{policy_name}")),
                    durability,
                );
                group.bench_function(BenchmarkId::new(policy_name, threads), |b| {
                    b.iter_custom(|iters| {
                        run_threads(threads, iters, |_, iters| {
                            for _ in 0..iters {
                                wal.append(&payload)
                                    .and_then(|a| a.wait_blocking())
                                    .expect("append");
                            }
                        })
                    });
                });
                wal.close().expect("close wal");
            }

            if threads <= 8 {
                let wal = open_wal(
                    &root.path().join("arbor-never-pipelined"),
                    Durability::Never,
                );
                group.bench_function(BenchmarkId::new("never-pipelined", threads), |b| {
                    b.iter_custom(|iters| {
                        run_threads(threads, iters, |_, iters| {
                            let mut last = None;
                            for _ in 0..iters {
                                last = Some(wal.append(&payload).expect("append"));
                            }
                            if let Some(last) = last {
                                last.wait_blocking().expect("wait");
                            }
                        })
                    });
                });
                wal.close().expect("close wal");
            }

            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .expect("tokio runtime");
            for (policy_name, durability) in [
                ("never-async", Durability::Never),
                (
                    "group-commit-async",
                    Durability::GroupCommit {
                        max_delay: Duration::ZERO,
                    },
                ),
                (
                    "group-commit-100us-async",
                    Durability::GroupCommit {
                        max_delay: Duration::from_micros(100),
                    },
                ),
                (
                    "group-commit-300us-async",
                    Durability::GroupCommit {
                        max_delay: Duration::from_micros(300),
                    },
                ),
            ] {
                let wal = open_wal(
                    &root.path().join(format!("arbor-{policy_name}")),
                    durability,
                );
                group.bench_function(BenchmarkId::new(policy_name, threads), |b| {
                    b.iter_custom(|iters| {
                        runtime.block_on(async {
                            let started = Instant::now();
                            let tasks: Vec<_> = (0..threads)
                                .map(|_| {
                                    let wal = wal.clone();
                                    let payload = payload.clone();
                                    tokio::spawn(async move {
                                        for _ in 0..iters {
                                            let appended = wal.append(&payload).expect("append");
                                            appended.wait().await.expect("durable");
                                        }
                                    })
                                })
                                .collect();
                            for task in tasks {
                                task.await.expect("appender task");
                            }
                            started.elapsed()
                        })
                    });
                });
                wal.close().expect("close wal");
            }

            let okay_dir = root.path().join("okaywal");
            let _ = std::fs::remove_dir_all(&okay_dir);
            let okay =
                okaywal::WriteAheadLog::recover(&okay_dir, NoCheckpoints).expect("open okaywal");
            group.bench_function(BenchmarkId::new("okaywal", threads), |b| {
                b.iter_custom(|iters| {
                    run_threads(threads, iters, |_, iters| {
                        for _ in 0..iters {
                            let mut entry = okay.begin_entry().expect("begin entry");
                            entry.write_chunk(&payload).expect("write chunk");
                            entry.commit().expect("commit");
                        }
                    })
                });
            });
            okay.shutdown().expect("shutdown okaywal");
        }
        group.finish();
    }
}

criterion_group!(benches, bench_wal);
criterion_main!(benches);
