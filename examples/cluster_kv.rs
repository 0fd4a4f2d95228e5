//! Spawns kv agents in an arbor cluster and calls them, from a node that runs none (the
//! README's "Cluster quick start"): it joins with `ClusterOptions::hosts_agents(false)`, so
//! placement puts every agent on the `cluster_node` hosts and every call here is a remote
//! call to the agent's owner.
//!
//! ```sh
//! cargo run --example cluster_kv -- --nats nats://127.0.0.1:4222 spawn kv-1 kv-2 kv-3
//! cargo run --example cluster_kv -- --nats nats://127.0.0.1:4222 put kv-1 greeting hello
//! cargo run --example cluster_kv -- --nats nats://127.0.0.1:4222 get kv-1 greeting
//! ```

use arbor::agent::AgentError;
use arbor::{ClusterOptions, Error, Runtime, Spawn};
use arbor_modules::kv::{KvMsg, KvReply};
use clap::{Parser, Subcommand};

/// Spawn and call kv agents in an arbor cluster, from a node that hosts none.
#[derive(Parser)]
struct Args {
    /// The NATS servers, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    nats: Vec<String>,
    /// This client's node name (unique while it runs; default: `kv-client-<pid>`).
    #[arg(long)]
    node: Option<String>,
    /// Replicas of the journal stream and the buckets (as the nodes use).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Spawns kv agents (the example `kv` module); a name already taken is left as it is.
    Spawn { agents: Vec<String> },
    /// Writes `key` = `value` in `agent`.
    Put {
        agent: String,
        key: String,
        value: String,
    },
    /// Reads `key` from `agent`.
    Get { agent: String, key: String },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "cluster_kv: {}",
                arbor::agent::report::chain(error.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let node = args
        .node
        .unwrap_or_else(|| format!("kv-client-{}", std::process::id()));
    // Cluster mode keeps the node's module cache in a directory; a client needs it only
    // while it runs.
    let dir = tempfile::tempdir()?;
    let runtime = Runtime::builder()
        .data_dir(dir.path())
        .cluster(
            ClusterOptions::new(args.nats, node)
                .replicas(args.replicas)
                .hosts_agents(false),
        )
        .build()
        .await?;
    let result = command(&runtime, &args.command).await;
    // Leaves the membership at once (it owns nothing to hand off).
    runtime.shutdown().await?;
    result
}

async fn command(runtime: &Runtime, command: &Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Spawn { agents } => {
            for agent in agents {
                match runtime
                    .spawn(Spawn::wasm_bytes(agent.clone(), arbor_modules::KV))
                    .await
                {
                    Ok(spawned) => {
                        println!("{agent}: runs on {}", spawned.node().unwrap_or("?"));
                    }
                    Err(Error::Agent(AgentError::AlreadyExists(_))) => {
                        println!("{agent}: already there");
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Command::Put { agent, key, value } => {
            let msg = KvMsg::Put {
                key: key.clone(),
                value: value.clone(),
            };
            let reply: KvReply = runtime.call(agent, &msg).await?;
            println!("{agent}: {reply:?}");
        }
        Command::Get { agent, key } => {
            let reply: KvReply = runtime
                .call(agent, &KvMsg::Get { key: key.clone() })
                .await?;
            match reply {
                KvReply::Value { value: Some(value) } => println!("{agent}: {key} = {value}"),
                KvReply::Value { value: None } => println!("{agent}: {key} is not set"),
                other => println!("{agent}: unexpected reply {other:?}"),
            }
        }
    }
    Ok(())
}
