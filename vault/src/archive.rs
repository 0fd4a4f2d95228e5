//! The evolution archive: every candidate an agent's evolution tried, with its parents, where it
//! came from, its scores per objective and how far it got, so that parents of later candidates
//! can be chosen from all of it, stepping stones included, not only from the current module.
//!
//! One tree, [`tree::ARCHIVE`], keyed `agent ‖ 0x00 ‖ module hash`: one agent's entries are one
//! prefix scan, and writing an entry again (a later stage reached, scores measured) replaces it.
//! Values are [`ArchiveEntry`], MessagePack with named fields; new fields are added with
//! `#[serde(default)]` so older entries still read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use crate::ids::{AgentId, ModuleHash};
use crate::vault::{Vault, now_millis, tree};

/// Where a candidate came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Origin {
    /// The module the agent ran when its evolution began (the archive's root).
    Production,
    /// Brought by a person or a program, through the API or `arborctl evolve submit`.
    Submitted {
        /// Who submitted it.
        author: String,
        /// What it is meant to change.
        description: String,
    },
    /// Compiled by the host from source.
    Built {
        /// `wat` or `rust`.
        language: String,
        /// BLAKE3 of the source, hex.
        source: String,
    },
    /// The base module with other parameters (`arbor:params`).
    Params {
        /// The parameters, each rendered as text, by name.
        params: BTreeMap<String, String>,
    },
    /// A semantically identical variant of a module, which must pass.
    Placebo {
        /// How it was made.
        how: String,
    },
}

impl Origin {
    /// A short name: `production`, `submitted`, `built`, `params`, `placebo`.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Production => "production",
            Origin::Submitted { .. } => "submitted",
            Origin::Built { .. } => "built",
            Origin::Params { .. } => "params",
            Origin::Placebo { .. } => "placebo",
        }
    }
}

impl std::fmt::Display for Origin {
    /// One line for people: `submitted by ana: faster Get`, `parameters capacity=16 policy=lru`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Production => f.write_str("production"),
            Origin::Submitted {
                author,
                description,
            } => write!(f, "submitted by {author}: {description}"),
            Origin::Built { language, source } => {
                write!(f, "built from {language} source {source}")
            }
            Origin::Params { params } => {
                f.write_str("parameters")?;
                for (name, value) in params {
                    write!(f, " {name}={value}")?;
                }
                Ok(())
            }
            Origin::Placebo { how } => write!(f, "placebo ({how})"),
        }
    }
}

/// How far a candidate got through the evaluation cascade, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reached {
    /// Refused before evaluation: it did not compile, load, or fit the agent's grants.
    Refused,
    /// Admitted, not yet evaluated.
    Admitted,
    /// Ended at the replay gate.
    Gate,
    /// Ended with the shadows (rejected or inconclusive there).
    Shadows,
    /// Approved.
    Approved,
    /// Promoted to production.
    Promoted,
}

impl Reached {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Reached::Refused => "refused",
            Reached::Admitted => "admitted",
            Reached::Gate => "gate",
            Reached::Shadows => "shadows",
            Reached::Approved => "approved",
            Reached::Promoted => "promoted",
        }
    }
}

/// One candidate in an agent's archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    /// The agent.
    pub agent: AgentId,
    /// The candidate (for a refused one that never became a module: BLAKE3 of what was
    /// offered).
    pub module: ModuleHash,
    /// The modules it was derived from (none for the root; two for a crossover).
    pub parents: Vec<ModuleHash>,
    /// Where it came from.
    pub origin: Origin,
    /// Its generation: one more than its deepest parent's (0 for the root).
    pub generation: u32,
    /// Its measured score per objective, by the objective's name (e.g. `fuel`, `score.hits`):
    /// the candidate's mean per input, as the host measured it.
    #[serde(default)]
    pub scores: BTreeMap<String, f64>,
    /// How far it got.
    pub reached: Reached,
    /// Why it stopped there (the verdict's reasons, the compiler's output, …).
    #[serde(default)]
    pub reason: Option<String>,
    /// When the entry was last written, milliseconds since the Unix epoch (set by
    /// [`Vault::put_archive`]).
    #[serde(default)]
    pub at_ms: u64,
}

fn archive_key(agent: &AgentId, module: &ModuleHash) -> Vec<u8> {
    let mut key = archive_prefix(agent);
    key.extend_from_slice(module.as_bytes());
    key
}

fn archive_prefix(agent: &AgentId) -> Vec<u8> {
    let mut key = agent.as_bytes().to_vec();
    key.push(0);
    key
}

