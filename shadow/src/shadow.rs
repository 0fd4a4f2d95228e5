//! Shadows: behaviour instances that handle production's inputs in isolation, and the pairwise
//! comparison of what they did.
//!
//! A shadow is an [`Instance`](crate::instance::Instance) (see [`instance`](crate::instance):
//! recorded answers, sends captured, never delivered) in this process or on another node of a
//! cluster; the [`Factory`] decides which, once per evaluation, and everything else here is the
//! same for both.

use std::sync::Arc;

use arbor_agent::envelope::Answer;
use arbor_agent::tools::Tools;
use arbor_agent::wasm::{AgentLimits, Capabilities};
use arbor_agent::{AgentSystem, BehaviourId};

use crate::compare::{IgnoreRule, message_kind, render, replies_match};
use crate::error::ShadowError;
pub(crate) use crate::instance::{Ended, Run};
use crate::instance::{Instance, InstanceError, InstanceSpec, RemoteInstance, ShadowNodes};
use crate::migration::MigrationRule;
use crate::objective::{Grade, Outcome, Rules};
use crate::policy::{Divergence, Policy, ShadowLimits, Tally};

/// Where a factory's shadows run.
#[derive(Clone)]
pub(crate) enum Place {
    /// In this process.
    Here,
    /// On `node`, through `nodes`.
    On {
        nodes: Arc<dyn ShadowNodes>,
        node: String,
        /// Set when the node was lost: what comes after is no verdict on the candidate.
        lost: Lost,
    },
}

/// Why a factory's shadow node was lost, once it was (shared by the factory's instances).
#[derive(Clone, Default)]
pub(crate) struct Lost(Arc<parking_lot::Mutex<Option<InstanceError>>>);

impl Lost {
    /// Passes `result` on, remembering a lost node.
    fn note<T>(&self, result: Result<T, InstanceError>) -> Result<T, InstanceError> {
        if let Err(InstanceError::Node { node, reason }) = &result {
            self.0.lock().get_or_insert(InstanceError::Node {
                node: node.clone(),
                reason: reason.clone(),
            });
        }
        result
    }

    /// How the node was lost, if it was.
    pub(crate) fn take(&self) -> Option<InstanceError> {
        self.0.lock().take()
    }
}

/// Makes shadow instances: the agent's grants and exactly its limits, where the evaluation
/// placed them.
#[derive(Clone)]
pub(crate) struct Factory {
    pub(crate) system: AgentSystem,
    pub(crate) limits: AgentLimits,
    pub(crate) capabilities: Capabilities,
    /// How migrations of production's state into the candidate are judged.
    pub(crate) migration: MigrationRule,
    pub(crate) place: Place,
}

impl Factory {
    /// Shadows of an agent with these limits and grants. They run under exactly production's
    /// limits — memory cap, deadline, message and reply sizes — since a module that can tell a
    /// shadow from production (how far its memory grows, say) could behave only while watched;
    /// an agent whose memory cap is above the shadows' budget is refused rather than shadowed
    /// under a smaller one. Fuel is the exception: production's limit if it has one, else the
    /// budget's, metered only — running out is a trap, which rejects, never something a module
    /// can observe and go on.
    pub(crate) fn new(
        system: AgentSystem,
        agent: &AgentLimits,
        capabilities: Capabilities,
        budget: &ShadowLimits,
        migration: MigrationRule,
        place: Place,
    ) -> Result<Factory, ShadowError> {
        if agent.memory_bytes > budget.memory_bytes {
            return Err(ShadowError::Refused(format!(
                "the agent's memory cap ({} bytes) is above the shadows' budget ({} bytes): \
                 shadows run under exactly production's limits, so raise \
                 ShadowLimits::memory_bytes or evaluate elsewhere",
                agent.memory_bytes, budget.memory_bytes
            )));
        }
        let mut limits = agent.clone();
        limits.fuel = Some(limits.fuel.unwrap_or(budget.fuel));
        Ok(Factory {
            system,
            limits,
            capabilities,
            migration,
            place,
        })
    }

    /// The node the shadows run on, when not this process.
    pub(crate) fn node(&self) -> Option<&str> {
        match &self.place {
            Place::Here => None,
            Place::On { node, .. } => Some(node),
        }
    }

