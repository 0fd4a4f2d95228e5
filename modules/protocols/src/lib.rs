//! The example agents' protocols, written once for both sides: the guest agents in
//! `modules/guest` (built for wasm32-unknown-unknown) and the host's tests, benches and demo
//! (through `arbor_modules`, which re-exports them).
//!
//! Every payload is MessagePack with named fields (`rmp_serde::to_vec_named`): structs are maps
//! keyed by field name, enums externally tagged — a unit variant is its name (`"Get"`), any other
//! variant a one-entry map from its name to its fields (`{"Inc": {"by": 2}}`). Names are the wire
//! format: renaming a variant or a field changes every module's protocol, and the tests here pin
//! the bytes.
//!
//! ```
//! use arbor_protocols::counter::CounterMsg;
//! use arbor_protocols::kv::KvMsg;
//!
//! let inc = rmp_serde::to_vec_named(&CounterMsg::Inc { by: 2 }).unwrap();
//! assert_eq!(inc, b"\x81\xa3Inc\x81\xa2by\x02");
//! let get = rmp_serde::to_vec_named(&KvMsg::Get { key: "a".into() }).unwrap();
//! assert_eq!(get, b"\x81\xa3Get\x81\xa3key\xa1a");
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`cache`] | `cache`'s messages, replies and parameters |
//! | [`counter`] | `counter`'s messages and reply |
//! | [`kv`] | the kv family's messages and replies, and kv-buggy's rule ([`kv::is_unlucky`]) |
//! | [`toolbox`] | `toolbox`'s messages and replies, and the `echo` tool's arguments |
//! | [`hostile`] | kv-hostile's defects ([`hostile::Hostile`]) and the marker the host patches |
//! | [`fnv1a`] | the hash by which the test variants pick the inputs they get wrong |
//!
//! `no_std` (with `alloc`), so that it builds for the guests as it is.

#![no_std]
#![deny(missing_docs)]

extern crate alloc;

pub mod cache;
pub mod counter;
mod fnv;
pub mod hostile;
pub mod kv;
pub mod toolbox;

pub use fnv::{FNV1A_OFFSET, fnv1a, fnv1a_extend};

/// Shared by the modules' wire-format tests.
#[cfg(test)]
fn encode<T: serde::Serialize>(value: &T) -> alloc::vec::Vec<u8> {
    rmp_serde::to_vec_named(value).expect("every protocol type encodes")
}
