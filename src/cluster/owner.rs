//! The ownership loop: what this node does about each agent, every tick and whenever the
//! registry or the membership changes.
//!
//! For every agent the registry has and every agent this node owns, [`decide`] looks at four
//! facts — should it run, does placement put it here, does this node own it, is that
//! ownership still sound (lease renewed, journal not fenced) — and picks one [`Action`]. The
//! table is [`decide`]'s match, with a test per row.
//!
//! Claiming: read the lease (skip if another node holds it), claim it (compare-and-swap,
//! epoch + 1), take the journal over at that epoch (fences every former owner at the stream),
//! make sure its modules are here, then start it under its supervisor (recovered from the
//! stream, or spawned from its spec on its first start). Giving up: stop it (a final
//! checkpoint, unless the journal is fenced), flush and release the journal, release the
//! lease (not after a step-down: the lease is someone else's already).
//!
//! Renewing: a keeper task beside the loop writes the heartbeat and renews every lease a
//! third of which has passed, every tick, whatever the pass is doing — a pass that recovers
//! many agents can take longer than a lease, and renewals that waited for it let leases run
//! out. An agent whose journal refused an input because it needs a takeover (fenced, or its
//! replicated writer halted) stops itself; the pass then finds the journal unsound, steps
//! down, and claims it again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arbor_agent::JournalStore;
use arbor_cluster::{Lease, LeaseError};
use arbor_vault::{AgentId, AgentState};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{Local, Node, placement};

/// Agents claimed, renewed or handed off at once: each is a few round trips to the servers,
/// so a failover of many agents is bounded by round trips in flight, not by their sum.
const AT_ONCE: usize = 16;

/// What the loop does about one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Claim its lease and start it here.
    Claim,
    /// Keep running it; renew the lease when due.
    Keep,
    /// Placement moved it: stop it here (final checkpoint) and release it to its new node.
    HandOff,
    /// The registry says it should not run: stop it for good.
    Stop,
    /// This node's ownership is no longer sound (lease lost or expired, journal fenced): stop
    /// serving it at once.
    StepDown,
    /// Not this node's business.
    Nothing,
}

/// The decision table (see the module docs).
pub(crate) fn decide(wanted: bool, placed_here: bool, owned: bool, sound: bool) -> Action {
    match (wanted, placed_here, owned, sound) {
        (_, _, true, false) => Action::StepDown,
        (true, true, true, true) => Action::Keep,
        (true, false, true, true) => Action::HandOff,
        (false, _, true, true) => Action::Stop,
        (true, true, false, _) => Action::Claim,
        (true, false, false, _) | (false, _, false, _) => Action::Nothing,
    }
}

/// Why this node claimed an agent (the claims counter's label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Its first start.
    Spawn,
    /// Placement moved it here from a live node (which released it).
    Placement,
    /// Its owner's lease expired.
    Failover,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Spawn => "spawn",
            Reason::Placement => "placement",
            Reason::Failover => "failover",
        }
    }
}

/// How a spawn placed on this node went.
#[derive(Debug)]
pub(crate) enum SpawnOutcome {
    /// Running here.
    Started,
    /// Another node holds it (placement views differed for a moment); it runs there.
    Elsewhere,
    /// Its first start failed (the registry says terminated, with why).
    Failed(String),
}

/// How the node gives an agent up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GiveUp {
    HandOff,
    Stop,
    StepDown,
}

/// The ownership loop's state: the leases this node holds.
pub(crate) struct Owner {
    node: String,
    owned: Mutex<BTreeMap<String, Lease>>,
    /// Agents being claimed or given up right now (one operation per agent at a time).
    busy: Mutex<BTreeSet<String>>,
    draining: AtomicBool,
    /// Wakes the loop before its tick (a spawn, a stop, a drain).
    pub(crate) wake: Notify,
    /// When the modules were last fully synced (a listing makes a consumer: rate-limited).
    last_sync: Mutex<Option<Instant>>,
}

/// The node and its runtime, while both exist and the runtime runs: the loops end when not.
fn alive(node: &Weak<Node>, local: &Weak<dyn Local>) -> Option<(Arc<Node>, Arc<dyn Local>)> {
    let (node, local) = (node.upgrade()?, local.upgrade()?);
    (!local.is_stopped()).then_some((node, local))
}

