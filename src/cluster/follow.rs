//! Following a KV bucket: the last value of every key, then every change, fed to a view on a
//! task of its own (the registry's and the membership's views are kept this way).

use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;

/// Starts the watch of every key of `bucket` and a task that feeds each entry to `apply`,
/// starting the watch again (from every key's last value) if it ends, until `alive` says the
/// view is gone. The receiver turns `true` once every key's last value was applied.
pub(crate) async fn follow<A, L>(
    bucket: kv::Store,
    what: &'static str,
    apply: A,
    alive: L,
) -> Result<tokio::sync::watch::Receiver<bool>, kv::WatchError>
where
    A: Fn(kv::Entry) + Send + 'static,
    L: Fn() -> bool + Send + 'static,
{
    // A bucket another node is creating right now may not take a consumer yet.
    let mut watch = super::while_new(|| bucket.watch_with_history(">")).await?;
    let (ready, ready_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            while let Some(entry) = watch.next().await {
                match entry {
                    Ok(entry) => {
                        let current = entry.seen_current || entry.delta == 0;
                        apply(entry);
                        if current {
                            let _ = ready.send(true);
                        }
                    }
                    Err(error) => {
                        // Watch again rather than poll on: async-nats 0.51's ordered push
                        // consumer panics when polled after it reported its connection's state
                        // watcher dropped ("`async fn` resumed after completion").
                        tracing::warn!(%error, what, "watch");
                        break;
                    }
                }
            }
            // The watch ended or failed (connection lost for long): start it again.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if !alive() {
                return;
            }
            match bucket.watch_with_history(">").await {
                Ok(again) => watch = again,
                Err(error) => tracing::warn!(%error, what, "watch could not restart"),
            }
        }
    });
    Ok(ready_rx)
}
