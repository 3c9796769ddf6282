//! What the solver does with each field of a Definition, checked before anything runs.
//!
//! Every field of BuildKit's `ops.proto` (mirrored in `llb/proto/ops.proto`) and every source
//! attribute BuildKit defines is *used*, *refused* with an error naming it (a build that sets
//! it would otherwise quietly do something other than it asks), or *ignored* because it
//! cannot change a result. [`check_op`] enforces the refusals when [`Session::graph`] turns
//! the Definition into a graph, so nothing runs for a Definition kiln would build wrongly.
//! Loading (`kiln_llb::LoadedDefinition`) has already checked the graph's shape: decodable
//! ops, a terminal, edges and input indexes in range, output numbers, no cycle.
//!
//! | field | decision | why |
//! |---|---|---|
//! | `Op.inputs` | used | the graph's edges |
//! | `Op.platform` | used | an image source pulls that platform's manifest of an index; an exec op runs only where the executor can run the platform (the host's, or one QEMU user emulation is registered for), other OSes than linux are refused; `OSVersion` and `OSFeatures` (Windows) are ignored |
//! | `Op.constraints.filter` | refused unless empty | worker selection: there is one worker and no labels to match |
//! | `Meta.args`, `env`, `cwd`, `user`, `hostname`, `extraHosts`, `validExitCodes` | used | |
//! | `Meta.proxy_env` | used | `HTTP_PROXY` and `http_proxy` (and HTTPS, FTP, NO, ALL) join the environment, as in BuildKit, without entering the cache key |
//! | `Meta.ulimit`, `Meta.cgroupParent` | used | the runner sets the rlimits (names and values checked as docker does) and creates the step's cgroup under the parent |
//! | `Meta.removeMountStubsRecursive` | ignored | kiln always removes mount stubs and the parents it made for them (the recursive behaviour, see the runner's `stubs`) |
//! | `ExecOp.network`, `security` | used | behind the `network.host` and `security.insecure` entitlements, checked for every exec op when the graph is made (a Definition with one step the build may not run runs none); values outside the enums are refused |
//! | `ExecOp.secretenv` | used | |
//! | `ExecOp.cdiDevices` | optional ones skipped, others refused | kiln has no CDI devices |
//! | `Mount.input`, `selector`, `dest`, `output`, `readonly`, `mountType` | used | a mount type outside the enum is refused |
//! | `Mount.TmpfsOpt`, `cacheOpt`, `secretOpt`, `SSHOpt` | used | a sharing mode outside the enum is refused |
//! | `Mount.resultID` | refused | names a result of a gateway container, which a Definition cannot reach |
//! | `Mount.contentCache` | ignored | a cache-key hint: kiln keys a mount by its input's key, never looser than by content; values outside the enum are refused |
//! | `FileOp` actions | used | every field of copy, mkfile, mkdir, rm, symlink and chown (see `fileop`) |
//! | `MergeOp`, `DiffOp` | used | |
//! | `BuildOp` | refused | nested builds |
//! | `PassthroughOp` | refused | when loading |
//! | `SourceOp.identifier` | `docker-image://`, `git://`, `http(s)://`, `local://` used | other schemes refused |
//! | `SourceOp.attrs` | see below | an attribute not listed is refused |
//! | `OpMetadata.ignore_cache` | used | |
//! | `OpMetadata.description` | `llb.customname` names the vertex | the rest is for display |
//! | `OpMetadata.export_cache` | ignored | kiln exports no build cache |
//! | `OpMetadata.caps` | ignored | each field a capability stands for is checked itself |
//! | `OpMetadata.progress_group` | ignored | progress display only |
//! | `OpMetadata.linux_resources` | refused | per-step cgroup limits are not applied |
//! | `Definition.Source` | ignored | source maps, for display |
//!
//! Source attributes:
//!
//! | attribute | decision | why |
//! |---|---|---|
//! | `image.resolvemode` | used | `pull` asks the registry, `local` prefers the store, `default` as the session |
//! | `image.layerlimit` | used | only the first N layers |
//! | `image.checksum` | used | the name must resolve to this digest |
//! | `image.recordtype` | ignored | BuildKit's disk-usage bookkeeping |
//! | `local.includepattern(s)`, `excludepatterns`, `followpaths` | used | |
//! | `local.unique`, `local.session`, `local.sharedkeyhint`, `local.differ` | ignored | they only steer BuildKit's transfer and caching; kiln reads the directory itself and keys it by content |
//! | `local.metadatatransfer(exclude)` | refused | metadata-only transfers would give other file contents |
//! | `git.fullurl`, `keepgitdir`, `checksum`, `mountsshsock`, `knownsshhosts` | used | |
//! | `git.skipsubmodules` | used | submodules are checked out unless it is `true` |
//! | `git.fetchbycommit` | used | the checksum is the commit, fetched without resolving the ref |
//! | `git.mtime` | used | `commit` gives every file the commit's time; `checkout` is the default |
//! | `git.authtokensecret`, `git.authheadersecret` | used | the session's secrets of those names become an HTTP `Authorization` header |
//! | `git.sig.*` | refused | signatures are not verified: building unverified would defeat them |
//! | `git.bundle`, `git.checkoutbundle`, `oci.session`, `oci.store` | refused | bundles and OCI layouts are not supported |
//! | `http.checksum`, `filename`, `perm`, `uid`, `gid` | used | |
//! | `http.header.accept`, `http.header.user-agent` | used | the two headers BuildKit lets a build set; other `http.header.*` are refused |
//! | `http.authheadersecret` | used | the secret's value is the `Authorization` header |
//! | `http.sig.*` | refused | signatures are not verified |