    /// Where the loss of the shadows' node is noted (nothing is, for shadows here).
    pub(crate) fn lost(&self) -> Lost {
        match &self.place {
            Place::Here => Lost::default(),
            Place::On { lost, .. } => lost.clone(),
        }
    }

    /// A candidate instance holding production's `state` migrated (its restore), checked
    /// against `state` with the host's decoder ([`migration`](crate::migration)).
    pub(crate) fn migrated(&self, id: &BehaviourId, state: &[u8]) -> Result<Shadow, String> {
        let mut shadow = self.seeded(id, state)?;
        let migrated = shadow.snapshot().map_err(|e| e.to_string())?;
        crate::migration::check(&self.migration, state, &migrated)
            .map_err(|loss| format!("{id}: {loss}"))?;
        Ok(shadow)
    }

    /// An instance of `id` holding `state` (restore: for a different module, a migration).
    pub(crate) fn seeded(&self, id: &BehaviourId, state: &[u8]) -> Result<Shadow, String> {
        let instance = match &self.place {
            Place::Here => Placed::Here(Instance::open(
                &self.system,
                id,
                &self.limits,
                &self.capabilities,
                state,
            )?),
            Place::On { nodes, node, lost } => {
                let spec = InstanceSpec {
                    module: id.clone(),
                    limits: self.limits.clone(),
                    capabilities: self.capabilities.clone(),
                    state: state.to_vec(),
                };
                let opened = lost.note(nodes.open(node, spec));
                Placed::There(opened.map_err(|e| e.to_string())?, lost.clone())
            }
        };
        Ok(Shadow {
            instance,
            id: id.clone(),
            age: 0,
            _active: Active::new(),
        })
    }
}

/// An instance where its factory placed it.
enum Placed {
    Here(Instance),
    There(Box<dyn RemoteInstance>, Lost),
}

/// One isolated instance.
pub(crate) struct Shadow {
    instance: Placed,
    pub(crate) id: BehaviourId,
    /// Inputs this instance has handled since it was made.
    pub(crate) age: u64,
    _active: Active,
}

/// Counts a shadow in `arbor_shadows_active` while it exists.
struct Active;

impl Active {
    fn new() -> Active {
        metrics::gauge!(arbor_metrics::SHADOWS_ACTIVE).increment(1.0);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        metrics::gauge!(arbor_metrics::SHADOWS_ACTIVE).decrement(1.0);
    }
}

impl Shadow {
    /// Handles `payload` with production's recorded `answers`; `Err` only when the node
    /// running the instance is lost.
    pub(crate) fn run(
        &mut self,
        payload: &[u8],
        answers: Vec<Answer>,
    ) -> Result<Run, InstanceError> {
        self.age += 1;
        match &mut self.instance {
            Placed::Here(instance) => Ok(instance.run(payload, answers)),
            Placed::There(instance, lost) => lost.note(instance.run(payload, answers)),
        }
    }

    /// [`Shadow::run`] as a candidate: tool calls answered against `reference`, the control's
    /// calls on the same input ([`Instance::run_against`]).
    pub(crate) fn run_against(
        &mut self,
        payload: &[u8],
        answers: Vec<Answer>,
        reference: Vec<(String, Vec<u8>)>,
    ) -> Result<Run, InstanceError> {
        self.age += 1;
        match &mut self.instance {
            Placed::Here(instance) => Ok(instance.run_against(payload, answers, reference)),
            Placed::There(instance, lost) => {
                lost.note(instance.run_against(payload, answers, reference))
            }
        }
    }

    pub(crate) fn snapshot(&mut self) -> Result<Vec<u8>, InstanceError> {
        match &mut self.instance {
            Placed::Here(instance) => Ok(instance.snapshot()?),
            Placed::There(instance, lost) => lost.note(instance.snapshot()),
        }
    }
}

/// Effects a run asked for: (recipient or tool, message or arguments).
pub(crate) type Effects = [(String, Vec<u8>)];

/// One side of a comparison.
pub(crate) struct Side<'a> {
    pub(crate) ended: &'a Ended,
    pub(crate) sends: &'a Effects,
    /// `None` where unknown (production does not report its tool arguments). Calls to pure
    /// tools are left out: they may differ ([`effects`]).
    pub(crate) tools: Option<&'a Effects>,
    /// Tool calls nobody could answer ([`Run::unanswerable`]).
    pub(crate) unanswerable: &'a Effects,
    /// The run asked the host for something else than production did.
    pub(crate) asked_otherwise: Option<&'a str>,
}

