//! `kiln build -f kiln.yaml`: each `examples/yaml/NAME/` pair is built twice, from its kiln.yaml
//! and from its Dockerfile, each in a store of its own, and both must export the same file
//! system (paths, types, modes, owners, contents), which also holds what the pair's `expect`
//! file says. A pair may have `build-args` (`NAME=VALUE` lines) and `flags` (one `kiln build`
//! flag a line, `{dir}` standing for the pair's folder); a pair with a `frontend-only` file
//! (sources on the network) is compared by the frontend's tests only.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::common::{kiln_in, ready, text};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/yaml")
}

/// Every entry below `dir`: kind, mode, owner, size and a hash of the content (or the link
/// target).
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        for entry in fs_err::read_dir(dir.join(&rel)).unwrap() {
            let child = rel.join(entry.unwrap().file_name());
            let path = dir.join(&child);
            let meta = fs_err::symlink_metadata(&path).unwrap();
            let mut hasher = DefaultHasher::new();
            let kind = if meta.is_dir() {
                pending.push(child.clone());
                "dir"
            } else if meta.is_symlink() {
                hasher.write(
                    fs_err::read_link(&path)
                        .unwrap()
                        .as_os_str()
                        .as_encoded_bytes(),
                );
                "symlink"
            } else {
                hasher.write(&fs_err::read(&path).unwrap());
                "file"
            };
            let size = if meta.is_dir() { 0 } else { meta.len() };
            out.insert(
                child.to_string_lossy().into_owned(),
                format!(
                    "{kind} {:o} {}:{} {size} {:x}",
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid(),
                    hasher.finish()
                ),
            );
        }
    }
    out
}

/// Checks the `expect` lines of a pair against an exported tree: `PATH: CONTENT` (`\n` for a
/// newline; the file's last newline is not compared), `!PATH` (absent) or `PATH` (present).
fn check_expect(name: &str, expect: &str, out: &Path) {
    for line in expect.lines().filter(|l| !l.is_empty()) {
        if let Some(absent) = line.strip_prefix('!') {
            assert!(
                fs_err::symlink_metadata(out.join(absent)).is_err(),
                "{name}: {absent} should not exist"
            );
        } else if let Some((path, content)) = line.split_once(": ") {
            let got =
                fs_err::read_to_string(out.join(path)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                got.strip_suffix('\n').unwrap_or(&got),
                content.replace("\\n", "\n"),
                "{name}: {path}"
            );
        } else {
            let path = line.trim_end_matches(':');
            assert!(out.join(path).exists(), "{name}: {path} should exist");
        }
    }
}

/// Builds `file` of the pair `dir` into `out`, in a store below `work`.
fn build(work: &Path, dir: &Path, file: &str, out: &Path) {
    build_file(work, dir, &dir.join(file), out);
}

