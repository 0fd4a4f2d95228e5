//! `arborctl`'s tests' set-up: a host with its admin endpoint (token in a private file), and
//! the real binary run against it or on its data directory.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arbor::admin::{AdminConfig, AdminToken};
use arbor::shadow::{Approval, ArbiterConfig, Policy, ShadowLimits};
use arbor::{Runtime, Spawn};
use arbor_modules::kv::{KvMsg, KvReply};
use serde_json::Value;

pub const TOKEN: &str = "arborctl-test-token-0123456789";

pub struct Ctl {
    pub admin: String,
    pub token_file: PathBuf,
    pub data_dir: PathBuf,
}

/// One run of the binary: exit code, stdout, stderr.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }

    pub fn ok(self) -> Ran {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Ctl {
    /// Runs `arborctl` with `args` (off the async workers: the host runs in this process).
    pub async fn run(&self, args: &[&str]) -> Ran {
        let mut command = assert_cmd::Command::cargo_bin("arborctl").unwrap();
        command
            .env_remove("ARBOR_ADMIN_TOKEN")
            .env_remove("ARBOR_ADMIN_TOKEN_FILE")
            .args(args)
            .timeout(Duration::from_secs(120));
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Against the running host, with the token.
    pub async fn online(&self, args: &[&str]) -> Ran {
        let token_file = self.token_file.to_str().unwrap();
        let mut all = vec!["--admin", &self.admin, "--token-file", token_file];
        all.extend_from_slice(args);
        self.run(&all).await
    }

    /// On the data directory of a host that was just dropped: the directory is released once
    /// the runtime's last handles (endpoint tasks finishing their connections) are gone, within
    /// seconds.
    pub async fn offline_once_released(&self, args: &[&str]) -> Ran {
        for _ in 0..100 {
            let ran = self.offline(args).await;
            if ran.code != 5 {
                return ran;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the data directory was not released within 10 s");
    }

    /// On the data directory.
    pub async fn offline(&self, args: &[&str]) -> Ran {
        let dir = self.data_dir.to_str().unwrap();
        let mut all = vec!["--data-dir", dir];
        all.extend_from_slice(args);
        self.run(&all).await
    }
}

pub fn private_token_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

pub async fn host(data_dir: &Path, token_file: &Path) -> Runtime {
    Runtime::builder()
        .data_dir(data_dir)
        .admin(AdminConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            AdminToken::from_file(token_file).unwrap(),
        ))
        .evolution(ArbiterConfig {
            approval: Approval::Suggest,
            policy: Policy {
                // < 5 % at 95 % (59 clean samples), and at least 60.
                target_failure_rate: 0.05,
                min_samples: 60,
                min_live_samples: 20,
                min_per_kind: 10,
                latency_tolerance: 2.0,
                ..Policy::default()
            },
            limits: ShadowLimits {
                deadline: Duration::from_secs(60),
                ..ShadowLimits::default()
            },
            watch: Duration::from_secs(120),
            watch_samples: 20,
            ..ArbiterConfig::default()
        })
        .build()
        .await
        .unwrap()
}

pub async fn put(runtime: &Runtime, key: &str, value: &str) {
    let _: KvReply = runtime
        .call(
            "kv",
            &KvMsg::Put {
                key: key.into(),
                value: value.into(),
            },
        )
        .await
        .unwrap();
}

pub async fn get(runtime: &Runtime, key: &str) -> Option<String> {
    match runtime
        .call("kv", &KvMsg::Get { key: key.into() })
        .await
        .unwrap()
    {
        KvReply::Value { value } => value,
        other => panic!("{other:?}"),
    }
}

/// Gets and puts on `kv` until stopped, so shadows see traffic of both kinds.
pub fn load(runtime: &Runtime) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (runtime, flag) = (runtime.clone(), Arc::clone(&stop));
    let task = tokio::spawn(async move {
        let mut i = 0u64;
        while !flag.load(Ordering::Acquire) {
            let key = format!("load-{}", i % 50);
            if i.is_multiple_of(2) {
                put(&runtime, &key, &i.to_string()).await;
            } else {
                get(&runtime, &key).await;
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    (stop, task)
}

/// A host running `kv` and `counter`, `arborctl` pointed at it, in a temporary directory.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub runtime: Runtime,
    pub ctl: Ctl,
}

impl Fixture {
    pub async fn start() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let token_file = private_token_file(tmp.path());
        let runtime = host(&data_dir, &token_file).await;
        runtime
            .spawn(Spawn::wasm_bytes("kv", arbor_modules::KV))
            .await
            .unwrap();
        runtime
            .spawn(Spawn::wasm_bytes("counter", arbor_modules::COUNTER))
            .await
            .unwrap();
        let ctl = Ctl {
            admin: runtime.admin_addr().unwrap().to_string(),
            token_file,
            data_dir,
        };
        Fixture { tmp, runtime, ctl }
    }

    /// A file in the temporary directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A checkpoint of `kv` holding a=1, then a=2 journaled after it: the checkpoint's LSN.
    pub async fn checkpoint_between_two_puts(&self) -> u64 {
        put(&self.runtime, "a", "1").await;
        let saved = self
            .runtime
            .lookup("kv")
            .unwrap()
            .checkpoint()
            .await
            .unwrap();
        put(&self.runtime, "a", "2").await;
        saved
    }

    /// Stops the host (the directory stays).
    pub async fn stop(self) -> (tempfile::TempDir, Ctl) {
        self.runtime.shutdown().await.unwrap();
        drop(self.runtime);
        (self.tmp, self.ctl)
    }
}
