//! The build information the Go linker writes into a binary (Go 1.18 and later): its
//! `.go.buildinfo` section, read by `binary.rs`.
//!
//! The section opens with a 32-byte header: the magic `\xff Go buildinf:`, the pointer size,
//! a flags byte whose bit 2 says the strings follow inline; then two strings, each a varint
//! length and its bytes: the Go version (`go1.19.8`) and the module information, between two
//! 16-byte sentinels, one line a module: `mod PATH VERSION SUM` (the main module), `dep PATH
//! VERSION SUM`, `=> PATH VERSION SUM` (the replacement of the module before it), tab-separated.
//! The packages are the main module, the dependencies (as replaced; one replaced by a
//! directory keeps its path, its version `(devel)`) and the standard library (`stdlib`, its
//! version the Go version), as syft lists them. Older binaries (pointers to the strings
//! instead of the strings) are left out with a warning.

use super::catalog::{Ecosystem, Package, skipped};

/// The header's magic.
const MAGIC: &[u8] = b"\xff Go buildinf:";

/// The header's length, and its flag for inline strings.
const HEADER_BYTES: usize = 32;
const FLAG_INLINE_STRINGS: u8 = 2;

/// The length of each sentinel around the module information.
const SENTINEL_BYTES: usize = 16;

/// The version Go writes for a module built from its source tree (the main module, a
/// replacement by a directory).
const DEVEL: &str = "(devel)";

/// Reads a varint-prefixed string off the front of `bytes`.
fn string<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut length: u64 = 0;
    for (position, byte) in bytes.iter().enumerate().take(10) {
        length |= u64::from(byte & 0x7f) << (7 * position);
        if byte & 0x80 == 0 {
            let rest = &bytes[position + 1..];
            let length = usize::try_from(length).ok().filter(|l| *l <= rest.len())?;
            let (value, after) = rest.split_at(length);
            *bytes = after;
            return Some(value);
        }
    }
    None
}

/// The packages of a `.go.buildinfo` section's bytes.
pub(crate) fn buildinfo(section: &[u8], location: &str) -> Vec<Package> {
    let Some(header) = section.get(..HEADER_BYTES).filter(|h| h.starts_with(MAGIC)) else {
        skipped(location, "a .go.buildinfo section without its header");
        return Vec::new();
    };
    if header[MAGIC.len() + 1] & FLAG_INLINE_STRINGS == 0 {
        skipped(location, "the build information of a Go before 1.18");
        return Vec::new();
    }
    let mut rest = &section[HEADER_BYTES..];
    let (Some(version), Some(modules)) = (string(&mut rest), string(&mut rest)) else {
        skipped(location, "a .go.buildinfo section shorter than its strings");
        return Vec::new();
    };
    let version = String::from_utf8_lossy(version);
    let mut packages = Vec::new();
    if let Some(go) = version.strip_prefix("go").filter(|v| !v.is_empty()) {
        packages.push(Package::new(
            Ecosystem::GoModule,
            "stdlib",
            &format!("go{go}"),
            location,
        ));
    }
    // The module lines between their sentinels.
    let modules = if modules.len() > 2 * SENTINEL_BYTES
        && modules[modules.len() - SENTINEL_BYTES - 1] == b'\n'
    {
        &modules[SENTINEL_BYTES..modules.len() - SENTINEL_BYTES]
    } else {
        modules
    };
    // The index of the module a `=>` line replaces.
    let mut last_module = None;
    for line in String::from_utf8_lossy(modules).lines() {
        let mut fields = line.split('\t');
        let (Some(kind), Some(path)) = (fields.next(), fields.next()) else {
            continue;
        };
        let version = fields.next().filter(|v| !v.is_empty()).unwrap_or(DEVEL);
        match (kind, last_module) {
            ("mod" | "dep" | "=>", _) if path.is_empty() => {
                skipped(location, "a Go module line without a path");
            }
            ("mod" | "dep", _) => {
                last_module = Some(packages.len());
                packages.push(Package::new(Ecosystem::GoModule, path, version, location));
            }
            ("=>", Some(index)) => {
                let module: &mut Package = &mut packages[index];
                // A directory keeps the module's path; another module takes its place.
                if !path.starts_with(['.', '/']) {
                    module.name = path.to_owned();
                }
                module.version = version.to_owned();
            }
            _ => {}
        }
    }
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(packages: &[Package]) -> Vec<(&str, &str)> {
        packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect()
    }

    /// A section of Go version `version` and module lines `modules` (with sentinels).
    fn section(version: &str, modules: &str) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([8, FLAG_INLINE_STRINGS]);
        out.resize(HEADER_BYTES, 0);
        let modules = [
            &[0x30; SENTINEL_BYTES][..],
            modules.as_bytes(),
            &[0xf9; SENTINEL_BYTES],
        ]
        .concat();
        for text in [version.as_bytes(), &modules] {
            let mut length = text.len();
            while length >= 0x80 {
                out.push((length as u8) | 0x80);
                length >>= 7;
            }
            out.push(length as u8);
            out.extend(text);
        }
        out
    }

    #[test]
    fn replacements_and_the_standard_library() {
        let modules = "path\texample.com/app\nmod\texample.com/app\t(devel)\t\n\
            dep\tgithub.com/a/b\tv1.0.0\th1:x=\n=>\tgithub.com/fork/b\tv1.0.1\th1:y=\n\
            dep\tgithub.com/c/d\tv0.2.0\th1:z=\n=>\t../d\t\t\n\
            dep\t\tv1\t\nbuild\tGOOS=linux\n";
        // Long enough for a two-byte length.
        let modules = format!("{modules}{}", "build\tX=y\n".repeat(20));
        let packages = buildinfo(&section("go1.22.1", &modules), "/usr/bin/app");
        assert_eq!(
            names(&packages),
            [
                ("stdlib", "go1.22.1"),
                ("example.com/app", "(devel)"),
                ("github.com/fork/b", "v1.0.1"),
                ("github.com/c/d", "(devel)"),
            ]
        );
    }

    #[test]
    fn malformed_sections_are_left_out() {
        let good = section("go1.22.1", "mod\tm\tv1\t\n");
        assert_eq!(buildinfo(&good, "/x").len(), 2);
        // Cut anywhere: no strings, or a length past the end.
        for end in [0, 10, HEADER_BYTES, HEADER_BYTES + 3, good.len() - 1] {
            assert!(buildinfo(&good[..end], "/x").is_empty(), "cut at {end}");
        }
        // A length of ten continuation bytes, or larger than anything.
        let mut huge = good[..HEADER_BYTES].to_vec();
        huge.extend([0xff; 10]);
        assert!(buildinfo(&huge, "/x").is_empty());
        let mut huge = good[..HEADER_BYTES].to_vec();
        huge.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(buildinfo(&huge, "/x").is_empty());
        // Pointers instead of strings (Go before 1.18), and no header at all.
        let mut old = good.clone();
        old[MAGIC.len() + 1] = 0;
        assert!(buildinfo(&old, "/x").is_empty());
        assert!(buildinfo(b"\xff Go buildinf", "/x").is_empty());
    }
}
