//! RPM databases: rpm's SQLite database (`rpmdb.sqlite`, rpm 4.16 and later: Fedora 33+,
//! RHEL 9, openSUSE), whose `Packages` table holds one header blob per installed package.
//!
//! # Overview
//! 1. The database (and its `-wal` file, if any) is copied through the image's root into a
//!    private temporary directory, at most [`MAX_RPMDB_BYTES`]; SQLite opens the copy
//!    read-only with `trusted_schema` off, so nothing in the image is opened in place and the
//!    image's schema runs no function.
//! 2. Each blob is an RPM header ([`Header::parse`]): big-endian index count and data size,
//!    the index entries (tag, type, offset, count), the data store. Counts, sizes and every
//!    offset are checked against the blob; a header that does not hold is left out with a
//!    warning.
//! 3. A package is its NAME, VERSION, RELEASE, EPOCH, ARCH, SOURCERPM and URL; its version is
//!    `EPOCH:VERSION-RELEASE` (the epoch only when set), as syft writes it.

use std::io::{Read as _, Write as _};
use std::path::Path;

use kiln_fsutil::Root;

use super::catalog::{Ecosystem, Package, skipped};

/// The largest database copied (a Fedora workstation's is around 100 MiB).
const MAX_RPMDB_BYTES: u64 = 512 << 20;

/// The most packages read from one database.
const MAX_PACKAGES: usize = 200_000;

/// rpm's own limits on a header: index entries, data store bytes.
const MAX_TAGS: u32 = 0xffff;
const MAX_DATA_BYTES: u32 = 0x0fff_ffff;

/// The tags read, with rpm's numbers.
const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_URL: u32 = 1020;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;

/// The tag types read: a 32-bit integer, a NUL-terminated string.
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;

/// Whether the container path `path` is an RPM database kiln reads.
pub(crate) fn is_database(path: &Path) -> bool {
    path == Path::new("/var/lib/rpm/rpmdb.sqlite")
        || path == Path::new("/usr/lib/sysimage/rpm/rpmdb.sqlite")
}

/// Why a header blob was left out.
#[derive(Debug, PartialEq, Eq)]
enum Malformed {
    /// Shorter than its counts say.
    Truncated,
    /// More entries or data than rpm allows.
    TooLarge,
    /// Without NAME, VERSION or RELEASE (or one of them unreadable).
    MissingTag,
}

impl Malformed {
    fn describe(&self) -> &'static str {
        match self {
            Self::Truncated => "an RPM header shorter than its counts",
            Self::TooLarge => "an RPM header larger than rpm allows",
            Self::MissingTag => "an RPM header without a readable NAME, VERSION or RELEASE",
        }
    }
}

/// An RPM header: its index entries and data store, borrowed from the blob.
struct Header<'a> {
    index: &'a [u8],
    data: &'a [u8],
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(word.try_into().ok()?))
}

impl<'a> Header<'a> {
    /// Splits a header blob into its index and data store, checking the counts.
    fn parse(blob: &'a [u8]) -> Result<Self, Malformed> {
        let (Some(count), Some(size)) = (be32(blob, 0), be32(blob, 4)) else {
            return Err(Malformed::Truncated);
        };
        if count > MAX_TAGS || size > MAX_DATA_BYTES {
            return Err(Malformed::TooLarge);
        }
        let index_end = 8 + count as usize * 16;
        let data_end = index_end + size as usize;
        if blob.len() < data_end {
            return Err(Malformed::Truncated);
        }
        Ok(Self {
            index: &blob[8..index_end],
            data: &blob[index_end..data_end],
        })
    }

    /// The type, data offset and count of `tag`'s entry.
    fn entry(&self, tag: u32) -> Option<(u32, usize, u32)> {
        self.index
            .chunks_exact(16)
            .filter(|entry| be32(entry, 0) == Some(tag))
            .find_map(|entry| Some((be32(entry, 4)?, be32(entry, 8)? as usize, be32(entry, 12)?)))
    }

