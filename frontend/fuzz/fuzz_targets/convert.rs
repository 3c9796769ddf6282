//! Fuzzes the whole Dockerfile-to-LLB conversion (stages, expansion, every instruction's flags,
//! `ADD` of URLs and git repositories, symbolic `--chmod`, mounts): no input may panic. Base
//! images resolve to an empty configuration, so no registry is needed.
//!
//! Run with `cargo +nightly fuzz run convert` from `frontend/`.

#![no_main]

use kiln_frontend::{ConvertOptions, ImageMetaResolver, ResolvedImage, convert};
use kiln_llb::pb;
use libfuzzer_sys::fuzz_target;

/// Every image is an empty `{}` configuration.
struct EmptyImages;

impl ImageMetaResolver for EmptyImages {
    fn resolve(
        &self,
        _reference: &str,
        _platform: &pb::Platform,
    ) -> Result<ResolvedImage, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ResolvedImage {
            digest: String::new(),
            config: b"{}".to_vec(),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let options = ConvertOptions::default();
    let _ = convert(data, &options, &EmptyImages);
});
