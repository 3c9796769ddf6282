//! SBOM attestations (`--sbom`): an SPDX 2.3 JSON document of the packages in an image,
//! made by kiln from the image's package databases, in an in-toto statement of predicate type
//! `https://spdx.dev/Document`, as BuildKit's SBOM generator attaches it.
//!
//! # Overview
//! 1. The image's file system (its snapshot, mounted read-only) is scanned
//!    ([`scan::scan`]): dpkg, apk, Python dist-info/egg-info, npm `node_modules`, and cargo's
//!    `cargo install` records (`catalog.rs`), rpm's SQLite database (`rpm.rs`), and the
//!    `cargo auditable` data and Go build information of the executables in the binary
//!    directories (`binary.rs`, `golang.rs`), all read through the image's root, every size
//!    and count bounded.
//! 2. The base image (the topmost layer of the chain that is a stored image's) is scanned too:
//!    a package it has, same name, version and architecture, is attributed to it (a
//!    `CONTAINS` relationship from the base image's package, the image `DESCENDANT_OF` it).
//! 3. The document: one package for the image (`pkg:docker` purl), one for the base image,
//!    one per package found with its purl (`pkg:deb/debian/bash@…?arch=amd64&distro=debian-12`,
//!    `pkg:apk/alpine/…`, `pkg:rpm/fedora/…?arch=x86_64&distro=fedora-40&epoch=2`,
//!    `pkg:pypi/…`, `pkg:npm/…`, `pkg:cargo/…`, `pkg:golang/…`), `DESCRIBES` and
//!    `CONTAINS` relationships. Packages only, no files (as syft's package-level catalog).

mod binary;
mod catalog;
mod golang;
mod rpm;
mod scan;

use kiln_cache::{Digest, Store};
use kiln_llb::Platform;
use serde_json::{Value, json};

use crate::error::Error;
use crate::provenance::docker_purl;
use catalog::{Ecosystem, Package};
use scan::Scan;

/// The predicate type of an SPDX document.
pub const PREDICATE_TYPE_SPDX: &str = "https://spdx.dev/Document";

/// The image an SBOM describes.
pub(crate) struct Subject<'a> {
    /// The output's names.
    pub(crate) names: &'a [String],
    /// Its platform.
    pub(crate) platform: &'a Platform,
    /// Its manifest digest.
    pub(crate) digest: &'a Digest,
    /// The document's creation time (seconds since 1970).
    pub(crate) created: i64,
}

/// The base image of a snapshot chain: the topmost key that is a stored image's chain, with
/// that image's name and manifest digest.
fn base_image(store: &Store, keys: &[String]) -> Result<Option<(String, String, Digest)>, Error> {
    let images = store.images()?;
    for key in keys.iter().rev() {
        if let Some(image) = images
            .iter()
            .find(|i| i.chain_id.is_some_and(|c| c.to_string() == *key))
        {
            return Ok(Some((key.clone(), image.name.clone(), image.manifest)));
        }
    }
    Ok(None)
}

/// Scans the snapshot `key` (`None`: the empty file system).
fn scan_snapshot(store: &Store, key: Option<&str>) -> Result<Scan, Error> {
    Ok(store.with_snapshot(key, scan::scan)?)
}

/// The SPDX document of the image whose snapshot chain is `keys` (bottom first).
pub(crate) fn sbom_predicate(
    store: &Store,
    keys: &[String],
    subject: &Subject<'_>,
) -> Result<Value, Error> {
    let image = scan_snapshot(store, keys.last().map(String::as_str))?;
    let base = match base_image(store, keys)? {
        Some((key, name, digest)) => Some((scan_snapshot(store, Some(&key))?, name, digest)),
        None => None,
    };
    Ok(document(&image, base.as_ref(), subject))
}

