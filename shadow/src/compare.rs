//! Comparing two replies to the same input: byte equality first, then MessagePack value
//! equality with the candidate's declared [`IgnoreRule`]s (GitHub Scientist's ignore rules).

use std::fmt;

use rmpv::Value;
use serde::{Deserialize, Serialize};

/// A part of a reply the comparison leaves out: a path of map keys from the reply's root, `*`
/// matching any key or array element. A candidate declares them for fields that may differ by
/// design (a timestamp, a version string). `"Value.value"` ignores `{"Value": {"value": …}}`'s
/// value; `"*.generated_at"` a `generated_at` field under any variant.
///
/// ```
/// use arbor_shadow::compare::{IgnoreRule, replies_match};
///
/// #[derive(serde::Serialize)]
/// struct Reply { count: u32, at: u64 }
/// let a = rmp_serde::to_vec_named(&Reply { count: 1, at: 10 }).unwrap();
/// let b = rmp_serde::to_vec_named(&Reply { count: 1, at: 99 }).unwrap();
/// assert!(!replies_match(&a, &b, &[]));
/// assert!(replies_match(&a, &b, &[IgnoreRule::path("at")]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoreRule {
    path: Vec<String>,
}

impl IgnoreRule {
    /// The rule for a dot-separated path (`"Value.value"`, `"*.at"`).
    pub fn path(path: &str) -> IgnoreRule {
        IgnoreRule {
            path: path.split('.').map(str::to_string).collect(),
        }
    }

    pub(crate) fn remove_from(&self, value: &mut Value) {
        remove(value, &self.path);
    }
}

impl fmt::Display for IgnoreRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path.join("."))
    }
}

