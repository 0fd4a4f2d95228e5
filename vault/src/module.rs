//! The content-addressed module store.
//!
//! Two trees keyed by the 32-byte [`ModuleHash`] (BLAKE3 of the bytes): [`tree::MODULES`] holds
//! [`ModuleMeta`] (MessagePack, named fields) and [`tree::MODULE_BYTES`] the Wasm bytes, written
//! together in one transaction. The same bytes stored twice are one entry: the second
//! [`Vault::put_module`] returns the first one's metadata and changes nothing.

use serde::{Deserialize, Serialize};
use sled::IVec;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use crate::ids::ModuleHash;
use crate::vault::{Vault, now_millis, tree};

/// What the caller says about a module it stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// A name for people (`counter`, `kv-store`).
    pub name: String,
    /// A version label for people (`1.4.0`, `candidate-7`); not interpreted.
    pub version_label: String,
    /// The agent ABI version the module exports (`arbor_abi_version()`), as checked by the agent
    /// runtime.
    pub abi_version: u32,
    /// Where it came from (`file:/srv/agents/kv.wasm`, `arborctl upload`, `evolved from <hash>`).
    pub origin: String,
}

/// A stored module's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModuleMeta {
    /// The content hash; the key.
    pub hash: ModuleHash,
    /// Name given when first stored.
    pub name: String,
    /// Version label given when first stored.
    pub version_label: String,
    /// Agent ABI version.
    pub abi_version: u32,
    /// Size of the Wasm bytes.
    pub size_bytes: u64,
    /// When first stored, in milliseconds since the Unix epoch.
    pub added_at_ms: u64,
    /// Where it came from.
    pub origin: String,
}

/// The result of [`Vault::put_module`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutModule {
    /// The stored metadata (the earlier entry's, if the bytes were already there).
    pub meta: ModuleMeta,
    /// Whether this call stored the module (false: the same bytes were already stored).
    pub added: bool,
}

/// The Wasm binary magic and version 1, the first 8 bytes of every core module.
const WASM_HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";

fn check_wasm(name: &str, bytes: &[u8]) -> Result<()> {
    let not_wasm = |reason| {
        Err(Error::NotWasm {
            name: name.to_owned(),
            reason,
        })
    };
    if bytes.len() < WASM_HEADER.len() {
        return not_wasm("shorter than the 8-byte wasm header");
    }
    if bytes[..4] != WASM_HEADER[..4] {
        return not_wasm("no \\0asm magic");
    }
    if bytes[4..8] != WASM_HEADER[4..] {
        return not_wasm("not binary format version 1 (a component or a newer format)");
    }
    Ok(())
}

