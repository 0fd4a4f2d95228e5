//! The `arbor` imports reach the [`Host`] given to `handle`, with the right values, and the
//! agent's reply and state depend on what the host answered.
#![allow(clippy::unwrap_used)]

mod support;

use arbor_agent::wasm::{
    AgentLimits, Capabilities, LoadError, SpawnError, WasmBehaviour, WasmHost,
};
use arbor_agent::{Behaviour, BehaviourError, Host, HostCalls, HostError};
use arbor_modules::counter::CounterMsg;
// The toolbox's own protocol, shared with the guest.
use arbor_modules::toolbox::{EchoArgs, ToolboxMsg as Msg, ToolboxReply as Reply};

fn host() -> &'static WasmHost {
    support::shared_host(32)
}

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Now,
    Random,
    Tool(String, Vec<u8>),
    Send(String, Vec<u8>),
    Log(u8, String),
}

/// Answers with fixed values and records every call.
struct Recording {
    now: u64,
    random: u64,
    send: Result<(), HostError>,
    tool: Result<(), HostError>,
    calls: Vec<Call>,
}

impl Recording {
    fn new(now: u64, random: u64) -> Recording {
        Recording {
            now,
            random,
            send: Ok(()),
            tool: Ok(()),
            calls: Vec::new(),
        }
    }
}

impl HostCalls for Recording {
    fn now(&mut self) -> Result<u64, HostError> {
        self.calls.push(Call::Now);
        Ok(self.now)
    }
    fn random(&mut self) -> Result<u64, HostError> {
        self.calls.push(Call::Random);
        Ok(self.random)
    }
    fn send(&mut self, to: &str, message: &[u8]) -> Result<(), HostError> {
        self.calls.push(Call::Send(to.into(), message.into()));
        self.send.clone()
    }
    fn call_tool(&mut self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        self.calls.push(Call::Tool(name.into(), args.into()));
        self.tool.clone().map(|()| args.to_vec())
    }
    fn log(&mut self, level: u8, line: &str) {
        self.calls.push(Call::Log(level, line.into()));
    }
}

fn toolbox(tools: &[&str]) -> WasmBehaviour {
    let module = host().load(arbor_modules::TOOLBOX).unwrap();
    WasmBehaviour::init(
        host(),
        &module,
        AgentLimits::default(),
        Capabilities::all(tools.iter().copied()),
        b"",
    )
    .unwrap()
}

fn ask(agent: &mut WasmBehaviour, rec: &mut Recording, msg: &Msg) -> Reply {
    let mut host = Host::custom(std::mem::replace(rec, Recording::new(0, 0)));
    let reply = agent.handle(&rmp_serde::to_vec_named(msg).unwrap(), &mut host);
    *rec = host
        .into_custom()
        .expect("the host comes back after the call");
    rmp_serde::from_slice(&reply.unwrap()).unwrap()
}

#[test]
fn each_import_reaches_the_host() {
    let mut agent = toolbox(&["echo"]);
    let mut rec = Recording::new(1_700_000_000_000_000_000, 0xdead_beef_0bad_f00d);
    assert_eq!(
        ask(&mut agent, &mut rec, &Msg::Now),
        Reply::Time { nanos: rec.now }
    );
    assert_eq!(
        ask(&mut agent, &mut rec, &Msg::Random),
        Reply::Number { value: rec.random }
    );
    assert_eq!(
        ask(&mut agent, &mut rec, &Msg::Echo { text: "hi".into() }),
        Reply::Echoed { text: "hi".into() }
    );
    assert_eq!(
        ask(
            &mut agent,
            &mut rec,
            &Msg::Send {
                to: "counter-1".into(),
                by: 3
            }
        ),
        Reply::Sent
    );
    assert_eq!(
        ask(
            &mut agent,
            &mut rec,
            &Msg::Log {
                level: 9,
                text: "loud".into()
            }
        ),
        Reply::Logged
    );
    assert_eq!(
        ask(
            &mut agent,
            &mut rec,
            &Msg::Log {
                level: -3,
                text: "quiet".into()
            }
        ),
        Reply::Logged
    );
    assert_eq!(
        rec.calls,
        vec![
            Call::Now,
            Call::Random,
            Call::Tool(
                "echo".into(),
                rmp_serde::to_vec_named(&EchoArgs { text: "hi".into() }).unwrap()
            ),
            Call::Send(
                "counter-1".into(),
                rmp_serde::to_vec_named(&CounterMsg::Inc { by: 3 }).unwrap()
            ),
            Call::Log(4, "loud".into()),
            Call::Log(0, "quiet".into()),
        ]
    );
}

