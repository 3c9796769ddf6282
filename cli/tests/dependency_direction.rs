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
        "kiln",
        &[
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