/// Percent-encodes a purl segment as Go's `url.PathEscape` does (what BuildKit's and syft's
/// purls go through).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~$&+:=@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The package URL of a package found in an image with `distro` (os-release's `ID`,
/// `VERSION_ID`).
fn purl(package: &Package, distro: Option<&(String, String)>) -> String {
    let name = escape(&package.name);
    let version = escape(&package.version);
    match package.ecosystem {
        Ecosystem::Deb | Ecosystem::Apk | Ecosystem::Rpm => {
            // A distribution's package: its namespace is the distribution; an RPM's
            // `EPOCH:VERSION-RELEASE` has its epoch as a qualifier.
            let (kind, default, epoch, version) = match package.ecosystem {
                Ecosystem::Deb => ("deb", Some("debian"), None, version),
                Ecosystem::Apk => ("apk", Some("alpine"), None, version),
                _ => match package.version.split_once(':') {
                    Some((epoch, version)) => ("rpm", None, Some(epoch), escape(version)),
                    None => ("rpm", None, None, version),
                },
            };
            let mut qualifiers = Vec::new();
            if let Some(arch) = &package.arch {
                qualifiers.push(format!("arch={}", escape(arch)));
            }
            if let Some((id, version_id)) = distro {
                qualifiers.push(format!("distro={}", escape(&format!("{id}-{version_id}"))));
            }
            if let Some(epoch) = epoch {
                qualifiers.push(format!("epoch={}", escape(epoch)));
            }
            if let Some(source) = &package.source {
                qualifiers.push(format!("upstream={}", escape(source)));
            }
            let namespace = distro
                .map(|(id, _)| id.as_str())
                .or(default)
                .map(|id| format!("{}/", escape(id)))
                .unwrap_or_default();
            let base = format!("pkg:{kind}/{namespace}{name}@{version}");
            if qualifiers.is_empty() {
                base
            } else {
                format!("{base}?{}", qualifiers.join("&"))
            }
        }
        Ecosystem::Python => {
            // PEP 503 normalization, as the purl spec asks for pypi names.
            let name: String = package
                .name
                .to_lowercase()
                .chars()
                .map(|c| if c == '_' || c == '.' { '-' } else { c })
                .collect();
            format!("pkg:pypi/{}@{version}", escape(&name))
        }
        Ecosystem::Npm => match package
            .name
            .strip_prefix('@')
            .and_then(|n| n.split_once('/'))
        {
            Some((scope, name)) => {
                format!("pkg:npm/%40{}/{}@{version}", escape(scope), escape(name))
            }
            None => format!("pkg:npm/{name}@{version}"),
        },
        Ecosystem::Cargo | Ecosystem::RustBinary => format!("pkg:cargo/{name}@{version}"),
        Ecosystem::GoModule => {
            // The module path's segments are the namespace and name; the standard library's
            // version is Go's without its `go`.
            let path: Vec<String> = package.name.split('/').map(escape).collect();
            let version = match package.name.as_str() {
                "stdlib" => escape(package.version.trim_start_matches("go")),
                _ => version,
            };
            format!("pkg:golang/{}@{version}", path.join("/"))
        }
    }
}

/// An SPDX id of letters, digits, `.` and `-`.
fn spdx_id(parts: &[&str]) -> String {
    let joined = parts.join("-");
    let safe: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{safe}")
}

/// An SPDX package entry of an image (`pkg:docker` purl, its manifest digest).
fn image_package(id: &str, name: &str, digest: &Digest, platform: Option<&Platform>) -> Value {
    let purl = docker_purl(name.split('@').next().unwrap_or(name), platform);
    json!({
        "SPDXID": id,
        "name": name,
        "versionInfo": digest.to_string(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{ "algorithm": "SHA256", "checksumValue": digest.hex() }],
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": purl,
        }],
    })
}

