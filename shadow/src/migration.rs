//! Checking a state migration against production's state, with the host's decoder.
//!
//! A candidate migrates production's state in its own `restore`. Comparing that result through
//! the candidate again (restore the control's state into a fresh candidate, compare snapshots)
//! cannot catch a restore that loses data: both sides pass through the same lossy restore and
//! agree. So the arbiter checks the migration against production's state itself: both states
//! are decoded by the host (MessagePack, `rmpv`, nesting checked first), never by the candidate,
//! and under [`MigrationRule::Preserve`] every datum of production's state must still be in the
//! candidate's.
//!
//! A *datum* is a scalar in a value position (a map value, an array element) or the key of a
//! map entry whose value is a non-nil scalar (a data key such as a kv key); the keys of entries
//! holding maps, arrays or nil are structure (`"entries"` in `{"entries": {…}}`) and may be renamed. Data
//! are compared as a multiset, by value: integers by value whatever their width, strings and
//! binary as bytes, floats by bits, booleans; nil is not a datum (absent and nil are the same to
//! most layouts). So a candidate may reshape the state (wrap it, add fields, move a map), but
//! not drop, truncate or rewrite what it held. A state that is not MessagePack cannot be checked
//! and is refused unless the evaluation says [`MigrationRule::Unchecked`].
//!
//! The check runs wherever production's state enters the candidate: the replay gate's
//! checkpoint, the shadows' seeds and re-seeds, each periodic state comparison, and the
//! promotion's swap itself (where a failure refuses the swap, and the old module keeps running).
//!
//! What it cannot see: a candidate that carries production's data in its snapshot but does not
//! use it. That one answers wrongly when the data is read — in the gate, the shadows, the watch.

use std::collections::HashMap;

use rmpv::Value;
use serde::{Deserialize, Serialize};

use crate::compare::IgnoreRule;

/// How a candidate's state migration is judged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationRule {
    /// Every datum of production's state must be in the candidate's migrated state (default).
    #[default]
    Preserve,
    /// As [`Preserve`](Self::Preserve), leaving out what production's state holds at these
    /// paths (data the candidate drops on purpose, declared by the evaluation).
    PreserveExcept(Vec<IgnoreRule>),
    /// Not checked: the operator accepts the candidate's migration as it is; the reason goes
    /// into the lineage with the verdict.
    Unchecked {
        /// Why.
        reason: String,
    },
}

/// Why a migration was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationLoss {
    /// Production's state (or the candidate's) is not MessagePack, so nothing can be shown.
    #[error("the {0} state is not MessagePack, so its migration cannot be checked")]
    Opaque(&'static str),
    /// Data of production's state is missing from the candidate's.
    #[error("the migration lost {missing} of {total} data of production's state (e.g. {examples})")]
    Lost {
        /// Data missing (counting multiplicity).
        missing: u64,
        /// Data production's state holds.
        total: u64,
        /// A few of them, rendered.
        examples: String,
    },
}

