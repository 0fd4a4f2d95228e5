//! A tiny host service that embeds arbor: a line-oriented TCP service whose counters are Wasm
//! agents, journaled in a data directory and supervised. Each request line `<counter> <n>`
//! adds `n` to that counter (spawning it on first use) and answers its new value.
//!
//! `cargo run --example embed` starts it on a loopback port, plays a short client session
//! against it, restarts the service on the same directory and shows the counters survived.

use std::time::Duration;

use arbor::{Error, Runtime, Spawn, SupervisorOptions};
use arbor_modules::counter::{CounterMsg, CounterReply};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The whole embedding: a runtime on a data directory, with a supervisor for the counters.
async fn start_runtime(dir: &std::path::Path) -> Result<Runtime, Error> {
    Runtime::builder()
        .data_dir(dir)
        .supervisor("counters", SupervisorOptions::default())
        .call_timeout(Duration::from_secs(2))
        .build()
        .await
}

async fn handle(runtime: &Runtime, line: &str) -> String {
    let Some((name, by)) = line.split_once(' ') else {
        return "error: expected `<counter> <n>`".into();
    };
    let Ok(by) = by.trim().parse::<i64>() else {
        return format!("error: `{by}` is not a number");
    };
    if runtime.lookup(name).is_none() {
        let spawn = Spawn::wasm_bytes(name, arbor_modules::COUNTER).under("counters");
        if let Err(error) = runtime.spawn(spawn).await {
            return format!("error: {error}");
        }
    }
    match runtime
        .call::<_, CounterReply>(name, &CounterMsg::Inc { by })
        .await
    {
        Ok(reply) => format!("{name} = {}", reply.count),
        Err(error) => format!("error: {error}"),
    }
}

async fn serve(runtime: Runtime, listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = handle(&runtime, &line).await;
                if write
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
}

async fn session(addr: std::net::SocketAddr, requests: &[&str]) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    for request in requests {
        write.write_all(format!("{request}\n").as_bytes()).await?;
        let answer = lines.next_line().await?.unwrap_or_default();
        println!("> {request:<12} < {answer}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    for run in 1..=2 {
        let runtime = start_runtime(dir.path()).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        println!(
            "run {run}: serving on {addr}, agents recovered: {:?}",
            runtime.agents()
        );
        let server = tokio::spawn(serve(runtime.clone(), listener));
        session(addr, &["apples 3", "pears 10", "apples 4", "apples x"]).await?;
        server.abort();
        runtime.shutdown().await?;
    }
    Ok(())
}
