//! kiln against a registry that serves HTTPS with a certificate of a private CA: trusted when
//! `SSL_CERT_FILE` or `SSL_CERT_DIR` names that CA (as for any program that reads the system's
//! roots), refused otherwise.

use std::path::Path;
use std::process::Output;

use kiln_testdata::registry::{PrivateRegistry, have};
use kiln_testdata::{is_root, skip};

use crate::common::{kiln, text};

/// The manifest digest of the busybox test image (`testdata/images/busybox`).
const BUSYBOX: &str = "sha256:d52f2e085b43a66eac685128644e8bf54be9a108b5ec88453584b34039ae7f89";

/// `kiln --root ROOT ARGS` with `trust` (`SSL_CERT_FILE`/`SSL_CERT_DIR` and a path) as its only
/// TLS roots setting.
fn kiln_trusting(root: &Path, args: &[&str], trust: Option<(&str, &Path)>) -> Output {
    let mut command = kiln(root);
    command
        .args(args)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if let Some((variable, path)) = trust {
        command.env(variable, path);
    }
    command.output().unwrap()
}

/// The digest a `kiln pull` printed (`Digest: sha256:…`).
fn pulled_digest(output: &Output) -> String {
    assert!(output.status.success(), "{}", text(output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no digest in {}", text(output)))
        .to_owned()
}

#[test]
fn pulls_and_pushes_over_https_trusting_the_ca_of_ssl_cert_file_or_dir() {
    if !is_root() {
        skip("pulling unpacks layers as root");
        return;
    }
    if !have("openssl") {
        skip("openssl makes the registry's certificates");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = crate::daemon::certificates_for(dir.path(), "127.0.0.2").join("daemon");
    let Some(registry) =
        PrivateRegistry::start_tls(&certs.join("cert.pem"), &certs.join("key.pem"))
    else {
        skip("docker-registry and skopeo");
        return;
    };
    registry.push_busybox();
    let ca = certs.join("ca.pem");
    let image = format!("{}/library/busybox:latest", registry.host);

    // The system's roots do not hold the private CA: the certificate is refused.
    let refused = kiln_trusting(&dir.path().join("refused"), &["pull", &image], None);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).to_lowercase().contains("certificate"),
        "{}",
        text(&refused)
    );

    // Trusted through SSL_CERT_FILE: pulled over HTTPS, the image's own digest.
    let root = dir.path().join("root");
    let pulled = kiln_trusting(&root, &["pull", &image], Some(("SSL_CERT_FILE", &ca)));
    assert_eq!(pulled_digest(&pulled), BUSYBOX);

    // Pushed back under another name, over HTTPS: the registry tags the same manifest, and
    // holds its bytes.
    let copy = format!("{}/team/copy:1", registry.host);
    let tagged = kiln_trusting(&root, &["tag", &image, &copy], None);
    assert!(tagged.status.success(), "{}", text(&tagged));
    let pushed = kiln_trusting(&root, &["push", &copy], Some(("SSL_CERT_FILE", &ca)));
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert_eq!(
        String::from_utf8_lossy(&pushed.stdout).trim(),
        format!("{copy}: digest: {BUSYBOX}")
    );
    let link = registry
        .storage
        .path()
        .join("data/docker/registry/v2/repositories/team/copy/_manifests/tags/1/current/link");
    assert_eq!(fs_err::read_to_string(link).unwrap(), BUSYBOX);
    let manifest = fs_err::read(registry.blob_data(&BUSYBOX["sha256:".len()..])).unwrap();
    assert_eq!(kiln_llb::Digest::from_bytes(&manifest).to_string(), BUSYBOX);

    // Trusted through SSL_CERT_DIR, a directory holding the CA: the pushed copy pulls.
    let ca_dir = dir.path().join("ca-dir");
    fs_err::create_dir_all(&ca_dir).unwrap();
    fs_err::copy(&ca, ca_dir.join("ca.pem")).unwrap();
    let again = kiln_trusting(
        &dir.path().join("again"),
        &["pull", &copy],
        Some(("SSL_CERT_DIR", &ca_dir)),
    );
    assert_eq!(pulled_digest(&again), BUSYBOX);
}