use kiln_llb::{LoadedOp, pb};

use super::LlbError;
use crate::executor::Executor;

/// What kiln does with a source attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attr {
    /// The source reads it.
    Used,
    /// It cannot change the result.
    Ignored,
    /// Refused, with the reason.
    Refused(&'static str),
}

const SIGNATURES: &str = "signature verification is not supported";

/// The attributes of each source scheme.
const SOURCE_ATTRS: &[(&str, &[(&str, Attr)])] = &[
    (
        "docker-image",
        &[
            ("image.resolvemode", Attr::Used),
            ("image.layerlimit", Attr::Used),
            ("image.checksum", Attr::Used),
            ("image.recordtype", Attr::Ignored),
        ],
    ),
    (
        "local",
        &[
            ("local.includepattern", Attr::Used),
            ("local.includepatterns", Attr::Used),
            ("local.excludepatterns", Attr::Used),
            ("local.followpaths", Attr::Used),
            ("local.unique", Attr::Ignored),
            ("local.session", Attr::Ignored),
            ("local.sharedkeyhint", Attr::Ignored),
            ("local.differ", Attr::Ignored),
            (
                "local.metadatatransfer",
                Attr::Refused("metadata-only transfers are not supported"),
            ),
            (
                "local.metadatatransferexclude",
                Attr::Refused("metadata-only transfers are not supported"),
            ),
        ],
    ),
    (
        "git",
        &[
            ("git.fullurl", Attr::Used),
            ("git.keepgitdir", Attr::Used),
            ("git.checksum", Attr::Used),
            ("git.mountsshsock", Attr::Used),
            ("git.knownsshhosts", Attr::Used),
            ("git.skipsubmodules", Attr::Used),
            ("git.fetchbycommit", Attr::Used),
            ("git.mtime", Attr::Used),
            ("git.authtokensecret", Attr::Used),
            ("git.authheadersecret", Attr::Used),
            ("git.sig.pubkey", Attr::Refused(SIGNATURES)),
            ("git.sig.rejectexpired", Attr::Refused(SIGNATURES)),
            ("git.sig.requiresignedtag", Attr::Refused(SIGNATURES)),
            ("git.sig.ignoresignedtag", Attr::Refused(SIGNATURES)),
            ("git.bundle", Attr::Refused("git bundles are not supported")),
            (
                "git.checkoutbundle",
                Attr::Refused("git bundles are not supported"),
            ),
            (
                "oci.session",
                Attr::Refused("OCI layout stores are not supported"),
            ),
            (
                "oci.store",
                Attr::Refused("OCI layout stores are not supported"),
            ),
        ],
    ),
    (
        "http",
        &[
            ("http.checksum", Attr::Used),
            ("http.filename", Attr::Used),
            ("http.perm", Attr::Used),
            ("http.uid", Attr::Used),
            ("http.gid", Attr::Used),
            ("http.authheadersecret", Attr::Used),
            ("http.header.accept", Attr::Used),
            ("http.header.user-agent", Attr::Used),
            ("http.sig.pubkey", Attr::Refused(SIGNATURES)),
            ("http.sig.signature", Attr::Refused(SIGNATURES)),
        ],
    ),
];