/// One operation (claim, renewal, give-up) per agent at a time: see [`Owner::try_busy`].
struct Busy<'a> {
    owner: &'a Owner,
    name: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.owner.busy.lock().remove(&self.name);
    }
}

impl Owner {
    /// `draining` from the start: a node that hosts no agents.
    pub(crate) fn new(node: &str, draining: bool) -> Owner {
        Owner {
            node: node.to_string(),
            owned: Mutex::new(BTreeMap::new()),
            busy: Mutex::new(BTreeSet::new()),
            draining: AtomicBool::new(draining),
            wake: Notify::new(),
            last_sync: Mutex::new(None),
        }
    }

    /// Starts the loop, and beside it the keeper: the heartbeat and the lease renewals run in
    /// a task of their own, so that a slow pass (claims that recover agents, on a loaded
    /// machine, after a partition) cannot hold them up. When they waited for the pass, a
    /// pass longer than a lease let every other lease of the node run out and its heartbeat
    /// go stale: the node stepped down from all its agents at once, other nodes claimed them
    /// in slow passes of their own, and the cluster churned for minutes.
    pub(crate) fn start(node: Weak<Node>, local: Weak<dyn Local>) {
        Owner::start_keeper(node.clone(), local.clone());
        tokio::spawn(async move {
            let mut last_modules = Instant::now() - Duration::from_secs(60);
            let mut modules_here = usize::MAX;
            loop {
                let Some((n, l)) = alive(&node, &local) else {
                    return;
                };
                let tick = n.options.tick;
                // A module added here (a candidate admitted, a spawn) goes up at the next tick,
                // long before any promotion could swap an agent to it: a node that recovers
                // the agent after a failover must find every module its journal names.
                let count = l
                    .vault()
                    .and_then(|v| v.list_modules().ok())
                    .map_or(0, |m| m.len());
                if count != modules_here {
                    match upload_modules(&n, l.as_ref()).await {
                        Ok(()) => modules_here = count,
                        Err(error) => tracing::warn!(%error, "module upload"),
                    }
                }
                if last_modules.elapsed() >= Duration::from_secs(5) {
                    if let Err(error) = n.owner.sync_modules_at_most_every_second(&n, &l).await {
                        tracing::warn!(%error, "module sync");
                    }
                    last_modules = Instant::now();
                }
                n.owner.tick(&n, &l).await;
                let (registry, members) = (n.registry.changed.clone(), n.members.changed.clone());
                drop((n, l));
                let woken = async {
                    tokio::select! {
                        () = registry.notified() => {}
                        () = members.notified() => {}
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(tick) => {}
                    () = woken => {}
                }
            }
        });
    }

    /// The keeper: every tick, the heartbeat (a third of a lease after the last) and the
    /// renewal of every lease due, each agent skipped while the pass claims or gives it up.
    fn start_keeper(node: Weak<Node>, local: Weak<dyn Local>) {
        tokio::spawn(async move {
            let mut last_beat: Option<Instant> = None;
            loop {
                let Some((n, l)) = alive(&node, &local) else {
                    return;
                };
                let tick = n.options.tick;
                if last_beat.is_none_or(|at| at.elapsed() >= n.options.lease / 3) {
                    let draining = n.owner.draining.load(Ordering::Acquire);
                    if let Err(error) = n.members.beat(draining).await {
                        tracing::warn!(%error, "heartbeat not written");
                    } else {
                        last_beat = Some(Instant::now());
                    }
                }
                n.owner.renew_due(&n, &l).await;
                drop((n, l));
                tokio::time::sleep(tick).await;
            }
        });
    }

    /// Renews every lease a third of which has passed (see [`Owner::renew`]).
    async fn renew_due(&self, node: &Node, local: &Arc<dyn Local>) {
        let names: Vec<String> = self.owned.lock().keys().cloned().collect();
        futures_util::stream::iter(names)
            .for_each_concurrent(AT_ONCE, |name| async move {
                let Some(_busy) = self.try_busy(&name) else {
                    return;
                };
                self.renew(node, local, &name).await;
            })
            .await;
    }

    /// A full module sync (a listing of the store), unless one ran less than a second ago.
    async fn sync_modules_at_most_every_second(
        &self,
        node: &Node,
        local: &Arc<dyn Local>,
    ) -> Result<(), super::ClusterError> {
        {
            let mut last = self.last_sync.lock();
            if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        sync_modules(node, local.as_ref()).await
    }

    /// Wakes the loop now.
    pub(crate) fn nudge(&self) {
        self.wake.notify_waiters();
    }

    /// One pass over every agent (see the module docs).
    pub(crate) async fn tick(&self, node: &Arc<Node>, local: &Arc<dyn Local>) {
        let mut placeable = node.members.placeable();
        if self.draining.load(Ordering::Acquire) {
            placeable.retain(|n| *n != self.node);
        }
        let registered = node.registry.all();
        let owned = self.owned.lock().clone();
        let now = SystemTime::now();
        let mut actions: Vec<(String, Action)> = Vec::new();
        let mut names: BTreeSet<String> = owned.keys().cloned().collect();
        names.extend(registered.iter().map(|r| r.name().to_string()));
        for name in names {
            let wanted = registered
                .iter()
                .any(|r| r.name() == name && r.record.state == AgentState::Running);
            let placed_here = placement::place(&name, &placeable) == Some(self.node.as_str());
            let lease = owned.get(&name);
            let sound = lease.is_some_and(|lease| lease.until() > now && node.store.owns(&name));
            actions.push((
                name.clone(),
                decide(wanted, placed_here, lease.is_some(), sound),
            ));
        }
        let unowned = actions.iter().filter(|(_, a)| *a == Action::Claim).count();
        // Claimed agents may run (or have journaled swaps to) modules added on other nodes
        // since the last sync: fetch them first, once per pass.
        if unowned > 0
            && let Err(error) = self.sync_modules_at_most_every_second(node, local).await
        {
            tracing::warn!(%error, "module sync before claiming");
        }
        futures_util::stream::iter(actions)
            .for_each_concurrent(AT_ONCE, |(name, action)| async move {
                let Some(_busy) = self.try_busy(&name) else {
                    return;
                };
                match action {
                    Action::Claim => {
                        self.claim(node, local, &name, None).await;
                    }
                    Action::Keep => self.renew(node, local, &name).await,
                    Action::HandOff => self.give_up(node, local, &name, GiveUp::HandOff).await,
                    Action::Stop => self.give_up(node, local, &name, GiveUp::Stop).await,
                    Action::StepDown => self.give_up(node, local, &name, GiveUp::StepDown).await,
                    Action::Nothing => {}
                }
            })
            .await;
        let owned_now = self.owned.lock().len();
        metrics::gauge!(arbor_metrics::CLUSTER_AGENTS_OWNED).set(owned_now as f64);
        metrics::gauge!(arbor_metrics::CLUSTER_AGENTS_UNOWNED).set(unowned as f64);
        metrics::gauge!(arbor_metrics::CLUSTER_NODES).set(node.members.placeable().len() as f64);
    }

    /// Renews `name`'s lease if a third of it has passed; steps down if it was lost.
    async fn renew(&self, node: &Node, local: &Arc<dyn Local>, name: &str) {
        let Some(mut lease) = self.owned.lock().get(name).cloned() else {
            return;
        };
        let left = lease
            .until()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if left > node.options.lease * 2 / 3 {
            return;
        }
        match node.leases.renew(&mut lease).await {
            Ok(()) => {
                self.owned.lock().insert(name.to_string(), lease);
            }
            Err(LeaseError::Lost { .. }) => {
                tracing::warn!(agent = name, "lease lost: stepping down");
                self.give_up(node, local, name, GiveUp::StepDown).await;
            }
            // Unknown outcome (timeout, connection): keep the old lease; the next tick tries
            // again, and a lease that runs out steps down.
            Err(error) => tracing::warn!(agent = name, %error, "lease renewal failed"),
        }
    }

    /// Claims `name`, which this node registered just now, and starts it here. The ownership
    /// pass may be claiming it at this moment (it saw the registry entry): one operation per
    /// agent at a time, so this waits for that one and finds the agent started.
    pub(crate) async fn claim_spawned(
        &self,
        node: &Node,
        local: &Arc<dyn Local>,
        name: &str,
    ) -> SpawnOutcome {
        let _busy = loop {
            match self.try_busy(name) {
                Some(busy) => break busy,
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        if self.owned.lock().contains_key(name) {
            return SpawnOutcome::Started;
        }
        self.claim(node, local, name, Some(())).await
    }

    /// Marks `name` busy for as long as the guard lives; `None` if another operation on it
    /// runs. (A guard, so that a cancelled operation does not leave the agent busy for ever.)
    fn try_busy(&self, name: &str) -> Option<Busy<'_>> {
        self.busy.lock().insert(name.to_string()).then(|| Busy {
            owner: self,
            name: name.to_string(),
        })
    }

    /// Claims `name` and starts it here (see the module docs). `spawn` is set when this node
    /// spawned it just now. The caller holds `name` in `busy`.
    async fn claim(
        &self,
        node: &Node,
        local: &Arc<dyn Local>,
        name: &str,
        spawn: Option<()>,
    ) -> SpawnOutcome {
        let Some(registered) = node.registry.get(name) else {
            return SpawnOutcome::Failed("not in the registry".into());
        };
        let reason = match node.leases.get(name).await {
            Ok(None) => Reason::Spawn,
            Ok(Some(record)) => {
                let ends = record.until + node.options.max_clock_skew;
                if record.node != self.node && ends > SystemTime::now() {
                    return SpawnOutcome::Elsewhere;
                }
                if record.until <= SystemTime::UNIX_EPOCH {
                    Reason::Placement
                } else {
                    Reason::Failover
                }
            }
            Err(error) => {
                tracing::warn!(agent = name, %error, "reading the lease");
                return SpawnOutcome::Elsewhere;
            }
        };
        let reason = if spawn.is_some() {
            Reason::Spawn
        } else {
            reason
        };
        let lease = match node.leases.claim(name, &self.node).await {
            Ok(lease) => lease,
            Err(LeaseError::Held { .. } | LeaseError::LostRace { .. }) => {
                return SpawnOutcome::Elsewhere;
            }
            Err(error) => {
                tracing::warn!(agent = name, %error, "claim failed");
                return SpawnOutcome::Elsewhere;
            }
        };
        if let Err(error) = node.store.acquire(name, lease.epoch()).await {
            tracing::warn!(agent = name, %error, "taking the journal over failed");
            let _ = node.leases.release(lease).await;
            return SpawnOutcome::Elsewhere;
        }
        let outcome = async {
            let id = AgentId::new(name).map_err(|e| e.to_string())?;
            let vault = local
                .vault()
                .ok_or_else(|| String::from("no local vault"))?;
            // Spawned on another node a moment ago: its module may be newer than this
            // node's last sync.
            if let arbor_vault::Behaviour::Wasm(hash) = &registered.record.behaviour
                && vault.module_meta(hash).ok().flatten().is_none()
            {
                sync_modules(node, local.as_ref())
                    .await
                    .map_err(|e| format!("fetching its module: {e}"))?;
            }
            let fresh = node
                .store
                .latest_meta(&id)
                .map_err(|e| e.to_string())?
                .is_none();
            if fresh {
                let _ = vault.remove_agent(&id);
            } else {
                vault
                    .put_agent(&registered.record)
                    .and_then(|()| vault.sync())
                    .map_err(|e| e.to_string())?;
            }
            let spec = fresh.then(|| registered.spec());
            local
                .start(name, spec, &registered.record.supervisor)
                .await
                .map(|started| (started, fresh))
        }
        .await;
        match outcome {
            Ok((true, _)) => {
                tracing::info!(
                    agent = name,
                    epoch = lease.epoch(),
                    reason = reason.label(),
                    "claimed"
                );
                metrics::counter!(arbor_metrics::CLUSTER_CLAIMS, "reason" => reason.label())
                    .increment(1);
                self.owned.lock().insert(name.to_string(), lease);
                // Recovering it may have taken much of the lease (the keeper skips an agent
                // being claimed).
                self.renew(node, local, name).await;
                SpawnOutcome::Started
            }
            Ok((false, _)) | Err(_) => {
                let why = match &outcome {
                    Err(why) => why.clone(),
                    _ => "its start declined (quarantined)".to_string(),
                };
                tracing::error!(agent = name, why, "could not start the claimed agent");
                let state = match outcome {
                    Ok(_) => AgentState::Quarantined,
                    Err(_) if matches!(reason, Reason::Spawn) => AgentState::Terminated,
                    Err(_) => AgentState::Quarantined,
                };
                if let Err(error) = node
                    .registry
                    .set_state(name, state, Some(why.clone()))
                    .await
                {
                    tracing::error!(agent = name, %error, "registry not updated");
                }
                if let Some(vault) = local.vault()
                    && let Ok(id) = AgentId::new(name)
                {
                    let _ = vault.remove_agent(&id);
                }
                node.store.release(name).await;
                let _ = node.leases.release(lease).await;
                SpawnOutcome::Failed(why)
            }
        }
    }

    async fn give_up(&self, node: &Node, local: &Arc<dyn Local>, name: &str, how: GiveUp) {
        let lease = self.owned.lock().remove(name);
        let Some(lease) = lease else {
            return;
        };
        let path = node
            .registry
            .get(name)
            .map(|r| r.record.supervisor)
            .unwrap_or_default();
        local.stop(name, &path, how == GiveUp::Stop).await;
        if let Some(vault) = local.vault()
            && let Ok(id) = AgentId::new(name)
        {
            let _ = vault.remove_agent(&id).and_then(|_| vault.sync());
        }
        node.store.release(name).await;
        match how {
            GiveUp::StepDown => {
                metrics::counter!(arbor_metrics::CLUSTER_LEASES_LOST).increment(1);
                tracing::warn!(agent = name, epoch = lease.epoch(), "stepped down");
            }
            GiveUp::HandOff | GiveUp::Stop => {
                if how == GiveUp::HandOff {
                    metrics::counter!(arbor_metrics::CLUSTER_HANDOFFS).increment(1);
                }
                if let Err(error) = node.leases.release(lease).await {
                    tracing::warn!(agent = name, %error, "lease not released (it will expire)");
                }
            }
        }
    }

    /// Drains: takes no new agents and hands every owned one off, then returns.
    pub(crate) async fn drain(&self, node: &Arc<Node>, local: &Arc<dyn Local>) {
        self.draining.store(true, Ordering::Release);
        if let Err(error) = node.members.beat(true).await {
            tracing::warn!(%error, "draining heartbeat not written");
        }
        let names: Vec<String> = self.owned.lock().keys().cloned().collect();
        futures_util::stream::iter(names)
            .for_each_concurrent(AT_ONCE, |name| async move {
                self.give_up(node, local, &name, GiveUp::HandOff).await;
            })
            .await;
    }
}

/// Uploads this node's modules and adds the cluster's ones it lacks.
/// Uploads this node's modules the cluster's store is not known to hold (no listing).
pub(crate) async fn upload_modules(
    node: &Node,
    local: &dyn Local,
) -> Result<(), super::ClusterError> {
    match local.vault() {
        Some(vault) => node.registry.upload_modules(vault).await,
        None => Ok(()),
    }
}

pub(crate) async fn sync_modules(
    node: &Node,
    local: &dyn Local,
) -> Result<(), super::ClusterError> {
    let Some(vault) = local.vault() else {
        return Ok(());
    };
    for bytes in node.registry.sync_modules(vault).await? {
        if let Err(error) = local.add_module(&bytes) {
            tracing::warn!(%error, "a module from the cluster's store was refused");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Action, decide};

    /// Every combination of (wanted, placed here, owned, sound), with its action.
    const ROWS: &[(bool, bool, bool, bool, Action)] = &[
        (true, true, false, false, Action::Claim),
        (true, true, false, true, Action::Claim),
        (true, true, true, true, Action::Keep),
        (true, true, true, false, Action::StepDown),
        (true, false, true, true, Action::HandOff),
        (true, false, true, false, Action::StepDown),
        (true, false, false, false, Action::Nothing),
        (true, false, false, true, Action::Nothing),
        (false, true, true, true, Action::Stop),
        (false, false, true, true, Action::Stop),
        (false, true, true, false, Action::StepDown),
        (false, false, true, false, Action::StepDown),
        (false, true, false, false, Action::Nothing),
        (false, true, false, true, Action::Nothing),
        (false, false, false, false, Action::Nothing),
        (false, false, false, true, Action::Nothing),
    ];

    #[test]
    fn every_row_of_the_table() {
        for &(wanted, here, owned, sound, action) in ROWS {
            assert_eq!(
                decide(wanted, here, owned, sound),
                action,
                "wanted {wanted}, placed here {here}, owned {owned}, sound {sound}"
            );
        }
    }

    #[test]
    fn the_table_covers_every_combination_once() {
        let mut seen = std::collections::BTreeSet::new();
        for &(wanted, here, owned, sound, _) in ROWS {
            assert!(seen.insert((wanted, here, owned, sound)), "a row twice");
        }
        assert_eq!(seen.len(), 16);
    }
}
