//! The package databases kiln reads in an image, each parser taking the database's bytes and
//! answering its packages: dpkg's `status` (and distroless `status.d/` files), apk's
//! `installed`, Python's `*.dist-info/METADATA` and `*.egg-info/PKG-INFO`, npm's `package.json`
//! under `node_modules`, and cargo's `.crates.toml` / `.crates2.json` of `cargo install`.
//! RPM databases are read in `rpm.rs`, the data built into binaries in `binary.rs` (and Go's
//! in `golang.rs`).
//!
//! A parser never fails: an entry it cannot read is left out with a warning naming the file,
//! as syft skips what it cannot parse.

use std::collections::BTreeMap;

/// An ecosystem a package comes from, with its purl type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Ecosystem {
    /// Debian packages (`pkg:deb`).
    Deb,
    /// Alpine packages (`pkg:apk`).
    Apk,
    /// Python distributions (`pkg:pypi`).
    Python,
    /// npm packages (`pkg:npm`).
    Npm,
    /// Crates installed with `cargo install` (`pkg:cargo`).
    Cargo,
    /// Crates built into a Rust binary, from its `cargo auditable` data (`pkg:cargo`).
    RustBinary,
    /// RPM packages (`pkg:rpm`).
    Rpm,
    /// Go modules built into a Go binary, from its build information (`pkg:golang`).
    GoModule,
}

impl Ecosystem {
    /// How the SPDX document names where a package was found (syft's words).
    pub(crate) fn source(self) -> &'static str {
        match self {
            Self::Deb => "DPKG DB",
            Self::Apk => "APK DB",
            Self::Python => "installed python package manifest file",
            Self::Npm => "installed node module manifest file",
            Self::Cargo => "cargo install manifest file",
            Self::RustBinary => "cargo auditable binary",
            Self::Rpm => "RPM DB",
            Self::GoModule => "go module binary",
        }
    }

    /// A short name for SPDX ids.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Self::Deb => "deb",
            Self::Apk => "apk",
            Self::Python => "python",
            Self::Npm => "npm",
            Self::Cargo => "cargo",
            Self::RustBinary => "rust-binary",
            Self::Rpm => "rpm",
            Self::GoModule => "go-module",
        }
    }
}

/// One package found in an image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Package {
    /// Its ecosystem.
    pub(crate) ecosystem: Ecosystem,
    /// Its name.
    pub(crate) name: String,
    /// Its version (an RPM's `EPOCH:VERSION-RELEASE`, as syft writes it).
    pub(crate) version: String,
    /// Its architecture, when the database says (`amd64`, `x86_64`).
    pub(crate) arch: Option<String>,
    /// The source package (dpkg `Source`, apk origin, the RPM's source RPM), when it differs.
    pub(crate) source: Option<String>,
    /// The maintainer or author, as the database writes it.
    pub(crate) supplier: Option<String>,
    /// Its home page.
    pub(crate) homepage: Option<String>,
    /// The file it was read from (a container path).
    pub(crate) location: String,
}

impl Package {
    /// A package with no optional field set.
    pub(crate) fn new(ecosystem: Ecosystem, name: &str, version: &str, location: &str) -> Self {
        Self {
            ecosystem,
            name: name.to_owned(),
            version: version.to_owned(),
            arch: None,
            source: None,
            supplier: None,
            homepage: None,
            location: location.to_owned(),
        }
    }
}

/// Warns that an entry of `location` was left out.
pub(crate) fn skipped(location: &str, what: &str) {
    tracing::warn!(file = location, "SBOM: left out {what}");
}

/// The paragraphs of a Debian control file (dpkg `status`), each a map of its fields
/// (continuation lines joined); `None` for one that is not `Key: value` lines.
fn paragraphs(text: &str) -> Vec<Option<BTreeMap<String, String>>> {
    let mut out = Vec::new();
    let mut current: Option<BTreeMap<String, String>> = Some(BTreeMap::new());
    let mut last_key: Option<String> = None;
    let mut any = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            if any {
                out.push(current.take());
            }
            current = Some(BTreeMap::new());
            last_key = None;
            any = false;
            continue;
        }
        any = true;
        let Some(fields) = current.as_mut() else {
            continue;
        };
        if line.starts_with([' ', '\t']) {
            if let Some(value) = last_key.as_ref().and_then(|k| fields.get_mut(k)) {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        match line.split_once(':') {
            Some((key, value)) if !key.is_empty() && !key.contains(' ') => {
                fields.insert(key.to_owned(), value.trim().to_owned());
                last_key = Some(key.to_owned());
            }
            _ => current = None,
        }
    }
    if any {
        out.push(current);
    }
    out
}

