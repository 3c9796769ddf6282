//! Fuzzes root-scoped resolution: the input builds one to three layers of directories, files,
//! links (any target) and opaque markers, then names paths to resolve in them, layered and
//! plain, following the last link or not. No answer may leave the root or pass through a link
//! on the host, and nothing may panic (see `tests/arbitrary_trees.rs`, shared with the tests).
//!
//! Run with `cargo +nightly fuzz run resolve` from `fsutil/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/arbitrary_trees.rs"]
mod arbitrary_trees;

fuzz_target!(|data: &[u8]| {
    arbitrary_trees::check(data);
});