#[test]
fn all_five_in_order_and_the_state_depends_on_the_answers() {
    let msg = Msg::All {
        to: "c".into(),
        by: 1,
        text: "x".into(),
    };
    let mut a = toolbox(&["echo"]);
    let mut rec = Recording::new(5, 6);
    assert_eq!(
        ask(&mut a, &mut rec, &msg),
        Reply::Report {
            nanos: 5,
            value: 6,
            echoed: Some("x".into()),
            sent: true
        }
    );
    let kinds: Vec<&str> = rec
        .calls
        .iter()
        .map(|c| match c {
            Call::Now => "now",
            Call::Random => "random",
            Call::Tool(..) => "call_tool",
            Call::Send(..) => "send",
            Call::Log(..) => "log",
        })
        .collect();
    assert_eq!(kinds, ["now", "random", "call_tool", "send", "log"]);

    // Same answers: same state. Another random value: another state.
    let mut same = toolbox(&["echo"]);
    ask(&mut same, &mut Recording::new(5, 6), &msg);
    let mut other = toolbox(&["echo"]);
    ask(&mut other, &mut Recording::new(5, 7), &msg);
    assert_eq!(a.snapshot().unwrap(), same.snapshot().unwrap());
    assert_ne!(a.snapshot().unwrap(), other.snapshot().unwrap());
}

#[test]
fn host_refusals_become_guest_error_codes() {
    let mut agent = toolbox(&["echo"]);
    let mut rec = Recording::new(1, 2);
    rec.send = Err(HostError::NoSuchAgent("nobody".into()));
    rec.tool = Err(HostError::ToolFailed {
        tool: "echo".into(),
        reason: "down".into(),
    });
    assert!(matches!(
        ask(
            &mut agent,
            &mut rec,
            &Msg::Send {
                to: "nobody".into(),
                by: 1
            }
        ),
        Reply::Failed { .. }
    ));
    assert!(matches!(
        ask(&mut agent, &mut rec, &Msg::Echo { text: "x".into() }),
        Reply::Failed { .. }
    ));
    assert_eq!(
        ask(
            &mut agent,
            &mut rec,
            &Msg::All {
                to: "nobody".into(),
                by: 1,
                text: "x".into()
            }
        ),
        Reply::Report {
            nanos: 1,
            value: 2,
            echoed: None,
            sent: false
        }
    );
}

#[test]
fn a_tool_not_granted_by_name_never_reaches_the_host() {
    let mut agent = toolbox(&["calculator"]);
    let mut rec = Recording::new(1, 2);
    assert!(matches!(
        ask(&mut agent, &mut rec, &Msg::Echo { text: "x".into() }),
        Reply::Failed { .. }
    ));
    assert!(rec.calls.is_empty(), "{:?}", rec.calls);
}

#[test]
fn a_host_failure_in_now_crashes_the_agent_not_the_host() {
    struct Broken;
    impl HostCalls for Broken {
        fn now(&mut self) -> Result<u64, HostError> {
            Err(HostError::Refused("replay diverged".into()))
        }
        fn random(&mut self) -> Result<u64, HostError> {
            Ok(0)
        }
        fn send(&mut self, _: &str, _: &[u8]) -> Result<(), HostError> {
            Ok(())
        }
        fn call_tool(&mut self, _: &str, _: &[u8]) -> Result<Vec<u8>, HostError> {
            Ok(vec![0xc0])
        }
        fn log(&mut self, _: u8, _: &str) {}
    }
    let mut agent = toolbox(&["echo"]);
    match agent.handle(
        &rmp_serde::to_vec_named(&Msg::Now).unwrap(),
        &mut Host::custom(Broken),
    ) {
        Err(e @ BehaviourError::Trap(_)) => {
            assert!(e.to_string().contains("replay diverged"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn toolbox_needs_every_capability() {
    let module = host().load(arbor_modules::TOOLBOX).unwrap();
    let mut names = module.imports();
    names.sort_unstable();
    assert_eq!(names, ["call_tool", "log", "now", "random", "send"]);
    for missing in ["log", "send", "now", "random", "call_tool"] {
        let mut caps = Capabilities::all(["echo"]);
        match missing {
            "log" => caps.log = false,
            "send" => caps.send = false,
            "now" => caps.now = false,
            "random" => caps.random = false,
            _ => caps.tools.clear(),
        }
        match WasmBehaviour::init(host(), &module, AgentLimits::default(), caps, b"") {
            Err(SpawnError::Load(LoadError::UngrantedImport { name })) => {
                assert_eq!(name, format!("arbor.{missing}"));
            }
            other => panic!("{missing}: {other:?}"),
        }
    }
}

#[test]
fn a_panicking_host_does_not_hang_the_call() {
    struct Panicking;
    impl HostCalls for Panicking {
        fn now(&mut self) -> Result<u64, HostError> {
            panic!("host bug")
        }
        fn random(&mut self) -> Result<u64, HostError> {
            Ok(0)
        }
        fn send(&mut self, _: &str, _: &[u8]) -> Result<(), HostError> {
            Ok(())
        }
        fn call_tool(&mut self, _: &str, _: &[u8]) -> Result<Vec<u8>, HostError> {
            Ok(vec![0xc0])
        }
        fn log(&mut self, _: u8, _: &str) {}
    }
    let mut agent = toolbox(&["echo"]);
    let msg = rmp_serde::to_vec_named(&Msg::Now).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            agent.handle(&msg, &mut Host::custom(Panicking))
        }));
        // The host's panic is the host's to see; the point is that it arrives.
        let _ = done_tx.send((outcome.is_err(), agent));
    });
    let (panicked, mut agent) = done_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("handle hung after the host panicked");
    assert!(panicked);
    // The instance is gone, and says so instead of misbehaving.
    assert_eq!(agent.memory_bytes(), 0);
    assert!(matches!(agent.snapshot(), Err(BehaviourError::Contract(_))));
}
