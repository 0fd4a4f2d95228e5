//! Tunable parameters: the space a module declares (`arbor:tunables`, JSON) and points in it
//! ([`Params`]), which reach the module as its `arbor:params` section (MessagePack, named).

use std::collections::BTreeMap;
use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::EvolveError;

/// At most this many tunables in one space: a space is read from a module, which may be
/// hostile.
pub const MAX_TUNABLES: usize = 64;
/// At most this many options of one choice.
pub const MAX_OPTIONS: usize = 256;

/// One parameter and the values it may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tunable {
    /// Its name: the field the module decodes.
    pub name: String,
    /// Its type and range.
    #[serde(flatten)]
    pub kind: Kind,
}

/// A parameter's type and range (bounds inclusive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Kind {
    /// An integer in `min..=max`.
    Int {
        /// The smallest value.
        min: i64,
        /// The largest value.
        max: i64,
    },
    /// A number in `min..=max`.
    Float {
        /// The smallest value.
        min: f64,
        /// The largest value.
        max: f64,
    },
    /// One of `options`.
    Choice {
        /// The values, as the module spells them.
        options: Vec<String>,
    },
}

/// One parameter's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// Of an [`Kind::Int`].
    Int(i64),
    /// Of a [`Kind::Float`].
    Float(f64),
    /// Of a [`Kind::Choice`].
    Choice(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Choice(v) => f.write_str(v),
        }
    }
}

/// A point in a [`Space`]: a value per parameter, by name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    /// The bytes of the module's `arbor:params` section: MessagePack, a map by name. Equal
    /// parameters give equal bytes (the map is ordered), so a configuration has one module.
    pub fn encode(&self) -> Vec<u8> {
        // A map of strings, integers, finite floats and strings always encodes.
        rmp_serde::to_vec_named(&self.0).unwrap_or_default()
    }

    /// Decodes `arbor:params` bytes written by [`encode`](Self::encode).
    pub fn decode(bytes: &[u8]) -> Result<Params, EvolveError> {
        rmp_serde::from_slice(bytes).map_err(|e| EvolveError::BadParams(e.to_string()))
    }

    /// Each value as text, for reports and the archive.
    pub fn render(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(name, value)| (name.clone(), value.to_string()))
            .collect()
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, value) in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

/// The parameters a module accepts.
///
/// ```
/// use arbor_evolve::{Params, Space, Value};
///
/// let space = Space::parse(br#"[
///     {"name": "capacity", "kind": "int", "min": 0, "max": 256},
///     {"name": "policy", "kind": "choice", "options": ["lru", "fifo"]}
/// ]"#)?;
/// let mut params = Params::default();
/// params.0.insert("capacity".into(), Value::Int(32));
/// params.0.insert("policy".into(), Value::Choice("lru".into()));
/// space.check(&params)?;
/// params.0.insert("capacity".into(), Value::Int(1000));
/// assert!(space.check(&params).is_err());
/// # Ok::<(), arbor_evolve::EvolveError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "Vec<Tunable>", try_from = "Vec<Tunable>")]
pub struct Space(Vec<Tunable>);

impl TryFrom<Vec<Tunable>> for Space {
    type Error = EvolveError;

    /// Checked as [`Space::new`] checks, so a space read from anywhere is a valid one.
    fn try_from(tunables: Vec<Tunable>) -> Result<Space, EvolveError> {
        Space::new(tunables)
    }
}

impl From<Space> for Vec<Tunable> {
    fn from(space: Space) -> Vec<Tunable> {
        space.0
    }
}

impl Space {
    /// A space from its JSON (as in `arbor:tunables`), checked: names unique and non-empty,
    /// bounds ordered and finite, choices non-empty, at most [`MAX_TUNABLES`].
    pub fn parse(json: &[u8]) -> Result<Space, EvolveError> {
        let tunables: Vec<Tunable> =
            serde_json::from_slice(json).map_err(|e| EvolveError::BadSpace(e.to_string()))?;
        Space::new(tunables)
    }

