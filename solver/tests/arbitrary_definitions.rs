//! Definitions from arbitrary bytes, and what the solver must do with any of them before it
//! runs anything: load and validate (`kiln_llb::LoadedDefinition`), then turn into a graph
//! ([`Session::graph`]: the field checks, every op's attributes parsed, cache digests) without
//! panicking; and a graph it accepts is closed, every input naming one of its vertices.
//!
//! [`check`] reads its first byte as the mode: even, the rest is a marshalled `Definition` as
//! a client would send it; odd, the rest builds one op at a time (a decoded `Op` or one made
//! from a template of each kind), its edges pointed at earlier ops, so that the fuzzer gets
//! past the loader's graph checks to the solver's. The fuzz target
//! `fuzz/fuzz_targets/definition.rs` runs [`check`] on fuzzer input; the tests here run it on
//! seeded random bytes, on the BuildKit LLB vectors, and on every input the fuzzer found a
//! panic with.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use kiln_llb::LoadedDefinition;
use kiln_solver::testing::FakeExecutor;
use kiln_solver::{Session, SessionConfig};

/// One session for every input, on a store in a directory that lives as long as the process.
fn session() -> &'static Session {
    static SESSION: OnceLock<Session> = OnceLock::new();
    SESSION.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let store = kiln_cache::Store::open(dir.join("store")).unwrap();
        Session::new(
            SessionConfig {
                store: Arc::new(store),
                executor: Arc::new(FakeExecutor::refusing("nothing runs here")),
                pull: kiln_cache::PullOptions::default(),
                locals: HashMap::from([("context".to_owned(), PathBuf::from(&dir))]),
                local_dirs: None,
                secrets: HashMap::from([("GIT_AUTH_TOKEN".to_owned(), b"token".to_vec())]),
                ssh: HashMap::new(),
                no_cache: false,
                entitlements: Default::default(),
                cache_imports: Vec::new(),
            },
            None,
        )
    })
}

/// Loads and plans the Definition `data` describes; panics only where the solver would.
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let loaded = if mode % 2 == 0 {
        LoadedDefinition::from_bytes(rest)
    } else {
        LoadedDefinition::from_definition(kiln_solver::testing::arbitrary_definition(rest))
    };
    let Ok(loaded) = loaded else {
        return;
    };
    let Ok(graph) = session().graph(&loaded) else {
        return;
    };
    let result = loaded.result().digest.to_string();
    assert!(graph.get(&result).is_some(), "the result is a vertex");
    for op in loaded.ops() {
        let vertex = graph
            .get(&op.digest().to_string())
            .expect("every op is a vertex");
        for input in &vertex.inputs {
            assert!(graph.get(&input.vertex).is_some(), "inputs are vertices");
        }
    }
}

#[test]
fn random_definitions_load_and_plan_without_panicking() {
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..3000 {
        let len = rng.usize(0..300);
        let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        check(&data);
    }
}

#[test]
fn buildkit_vectors_and_their_mutations_load_and_plan_without_panicking() {
    let mut rng = fastrand::Rng::with_seed(5);
    for case in kiln_testdata::llb_vectors() {
        let bytes = fs_err::read(case.join("def.pb")).unwrap();
        let mut data = vec![0];
        data.extend_from_slice(&bytes);
        check(&data);
        for _ in 0..50 {
            let mut mutated = data.clone();
            let at = rng.usize(1..mutated.len().max(2));
            if let Some(byte) = mutated.get_mut(at) {
                *byte = rng.u8(..);
            }
            check(&mutated);
        }
    }
}
