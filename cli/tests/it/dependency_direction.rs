//! The crates' dependency direction (shared conventions): lower crates never import higher ones.
//! Reads `cargo metadata` and fails on any kiln-to-kiln edge not listed here.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const ALLOWED: &[(&str, &[&str])] = &[
    ("kiln-llb", &[]),
    ("kiln-fsutil", &[]),
    ("kiln-runner", &["kiln-fsutil"]),
    ("kiln-testdata", &[]),
    ("kiln-cache", &["kiln-llb", "kiln-fsutil"]),
    ("kiln-frontend", &["kiln-llb"]),
    ("kiln-solver", &["kiln-llb", "kiln-cache", "kiln-fsutil"]),
    ("kiln-exporters", &["kiln-llb", "kiln-cache", "kiln-fsutil"]),
    (
        "kiln-engine",
        &[
            "kiln-llb",
            "kiln-frontend",
            "kiln-solver",
            "kiln-cache",
            "kiln-runner",
            "kiln-exporters",
        ],
    ),
    (
        "kiln-daemon",
        &[
            "kiln-engine",
            "kiln-llb",
            "kiln-frontend",
            "kiln-solver",
            "kiln-cache",
            "kiln-runner",
            "kiln-exporters",
            "kiln-fsutil",
        ],
    ),
    (
        "kiln",
        &[
            "kiln-daemon",
            "kiln-engine",
            "kiln-llb",
            "kiln-frontend",
            "kiln-solver",
            "kiln-cache",
            "kiln-runner",
            "kiln-exporters",
            "kiln-fsutil",
        ],
    ),
];

#[test]
fn kiln_crates_depend_only_downwards() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(name, deps)| (*name, deps.iter().copied().collect()))
        .collect();
    let mut seen = BTreeSet::new();
    let mut violations = Vec::new();
    for package in meta["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name");
        seen.insert(name.to_owned());
        let Some(ok) = allowed.get(name) else {
            violations.push(format!(
                "{name}: a workspace crate missing from the allowed list"
            ));
            continue;
        };
        for dep in package["dependencies"].as_array().expect("dependencies") {
            let dep_name = dep["name"].as_str().expect("dependency name");
            let is_dev = dep["kind"].as_str() == Some("dev");
            // A dev-dependency on the test data, or on the crate itself to switch on its
            // `testing` feature, points nowhere up.
            if !dep_name.starts_with("kiln")
                || (is_dev && (dep_name == "kiln-testdata" || dep_name == name))
            {
                continue;
            }
            if !ok.contains(dep_name) {
                violations.push(format!("{name} -> {dep_name}"));
            }
        }
    }
    assert!(violations.is_empty(), "forbidden edges: {violations:#?}");
    for name in allowed.keys() {
        assert!(seen.contains(*name), "{name} is not a workspace member");
    }
}

/// The `.rs` files under `dir` (relative to the workspace root), with their text.
fn sources(dir: &str) -> Vec<(std::path::PathBuf, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    let mut stack = vec![root.join(dir)];
    while let Some(dir) = stack.pop() {
        for entry in fs_err::read_dir(&dir).expect("read a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = fs_err::read_to_string(&path).expect("read a source file");
                out.push((path, text));
            }
        }
    }
    out
}

/// Export is one way (frontend → llb → solver → exporters): the solver hands over snapshot
/// keys and never writes an output itself, and the CLI wires the exporters without reaching
/// into snapshots (`kiln run` gets its container's file system from the store's container
/// API).
#[test]
fn the_solver_never_exports_and_the_cli_never_touches_snapshots() {
    let mut violations = Vec::new();
    for (path, text) in sources("solver/src") {
        for forbidden in ["write_layer", "fn export_", "kiln_exporters"] {
            if text.contains(forbidden) {
                violations.push(format!("{}: {forbidden}", path.display()));
            }
        }
    }
    for (path, text) in sources("cli/src").into_iter().chain(sources("engine/src")) {
        for forbidden in [
            "kiln_solver::export",
            ".unpack_snapshot(",
            ".prepare(",
            ".commit(",
            ".lowers(",
            ".with_snapshot(",
            ".remove_snapshot(",
            ".snapshots(",
            "with_views",
            "write_layer",
        ] {
            if text.contains(forbidden) {
                violations.push(format!("{}: {forbidden}", path.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "export must flow one way: {violations:#?}"
    );
}
