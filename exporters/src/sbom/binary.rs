//! What executables say about themselves: the crates built into a Rust binary by
//! `cargo auditable` (its `.dep-v0` ELF section, zlib-compressed JSON).
//!
//! Only regular files of the usual binary directories are looked at ([`is_candidate`]), at
//! most [`MAX_BINARIES`] in one image. Each is opened through the image's root and read
//! through [`object`]'s read cache: the ELF header, the section headers and the two sections,
//! never the whole file. A section larger than [`MAX_SECTION_BYTES`], inflating past
//! [`MAX_INFLATED_BYTES`], or not the JSON cargo auditable writes, is left out with a warning.
//! Build dependencies (`"kind": "build"`) are not in the binary and are not listed, as syft
//! leaves them out.

use std::io::Read as _;
use std::path::Path;

use kiln_fsutil::Root;
use object::read::ReadCache;
use object::{Object as _, ObjectSection as _, ReadRef};

use super::catalog::{Ecosystem, Package, skipped};
use super::golang;

/// The most executables read in one image.
pub(crate) const MAX_BINARIES: usize = 10_000;

/// The largest section read (a binary of a thousand crates or modules has a few dozen KiB).
const MAX_SECTION_BYTES: u64 = 4 << 20;

/// The most bytes a `.dep-v0` section may inflate to.
const MAX_INFLATED_BYTES: u64 = 16 << 20;

/// The directories whose files are looked at (and any `.cargo/bin`).
const BINARY_DIRECTORIES: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/local/cargo/bin",
    "/usr/local/go/bin",
    "/go/bin",
    "/app",
    "/app/bin",
    "/opt/bin",
];

/// Whether the container path `path` is in a directory where binaries are looked for.
pub(crate) fn is_candidate(path: &Path) -> bool {
    path.parent().is_some_and(|parent| {
        parent.ends_with(".cargo/bin") || BINARY_DIRECTORIES.iter().any(|d| parent == Path::new(d))
    })
}

/// The packages built into the executable at container path `location`, read through `root`.
pub(crate) fn packages(root: &Root, location: &str) -> Vec<Package> {
    let file = match root.open_file(location) {
        Ok(Some(file)) => file,
        Ok(None) => return Vec::new(),
        Err(error) => {
            tracing::warn!(file = location, %error, "SBOM: could not read");
            return Vec::new();
        }
    };
    let cache = ReadCache::new(file);
    elf_packages(Bounded(&cache), location)
}

/// A file's bytes read in pieces of at most [`MAX_SECTION_BYTES`] (a section's contents, the
/// section and program header tables), so that headers claiming a table as large as the file
/// make the parse fail, not read and keep it.
#[derive(Clone, Copy)]
struct Bounded<R>(R);

impl<'data, R: ReadRef<'data>> ReadRef<'data> for Bounded<R> {
    fn len(self) -> Result<u64, ()> {
        self.0.len()
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'data [u8], ()> {
        if size > MAX_SECTION_BYTES {
            return Err(());
        }
        self.0.read_bytes_at(offset, size)
    }

    fn read_bytes_at_until(
        self,
        range: std::ops::Range<u64>,
        delimiter: u8,
    ) -> Result<&'data [u8], ()> {
        // The read cache reads at most 4 KiB for a string.
        self.0.read_bytes_at_until(range, delimiter)
    }
}

/// The packages of the ELF file `data`: the crates of its `cargo auditable` data, the modules
/// of its Go build information (none for any other file).
fn elf_packages<'data, R: ReadRef<'data>>(data: R, location: &str) -> Vec<Package> {
    if data.read_bytes_at(0, 4) != Ok(b"\x7fELF".as_slice()) {
        return Vec::new();
    }
    let Ok(elf) = object::File::parse(data) else {
        skipped(location, "an ELF file whose headers cannot be read");
        return Vec::new();
    };
    let mut packages = Vec::new();
    if let Some(compressed) = section(&elf, ".dep-v0", location) {
        match inflate(compressed) {
            Some(json) => packages.extend(auditable(&json, location)),
            None => skipped(
                location,
                &format!(
                    "a .dep-v0 section that is not zlib data of at most {MAX_INFLATED_BYTES} bytes"
                ),
            ),
        }
    }
    if let Some(buildinfo) = section(&elf, ".go.buildinfo", location) {
        packages.extend(golang::buildinfo(buildinfo, location));
    }
    packages
}