/// The scheme of a source identifier as [`SOURCE_ATTRS`] names it (`https` counts as `http`).
fn scheme(identifier: &str) -> Option<&'static str> {
    let (scheme, _) = identifier.split_once("://")?;
    Some(match scheme {
        "docker-image" => "docker-image",
        "local" => "local",
        "git" => "git",
        "http" | "https" => "http",
        _ => return None,
    })
}

fn attr(scheme: &str, key: &str) -> Option<Attr> {
    let (_, attrs) = SOURCE_ATTRS.iter().find(|(s, _)| *s == scheme)?;
    // Header names are case-insensitive.
    let key = match key.strip_prefix("http.header.") {
        Some(name) => format!("http.header.{}", name.to_ascii_lowercase()),
        None => key.to_owned(),
    };
    attrs.iter().find(|(k, _)| *k == key).map(|(_, a)| *a)
}

/// Checks one op against the decisions above; the error names the op and the field.
pub(super) fn check_op(op: &LoadedOp, executor: &dyn Executor) -> Result<(), LlbError> {
    let digest = op.digest().to_string();
    let refuse = |field: String, reason: String| LlbError::Refused {
        digest: digest.clone(),
        field,
        reason,
    };
    let pb_op = op.op();
    if let Some(wanted) = &pb_op.platform {
        let wanted = kiln_llb::Platform::from_pb(wanted);
        if wanted.os != "linux" {
            return Err(refuse(
                "platform".to_owned(),
                format!("kiln builds linux platforms only, not {wanted}"),
            ));
        }
        // An image or a file op is the same work for any platform; a process must run as one.
        if matches!(pb_op.op, Some(pb::op::Op::Exec(_))) {
            executor
                .platform_support(&wanted)
                .map_err(|reason| refuse("platform".to_owned(), reason))?;
        }
    }
    if let Some(constraints) = &pb_op.constraints {
        if !constraints.filter.is_empty() {
            return Err(refuse(
                "constraints.filter".to_owned(),
                format!(
                    "there is one worker, which matches no filter ({})",
                    constraints.filter.join(", ")
                ),
            ));
        }
    }
    if let Some(metadata) = op.metadata() {
        if metadata.linux_resources.is_some() {
            return Err(refuse(
                "metadata.linux_resources".to_owned(),
                "per-step cgroup limits are not applied".to_owned(),
            ));
        }
    }
    match op.body() {
        Some(pb::op::Op::Exec(exec)) => check_exec(exec, &refuse),
        Some(pb::op::Op::Source(source)) => check_source(&digest, source),
        _ => Ok(()),
    }
}