    /// A space from its tunables, checked as [`parse`](Self::parse) does.
    pub fn new(tunables: Vec<Tunable>) -> Result<Space, EvolveError> {
        let bad = |why: String| Err(EvolveError::BadSpace(why));
        if tunables.is_empty() {
            return bad("no tunables".into());
        }
        if tunables.len() > MAX_TUNABLES {
            return bad(format!(
                "{} tunables, at most {MAX_TUNABLES}",
                tunables.len()
            ));
        }
        for (at, tunable) in tunables.iter().enumerate() {
            let name = &tunable.name;
            if name.is_empty() || name.len() > 64 {
                return bad(format!("tunable {at}: a name of 1 to 64 bytes"));
            }
            if tunables[..at].iter().any(|t| t.name == *name) {
                return bad(format!("`{name}` is declared twice"));
            }
            match &tunable.kind {
                Kind::Int { min, max } if min > max => {
                    return bad(format!("`{name}`: min {min} > max {max}"));
                }
                Kind::Float { min, max } if !(min.is_finite() && max.is_finite() && min <= max) => {
                    return bad(format!("`{name}`: bounds {min}..={max}"));
                }
                Kind::Choice { options } if options.is_empty() || options.len() > MAX_OPTIONS => {
                    return bad(format!(
                        "`{name}`: {} options, 1 to {MAX_OPTIONS}",
                        options.len()
                    ));
                }
                _ => {}
            }
        }
        Ok(Space(tunables))
    }

    /// The tunables, in declared order.
    pub fn tunables(&self) -> &[Tunable] {
        &self.0
    }

    /// Whether `params` names every tunable, nothing else, each in range.
    pub fn check(&self, params: &Params) -> Result<(), EvolveError> {
        let bad = |why: String| Err(EvolveError::BadParams(why));
        if let Some(extra) = params
            .0
            .keys()
            .find(|k| !self.0.iter().any(|t| &t.name == *k))
        {
            return bad(format!("`{extra}` is not a tunable"));
        }
        for tunable in &self.0 {
            let name = &tunable.name;
            let Some(value) = params.0.get(name) else {
                return bad(format!("`{name}` has no value"));
            };
            let fits = match (&tunable.kind, value) {
                (Kind::Int { min, max }, Value::Int(v)) => (min..=max).contains(&v),
                (Kind::Float { min, max }, Value::Float(v)) => (min..=max).contains(&v),
                (Kind::Choice { options }, Value::Choice(v)) => options.contains(v),
                _ => false,
            };
            if !fits {
                return bad(format!("`{name}` = {value} is outside {:?}", tunable.kind));
            }
        }
        Ok(())
    }

    /// A point drawn uniformly from the space.
    pub fn random(&self, rng: &mut impl Rng) -> Params {
        Params(
            self.0
                .iter()
                .map(|t| (t.name.clone(), t.kind.random(rng)))
                .collect(),
        )
    }

    /// The point the module runs with when given no parameters, if `defaults` names it: each
    /// tunable's value from `defaults`, or its smallest value.
    pub fn complete(&self, defaults: &Params) -> Params {
        Params(
            self.0
                .iter()
                .map(|t| {
                    let value = defaults
                        .0
                        .get(&t.name)
                        .cloned()
                        .unwrap_or_else(|| t.kind.lowest());
                    (t.name.clone(), value)
                })
                .collect(),
        )
    }
}

impl Kind {
    /// A value drawn uniformly. A kind no [`Space`] would accept (bounds out of order or not
    /// finite, no options) gives its lowest value instead of panicking.
    pub fn random(&self, rng: &mut impl Rng) -> Value {
        match self {
            Kind::Int { min, max } if min <= max => Value::Int(rng.random_range(*min..=*max)),
            Kind::Float { min, max } if min.is_finite() && max.is_finite() && min <= max => {
                Value::Float(rng.random_range(*min..=*max))
            }
            Kind::Choice { options } if !options.is_empty() => {
                Value::Choice(options[rng.random_range(0..options.len())].clone())
            }
            _ => self.lowest(),
        }
    }

    fn lowest(&self) -> Value {
        match self {
            Kind::Int { min, .. } => Value::Int(*min),
            Kind::Float { min, .. } => Value::Float(*min),
            Kind::Choice { options } => Value::Choice(options.first().cloned().unwrap_or_default()),
        }
    }

