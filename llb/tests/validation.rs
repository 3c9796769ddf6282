//! Loading rejects each kind of malformed Definition with an error naming the offending op,
//! and never panics on arbitrary bytes.

use kiln_llb::prost::Message as _;
use kiln_llb::{Digest, Error, LoadedDefinition, dump, marshal_op, pb};

fn source(identifier: &str) -> pb::Op {
    pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: identifier.into(),
            attrs: Default::default(),
        })),
        constraints: Some(pb::WorkerConstraints::default()),
        ..Default::default()
    }
}

fn input(digest: impl ToString, index: i64) -> pb::Input {
    pb::Input {
        digest: digest.to_string(),
        index,
    }
}

fn terminal(digest: impl ToString, index: i64) -> pb::Op {
    pb::Op {
        inputs: vec![input(digest, index)],
        ..Default::default()
    }
}

fn definition(ops: &[pb::Op]) -> pb::Definition {
    pb::Definition {
        def: ops.iter().map(marshal_op).collect(),
        ..Default::default()
    }
}

fn load(def: pb::Definition) -> Error {
    LoadedDefinition::from_bytes(&def.encode_to_vec()).expect_err("malformed definition loaded")
}

/// Asserts the error message names `digest`.
fn names(err: &Error, digest: Digest) {
    let message = err.to_string();
    assert!(
        message.contains(&digest.to_string()),
        "{message:?} does not name {digest}"
    );
}

#[test]
fn well_formed_minimal_definition_loads() {
    let src = source("docker-image://docker.io/library/busybox:latest");
    let d = Digest::from_bytes(&marshal_op(&src));
    let loaded = LoadedDefinition::from_definition(definition(&[src, terminal(d, 0)])).unwrap();
    assert_eq!(loaded.result().digest, d);
    assert_eq!(loaded.result().index, 0);
}

#[test]
fn rejects_bytes_that_are_not_a_definition() {
    let err = LoadedDefinition::from_bytes(&[0xff, 0xff]).unwrap_err();
    assert!(matches!(err, Error::DecodeDefinition { .. }), "{err}");
}

#[test]
fn rejects_undecodable_op() {
    let bad = vec![0x0a, 0x05, 0x01];
    let digest = Digest::from_bytes(&bad);
    let def = pb::Definition {
        def: vec![bad],
        ..Default::default()
    };
    let err = load(def);
    assert!(
        matches!(err, Error::DecodeOp { digest: d, position: 0, .. } if d == digest),
        "{err}"
    );
    names(&err, digest);
}

#[test]
fn rejects_empty_definition() {
    let err = load(pb::Definition::default());
    assert!(matches!(err, Error::Empty), "{err}");
}

#[test]
fn rejects_duplicate_op() {
    let src = source("local://a");
    let d = Digest::from_bytes(&marshal_op(&src));
    let err = load(definition(&[src.clone(), src, terminal(d, 0)]));
    assert!(
        matches!(err, Error::DuplicateOp { digest } if digest == d),
        "{err}"
    );
    names(&err, d);
}

#[test]
fn rejects_malformed_input_digest() {
    let src = source("local://a");
    let bad = pb::Op {
        inputs: vec![input("sha256:nothex", 0)],
        ..source("local://b")
    };
    let bad_digest = Digest::from_bytes(&marshal_op(&bad));
    let d = Digest::from_bytes(&marshal_op(&src));
    let err = load(definition(&[src, bad, terminal(d, 0)]));
    assert!(
        matches!(err, Error::InputDigest { digest, input: 0, .. } if digest == bad_digest),
        "{err}"
    );
    names(&err, bad_digest);
}

