//! Fuzzes what the solver does with a Definition before running anything: loading and
//! validation, then planning (every op's fields and attributes checked and parsed, cache
//! digests) into a scheduler graph. Nothing may panic, and an accepted graph is closed (see
//! `tests/arbitrary_definitions.rs`, shared with the tests).
//!
//! Run with `cargo +nightly fuzz run definition` from `solver/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/arbitrary_definitions.rs"]
#[allow(dead_code, reason = "the tests in it are not built here")]
mod arbitrary_definitions;

fuzz_target!(|data: &[u8]| {
    arbitrary_definitions::check(data);
});