/// Builds the build file `file` with the context, build args and flags of the pair `dir`.
fn build_file(work: &Path, dir: &Path, file: &Path, out: &Path) {
    let file = file.to_string_lossy().into_owned();
    let mut args: Vec<String> = vec!["build".into(), "-f".into()];
    args.push(file.clone());
    if let Ok(text) = fs_err::read_to_string(dir.join("build-args")) {
        for line in text.lines().filter(|l| !l.is_empty()) {
            args.push(format!("--build-arg={line}"));
        }
    }
    if let Ok(text) = fs_err::read_to_string(dir.join("flags")) {
        for line in text.lines().filter(|l| !l.is_empty()) {
            args.push(line.replace("{dir}", &dir.to_string_lossy()));
        }
    }
    args.push(format!("--output=type=local,dest={}", out.display()));
    args.push(dir.to_string_lossy().into_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = kiln_in(work, &args, &[]);
    assert!(
        output.status.success(),
        "{file} of {}: {}",
        dir.display(),
        text(&output)
    );
}

#[test]
fn every_example_builds_the_file_system_of_its_dockerfile_twin() {
    if !ready() {
        return;
    }
    let mut built = Vec::new();
    for entry in fs_err::read_dir(examples()).unwrap() {
        let dir = fs_err::canonicalize(entry.unwrap().path()).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if dir.join("frontend-only").exists() {
            continue;
        }
        let work = tempfile::tempdir().unwrap();
        let (from_yaml, from_dockerfile) = (work.path().join("yaml"), work.path().join("docker"));
        for (file, out) in [("kiln.yaml", &from_yaml), ("Dockerfile", &from_dockerfile)] {
            let store = work.path().join(file);
            fs_err::create_dir_all(&store).unwrap();
            build(&store, &dir, file, out);
        }
        let yaml_tree = tree(&from_yaml);
        assert!(!yaml_tree.is_empty(), "{name}: nothing exported");
        assert_eq!(yaml_tree, tree(&from_dockerfile), "{name}");
        // `kiln yaml convert` of the Dockerfile builds the same file system again.
        let converted = work.path().join("converted.yaml");
        let output = kiln_in(
            work.path(),
            &[
                "yaml",
                "convert",
                dir.join("Dockerfile").to_str().unwrap(),
                "-o",
                converted.to_str().unwrap(),
            ],
            &[],
        );
        assert!(output.status.success(), "{name}: {}", text(&output));
        let from_converted = work.path().join("converted");
        let store = work.path().join("converted-store");
        fs_err::create_dir_all(&store).unwrap();
        build_file(&store, &dir, &converted, &from_converted);
        assert_eq!(tree(&from_converted), yaml_tree, "{name}: converted");
        let expect = fs_err::read_to_string(dir.join("expect")).unwrap();
        check_expect(&name, &expect, &from_yaml);
        built.push(name);
    }
    assert!(built.len() >= 10, "{built:?}");
}

#[test]
fn print_llb_target_build_args_and_errors_of_a_kiln_yaml() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    // Detected by its first line, whatever its name.
    let file = context.join("build.kiln");
    fs_err::write(
        &file,
        "# a kiln build\napiVersion: kiln/v1\nargs: {WORD: hi}\nstages:\n  a:\n    from: busybox\n    steps:\n      - run: [echo, a]\n  b:\n    from: busybox\n    steps:\n      - run: [echo, b]\n",
    )
    .unwrap();
    // The exec ops' argv and environment of a build with `extra` flags.
    let execs = |extra: &[&str]| -> Vec<(Vec<String>, Vec<String>)> {
        let mut args = vec!["build", "-f", file.to_str().unwrap(), "--print-llb"];
        args.extend_from_slice(extra);
        args.push(context.to_str().unwrap());
        let output = kiln_in(dir.path(), &args, &[]);
        assert!(output.status.success(), "{}", text(&output));
        let loaded = kiln_llb::LoadedDefinition::from_bytes(&output.stdout).unwrap();
        loaded
            .ops()
            .iter()
            .filter_map(|op| match op.body() {
                Some(kiln_llb::pb::op::Op::Exec(e)) => {
                    e.meta.as_ref().map(|m| (m.args.clone(), m.env.clone()))
                }
                _ => None,
            })
            .collect()
    };
    let last = execs(&[]);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].0, ["echo", "b"]);
    assert!(last[0].1.contains(&"WORD=hi".to_owned()), "{:?}", last[0].1);
    let first = execs(&["--target", "a", "--build-arg", "WORD=hello"]);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, ["echo", "a"]);
    assert!(
        first[0].1.contains(&"WORD=hello".to_owned()),
        "{:?}",
        first[0].1
    );

    fs_err::write(
        &file,
        "apiVersion: kiln/v1\nstages:\n  a:\n    form: busybox\n",
    )
    .unwrap();
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "-f",
            file.to_str().unwrap(),
            "--print-llb",
            context.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("build.kiln:4:5: unknown key \"form\" (did you mean from?)"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_context_with_a_kiln_yaml_and_no_dockerfile_builds_it_without_f() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(
        context.join("kiln.yaml"),
        "apiVersion: kiln/v1\nstages:\n  only:\n    from: busybox\n    steps:\n      - run: echo from-yaml > /made\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let build = |context: &std::path::Path| {
        kiln_in(
            dir.path(),
            &[
                "build",
                "--output",
                &format!("type=local,dest={}", out.display()),
                context.to_str().unwrap(),
            ],
            &[],
        )
    };
    let output = build(&context);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        fs_err::read_to_string(out.join("made")).unwrap(),
        "from-yaml\n"
    );
    // A Dockerfile beside it wins, as `docker build` reads CONTEXT/Dockerfile.
    fs_err::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN echo from-dockerfile > /made\n",
    )
    .unwrap();
    let output = build(&context);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        fs_err::read_to_string(out.join("made")).unwrap(),
        "from-dockerfile\n"
    );
    // Neither: the Dockerfile's error.
    let empty = dir.path().join("empty");
    fs_err::create_dir_all(&empty).unwrap();
    let output = build(&empty);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("reading the Dockerfile"),
        "{}",
        text(&output)
    );
}
