use super::*;

/// What `sh` makes of `word`: the quoting must give back the text unchanged.
fn through_shell(word: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s {word}"))
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn refs_are_picked_as_buildkit_picks_them() {
    let (c1, c2, t1) = ("1".repeat(40), "2".repeat(40), "a".repeat(40));
    let listing = format!(
        "ref: refs/heads/main\tHEAD\n{c1}\tHEAD\n{c2}\trefs/heads/v1\n\
         {t1}\trefs/tags/v1\n{c1}\trefs/tags/v1^{{}}\n{c1}\trefs/tags/light\n"
    );
    let resolved = |name: &str, object: &str, commit: &str| Resolved {
        name: name.to_owned(),
        object: object.to_owned(),
        commit: commit.to_owned(),
    };
    assert_eq!(
        pick_ref(&listing, "HEAD"),
        Some(resolved("refs/heads/main", &c1, &c1))
    );
    // A branch wins over a tag of the same name.
    assert_eq!(
        pick_ref(&listing, "v1"),
        Some(resolved("refs/heads/v1", &c2, &c2))
    );
    assert_eq!(
        pick_ref(&listing, "refs/tags/v1"),
        Some(resolved("refs/tags/v1", &t1, &c1))
    );
    assert_eq!(
        pick_ref(&listing, "light"),
        Some(resolved("refs/tags/light", &c1, &c1))
    );
    assert_eq!(pick_ref(&listing, "missing"), None);
}

#[test]
fn only_dockerfile_remotes_are_allowed() {
    for ok in [
        "https://github.com/moby/buildkit.git",
        "http://127.0.0.1:9418/repo",
        "ssh://git@github.com/moby/buildkit.git",
        "git://127.0.0.1:9418/project",
        "git@github.com:moby/buildkit.git",
    ] {
        assert!(check_remote(ok).is_ok(), "{ok}");
    }
    for bad in [
        "ext::sh -c touch% /tmp/pwned",
        "file:///etc",
        "/etc",
        "./repo",
        "--upload-pack=touch /tmp/pwned",
        "-oProxyCommand=x",
        "ssh://-oProxyCommand=touch%20x/repo",
        "ssh://user@-oProxyCommand=x/repo",
        "git:///etc",
        "fd::3",
        "git@-oProxyCommand=x:repo",
        "user@host:-repo",
        "https://host/a\nb",
        "ftp://host/repo",
    ] {
        let err = check_remote(bad).expect_err(bad).to_string();
        assert!(err.contains("is not allowed"), "{bad}: {err}");
    }
    assert!(check_reference("main").is_ok());
    assert!(check_reference("--upload-pack=x").is_err());
    assert!(check_reference("a\nb").is_err());
}

/// Answers every HTTP request on 127.0.0.1 with 404 and sends back each request's
/// `Authorization` header (or an empty string); returns the base URL.
fn capture_authorization() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut authorization = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("authorization") {
                        authorization = value.trim().to_owned();
                    }
                }
            }
            let _ = sender.send(authorization);
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (url, receiver)
}

/// The `Authorization` header git sends to a fake remote for a source with these
/// attributes and session secrets (`HOST` in a secret's name is the remote's host and port).
fn authorization(attrs: &[(&str, &str)], secrets: &[(&str, &str)]) -> String {
    let (base, received) = capture_authorization();
    let url = format!("{base}/repo.git");
    let host = base.trim_start_matches("http://");
    let secrets: Vec<(String, &str)> = secrets
        .iter()
        .map(|(name, value)| (name.replace("HOST", host), *value))
        .collect();
    let secrets: Vec<(&str, &str)> = secrets.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let store = tempfile::tempdir().unwrap();
    let config = Arc::new(crate::llbsolver::tests::config(store.path(), &secrets));
    let mut all: std::collections::BTreeMap<String, String> = attrs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    all.insert("git.fullurl".into(), url.clone());
    let source = pb::SourceOp {
        identifier: "git://127.0.0.1/repo.git#main".into(),
        attrs: all,
    };
    let git = GitSource::new(String::new(), &source, config).unwrap();
    let err = resolve(&git.transport().unwrap(), &url, "main").unwrap_err();
    assert!(err.to_string().contains("git ls-remote"), "{err}");
    received
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap()
}

#[test]
fn http_remotes_authenticate_with_the_named_secrets() {
    use base64::Engine as _;
    let names = [
        ("git.authtokensecret", "GIT_AUTH_TOKEN"),
        ("git.authheadersecret", "GIT_AUTH_HEADER"),
    ];
    // No secret: nothing is sent.
    assert_eq!(authorization(&names, &[]), "");
    // A token: basic authentication as x-access-token.
    let basic = base64::engine::general_purpose::STANDARD.encode("x-access-token:s3cret");
    assert_eq!(
        authorization(&names, &[("GIT_AUTH_TOKEN", "s3cret")]),
        format!("basic {basic}")
    );
    // A header wins over a token, and a secret for the host over one for any host.
    assert_eq!(
        authorization(
            &names,
            &[
                ("GIT_AUTH_TOKEN", "s3cret"),
                ("GIT_AUTH_HEADER", "bearer any-host"),
            ]
        ),
        "bearer any-host"
    );
    assert_eq!(
        authorization(
            &names,
            &[
                ("GIT_AUTH_HEADER", "bearer any-host"),
                ("GIT_AUTH_TOKEN.HOST", "for-this-host"),
            ]
        ),
        format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode("x-access-token:for-this-host")
        )
    );
    // Without the attributes, the secrets are not used.
    assert_eq!(authorization(&[], &[("GIT_AUTH_TOKEN", "s3cret")]), "");
}

#[test]
fn fetch_by_commit_takes_the_checksum_as_the_commit() {
    let transport = Transport {
        agent: None,
        known_hosts: None,
        auth: None,
    };
    let commit = "0123456789abcdef0123456789abcdef01234567";
    // No remote is asked: this one does not exist.
    let url = "git://127.0.0.1:1/repo";
    assert_eq!(
        resolve_checked(&transport, url, "main", commit, true).unwrap(),
        commit
    );
    assert_eq!(
        resolve_checked(&transport, url, "main", "", true)
            .unwrap_err()
            .to_string(),
        "fetch-by-commit requires a checksum or a commit SHA ref"
    );
    assert_eq!(
        resolve_checked(&transport, url, "main", "0123abc", true)
            .unwrap_err()
            .to_string(),
        "fetch-by-commit requires a full commit SHA checksum, got \"0123abc\""
    );
}

#[test]
fn quoted_paths_survive_the_shell() {
    for path in [
        "/tmp/plain",
        "/tmp/with space",
        "/tmp/it's",
        "/tmp/$HOME `x` \\ \"q\"",
    ] {
        assert_eq!(through_shell(&shell_quote(path)), path);
    }
}

#[test]
fn ssh_checks_host_keys_only_with_known_hosts() {
    let without = Transport {
        agent: None,
        known_hosts: None,
        auth: None,
    };
    assert_eq!(
        without.ssh_command(),
        "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    );
    let file = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let expected = format!(
        "ssh -F /dev/null -o BatchMode=yes -o UserKnownHostsFile={}",
        file.display()
    );
    let with = Transport {
        agent: None,
        known_hosts: Some(file),
        auth: None,
    };
    // The path is quoted for the shell; unquoted it reads the same for a plain path.
    assert_eq!(with.ssh_command().replace('\'', ""), expected);
}
