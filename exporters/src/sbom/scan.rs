//! Finds the package databases in an image's file system and reads them (`catalog.rs`,
//! `rpm.rs`), and the executables of its binary directories (`binary.rs`).
//!
//! The tree is walked once, without following symbolic links (a link is never a directory
//! to enter), skipping `/proc`, `/sys` and `/dev`; every file is read through the image's
//! [`Root`], so a link inside the image resolves inside it and never reaches the host. A
//! database larger than [`MAX_DATABASE_BYTES`] is left out with a warning, and so are the
//! executables past the first [`binary::MAX_BINARIES`].

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use kiln_fsutil::Root;

use super::catalog::{self, Package};
use super::{binary, rpm};

/// The largest package database read (a Debian system's `status` is a few MiB).
pub(crate) const MAX_DATABASE_BYTES: u64 = 64 << 20;

/// The most directory entries looked at in one image.
const MAX_ENTRIES: usize = 4_000_000;

/// What a scan found.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scan {
    /// The packages, sorted, each once.
    pub(crate) packages: Vec<Package>,
    /// `/etc/os-release`'s `ID` and `VERSION_ID` (`debian`, `12`).
    pub(crate) distro: Option<(String, String)>,
}

/// Reads the regular file at container path `path` through `root`, at most `max` bytes;
/// `None` (with a warning for a larger one) when it is missing, no regular file, or larger.
pub(crate) fn read_capped(root: &Root, path: &str, max: u64) -> Option<Vec<u8>> {
    let resolved = root.resolve(path, true).ok()?;
    let entry = resolved.entry?;
    if !entry.metadata.is_file() {
        return None;
    }
    if entry.metadata.len() > max {
        tracing::warn!(
            file = path,
            size = entry.metadata.len(),
            "SBOM: left out a file larger than {max} bytes"
        );
        return None;
    }
    match root.read_file(path) {
        Ok(bytes) => bytes.filter(|b| b.len() as u64 <= max),
        Err(error) => {
            tracing::warn!(file = path, %error, "SBOM: could not read");
            None
        }
    }
}

/// A database's parser: its bytes and container path in, its packages out.
type Parser = fn(&[u8], &str) -> Vec<Package>;

/// The parser of the database a container path is, if it is one.
fn database(path: &Path) -> Option<Parser> {
    let name = path.file_name().and_then(OsStr::to_str)?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let parent_name = parent.file_name().and_then(OsStr::to_str).unwrap_or("");
    let grandparent = parent.parent().unwrap_or(Path::new("/"));
    let grandparent_name = grandparent
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or("");
    if path == Path::new("/var/lib/dpkg/status")
        || (parent == Path::new("/var/lib/dpkg/status.d") && !name.ends_with(".md5sums"))
    {
        return Some(|bytes, location| catalog::dpkg(&String::from_utf8_lossy(bytes), location));
    }
    if path == Path::new("/lib/apk/db/installed") {
        return Some(|bytes, location| catalog::apk(&String::from_utf8_lossy(bytes), location));
    }
    if (name == "METADATA" && parent_name.ends_with(".dist-info"))
        || (name == "PKG-INFO" && parent_name.ends_with(".egg-info"))
    {
        return Some(|bytes, location| {
            catalog::python(&String::from_utf8_lossy(bytes), location)
                .into_iter()
                .collect()
        });
    }
    let in_node_modules = grandparent_name == "node_modules"
        || (grandparent_name.starts_with('@')
            && grandparent.parent().and_then(Path::file_name) == Some(OsStr::new("node_modules")));
    if name == "package.json" && in_node_modules {
        return Some(|bytes, location| catalog::npm(bytes, location).into_iter().collect());
    }
    if name == ".crates.toml" || name == ".crates2.json" {
        return Some(catalog::cargo);
    }
    None
}

/// `ID` and `VERSION_ID` of an os-release file.
fn os_release(text: &str) -> Option<(String, String)> {
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().trim_matches(['"', '\'']).to_owned())
    };
    Some((value("ID")?, value("VERSION_ID").unwrap_or_default()))
}