/// Checks that `migrated` (the candidate's snapshot after restoring `production`) keeps what
/// `production` holds, under `rule`.
///
/// ```
/// use std::collections::BTreeMap;
/// use arbor_shadow::migration::{MigrationRule, check};
///
/// let v1: BTreeMap<&str, &str> = [("a", "short"), ("b", "a value longer than sixteen bytes")].into();
/// #[derive(serde::Serialize)]
/// struct V2<'a> { version: u32, entries: BTreeMap<&'a str, &'a str> }
/// let v1_bytes = rmp_serde::to_vec_named(&v1)?;
/// let kept = rmp_serde::to_vec_named(&V2 { version: 2, entries: v1.clone() })?;
/// assert!(check(&MigrationRule::Preserve, &v1_bytes, &kept).is_ok());
/// let lossy = rmp_serde::to_vec_named(&V2 { version: 2, entries: [("a", "short")].into() })?;
/// assert!(check(&MigrationRule::Preserve, &v1_bytes, &lossy).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check(
    rule: &MigrationRule,
    production: &[u8],
    migrated: &[u8],
) -> Result<(), MigrationLoss> {
    let except = match rule {
        MigrationRule::Unchecked { .. } => return Ok(()),
        MigrationRule::Preserve => &[][..],
        MigrationRule::PreserveExcept(paths) => paths.as_slice(),
    };
    let mut production = decode(production).ok_or(MigrationLoss::Opaque("production"))?;
    let migrated = decode(migrated).ok_or(MigrationLoss::Opaque("migrated"))?;
    for rule in except {
        rule.remove_from(&mut production);
    }
    let mut needed: HashMap<Datum, u64> = HashMap::new();
    data(&production, &mut |datum| {
        *needed.entry(datum).or_default() += 1
    });
    let total: u64 = needed.values().sum();
    data(&migrated, &mut |datum| {
        if let Some(count) = needed.get_mut(&datum) {
            *count = count.saturating_sub(1);
        }
    });
    let missing: u64 = needed.values().sum();
    if missing == 0 {
        return Ok(());
    }
    let mut examples: Vec<String> = needed
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(datum, _)| datum.render())
        .collect();
    examples.sort();
    examples.truncate(3);
    Err(MigrationLoss::Lost {
        missing,
        total,
        examples: examples.join(", "),
    })
}

fn decode(bytes: &[u8]) -> Option<Value> {
    arbor_agent::envelope::check_msgpack(bytes).ok()?;
    rmpv::decode::read_value(&mut &bytes[..]).ok()
}

/// One datum, normalised so equal values in different encodings compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Datum {
    Int(i128),
    Bytes(Vec<u8>),
    Float(u64),
    Bool(bool),
}

impl Datum {
    fn of(value: &Value) -> Option<Datum> {
        Some(match value {
            Value::Integer(n) => Datum::Int(
                n.as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))?,
            ),
            Value::String(text) => Datum::Bytes(text.as_bytes().to_vec()),
            Value::Binary(bytes) => Datum::Bytes(bytes.clone()),
            Value::Ext(_, bytes) => Datum::Bytes(bytes.clone()),
            Value::F32(f) => Datum::Float(f64::from(*f).to_bits()),
            Value::F64(f) => Datum::Float(f.to_bits()),
            Value::Boolean(b) => Datum::Bool(*b),
            Value::Nil | Value::Map(_) | Value::Array(_) => return None,
        })
    }

    fn render(&self) -> String {
        let text = match self {
            Datum::Int(n) => n.to_string(),
            Datum::Bytes(bytes) => format!("{:?}", String::from_utf8_lossy(bytes)),
            Datum::Float(bits) => f64::from_bits(*bits).to_string(),
            Datum::Bool(b) => b.to_string(),
        };
        if text.chars().count() > 40 {
            format!("{}…", text.chars().take(40).collect::<String>())
        } else {
            text
        }
    }
}

