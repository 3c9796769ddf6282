//! kiln-testdata: fixture files for kiln's tests, and helpers that find them.
//!
//! The data lives beside this file so the project stands alone on a fresh clone:
//! - `llb-vectors/<case>/`: LLB Definitions marshalled by BuildKit's Dockerfile frontend
//!   (`def.pb`), BuildKit's `dump-llb` of each op (`dump.jsonl`), the op digests (`digests.txt`)
//!   and the image config it produced (`image-config.json`).
//! - `images/busybox/`: the canonical test base image as an OCI layout with a fixed digest.
//! - `images/dockerfile-frontend/`: BuildKit's stock Dockerfile frontend image (an OCI layout,
//!   unmodified; scripts/test-env.sh pushes it as `docker/dockerfile:1`), what `# syntax=`
//!   names in the gateway tests and the conformance run through a frontend image.
//! - `parser-golden/{positive,negative}/<name>/`: BuildKit's parser test files.
//! - `remote-cache/`: cache exports made by BuildKit (registry min/max/index, inline, local
//!   layout), described in its README.
//! - `sbom/`: package data for the SBOM scan made by real tools, described in its README.
//!
//! It also starts what tests talk to: a private registry ([`registry::PrivateRegistry`]).
//!
//! This crate depends on no kiln crate; it is a dev-dependency only.
//!
//! Where new code goes: fixtures copied into this crate's folders, with a helper returning their
//! path; this crate depends on no kiln crate and is only a dev-dependency.

use std::path::PathBuf;

pub mod registry;

/// The manifest digest of the canonical busybox test image.
pub const BUSYBOX_MANIFEST_DIGEST: &str =
    "sha256:d52f2e085b43a66eac685128644e8bf54be9a108b5ec88453584b34039ae7f89";

/// The `testdata/` directory.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `testdata/llb-vectors/` directory.
pub fn llb_vectors_dir() -> PathBuf {
    root().join("llb-vectors")
}

/// Every LLB vector case directory, sorted by name.
pub fn llb_vectors() -> Vec<PathBuf> {
    list_dirs(llb_vectors_dir())
}

/// The OCI layout of the canonical busybox test image.
pub fn busybox_layout() -> PathBuf {
    root().join("images").join("busybox")
}

/// The `testdata/sbom/` directory: package data made by real tools (an RPM database, a binary
/// built with `cargo auditable`, Go build information), described in its README.
pub fn sbom_dir() -> PathBuf {
    root().join("sbom")
}

/// A JSON schema of `testdata/attestations/` (in-toto statements, SLSA provenance, SPDX),
/// parsed.
pub fn attestation_schema(name: &str) -> serde_json::Value {
    let path = root().join("attestations").join(name);
    let text = fs_err::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `testdata/remote-cache/` directory of cache exports made by BuildKit.
pub fn remote_cache_dir() -> PathBuf {
    root().join("remote-cache")
}

/// Every parser golden case directory of one kind (`positive` or `negative`), sorted by name.
pub fn parser_golden(kind: &str) -> Vec<PathBuf> {
    list_dirs(root().join("parser-golden").join(kind))
}

/// Skips the calling test with a printed reason, or fails it when `KILN_TEST_REQUIRE_ALL=1`
/// (as CI sets it) says that every test must really run.
pub fn skip(reason: &str) {
    assert!(
        std::env::var_os("KILN_TEST_REQUIRE_ALL").is_none_or(|v| v != "1"),
        "cannot run: {reason}"
    );
    #[expect(clippy::print_stderr, reason = "a skipped test says why")]
    {
        eprintln!("skipped: {reason}");
    }
}

/// Gives the calling thread a mount namespace of its own whose mounts propagate nowhere: what
/// a test mounts vanishes with the thread (or the test process), never seen by the host.
/// Needs root.
pub fn private_mount_namespace() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS | nix::sched::CloneFlags::CLONE_FS)
        .expect("unsharing the mount namespace (needs root)");
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("making the mounts private");
}

/// Whether the tests run as root (namespaces, mounts, chown).
pub fn is_root() -> bool {
    fs_err::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Whether the test registry answers on 127.0.0.1:5000 (started by `scripts/test-env.sh`).
pub fn registry_up() -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], 5000)),
        std::time::Duration::from_secs(2),
    )
    .is_ok()
}

fn list_dirs(dir: PathBuf) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = dir
        .read_dir()
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixtures_are_present() {
        assert!(super::llb_vectors().len() >= 30);
        assert!(super::busybox_layout().join("index.json").is_file());
        assert!(!super::parser_golden("positive").is_empty());
        assert!(!super::parser_golden("negative").is_empty());
    }
}
