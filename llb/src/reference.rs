//! Image references (`busybox`, `host:5000/team/app:v1`, `app@sha256:…`), read by the grammar of
//! the distribution project's `reference` package and normalised as Docker does.
//!
//! # Overview
//! 1. An optional `@digest` is cut off the end, then an optional `:tag` off the last `/`-part.
//! 2. The name is `[domain/]component(/component)*`: a domain is DNS labels (`[A-Za-z0-9-]`,
//!    no `-` at either end) joined by `.`, or a bracketed IPv6 address, with an optional
//!    `:port`; a component is lowercase alphanumerics joined by `.`, `_`, `__` or runs of `-`.
//!    A tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, a digest `algorithm:hex` (at least 32 hex
//!    digits). Every class is ASCII, as in the grammar's Go regular expressions.
//! 3. The first part is the registry when it has a `.` or a `:`, is `localhost`, or has an
//!    uppercase letter; otherwise the registry is `docker.io`, and a one-part name there is in
//!    `library/` (`busybox` is `docker.io/library/busybox`; `index.docker.io` is `docker.io`).
//! 4. The normalised name is at most 255 characters; a digest's algorithm is `sha256`,
//!    `sha384` or `sha512` with as many hex digits as it has.
//!
//! The grammar is checked by hand, not by a regular expression: it is read on every command,
//! and compiling its regular expression (Unicode's `\w` in particular) cost more than the rest
//! of a cached build's start.
//!
//! ```
//! use kiln_llb::ImageReference;
//! let r = ImageReference::parse("busybox:1.36").unwrap();
//! assert_eq!((r.domain.as_str(), r.path.as_str()), ("docker.io", "library/busybox"));
//! assert_eq!(r.to_string(), "docker.io/library/busybox:1.36");
//! assert!(ImageReference::parse("busybox:tägged").is_err());
//! ```

use std::fmt;

/// Docker Hub's name in normalised references.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker Hub's older name, normalised to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The repository namespace of Docker Hub's one-part names.
const OFFICIAL_REPOSITORY_PREFIX: &str = "library/";
/// The longest normalised name (domain and path).
const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// The longest tag.
const TAG_LENGTH_MAX: usize = 128;

/// Why a text is not an image reference (the distribution project's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The text is empty.
    #[error("repository name must have at least one component")]
    NameEmpty,
    /// The text does not follow the grammar.
    #[error("invalid reference format")]
    InvalidFormat,
    /// The normalised name is longer than 255 characters.
    #[error("repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")]
    NameTooLong,
    /// The digest's algorithm is not one of `sha256`, `sha384`, `sha512`.
    #[error("unsupported digest algorithm")]
    DigestUnsupported,
    /// The digest's hex part is not as long as its algorithm's.
    #[error("invalid checksum digest length")]
    DigestInvalidLength,
}

/// An image reference, normalised (`busybox` is `docker.io`, `library/busybox`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    /// The registry: `docker.io`, `ghcr.io`, `127.0.0.1:5000`, `[::1]:5000`.
    pub domain: String,
    /// The repository in the registry: `library/busybox`, `team/app`.
    pub path: String,
    /// The tag, if the text has one (no default is filled in).
    pub tag: Option<String>,
    /// The digest (`sha256:…`), if the text has one.
    pub digest: Option<String>,
}

impl ImageReference {
    /// Reads `text` as Docker's `reference.ParseNormalizedNamed` does.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        if text.is_empty() {
            return Err(ReferenceError::NameEmpty);
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) if is_digest(digest) => (rest, Some(digest)),
            Some(_) => return Err(ReferenceError::InvalidFormat),
            None => (text, None),
        };
        let last_part_start = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_part_start..].split_once(':') {
            Some((_, tag)) if is_tag(tag) => (&rest[..rest.len() - tag.len() - 1], Some(tag)),
            Some(_) => return Err(ReferenceError::InvalidFormat),
            None => (rest, None),
        };
        if !is_name(name) {
            return Err(ReferenceError::InvalidFormat);
        }
        let (domain, path) = split_domain(name);
        if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        if let Some(digest) = digest {
            check_digest_algorithm(digest)?;
        }
        Ok(Self {
            domain,
            path,
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }

    /// The name without tag or digest (`docker.io/library/busybox`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The registry and the repository of a name that follows the grammar, as Docker's
/// `splitDomain`.
fn split_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_DOMAIN, name),
    };
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPOSITORY_PREFIX}{path}")
    } else {
        path.to_owned()
    };
    (domain.to_owned(), path)
}

/// `[domain/]component(/component)*`.
fn is_name(name: &str) -> bool {
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    if !rest.iter().all(|p| is_path_component(p)) {
        return false;
    }
    is_path_component(first) || !rest.is_empty() && is_domain_and_port(first)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let run = bytes[i..].iter().take_while(|b| alphanumeric(b)).count();
        if run == 0 {
            return false;
        }
        i += run;
        if i == bytes.len() {
            return true;
        }
        let separator = bytes[i..].iter().take_while(|b| !alphanumeric(b)).count();
        match &bytes[i..i + separator] {
            b"." | b"_" | b"__" => {}
            s if s.iter().all(|&b| b == b'-') => {}
            _ => return false,
        }
        i += separator;
    }
}

/// `(label(\.label)*|\[[a-fA-F0-9:]+\])(:[0-9]+)?`.
fn is_domain_and_port(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (text, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(address) => {
            !address.is_empty() && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
        }
        None => host.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        }),
    };
    host_ok && port_ok
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`: Go's `\w` is ASCII.
fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= TAG_LENGTH_MAX
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`.
fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let bytes = part.as_bytes();
        !bytes.is_empty()
            && bytes[0].is_ascii_alphabetic()
            && bytes.iter().all(u8::is_ascii_alphanumeric)
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The algorithms Docker knows, each with its digest's length.
fn check_digest_algorithm(digest: &str) -> Result<(), ReferenceError> {
    let (algorithm, hex) = digest.split_once(':').unwrap_or((digest, ""));
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(ReferenceError::DigestUnsupported),
    };
    if hex.len() == length {
        Ok(())
    } else {
        Err(ReferenceError::DigestInvalidLength)
    }
}

#[cfg(test)]
mod tests;