impl<'a> Side<'a> {
    /// Production's side of a mirrored input (`ended` is its status): its tool arguments are
    /// not reported, and it asked the host what it asked.
    pub(crate) fn production(ended: &'a Ended, sends: &'a Effects) -> Side<'a> {
        Side {
            ended,
            sends,
            tools: None,
            unanswerable: &[],
            asked_otherwise: None,
        }
    }

    pub(crate) fn of(run: &'a Run) -> Side<'a> {
        Side {
            ended: &run.ended,
            sends: &run.sends,
            tools: Some(&run.tools),
            unanswerable: &run.unanswerable,
            asked_otherwise: run.divergence.as_deref(),
        }
    }

    /// A run's side with its calls to pure tools left out (`effects`: [`effects`] of it).
    pub(crate) fn effects_of(run: &'a Run, effects: &'a Effects) -> Side<'a> {
        Side {
            tools: Some(effects),
            ..Side::of(run)
        }
    }
}

/// The tool calls of `run` that are effects: calls to tools the host has not declared pure.
/// Calls to pure tools may differ between candidate and control (a candidate may compute
/// otherwise, or cache); only the replies they lead to are compared.
pub(crate) fn effects(run: &Run, tools: &Tools) -> Vec<(String, Vec<u8>)> {
    run.tools
        .iter()
        .filter(|(tool, _)| !tools.is_pure(tool))
        .cloned()
        .collect()
}

/// The divergence of a run that made tool calls nobody could answer.
fn unanswerable(calls: &Effects) -> String {
    let names: Vec<String> = calls
        .iter()
        .map(|(tool, args)| format!("`{tool}`({})", render(args, 60)))
        .collect();
    format!(
        "{} unanswerable effect(s), refused and not performed: {}",
        calls.len(),
        names.join(", ")
    )
}

/// What differs between a reference run and another run of the same input, if anything.
pub(crate) fn difference(
    seq: u64,
    payload: &[u8],
    reference: Side<'_>,
    other: Side<'_>,
    ignore: &[IgnoreRule],
) -> Option<Divergence> {
    let (expected, expected_sends) = (reference.ended, reference.sends);
    let (got, got_sends) = (other.ended, other.sends);
    let tools_differ = matches!((reference.tools, other.tools), (Some(a), Some(b)) if a != b);
    let what = if let Some(why) = other.asked_otherwise {
        Some(("imports", why.to_string()))
    } else if !other.unanswerable.is_empty() {
        Some(("effects", unanswerable(other.unanswerable)))
    } else {
        match (expected, got) {
            (Ended::Replied(a), Ended::Replied(b)) => {
                if !replies_match(a, b, ignore) {
                    Some(("reply", got.render()))
                } else if expected_sends != got_sends {
                    Some(("sends", format!("{} sends", got_sends.len())))
                } else if tools_differ {
                    Some(("tools", "different tool calls or arguments".to_string()))
                } else {
                    None
                }
            }
            (Ended::Refused(_), Ended::Refused(_)) | (Ended::Crashed(_), Ended::Crashed(_)) => None,
            (Ended::Replied(_) | Ended::Refused(_), Ended::Crashed(_)) => {
                Some(("trap", got.render()))
            }
            (Ended::Replied(_), Ended::Refused(_)) => Some(("error", got.render())),
            _ => Some(("reply", got.render())),
        }
    };
    what.map(|(what, got)| Divergence {
        seq,
        kind: message_kind(payload),
        what: what.into(),
        input: render(payload, 200),
        expected: expected.render(),
        got,
    })
}

/// A candidate shadow beside a control shadow (the current module) on the same inputs: the
/// comparison both the replay gate and the live evaluation run.
pub(crate) struct Pair {
    pub(crate) factory: Factory,
    pub(crate) control: Shadow,
    pub(crate) candidate: Shadow,
    pub(crate) rules: Rules,
    pub(crate) tally: Tally,
    since_state_check: u64,
    /// The host's tools (which are pure), read once.
    tools: Tools,
}