fn check_exec(
    exec: &pb::ExecOp,
    refuse: &impl Fn(String, String) -> LlbError,
) -> Result<(), LlbError> {
    if pb::NetMode::try_from(exec.network).is_err() {
        return Err(refuse(
            "network".to_owned(),
            format!("unknown network mode {}", exec.network),
        ));
    }
    if pb::SecurityMode::try_from(exec.security).is_err() {
        return Err(refuse(
            "security".to_owned(),
            format!("unknown security mode {}", exec.security),
        ));
    }
    if let Some(device) = exec.cdi_devices.iter().find(|d| !d.optional) {
        return Err(refuse(
            "cdiDevices".to_owned(),
            format!(
                "device {:?} is not available: kiln has no CDI devices",
                device.name
            ),
        ));
    }
    for (i, mount) in exec.mounts.iter().enumerate() {
        let field = |name: &str| format!("mounts[{i}].{name}");
        if pb::MountType::try_from(mount.mount_type).is_err() {
            return Err(refuse(
                field("mountType"),
                format!("unknown mount type {}", mount.mount_type),
            ));
        }
        if !mount.result_id.is_empty() {
            return Err(refuse(
                field("resultID"),
                "mounts of gateway results cannot be named in a Definition".to_owned(),
            ));
        }
        if pb::MountContentCache::try_from(mount.content_cache).is_err() {
            return Err(refuse(
                field("contentCache"),
                format!("unknown content cache mode {}", mount.content_cache),
            ));
        }
        if let Some(cache) = &mount.cache_opt {
            if pb::CacheSharingOpt::try_from(cache.sharing).is_err() {
                return Err(refuse(
                    field("cacheOpt.sharing"),
                    format!("unknown sharing mode {}", cache.sharing),
                ));
            }
        }
    }
    Ok(())
}

