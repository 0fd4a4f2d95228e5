//! Ownership leases against a real 3-server NATS cluster (R3 bucket).

mod support;

use std::time::Duration;

use arbor_cluster::LeaseError;
use support::{claim_when_free, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_renew_expire_take_over_release() {
    let s = setup(Duration::from_millis(1500)).await;
    let leases = &s.leases;

    let mut a = leases
        .claim("agent/one", "node-a")
        .await
        .expect("first claim");
    assert_eq!(a.epoch(), 1);

    // Held: nobody else can claim while the lease lives.
    match leases.claim("agent/one", "node-b").await {
        Err(LeaseError::Held { owner, epoch, .. }) => {
            assert_eq!(owner, "node-a");
            assert_eq!(epoch, 1);
        }
        other => panic!("expected Held, got {other:?}"),
    }

    // Renewing keeps it past the original deadline.
    let first_until = a.until();
    tokio::time::sleep(Duration::from_millis(800)).await;
    leases.renew(&mut a).await.expect("renew");
    assert!(a.until() > first_until);
    assert_eq!(a.epoch(), 1, "renewing keeps the epoch");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        matches!(
            leases.claim("agent/one", "node-b").await,
            Err(LeaseError::Held { .. })
        ),
        "a renewed lease is still held after the first deadline"
    );

    // Expiry: node-a stops renewing; node-b takes over with the next epoch.
    let b = claim_when_free(leases, "agent/one", "node-b", Duration::from_secs(5)).await;
    assert_eq!(b.epoch(), 2);
    let record = leases.get("agent/one").await.expect("get").expect("entry");
    assert_eq!((record.node.as_str(), record.epoch), ("node-b", 2));

    // The former owner learns it lost the agent at its next renew or release.
    match leases.renew(&mut a).await {
        Err(LeaseError::Lost { epoch: 1, .. }) => {}
        other => panic!("expected Lost, got {other:?}"),
    }
    assert!(matches!(
        leases.release(a).await,
        Err(LeaseError::Lost { .. })
    ));

    // Release: the next claim need not wait, and the epoch still grows.
    leases.release(b).await.expect("release");
    let c = leases
        .claim("agent/one", "node-c")
        .await
        .expect("claim after release");
    assert_eq!(c.epoch(), 3);

    // Agents are independent.
    let other = leases
        .claim("agent.two", "node-a")
        .await
        .expect("other agent");
    assert_eq!(other.epoch(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_have_one_winner_per_epoch() {
    let s = setup(Duration::from_millis(500)).await;
    // Each node has its own connection, as separate hosts would.
    let mut nodes = Vec::new();
    for i in 0..6 {
        let client = s.cluster.connect().await.expect("connect");
        let (leases, _) = support::open(&client, Duration::from_millis(500)).await;
        nodes.push((format!("node-{i}"), leases));
    }
    let mut epochs = Vec::new();
    for round in 0..5 {
        let claims = nodes.iter().map(|(name, leases)| {
            let (name, leases) = (name.clone(), leases.clone());
            tokio::spawn(async move { leases.claim("contested", &name).await })
        });
        let results: Vec<_> = futures_util::future::join_all(claims)
            .await
            .into_iter()
            .map(|r| r.expect("task"))
            .collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, LeaseError::LostRace { .. } | LeaseError::Held { .. }),
                    "round {round}: {e:?}"
                );
            }
        }
        epochs.push(winners[0].epoch());
        // Let it expire for the next round.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(
        epochs,
        vec![1, 2, 3, 4, 5],
        "one claim per round, epochs consecutive"
    );
}

// A renewal whose reply was lost (it timed out, or the connection was cut just after the
// server stored it) leaves the entry one revision past what the holder knows; the next
// renewal is refused as if another node had claimed the agent. The holder used to believe it
// and step down from an agent nobody else held; it now reads the entry, finds its own epoch
// and node, and renews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_whose_reply_was_lost_keeps_the_lease() {
    let s = setup(Duration::from_millis(1500)).await;
    let leases = &s.leases;
    let mut lease = leases
        .claim("agent/lost-reply", "node-a")
        .await
        .expect("claim");
    // The same renewal, landed; the holder's copy never learns its revision.
    let mut landed = lease.clone();
    leases.renew(&mut landed).await.expect("renew");
    leases
        .renew(&mut lease)
        .await
        .expect("renewing after our own renewal landed unseen");
    assert_eq!(lease.epoch(), 1);
    let record = leases
        .get("agent/lost-reply")
        .await
        .expect("get")
        .expect("entry");
    assert_eq!((record.node.as_str(), record.epoch), ("node-a", 1));
    assert!(matches!(
        leases.claim("agent/lost-reply", "node-b").await,
        Err(LeaseError::Held { .. })
    ));
    // Another node's entry is still a lost lease.
    leases.release(lease).await.expect("release");
    let _b = leases
        .claim("agent/lost-reply", "node-b")
        .await
        .expect("claim");
    match leases.renew(&mut landed).await {
        Err(LeaseError::Lost { epoch: 1, .. }) => {}
        other => panic!("expected Lost, got {other:?}"),
    }
}
