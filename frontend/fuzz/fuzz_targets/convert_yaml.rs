//! Fuzzes the kiln.yaml frontend (YAML loading, schema validation, lowering, expansion and the
//! shared conversion): no input may panic. Base images resolve to an empty configuration, so
//! no registry is needed.
//!
//! Run with `cargo +nightly fuzz run convert_yaml` from `frontend/`.

#![no_main]

use kiln_frontend::testing::FakeResolver;
use kiln_frontend::{ConvertOptions, convert_yaml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = ConvertOptions {
        file_name: "kiln.yaml".to_owned(),
        ..ConvertOptions::default()
    };
    let images = FakeResolver::default().fallback("", "{}");
    let _ = convert_yaml(data, &options, &images);
});