    /// A string tag's value (NUL-terminated in the data store).
    fn string(&self, tag: u32) -> Option<String> {
        let (TYPE_STRING, offset, _) = self.entry(tag)? else {
            return None;
        };
        let rest = self.data.get(offset..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    /// A 32-bit integer tag's first value.
    fn int32(&self, tag: u32) -> Option<u32> {
        let (TYPE_INT32, offset, 1..) = self.entry(tag)? else {
            return None;
        };
        be32(self.data, offset)
    }

    /// The package this header describes.
    fn package(&self, location: &str) -> Result<Package, Malformed> {
        let (Some(name), Some(version), Some(release)) = (
            self.string(TAG_NAME),
            self.string(TAG_VERSION),
            self.string(TAG_RELEASE),
        ) else {
            return Err(Malformed::MissingTag);
        };
        let version = match self.int32(TAG_EPOCH) {
            Some(epoch) => format!("{epoch}:{version}-{release}"),
            None => format!("{version}-{release}"),
        };
        let mut package = Package::new(Ecosystem::Rpm, &name, &version, location);
        package.arch = self.string(TAG_ARCH);
        package.source = self.string(TAG_SOURCERPM);
        package.homepage = self.string(TAG_URL);
        Ok(package)
    }
}

/// The package of one header blob.
fn header_package(blob: &[u8], location: &str) -> Result<Package, Malformed> {
    Header::parse(blob)?.package(location)
}

/// Copies the file at container path `from` through `root` to the host path `to`, at most
/// [`MAX_RPMDB_BYTES`]; `false` when it is missing, larger, or unreadable.
fn copy_capped(root: &Root, from: &str, to: &Path) -> bool {
    let Ok(Some(file)) = root.open_file(from) else {
        return false;
    };
    let copied = fs_err::File::create(to).and_then(|mut out| {
        let copied = std::io::copy(&mut file.take(MAX_RPMDB_BYTES + 1), &mut out)?;
        out.flush()?;
        Ok(copied)
    });
    match copied {
        Ok(copied) if copied <= MAX_RPMDB_BYTES => true,
        Ok(_) => {
            tracing::warn!(
                file = from,
                "SBOM: left out an RPM database larger than {MAX_RPMDB_BYTES} bytes"
            );
            false
        }
        Err(error) => {
            tracing::warn!(file = from, %error, "SBOM: could not read");
            false
        }
    }
}

/// The packages of the SQLite database at host path `path`, each blob parsed as it is read.
fn read_database(path: &Path, location: &str) -> rusqlite::Result<Vec<Package>> {
    use rusqlite::OpenFlags;
    use rusqlite::types::ValueRef;
    let connection = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.pragma_update(None, "trusted_schema", false)?;
    // A view or virtual table named Packages is not rpm's.
    let kind: Option<String> = connection
        .query_row(
            "SELECT type FROM sqlite_schema WHERE name = 'Packages'",
            [],
            |row| row.get(0),
        )
        .ok();
    if kind.as_deref() != Some("table") {
        skipped(location, "a database without rpm's Packages table");
        return Ok(Vec::new());
    }
    let mut statement = connection.prepare("SELECT blob FROM Packages")?;
    let mut rows = statement.query([])?;
    let mut packages = Vec::new();
    let mut read = 0usize;
    while let Some(row) = rows.next()? {
        read += 1;
        if read > MAX_PACKAGES {
            skipped(
                location,
                &format!("the packages after the first {MAX_PACKAGES}"),
            );
            break;
        }
        let ValueRef::Blob(blob) = row.get_ref(0)? else {
            skipped(location, "a package whose header is no blob");
            continue;
        };
        match header_package(blob, location) {
            Ok(package) => packages.push(package),
            Err(malformed) => skipped(location, malformed.describe()),
        }
    }
    Ok(packages)
}

/// The packages of the RPM database at container path `location`, read through `root`.
pub(crate) fn packages(root: &Root, location: &str) -> Vec<Package> {
    let Ok(dir) = tempfile::tempdir() else {
        tracing::warn!(
            file = location,
            "SBOM: no temporary directory to read the RPM database in"
        );
        return Vec::new();
    };
    let copy = dir.path().join("rpmdb.sqlite");
    if !copy_capped(root, location, &copy) {
        return Vec::new();
    }
    // Changes not yet checkpointed into the database are in its write-ahead log.
    copy_capped(
        root,
        &format!("{location}-wal"),
        &dir.path().join("rpmdb.sqlite-wal"),
    );
    match read_database(&copy, location) {
        Ok(packages) => packages,
        Err(error) => {
            tracing::warn!(file = location, %error, "SBOM: left out an RPM database SQLite cannot read");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header blob of `(tag, type, offset, count)` entries over `data`.
    fn blob(entries: &[(u32, u32, u32, u32)], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend((entries.len() as u32).to_be_bytes());
        out.extend((data.len() as u32).to_be_bytes());
        for (tag, kind, offset, count) in entries {
            for word in [tag, kind, offset, count] {
                out.extend(word.to_be_bytes());
            }
        }
        out.extend(data);
        out
    }

    /// An image with the database made by rpm (see testdata/sbom/README.md).
    fn fixture() -> (tempfile::TempDir, Root) {
        let image = tempfile::tempdir().unwrap();
        let dir = image.path().join("usr/lib/sysimage/rpm");
        fs_err::create_dir_all(&dir).unwrap();
        fs_err::copy(
            kiln_testdata::sbom_dir().join("rpmdb.sqlite"),
            dir.join("rpmdb.sqlite"),
        )
        .unwrap();
        let root = Root::new(image.path());
        (image, root)
    }

    #[test]
    fn an_rpm_database_made_by_rpm_lists_its_packages() {
        let (_image, root) = fixture();
        let location = "/usr/lib/sysimage/rpm/rpmdb.sqlite";
        let packages = packages(&root, location);
        let found: Vec<(&str, &str, Option<&str>, Option<&str>)> = packages
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.arch.as_deref(),
                    p.source.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (
                    "tool-kiln",
                    "2:0.9-1.fc40",
                    Some("x86_64"),
                    Some("tool-kiln-0.9-1.fc40.src.rpm")
                ),
                (
                    "hello-kiln",
                    "1.2.3-4",
                    Some("noarch"),
                    Some("hello-kiln-1.2.3-4.src.rpm")
                ),
            ]
        );
        assert!(packages.iter().all(|p| p.location == location));
        // The image's file is read, not opened in place: it is as it was.
        let bytes = fs_err::read(kiln_testdata::sbom_dir().join("rpmdb.sqlite")).unwrap();
        assert_eq!(
            root.read_file(location).unwrap().unwrap(),
            bytes,
            "the database was changed"
        );
    }

    #[test]
    fn malformed_headers_are_left_out() {
        // The epoch aligned on 4 bytes, as rpm writes it.
        let data = b"bash\x005.2\x001.el9\x00\0\0\0\0\x03";
        let good = [
            (TAG_NAME, TYPE_STRING, 0, 1),
            (TAG_VERSION, TYPE_STRING, 5, 1),
            (TAG_RELEASE, TYPE_STRING, 9, 1),
            (TAG_EPOCH, TYPE_INT32, 16, 1),
        ];
        let package = header_package(&blob(&good, data), "/x").unwrap();
        assert_eq!(
            (package.name.as_str(), package.version.as_str()),
            ("bash", "3:5.2-1.el9")
        );
        // Truncated anywhere: in the counts, the index, the data.
        let whole = blob(&good, data);
        for end in [0, 7, 8, 30, whole.len() - 1] {
            assert_eq!(
                header_package(&whole[..end], "/x").err(),
                Some(Malformed::Truncated),
                "cut at {end}"
            );
        }
        // Counts beyond rpm's limits (no allocation of what they claim).
        let mut huge = whole.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(header_package(&huge, "/x").err(), Some(Malformed::TooLarge));
        let mut huge = whole.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(header_package(&huge, "/x").err(), Some(Malformed::TooLarge));
        // An offset past the data, a string without its NUL, a wrong type.
        for bad in [
            (TAG_NAME, TYPE_STRING, 1 << 30, 1),
            (TAG_NAME, TYPE_STRING, u32::MAX, 1),
            (TAG_NAME, TYPE_STRING, 20, 1),
            (TAG_NAME, TYPE_INT32, 0, 1),
        ] {
            let entries = [bad, good[1], good[2]];
            assert_eq!(
                header_package(&blob(&entries, data), "/x").err(),
                Some(Malformed::MissingTag),
                "{bad:?}"
            );
        }
        // An epoch out of range is no epoch; the package stays.
        let entries = [good[0], good[1], good[2], (TAG_EPOCH, TYPE_INT32, 18, 1)];
        let package = header_package(&blob(&entries, data), "/x").unwrap();
        assert_eq!(package.version, "5.2-1.el9");
    }

    #[test]
    fn changes_in_the_write_ahead_log_are_read() {
        let image = tempfile::tempdir().unwrap();
        let dir = image.path().join("var/lib/rpm");
        fs_err::create_dir_all(&dir).unwrap();
        let connection = rusqlite::Connection::open(dir.join("rpmdb.sqlite")).unwrap();
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL);",
            )
            .unwrap();
        let header = blob(
            &[
                (TAG_NAME, TYPE_STRING, 0, 1),
                (TAG_VERSION, TYPE_STRING, 4, 1),
                (TAG_RELEASE, TYPE_STRING, 6, 1),
            ],
            b"zsh\x001\x002\x00",
        );
        connection
            .execute("INSERT INTO Packages (blob) VALUES (?1)", [header])
            .unwrap();
        // The connection is open: the row is in rpmdb.sqlite-wal only.
        assert!(
            fs_err::metadata(dir.join("rpmdb.sqlite-wal"))
                .unwrap()
                .len()
                > 0
        );
        let root = Root::new(image.path());
        let packages = packages(&root, "/var/lib/rpm/rpmdb.sqlite");
        let found: Vec<(&str, &str)> = packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(found, [("zsh", "1-2")]);
        drop(connection);
    }

    #[test]
    fn a_database_that_is_not_rpms_gives_no_packages() {
        let image = tempfile::tempdir().unwrap();
        let dir = image.path().join("var/lib/rpm");
        fs_err::create_dir_all(&dir).unwrap();
        fs_err::write(dir.join("rpmdb.sqlite"), b"not a database at all").unwrap();
        let root = Root::new(image.path());
        assert!(packages(&root, "/var/lib/rpm/rpmdb.sqlite").is_empty());
        // A SQLite database whose Packages is a view, and one whose blobs are no headers.
        let path = dir.join("rpmdb.sqlite");
        fs_err::remove_file(&path).unwrap();
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch("CREATE VIEW Packages AS SELECT x'00' AS blob;")
            .unwrap();
        drop(connection);
        assert!(packages(&root, "/var/lib/rpm/rpmdb.sqlite").is_empty());
        fs_err::remove_file(&path).unwrap();
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL);
                 INSERT INTO Packages (blob) VALUES (x'0000000100000000'), (x'ffffffffffffffff');",
            )
            .unwrap();
        drop(connection);
        assert!(packages(&root, "/var/lib/rpm/rpmdb.sqlite").is_empty());
    }
}
