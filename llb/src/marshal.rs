//! Marshalling ops to BuildKit's exact bytes.

use crate::digest::Digest;
use crate::pb;

/// Marshals an op exactly as BuildKit does, so its digest matches.
///
/// BuildKit's Go marshaller writes an `Op`'s ordinary fields by field number (`inputs`,
/// `platform`, `constraints`) and the `op` oneof after them, whereas prost's derived
/// [`prost::Message::encode`] sorts everything by field number and would put the oneof
/// (fields 2–8) before `platform` (field 10). Use this function, not `encode`, for ops; no
/// other message has a oneof placed before ordinary fields.
///
/// Go also writes both key and value of every map entry, where prost leaves out empty ones;
/// this function does as Go for source attrs. The maps of (experimental) build ops still
/// follow prost, so a build op with an empty attr value gets a different digest than in
/// BuildKit.
pub fn marshal_op(op: &pb::Op) -> Vec<u8> {
    use prost::Message as _;
    let mut buf = Vec::with_capacity(op.encoded_len());
    for input in &op.inputs {
        prost::encoding::message::encode(1, input, &mut buf);
    }
    if let Some(platform) = &op.platform {
        prost::encoding::message::encode(10, platform, &mut buf);
    }
    if let Some(constraints) = &op.constraints {
        prost::encoding::message::encode(11, constraints, &mut buf);
    }
    match &op.op {
        Some(pb::op::Op::Source(source)) => encode_source(source, &mut buf),
        Some(body) => body.encode(&mut buf),
        None => {}
    }
    buf
}

/// Go writes both the key and the value of every map entry, even empty ones, where prost
/// leaves empty ones out; source attrs are the map of an op that may hold an empty value.
fn encode_source(source: &pb::SourceOp, buf: &mut Vec<u8>) {
    use prost::encoding::{bytes, string};
    let mut inner = Vec::new();
    if !source.identifier.is_empty() {
        string::encode(1, &source.identifier, &mut inner);
    }
    let mut entry = Vec::new();
    for (key, value) in &source.attrs {
        entry.clear();
        string::encode(1, key, &mut entry);
        string::encode(2, value, &mut entry);
        bytes::encode(2, &entry, &mut inner);
    }
    bytes::encode(3, &inner, buf);
}

/// The digest of an op: the sha256 of [`marshal_op`]'s bytes.
pub fn op_digest(op: &pb::Op) -> Digest {
    Digest::from_bytes(&marshal_op(op))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oneof_comes_after_platform_and_constraints() {
        let op = pb::Op {
            inputs: vec![],
            platform: Some(pb::Platform {
                architecture: "amd64".into(),
                os: "linux".into(),
                ..Default::default()
            }),
            constraints: Some(pb::WorkerConstraints::default()),
            op: Some(pb::op::Op::Source(pb::SourceOp {
                identifier: "x".into(),
                attrs: Default::default(),
            })),
        };
        // platform (field 10) 0x52, constraints (11, empty but present) 0x5a 0x00,
        // then source (3) 0x1a.
        let expected: &[u8] = &[
            0x52, 14, 0x0a, 5, b'a', b'm', b'd', b'6', b'4', 0x12, 5, b'l', b'i', b'n', b'u', b'x',
            0x5a, 0x00, 0x1a, 3, 0x0a, 1, b'x',
        ];
        assert_eq!(marshal_op(&op), expected);
    }

    #[test]
    fn empty_map_values_are_written_like_go() {
        let op = pb::Op {
            op: Some(pb::op::Op::Source(pb::SourceOp {
                identifier: "x".into(),
                attrs: [
                    ("b".to_owned(), String::new()),
                    ("a".to_owned(), "1".to_owned()),
                ]
                .into_iter()
                .collect(),
            })),
            ..Default::default()
        };
        let expected: &[u8] = &[
            0x1a, 18, 0x0a, 1, b'x', // identifier
            0x12, 6, 0x0a, 1, b'a', 0x12, 1, b'1', // attrs["a"] = "1" (sorted first)
            0x12, 5, 0x0a, 1, b'b', 0x12, 0, // attrs["b"] = "", value still written
        ];
        assert_eq!(marshal_op(&op), expected);
        use prost::Message as _;
        assert_eq!(pb::Op::decode(expected).unwrap(), op);
    }
}
