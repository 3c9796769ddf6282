//! `testdata/dockerfile-negative/<case>/`: every Dockerfile must be rejected by the parser or
//! the instruction parser with an error containing each line of `error_contains`.

use std::path::PathBuf;

fn cases() -> Vec<PathBuf> {
    let dir = kiln_testdata::root().join("dockerfile-negative");
    let mut out: Vec<PathBuf> = fs_err::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

#[test]
fn negative_cases_fail_with_expected_messages() {
    let cases = cases();
    assert!(cases.len() >= 20, "found {} cases", cases.len());
    let mut failures = Vec::new();
    for dir in &cases {
        let input = fs_err::read(dir.join("Dockerfile")).unwrap();
        let expected = fs_err::read_to_string(dir.join("error_contains")).unwrap();
        let result = kiln_frontend::parse(&input)
            .and_then(|df| kiln_frontend::parse_stages(&df).map(|_| ()));
        let Err(err) = result else {
            failures.push(format!("{}: parsed but must fail", dir.display()));
            continue;
        };
        let text = err.to_string();
        assert!(
            text.starts_with("Dockerfile:"),
            "{}: error does not name the file: {text}",
            dir.display()
        );
        for want in expected.lines().filter(|l| !l.is_empty()) {
            if !text.to_lowercase().contains(&want.to_lowercase()) {
                failures.push(format!(
                    "{}: error does not contain {want:?}:\n{text}",
                    dir.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
