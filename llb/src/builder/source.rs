//! Source ops: the states a graph starts from (`docker-image://`, `local://`, `git://`,
//! `http(s)://`), with their attributes and capabilities as BuildKit's `client/llb` sets them.
//! A new kind of source goes here, made with `source_state`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Node, Output, State, caps, default_platform};
use crate::digest::Digest;
use crate::pb;
use crate::reference::ImageReference;

/// Normalises an image reference the way Docker does: `busybox` becomes
/// `docker.io/library/busybox:latest`, `user/app` becomes `docker.io/user/app:latest`; a
/// registry host, a tag and a digest are kept ([`ImageReference`]). A text that is no
/// reference only gets the `docker.io` prefix and `:latest` tag its form asks for (the
/// solver rejects it when it resolves it).
pub fn normalize_image_ref(name: &str) -> String {
    if let Ok(mut reference) = ImageReference::parse(name) {
        if reference.tag.is_none() && reference.digest.is_none() {
            reference.tag = Some("latest".to_owned());
        }
        return reference.to_string();
    }
    let (first, _) = name.split_once('/').unwrap_or(("", name));
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_registry {
        name.to_owned()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !last.contains('@') {
        full.push_str(":latest");
    }
    full
}

/// A container image (`docker-image://`), for the host's platform.
pub fn image(name: &str) -> State {
    image_for(name, default_platform())
}

/// A container image (`docker-image://`) for the given platform.
pub fn image_for(name: &str, platform: pb::Platform) -> State {
    let source = pb::SourceOp {
        identifier: format!("docker-image://{}", normalize_image_ref(name)),
        attrs: BTreeMap::new(),
    };
    let mut state = source_state(source, Some(platform.clone()), "source.image");
    state.platform = Some(platform);
    state
}

/// Options of a [`local_with`] source.
#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    /// Only transfer paths matching these patterns.
    pub include_patterns: Vec<String>,
    /// Never transfer paths matching these patterns.
    pub exclude_patterns: Vec<String>,
    /// Transfer these paths and what symlinks among them point to.
    pub follow_paths: Vec<String>,
    /// Reuse the transfer cache of earlier transfers with the same hint.
    pub shared_key_hint: Option<String>,
    /// `local.unique`: a value that makes this source's op digest unique (BuildKit sets a
    /// random one per invocation when the source has no session).
    pub unique: Option<String>,
}

/// A directory of the client (`local://name`).
pub fn local(name: &str) -> State {
    local_with(name, LocalOptions::default())
}

/// A directory of the client (`local://name`) with transfer options.
pub fn local_with(name: &str, options: LocalOptions) -> State {
    let mut attrs = BTreeMap::new();
    if !options.include_patterns.is_empty() {
        attrs.insert(
            "local.includepattern".to_owned(),
            crate::dump::go_json_strings(&options.include_patterns),
        );
    }
    if !options.exclude_patterns.is_empty() {
        attrs.insert(
            "local.excludepatterns".to_owned(),
            crate::dump::go_json_strings(&options.exclude_patterns),
        );
    }
    if !options.follow_paths.is_empty() {
        attrs.insert(
            "local.followpaths".to_owned(),
            crate::dump::go_json_strings(&options.follow_paths),
        );
    }
    if let Some(hint) = options.shared_key_hint {
        attrs.insert("local.sharedkeyhint".to_owned(), hint);
    }
    if let Some(unique) = options.unique {
        attrs.insert("local.unique".to_owned(), unique);
    }
    let source = pb::SourceOp {
        identifier: format!("local://{name}"),
        attrs,
    };
    source_state(source, None, "source.local")
}

/// A git repository at a ref (`git://host/path#ref`); `url` may carry a scheme, which is then
/// kept in the `git.fullurl` attribute.
pub fn git(url: &str, reference: &str) -> State {
    let mut attrs = BTreeMap::new();
    let remote = match url.split_once("://") {
        Some((_, rest)) => {
            attrs.insert("git.fullurl".to_owned(), url.to_owned());
            rest
        }
        None => url,
    };
    let mut identifier = format!("git://{remote}");
    if !reference.is_empty() {
        identifier.push('#');
        identifier.push_str(reference);
    }
    source_state(pb::SourceOp { identifier, attrs }, None, "source.git")
}

/// Options of a [`git_with`] source (BuildKit's `llb.Git` options).
#[derive(Debug, Clone, Default)]
pub struct GitOptions {
    /// Keep the `.git` directory in the checkout.
    pub keep_git_dir: bool,
    /// The commit the ref must resolve to (`git.checksum`).
    pub checksum: Option<String>,
    /// Do not fetch submodules.
    pub skip_submodules: bool,
    /// Trust `checksum` as the commit and fetch it directly.
    pub fetch_by_commit: bool,
}

