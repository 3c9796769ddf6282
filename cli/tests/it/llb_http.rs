//! `http(s)://` sources through `kiln build --llb`, against a server on 127.0.0.1: the file,
//! its name and mode, checksum verification, and a cached result that is not downloaded again.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_llb::prost::Message as _;
use kiln_llb::{Digest, HttpOptions, http_with};
use kiln_testdata::{is_root, skip};

use crate::common::{assert_ok, build_llb};

const BODY: &[u8] = b"hello over http\n";

/// Serves `BODY` with an ETag at any path; counts GET requests.
fn serve() -> (String, Arc<AtomicUsize>) {
    serve_with("ETag: \"v1\"\r\n")
}

/// Serves `BODY` with the extra header lines `headers` at any path; counts GET requests.
fn serve_with(headers: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // Read the headers up to the blank line.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let is_get = request.starts_with("GET ");
            if is_get {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
                BODY.len()
            );
            let _ = stream.write_all(head.as_bytes());
            if is_get {
                let _ = stream.write_all(BODY);
            }
        }
    });
    (format!("http://{address}"), gets)
}

#[test]
fn http_sources_download_verify_and_cache() {
    if !is_root() {
        skip("exporting results needs root (overlay views)");
        return;
    }
    let (base, gets) = serve();
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let checksum = Digest::from_bytes(BODY);

    // With a checksum, a name and a mode.
    let def = http_with(
        &format!("{base}/files/hello.txt"),
        HttpOptions {
            checksum: Some(checksum),
            filename: Some("greeting".into()),
            chmod: Some(0o640),
        },
    )
    .marshal()
    .encode_to_vec();
    let out = work.path().join("out1");
    assert_ok(build_llb(&store, &def, &out));
    assert_eq!(fs_err::read(out.join("greeting")).unwrap(), BODY);
    let mode = fs_err::metadata(out.join("greeting"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);
    assert_eq!(gets.load(Ordering::SeqCst), 1);
    // The same source again: the checksum keys it, nothing is downloaded.
    assert_ok(build_llb(&store, &def, &work.path().join("out2")));
    assert_eq!(gets.load(Ordering::SeqCst), 1);

    // Without a checksum: named after the URL, keyed by the ETag; an unchanged ETag means no
    // second download.
    let def = http_with(&format!("{base}/files/plain.txt"), HttpOptions::default())
        .marshal()
        .encode_to_vec();
    let out = work.path().join("out3");
    assert_ok(build_llb(&store, &def, &out));
    assert_eq!(fs_err::read(out.join("plain.txt")).unwrap(), BODY);
    let mode = fs_err::metadata(out.join("plain.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    assert_eq!(gets.load(Ordering::SeqCst), 2);
    assert_ok(build_llb(&store, &def, &work.path().join("out4")));
    assert_eq!(gets.load(Ordering::SeqCst), 2);

    // A wrong checksum fails the build.
    let wrong = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
    let def = http_with(
        &format!("{base}/files/other.txt"),
        HttpOptions {
            checksum: Some(wrong),
            ..Default::default()
        },
    )
    .marshal()
    .encode_to_vec();
    let output = build_llb(&store, &def, &work.path().join("out5"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("digest mismatch"), "{stderr}");
}

#[test]
fn a_source_without_validators_is_downloaded_once() {
    if !is_root() {
        skip("exporting results needs root (overlay views)");
        return;
    }
    // No ETag and no Last-Modified: the content itself keys the step, from one download.
    let (base, gets) = serve_with("");
    let work = tempfile::tempdir().unwrap();
    let def = http_with(&format!("{base}/plain"), HttpOptions::default())
        .marshal()
        .encode_to_vec();
    let out = work.path().join("out");
    assert_ok(build_llb(&work.path().join("store"), &def, &out));
    assert_eq!(fs_err::read(out.join("plain")).unwrap(), BODY);
    assert_eq!(gets.load(Ordering::SeqCst), 1);
}
