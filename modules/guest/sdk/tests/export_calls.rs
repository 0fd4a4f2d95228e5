//! The export calls' contract, natively: error codes, messages, and what happens to the state.
#![allow(clippy::unwrap_used)]

use arbor_guest::abi::{
    ERR_BAD_INPUT, ERR_INIT_FAILED, ERR_NOT_INITIALISED, ERR_REENTERED, ERR_RESTORE_REJECTED,
};
use arbor_guest::testing::Harness;
use arbor_guest::{Agent, Ctx, decode, encode};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    total: u64,
}

#[derive(Serialize, Deserialize)]
enum TallyMsg {
    Add { n: u64 },
    Total,
}

impl Agent for Tally {
    type Msg = TallyMsg;
    type Reply = u64;

    fn handle(&mut self, msg: TallyMsg, _ctx: &mut Ctx) -> u64 {
        if let TallyMsg::Add { n } = msg {
            self.total += n;
        }
        self.total
    }
}

fn bytes(value: &impl Serialize) -> Vec<u8> {
    encode(value).unwrap()
}

#[test]
fn calls_before_init_are_not_initialised() {
    let tally = Harness::<Tally>::new();
    let err = tally.handle_bytes(&bytes(&TallyMsg::Total)).unwrap_err();
    assert_eq!(err.code, ERR_NOT_INITIALISED);
    assert!(err.message.contains("not initialised"), "{err}");
    assert_eq!(tally.snapshot().unwrap_err().code, ERR_NOT_INITIALISED);
}

#[test]
fn undecodable_input_is_bad_input_and_leaves_state_alone() {
    let tally = Harness::<Tally>::initialised();
    let _: u64 = tally.call(&TallyMsg::Add { n: 3 }).unwrap();
    let before = tally.snapshot().unwrap();

    for input in [
        vec![],
        vec![0xc1],                                  // never-used marker
        bytes(&"Nope"),                              // unknown unit variant
        bytes(&TallyMsg::Total)[..2].to_vec(),       // truncated
        [bytes(&TallyMsg::Total), vec![0]].concat(), // trailing byte
    ] {
        let err = tally.handle_bytes(&input).unwrap_err();
        assert_eq!(err.code, ERR_BAD_INPUT, "{input:?}");
        assert!(err.message.contains("not decodable as"), "{err}");
    }
    assert_eq!(tally.snapshot().unwrap(), before);
}

#[test]
fn default_init_refuses_config_and_keeps_the_old_agent() {
    let tally = Harness::<Tally>::initialised();
    let _: u64 = tally.call(&TallyMsg::Add { n: 9 }).unwrap();
    let err = tally.init(b"\x01").unwrap_err();
    assert_eq!(err.code, ERR_INIT_FAILED);
    assert!(err.message.contains("takes no init config"), "{err}");
    let total: u64 = tally.call(&TallyMsg::Total).unwrap();
    assert_eq!(total, 9);
    tally.init(&[]).unwrap();
    let total: u64 = tally.call(&TallyMsg::Total).unwrap();
    assert_eq!(total, 0, "a successful init replaces the agent");
}

#[test]
fn snapshot_restores_and_rejected_state_keeps_the_old_agent() {
    let tally = Harness::<Tally>::initialised();
    let _: u64 = tally.call(&TallyMsg::Add { n: 5 }).unwrap();
    let state = tally.snapshot().unwrap();
    assert_eq!(decode::<Tally>(&state).unwrap(), Tally { total: 5 });

    let copy = Harness::<Tally>::new();
    let err = copy.restore(b"\x92\x01").unwrap_err();
    assert_eq!(err.code, ERR_RESTORE_REJECTED);
    assert!(err.message.contains("rejected the state"), "{err}");
    assert_eq!(
        copy.snapshot().unwrap_err().code,
        ERR_NOT_INITIALISED,
        "still none"
    );

    copy.restore(&state).unwrap();
    let total: u64 = copy.call(&TallyMsg::Add { n: 1 }).unwrap();
    assert_eq!(total, 6);
    assert_eq!(copy.restore(b"").unwrap_err().code, ERR_RESTORE_REJECTED);
    let total: u64 = copy.call(&TallyMsg::Total).unwrap();
    assert_eq!(total, 6, "a failed restore keeps the running agent");
}

/// An agent that calls back into its own instance from inside `handle`, as a host calling an
/// export from inside an import would.
#[derive(Default, Serialize, Deserialize)]
struct Reenters;

thread_local! {
    static REENTERED: Harness<Reenters> = Harness::new();
}

impl Agent for Reenters {
    type Msg = ();
    type Reply = Vec<i32>;

    fn handle(&mut self, _msg: (), _ctx: &mut Ctx) -> Vec<i32> {
        REENTERED.with(|this| {
            vec![
                this.snapshot().unwrap_err().code,
                this.handle_bytes(&bytes(&())).unwrap_err().code,
                this.init(&[]).unwrap_err().code,
                this.restore(&[0x90]).unwrap_err().code,
            ]
        })
    }
}

#[test]
fn exports_called_from_inside_handle_are_refused() {
    REENTERED.with(|this| {
        this.init(&[]).unwrap();
        let codes: Vec<i32> = this.call(&()).unwrap();
        assert_eq!(codes, vec![ERR_REENTERED; 4]);
    });
}
