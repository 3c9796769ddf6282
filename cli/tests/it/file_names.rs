//! `kiln build` end to end with file names that are not UTF-8: a name is bytes on Linux, and
//! one a build context holds comes out of every export byte for byte, and counts for the cache
//! as the bytes it is.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use crate::common::{kiln_in, ready, text};

fn name(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// Builds the context `DIR/ctx` with `--output OUTPUT`.
fn build_context(dir: &Path, output: &str) -> std::process::Output {
    let context = dir.join("ctx");
    let context = context.to_str().unwrap();
    kiln_in(
        dir,
        &["build", "--progress=plain", "--output", output, context],
        &[],
    )
}

/// A path's bytes, shown with `\xNN` escapes (distinct bytes stay distinct).
fn shown(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// The paths (escaped, see [`shown`]) and contents of the files below `dir`, directories
/// ending in `/`.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        for entry in fs_err::read_dir(dir.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let child = rel.join(entry.file_name());
            let key = shown(child.as_os_str().as_bytes());
            if entry.file_type().unwrap().is_dir() {
                out.insert(format!("{key}/"), String::new());
                pending.push(child);
            } else {
                let content = fs_err::read_to_string(dir.join(&child)).unwrap();
                out.insert(key, content);
            }
        }
    }
    out
}

/// The entries of a tar stream: path bytes as the archive holds them (escaped, see [`shown`];
/// directories ending in `/`) to content.
fn tar_entries(data: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut path = shown(&entry.path_bytes());
        if entry.header().entry_type().is_dir() && !path.ends_with('/') {
            path.push('/');
        }
        let mut content = String::new();
        entry.read_to_string(&mut content).unwrap();
        out.insert(path, content);
    }
    out
}

/// The files of a tar stream, as [`tar_entries`], their content as bytes.
fn tar_blobs(data: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        out.insert(shown(&entry.path_bytes()), content);
    }
    out
}

/// The entries of the layers of the only image in an OCI layout tar, later layers over
/// earlier ones (the layers here add files only).
fn oci_layer_entries(file: &Path) -> BTreeMap<String, String> {
    let layout = tar_blobs(&fs_err::read(file).unwrap());
    let blob = |digest: &serde_json::Value| {
        let digest = digest.as_str().unwrap().replacen(':', "/", 1);
        layout[&format!("blobs/{digest}")].clone()
    };
    let index: serde_json::Value = serde_json::from_slice(&layout["index.json"]).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(&index["manifests"][0]["digest"])).unwrap();
    let mut merged = BTreeMap::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let mut plain = Vec::new();
        kiln_cache::decompress(blob(&layer["digest"]).as_slice())
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        merged.extend(tar_entries(&plain));
    }
    merged
}

#[test]
fn context_names_that_are_not_utf8_come_out_of_every_export_byte_for_byte() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(context.join(name(b"d\xff"))).unwrap();
    fs_err::write(context.join(name(b"caf\xe9.txt")), "latin-1").unwrap();
    fs_err::write(context.join(name(b"d\xff/x\xfe")), "below").unwrap();
    fs_err::write(context.join(name(b"skip\xe9")), "ignored").unwrap();
    fs_err::write(context.join(".dockerignore"), "skip?\n").unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY . /\nCOPY caf?.txt /wild/\n",
    )
    .unwrap();

    let wanted: BTreeMap<String, String> = [
        (&b".dockerignore"[..], "skip?\n"),
        (
            b"Dockerfile",
            "FROM scratch\nCOPY . /\nCOPY caf?.txt /wild/\n",
        ),
        (b"caf\xe9.txt", "latin-1"),
        (b"d\xff/", ""),
        (b"d\xff/x\xfe", "below"),
        (b"wild/", ""),
        (b"wild/caf\xe9.txt", "latin-1"),
    ]
    .into_iter()
    .map(|(k, v)| (shown(k), v.to_owned()))
    .collect();

    let local = dir.path().join("local");
    let out = build_context(dir.path(), &format!("type=local,dest={}", local.display()));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(tree(&local), wanted);

    let oci = dir.path().join("image.tar");
    let out = build_context(dir.path(), &format!("type=oci,dest={}", oci.display()));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(oci_layer_entries(&oci), wanted);

    let plain = dir.path().join("files.tar");
    let out = build_context(dir.path(), &format!("type=tar,dest={}", plain.display()));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(tar_entries(&fs_err::read(&plain).unwrap()), wanted);
}

#[test]
fn renaming_a_context_file_to_another_name_that_is_not_utf8_misses_the_cache() {
    if !ready() {
        return;
    }
    // `a\xff` and `a\xfe` are the same name after a lossy conversion to UTF-8 (`a\u{fffd}`).
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(context.join("Dockerfile"), "FROM scratch\nCOPY a* /\n").unwrap();
    fs_err::write(context.join(name(b"a\xff")), "same content").unwrap();
    let first = dir.path().join("first");
    let out = build_context(dir.path(), &format!("type=local,dest={}", first.display()));
    assert!(out.status.success(), "{}", text(&out));

    fs_err::rename(context.join(name(b"a\xff")), context.join(name(b"a\xfe"))).unwrap();
    let second = dir.path().join("second");
    let out = build_context(dir.path(), &format!("type=local,dest={}", second.display()));
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(
        !log.contains("CACHED"),
        "the renamed file must run the copy again: {log}"
    );
    let names = |dir: &Path| -> Vec<String> { tree(dir).into_keys().collect() };
    assert_eq!(names(&first), ["a\\xff"]);
    assert_eq!(names(&second), ["a\\xfe"]);
}
