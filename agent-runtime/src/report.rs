//! An error and its causes as one line, for people: what `arborctl` prints and what a tool's
//! failure hands the behaviour. `Display` of a typed error names only its own layer; the
//! WAL's segment and offset or the vault's tree and key are further down its `source()` chain.

use std::error::Error;

/// `error` and each of its sources, `: `-separated.
///
/// ```
/// use arbor_agent::report::chain;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot open the journal")]
/// struct Open(#[source] std::io::Error);
///
/// let error = Open(std::io::Error::other("segment 3 at offset 4096: bad checksum"));
/// assert_eq!(chain(&error), "cannot open the journal: segment 3 at offset 4096: bad checksum");
/// ```
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their source's text in their own (`#[error("{0}")]`, transparent).
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