impl Vault {
    /// Stores a Wasm module under its BLAKE3 hash.
    ///
    /// The bytes must start with the Wasm magic and binary version 1 (deeper validation belongs
    /// to the agent runtime) and be no larger than
    /// [`Config::max_value_bytes`](crate::Config::max_value_bytes); otherwise
    /// [`Error::NotWasm`] / [`Error::TooLarge`] and nothing is stored. Storing bytes that are
    /// already there returns the existing metadata with `added: false`.
    ///
    /// ```
    /// use arbor_vault::{Config, ModuleInfo, Vault};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let vault = Vault::open(dir.path(), Config::default())?;
    /// let wasm = b"\0asm\x01\0\0\0"; // the smallest valid module
    /// let info = ModuleInfo {
    ///     name: "empty".into(),
    ///     version_label: "1".into(),
    ///     abi_version: 1,
    ///     origin: "doc example".into(),
    /// };
    /// let first = vault.put_module(wasm, &info)?;
    /// let again = vault.put_module(wasm, &info)?;
    /// assert!(first.added && !again.added);
    /// assert_eq!(vault.module_bytes(&first.meta.hash)?.as_deref(), Some(&wasm[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_module(&self, bytes: &[u8], info: &ModuleInfo) -> Result<PutModule> {
        self.inner
            .config
            .check_size(|| format!("module {:?}", info.name), bytes.len())?;
        check_wasm(&info.name, bytes)?;
        let hash = ModuleHash::of(bytes);
        let key = hash.as_bytes();
        let meta = ModuleMeta {
            hash,
            name: info.name.clone(),
            version_label: info.version_label.clone(),
            abi_version: info.abi_version,
            size_bytes: bytes.len() as u64,
            added_at_ms: now_millis(),
            origin: info.origin.clone(),
        };
        let meta_body = codec::to_msgpack("module metadata", &meta)?;
        self.inner.config.check_size(
            || format!("metadata of module {:?}", info.name),
            meta_body.len(),
        )?;
        let meta_value = IVec::from(codec::encode(key, Kind::ModuleMeta, &meta_body));
        let bytes_value = IVec::from(codec::encode(key, Kind::ModuleBytes, bytes));
        let inner = &*self.inner;
        let existing = (&inner.modules, &inner.module_bytes)
            .transaction(|(metas, blobs)| {
                if let Some(existing) = metas.get(key)? {
                    return Ok(Some(existing));
                }
                metas.insert(&key[..], meta_value.clone())?;
                blobs.insert(&key[..], bytes_value.clone())?;
                Ok::<_, ConflictableTransactionError<Error>>(None)
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(source) => Error::Sled {
                    op: "transaction",
                    tree: tree::MODULES,
                    source,
                },
            })?;
        match existing {
            Some(value) => Ok(PutModule {
                meta: self.decode_module_meta(&hash, &value)?,
                added: false,
            }),
            None => Ok(PutModule { meta, added: true }),
        }
    }

    fn decode_module_meta(&self, hash: &ModuleHash, value: &[u8]) -> Result<ModuleMeta> {
        let render = || hash.to_string();
        let body = codec::decode(
            tree::MODULES,
            hash.as_bytes(),
            render,
            Kind::ModuleMeta,
            value,
        )?;
        let meta: ModuleMeta = codec::from_msgpack(tree::MODULES, render, body)?;
        if meta.hash != *hash {
            return Err(Error::corrupt(
                tree::MODULES,
                render(),
                format!("metadata is for module {}", meta.hash),
            ));
        }
        Ok(meta)
    }

    /// A module's metadata.
    pub fn module_meta(&self, hash: &ModuleHash) -> Result<Option<ModuleMeta>> {
        let value = self
            .inner
            .modules
            .get(hash.as_bytes())
            .map_err(|e| Error::from_sled_read(tree::MODULES, || hash.to_string(), e))?;
        value.map(|v| self.decode_module_meta(hash, &v)).transpose()
    }

    /// A module's Wasm bytes, verified: the frame checksum and the content hash itself.
    pub fn module_bytes(&self, hash: &ModuleHash) -> Result<Option<Vec<u8>>> {
        let render = || hash.to_string();
        let tree = tree::MODULE_BYTES;
        let Some(value) = self
            .inner
            .module_bytes
            .get(hash.as_bytes())
            .map_err(|e| Error::from_sled_read(tree, render, e))?
        else {
            return Ok(None);
        };
        let bytes = codec::decode(tree, hash.as_bytes(), render, Kind::ModuleBytes, &value)?;
        if ModuleHash::of(bytes) != *hash {
            return Err(Error::corrupt(
                tree,
                render(),
                "bytes do not hash to their key",
            ));
        }
        Ok(Some(bytes.to_vec()))
    }

    /// Metadata of every stored module, in hash order, without reading the bytes.
    pub fn list_modules(&self) -> Result<Vec<ModuleMeta>> {
        self.inner
            .modules
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(Error::sled("scan", tree::MODULES))?;
                let hash = <[u8; 32]>::try_from(key.as_ref())
                    .map(ModuleHash::from_bytes)
                    .map_err(|_| {
                        Error::corrupt(
                            tree::MODULES,
                            format!("{:?}", String::from_utf8_lossy(&key)),
                            "key is not a 32-byte hash",
                        )
                    })?;
                self.decode_module_meta(&hash, &value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_header_check() {
        assert!(check_wasm("m", b"\0asm\x01\0\0\0").is_ok());
        assert!(check_wasm("m", b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0").is_ok());
        assert!(check_wasm("m", b"\0asm\x01\0\0").is_err());
        assert!(check_wasm("m", b"\x7fELF\x01\0\0\0").is_err());
        // A component (version 0x0d, layer 1) is not a core module.
        assert!(check_wasm("m", b"\0asm\x0d\0\x01\0").is_err());
        let msg = check_wasm("kv", b"{}").err().map(|e| e.to_string());
        assert_eq!(
            msg.as_deref(),
            Some("module \"kv\" is not a wasm module: shorter than the 8-byte wasm header")
        );
    }
}
