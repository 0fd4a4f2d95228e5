//! `Ctx` against the native fake host: what each import call sends and how failures map.
#![allow(clippy::unwrap_used)]

use arbor_guest::abi::{SEND_REFUSED, SEND_UNKNOWN_RECIPIENT, TOOL_FAILED};
use arbor_guest::testing::{Harness, Sent, reset_fake_host, with_fake_host};
use arbor_guest::{Agent, Ctx, Level, SendError, ToolError, encode};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Probe;

#[derive(Serialize, Deserialize)]
enum ProbeMsg {
    Clock,
    Dice,
    Log { level: i32 },
    Send { to: String },
    Tool { name: String, n: u32 },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum ProbeReply {
    Number(u64),
    Done,
    SendFailed(String),
    ToolAnswer(u32),
    ToolFailed(String),
}

impl Agent for Probe {
    type Msg = ProbeMsg;
    type Reply = ProbeReply;

    fn handle(&mut self, msg: ProbeMsg, ctx: &mut Ctx) -> ProbeReply {
        match msg {
            ProbeMsg::Clock => ProbeReply::Number(ctx.now()),
            ProbeMsg::Dice => ProbeReply::Number(ctx.random()),
            ProbeMsg::Log { level } => {
                ctx.log(Level::from_abi(level), "hello");
                ProbeReply::Done
            }
            ProbeMsg::Send { to } => match ctx.send(&to, &[1u8, 2]) {
                Ok(()) => ProbeReply::Done,
                Err(err) => ProbeReply::SendFailed(format!("{err:?}")),
            },
            ProbeMsg::Tool { name, n } => match ctx.call_tool::<u32, _>(&name, &n) {
                Ok(answer) => ProbeReply::ToolAnswer(answer),
                Err(err) => ProbeReply::ToolFailed(format!("{err:?}")),
            },
        }
    }
}

fn call(probe: &Harness<Probe>, msg: ProbeMsg) -> ProbeReply {
    probe.call(&msg).unwrap()
}

#[test]
fn now_and_random_come_from_the_host() {
    reset_fake_host();
    with_fake_host(|host| {
        host.clock = 100;
        host.clock_step = 5;
    });
    let probe = Harness::<Probe>::initialised();
    assert_eq!(call(&probe, ProbeMsg::Clock), ProbeReply::Number(100));
    assert_eq!(call(&probe, ProbeMsg::Clock), ProbeReply::Number(105));
    let first = call(&probe, ProbeMsg::Dice);
    assert_ne!(first, call(&probe, ProbeMsg::Dice));
}

#[test]
fn log_levels_clamp() {
    reset_fake_host();
    let probe = Harness::<Probe>::initialised();
    for level in [-3, 0, 2, 4, 99] {
        call(&probe, ProbeMsg::Log { level });
    }
    let levels: Vec<Level> =
        with_fake_host(|host| host.logs.iter().map(|(level, _)| *level).collect());
    assert_eq!(
        levels,
        [
            Level::Trace,
            Level::Trace,
            Level::Info,
            Level::Error,
            Level::Error
        ]
    );
}

#[test]
fn send_encodes_named_and_maps_codes() {
    reset_fake_host();
    let probe = Harness::<Probe>::initialised();
    assert_eq!(
        call(&probe, ProbeMsg::Send { to: "b".into() }),
        ProbeReply::Done
    );
    let sent = with_fake_host(|host| host.sent.clone());
    assert_eq!(
        sent,
        [Sent {
            to: "b".into(),
            msg: encode(&[1u8, 2]).unwrap()
        }]
    );

    for (code, expected) in [
        (SEND_UNKNOWN_RECIPIENT, SendError::UnknownRecipient),
        (SEND_REFUSED, SendError::Refused),
        (-77, SendError::Other(-77)),
    ] {
        with_fake_host(|host| host.send_result = code);
        assert_eq!(
            call(&probe, ProbeMsg::Send { to: "b".into() }),
            ProbeReply::SendFailed(format!("{expected:?}"))
        );
    }
}

#[test]
fn call_tool_round_trips_and_maps_failures() {
    reset_fake_host();
    with_fake_host(|host| {
        host.add_echo_tool();
        host.add_tool("broken", |_| Err(TOOL_FAILED));
        host.add_tool("liar", |_| Ok(vec![0xa1, b'x'])); // a string, not a u32
    });
    let probe = Harness::<Probe>::initialised();
    let tool = |name: &str| {
        call(
            &probe,
            ProbeMsg::Tool {
                name: name.into(),
                n: 41,
            },
        )
    };
    assert_eq!(tool("echo"), ProbeReply::ToolAnswer(41));
    assert_eq!(
        tool("missing"),
        ProbeReply::ToolFailed(format!("{:?}", ToolError::UnknownTool))
    );
    assert_eq!(
        tool("broken"),
        ProbeReply::ToolFailed(format!("{:?}", ToolError::Failed))
    );
    assert!(matches!(tool("liar"), ProbeReply::ToolFailed(text) if text.starts_with("Decode(")));
}