/// A git repository as BuildKit's `llb.Git(url, fragment, ...)` makes it: `url` is a
/// `scheme://` URL or an scp-style `user@host:path` (then reached over SSH with the default
/// agent); `fragment` is `REF[:SUBDIR]`. The identifier is `git://HOST/PATH[#REF[:SUBDIR]]`,
/// the same for every scheme, and the URL itself goes into `git.fullurl`.
pub fn git_with(url: &str, fragment: &str, options: GitOptions) -> State {
    // `scheme://[user@]host/path` or `user@host:path`, without query and fragment.
    let remote = url.split(['#', '?']).next().unwrap_or_default();
    let (host, path, ssh) = match remote.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or_default();
            (host, path, scheme.eq_ignore_ascii_case("ssh"))
        }
        None => {
            let (user_host, path) = remote.split_once(':').unwrap_or((remote, ""));
            let host = user_host.rsplit('@').next().unwrap_or_default();
            (host, path, true)
        }
    };
    let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
    let subdir = clean_slash_path(subdir);
    let mut identifier = format!("git://{host}{}", clean_slash_path(path));
    if !reference.is_empty() || subdir != "/" {
        identifier.push('#');
        identifier.push_str(reference);
        if subdir != "/" {
            identifier.push(':');
            identifier.push_str(subdir.trim_start_matches('/'));
        }
    }
    let mut attrs = BTreeMap::new();
    let mut capabilities = vec!["source.git"];
    if options.keep_git_dir {
        attrs.insert("git.keepgitdir".to_owned(), "true".to_owned());
        capabilities.push("source.git.keepgitdir");
    }
    if !remote.is_empty() {
        attrs.insert("git.fullurl".to_owned(), remote.to_owned());
        capabilities.push("source.git.fullurl");
    }
    attrs.insert(
        "git.authtokensecret".to_owned(),
        "GIT_AUTH_TOKEN".to_owned(),
    );
    attrs.insert(
        "git.authheadersecret".to_owned(),
        "GIT_AUTH_HEADER".to_owned(),
    );
    if ssh {
        attrs.insert("git.mountsshsock".to_owned(), "default".to_owned());
        capabilities.push("source.git.knownsshhosts");
        capabilities.push("source.git.mountsshsock");
    }
    if let Some(checksum) = options.checksum.filter(|c| !c.is_empty()) {
        attrs.insert("git.checksum".to_owned(), checksum);
        capabilities.push("source.git.checksum");
    }
    if options.skip_submodules {
        attrs.insert("git.skipsubmodules".to_owned(), "true".to_owned());
        capabilities.push("source.git.skipsubmodules");
    }
    if options.fetch_by_commit {
        attrs.insert("git.fetchbycommit".to_owned(), "true".to_owned());
        capabilities.push("source.git.fetchbycommit");
    }
    let mut state = source_state(pb::SourceOp { identifier, attrs }, None, "source.git");
    state = state.with_metadata(|m| {
        for cap in capabilities {
            m.caps.insert(cap.to_owned(), true);
        }
    });
    state
}

/// Go's `path.Join("/", p)`: an absolute, cleaned slash path.
fn clean_slash_path(p: &str) -> String {
    crate::path::clean_path(&format!("/{p}"))
}

/// Options of an [`http_with`] source.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Fail unless the content has this digest.
    pub checksum: Option<Digest>,
    /// The file name to save the content under.
    pub filename: Option<String>,
    /// Permission bits of the file.
    pub chmod: Option<u32>,
}

/// A file downloaded over HTTP(S).
pub fn http(url: &str) -> State {
    http_with(url, HttpOptions::default())
}

/// A file downloaded over HTTP(S), with options.
pub fn http_with(url: &str, options: HttpOptions) -> State {
    let mut attrs = BTreeMap::new();
    if let Some(checksum) = options.checksum {
        attrs.insert("http.checksum".to_owned(), checksum.to_string());
    }
    if let Some(filename) = options.filename {
        attrs.insert("http.filename".to_owned(), filename);
    }
    if let Some(mode) = options.chmod.filter(|&m| m != 0) {
        attrs.insert("http.perm".to_owned(), format!("0{mode:o}"));
    }
    let source = pb::SourceOp {
        identifier: url.to_owned(),
        attrs,
    };
    source_state(source, None, "source.http")
}

fn source_state(source: pb::SourceOp, platform: Option<pb::Platform>, cap: &str) -> State {
    let node = Node {
        op: pb::Op {
            platform,
            constraints: Some(pb::WorkerConstraints::default()),
            op: Some(pb::op::Op::Source(source)),
            ..Default::default()
        },
        inputs: Vec::new(),
        metadata: caps([cap]),
    };
    State {
        output: Some(Output {
            node: Arc::new(node),
            index: 0,
        }),
        ..State::default()
    }
}