fn remove(value: &mut Value, path: &[String]) {
    let Some((head, rest)) = path.split_first() else {
        return;
    };
    match value {
        Value::Map(entries) => {
            if rest.is_empty() {
                entries.retain(|(key, _)| !(head == "*" || key.as_str() == Some(head)));
            } else {
                for (key, child) in entries.iter_mut() {
                    if head == "*" || key.as_str() == Some(head) {
                        remove(child, rest);
                    }
                }
            }
        }
        Value::Array(items) if head == "*" || head.parse::<usize>().is_ok() => {
            let index = head.parse::<usize>().ok();
            if rest.is_empty() {
                match index {
                    Some(i) if i < items.len() => {
                        items.remove(i);
                    }
                    Some(_) => {}
                    None => items.clear(),
                }
            } else {
                for (i, child) in items.iter_mut().enumerate() {
                    if index.is_none_or(|index| index == i) {
                        remove(child, rest);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Decodes MessagePack from a module (nesting checked first: a hostile reply must not blow the
/// stack).
fn decode(bytes: &[u8]) -> Option<Value> {
    arbor_agent::envelope::check_msgpack(bytes).ok()?;
    rmpv::decode::read_value(&mut &bytes[..]).ok()
}

/// Whether two replies are the same, leaving out what `ignore` names. Equal bytes match;
/// otherwise both are decoded and compared as values (undecodable replies match only when
/// their bytes are equal).
pub fn replies_match(a: &[u8], b: &[u8], ignore: &[IgnoreRule]) -> bool {
    if a == b {
        return true;
    }
    let (Some(mut a), Some(mut b)) = (decode(a), decode(b)) else {
        return false;
    };
    for rule in ignore {
        rule.remove_from(&mut a);
        rule.remove_from(&mut b);
    }
    a == b
}

/// The kind of a message, for per-kind sample counts: the variant name of an externally
/// tagged enum (`{"Get": {…}}` → `Get`, `"Reset"` → `Reset`), or `other`.
pub fn message_kind(payload: &[u8]) -> String {
    match decode(payload) {
        Some(Value::String(name)) => name.into_str().unwrap_or_else(|| "other".into()),
        Some(Value::Map(entries)) if entries.len() == 1 => entries[0]
            .0
            .as_str()
            .map_or_else(|| "other".into(), str::to_string),
        _ => "other".into(),
    }
}

/// Leaf fields an input class looks at (the first ones, depth first).
const CLASS_FIELDS: usize = 4;

/// The input class of a message: its kind and a coarse shape of its first few leaf fields, so
/// rare groups of inputs show up in the coverage counts — e.g. `Get{key=zz}` for
/// `{"Get": {"key": "zz-17"}}` beside `Get{key=user}` for `"user:42"`. A string contributes its
/// leading letters (at most 4, lowercased; `#` for a leading digit, `_` for anything else, `""`
/// when empty), an integer its sign and number of decimal digits, a boolean its value, binary
/// data its length's power of two, an array its length's power of two; nil is `nil`; nested
/// maps are walked with dotted field paths (a nested unit variant is a string, so its leading
/// letters show). Messages that are not one enum variant class as their kind (`other`).
///
/// ```
/// use arbor_shadow::compare::input_class;
/// #[derive(serde::Serialize)]
/// enum Kv { Get { key: String }, Scan { prefix: String, limit: u32 } }
/// let get = |key: &str| rmp_serde::to_vec_named(&Kv::Get { key: key.into() }).unwrap();
/// assert_eq!(input_class(&get("zz-17")), "Get{key=zz}");
/// assert_eq!(input_class(&get("user:42")), "Get{key=user}");
/// assert_eq!(input_class(&get("42")), "Get{key=#}");
/// let scan = rmp_serde::to_vec_named(&Kv::Scan { prefix: "k".into(), limit: 100 }).unwrap();
/// assert_eq!(input_class(&scan), "Scan{prefix=k,limit=+3}");
/// ```
pub fn input_class(payload: &[u8]) -> String {
    let Some(value) = decode(payload) else {
        return "other".into();
    };
    let (kind, body) = match &value {
        Value::String(name) => return name.as_str().unwrap_or("other").to_string(),
        Value::Map(entries) if entries.len() == 1 => match entries[0].0.as_str() {
            Some(kind) => (kind, &entries[0].1),
            None => return "other".into(),
        },
        _ => return "other".into(),
    };
    let mut features = Vec::new();
    leaf_features(body, "", &mut features);
    format!("{kind}{{{}}}", features.join(","))
}

fn leaf_features(value: &Value, name: &str, out: &mut Vec<String>) {
    if out.len() >= CLASS_FIELDS {
        return;
    }
    let named = |feature: String| {
        if name.is_empty() {
            feature
        } else {
            format!("{name}={feature}")
        }
    };
    match value {
        Value::Map(entries) => {
            for (key, child) in entries {
                let key = key.as_str().unwrap_or("?");
                let path = if name.is_empty() {
                    key.to_string()
                } else {
                    format!("{name}.{key}")
                };
                leaf_features(child, &path, out);
            }
        }
        Value::Array(items) => {
            out.push(named(format!(
                "[{}]",
                items.len().checked_ilog2().unwrap_or(0)
            )));
        }
        Value::String(text) => {
            let text = text.as_str().unwrap_or("");
            let letters: String = text
                .chars()
                .take_while(|c| c.is_alphabetic())
                .take(4)
                .flat_map(char::to_lowercase)
                .collect();
            let feature = match text.chars().next() {
                None => "\"\"".to_string(),
                Some(_) if !letters.is_empty() => letters,
                Some(c) if c.is_ascii_digit() => "#".to_string(),
                Some(_) => "_".to_string(),
            };
            out.push(named(feature));
        }
        Value::Integer(n) => {
            let (sign, digits) = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) if i < 0 => ('-', i.unsigned_abs().to_string().len()),
                (_, Some(u)) => ('+', u.to_string().len()),
                _ => ('?', 0),
            };
            out.push(named(format!("{sign}{digits}")));
        }
        Value::Boolean(b) => out.push(named(b.to_string())),
        Value::Nil => out.push(named("nil".into())),
        Value::Binary(bytes) => out.push(named(format!(
            "b{}",
            bytes.len().checked_ilog2().unwrap_or(0)
        ))),
        Value::F32(_) | Value::F64(_) => out.push(named("f".into())),
        Value::Ext(..) => out.push(named("ext".into())),
    }
}

/// MessagePack rendered for people (JSON-like), cut to `max` characters.
pub fn render(bytes: &[u8], max: usize) -> String {
    let text = match decode(bytes) {
        Some(value) => value.to_string(),
        None => format!("<{} bytes, not MessagePack>", bytes.len()),
    };
    if text.chars().count() > max {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Serialize)]
    enum Msg {
        Get { key: String },
        Reset,
    }

    #[derive(Serialize)]
    enum Reply {
        Value { value: Option<String>, at: u64 },
        Entries { entries: Vec<(String, u64)> },
    }

    fn bytes<T: Serialize>(value: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(value).unwrap()
    }

    #[test]
    fn kinds_are_variant_names() {
        assert_eq!(message_kind(&bytes(&Msg::Get { key: "k".into() })), "Get");
        assert_eq!(message_kind(&bytes(&Msg::Reset)), "Reset");
        assert_eq!(message_kind(&bytes(&42u8)), "other");
        assert_eq!(message_kind(&[0xc1]), "other");
    }

    #[test]
    fn ignore_rules_remove_fields_and_elements() {
        let a = bytes(&Reply::Value {
            value: Some("x".into()),
            at: 1,
        });
        let b = bytes(&Reply::Value {
            value: Some("x".into()),
            at: 2,
        });
        let c = bytes(&Reply::Value {
            value: Some("y".into()),
            at: 2,
        });
        assert!(!replies_match(&a, &b, &[]));
        assert!(replies_match(&a, &b, &[IgnoreRule::path("Value.at")]));
        assert!(replies_match(&a, &b, &[IgnoreRule::path("*.at")]));
        assert!(!replies_match(&a, &c, &[IgnoreRule::path("*.at")]));
        let d = bytes(&Reply::Entries {
            entries: vec![("k".into(), 1)],
        });
        let e = bytes(&Reply::Entries {
            entries: vec![("k".into(), 2)],
        });
        assert!(replies_match(
            &d,
            &e,
            &[IgnoreRule::path("Entries.entries.*.1")]
        ));
        assert!(!replies_match(
            &d,
            &e,
            &[IgnoreRule::path("Entries.entries.*.0")]
        ));
        assert!(!replies_match(&[0xc1], &[0xc0], &[IgnoreRule::path("*")]));
        assert_eq!(IgnoreRule::path("a.*.b").to_string(), "a.*.b");
    }

    #[test]
    fn render_cuts_long_values() {
        let long = bytes(&"x".repeat(100));
        assert!(render(&long, 10).ends_with('…'));
        assert_eq!(render(&[0xc1], 40), "<1 bytes, not MessagePack>");
    }
}
