//! The checked-in protobuf code (`src/pb/generated.rs`) must be what prost-build generates from
//! `proto/ops.proto`, so that ordinary builds need no protobuf compiler.
//!
//! Set `KILN_REGENERATE_PB=1` to rewrite the checked-in file instead of failing.

use std::path::PathBuf;

#[test]
fn generated_code_is_up_to_date() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let proto_dir = root.join("proto");
    let checked_in = root.join("src").join("pb").join("generated.rs");

    let fds = protox::compile([proto_dir.join("ops.proto")], [&proto_dir]).expect("compile proto");
    let out = tempfile::tempdir().expect("temp dir");
    prost_build::Config::new()
        .btree_map(["."])
        .out_dir(out.path())
        .compile_fds(fds)
        .expect("prost-build");
    let generated = fs_err::read_to_string(out.path().join("pb.rs")).expect("generated pb.rs");

    if std::env::var_os("KILN_REGENERATE_PB").is_some() {
        fs_err::write(&checked_in, &generated).expect("write generated code");
        return;
    }
    let current = fs_err::read_to_string(&checked_in).unwrap_or_default();
    assert!(
        current == generated,
        "{} is out of date with proto/ops.proto; rerun this test with KILN_REGENERATE_PB=1",
        checked_in.display()
    );
}
