//! Introspection: the supervision tree as data, for metrics and `arborctl`.

use crate::spec::{ChildKind, Intensity, Restart, Strategy};
use crate::supervisor::ExitReason;

/// A supervisor and everything below it, as of when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorTree {
    /// The supervisor's name.
    pub name: String,
    /// Its strategy.
    pub strategy: Strategy,
    /// Its restart intensity.
    pub intensity: Intensity,
    /// Restarts it has made since it started (this incarnation).
    pub restarts: u64,
    /// Restarts within its intensity period as of when it was read (it gives up when this
    /// exceeds `intensity.max_restarts`).
    pub recent_restarts: usize,
    /// Why it exited, once it has.
    pub exit: Option<ExitReason>,
    /// Its children in start order.
    pub children: Vec<ChildInfo>,
}

/// One child of a supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// Its id.
    pub id: String,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Its restart type.
    pub restart: Restart,
    /// What it is doing.
    pub state: ChildState,
    /// How many times this supervisor has restarted it.
    pub restarts: u64,
    /// For a supervisor child, its subtree.
    pub supervisor: Option<SupervisorTree>,
}

/// A child's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildState {
    /// Its actor is running.
    Running,
    /// It exited and waits to be restarted (backoff, or a restart that failed and is retried).
    Restarting,
    /// It exited and is not restarted (or was terminated by request).
    Terminated {
        /// Why it exited.
        reason: ExitReason,
    },
}

impl SupervisorTree {
    /// Every child in the tree, depth first, with its path of supervisor names from this one.
    pub fn walk(&self) -> Vec<(Vec<String>, &ChildInfo)> {
        let mut out = Vec::new();
        self.walk_into(&mut vec![self.name.clone()], &mut out);
        out
    }

    fn walk_into<'a>(
        &'a self,
        path: &mut Vec<String>,
        out: &mut Vec<(Vec<String>, &'a ChildInfo)>,
    ) {
        for child in &self.children {
            out.push((path.clone(), child));
            if let Some(sub) = &child.supervisor {
                path.push(sub.name.clone());
                sub.walk_into(path, out);
                path.pop();
            }
        }
    }

    /// The supervisor at `path` (names below this one), if present.
    pub fn find(&self, path: &[String]) -> Option<&SupervisorTree> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        self.children
            .iter()
            .filter_map(|c| c.supervisor.as_ref())
            .find(|s| &s.name == first)
            .and_then(|s| s.find(rest))
    }
}
