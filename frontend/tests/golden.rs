//! BuildKit's parser test files (`testdata/parser-golden`): every positive case must dump
//! byte-identical to its `result`, every negative case must fail to parse.

use kiln_frontend::parse;

#[test]
fn positive_cases_dump_like_buildkit() {
    let cases = kiln_testdata::parser_golden("positive");
    assert!(
        cases.len() >= 30,
        "expected the golden corpus, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for dir in &cases {
        let input = fs_err::read(dir.join("Dockerfile")).unwrap();
        let want = fs_err::read_to_string(dir.join("result")).unwrap();
        match parse(&input) {
            Ok(df) => {
                let got = df.dump() + "\n";
                if got != want {
                    failures.push(format!(
                        "{}:\n--- want\n{want}--- got\n{got}",
                        dir.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: unexpected error: {e}", dir.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_cases_fail() {
    let cases = kiln_testdata::parser_golden("negative");
    assert!(!cases.is_empty());
    for dir in &cases {
        let input = fs_err::read(dir.join("Dockerfile")).unwrap();
        let err = parse(&input).expect_err(&format!("{} parsed but must fail", dir.display()));
        // Every error names the file and line.
        assert!(err.to_string().starts_with("Dockerfile:"), "{err}");
    }
}

#[test]
fn own_cases_dump_as_written() {
    let dir = kiln_testdata::root().join("dockerfile");
    let mut cases: Vec<_> = fs_err::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 2);
    for case in cases {
        let input = fs_err::read(case.join("Dockerfile")).unwrap();
        let want = fs_err::read_to_string(case.join("dump")).unwrap();
        let df = parse(&input).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        assert_eq!(df.dump() + "\n", want, "{}", case.display());
    }
}