impl Pair {
    /// Both shadows seeded with `state` (the current module's layout; the candidate's
    /// migration of it checked).
    pub(crate) fn seeded(
        factory: Factory,
        control: &BehaviourId,
        candidate: &BehaviourId,
        state: &[u8],
        rules: Rules,
    ) -> Result<Pair, String> {
        let control = factory.seeded(control, state)?;
        let candidate = factory.migrated(candidate, state)?;
        Ok(Pair {
            control,
            candidate,
            rules,
            tally: Tally::default(),
            since_state_check: 0,
            tools: factory.system.tools(),
            factory,
        })
    }

    /// Re-seeds both shadows (after a gap or a production restart).
    pub(crate) fn reseed(&mut self, state: &[u8]) -> Result<(), String> {
        self.control = self.factory.seeded(&self.control.id, state)?;
        self.candidate = self.factory.migrated(&self.candidate.id, state)?;
        self.since_state_check = 0;
        Ok(())
    }

    /// Runs one input through both shadows (order alternating, so neither always runs on a
    /// warmer cache), compares them, and returns the control's run for A/A checks. `live` says
    /// the input was mirrored from production rather than replayed from the journal.
    pub(crate) fn step(
        &mut self,
        seq: u64,
        payload: &[u8],
        answers: Vec<Answer>,
        policy: &Policy,
        live: bool,
    ) -> Result<Run, String> {
        let lost = |e: InstanceError| e.to_string();
        // The candidate's tool calls are answered against the control's (pure tools run,
        // production's own calls get their recorded answers), so the control runs first when
        // production called tools; otherwise the control makes no calls either (it replays
        // production), and the order alternates so neither always runs on a warmer cache.
        let called_tools = answers.iter().any(|a| matches!(a, Answer::Tool(_)));
        let (control, candidate) = if called_tools || seq.is_multiple_of(2) {
            let control = self.control.run(payload, answers.clone()).map_err(lost)?;
            let reference = control.tools.clone();
            let candidate = self.candidate.run_against(payload, answers, reference);
            (control, candidate.map_err(lost)?)
        } else {
            let candidate = self
                .candidate
                .run_against(payload, answers.clone(), Vec::new());
            let candidate = candidate.map_err(lost)?;
            (self.control.run(payload, answers).map_err(lost)?, candidate)
        };
        let tally = &mut self.tally;
        metrics::counter!(arbor_metrics::SHADOW_COMPARISONS).increment(1);
        let kind = tally.count_input(payload, live);
        tally.candidate_age = self.candidate.age;
        if let (Some(a), Some(b)) = (control.fuel, candidate.fuel) {
            tally.pair_fuel(&kind, a as f64, b as f64);
        }
        tally.pair_latency(
            control.took.as_nanos() as f64,
            candidate.took.as_nanos() as f64,
        );
        if let (Some(a), Some(b)) = (control.memory, candidate.memory) {
            tally.pair_memory(a as f64, b as f64);
        }
        let candidate_dead = matches!(candidate.ended, Ended::Crashed(_));
        self.score(&kind, payload, &control, &candidate);
        let (control_effects, candidate_effects) = (
            effects(&control, &self.tools),
            effects(&candidate, &self.tools),
        );
        let divergence = difference(
            seq,
            payload,
            Side::effects_of(&control, &control_effects),
            Side::effects_of(&candidate, &candidate_effects),
            &self.rules.ignore,
        );
        if let Some(divergence) = divergence {
            let effects_differ = control_effects != candidate_effects;
            self.judge_difference(divergence, payload, &control, &candidate, effects_differ);
        }
        if matches!(control.ended, Ended::Crashed(_)) {
            // The control's instance is gone; the caller re-seeds from production.
            return Ok(control);
        }
        self.since_state_check += 1;
        let checked = if candidate_dead {
            self.reseed_candidate(seq)
        } else if self.since_state_check >= policy.state_every.max(1) {
            self.check_state(seq)
        } else {
            Ok(())
        };
        checked.map_err(|e| e.to_string())?;
        Ok(control)
    }

    /// Pairs the judges' scores of both runs of one input. A judge that reads state gets each
    /// instance's snapshot after the input (none from an instance that cannot give it).
    fn score(&mut self, kind: &str, payload: &[u8], control: &Run, candidate: &Run) {
        if self.rules.judges.is_empty() {
            return;
        }
        let states = if self.rules.needs_state() {
            (self.control.snapshot().ok(), self.candidate.snapshot().ok())
        } else {
            (None, None)
        };
        for (name, judge) in &self.rules.judges {
            let score = |run: &Run, state: &Option<Vec<u8>>| {
                let reply = match &run.ended {
                    Ended::Replied(reply) => Some(reply.as_slice()),
                    _ => None,
                };
                judge
                    .score(&Outcome {
                        kind,
                        input: payload,
                        reply,
                        state: state.as_deref(),
                    })
                    .filter(|score| score.is_finite())
            };
            let a = score(control, &states.0);
            let b = score(candidate, &states.1);
            if let (Some(a), Some(b)) = (a, b) {
                self.tally.pair_score(name, a, b);
            }
        }
    }