/// The contents of `elf`'s section `name`, when it has one of at most [`MAX_SECTION_BYTES`]
/// inside the file.
fn section<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
    name: &str,
    location: &str,
) -> Option<&'data [u8]> {
    let section = elf.section_by_name(name)?;
    if section.size() > MAX_SECTION_BYTES {
        skipped(
            location,
            &format!("a {name} section larger than {MAX_SECTION_BYTES} bytes"),
        );
        return None;
    }
    section
        .data()
        .map_err(|_| skipped(location, &format!("a {name} section outside the file")))
        .ok()
}

/// The zlib stream `compressed` inflated, `None` when it is not zlib data or would exceed
/// [`MAX_INFLATED_BYTES`].
fn inflate(compressed: &[u8]) -> Option<Vec<u8>> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(compressed)
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_end(&mut json)
        .ok()?;
    (json.len() as u64 <= MAX_INFLATED_BYTES).then_some(json)
}

/// cargo auditable's JSON: `{"packages": [{"name", "version", "source", "kind", …}]}`, the
/// runtime crates of it.
fn auditable(json: &[u8], location: &str) -> Vec<Package> {
    #[derive(serde::Deserialize)]
    struct Crates {
        packages: Vec<Crate>,
    }
    #[derive(serde::Deserialize)]
    struct Crate {
        name: String,
        version: String,
        #[serde(default)]
        kind: Option<String>,
    }
    let crates: Crates = match serde_json::from_slice(json) {
        Ok(crates) => crates,
        Err(error) => {
            tracing::warn!(file = location, %error, "SBOM: left out cargo auditable data that is not its JSON");
            return Vec::new();
        }
    };
    crates
        .packages
        .into_iter()
        .filter(|c| c.kind.as_deref().is_none_or(|k| k == "runtime"))
        .filter_map(|c| {
            if c.name.is_empty() || c.version.is_empty() {
                skipped(location, "a crate without name or version");
                return None;
            }
            Some(Package::new(
                Ecosystem::RustBinary,
                &c.name,
                &c.version,
                location,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// A binary built with `cargo auditable` (see testdata/sbom/README.md).
    fn hello() -> Vec<u8> {
        fs_err::read(kiln_testdata::sbom_dir().join("hello-auditable")).unwrap()
    }

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut encoder =
            flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// `hello`'s bytes with its `.dep-v0` section's contents replaced by `contents` (as long).
    fn with_section(contents: &[u8]) -> Vec<u8> {
        let mut bytes = hello();
        let range = {
            let elf = object::File::parse(bytes.as_slice()).unwrap();
            let section = elf.section_by_name(".dep-v0").unwrap();
            let (offset, size) = section.file_range().unwrap();
            offset as usize..(offset + size) as usize
        };
        assert!(contents.len() <= range.len());
        bytes[range.clone()].fill(0);
        bytes[range.start..range.start + contents.len()].copy_from_slice(contents);
        bytes
    }

    fn names(packages: &[Package]) -> Vec<(&str, &str)> {
        packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect()
    }

    #[test]
    fn a_cargo_auditable_binary_lists_its_runtime_crates() {
        let bytes = hello();
        let packages = elf_packages(bytes.as_slice(), "/usr/local/bin/hello");
        // autocfg is a build dependency: not in the binary.
        assert_eq!(
            names(&packages),
            [("hello-auditable", "0.1.0"), ("itoa", "1.0.11")]
        );
        assert!(
            packages
                .iter()
                .all(|p| p.ecosystem == Ecosystem::RustBinary
                    && p.location == "/usr/local/bin/hello")
        );
        // Through a file and the read cache, as an image's binaries are read.
        let image = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(image.path().join("usr/bin")).unwrap();
        fs_err::write(image.path().join("usr/bin/hello"), &bytes).unwrap();
        let root = Root::new(image.path());
        assert_eq!(
            names(&self::packages(&root, "/usr/bin/hello")),
            names(&packages)
        );
    }

    #[test]
    fn bad_sections_and_files_are_left_out() {
        // Not ELF, or ELF cut short.
        assert!(elf_packages(b"#!/bin/sh\necho hi\n".as_slice(), "/bin/x").is_empty());
        let bytes = hello();
        assert!(elf_packages(&bytes[..100], "/bin/x").is_empty());
        // Not zlib; zlib of what is not the JSON; a zlib bomb beyond the cap.
        assert!(elf_packages(with_section(b"garbage").as_slice(), "/bin/x").is_empty());
        let not_json = zlib(b"{\"packages\": 1}");
        assert!(elf_packages(with_section(&not_json).as_slice(), "/bin/x").is_empty());
        let bomb = zlib(&vec![b' '; (MAX_INFLATED_BYTES + 10) as usize]);
        assert!(inflate(&bomb).is_none());
        let fits = zlib(&vec![b' '; MAX_INFLATED_BYTES as usize]);
        assert_eq!(
            inflate(&fits).map(|j| j.len()),
            Some(MAX_INFLATED_BYTES as usize)
        );
        // No read larger than the cap, whatever the headers claim.
        let big = vec![0u8; MAX_SECTION_BYTES as usize + 1];
        assert!(
            Bounded(big.as_slice())
                .read_bytes_at(0, MAX_SECTION_BYTES + 1)
                .is_err()
        );
        assert!(
            Bounded(big.as_slice())
                .read_bytes_at(1, MAX_SECTION_BYTES)
                .is_ok()
        );
        // A section header claiming more than the cap, or more than the file.
        let mut huge = hello();
        let header = {
            let elf =
                object::read::elf::ElfFile64::<object::Endianness>::parse(huge.as_slice()).unwrap();
            let index = elf.section_by_name(".dep-v0").unwrap().index().0;
            let offset = elf.elf_header().e_shoff.get(object::Endianness::Little) as usize;
            offset + index * 64
        };
        // sh_size is at offset 32 of an Elf64_Shdr.
        huge[header + 32..header + 40].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(elf_packages(huge.as_slice(), "/bin/x").is_empty());
        huge[header + 32..header + 40].copy_from_slice(&(1u64 << 20).to_le_bytes());
        assert!(elf_packages(huge.as_slice(), "/bin/x").is_empty());
        // A well-formed section still reads.
        let json = zlib(br#"{"packages":[{"name":"a","version":"1"},{"name":"","version":"2"}]}"#);
        assert_eq!(
            names(&elf_packages(with_section(&json).as_slice(), "/bin/x")),
            [("a", "1")]
        );
    }

    #[test]
    fn a_go_binary_lists_its_modules_and_go() {
        let sbom = kiln_testdata::sbom_dir();
        let hello = fs_err::read(sbom.join("hello-go")).unwrap();
        let packages = elf_packages(hello.as_slice(), "/go/bin/hello-go");
        assert_eq!(
            names(&packages),
            [
                ("stdlib", "go1.19.8"),
                ("example.com/hello-go", "(devel)"),
                ("github.com/google/uuid", "v1.3.0"),
            ]
        );
        assert!(packages.iter().all(|p| p.ecosystem == Ecosystem::GoModule));
        // Debian's fzf, built without modules: Go's version only.
        let fzf = fs_err::read(sbom.join("fzf")).unwrap();
        assert_eq!(
            names(&elf_packages(fzf.as_slice(), "/usr/bin/fzf")),
            [("stdlib", "go1.19.8")]
        );
    }

    #[test]
    fn binaries_are_looked_for_in_binary_directories() {
        for path in [
            "/usr/bin/rg",
            "/usr/local/cargo/bin/x",
            "/home/u/.cargo/bin/x",
            "/app/server",
        ] {
            assert!(is_candidate(Path::new(path)), "{path}");
        }
        for path in ["/usr/lib/x.so", "/etc/passwd", "/usr/bin/sub/x", "/"] {
            assert!(!is_candidate(Path::new(path)), "{path}");
        }
    }
}