/// dpkg's `status` (or one `status.d/` file): the installed packages.
pub(crate) fn dpkg(text: &str, location: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for paragraph in paragraphs(text) {
        let Some(fields) = paragraph else {
            skipped(location, "a paragraph that is not `Field: value` lines");
            continue;
        };
        // A package removed but with its configuration left is not installed; distroless
        // `status.d` files have no Status at all.
        if fields
            .get("Status")
            .is_some_and(|s| !s.split_whitespace().any(|w| w == "installed"))
        {
            continue;
        }
        let (Some(name), Some(version)) = (fields.get("Package"), fields.get("Version")) else {
            skipped(location, "a package without Package or Version");
            continue;
        };
        let mut package = Package::new(Ecosystem::Deb, name, version, location);
        package.arch = fields.get("Architecture").cloned();
        // `Source: name (version)`: the name.
        package.source = fields
            .get("Source")
            .and_then(|s| s.split_whitespace().next())
            .filter(|s| *s != name)
            .map(str::to_owned);
        package.supplier = fields.get("Maintainer").cloned();
        package.homepage = fields.get("Homepage").cloned();
        out.push(package);
    }
    out
}

/// apk's `installed` database: `P:` name, `V:` version, `A:` architecture, `o:` origin,
/// `m:` maintainer, `U:` URL; packages separated by blank lines.
pub(crate) fn apk(text: &str, location: &str) -> Vec<Package> {
    let mut out = Vec::new();
    let mut fields: BTreeMap<char, String> = BTreeMap::new();
    let mut flush = |fields: &mut BTreeMap<char, String>| {
        if fields.is_empty() {
            return;
        }
        match (fields.get(&'P'), fields.get(&'V')) {
            (Some(name), Some(version)) => {
                let mut package = Package::new(Ecosystem::Apk, name, version, location);
                package.arch = fields.get(&'A').cloned();
                package.source = fields.get(&'o').filter(|o| *o != name).cloned();
                package.supplier = fields.get(&'m').cloned();
                package.homepage = fields.get(&'U').cloned();
                out.push(package);
            }
            _ => skipped(location, "a package without P: or V:"),
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut fields);
            continue;
        }
        let mut chars = line.chars();
        if let (Some(key), Some(':')) = (chars.next(), chars.next()) {
            // The first of a repeated key (files `F:`/`R:` repeat; they are not read).
            fields
                .entry(key)
                .or_insert_with(|| chars.as_str().to_owned());
        }
    }
    flush(&mut fields);
    out
}

/// A Python distribution's `METADATA` or `PKG-INFO` (email-header form): `Name`, `Version`,
/// `Author`, `Home-page`.
pub(crate) fn python(text: &str, location: &str) -> Option<Package> {
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for line in text.lines() {
        // The headers end at the first blank line; the description follows.
        if line.is_empty() {
            break;
        }
        if let Some((key, value)) = line.split_once(": ") {
            fields.entry(key).or_insert(value.trim());
        }
    }
    let (Some(name), Some(version)) = (fields.get("Name"), fields.get("Version")) else {
        skipped(location, "a distribution without Name or Version");
        return None;
    };
    let mut package = Package::new(Ecosystem::Python, name, version, location);
    package.supplier = fields.get("Author").map(|s| (*s).to_owned());
    package.homepage = fields.get("Home-page").map(|s| (*s).to_owned());
    Some(package)
}

/// An npm package's `package.json`: `name`, `version`, `author`, `homepage`.
pub(crate) fn npm(bytes: &[u8], location: &str) -> Option<Package> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        name: Option<String>,
        version: Option<String>,
        homepage: Option<serde_json::Value>,
        author: Option<serde_json::Value>,
    }
    let manifest: Manifest = match serde_json::from_slice(bytes) {
        Ok(manifest) => manifest,
        Err(error) => {
            tracing::warn!(file = location, %error, "SBOM: left out a package.json that is not JSON");
            return None;
        }
    };
    let (Some(name), Some(version)) = (manifest.name, manifest.version) else {
        skipped(location, "a package.json without name or version");
        return None;
    };
    let mut package = Package::new(Ecosystem::Npm, &name, &version, location);
    package.homepage = manifest
        .homepage
        .and_then(|h| h.as_str().map(str::to_owned));
    package.supplier = manifest.author.and_then(|a| match a {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Object(o) => o.get("name").and_then(|n| n.as_str().map(str::to_owned)),
        _ => None,
    });
    Some(package)
}

