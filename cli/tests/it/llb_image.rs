//! Image sources through `kiln build --llb`: `image.checksum` pins what the name resolves to,
//! `Op.platform` picks an index's image, and a platform that cannot run here is refused
//! before anything is pulled.

use kiln_llb::pb;
use kiln_llb::prost::Message as _;
use kiln_testdata::{is_root, registry_up, skip};

use crate::common::{assert_ok, build_llb, text};

const BUSYBOX: &str = "docker-image://127.0.0.1:5000/library/busybox:latest";
/// The test registry's two-platform busybox (linux/amd64 and linux/arm64).
const MULTI: &str = "docker-image://127.0.0.1:5000/library/busybox:multi";

/// A Definition copying `/bin/busybox` out of the image source `source`.
fn copy_busybox(source: pb::Op) -> Vec<u8> {
    let image_digest = kiln_llb::op_digest(&source);
    let copy = pb::Op {
        inputs: vec![pb::Input {
            digest: image_digest.to_string(),
            index: 0,
        }],
        op: Some(pb::op::Op::File(pb::FileOp {
            actions: vec![pb::FileAction {
                input: -1,
                secondary_input: 0,
                output: 0,
                action: Some(pb::file_action::Action::Copy(pb::FileActionCopy {
                    src: "/bin/busybox".into(),
                    dest: "/busybox".into(),
                    mode: -1,
                    timestamp: -1,
                    ..Default::default()
                })),
            }],
        })),
        ..Default::default()
    };
    let terminal = pb::Op {
        inputs: vec![pb::Input {
            digest: kiln_llb::op_digest(&copy).to_string(),
            index: 0,
        }],
        ..Default::default()
    };
    pb::Definition {
        def: vec![
            kiln_llb::marshal_op(&source),
            kiln_llb::marshal_op(&copy),
            kiln_llb::marshal_op(&terminal),
        ],
        ..Default::default()
    }
    .encode_to_vec()
}

fn image(attrs: &[(&str, &str)], platform: Option<(&str, &str)>) -> pb::Op {
    pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: BUSYBOX.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })),
        platform: platform.map(|(os, architecture)| pb::Platform {
            os: os.into(),
            architecture: architecture.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn image_checksums_pin_the_resolved_digest() {
    if !is_root() {
        return skip("exporting results needs root (overlay views)");
    }
    if !registry_up() {
        return skip("the test registry is not serving 127.0.0.1:5000 (run scripts/test-env.sh)");
    }
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let result = build_llb(
        &store,
        &copy_busybox(image(&[("image.checksum", &wrong)], None)),
        &work.path().join("wrong"),
    );
    let output = text(&result);
    assert!(!result.status.success(), "{output}");
    let prefix = "image digest ";
    let at = output
        .find(prefix)
        .unwrap_or_else(|| panic!("no mismatch reported: {output}"));
    let resolved = &output[at + prefix.len()..at + prefix.len() + 71];
    assert!(
        output.contains(&format!(
            "image digest {resolved} for 127.0.0.1:5000/library/busybox:latest does not match expected checksum {wrong}"
        )),
        "{output}"
    );
    let out = work.path().join("right");
    let built = assert_ok(build_llb(
        &store,
        &copy_busybox(image(
            &[("image.checksum", resolved), ("image.layerlimit", "1")],
            None,
        )),
        &out,
    ));
    assert!(out.join("busybox").is_file());
    assert!(text(&built).contains(BUSYBOX), "progress names the image");
}

#[test]
fn an_image_source_pulls_its_platform_and_unrunnable_platforms_are_refused_first() {
    if !is_root() {
        return skip("exporting results needs root (overlay views)");
    }
    if !registry_up() {
        return skip("the test registry is not serving 127.0.0.1:5000 (run scripts/test-env.sh)");
    }
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    // The op's platform picks the index entry: the arm64 busybox of `busybox:multi`.
    let multi = |platform| pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: MULTI.into(),
            ..Default::default()
        })),
        ..image(&[], platform)
    };
    let out = work.path().join("arm64");
    assert_ok(build_llb(
        &store,
        &copy_busybox(multi(Some(("linux", "arm64")))),
        &out,
    ));
    let elf = fs_err::read(out.join("busybox")).unwrap();
    // e_machine 0xb7 is AArch64 (x86-64 is 0x3e).
    assert_eq!((&elf[..4], elf[18]), (&b"\x7fELF"[..], 0xb7));
    let out = work.path().join("amd64");
    assert_ok(build_llb(
        &store,
        &copy_busybox(multi(Some(("linux", "amd64")))),
        &out,
    ));
    assert_eq!(fs_err::read(out.join("busybox")).unwrap()[18], 0x3e);

    // Another OS, and a process no emulator runs, are refused before anything starts.
    let result = build_llb(
        &store,
        &copy_busybox(image(&[], Some(("windows", "amd64")))),
        &work.path().join("windows"),
    );
    let output = text(&result);
    assert!(!result.status.success(), "{output}");
    assert!(
        output.contains(
            "platform is not supported: kiln builds linux platforms only, not windows/amd64"
        ),
        "{output}"
    );
    assert!(!output.contains(BUSYBOX), "nothing started: {output}");
    let source = image(&[], None);
    let exec = pb::Op {
        inputs: vec![pb::Input {
            digest: kiln_llb::op_digest(&source).to_string(),
            index: 0,
        }],
        op: Some(pb::op::Op::Exec(pb::ExecOp {
            meta: Some(pb::Meta {
                args: vec!["/bin/true".into()],
                cwd: "/".into(),
                ..Default::default()
            }),
            mounts: vec![pb::Mount {
                input: 0,
                dest: "/".into(),
                output: 0,
                ..Default::default()
            }],
            ..Default::default()
        })),
        platform: Some(pb::Platform {
            os: "linux".into(),
            architecture: "wasm".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let terminal = pb::Op {
        inputs: vec![pb::Input {
            digest: kiln_llb::op_digest(&exec).to_string(),
            index: 0,
        }],
        ..Default::default()
    };
    let definition = pb::Definition {
        def: vec![
            kiln_llb::marshal_op(&source),
            kiln_llb::marshal_op(&exec),
            kiln_llb::marshal_op(&terminal),
        ],
        ..Default::default()
    }
    .encode_to_vec();
    let result = build_llb(&store, &definition, &work.path().join("wasm"));
    let output = text(&result);
    assert!(!result.status.success(), "{output}");
    assert!(
        output.contains(
            "platform is not supported: QEMU user emulation does not cover the wasm architecture"
        ),
        "{output}"
    );
    assert!(!output.contains(BUSYBOX), "nothing started: {output}");
}