    /// Counts a difference between the runs: replies that differ are graded (by the
    /// comparator, else `wrong`), and only `worse` and `wrong` ones are failures; a reply
    /// graded better or the same still fails on different sends or tool calls.
    fn judge_difference(
        &mut self,
        divergence: Divergence,
        payload: &[u8],
        control: &Run,
        candidate: &Run,
        effects_differ: bool,
    ) {
        let (Ended::Replied(a), Ended::Replied(b), "reply") =
            (&control.ended, &candidate.ended, divergence.what.as_str())
        else {
            self.tally.diverged(divergence);
            return;
        };
        let grade = self
            .rules
            .comparator
            .as_ref()
            .map_or(Grade::Wrong, |comparator| {
                comparator.grade(&divergence.kind, payload, a, b)
            });
        self.tally.graded(grade, &divergence);
        match grade {
            Grade::Wrong => self.tally.diverged(divergence),
            Grade::Worse => self.tally.diverged(Divergence {
                what: "worse".into(),
                ..divergence
            }),
            Grade::Better | Grade::Same => {
                // The reply is accepted; what else it did must still match.
                let what = if control.sends != candidate.sends {
                    Some(("sends", format!("{} sends", candidate.sends.len())))
                } else if !candidate.unanswerable.is_empty() {
                    Some(("effects", unanswerable(&candidate.unanswerable)))
                } else if effects_differ {
                    Some(("tools", "different tool calls or arguments".to_string()))
                } else {
                    None
                };
                if let Some((what, got)) = what {
                    self.tally.diverged(Divergence {
                        what: what.into(),
                        got,
                        ..divergence
                    });
                }
            }
        }
    }

    /// Compares the candidate's state with the control's migrated into the candidate (a fresh
    /// candidate instance restoring the control's snapshot); a divergence is counted and the
    /// candidate re-seeded so it does not count again on every later input. A candidate that
    /// cannot take the control's state counts as a divergence too. `Err` only when the
    /// control cannot give its state (its instance is gone).
    pub(crate) fn check_state(&mut self, seq: u64) -> Result<(), InstanceError> {
        self.since_state_check = 0;
        let control = self.control.snapshot()?;
        self.tally.state_checks += 1;
        let migrated = self
            .factory
            .migrated(&self.candidate.id, &control)
            .and_then(|mut migrated| match migrated.snapshot() {
                Ok(state) => Ok((migrated, state)),
                Err(error) => Err(error.to_string()),
            });
        let (migrated, expected) = match migrated {
            Ok(migrated) => migrated,
            Err(reason) => {
                self.tally.diverged(cannot_take(seq, &control, &reason));
                return Ok(());
            }
        };
        let got = self.candidate.snapshot();
        if !matches!(&got, Ok(state) if *state == expected) {
            self.tally.diverged(Divergence {
                seq,
                kind: "state".into(),
                what: "state".into(),
                input: format!("state after input {seq}"),
                expected: render(&expected, 200),
                got: match &got {
                    Ok(state) => render(state, 200),
                    Err(error) => format!("snapshot failed: {error}"),
                },
            });
            self.candidate = migrated;
        }
        Ok(())
    }

    /// A crashed candidate is replaced by a fresh one holding the control's state; one that
    /// cannot take it counts as a state divergence (and the dead one stays, failing on).
    fn reseed_candidate(&mut self, seq: u64) -> Result<(), InstanceError> {
        let control = self.control.snapshot()?;
        match self.factory.migrated(&self.candidate.id, &control) {
            Ok(candidate) => self.candidate = candidate,
            Err(reason) => self.tally.diverged(cannot_take(seq, &control, &reason)),
        }
        Ok(())
    }
}

