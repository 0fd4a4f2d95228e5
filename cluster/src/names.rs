//! Agent names as NATS subject tokens and KV keys.
//!
//! An agent id is any string, but a subject token may not hold `.`, `*`, `>` or whitespace and
//! a KV key only `[-/_=.a-zA-Z0-9]`. The encoding keeps `[A-Za-z0-9_-]` and writes every other
//! byte as `=XX` (upper-case hex): `=` itself is escaped, so the encoding is injective (two
//! agents never share a subject or a lease key), and its output is valid in both places.

use std::fmt::Write as _;

/// The subject-and-key-safe form of `agent` (see the module docs).
///
/// ```
/// assert_eq!(arbor_cluster::encode_agent("kv-1"), "kv-1");
/// assert_eq!(arbor_cluster::encode_agent("a.b c"), "a=2Eb=20c");
/// assert_eq!(arbor_cluster::encode_agent(""), "=");
/// ```
pub fn encode_agent(agent: &str) -> String {
    if agent.is_empty() {
        // A token must not be empty; a lone `=` is never produced by an escape (always 3 bytes).
        return "=".to_string();
    }
    let mut out = String::with_capacity(agent.len());
    for byte in agent.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "={byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::encode_agent;

    #[test]
    fn distinct_agents_stay_distinct() {
        let names = ["a.b", "a=2Eb", "a_b", "a-b", "", "=", "é", "a>b", "a*"];
        let encoded: std::collections::HashSet<String> =
            names.iter().map(|n| encode_agent(n)).collect();
        assert_eq!(encoded.len(), names.len());
        for e in &encoded {
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b)),
                "{e}"
            );
        }
    }
}
