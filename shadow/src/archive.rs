//! The arbiter's writes to the evolution archive ([`arbor_vault::ArchiveEntry`]): an entry
//! when a candidate is admitted or refused, and how far it got with what it measured when its
//! verdict, promotion or rollback comes. Nothing without a vault.

use std::collections::BTreeMap;

use arbor_vault::{AgentId, ArchiveEntry, ModuleHash, Origin, Reached, Vault};

use crate::context::Context;
use crate::error::{ShadowError, agent_id};

/// Records an admitted (or, with `refused`, a refused) candidate, and the agent's current
/// module as the archive's root if the archive has none yet.
pub(crate) fn enter(
    ctx: &Context,
    agent: &str,
    candidate: ModuleHash,
    parents: &[ModuleHash],
    origin: Origin,
    refused: Option<String>,
) -> Result<(), ShadowError> {
    let Some(vault) = ctx.system.vault() else {
        return Ok(());
    };
    let id = agent_id(agent)?;
    if let Ok(arbor_agent::BehaviourId::Wasm(current)) = ctx.current_module(agent) {
        root(vault, &id, current)?;
    }
    let mut generation = 0;
    for parent in parents {
        let found = vault
            .archive_entry(&id, parent)
            .map_err(ShadowError::Vault)?;
        generation = generation.max(found.map_or(0, |p| p.generation) + 1);
    }
    let (reached, reason) = match refused {
        Some(reason) => (Reached::Refused, Some(reason)),
        None => (Reached::Admitted, None),
    };
    // Admitting a module the archive already has (a resubmission, a search proposing it again
    // after a restart) keeps its entry as it is until the new evaluation ends.
    if reached == Reached::Admitted
        && vault
            .archive_entry(&id, &candidate)
            .map_err(ShadowError::Vault)?
            .is_some()
    {
        return Ok(());
    }
    put(
        vault,
        &ArchiveEntry {
            agent: id,
            module: candidate,
            parents: parents.to_vec(),
            origin,
            generation,
            scores: BTreeMap::new(),
            reached,
            reason,
            at_ms: 0,
        },
    )
}

/// The archive's root: the module the agent ran when its first candidate came.
fn root(vault: &Vault, agent: &AgentId, module: ModuleHash) -> Result<(), ShadowError> {
    if vault
        .archive(agent)
        .map_err(ShadowError::Vault)?
        .iter()
        .any(|e| e.module == module || e.origin == Origin::Production)
    {
        return Ok(());
    }
    put(
        vault,
        &ArchiveEntry {
            agent: agent.clone(),
            module,
            parents: Vec::new(),
            origin: Origin::Production,
            generation: 0,
            scores: BTreeMap::new(),
            reached: Reached::Promoted,
            reason: None,
            at_ms: 0,
        },
    )
}

/// Records how far `candidate` got, why it stopped there, and what it measured (replacing
/// earlier scores when `scores` is given). A candidate the archive lacks (admitted before the
/// archive existed) is left out.
pub(crate) fn reached(
    ctx: &Context,
    agent: &str,
    candidate: ModuleHash,
    reached: Reached,
    reason: Option<String>,
    scores: Option<BTreeMap<String, f64>>,
) -> Result<(), ShadowError> {
    let Some(vault) = ctx.system.vault() else {
        return Ok(());
    };
    let id = agent_id(agent)?;
    let Some(mut entry) = vault
        .archive_entry(&id, &candidate)
        .map_err(ShadowError::Vault)?
    else {
        return Ok(());
    };
    entry.reached = reached;
    entry.reason = reason;
    if let Some(scores) = scores {
        entry.scores = scores;
    }
    put(vault, &entry)
}

fn put(vault: &Vault, entry: &ArchiveEntry) -> Result<(), ShadowError> {
    vault.put_archive(entry).map_err(ShadowError::Vault)?;
    vault.flush().map(drop).map_err(ShadowError::Vault)
}
