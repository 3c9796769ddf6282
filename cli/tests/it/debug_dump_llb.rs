//! `kiln debug dump-llb` on BuildKit's LLB vectors: JSON lines identical to
//! `buildctl debug dump-llb`, DOT output, and a clear failure on malformed input.

use std::io::Write as _;
use std::process::{Command, Stdio};

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

fn vector(name: &str) -> std::path::PathBuf {
    kiln_testdata::llb_vectors_dir().join(name)
}

#[test]
fn dump_llb_matches_buildctl_on_every_vector() {
    let mut checked = 0;
    for dir in kiln_testdata::llb_vectors() {
        let def = dir.join("def.pb");
        if !def.is_file() {
            continue;
        }
        let out = kiln()
            .args(["debug", "dump-llb"])
            .arg(&def)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let want = fs_err::read_to_string(dir.join("dump.jsonl")).unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            want,
            "{}",
            dir.display()
        );
        checked += 1;
    }
    assert!(checked >= 30);
}

#[test]
fn dump_llb_reads_stdin() {
    let dir = vector("045-workdir-run-pwd");
    let mut child = kiln()
        .args(["debug", "dump-llb", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = fs_err::read(dir.join("def.pb")).unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let want = fs_err::read_to_string(dir.join("dump.jsonl")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    // Each line is a JSON object with the op's digest, in digests.txt order.
    let digests = fs_err::read_to_string(dir.join("digests.txt")).unwrap();
    for (line, digest) in want.lines().zip(digests.lines()) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["Digest"], digest);
    }
}

#[test]
fn dump_llb_dot_draws_the_graph() {
    let dir = vector("045-workdir-run-pwd");
    let out = kiln()
        .args(["debug", "dump-llb", "--dot"])
        .arg(dir.join("def.pb"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(dot.starts_with("digraph {\n"), "{dot}");
    assert!(dot.ends_with("}\n"), "{dot}");
    let digests: Vec<String> = fs_err::read_to_string(dir.join("digests.txt"))
        .unwrap()
        .lines()
        .map(|d| d.trim_start_matches("sha256:")[..12].to_owned())
        .collect();
    // One node per op, named by its short digest and labelled with its custom name.
    for short in &digests {
        assert!(
            dot.contains(&format!("  \"{short}\" [label=")),
            "{short} missing:\n{dot}"
        );
    }
    assert!(dot.contains(r#"[label="[b 4/4] RUN echo -n \"$PWD\" > /pwd" shape="box"]"#));
    // The exec op feeds the final copy.
    assert!(dot.contains(&format!("  \"{}\" -> \"{}\"", digests[3], digests[4])));
    let edges = dot.lines().filter(|l| l.contains(" -> ")).count();
    assert_eq!(edges, digests.len() - 1);
}

#[test]
fn dump_llb_rejects_malformed_input() {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs_err::write(tmp.path(), b"\xff\xff not protobuf").unwrap();
    let out = kiln()
        .args(["debug", "dump-llb"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("is not a valid LLB definition"), "{stderr}");
    assert!(stderr.contains("Caused by"), "{stderr}");

    let out = kiln()
        .args(["debug", "dump-llb", "/nonexistent/def.pb"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("/nonexistent/def.pb"), "{stderr}");
}
