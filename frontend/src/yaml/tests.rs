use super::*;
use crate::testing::FakeResolver;

fn resolver() -> FakeResolver {
    FakeResolver::default().fallback(
        &format!("sha256:{}", "0".repeat(64)),
        r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    )
}

fn error(yaml: impl AsRef<[u8]>) -> String {
    let options = ConvertOptions {
        file_name: "kiln.yaml".to_owned(),
        ..ConvertOptions::default()
    };
    convert_yaml(yaml.as_ref(), &options, &resolver())
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn detects_kiln_yaml_by_name_or_api_version() {
    assert!(is_kiln_yaml("kiln.yaml", b""));
    assert!(is_kiln_yaml("build.YML", b"FROM x\n"));
    assert!(is_kiln_yaml(
        "Buildfile",
        b"# comment\n\napiVersion: kiln/v1\n"
    ));
    assert!(is_kiln_yaml("x", b"---\napiVersion: \"kiln/v1\"\n"));
    assert!(!is_kiln_yaml("Dockerfile", b"FROM busybox\n"));
    assert!(!is_kiln_yaml("Dockerfile", b"apiVersion: v1\nkind: Pod\n"));
    assert!(!is_kiln_yaml("Dockerfile", b"\xff\xfe"));
}

#[test]
fn syntax_and_document_errors_have_a_place() {
    assert_eq!(
        error("apiVersion: kiln/v1\nstages: [\n"),
        "kiln.yaml:3:1: while parsing a node, did not find expected node content"
    );
    assert_eq!(
        error("apiVersion: kiln/v1\n---\nb: 1\n"),
        "kiln.yaml:3:1: expected one YAML document, found 2"
    );
    assert_eq!(
        error("apiVersion: kiln/v1\nstages: {a: {from: x}, a: {from: y}}\n"),
        error("apiVersion: kiln/v1\nstages: {a: {from: x}, a: {from: y}}\n")
    );
    assert!(
        error("apiVersion: kiln/v1\nstages: {a: {from: x}, a: {from: y}}\n")
            .starts_with("kiln.yaml:2:"),
    );
    assert_eq!(
        error(b"apiVersion: kiln/v1\nstages:\n  a:\n    from: \xff\n"),
        "kiln.yaml:4:11: the file is not UTF-8 text"
    );
}

#[test]
fn random_bytes_never_panic() {
    let valid = "apiVersion: kiln/v1\nargs: {V: \"1\"}\nstages:\n  a:\n    from: busybox:${V}\n    steps:\n      - run: [echo, hi]\n        mounts: [{type: cache, target: /c}]\n      - copy: {src: [a, b], dest: /x/, chmod: \"0755\"}\nimage: {cmd: [sh], expose: [80], healthcheck: {test: true, interval: 1s}}\n";
    let options = ConvertOptions::default();
    let mut rng = fastrand::Rng::with_seed(16);
    for _ in 0..2000 {
        let mut bytes = valid.as_bytes().to_vec();
        for _ in 0..rng.usize(1..8) {
            let i = rng.usize(..bytes.len());
            match rng.u8(..3) {
                0 => bytes[i] = rng.u8(..),
                1 => {
                    bytes.remove(i);
                }
                _ => bytes.insert(i, b"{}[]:,-'\"$#&*!|> \n"[rng.usize(..18)]),
            }
        }
        let _ = convert_yaml(&bytes, &options, &resolver());
    }
    for _ in 0..500 {
        let bytes: Vec<u8> = (0..rng.usize(..200)).map(|_| rng.u8(..)).collect();
        let _ = convert_yaml(&bytes, &options, &resolver());
    }
}