impl Vault {
    /// Writes (or replaces) an archive entry, stamping its time.
    ///
    /// ```
    /// use arbor_vault::{AgentId, ArchiveEntry, Config, ModuleHash, Origin, Reached, Vault};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let vault = Vault::open(dir.path(), Config::default())?;
    /// let agent = AgentId::new("cache")?;
    /// let root = ModuleHash::of(b"v1");
    /// let entry = ArchiveEntry {
    ///     agent: agent.clone(),
    ///     module: ModuleHash::of(b"v2"),
    ///     parents: vec![root],
    ///     origin: Origin::Submitted { author: "ana".into(), description: "faster".into() },
    ///     generation: 1,
    ///     scores: [("fuel".to_string(), 1200.0)].into(),
    ///     reached: Reached::Approved,
    ///     reason: None,
    ///     at_ms: 0,
    /// };
    /// vault.put_archive(&entry)?;
    /// let found = vault.archive(&agent)?;
    /// assert_eq!(found.len(), 1);
    /// assert_eq!(found[0].reached, Reached::Approved);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_archive(&self, entry: &ArchiveEntry) -> Result<ArchiveEntry> {
        if let Some((name, score)) = entry.scores.iter().find(|(_, s)| !s.is_finite()) {
            return Err(Error::Refused {
                what: format!("archive entry {} of {}", entry.module.short(), entry.agent),
                reason: format!("score {name} is {score}, not a finite number"),
            });
        }
        let mut entry = entry.clone();
        entry.at_ms = now_millis();
        let key = archive_key(&entry.agent, &entry.module);
        let body = codec::to_msgpack("archive entry", &entry)?;
        self.inner.config.check_size(
            || format!("archive entry {} of {}", entry.module.short(), entry.agent),
            body.len(),
        )?;
        let value = codec::encode(&key, Kind::ArchiveEntry, &body);
        self.inner
            .archive
            .insert(key, value)
            .map_err(Error::sled("insert", tree::ARCHIVE))?;
        Ok(entry)
    }

    /// One archive entry.
    pub fn archive_entry(
        &self,
        agent: &AgentId,
        module: &ModuleHash,
    ) -> Result<Option<ArchiveEntry>> {
        let key = archive_key(agent, module);
        let value = self.inner.archive.get(&key).map_err(|e| {
            Error::from_sled_read(tree::ARCHIVE, || format!("{agent}@{}", module.short()), e)
        })?;
        value.map(|v| decode_entry(&key, &v)).transpose()
    }

    /// Every archive entry of `agent`, in module-hash order.
    pub fn archive(&self, agent: &AgentId) -> Result<Vec<ArchiveEntry>> {
        self.inner
            .archive
            .scan_prefix(archive_prefix(agent))
            .map(|item| {
                let (key, value) = item.map_err(Error::sled("scan", tree::ARCHIVE))?;
                decode_entry(&key, &value)
            })
            .collect()
    }
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<ArchiveEntry> {
    let render = || String::from_utf8_lossy(key).into_owned();
    let body = codec::decode(tree::ARCHIVE, key, render, Kind::ArchiveEntry, value)?;
    let entry: ArchiveEntry = codec::from_msgpack(tree::ARCHIVE, render, body)?;
    if archive_key(&entry.agent, &entry.module) != key {
        return Err(Error::corrupt(
            tree::ARCHIVE,
            render(),
            format!("entry is for {}@{}", entry.agent, entry.module.short()),
        ));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Config;

    fn entry(agent: &str, module: &[u8], reached: Reached) -> ArchiveEntry {
        ArchiveEntry {
            agent: AgentId::new(agent).unwrap(),
            module: ModuleHash::of(module),
            parents: vec![],
            origin: Origin::Production,
            generation: 0,
            scores: BTreeMap::new(),
            reached,
            reason: None,
            at_ms: 0,
        }
    }

    #[test]
    fn entries_are_per_agent_replaced_by_key_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let vault = Vault::open(dir.path(), Config::default()).unwrap();
            vault
                .put_archive(&entry("a", b"1", Reached::Admitted))
                .unwrap();
            vault.put_archive(&entry("a", b"2", Reached::Gate)).unwrap();
            vault
                .put_archive(&entry("a-1", b"1", Reached::Gate))
                .unwrap();
            vault
                .put_archive(&entry("a", b"1", Reached::Promoted))
                .unwrap();
            vault.flush().unwrap();
        }
        let vault = Vault::open(dir.path(), Config::default()).unwrap();
        let a = AgentId::new("a").unwrap();
        let found = vault.archive(&a).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        let one = vault
            .archive_entry(&a, &ModuleHash::of(b"1"))
            .unwrap()
            .unwrap();
        assert_eq!(one.reached, Reached::Promoted);
        assert!(one.at_ms > 0);
        assert_eq!(
            vault.archive(&AgentId::new("a-1").unwrap()).unwrap().len(),
            1
        );
    }

    #[test]
    fn a_score_that_is_not_a_number_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path(), Config::default()).unwrap();
        let mut bad = entry("a", b"1", Reached::Admitted);
        bad.scores.insert("fuel".into(), f64::NAN);
        assert!(matches!(
            vault.put_archive(&bad),
            Err(Error::Refused { .. })
        ));
        assert!(vault.archive(&bad.agent).unwrap().is_empty());
    }

    #[test]
    fn an_entry_under_another_key_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path(), Config::default()).unwrap();
        let stored = entry("a", b"1", Reached::Admitted);
        vault.put_archive(&stored).unwrap();
        let key = archive_key(&stored.agent, &stored.module);
        let value = vault.inner.archive.get(&key).unwrap().unwrap();
        let other = archive_key(&stored.agent, &ModuleHash::of(b"2"));
        vault.inner.archive.insert(&other, value).unwrap();
        assert!(matches!(
            vault.archive_entry(&stored.agent, &ModuleHash::of(b"2")),
            Err(Error::Corrupt { .. })
        ));
    }
}
