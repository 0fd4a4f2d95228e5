//! One node of an arbor cluster (the README's "Cluster quick start"): joins the NATS JetStream
//! cluster, runs whatever agents placement gives it, serves the admin endpoint for `arborctl`,
//! and on Ctrl-C (or SIGTERM) drains — hands every agent it owns to the other nodes — and
//! leaves.
//!
//! It spawns nothing itself: agents are spawned from any node (`examples/cluster_kv.rs`).
//!
//! ```sh
//! cargo run --example cluster_node -- --nats nats://127.0.0.1:4222,nats://127.0.0.1:4223 \
//!     --node node-a --data-dir /tmp/arbor-a --admin 127.0.0.1:9465 --token-file admin.token
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use arbor::admin::{AdminConfig, AdminToken};
use arbor::{ClusterOptions, Runtime};
use clap::Parser;

/// Run one arbor cluster node until Ctrl-C, then drain and leave.
#[derive(Parser)]
struct Args {
    /// The NATS servers, comma-separated (any of them; the client learns the rest).
    #[arg(long, value_delimiter = ',', required = true)]
    nats: Vec<String>,
    /// This node's name, unique in the cluster: letters, digits, `-`, `_`.
    #[arg(long)]
    node: String,
    /// The node's own directory (its local vault: modules, lineage; journals are in NATS).
    #[arg(long)]
    data_dir: PathBuf,
    /// Serve the admin endpoint (for `arborctl`) on this loopback address.
    #[arg(long, requires = "token_file")]
    admin: Option<SocketAddr>,
    /// The admin token's file (mode 0600).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Replicas of the journal stream and the buckets (3 on a 3-server cluster).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The whole chain: "cluster" alone would not say that NATS was unreachable.
            eprintln!(
                "cluster_node: {}",
                arbor::agent::report::chain(error.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let options = ClusterOptions::new(args.nats, args.node.clone()).replicas(args.replicas);
    let mut builder = Runtime::builder().data_dir(&args.data_dir).cluster(options);
    if let (Some(addr), Some(file)) = (args.admin, &args.token_file) {
        builder = builder.admin(AdminConfig::new(addr, AdminToken::from_file(file)?));
    }
    let runtime = builder.build().await?;
    match runtime.admin_addr() {
        Some(admin) => println!(
            "{} joined the cluster; admin endpoint on {admin}",
            args.node
        ),
        None => println!("{} joined the cluster", args.node),
    }
    let stopped = tokio::select! {
        () = interrupted() => None,
        reason = runtime.wait() => Some(reason),
    };
    if let Some(reason) = stopped {
        return Err(format!("the runtime stopped: {reason}").into());
    }
    println!(
        "{}: draining (handing its agents to the other nodes)",
        args.node
    );
    runtime.shutdown().await?;
    println!("{}: left the cluster", args.node);
    Ok(())
}

/// Ctrl-C, or SIGTERM (what `kill` and service managers send).
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            // No SIGTERM handler: Ctrl-C still drains.
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
