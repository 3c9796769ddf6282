//! Interop with BuildKit: every LLB vector in `testdata/llb-vectors` (Definitions marshalled by
//! BuildKit, with BuildKit's op digests and `buildctl debug dump-llb` output) must decode,
//! validate, re-marshal to the same bytes and dump to the same JSON.

use kiln_llb::prost::Message as _;
use kiln_llb::{Digest, LoadedDefinition, dump, pb};

struct Vector {
    name: String,
    def: Vec<u8>,
    digests: Vec<String>,
    dump: String,
}

fn vectors() -> Vec<Vector> {
    let vectors: Vec<Vector> = kiln_testdata::llb_vectors()
        .into_iter()
        .filter(|dir| dir.join("def.pb").is_file())
        .map(|dir| Vector {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            def: fs_err::read(dir.join("def.pb")).unwrap(),
            digests: fs_err::read_to_string(dir.join("digests.txt"))
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect(),
            dump: fs_err::read_to_string(dir.join("dump.jsonl")).unwrap(),
        })
        .collect();
    assert!(vectors.len() >= 30, "only {} vectors found", vectors.len());
    vectors
}

/// Every op re-marshals to exactly BuildKit's bytes (so digests are stable). BuildKit writes
/// the Definition envelope itself with Go's map iteration order (its metadata and caps maps come
/// out in a different order on each run), so the envelope is compared after decoding, and its
/// `def` list byte for byte.
#[test]
fn vectors_remarshal_byte_identical() {
    for v in vectors() {
        let def = pb::Definition::decode(v.def.as_slice()).unwrap();
        for (i, bytes) in def.def.iter().enumerate() {
            let op = pb::Op::decode(bytes.as_slice()).unwrap();
            assert_eq!(
                &kiln_llb::marshal_op(&op),
                bytes,
                "{}: op {i} bytes differ",
                v.name
            );
        }
        let ours = def.encode_to_vec();
        let again = pb::Definition::decode(ours.as_slice()).unwrap();
        assert_eq!(again, def, "{}", v.name);
        assert_eq!(again.def, def.def, "{}", v.name);
        // Our own output is a fixed point.
        assert_eq!(again.encode_to_vec(), ours, "{}", v.name);
    }
}

#[test]
fn vectors_digests_match_buildkit() {
    for v in vectors() {
        let def = pb::Definition::decode(v.def.as_slice()).unwrap();
        let ours: Vec<String> = def
            .def
            .iter()
            .map(|b| Digest::from_bytes(b).to_string())
            .collect();
        assert_eq!(ours, v.digests, "{}", v.name);
    }
}

#[test]
fn vectors_load_and_validate() {
    for v in vectors() {
        let loaded =
            LoadedDefinition::from_bytes(&v.def).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        // The terminal op is the last digest; every other op is loaded once.
        let terminal = v.digests.last().unwrap();
        assert_eq!(&loaded.terminal().to_string(), terminal, "{}", v.name);
        assert_eq!(loaded.ops().len(), v.digests.len() - 1, "{}", v.name);
        for (i, op) in loaded.ops().iter().enumerate() {
            assert!(v.digests.contains(&op.digest().to_string()));
            assert_eq!(Digest::from_bytes(op.bytes()), op.digest());
            for input in op.inputs() {
                let at = loaded
                    .ops()
                    .iter()
                    .position(|o| o.digest() == input.digest)
                    .unwrap();
                assert!(at < i, "{}: input after its consumer", v.name);
            }
        }
        let result = loaded.result();
        assert!(loaded.get(&result.digest).is_some(), "{}", v.name);
    }
}

#[test]
fn vectors_dump_matches_buildctl() {
    for v in vectors() {
        let def = pb::Definition::decode(v.def.as_slice()).unwrap();
        let ours = dump::to_json_lines(&def).unwrap();
        if ours != v.dump {
            for (a, b) in ours.lines().zip(v.dump.lines()) {
                assert_eq!(a, b, "{}: dump line differs", v.name);
            }
        }
        assert_eq!(ours, v.dump, "{}", v.name);
    }
}
