//! A typed API for building LLB graphs, in the spirit of BuildKit's Go `client/llb` package.
//!
//! A [`State`] is a filesystem value: the output of an op, or [`scratch`] (empty). Sources
//! ([`image`], [`local`], [`git`], [`http`]) start graphs; [`State::run`], [`State::file`],
//! [`merge`] and [`diff`] derive new states. [`State::marshal`] turns the graph that produces a
//! state into a [`pb::Definition`]: ops in dependency order, each once, the terminal op last.
//! Equal graphs marshal to equal bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use crate::digest::Digest;
use crate::marshal::marshal_op;
use crate::pb;

/// Description key BuildKit and kiln show as an op's name.
pub const CUSTOM_NAME: &str = "llb.customname";

/// One op of a graph under construction; its inputs are other nodes' outputs.
#[derive(Debug)]
struct Node {
    /// The op without `inputs` (filled in at marshal time) and with body fields that refer to
    /// inputs by index into `inputs` below.
    op: pb::Op,
    inputs: Vec<Output>,
    metadata: pb::OpMetadata,
}

impl Drop for Node {
    /// Drops the graph behind this node iteratively: the default recursive drop would overflow
    /// the stack on long chains of ops.
    fn drop(&mut self) {
        let mut pending: Vec<Output> = std::mem::take(&mut self.inputs);
        while let Some(output) = pending.pop() {
            if let Some(mut node) = Arc::into_inner(output.node) {
                pending.append(&mut node.inputs);
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Output {
    node: Arc<Node>,
    index: i64,
}

/// A filesystem value in a graph under construction, with the process defaults (environment,
/// working directory, user, platform) that later [`State::run`] calls use.
#[derive(Debug, Clone, Default)]
pub struct State {
    output: Option<Output>,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    user: Option<String>,
    platform: Option<pb::Platform>,
}

/// The empty filesystem.
pub fn scratch() -> State {
    State::default()
}

/// The platform of the running host (`linux` and the OCI name of its architecture).
pub fn default_platform() -> pb::Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    pb::Platform {
        architecture: architecture.to_owned(),
        os: "linux".to_owned(),
        ..Default::default()
    }
}

/// Normalises an image reference the way Docker does: `busybox` becomes
/// `docker.io/library/busybox:latest`, `user/app` becomes `docker.io/user/app:latest`; a
/// registry host (with a `.` or `:`, or `localhost`), a tag and a digest are kept.
pub fn normalize_image_ref(name: &str) -> String {
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
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
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

fn caps<'a>(names: impl IntoIterator<Item = &'a str>) -> pb::OpMetadata {
    pb::OpMetadata {
        caps: names.into_iter().map(|c| (c.to_owned(), true)).collect(),
        ..Default::default()
    }
}

/// Collects distinct input outputs, giving each an index.
#[derive(Default)]
struct Inputs {
    list: Vec<Output>,
}

impl Inputs {
    /// The input index of `state`, or -1 for scratch.
    fn index(&mut self, state: &State) -> i64 {
        let Some(output) = &state.output else {
            return -1;
        };
        let position = self
            .list
            .iter()
            .position(|o| Arc::ptr_eq(&o.node, &output.node) && o.index == output.index)
            .unwrap_or_else(|| {
                self.list.push(output.clone());
                self.list.len() - 1
            });
        position as i64
    }
}

impl State {
    /// Whether this is the empty filesystem.
    pub fn is_scratch(&self) -> bool {
        self.output.is_none()
    }

    /// Sets an environment variable for later [`State::run`] calls.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets the working directory for later [`State::run`] calls.
    pub fn cwd(mut self, dir: &str) -> Self {
        self.cwd = Some(dir.to_owned());
        self
    }

    /// Sets the user for later [`State::run`] calls.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    /// Sets the platform of later exec ops.
    pub fn platform(mut self, platform: pb::Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// Names the op producing this state (`llb.customname`), as progress output shows it.
    pub fn with_custom_name(self, name: &str) -> Self {
        self.with_metadata(|m| {
            m.description
                .insert(CUSTOM_NAME.to_owned(), name.to_owned());
        })
    }

    /// Edits the metadata of the op producing this state (no effect on scratch). Metadata does
    /// not change the op's digest.
    pub fn with_metadata(mut self, edit: impl FnOnce(&mut pb::OpMetadata)) -> Self {
        if let Some(output) = &mut self.output {
            let mut metadata = output.node.metadata.clone();
            edit(&mut metadata);
            output.node = Arc::new(Node {
                op: output.node.op.clone(),
                inputs: output.node.inputs.clone(),
                metadata,
            });
        }
        self
    }

    /// Starts an exec op running `args` with this state as its root filesystem.
    pub fn run<I, S>(&self, args: I) -> ExecState
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let meta = pb::Meta {
            args: args.into_iter().map(Into::into).collect(),
            env: self.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: self.cwd.clone().unwrap_or_else(|| "/".to_owned()),
            user: self.user.clone().unwrap_or_default(),
            ..Default::default()
        };
        ExecState {
            base: self.clone(),
            meta,
            mounts: vec![("/".to_owned(), self.clone(), MountOptions::default())],
            network: pb::NetMode::Unset,
            security: pb::SecurityMode::Sandbox,
            secret_env: Vec::new(),
            metadata: caps(["exec.meta.base", "exec.mount.bind"]),
            node: OnceLock::new(),
        }
    }

    /// Applies a chain of file actions to this state.
    pub fn file(&self, action: FileAction) -> State {
        let mut inputs = Inputs::default();
        let mut actions = Vec::with_capacity(action.steps.len());
        let count = action.steps.len();
        for (i, step) in action.steps.into_iter().enumerate() {
            // The first action works on this state; each later one on the previous result,
            // numbered after the op's inputs (resolved once all inputs are known, below).
            let input = if i == 0 {
                inputs.index(self)
            } else {
                i64::MIN + (i as i64 - 1)
            };
            let secondary_input = match &step.secondary {
                Some(state) => inputs.index(state),
                None => -1,
            };
            actions.push(pb::FileAction {
                input,
                secondary_input,
                output: if i + 1 == count { 0 } else { -1 },
                action: Some(step.action),
            });
        }
        let base = inputs.list.len() as i64;
        for action in &mut actions {
            if action.input < -1 {
                action.input = base + (action.input - i64::MIN);
            }
        }
        let node = Node {
            op: pb::Op {
                constraints: Some(pb::WorkerConstraints::default()),
                op: Some(pb::op::Op::File(pb::FileOp { actions })),
                ..Default::default()
            },
            inputs: inputs.list,
            metadata: caps(["file.base"]),
        };
        self.derive(Arc::new(node), 0)
    }

    /// This state's process defaults, with a new filesystem value.
    fn derive(&self, node: Arc<Node>, index: i64) -> State {
        State {
            output: Some(Output { node, index }),
            ..self.clone()
        }
    }

    /// Marshals the graph producing this state: ops in dependency order, each once, then the
    /// terminal op. Scratch marshals to an empty Definition.
    pub fn marshal(&self) -> pb::Definition {
        let mut definition = pb::Definition::default();
        let Some(output) = &self.output else {
            return definition;
        };
        let mut done: HashMap<*const Node, Digest> = HashMap::new();
        let head = marshal_node(&output.node, &mut done, &mut definition);
        let terminal = pb::Op {
            inputs: vec![pb::Input {
                digest: head.to_string(),
                index: output.index,
            }],
            ..Default::default()
        };
        definition.def.push(marshal_op(&terminal));
        definition
    }
}

/// Marshals `root` after its inputs (depth first, inputs in order), returning its digest.
///
/// Iterative, as graphs may be deep chains.
fn marshal_node(
    root: &Arc<Node>,
    done: &mut HashMap<*const Node, Digest>,
    definition: &mut pb::Definition,
) -> Digest {
    let mut stack: Vec<(&Arc<Node>, bool)> = vec![(root, false)];
    while let Some((node, inputs_done)) = stack.pop() {
        if done.contains_key(&Arc::as_ptr(node)) {
            continue;
        }
        if !inputs_done {
            stack.push((node, true));
            for input in node.inputs.iter().rev() {
                if !done.contains_key(&Arc::as_ptr(&input.node)) {
                    stack.push((&input.node, false));
                }
            }
            continue;
        }
        let mut op = node.op.clone();
        for input in &node.inputs {
            op.inputs.push(pb::Input {
                digest: done[&Arc::as_ptr(&input.node)].to_string(),
                index: input.index,
            });
        }
        let bytes = marshal_op(&op);
        let digest = Digest::from_bytes(&bytes);
        let key = digest.to_string();
        // Distinct nodes may marshal to the same op; keep it once.
        if !definition.metadata.contains_key(&key) {
            definition.def.push(bytes);
            definition.metadata.insert(key, node.metadata.clone());
        }
        done.insert(Arc::as_ptr(node), digest);
    }
    done[&Arc::as_ptr(root)]
}

/// Options of a mount added with [`ExecState::with_mount`].
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Mount read-only; the mount then produces no output.
    pub readonly: bool,
    /// Mount this path of the state instead of its root.
    pub selector: Option<String>,
    /// A cache mount with this id and sharing mode instead of a bind mount.
    pub cache: Option<(String, pb::CacheSharingOpt)>,
    /// A tmpfs mount (the state is ignored) with this size limit in bytes (0: no limit).
    pub tmpfs: Option<i64>,
    /// A secret mount (the state is ignored).
    pub secret: Option<pb::SecretOpt>,
    /// An SSH agent socket mount (the state is ignored).
    pub ssh: Option<pb::SshOpt>,
}

/// An exec op under construction; [`ExecState::root`] and [`ExecState::get_mount`] give its
/// outputs.
#[derive(Debug)]
pub struct ExecState {
    base: State,
    meta: pb::Meta,
    mounts: Vec<(String, State, MountOptions)>,
    network: pb::NetMode,
    security: pb::SecurityMode,
    secret_env: Vec<pb::SecretEnv>,
    metadata: pb::OpMetadata,
    node: OnceLock<BuiltExec>,
}

/// A finished exec node and the output index of each writable mount, by destination.
type BuiltExec = (Arc<Node>, Vec<(String, i64)>);

impl ExecState {
    /// Adds a mount of `state` at `dest` (replacing an earlier mount there).
    pub fn with_mount(mut self, dest: &str, state: State, options: MountOptions) -> Self {
        self.mounts.retain(|(d, _, _)| d != dest);
        self.mounts.push((dest.to_owned(), state, options));
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        let prefix = format!("{key}=");
        self.meta.env.retain(|e| !e.starts_with(&prefix));
        self.meta.env.push(format!("{key}={value}"));
        self
    }

    /// Sets the working directory of the process.
    pub fn cwd(mut self, dir: &str) -> Self {
        self.meta.cwd = dir.to_owned();
        self
    }

    /// Sets the user of the process.
    pub fn user(mut self, user: &str) -> Self {
        self.meta.user = user.to_owned();
        self
    }

    /// Sets the hostname of the container.
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.meta.hostname = hostname.to_owned();
        self
    }

    /// Sets the network mode.
    pub fn network(mut self, mode: pb::NetMode) -> Self {
        self.network = mode;
        self
    }

    /// Sets the security mode.
    pub fn security(mut self, mode: pb::SecurityMode) -> Self {
        self.security = mode;
        self
    }

    /// Exposes secret `id` as the environment variable `name` of the process (`secretenv`);
    /// `optional` leaves it unset when the secret is missing.
    pub fn secret_env(mut self, id: &str, name: &str, optional: bool) -> Self {
        self.secret_env.push(pb::SecretEnv {
            id: id.to_owned(),
            name: name.to_owned(),
            optional,
        });
        self.metadata.caps.insert("exec.secretenv".to_owned(), true);
        self
    }

    /// Adds a resource limit of the process (BuildKit's `AddUlimit`): `name` as docker's
    /// `--ulimit` (`nofile`, `nproc`, ...), `-1` for unlimited.
    pub fn add_ulimit(mut self, name: &str, soft: i64, hard: i64) -> Self {
        self.meta.ulimit.push(pb::Ulimit {
            name: name.to_owned(),
            soft,
            hard,
        });
        self.metadata
            .caps
            .insert("exec.meta.ulimit".to_owned(), true);
        self
    }

    /// Puts the process's cgroup below `parent` (BuildKit's `WithCgroupParent`).
    pub fn cgroup_parent(mut self, parent: &str) -> Self {
        self.meta.cgroup_parent = parent.to_owned();
        self
    }

    /// Exit codes that count as success (default: only 0).
    pub fn valid_exit_codes(mut self, codes: &[i32]) -> Self {
        self.meta.valid_exit_codes = codes.to_vec();
        self
    }

    /// Removes empty mount-point stubs left in the root filesystem, recursively.
    pub fn remove_mount_stubs_recursive(mut self, remove: bool) -> Self {
        self.meta.remove_mount_stubs_recursive = remove;
        self
    }

    /// Names the op (`llb.customname`).
    pub fn with_custom_name(mut self, name: &str) -> Self {
        self.metadata
            .description
            .insert(CUSTOM_NAME.to_owned(), name.to_owned());
        self
    }

    /// The root filesystem after the process ran.
    pub fn root(&self) -> State {
        self.get_mount("/")
            .expect("an exec op always has a writable root mount")
    }

    /// The filesystem mounted at `dest` after the process ran, if that mount is writable.
    pub fn get_mount(&self, dest: &str) -> Option<State> {
        let (node, outputs) = self.node.get_or_init(|| self.build());
        let index = outputs.iter().find(|(d, _)| d == dest)?.1;
        Some(self.base.derive(Arc::clone(node), index))
    }

    fn build(&self) -> BuiltExec {
        // As BuildKit's exec op: filesystem mounts sorted by destination, then secret and then
        // SSH mounts in the order they were added.
        let group = |m: &&(String, State, MountOptions)| {
            if m.2.secret.is_some() {
                1
            } else if m.2.ssh.is_some() {
                2
            } else {
                0
            }
        };
        let mut mounts: Vec<&(String, State, MountOptions)> = self.mounts.iter().collect();
        mounts.sort_by(|a, b| {
            group(a).cmp(&group(b)).then_with(|| {
                if group(a) == 0 {
                    a.0.cmp(&b.0)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
        });
        let mut inputs = Inputs::default();
        let mut outputs = Vec::new();
        let mut pb_mounts = Vec::with_capacity(mounts.len());
        let mut metadata = self.metadata.clone();
        for (dest, state, options) in mounts {
            let mut mount = pb::Mount {
                dest: dest.clone(),
                selector: options.selector.clone().unwrap_or_default(),
                readonly: options.readonly,
                output: -1,
                ..Default::default()
            };
            if let Some(secret) = &options.secret {
                mount.input = -1;
                mount.mount_type = pb::MountType::Secret.into();
                mount.secret_opt = Some(secret.clone());
                metadata.caps.insert("exec.mount.secret".to_owned(), true);
            } else if let Some(ssh) = &options.ssh {
                mount.input = -1;
                mount.mount_type = pb::MountType::Ssh.into();
                mount.ssh_opt = Some(ssh.clone());
                metadata.caps.insert("exec.mount.ssh".to_owned(), true);
            } else if let Some(size) = options.tmpfs {
                mount.input = -1;
                mount.mount_type = pb::MountType::Tmpfs.into();
                mount.tmpfs_opt = Some(pb::TmpfsOpt { size });
                metadata.caps.insert("exec.mount.tmpfs".to_owned(), true);
            } else if let Some((id, sharing)) = &options.cache {
                mount.input = inputs.index(state);
                mount.mount_type = pb::MountType::Cache.into();
                mount.cache_opt = Some(pb::CacheOpt {
                    id: id.clone(),
                    sharing: (*sharing).into(),
                });
                metadata.caps.insert("exec.mount.cache".to_owned(), true);
            } else {
                mount.input = inputs.index(state);
                if !options.readonly {
                    mount.output = outputs.len() as i64;
                    outputs.push((dest.clone(), mount.output));
                }
                if !mount.selector.is_empty() {
                    metadata.caps.insert("exec.mount.selector".to_owned(), true);
                }
            }
            pb_mounts.push(mount);
        }
        let exec = pb::ExecOp {
            meta: Some(self.meta.clone()),
            mounts: pb_mounts,
            network: self.network.into(),
            security: self.security.into(),
            secretenv: self.secret_env.clone(),
            ..Default::default()
        };
        let node = Node {
            op: pb::Op {
                platform: Some(self.base.platform.clone().unwrap_or_else(default_platform)),
                constraints: Some(pb::WorkerConstraints::default()),
                op: Some(pb::op::Op::Exec(exec)),
                ..Default::default()
            },
            inputs: inputs.list,
            metadata,
        };
        (Arc::new(node), outputs)
    }
}

/// Owner of a file created by a file action.
#[derive(Debug, Clone, Default)]
pub struct Chown {
    /// The user, by name or id.
    pub user: Option<pb::user_opt::User>,
    /// The group, by name or id.
    pub group: Option<pb::user_opt::User>,
}

impl Chown {
    fn to_pb(&self) -> pb::ChownOpt {
        pb::ChownOpt {
            user: self.user.clone().map(|u| pb::UserOpt { user: Some(u) }),
            group: self.group.clone().map(|g| pb::UserOpt { user: Some(g) }),
        }
    }
}

/// Options of [`FileAction::mkdir`].
#[derive(Debug, Clone, Default)]
pub struct MkdirOptions {
    /// Create missing parent directories too.
    pub make_parents: bool,
    /// Owner override.
    pub owner: Option<Chown>,
    /// Modification time in Unix nanoseconds (default: keep the current time).
    pub timestamp: Option<i64>,
}

/// Options of [`FileAction::copy`].
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Owner override.
    pub owner: Option<Chown>,
    /// Permission bits override.
    pub mode: Option<i32>,
    /// Resolve a symlink at `src`.
    pub follow_symlink: bool,
    /// Copy the contents of a directory `src`, not the directory itself.
    pub dir_copy_contents: bool,
    /// Unpack `src` if it is an archive (Dockerfile `ADD`).
    pub attempt_unpack_docker_compatibility: bool,
    /// Create missing directories of `dest`.
    pub create_dest_path: bool,
    /// Treat `src` as a wildcard pattern.
    pub allow_wildcard: bool,
    /// Do not fail when the wildcard matches nothing.
    pub allow_empty_wildcard: bool,
    /// Modification time override in Unix nanoseconds.
    pub timestamp: Option<i64>,
    /// Only copy paths matching these patterns.
    pub include_patterns: Vec<String>,
    /// Never copy paths matching these patterns.
    pub exclude_patterns: Vec<String>,
    /// Symbolic permissions (`u+x,g-w`) applied to each copied file's own mode; overrides
    /// `mode`.
    pub mode_str: Option<String>,
    /// Paths (relative to the source) that must exist, even when include patterns are used.
    pub required_paths: Vec<String>,
}

#[derive(Debug, Clone)]
struct FileStep {
    action: pb::file_action::Action,
    secondary: Option<State>,
}

/// A chain of file actions, each applied to the result of the one before.
#[derive(Debug, Clone, Default)]
pub struct FileAction {
    steps: Vec<FileStep>,
}

impl FileAction {
    fn start() -> Self {
        Self::default()
    }

    fn push(mut self, action: pb::file_action::Action, secondary: Option<State>) -> Self {
        self.steps.push(FileStep { action, secondary });
        self
    }

    /// Creates a directory.
    pub fn mkdir(path: &str, mode: u32, options: MkdirOptions) -> Self {
        Self::start().then_mkdir(path, mode, options)
    }

    /// Then creates a directory.
    pub fn then_mkdir(self, path: &str, mode: u32, options: MkdirOptions) -> Self {
        self.push(
            pb::file_action::Action::Mkdir(pb::FileActionMkDir {
                path: path.to_owned(),
                mode: mode as i32,
                make_parents: options.make_parents,
                owner: options.owner.as_ref().map(Chown::to_pb),
                timestamp: options.timestamp.unwrap_or(-1),
            }),
            None,
        )
    }

    /// Creates a file with `data`.
    pub fn mkfile(path: &str, mode: u32, data: &[u8]) -> Self {
        Self::start().then_mkfile(path, mode, data)
    }

    /// Then creates a file with `data`.
    pub fn then_mkfile(self, path: &str, mode: u32, data: &[u8]) -> Self {
        self.push(
            pb::file_action::Action::Mkfile(pb::FileActionMkFile {
                path: path.to_owned(),
                mode: mode as i32,
                data: data.to_vec(),
                owner: None,
                timestamp: -1,
            }),
            None,
        )
    }

    /// Removes a path; `allow_not_found` makes a missing path no error.
    pub fn rm(path: &str, allow_not_found: bool) -> Self {
        Self::start().then_rm(path, allow_not_found)
    }

    /// Then removes a path.
    pub fn then_rm(self, path: &str, allow_not_found: bool) -> Self {
        self.push(
            pb::file_action::Action::Rm(pb::FileActionRm {
                path: path.to_owned(),
                allow_not_found,
                allow_wildcard: false,
            }),
            None,
        )
    }

    /// Creates a symbolic link `newpath` pointing at `oldpath`.
    pub fn symlink(oldpath: &str, newpath: &str) -> Self {
        Self::start().then_symlink(oldpath, newpath)
    }

    /// Then creates a symbolic link.
    pub fn then_symlink(self, oldpath: &str, newpath: &str) -> Self {
        self.push(
            pb::file_action::Action::Symlink(pb::FileActionSymlink {
                oldpath: oldpath.to_owned(),
                newpath: newpath.to_owned(),
                owner: None,
                timestamp: -1,
            }),
            None,
        )
    }

    /// Copies `src` of `from` to `dest`.
    pub fn copy(from: &State, src: &str, dest: &str, options: CopyOptions) -> Self {
        Self::start().then_copy(from, src, dest, options)
    }

    /// Then copies `src` of `from` to `dest`.
    pub fn then_copy(self, from: &State, src: &str, dest: &str, options: CopyOptions) -> Self {
        self.push(
            pb::file_action::Action::Copy(pb::FileActionCopy {
                src: src.to_owned(),
                dest: dest.to_owned(),
                owner: options.owner.as_ref().map(Chown::to_pb),
                mode: match (&options.mode_str, options.mode) {
                    // BuildKit leaves the numeric mode at zero when a mode string is given.
                    (Some(_), _) => 0,
                    (None, mode) => mode.unwrap_or(-1),
                },
                follow_symlink: options.follow_symlink,
                dir_copy_contents: options.dir_copy_contents,
                attempt_unpack_docker_compatibility: options.attempt_unpack_docker_compatibility,
                create_dest_path: options.create_dest_path,
                allow_wildcard: options.allow_wildcard,
                allow_empty_wildcard: options.allow_empty_wildcard,
                timestamp: options.timestamp.unwrap_or(-1),
                include_patterns: options.include_patterns,
                exclude_patterns: options.exclude_patterns,
                mode_str: options.mode_str.unwrap_or_default(),
                required_paths: options.required_paths,
                ..Default::default()
            }),
            Some(from.clone()),
        )
    }
}

/// Layers `states` on top of one another, the first at the bottom; scratch inputs are skipped.
pub fn merge(states: &[State]) -> State {
    let mut inputs = Inputs::default();
    let mut merge_inputs = Vec::new();
    for state in states.iter().filter(|s| !s.is_scratch()) {
        merge_inputs.push(pb::MergeInput {
            input: inputs.index(state),
        });
    }
    if merge_inputs.is_empty() {
        return scratch();
    }
    let node = Node {
        op: pb::Op {
            constraints: Some(pb::WorkerConstraints::default()),
            op: Some(pb::op::Op::Merge(pb::MergeOp {
                inputs: merge_inputs,
            })),
            ..Default::default()
        },
        inputs: inputs.list,
        metadata: caps(["mergeop"]),
    };
    states[0].derive(Arc::new(node), 0)
}

/// The changes that turn `lower` into `upper`.
pub fn diff(lower: &State, upper: &State) -> State {
    let mut inputs = Inputs::default();
    let lower_index = inputs.index(lower);
    let upper_index = inputs.index(upper);
    let node = Node {
        op: pb::Op {
            constraints: Some(pb::WorkerConstraints::default()),
            op: Some(pb::op::Op::Diff(pb::DiffOp {
                lower: Some(pb::LowerDiffInput { input: lower_index }),
                upper: Some(pb::UpperDiffInput { input: upper_index }),
            })),
            ..Default::default()
        },
        inputs: inputs.list,
        metadata: caps(["diffop"]),
    };
    upper.derive(Arc::new(node), 0)
}
