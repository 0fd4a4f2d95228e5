//! WAL (in progress)