    /// `value` moved by a random step either way of up to a tenth of the range or, as often, a
    /// fiftieth (long jumps and fine tuning; at least 1 for an integer), kept in range; a
    /// choice becomes another option, drawn uniformly.
    pub fn mutate(&self, value: &Value, rng: &mut impl Rng) -> Value {
        let scale: i32 = if rng.random_bool(0.5) { 10 } else { 50 };
        match (self, value) {
            (Kind::Int { min, max }, Value::Int(v)) if min <= max => {
                let reach = ((max - min) / i64::from(scale)).max(1);
                let step = rng.random_range(-reach..=reach);
                let step = if step == 0 { 1 } else { step };
                Value::Int(v.saturating_add(step).clamp(*min, *max))
            }
            (Kind::Float { min, max }, Value::Float(v))
                if min.is_finite() && max.is_finite() && min <= max =>
            {
                let reach = (max - min) / f64::from(scale);
                let step = rng.random_range(-reach..=reach);
                Value::Float((v + step).clamp(*min, *max))
            }
            (Kind::Choice { options }, Value::Choice(v)) if options.len() > 1 => {
                let others: Vec<&String> = options.iter().filter(|o| *o != v).collect();
                Value::Choice(others[rng.random_range(0..others.len())].clone())
            }
            _ => self.random(rng),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    const CACHE: &[u8] = br#"[
        {"name": "capacity", "kind": "int", "min": 0, "max": 256},
        {"name": "ratio", "kind": "float", "min": 0.0, "max": 1.0},
        {"name": "policy", "kind": "choice", "options": ["lru", "fifo"]}
    ]"#;

    #[test]
    fn bad_spaces_are_refused_with_the_reason() {
        for (json, expect) in [
            (&b"[]"[..], "no tunables"),
            (
                br#"[{"name": "a", "kind": "int", "min": 2, "max": 1}]"#,
                "min 2 > max 1",
            ),
            (
                br#"[{"name": "a", "kind": "choice", "options": []}]"#,
                "0 options",
            ),
            (
                br#"[{"name": "a", "kind": "int", "min": 0, "max": 1},
                    {"name": "a", "kind": "int", "min": 0, "max": 1}]"#,
                "declared twice",
            ),
            (br#"[{"name": "a", "kind": "complex"}]"#, "unknown variant"),
            (b"not json", "expected"),
        ] {
            let err = Space::parse(json).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
    }

    #[test]
    fn a_space_read_from_anywhere_is_checked_and_a_bad_kind_does_not_panic() {
        let empty: Result<Space, _> = serde_json::from_str("[]");
        assert!(empty.is_err());
        let space: Space = serde_json::from_slice(CACHE).unwrap();
        assert_eq!(space, Space::parse(CACHE).unwrap());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for kind in [
            Kind::Int { min: 2, max: 1 },
            Kind::Float {
                min: f64::NAN,
                max: 1.0,
            },
            Kind::Choice { options: vec![] },
        ] {
            let value = kind.random(&mut rng);
            let _ = kind.mutate(&value, &mut rng);
        }
    }

    #[test]
    fn random_and_mutated_points_stay_in_the_space() {
        let space = Space::parse(CACHE).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..1_000 {
            let point = space.random(&mut rng);
            space.check(&point).unwrap();
            for tunable in space.tunables() {
                let moved = tunable.kind.mutate(&point.0[&tunable.name], &mut rng);
                let mut next = point.clone();
                next.0.insert(tunable.name.clone(), moved.clone());
                space.check(&next).unwrap();
                assert_ne!(
                    (&tunable.name, &moved),
                    (&tunable.name, &Value::Choice(String::new()))
                );
            }
        }
    }

    #[test]
    fn params_encode_deterministically_and_round_trip() {
        let space = Space::parse(CACHE).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let params = space.random(&mut rng);
        let mut reversed = Params::default();
        for (k, v) in params.0.iter().rev() {
            reversed.0.insert(k.clone(), v.clone());
        }
        assert_eq!(params.encode(), reversed.encode());
        assert_eq!(Params::decode(&params.encode()).unwrap(), params);
        let missing = Params(
            params
                .0
                .iter()
                .take(1)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        assert!(space.check(&missing).is_err());
        let filled = space.complete(&missing);
        space.check(&filled).unwrap();
    }
}
