//! Tests only: see `tests/`. The example agents run natively here, through
//! `arbor_guest::testing::Harness`, and are compared message by message.
