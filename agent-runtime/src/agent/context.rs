//! [`Context`]: what the agents of one system share — the [`Services`] that make behaviours,
//! the [`Directory`] of running agents, the [`Journal`] — and nothing else. Each concern keeps
//! its own rules in its own file; this one only puts them together, and answers a live host's
//! questions about the world ([`World`]).

use std::sync::atomic::{AtomicBool, Ordering};

use super::directory::Directory;
use super::journal::Journal;
use super::services::Services;
use crate::behaviour::HostError;
use crate::host::World;

/// What every agent of a system shares.
pub(crate) struct Context {
    pub(crate) services: Services,
    pub(crate) directory: Directory,
    pub(crate) journal: Journal,
    /// The bound on each agent's mailbox.
    pub(crate) mailbox: usize,
    /// The system was shut down: observers waiting for an agent to come back stop waiting.
    shut_down: AtomicBool,
}

impl Context {
    pub(crate) fn new(services: Services, journal: Journal, mailbox: usize) -> Context {
        Context {
            services,
            directory: Directory::default(),
            journal,
            mailbox,
            shut_down: AtomicBool::new(false),
        }
    }

    pub(crate) fn shut_down(&self) {
        self.shut_down.store(true, Ordering::Release);
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }
}

impl World for Context {
    fn agent_exists(&self, name: &str) -> bool {
        self.directory.accepts(name)
    }

    fn call_tool(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        self.services.tools.call(name, args)
    }
}
