//! counter's protocol and toolbox's use of every import, natively.
#![allow(clippy::unwrap_used)]

use arbor_guest::testing::{Harness, reset_fake_host, with_fake_host};
use arbor_guest::{Level, decode};
use counter::{Counter, CounterMsg, CounterReply};
use toolbox::{Toolbox, ToolboxMsg, ToolboxReply};

#[test]
fn counter_counts_resets_and_restores() {
    let counter = Harness::<Counter>::initialised();
    let count = |msg: CounterMsg| counter.call::<_, CounterReply>(&msg).unwrap().count;
    assert_eq!(count(CounterMsg::Inc { by: 5 }), 5);
    assert_eq!(count(CounterMsg::Inc { by: -2 }), 3);
    assert_eq!(count(CounterMsg::Get), 3);
    let state = counter.snapshot().unwrap();
    assert_eq!(count(CounterMsg::Reset), 0);
    assert_eq!(count(CounterMsg::Inc { by: i64::MAX }), i64::MAX);
    assert_eq!(count(CounterMsg::Inc { by: 1 }), i64::MIN, "wraps");
    counter.restore(&state).unwrap();
    assert_eq!(count(CounterMsg::Get), 3);
}

#[test]
fn counter_wire_format_is_named() {
    // What a host writes without this crate: {"Inc": {"by": 2}} and "Get".
    let counter = Harness::<Counter>::initialised();
    let inc = [0x81, 0xa3, b'I', b'n', b'c', 0x81, 0xa2, b'b', b'y', 0x02];
    let reply = counter.handle_bytes(&inc).unwrap();
    assert_eq!(reply, [0x81, 0xa5, b'c', b'o', b'u', b'n', b't', 0x02]);
    assert_eq!(
        counter.handle_bytes(&[0xa3, b'G', b'e', b't']).unwrap(),
        reply
    );
}

fn all(toolbox: &Harness<Toolbox>) -> ToolboxReply {
    toolbox
        .call(&ToolboxMsg::All {
            to: "counter".into(),
            by: 2,
            text: "hi".into(),
        })
        .unwrap()
}

#[test]
fn toolbox_uses_every_import() {
    reset_fake_host();
    with_fake_host(|host| {
        host.clock = 42;
        host.add_echo_tool();
    });
    let toolbox = Harness::<Toolbox>::initialised();
    let ToolboxReply::Report {
        nanos,
        echoed,
        sent,
        ..
    } = all(&toolbox)
    else {
        panic!("not a report");
    };
    assert_eq!((nanos, echoed.as_deref(), sent), (42, Some("hi"), true));
    let (logs, sent) = with_fake_host(|host| (host.logs.clone(), host.sent.clone()));
    assert_eq!(logs, [(Level::Info, "hi".to_string())]);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "counter");
    // What it sends is counter's own message.
    assert_eq!(
        decode::<CounterMsg>(&sent[0].msg).unwrap(),
        CounterMsg::Inc { by: 2 }
    );
}

#[test]
fn toolbox_reports_failures_instead_of_crashing() {
    reset_fake_host();
    with_fake_host(|host| host.send_result = -1);
    let toolbox = Harness::<Toolbox>::initialised();
    assert!(matches!(
        toolbox.call(&ToolboxMsg::Echo { text: "x".into() }).unwrap(),
        ToolboxReply::Failed { error } if error.contains("no such tool")
    ));
    assert!(matches!(
        toolbox.call(&ToolboxMsg::Send { to: "nobody".into(), by: 1 }).unwrap(),
        ToolboxReply::Failed { error } if error.contains("no such recipient")
    ));
}

/// The replay property the host relies on: the same import answers give the same state, and
/// different answers a different one.
#[test]
fn toolbox_state_depends_exactly_on_import_answers() {
    let run = |seed: u64| {
        reset_fake_host();
        with_fake_host(|host| {
            host.random_state = seed;
            host.add_echo_tool();
        });
        let toolbox = Harness::<Toolbox>::initialised();
        for _ in 0..3 {
            all(&toolbox);
        }
        toolbox
            .call::<_, ToolboxReply>(&ToolboxMsg::Random)
            .unwrap();
        toolbox.snapshot().unwrap()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}
