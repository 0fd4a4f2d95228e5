//! The README's embedding example, verbatim (`tests/readme.rs` checks they agree):
//! `cargo run --example hello` twice, and the count goes on from where it was.

use arbor::{Runtime, Spawn, SupervisorOptions};
use arbor_modules::counter::{CounterMsg, CounterReply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = Runtime::builder()
        .data_dir("hello-data") // WAL + vault; without it the runtime is ephemeral
        .supervisor("pool", SupervisorOptions::default()) // one_for_one, 10 restarts in 10 s
        .build()
        .await?; // recovers every agent that was running
    if runtime.lookup("counter").is_none() {
        // Any ABI v1 module: `std::fs::read("counter.wasm")?` in your own host.
        let module = arbor_modules::COUNTER;
        runtime
            .spawn(Spawn::wasm_bytes("counter", module).under("pool"))
            .await?;
    }
    // Answered once the input is journaled and fdatasync'd (group commit).
    let reply: CounterReply = runtime.call("counter", &CounterMsg::Inc { by: 2 }).await?;
    println!("count = {}", reply.count);
    runtime.shutdown().await?; // final checkpoints; stops the tree in reverse order
    Ok(())
}