/// Calls `found` for every datum of `value` (see the module docs).
fn data(value: &Value, found: &mut impl FnMut(Datum)) {
    match value {
        Value::Map(entries) => {
            for (key, child) in entries {
                if matches!(child, Value::Map(_) | Value::Array(_)) {
                    data(child, found);
                } else if !child.is_nil() {
                    if let Some(key) = Datum::of(key) {
                        found(key);
                    }
                    if let Some(child) = Datum::of(child) {
                        found(child);
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                data(item, found);
            }
        }
        scalar => {
            if let Some(datum) = Datum::of(scalar) {
                found(datum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;

    fn bytes<T: Serialize>(value: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(value).unwrap()
    }

    #[derive(Serialize)]
    struct V2 {
        version: u32,
        entries: BTreeMap<String, String>,
    }

    fn store(n: usize) -> BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("k{i}"), "v".repeat(i % 40)))
            .collect()
    }

    #[test]
    fn a_reshaped_state_that_keeps_everything_passes() {
        let v1 = store(100);
        let v2 = V2 {
            version: 2,
            entries: v1.clone(),
        };
        assert_eq!(
            check(&MigrationRule::Preserve, &bytes(&v1), &bytes(&v2)),
            Ok(())
        );
        // Renamed structure, same data.
        #[derive(Serialize)]
        struct Renamed {
            items: Vec<(String, String)>,
        }
        let renamed = Renamed {
            items: v1.clone().into_iter().collect(),
        };
        assert_eq!(
            check(&MigrationRule::Preserve, &bytes(&v1), &bytes(&renamed)),
            Ok(())
        );
        // Integer width and string/binary representation do not matter.
        #[derive(Serialize)]
        struct Narrow {
            count: u8,
        }
        #[derive(Serialize)]
        struct Wide {
            count: i64,
            extra: bool,
        }
        assert_eq!(
            check(
                &MigrationRule::Preserve,
                &bytes(&Narrow { count: 7 }),
                &bytes(&Wide {
                    count: 7,
                    extra: true
                })
            ),
            Ok(())
        );
    }

    #[test]
    fn dropped_truncated_or_rewritten_data_is_a_loss() {
        let v1 = store(100);
        let long: BTreeMap<String, String> = v1
            .iter()
            .filter(|(_, v)| v.len() <= 16)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let lossy = V2 {
            version: 2,
            entries: long,
        };
        match check(&MigrationRule::Preserve, &bytes(&v1), &bytes(&lossy)) {
            Err(MigrationLoss::Lost { missing, total, .. }) => {
                assert_eq!(total, 200);
                assert!(missing > 50, "{missing}");
            }
            other => panic!("{other:?}"),
        }
        // Duplicated values count: dropping one of two equal values is a loss.
        let twice: BTreeMap<&str, &str> = [("a", "same"), ("b", "same")].into();
        let once: BTreeMap<&str, &str> = [("a", "same"), ("b", "other")].into();
        assert!(check(&MigrationRule::Preserve, &bytes(&twice), &bytes(&once)).is_err());
        // Uppercased keys: rewritten.
        let upper: BTreeMap<String, String> = v1
            .iter()
            .map(|(k, v)| (k.to_uppercase(), v.clone()))
            .collect();
        assert!(check(&MigrationRule::Preserve, &bytes(&v1), &bytes(&upper)).is_err());
    }

    #[test]
    fn declared_drops_and_unchecked_rules_and_opaque_states() {
        #[derive(Serialize)]
        struct Old {
            cache: BTreeMap<String, String>,
            data: BTreeMap<String, String>,
        }
        #[derive(Serialize)]
        struct New {
            data: BTreeMap<String, String>,
        }
        let old = Old {
            cache: store(5),
            data: store(3),
        };
        let new = New { data: store(3) };
        assert!(check(&MigrationRule::Preserve, &bytes(&old), &bytes(&new)).is_err());
        let except = MigrationRule::PreserveExcept(vec![IgnoreRule::path("cache")]);
        assert_eq!(check(&except, &bytes(&old), &bytes(&new)), Ok(()));
        let unchecked = MigrationRule::Unchecked {
            reason: "cache dropped on purpose".into(),
        };
        assert_eq!(check(&unchecked, b"\xc1", b"\xc1"), Ok(()));
        assert_eq!(
            check(&MigrationRule::Preserve, b"\xc1", &bytes(&new)),
            Err(MigrationLoss::Opaque("production"))
        );
        // Nil is not a datum: an Option that became absent is no loss.
        #[derive(Serialize)]
        struct WithNone {
            name: Option<String>,
        }
        #[derive(Serialize)]
        struct Empty {}
        assert_eq!(
            check(
                &MigrationRule::Preserve,
                &bytes(&WithNone { name: None }),
                &bytes(&Empty {})
            ),
            Ok(())
        );
    }
}
