//! Trees built from arbitrary bytes, and the property every resolution over them must keep:
//! whatever it answers is inside the root, reached through real directories only, and it
//! never panics. The fuzz target `fuzz/fuzz_targets/resolve.rs` runs [`check`] on fuzzer
//! input; the test here runs it on seeded random bytes so that the property holds in every
//! test run, not only under the fuzzer.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use kiln_fsutil::{Root, overlay};

/// Names the trees use: short ones that collide often, a non-UTF-8 one, and a whiteout.
const NAMES: &[&[u8]] = &[b"a", b"b", b"c", b"\xff", b"..", b".", b".wh.a"];

/// Reads bytes one at a time, answering zero when they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A path of up to 4 names, `/`-joined, absolute or not.
    fn path(&mut self) -> Vec<u8> {
        let head = self.next();
        let mut out = Vec::new();
        if head & 0x80 != 0 {
            out.push(b'/');
        }
        for n in 0..(head % 5) {
            if n > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(NAMES[usize::from(self.next()) % NAMES.len()]);
        }
        if head & 0x40 != 0 {
            out.push(b'/');
        }
        out
    }
}

/// `path` below `layer`, or `None` when it has `..`, `.` or is empty (no tree entry there).
fn tree_path(layer: &Path, path: &[u8]) -> Option<PathBuf> {
    let rel = Path::new(OsStr::from_bytes(path));
    let mut out = layer.to_owned();
    let mut any = false;
    for component in rel.components() {
        match component {
            Component::Normal(name) => {
                out.push(name);
                any = true;
            }
            Component::RootDir => {}
            _ => return None,
        }
    }
    any.then_some(out)
}

/// Builds layers from `data`, resolves paths from the rest of it, and checks that every
/// answer stays inside the root.
pub fn check(data: &[u8]) {
    let mut bytes = Bytes(data);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let base = fs_err::canonicalize(dir.path()).expect("canonical temporary directory");
    let count = 1 + usize::from(bytes.next() % 3);
    let layers: Vec<PathBuf> = (0..count).map(|n| base.join(format!("l{n}"))).collect();
    for layer in &layers {
        fs_err::create_dir(layer).expect("a layer directory");
    }
    // A host file next to the layers that no resolution may reach.
    fs_err::write(base.join("a"), "host").expect("the host file");
    let entries = bytes.next() % 24;
    for _ in 0..entries {
        let kind = bytes.next();
        let layer = &layers[usize::from(kind >> 4) % layers.len()];
        let path = bytes.path();
        let Some(at) = tree_path(layer, &path) else {
            continue;
        };
        if let Some(parent) = at.parent() {
            // Parents through files or links fail: the entry is then just missing.
            if fs_err::create_dir_all(parent).is_err() {
                continue;
            }
        }
        let _ = match kind % 5 {
            0 => fs_err::create_dir(&at),
            1 => fs_err::write(&at, &path),
            2 | 3 => {
                let target = bytes.path();
                fs_err::os::unix::fs::symlink(OsStr::from_bytes(&target), &at)
            }
            _ => fs_err::write(at.with_file_name(overlay::OPAQUE_MARKER), ""),
        };
    }
    let roots = [Root::layered(layers.clone()), Root::new(layers[0].clone())];
    while !bytes.is_empty() {
        let query = bytes.path();
        for root in &roots {
            for follow in [true, false] {
                let Ok(resolved) = root.resolve(OsStr::from_bytes(&query), follow) else {
                    continue;
                };
                assert!(resolved.path.is_absolute(), "{resolved:?}");
                assert!(
                    resolved
                        .path
                        .components()
                        .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
                    "{resolved:?}"
                );
                let Some(entry) = resolved.entry else {
                    continue;
                };
                let inside = |host: &Path| {
                    root.layers()
                        .iter()
                        .any(|l| host == l.as_path() || host.starts_with(l))
                };
                assert!(inside(&entry.host), "{:?} left the root", entry.host);
                // Every directory on the way is a real one: no link was followed on the host.
                let parent = entry.host.parent().unwrap_or(&entry.host);
                assert_eq!(
                    fs_err::canonicalize(parent).expect("the parent exists"),
                    parent,
                    "{:?} was reached through a link",
                    entry.host
                );
                for layer in &entry.layers {
                    assert!(inside(layer), "{layer:?} left the root");
                    if entry.metadata.is_dir() {
                        assert_eq!(&fs_err::canonicalize(layer).expect("exists"), layer);
                    }
                }
            }
        }
    }
}

#[test]
fn random_trees_never_leave_the_root() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..300 {
        let len = rng.usize(0..400);
        let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        check(&data);
    }
}