/// A `cargo install` record's key: `NAME VERSION (SOURCE)`.
fn cargo_key(key: &str, location: &str) -> Option<Package> {
    let mut parts = key.split_whitespace();
    let (Some(name), Some(version)) = (parts.next(), parts.next()) else {
        skipped(
            location,
            "a cargo install record that is not `NAME VERSION (SOURCE)`",
        );
        return None;
    };
    Some(Package::new(Ecosystem::Cargo, name, version, location))
}

/// cargo's `.crates.toml` (`[v1]` keys) or `.crates2.json` (`installs` keys): the crates
/// `cargo install` put in that cargo home.
pub(crate) fn cargo(bytes: &[u8], location: &str) -> Vec<Package> {
    let keys: Vec<String> = if location.ends_with(".json") {
        #[derive(serde::Deserialize)]
        struct Crates2 {
            #[serde(default)]
            installs: BTreeMap<String, serde_json::Value>,
        }
        match serde_json::from_slice::<Crates2>(bytes) {
            Ok(crates) => crates.installs.into_keys().collect(),
            Err(error) => {
                tracing::warn!(file = location, %error, "SBOM: left out a .crates2.json that is not JSON");
                return Vec::new();
            }
        }
    } else {
        let text = String::from_utf8_lossy(bytes);
        match text.parse::<toml::Table>() {
            Ok(table) => table
                .get("v1")
                .and_then(toml::Value::as_table)
                .map(|v1| v1.keys().cloned().collect())
                .unwrap_or_default(),
            Err(error) => {
                tracing::warn!(file = location, %error, "SBOM: left out a .crates.toml that is not TOML");
                return Vec::new();
            }
        }
    };
    keys.iter().filter_map(|k| cargo_key(k, location)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_gives_installed_packages_only() {
        let status = "\
Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b2
Maintainer: Matthias Klose <doko@debian.org>
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter.
Homepage: http://tiswww.case.edu/php/chet/bash/bashtop.html

Package: gone
Status: deinstall ok config-files
Version: 1

Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u4

this is not a field
";
        let packages = dpkg(status, "/var/lib/dpkg/status");
        let names: Vec<(&str, &str)> = packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            names,
            [("bash", "5.2.15-2+b2"), ("libc6", "2.36-9+deb12u4")]
        );
        assert_eq!(packages[0].arch.as_deref(), Some("amd64"));
        assert_eq!(packages[1].source.as_deref(), Some("glibc"));
    }

    #[test]
    fn apk_installed_and_the_others() {
        let installed = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\no:musl\nF:lib\nR:ld-musl-x86_64.so.1\n\nP:busybox\nV:1.36.1-r15\nA:x86_64\n\nV:no-name\n";
        let packages = apk(installed, "/lib/apk/db/installed");
        let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["musl", "busybox"]);
        assert_eq!(packages[0].source, None);

        let metadata =
            "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\n\nName: not-a-header\n";
        let package = python(metadata, "/x/METADATA").unwrap();
        assert_eq!(
            (package.name.as_str(), package.version.as_str()),
            ("requests", "2.31.0")
        );
        assert!(python("garbage", "/x/METADATA").is_none());

        let json = br#"{"name":"@types/node","version":"20.1.0","author":{"name":"A"}}"#;
        let package = npm(json, "/node_modules/@types/node/package.json").unwrap();
        assert_eq!(package.supplier.as_deref(), Some("A"));
        assert!(npm(b"{", "/p/package.json").is_none());

        let crates = br#"{"installs":{"ripgrep 14.1.0 (registry+https://github.com/rust-lang/crates.io-index)":{}}}"#;
        let packages = cargo(crates, "/usr/local/cargo/.crates2.json");
        assert_eq!(packages[0].name, "ripgrep");
        let toml = b"[v1]\n\"fd-find 9.0.0 (registry+https://github.com/rust-lang/crates.io-index)\" = [\"fd\"]\n";
        assert_eq!(cargo(toml, "/root/.cargo/.crates.toml")[0].version, "9.0.0");
    }
}
