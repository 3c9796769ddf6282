//! Fuzzes the whole Dockerfile-to-LLB conversion (stages, expansion, every instruction's flags,
//! `ADD` of URLs and git repositories, symbolic `--chmod`, mounts): no input may panic. Base
//! images resolve to an empty configuration, so no registry is needed.
//!
//! Run with `cargo +nightly fuzz run convert` from `frontend/`.

#![no_main]

use kiln_frontend::testing::FakeResolver;
use kiln_frontend::{ConvertOptions, convert};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = ConvertOptions::default();
    // Every image is an empty `{}` configuration.
    let images = FakeResolver::default().fallback("", "{}");
    let _ = convert(data, &options, &images);
});
