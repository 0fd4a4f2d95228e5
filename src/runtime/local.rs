//! The runtime as the cluster layer sees it on this node ([`Local`]): its running agents, its
//! local vault and its supervision tree.

use arbor_agent::{AgentRef, AgentSpec, AgentSystem};
use arbor_supervisor::SupervisorRef;
use arbor_vault::Vault;

use super::Inner;
use super::options::SupervisorOptions;
use crate::cluster::{BoxFuture, Local};

impl Inner {
    /// The supervisor at `path`, or the root if that one is not declared.
    fn supervisor_at(&self, path: &[String]) -> (SupervisorRef, SupervisorOptions) {
        if let (Some(options), Some(supervisor)) = (self.tree.options(path), self.root.find(path)) {
            return (supervisor, options);
        }
        (self.root.clone(), self.tree.root.clone())
    }
}

impl Local for Inner {
    fn lookup(&self, name: &str) -> Option<AgentRef> {
        self.system.lookup(name)
    }

    fn vault(&self) -> Option<&Vault> {
        self.system.vault()
    }

    fn system(&self) -> &AgentSystem {
        &self.system
    }

    fn add_module(&self, bytes: &[u8]) -> Result<(), crate::Error> {
        self.system.add_module("cluster", bytes)?;
        Ok(())
    }

    fn start<'a>(
        &'a self,
        name: &'a str,
        spec: Option<AgentSpec>,
        path: &'a [String],
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let (supervisor, options) = self.supervisor_at(path);
            let child = self.tree.agent_child(name, spec, options);
            match supervisor.start_child(child).await {
                Ok(Some(_)) => Ok(true),
                Ok(None) => Ok(false),
                Err(error) => Err(arbor_agent::report::chain(&error)),
            }
        })
    }

    fn stop<'a>(
        &'a self,
        name: &'a str,
        path: &'a [String],
        deregister: bool,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if deregister
                && let Some(agent) = self.system.lookup(name)
                && let Err(error) = agent.stop().await
            {
                tracing::warn!(agent = name, %error, "stop failed");
            }
            let (supervisor, _) = self.supervisor_at(path);
            // Terminating runs the agent's final checkpoint (its actor's post_stop).
            let _ = supervisor.terminate_child(name).await;
            let _ = supervisor.delete_child(name).await;
            self.tree.quarantined.lock().remove(name);
        })
    }

    fn is_stopped(&self) -> bool {
        self.is_shut_down() || self.stopped.lock().is_some()
    }
}
