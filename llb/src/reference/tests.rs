use super::*;

const SHA256: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

fn parts(text: &str) -> (String, String, Option<String>, Option<String>) {
    let r = ImageReference::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    (r.domain, r.path, r.tag, r.digest)
}

#[test]
fn names_are_normalised_as_docker_does() {
    let s = |v: &str| v.to_owned();
    for (text, domain, path, tag) in [
        ("busybox", "docker.io", "library/busybox", None),
        ("busybox:1.36", "docker.io", "library/busybox", Some("1.36")),
        ("user/app", "docker.io", "user/app", None),
        ("docker.io/busybox", "docker.io", "library/busybox", None),
        (
            "index.docker.io/library/busybox",
            "docker.io",
            "library/busybox",
            None,
        ),
        ("test.com:tag", "docker.io", "library/test.com", Some("tag")),
        (
            "test.com:5000",
            "docker.io",
            "library/test.com",
            Some("5000"),
        ),
        ("test:5000/repo:tag", "test:5000", "repo", Some("tag")),
        ("localhost/app:v1", "localhost", "app", Some("v1")),
        ("Upper/app", "Upper", "app", None),
        ("[::1]:5000/app", "[::1]:5000", "app", None),
        ("[fe80::1]/a/b", "[fe80::1]", "a/b", None),
        (
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            "sub-dom1.foo.com",
            "bar/baz/quux",
            Some("some-long-tag"),
        ),
        (
            "b.gcr.io/test.example.com/my-app:test.example.com",
            "b.gcr.io",
            "test.example.com/my-app",
            Some("test.example.com"),
        ),
        (
            "xn--n3h.com/myimage:xn--n3h.com",
            "xn--n3h.com",
            "myimage",
            Some("xn--n3h.com"),
        ),
        (
            "lowercase:Uppercase",
            "docker.io",
            "library/lowercase",
            Some("Uppercase"),
        ),
        (
            "foo/foo_bar.com:8080",
            "docker.io",
            "foo/foo_bar.com",
            Some("8080"),
        ),
        ("a/b__c---d.e_f", "docker.io", "a/b__c---d.e_f", None),
    ] {
        assert_eq!(
            parts(text),
            (s(domain), s(path), tag.map(s), None),
            "{text}"
        );
    }
    let pinned = format!("test:5000/repo:tag@{SHA256}");
    assert_eq!(
        parts(&pinned),
        (s("test:5000"), s("repo"), Some(s("tag")), Some(s(SHA256)))
    );
    assert_eq!(ImageReference::parse(&pinned).unwrap().to_string(), pinned);
    let sha512 = format!("sha512:{}", "f".repeat(128));
    assert_eq!(parts(&format!("app@{sha512}")).3, Some(sha512));
    assert_eq!(
        ImageReference::parse("busybox").unwrap().name(),
        "docker.io/library/busybox"
    );
}

#[test]
fn bad_references_say_why_in_distributions_words() {
    let long_name = "a".repeat(250);
    for (text, error) in [
        ("", ReferenceError::NameEmpty),
        (":justtag", ReferenceError::InvalidFormat),
        ("busybox:", ReferenceError::InvalidFormat),
        ("Busybox", ReferenceError::InvalidFormat),
        ("a:b:c", ReferenceError::InvalidFormat),
        ("no spaces allowed", ReferenceError::InvalidFormat),
        ("busybox:tägged", ReferenceError::InvalidFormat),
        ("bücher/app", ReferenceError::InvalidFormat),
        ("Uppercase:tag", ReferenceError::InvalidFormat),
        (
            "test:5000/Uppercase/lowercase:tag",
            ReferenceError::InvalidFormat,
        ),
        ("aa/asdf$$^/aa", ReferenceError::InvalidFormat),
        ("a//b", ReferenceError::InvalidFormat),
        ("a/b/", ReferenceError::InvalidFormat),
        ("-host.com/app", ReferenceError::InvalidFormat),
        ("host.com:/app", ReferenceError::InvalidFormat),
        ("[]/app", ReferenceError::InvalidFormat),
        ("a.__b", ReferenceError::InvalidFormat),
        ("a___b", ReferenceError::InvalidFormat),
        ("app@sha256:abc", ReferenceError::InvalidFormat),
        (
            "app@@sha256:ffffffffffffffffffffffffffffffff",
            ReferenceError::InvalidFormat,
        ),
        (&format!("@{SHA256}"), ReferenceError::InvalidFormat),
        (
            "repo@sha256:ffffffffffffffffffffffffffffffffff",
            ReferenceError::DigestInvalidLength,
        ),
        (
            &format!("app@md5:{}", "f".repeat(32)),
            ReferenceError::DigestUnsupported,
        ),
        (&long_name, ReferenceError::NameTooLong),
        (
            &format!("app:{}", "t".repeat(129)),
            ReferenceError::InvalidFormat,
        ),
    ] {
        assert_eq!(ImageReference::parse(text), Err(error), "{text}");
    }
    assert!(ImageReference::parse(&format!("app:{}", "t".repeat(128))).is_ok());
    assert_eq!(
        ReferenceError::InvalidFormat.to_string(),
        "invalid reference format"
    );
    assert_eq!(
        ReferenceError::NameTooLong.to_string(),
        "repository name must not be more than 255 characters"
    );
}

/// The hand-written checks accept exactly what the grammar's regular expression (its ASCII
/// reading) accepts, on random texts made of the characters that matter to it.
#[test]
fn the_grammar_is_the_distribution_regular_expression() {
    let component = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
    let label = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain = format!(r"(?:{label}(?:\.{label})*|\[(?:[a-fA-F0-9:]+)\])(?::[0-9]+)?");
    let tag = r"[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
    let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
    let grammar = regex::Regex::new(&format!(
        r"^(?:{domain}/)?{component}(?:/{component})*(?::{tag})?(?:@{digest})?$"
    ))
    .unwrap();
    let alphabet: Vec<char> = "ab09AF-._:/@[]+é ".chars().collect();
    let digest_text = "sha256:0123456789abcdef0123456789abcdef";
    let mut rng = fastrand::Rng::with_seed(17);
    for _ in 0..200_000 {
        let length = rng.usize(1..14);
        let mut text: String = (0..length)
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect();
        if rng.u8(..4) == 0 {
            text.push('@');
            text.push_str(digest_text);
        }
        let follows = !matches!(
            ImageReference::parse(&text),
            Err(ReferenceError::InvalidFormat | ReferenceError::NameEmpty)
        );
        assert_eq!(follows, grammar.is_match(&text), "{text:?}");
    }
}
