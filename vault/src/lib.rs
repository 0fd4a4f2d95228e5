//! Agent state, module and lineage store for arbor (filled in by the vault issue).
