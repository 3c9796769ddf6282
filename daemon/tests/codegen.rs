//! The checked-in protobuf and gRPC code (`src/pb/*.rs`) must be what tonic-prost-build
//! generates from `proto/`, so that ordinary builds need no protobuf compiler.
//!
//! Set `KILN_REGENERATE_PB=1` to rewrite the checked-in files instead of failing.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "moby.buildkit.v1.rs",
    "moby.buildkit.v1.types.rs",
    "moby.filesync.v1.rs",
    "fsutil.types.rs",
    "moby.buildkit.v1.frontend.rs",
    "moby.buildkit.v1.apicaps.rs",
    "google.rpc.rs",
    "moby.buildkit.secrets.v1.rs",
    "moby.sshforward.v1.rs",
    "containerd.services.content.v1.rs",
];

#[test]
fn generated_code_is_up_to_date() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let proto_dir = root.join("proto");
    let llb_proto = root.join("..").join("llb").join("proto");
    let fds = protox::compile(
        [
            proto_dir.join("auth.proto"),
            proto_dir.join("content.proto"),
            proto_dir.join("control.proto"),
            proto_dir.join("filesync.proto"),
            proto_dir.join("gateway.proto"),
            proto_dir.join("secrets.proto"),
            proto_dir.join("sshforward.proto"),
        ],
        [&proto_dir, &llb_proto],
    )
    .expect("compile proto");
    let out = tempfile::tempdir().expect("temp dir");
    tonic_prost_build::configure()
        .extern_path(".pb", "::kiln_llb::pb")
        .extern_path(".google.protobuf.Timestamp", "::prost_types::Timestamp")
        .extern_path(".google.protobuf.Any", "::prost_types::Any")
        // The daemon serves the control API and is the client of the session's services.
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        // A service answers `Unimplemented` for the methods kiln does not serve.
        .generate_default_stubs(true)
        .out_dir(out.path())
        .compile_fds(fds)
        .expect("tonic-prost-build");
    let regenerate = std::env::var_os("KILN_REGENERATE_PB").is_some();
    for file in FILES {
        let generated = fs_err::read_to_string(out.path().join(file)).expect("generated code");
        let checked_in = root.join("src").join("pb").join(file);
        if regenerate {
            fs_err::write(&checked_in, &generated).expect("write generated code");
            continue;
        }
        let current = fs_err::read_to_string(&checked_in).unwrap_or_default();
        assert!(
            current == generated,
            "{} is out of date with proto/; rerun this test with KILN_REGENERATE_PB=1",
            checked_in.display()
        );
    }
}
