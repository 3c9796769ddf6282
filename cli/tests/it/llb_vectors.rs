//! `kiln build --llb` on BuildKit's LLB vectors: every vector is solved end to end and its
//! local export checked against the expectations of the conformance case it was made from
//! (`testdata/conformance/<case>/case.toml`).

use crate::common::cases::{check_expectations, conformance_dir};
use crate::common::ready;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `def` with the context `context` into `out`; returns the exit status and output.
fn build(root: &Path, def: &Path, context: &Path, out: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(["build", "--progress=plain", "--llb"])
        .arg(def)
        .arg("--local")
        .arg(format!("context={}", context.display()))
        .arg("--output")
        .arg(format!("type=local,dest={}", out.display()))
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// Solves one vector and returns what is wrong with its result (empty: it passed).
fn run_vector(root: &Path, vector: &Path, work: &Path) -> Vec<String> {
    let name = vector.file_name().unwrap().to_string_lossy().into_owned();
    let case_dir = conformance_dir().join(&name);
    let text = fs_err::read_to_string(case_dir.join("case.toml")).unwrap();
    let case: toml::Table = text.parse().unwrap();
    let context_name = case
        .get("context")
        .and_then(|c| c.as_str())
        .unwrap_or("context");
    let mut context = case_dir.join(context_name);
    if !context.is_dir() {
        // The case has no context files: an empty directory stands in.
        context = work.join(format!("{name}.context"));
        fs_err::create_dir_all(&context).unwrap();
    }
    let out = work.join(format!("{name}.out"));
    fs_err::create_dir_all(&out).unwrap();
    let (ok, log) = build(root, &vector.join("def.pb"), &context, &out);
    let expect = case["expect"].as_table().expect("[expect] is a table");
    let want_success = expect.get("outcome").and_then(|o| o.as_str()) != Some("failure");
    if !want_success {
        return if ok {
            vec!["the build succeeded, want a failure".to_owned()]
        } else {
            Vec::new()
        };
    }
    if !ok {
        return vec![format!("the build failed:\n{log}")];
    }
    check_expectations(expect, &out)
}

#[test]
fn every_llb_vector_meets_its_case_expectations() {
    if !ready() {
        return;
    }
    let vectors: Vec<PathBuf> = kiln_testdata::llb_vectors()
        .into_iter()
        .filter(|d| d.join("def.pb").is_file())
        .filter(|d| conformance_dir().join(d.file_name().unwrap()).is_dir())
        .collect();
    assert!(vectors.len() >= 30, "only {} vectors found", vectors.len());
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let mut failures = Vec::new();
    for vector in &vectors {
        let errors = run_vector(&root, vector, work.path());
        if !errors.is_empty() {
            let name = vector.file_name().unwrap().to_string_lossy().into_owned();
            failures.push(format!("{name}:\n  {}", errors.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

#[test]
fn canary_vector_copies_the_context_file() {
    if !ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let context = work.path().join("context");
    fs_err::create_dir(&context).unwrap();
    fs_err::write(context.join("f"), "canary").unwrap();
    let out = work.path().join("out");
    let def = kiln_testdata::llb_vectors_dir().join("_canary/def.pb");
    let (ok, log) = build(&work.path().join("root"), &def, &context, &out);
    assert!(ok, "{log}");
    assert_eq!(fs_err::read_to_string(out.join("f")).unwrap(), "canary");
    let names: Vec<_> = fs_err::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f"]);
}

#[test]
fn expectation_checker_reports_wrong_content_mode_and_absent_paths() {
    // The checker itself must be able to fail, or the vector test proves nothing.
    let dir = tempfile::tempdir().unwrap();
    fs_err::write(dir.path().join("a"), "A").unwrap();
    fs_err::set_permissions(dir.path().join("a"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let expect: toml::Table = r#"
        absent = ["a"]
        [[files]]
        path = "a"
        content = "B"
        mode = "0644"
        type = "dir"
        [[files]]
        path = "missing"
    "#
    .parse()
    .unwrap();
    let errors = check_expectations(&expect, dir.path());
    assert_eq!(errors.len(), 5, "{errors:?}");
    let good: toml::Table = r#"
        absent = ["b"]
        [[files]]
        path = "a"
        content = "A"
        mode = "0600"
        type = "file"
    "#
    .parse()
    .unwrap();
    assert_eq!(check_expectations(&good, dir.path()), Vec::<String>::new());
}