/// The state divergence of a candidate that cannot take (or keep) the control's state.
fn cannot_take(seq: u64, control: &[u8], reason: &str) -> Divergence {
    Divergence {
        seq,
        kind: "state".into(),
        what: "state".into(),
        input: format!("state after input {seq}"),
        expected: render(control, 200),
        got: format!("the candidate cannot take the control's state: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    //! The candidate's tool calls, row by row: production's own calls get their recorded
    //! answers, pure tools run, any other call is an unanswerable effect (refused, never
    //! performed, reported), and skipping an effect production made is a difference.
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicU64, Ordering};

    use arbor_agent::behaviour::{Behaviour, BehaviourError};
    use arbor_agent::tools::{Tool, ToolError};
    use arbor_agent::{Host, HostError};

    use super::*;

    /// How a variant of the behaviour computes `2n` for an input `n`, and what it audits.
    #[derive(Clone, Copy)]
    enum Variant {
        /// Production: `double(n)`, then `audit(n)`.
        Production,
        /// `double(n - 1) + 2` (a pure call with other arguments), then `audit(n)`.
        OtherPureArgs,
        /// `2n` without the tool, then `audit(n)`.
        SkipsPure,
        /// `double(n)`, then `audit(n + 1)`: an effect production never had.
        OtherAudit,
        /// `double(n)`, no audit.
        SkipsAudit,
        /// `double(n)`, `audit(n)`, then `audit(0)` again: one effect more.
        ExtraAudit,
    }

    struct Doubler {
        variant: Variant,
        handled: u64,
    }

    fn arg(n: u64) -> Vec<u8> {
        rmp_serde::to_vec(&n).unwrap()
    }

    impl Doubler {
        fn tool(host: &mut Host, tool: &str, n: u64) -> Result<u64, BehaviourError> {
            let out = host
                .call_tool(tool, &arg(n))
                .map_err(|e| BehaviourError::BadInput(e.to_string()))?;
            rmp_serde::from_slice(&out).map_err(|e| BehaviourError::BadInput(e.to_string()))
        }
    }

    impl Behaviour for Doubler {
        fn handle(&mut self, input: &[u8], host: &mut Host) -> Result<Vec<u8>, BehaviourError> {
            let n: u64 = rmp_serde::from_slice(input)
                .map_err(|e| BehaviourError::BadInput(e.to_string()))?;
            self.handled += 1;
            let doubled = match self.variant {
                Variant::OtherPureArgs => Self::tool(host, "double", n - 1)? + 2,
                Variant::SkipsPure => 2 * n,
                _ => Self::tool(host, "double", n)?,
            };
            match self.variant {
                Variant::OtherAudit => drop(Self::tool(host, "audit", n + 1)?),
                Variant::SkipsAudit => {}
                Variant::ExtraAudit => {
                    Self::tool(host, "audit", n)?;
                    Self::tool(host, "audit", 0)?;
                }
                _ => drop(Self::tool(host, "audit", n)?),
            }
            Ok(rmp_serde::to_vec(&doubled).unwrap())
        }

        fn snapshot(&mut self) -> Result<Vec<u8>, BehaviourError> {
            Ok(rmp_serde::to_vec(&self.handled).unwrap())
        }

        fn restore(&mut self, state: &[u8]) -> Result<(), BehaviourError> {
            self.handled = rmp_serde::from_slice(state)
                .map_err(|e| BehaviourError::BadInput(e.to_string()))?;
            Ok(())
        }

        fn describe(&self) -> String {
            "doubler".into()
        }
    }

    /// `double` (pure): `2n`. `audit` (an effect): counts its calls, answers `n`.
    struct Double(Arc<AtomicU64>);
    struct Audit(Arc<AtomicU64>);

    impl Tool for Double {
        fn call(&self, args: &[u8]) -> Result<Vec<u8>, ToolError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let n: u64 = rmp_serde::from_slice(args).map_err(ToolError::BadArguments)?;
            Ok(arg(2 * n))
        }
    }

    impl Tool for Audit {
        fn call(&self, args: &[u8]) -> Result<Vec<u8>, ToolError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(args.to_vec())
        }
    }

    /// Runs 20 inputs through a pair of production and `variant`, with production's recorded
    /// answers; returns the tally and how often each tool really ran.
    fn pair_run(variant: Variant) -> (Tally, u64, u64) {
        let (doubles, audits) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut builder = AgentSystem::builder().tools(
            Tools::new()
                .with_pure("double", Double(Arc::clone(&doubles)))
                .with("audit", Audit(Arc::clone(&audits))),
        );
        for (name, variant) in [("production", Variant::Production), ("candidate", variant)] {
            builder = builder.native(name, move || {
                Box::new(Doubler {
                    variant,
                    handled: 0,
                }) as Box<dyn Behaviour>
            });
        }
        let system = builder.build().unwrap();
        let capabilities = Capabilities::all(["double".to_string(), "audit".to_string()]);
        let factory = Factory::new(
            system,
            &AgentLimits::default(),
            capabilities,
            &ShadowLimits::default(),
            MigrationRule::Preserve,
            Place::Here,
        )
        .unwrap();
        let rules = Rules {
            ignore: Vec::new(),
            comparator: None,
            judges: Default::default(),
        };
        let mut pair = Pair::seeded(
            factory,
            &BehaviourId::Native("production".into()),
            &BehaviourId::Native("candidate".into()),
            &arg(0),
            rules,
        )
        .unwrap();
        let policy = Policy::default();
        for n in 1..=20u64 {
            // What production's host recorded for this input: its two tool answers.
            let answers = vec![Answer::Tool(Ok(arg(2 * n))), Answer::Tool(Ok(arg(n)))];
            let control = pair.step(n, &arg(n), answers, &policy, false).unwrap();
            assert!(control.divergence.is_none(), "{control:?}");
        }
        (
            pair.tally.clone(),
            doubles.load(Ordering::SeqCst),
            audits.load(Ordering::SeqCst),
        )
    }

    fn whats(tally: &Tally) -> Vec<&str> {
        tally.divergences.iter().map(|d| d.what.as_str()).collect()
    }

    #[test]
    fn production_against_itself_runs_no_tool() {
        let (tally, doubles, audits) = pair_run(Variant::Production);
        assert_eq!(tally.mismatch_count(), 0, "{:?}", tally.divergences);
        assert_eq!((doubles, audits), (0, 0));
    }

    #[test]
    fn a_pure_tool_with_other_arguments_runs_and_only_the_reply_counts() {
        let (tally, doubles, audits) = pair_run(Variant::OtherPureArgs);
        assert_eq!(tally.mismatch_count(), 0, "{:?}", tally.divergences);
        assert_eq!((doubles, audits), (20, 0));
    }

    #[test]
    fn skipping_a_pure_tool_is_no_difference() {
        let (tally, doubles, audits) = pair_run(Variant::SkipsPure);
        assert_eq!(tally.mismatch_count(), 0, "{:?}", tally.divergences);
        assert_eq!((doubles, audits), (0, 0));
    }

    #[test]
    fn an_effect_production_did_not_make_is_reported_and_never_performed() {
        for variant in [Variant::OtherAudit, Variant::ExtraAudit] {
            let (tally, _, audits) = pair_run(variant);
            assert_eq!(audits, 0, "an unanswerable effect was performed");
            assert_eq!(tally.mismatches, 20);
            assert!(
                whats(&tally).iter().all(|w| *w == "effects"),
                "{:?}",
                tally.divergences
            );
            let example = &tally.divergences[0];
            assert!(example.got.contains("unanswerable effect"), "{example:?}");
            assert!(example.got.contains("`audit`"), "{example:?}");
        }
    }

    #[test]
    fn skipping_an_effect_production_made_is_a_difference() {
        let (tally, doubles, audits) = pair_run(Variant::SkipsAudit);
        assert_eq!((doubles, audits), (0, 0));
        assert_eq!(tally.mismatches, 20);
        assert!(
            whats(&tally).iter().all(|w| *w == "tools"),
            "{:?}",
            tally.divergences
        );
    }

    #[test]
    fn unanswerable_calls_are_refused_to_the_candidate() {
        let mut host = Host::replay_against(
            vec![Answer::Tool(Ok(arg(1)))],
            vec![("audit".into(), arg(1))],
            Tools::new(),
        );
        assert!(matches!(
            host.call_tool("audit", &arg(2)),
            Err(HostError::Refused(_))
        ));
        assert_eq!(host.call_tool("audit", &arg(1)), Ok(arg(1)));
        // Production's answer is used once.
        assert!(host.call_tool("audit", &arg(1)).is_err());
        assert_eq!(host.replayed().unwrap().unanswerable().len(), 2);
    }
}
