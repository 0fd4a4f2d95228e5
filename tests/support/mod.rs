//! Helpers shared by the root crate's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use arbor::agent::{Behaviour, BehaviourError, Host};

/// A counter whose state `13` cannot be restored (its `restore` fails as a trap would), and
/// whose input `0` crashes it.
pub struct Unlucky(pub u64);

impl Behaviour for Unlucky {
    fn handle(&mut self, input: &[u8], _host: &mut Host) -> Result<Vec<u8>, BehaviourError> {
        let by: u64 =
            rmp_serde::from_slice(input).map_err(|e| BehaviourError::BadInput(e.to_string()))?;
        if by == 0 {
            return Err(BehaviourError::Trap("asked to crash".into()));
        }
        self.0 += by;
        Ok(rmp_serde::to_vec(&self.0).unwrap())
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, BehaviourError> {
        Ok(rmp_serde::to_vec(&self.0).unwrap())
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), BehaviourError> {
        let count: u64 = rmp_serde::from_slice(state)
            .map_err(|e| BehaviourError::StateRejected(e.to_string()))?;
        if count == 13 {
            return Err(BehaviourError::Trap("unlucky state".into()));
        }
        self.0 = count;
        Ok(())
    }
    fn describe(&self) -> String {
        "unlucky".into()
    }
}