/// Scans the image file system whose root is the host directory `dir`.
pub(crate) fn scan(dir: &Path) -> Scan {
    let root = Root::new(dir);
    let mut found: Vec<PathBuf> = Vec::new();
    let mut binaries: Vec<PathBuf> = Vec::new();
    let mut stack = vec![PathBuf::from("/")];
    let mut seen = 0usize;
    while let Some(container) = stack.pop() {
        // The directory on the host, reached through the root (never following a link).
        let Ok(resolved) = root.resolve(&container, false) else {
            continue;
        };
        let Some(entry) = resolved.entry.filter(|e| e.metadata.is_dir()) else {
            continue;
        };
        let Ok(entries) = fs_err::read_dir(&entry.host) else {
            continue;
        };
        for dirent in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                tracing::warn!("SBOM: stopped after {MAX_ENTRIES} files");
                stack.clear();
                break;
            }
            let Ok(kind) = dirent.file_type() else {
                continue;
            };
            let path = container.join(dirent.file_name());
            if kind.is_dir() {
                if !["/proc", "/sys", "/dev"]
                    .iter()
                    .any(|p| path == Path::new(p))
                {
                    stack.push(path);
                }
            } else if kind.is_file() {
                if database(&path).is_some() || rpm::is_database(&path) {
                    found.push(path);
                } else if binary::is_candidate(&path) {
                    if binaries.len() < binary::MAX_BINARIES {
                        binaries.push(path);
                    } else if binaries.len() == binary::MAX_BINARIES {
                        tracing::warn!(
                            "SBOM: read the first {} executables only",
                            binary::MAX_BINARIES
                        );
                        binaries.push(path);
                    }
                }
            }
        }
    }
    found.sort();
    binaries.truncate(binary::MAX_BINARIES);
    binaries.sort();
    let mut packages = Vec::new();
    for path in found {
        let Some(location) = path.to_str() else {
            continue;
        };
        if rpm::is_database(&path) {
            packages.extend(rpm::packages(&root, location));
        } else if let Some(parse) = database(&path)
            && let Some(bytes) = read_capped(&root, location, MAX_DATABASE_BYTES)
        {
            packages.extend(parse(&bytes, location));
        }
    }
    for location in binaries.iter().filter_map(|p| p.to_str()) {
        packages.extend(binary::packages(&root, location));
    }
    packages.sort();
    packages.dedup_by(|a, b| {
        a.ecosystem == b.ecosystem && a.name == b.name && a.version == b.version && a.arch == b.arch
    });
    let distro = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| read_capped(&root, p, 1 << 16))
        .and_then(|bytes| os_release(&String::from_utf8_lossy(&bytes)));
    Scan { packages, distro }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, path: &str, text: &str) {
        let host = dir.join(path.trim_start_matches('/'));
        fs_err::create_dir_all(host.parent().unwrap()).unwrap();
        fs_err::write(host, text).unwrap();
    }

    #[test]
    fn databases_are_found_and_links_stay_inside_the_image() {
        let image = tempfile::tempdir().unwrap();
        let dir = image.path();
        write(dir, "/etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
        write(
            dir,
            "/var/lib/dpkg/status",
            "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\nArchitecture: amd64\n",
        );
        write(
            dir,
            "/usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
            "Name: six\nVersion: 1.16.0\n",
        );
        write(
            dir,
            "/app/node_modules/@scope/left-pad/package.json",
            r#"{"name":"@scope/left-pad","version":"1.3.0"}"#,
        );
        // A package.json outside node_modules is the app, not a dependency.
        write(
            dir,
            "/app/package.json",
            r#"{"name":"app","version":"0.0.1"}"#,
        );
        // An apk database that is a link to the host's: read inside the image (missing).
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "/installed", "P:host\nV:1\n");
        fs_err::create_dir_all(dir.join("lib/apk/db")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("installed"),
            dir.join("lib/apk/db/installed"),
        )
        .unwrap();
        // A directory link is not entered.
        std::os::unix::fs::symlink(outside.path(), dir.join("hostdir")).unwrap();
        let scan = scan(dir);
        let names: Vec<&str> = scan.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bash", "six", "@scope/left-pad"]);
        assert_eq!(scan.distro, Some(("debian".to_owned(), "12".to_owned())));
    }

    #[test]
    fn rpm_databases_and_binaries_are_found_once_each() {
        let image = tempfile::tempdir().unwrap();
        let dir = image.path();
        let sbom = kiln_testdata::sbom_dir();
        // Fedora's layout: the database in /usr/lib/sysimage, /var/lib/rpm a link to it.
        fs_err::create_dir_all(dir.join("usr/lib/sysimage/rpm")).unwrap();
        fs_err::copy(
            sbom.join("rpmdb.sqlite"),
            dir.join("usr/lib/sysimage/rpm/rpmdb.sqlite"),
        )
        .unwrap();
        fs_err::create_dir_all(dir.join("var/lib")).unwrap();
        std::os::unix::fs::symlink("../../usr/lib/sysimage/rpm", dir.join("var/lib/rpm")).unwrap();
        // The binary where binaries are, and where they are not looked for.
        for path in ["usr/local/bin/hello", "usr/share/doc/hello"] {
            fs_err::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
            fs_err::copy(sbom.join("hello-auditable"), dir.join(path)).unwrap();
        }
        // A binary that is a link to a host file: read inside the image (missing).
        let outside = tempfile::tempdir().unwrap();
        fs_err::copy(sbom.join("hello-auditable"), outside.path().join("hello")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("hello"),
            dir.join("usr/local/bin/linked"),
        )
        .unwrap();
        let scan = scan(dir);
        let found: Vec<(&str, &str, &str)> = scan
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.location.as_str()))
            .collect();
        let rpmdb = "/usr/lib/sysimage/rpm/rpmdb.sqlite";
        assert_eq!(
            found,
            [
                ("hello-auditable", "0.1.0", "/usr/local/bin/hello"),
                ("itoa", "1.0.11", "/usr/local/bin/hello"),
                ("hello-kiln", "1.2.3-4", rpmdb),
                ("tool-kiln", "2:0.9-1.fc40", rpmdb),
            ]
        );
    }
}