#[test]
fn rejects_missing_input() {
    let absent = Digest::from_bytes(b"not an op of this definition");
    let exec = pb::Op {
        inputs: vec![input(absent, 0)],
        op: Some(pb::op::Op::Exec(pb::ExecOp {
            mounts: vec![pb::Mount {
                dest: "/".into(),
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    let e = Digest::from_bytes(&marshal_op(&exec));
    let err = load(definition(&[exec, terminal(e, 0)]));
    assert!(
        matches!(err, Error::MissingInput { digest, target, .. } if digest == e && target == absent),
        "{err}"
    );
    names(&err, e);
    names(&err, absent);
}

#[test]
fn rejects_output_index_out_of_range() {
    let src = source("local://a");
    let d = Digest::from_bytes(&marshal_op(&src));
    let last = terminal(d, 1);
    let t = Digest::from_bytes(&marshal_op(&last));
    let err = load(definition(&[src, last]));
    assert!(
        matches!(err, Error::OutputOutOfRange { digest, index: 1, outputs: 1, .. } if digest == t),
        "{err}"
    );
    names(&err, t);

    // An exec op's outputs are its mounts with output >= 0: here only the root.
    let src = source("local://b");
    let s = Digest::from_bytes(&marshal_op(&src));
    let exec = pb::Op {
        inputs: vec![input(s, 0)],
        op: Some(pb::op::Op::Exec(pb::ExecOp {
            mounts: vec![
                pb::Mount {
                    dest: "/".into(),
                    ..Default::default()
                },
                pb::Mount {
                    dest: "/ro".into(),
                    readonly: true,
                    output: -1,
                    ..Default::default()
                },
            ],
            ..Default::default()
        })),
        ..Default::default()
    };
    let e = Digest::from_bytes(&marshal_op(&exec));
    let err = load(definition(&[src, exec, terminal(e, 1)]));
    assert!(
        matches!(err, Error::OutputOutOfRange { outputs: 1, .. }),
        "{err}"
    );
    names(&err, e);
}

#[test]
fn rejects_body_index_out_of_range() {
    let src = source("local://a");
    let s = Digest::from_bytes(&marshal_op(&src));
    let file = pb::Op {
        inputs: vec![input(s, 0)],
        op: Some(pb::op::Op::File(pb::FileOp {
            actions: vec![pb::FileAction {
                input: 0,
                secondary_input: 5,
                output: 0,
                action: Some(pb::file_action::Action::Rm(pb::FileActionRm::default())),
            }],
        })),
        ..Default::default()
    };
    let f = Digest::from_bytes(&marshal_op(&file));
    let err = load(definition(&[src, file, terminal(f, 0)]));
    assert!(
        matches!(&err, Error::InputIndexOutOfRange { digest, field, index: 5, available: 1 }
            if *digest == f && field == "actions[0].secondaryInput"),
        "{err}"
    );
    names(&err, f);
}

#[test]
fn rejects_huge_duplicate_or_negative_output_numbers() {
    let src = source("docker-image://docker.io/library/busybox:latest");
    let s = Digest::from_bytes(&marshal_op(&src));
    let mount = |output: i64| pb::Mount {
        input: 0,
        dest: "/".into(),
        output,
        ..Default::default()
    };
    for (outputs, bad) in [
        (vec![1 << 40], 1i64 << 40),
        (vec![0, 0], 0),
        (vec![-2], -2),
        (vec![0, 2], 2),
    ] {
        let exec = pb::Op {
            inputs: vec![input(s, 0)],
            op: Some(pb::op::Op::Exec(pb::ExecOp {
                meta: Some(pb::Meta {
                    args: vec!["true".into()],
                    cwd: "/".into(),
                    ..Default::default()
                }),
                mounts: outputs.iter().map(|o| mount(*o)).collect(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let e = Digest::from_bytes(&marshal_op(&exec));
        let err = load(definition(&[src.clone(), exec, terminal(e, 0)]));
        assert!(
            matches!(&err, Error::OutputIndex { digest, index, .. } if *digest == e && *index == bad),
            "{outputs:?}: {err}"
        );
    }
    let file = pb::Op {
        inputs: vec![input(s, 0)],
        op: Some(pb::op::Op::File(pb::FileOp {
            actions: vec![pb::FileAction {
                input: 0,
                secondary_input: -1,
                output: 1 << 40,
                action: Some(pb::file_action::Action::Rm(pb::FileActionRm::default())),
            }],
        })),
        ..Default::default()
    };
    let f = Digest::from_bytes(&marshal_op(&file));
    let err = load(definition(&[src, file, terminal(f, 0)]));
    assert!(
        matches!(&err, Error::OutputIndex { field, .. } if field == "actions[0].output"),
        "{err}"
    );
}

#[test]
fn rejects_op_without_body_before_the_end() {
    let empty = pb::Op {
        platform: Some(pb::Platform::default()),
        ..Default::default()
    };
    let x = Digest::from_bytes(&marshal_op(&empty));
    let err = load(definition(&[empty, terminal(x, 0)]));
    assert!(
        matches!(err, Error::UnknownOpKind { digest } if digest == x),
        "{err}"
    );
    names(&err, x);
}

#[test]
fn rejects_passthrough_ops() {
    let pass = pb::Op {
        op: Some(pb::op::Op::Passthrough(pb::PassthroughOp {
            id: "x".into(),
            outputs: vec![0],
        })),
        ..Default::default()
    };
    let p = Digest::from_bytes(&marshal_op(&pass));
    let err = load(definition(&[pass, terminal(p, 0)]));
    assert!(
        matches!(err, Error::UnsupportedOpKind { digest, kind: "passthrough" } if digest == p),
        "{err}"
    );
    names(&err, p);
}

#[test]
fn rejects_definition_without_terminal() {
    let src = source("local://a");
    let s = Digest::from_bytes(&marshal_op(&src));
    let err = load(definition(&[src]));
    assert!(
        matches!(err, Error::NoTerminal { digest, .. } if digest == s),
        "{err}"
    );
    names(&err, s);

    let two = pb::Op {
        inputs: vec![input(s, 0), input(s, 0)],
        ..Default::default()
    };
    let t = Digest::from_bytes(&marshal_op(&two));
    let err = load(definition(&[source("local://a"), two]));
    assert!(
        matches!(err, Error::NoTerminal { digest, .. } if digest == t),
        "{err}"
    );
}

#[test]
fn rejects_bad_metadata_keys() {
    let src = source("local://a");
    let s = Digest::from_bytes(&marshal_op(&src));
    let mut def = definition(&[src, terminal(s, 0)]);
    def.metadata.insert("x".into(), pb::OpMetadata::default());
    let err = load(def.clone());
    assert!(
        matches!(err, Error::MetadataKey { ref key, .. } if key == "x"),
        "{err}"
    );

    let stranger = Digest::from_bytes(b"stranger");
    def.metadata.clear();
    def.metadata
        .insert(stranger.to_string(), pb::OpMetadata::default());
    let err = load(def);
    assert!(
        matches!(err, Error::MetadataForUnknownOp { digest } if digest == stranger),
        "{err}"
    );
    names(&err, stranger);
}

/// Loading, dumping and drawing arbitrary bytes returns errors, never panics: pure random
/// inputs and many seeded mutations of BuildKit's vectors.
#[test]
fn random_and_mutated_inputs_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x6b69_6c6e);
    let vectors: Vec<Vec<u8>> = kiln_testdata::llb_vectors()
        .into_iter()
        .filter_map(|dir| fs_err::read(dir.join("def.pb")).ok())
        .collect();
    assert!(!vectors.is_empty());
    let mut loaded_ok = 0;
    for round in 0..6000 {
        let bytes = if round % 5 == 0 {
            let len = rng.usize(0..256);
            std::iter::repeat_with(|| rng.u8(..)).take(len).collect()
        } else {
            let mut bytes = vectors[rng.usize(..vectors.len())].clone();
            for _ in 0..rng.usize(1..4) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.usize(..bytes.len());
                match rng.u8(0..4) {
                    0 => bytes[at] ^= 1 << rng.u8(0..8),
                    1 => bytes[at] = rng.u8(..),
                    2 => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            bytes
        };
        if LoadedDefinition::from_bytes(&bytes).is_ok() {
            loaded_ok += 1;
        }
        if let Ok(def) = pb::Definition::decode(bytes.as_slice()) {
            let _ = dump::to_json_lines(&def);
            let _ = dump::to_dot(&def);
        }
    }
    // Some mutations (in metadata strings, say) leave a valid definition: the loop did reach
    // the validation code, not only the decoder.
    assert!(loaded_ok > 0);
}