fn check_source(digest: &str, source: &pb::SourceOp) -> Result<(), LlbError> {
    let Some(scheme) = scheme(&source.identifier) else {
        return Err(LlbError::UnsupportedSource {
            digest: digest.to_owned(),
            identifier: source.identifier.clone(),
        });
    };
    for key in source.attrs.keys() {
        match attr(scheme, key) {
            Some(Attr::Used | Attr::Ignored) => {}
            Some(Attr::Refused(reason)) => {
                return Err(LlbError::Refused {
                    digest: digest.to_owned(),
                    field: format!("attribute {key}"),
                    reason: reason.to_owned(),
                });
            }
            None => {
                return Err(LlbError::UnknownAttribute {
                    digest: digest.to_owned(),
                    scheme,
                    key: key.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::llbsolver::tests::{definition, session};

    /// The error of turning `op` into a graph, without the op digest in front.
    fn refusal(op: pb::Op, metadata: Option<pb::OpMetadata>) -> String {
        let store = tempfile::tempdir().unwrap();
        let session = session(store.path(), &[]);
        let definition = definition(op, metadata);
        let error = session
            .graph(&definition)
            .err()
            .expect("refused")
            .to_string();
        let prefix = format!("op {}: ", definition.ops()[0].digest());
        error
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{error:?} names the op"))
            .to_owned()
    }

    fn accepted(op: pb::Op, metadata: Option<pb::OpMetadata>) {
        let store = tempfile::tempdir().unwrap();
        let session = session(store.path(), &[]);
        if let Err(error) = session.graph(&definition(op, metadata)) {
            panic!("refused: {error}");
        }
    }

    fn source(identifier: &str, attrs: &[(&str, &str)]) -> pb::Op {
        pb::Op {
            op: Some(pb::op::Op::Source(pb::SourceOp {
                identifier: identifier.to_owned(),
                attrs: attrs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            })),
            ..Default::default()
        }
    }

    /// An exec op on a scratch root, changed by `change`.
    fn exec(change: impl FnOnce(&mut pb::ExecOp)) -> pb::Op {
        let mut exec = pb::ExecOp {
            meta: Some(pb::Meta {
                args: vec!["true".into()],
                ..Default::default()
            }),
            mounts: vec![pb::Mount {
                input: -1,
                dest: "/".into(),
                output: 0,
                ..Default::default()
            }],
            ..Default::default()
        };
        change(&mut exec);
        pb::Op {
            op: Some(pb::op::Op::Exec(exec)),
            ..Default::default()
        }
    }

    const IMAGE: &str = "docker-image://docker.io/library/busybox:latest";

    #[test]
    fn foreign_platforms_and_worker_constraints_are_refused() {
        let on = |os: &str, architecture: &str, variant: &str| pb::Op {
            platform: Some(pb::Platform {
                os: os.into(),
                architecture: architecture.into(),
                variant: variant.into(),
                ..Default::default()
            }),
            constraints: Some(pb::WorkerConstraints::default()),
            ..source(IMAGE, &[])
        };
        accepted(on("linux", "amd64", ""), None);
        accepted(on("linux", "x86_64", "v1"), None);
        // An image is pulled for any linux platform.
        accepted(on("linux", "arm64", ""), None);
        assert_eq!(
            refusal(on("windows", "amd64", ""), None),
            "platform is not supported: kiln builds linux platforms only, not windows/amd64"
        );
        // A process runs only where the executor says it can (the test executor: the host's).
        let exec_on = |architecture: &str| pb::Op {
            platform: Some(pb::Platform {
                os: "linux".into(),
                architecture: architecture.into(),
                ..Default::default()
            }),
            ..exec(|_| {})
        };
        let host = kiln_llb::Platform::host();
        accepted(exec_on(&host.architecture), None);
        let foreign = if host.architecture == "s390x" {
            "arm64"
        } else {
            "s390x"
        };
        assert_eq!(
            refusal(exec_on(foreign), None),
            format!(
                "platform is not supported: this executor runs {host} steps only, not linux/{foreign}"
            )
        );
        let constrained = pb::Op {
            constraints: Some(pb::WorkerConstraints {
                filter: vec!["labels.gpu==true".into()],
            }),
            ..source(IMAGE, &[])
        };
        assert_eq!(
            refusal(constrained, None),
            "constraints.filter is not supported: there is one worker, which matches no filter (labels.gpu==true)"
        );
    }

    #[test]
    fn metadata_with_cgroup_limits_is_refused_and_the_rest_is_not() {
        let limited = pb::OpMetadata {
            linux_resources: Some(pb::LinuxResources {
                memory: 1 << 30,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            refusal(exec(|_| {}), Some(limited)),
            "metadata.linux_resources is not supported: per-step cgroup limits are not applied"
        );
        let informational = pb::OpMetadata {
            description: [("com.docker.dockerfile.v1.command".into(), "RUN".into())].into(),
            export_cache: Some(pb::ExportCache { value: true }),
            caps: [("exec.meta.base".into(), true)].into(),
            progress_group: Some(pb::ProgressGroup {
                id: "g".into(),
                name: "group".into(),
                weak: false,
            }),
            ..Default::default()
        };
        accepted(exec(|_| {}), Some(informational));
    }

    #[test]
    fn exec_fields_kiln_cannot_honour_are_refused() {
        assert_eq!(
            refusal(exec(|e| e.network = 7), None),
            "network is not supported: unknown network mode 7"
        );
        assert_eq!(
            refusal(exec(|e| e.security = 2), None),
            "security is not supported: unknown security mode 2"
        );
        assert_eq!(
            refusal(
                exec(|e| e.cdi_devices.push(pb::CdiDevice {
                    name: "vendor.com/gpu=0".into(),
                    optional: false,
                })),
                None
            ),
            "cdiDevices is not supported: device \"vendor.com/gpu=0\" is not available: kiln has no CDI devices"
        );
        // An optional device is simply not there.
        accepted(
            exec(|e| {
                e.cdi_devices.push(pb::CdiDevice {
                    name: "vendor.com/gpu=0".into(),
                    optional: true,
                });
            }),
            None,
        );
        assert_eq!(
            refusal(exec(|e| e.mounts[0].result_id = "r1".into()), None),
            "mounts[0].resultID is not supported: mounts of gateway results cannot be named in a Definition"
        );
        assert_eq!(
            refusal(exec(|e| e.mounts[0].mount_type = 9), None),
            "mounts[0].mountType is not supported: unknown mount type 9"
        );
        assert_eq!(
            refusal(exec(|e| e.mounts[0].content_cache = 5), None),
            "mounts[0].contentCache is not supported: unknown content cache mode 5"
        );
        let cache = |sharing: i32| {
            exec(move |e| {
                e.mounts.push(pb::Mount {
                    input: -1,
                    dest: "/cache".into(),
                    output: -1,
                    mount_type: pb::MountType::Cache.into(),
                    cache_opt: Some(pb::CacheOpt {
                        id: "c".into(),
                        sharing,
                    }),
                    ..Default::default()
                });
            })
        };
        accepted(cache(pb::CacheSharingOpt::Locked.into()), None);
        assert_eq!(
            refusal(cache(3), None),
            "mounts[1].cacheOpt.sharing is not supported: unknown sharing mode 3"
        );
        // What kiln does itself, or what cannot change a result, passes.
        accepted(
            exec(|e| {
                let meta = e.meta.as_mut().unwrap();
                meta.remove_mount_stubs_recursive = true;
                meta.proxy_env = Some(pb::ProxyEnv {
                    http_proxy: "http://proxy:3128".into(),
                    ..Default::default()
                });
                e.mounts[0].content_cache = pb::MountContentCache::On.into();
            }),
            None,
        );
    }

    #[test]
    fn source_attributes_are_used_ignored_or_refused_by_name() {
        accepted(
            source(
                IMAGE,
                &[
                    ("image.resolvemode", "pull"),
                    ("image.recordtype", "internal"),
                ],
            ),
            None,
        );
        accepted(
            source(
                "local://context",
                &[
                    ("local.unique", "x"),
                    ("local.session", "s"),
                    ("local.sharedkeyhint", "context"),
                    ("local.differ", "none"),
                    ("local.followpaths", "[\"Dockerfile\"]"),
                ],
            ),
            None,
        );
        accepted(
            source(
                "https://example.com/f",
                &[
                    ("http.header.User-Agent", "kiln"),
                    ("http.header.accept", "*/*"),
                ],
            ),
            None,
        );
        for (identifier, key, why) in [
            (
                "git://github.com/moby/buildkit",
                "git.sig.pubkey",
                "signature verification is not supported",
            ),
            (
                "git://github.com/moby/buildkit",
                "git.bundle",
                "git bundles are not supported",
            ),
            (
                "git://github.com/moby/buildkit",
                "oci.store",
                "OCI layout stores are not supported",
            ),
            (
                "https://example.com/f",
                "http.sig.signature",
                "signature verification is not supported",
            ),
            (
                "local://context",
                "local.metadatatransfer",
                "metadata-only transfers are not supported",
            ),
        ] {
            assert_eq!(
                refusal(source(identifier, &[(key, "x")]), None),
                format!("attribute {key} is not supported: {why}")
            );
        }
        assert_eq!(
            refusal(source(IMAGE, &[("image.colour", "red")]), None),
            "unknown attribute \"image.colour\" for docker-image sources"
        );
        assert_eq!(
            refusal(
                source("https://example.com/f", &[("http.header.cookie", "a=b")]),
                None
            ),
            "unknown attribute \"http.header.cookie\" for http sources"
        );
        // An attribute of another kind of source is not this one's.
        assert_eq!(
            refusal(source(IMAGE, &[("local.unique", "x")]), None),
            "unknown attribute \"local.unique\" for docker-image sources"
        );
        assert_eq!(
            refusal(source("oci-layout://store/image", &[]), None),
            "unsupported source \"oci-layout://store/image\""
        );
    }

    #[test]
    fn source_attribute_values_are_checked() {
        for (attr, value, wanted) in [
            (
                "image.resolvemode",
                "sometimes",
                "invalid resolvemode: sometimes",
            ),
            ("image.layerlimit", "0", "invalid layer limit 0"),
            ("image.layerlimit", "two", "invalid layer limit two"),
            ("image.checksum", "md5:00", "invalid image checksum md5:00"),
        ] {
            assert_eq!(refusal(source(IMAGE, &[(attr, value)]), None), wanted);
        }
        assert_eq!(
            refusal(
                source("git://github.com/moby/buildkit", &[("git.mtime", "now")]),
                None
            ),
            "invalid git.mtime \"now\": expected checkout or commit"
        );
        accepted(
            source(
                "git://github.com/moby/buildkit",
                &[("git.mtime", "commit"), ("git.skipsubmodules", "true")],
            ),
            None,
        );
    }
}