/// The SPDX document of `image`'s packages, those of `base` (its scan, name and digest)
/// attributed to it.
fn document(image: &Scan, base: Option<&(Scan, String, Digest)>, subject: &Subject<'_>) -> Value {
    let name = subject.names.first().map_or("image", String::as_str);
    let mut packages = vec![image_package(
        "SPDXRef-Image",
        name,
        subject.digest,
        Some(subject.platform),
    )];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    if let Some((_, base_name, base_digest)) = base {
        packages.push(image_package(
            "SPDXRef-BaseImage",
            base_name,
            base_digest,
            Some(subject.platform),
        ));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "DESCENDANT_OF",
            "relatedSpdxElement": "SPDXRef-BaseImage",
        }));
    }
    for (position, package) in image.packages.iter().enumerate() {
        let id = spdx_id(&[
            "Package",
            package.ecosystem.tag(),
            &package.name,
            &position.to_string(),
        ]);
        let from_base = base.is_some_and(|(scan, _, _)| scan.packages.contains(package));
        let mut entry = json!({
            "SPDXID": id,
            "name": package.name,
            "versionInfo": package.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!(
                "acquired package info from {}: {}",
                package.ecosystem.source(),
                package.location
            ),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(package, image.distro.as_ref()),
            }],
        });
        if let Some(supplier) = &package.supplier {
            // SPDX's agent form: `Person: NAME (EMAIL)`.
            let supplier = supplier.replace('<', "(").replace('>', ")");
            entry["supplier"] = format!("Person: {supplier}").into();
        }
        if let Some(homepage) = package.homepage.as_ref().filter(|h| h.starts_with("http")) {
            entry["homepage"] = homepage.clone().into();
        }
        if from_base {
            entry["comment"] = format!("from the base image {}", base.map_or("", |b| &b.1)).into();
            relationships.push(json!({
                "spdxElementId": "SPDXRef-BaseImage",
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": id,
            }));
        }
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
        packages.push(entry);
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/kiln-{}-{}",
            escape(name).replace(['/', ':', '@'], "-"),
            subject.digest.hex()
        ),
        "creationInfo": {
            "creators": [format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
            "created": crate::image::rfc3339(subject.created),
        },
        "documentDescribes": ["SPDXRef-Image"],
        "packages": packages,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(ecosystem: Ecosystem, name: &str, version: &str) -> Package {
        Package::new(ecosystem, name, version, "/x")
    }

    #[test]
    fn purls_as_syft_writes_them() {
        let debian = Some(("debian".to_owned(), "12".to_owned()));
        let mut bash = package(Ecosystem::Deb, "bash", "5.2.15-2+b2");
        bash.arch = Some("amd64".to_owned());
        assert_eq!(
            purl(&bash, debian.as_ref()),
            "pkg:deb/debian/bash@5.2.15-2+b2?arch=amd64&distro=debian-12"
        );
        let alpine = Some(("alpine".to_owned(), "3.19.1".to_owned()));
        let mut musl = package(Ecosystem::Apk, "musl", "1.2.4-r2");
        musl.arch = Some("x86_64".to_owned());
        assert_eq!(
            purl(&musl, alpine.as_ref()),
            "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1"
        );
        let python = package(Ecosystem::Python, "Typing_Extensions", "4.9.0");
        assert_eq!(purl(&python, None), "pkg:pypi/typing-extensions@4.9.0");
        let npm = package(Ecosystem::Npm, "@types/node", "20.1.0");
        assert_eq!(purl(&npm, None), "pkg:npm/%40types/node@20.1.0");
        let cargo = package(Ecosystem::Cargo, "ripgrep", "14.1.0");
        assert_eq!(purl(&cargo, None), "pkg:cargo/ripgrep@14.1.0");
        let crate_in_binary = package(Ecosystem::RustBinary, "itoa", "1.0.11");
        assert_eq!(purl(&crate_in_binary, None), "pkg:cargo/itoa@1.0.11");
        let fedora = Some(("fedora".to_owned(), "40".to_owned()));
        let mut dbus = package(Ecosystem::Rpm, "dbus-libs", "1:1.14.10-3.fc40");
        dbus.arch = Some("x86_64".to_owned());
        dbus.source = Some("dbus-1.14.10-3.fc40.src.rpm".to_owned());
        assert_eq!(
            purl(&dbus, fedora.as_ref()),
            "pkg:rpm/fedora/dbus-libs@1.14.10-3.fc40?arch=x86_64&distro=fedora-40&epoch=1&upstream=dbus-1.14.10-3.fc40.src.rpm"
        );
        let go = package(Ecosystem::GoModule, "github.com/google/uuid", "v1.3.0");
        assert_eq!(purl(&go, None), "pkg:golang/github.com/google/uuid@v1.3.0");
        let stdlib = package(Ecosystem::GoModule, "stdlib", "go1.19.8");
        assert_eq!(purl(&stdlib, None), "pkg:golang/stdlib@1.19.8");
        let main = package(Ecosystem::GoModule, "example.com/app", "(devel)");
        assert_eq!(purl(&main, None), "pkg:golang/example.com/app@%28devel%29");
        let bare = package(Ecosystem::Rpm, "gpg-pubkey", "a15b79cc-63d04c2c");
        assert_eq!(purl(&bare, None), "pkg:rpm/gpg-pubkey@a15b79cc-63d04c2c");
    }

    #[test]
    fn base_packages_are_attributed_to_the_base_image() {
        let (bash, app) = (
            package(Ecosystem::Deb, "bash", "5"),
            package(Ecosystem::Python, "app", "1"),
        );
        let image = Scan {
            packages: vec![bash.clone(), app],
            distro: None,
        };
        let base = Scan {
            packages: vec![bash],
            distro: None,
        };
        let digest = Digest::from_bytes(b"image");
        let names = ["example.com/app:1".to_owned()];
        let platform = Platform::new("linux", "amd64", "");
        let subject = Subject {
            names: &names,
            platform: &platform,
            digest: &digest,
            created: 0,
        };
        let base = (
            base,
            "debian:bookworm".to_owned(),
            Digest::from_bytes(b"base"),
        );
        let document = document(&image, Some(&base), &subject);
        let contained: Vec<&str> = document["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["spdxElementId"] == "SPDXRef-BaseImage")
            .map(|r| r["relatedSpdxElement"].as_str().unwrap())
            .collect();
        assert_eq!(contained, ["SPDXRef-Package-deb-bash-0"]);
        assert_eq!(document["packages"][1]["name"], "debian:bookworm");
    }
}
