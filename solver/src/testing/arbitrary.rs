//! Definitions made from arbitrary bytes, for fuzzers and randomized tests of whatever takes
//! a client's LLB (the solver's loading and planning, the daemon's `Solve`).

use std::collections::HashMap;

use kiln_llb::pb;
use kiln_llb::prost::Message as _;

/// Reads bytes one at a time, answering zero when they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    fn pick<'t>(&mut self, from: &[&'t str]) -> &'t str {
        from[usize::from(self.next()) % from.len()]
    }

    /// A small signed number, mostly around the valid range of indexes (-1 and up).
    fn index(&mut self) -> i64 {
        i64::from(self.next() % 8) - 2
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const PATHS: &[&str] = &["/", "/a", "a/b", "/a/../..", "", "/c/", "/*", "//x"];
const IDENTIFIERS: &[&str] = &[
    "docker-image://docker.io/library/busybox:latest",
    "docker-image://",
    "local://context",
    "local://",
    "git://github.com/moby/buildkit#main:docs",
    "git://",
    "git://host/repo#-x",
    "https://example.com/file",
    "http://",
    "oci-layout://store",
    "",
];
const ATTRS: &[&str] = &[
    "local.includepatterns",
    "local.excludepatterns",
    "local.followpaths",
    "local.unique",
    "git.fullurl",
    "git.keepgitdir",
    "git.mtime",
    "git.skipsubmodules",
    "git.fetchbycommit",
    "git.checksum",
    "git.authtokensecret",
    "http.filename",
    "http.perm",
    "http.uid",
    "http.header.accept",
    "http.header.x",
    "http.authheadersecret",
    "image.resolvemode",
    "image.layerlimit",
    "image.checksum",
    "unknown",
];
const VALUES: &[&str] = &[
    "",
    "true",
    "commit",
    "[\"a\", \"b/*\"]",
    "[\"\\u00",
    "[",
    "0755",
    "-1",
    "99999999999",
    "sha256:0000",
    "..",
    "a/b",
    "https://host/repo.git",
    "pull",
    "\u{0}",
];

/// A Definition of up to 12 ops made from `data`, each a decoded `Op` or made from a template
/// of each kind, its inputs pointed at earlier ops, with a terminal naming the last: a graph
/// that gets past the loader's checks to what comes after them.
pub fn arbitrary_definition(data: &[u8]) -> pb::Definition {
    structured(&mut Bytes(data))
}

fn structured(bytes: &mut Bytes<'_>) -> pb::Definition {
    let mut def = Vec::new();
    let mut digests: Vec<String> = Vec::new();
    let mut metadata = HashMap::new();
    while !bytes.is_empty() && def.len() < 12 {
        let kind = bytes.next();
        let mut op = match kind % 8 {
            0 => {
                let len = usize::from(bytes.next());
                pb::Op::decode(bytes.take(len)).unwrap_or_default()
            }
            1 => source(bytes),
            2 | 3 => exec(bytes),
            4 | 5 => file(bytes),
            6 => pb::Op {
                op: Some(pb::op::Op::Merge(pb::MergeOp {
                    inputs: (0..bytes.next() % 4)
                        .map(|_| pb::MergeInput {
                            input: bytes.index(),
                        })
                        .collect(),
                })),
                ..Default::default()
            },
            _ => pb::Op {
                op: Some(pb::op::Op::Diff(pb::DiffOp {
                    lower: Some(pb::LowerDiffInput {
                        input: bytes.index(),
                    }),
                    upper: (kind & 0x80 != 0).then(|| pb::UpperDiffInput {
                        input: bytes.index(),
                    }),
                })),
                ..Default::default()
            },
        };
        // Inputs: as many as the op's fields may name, each an earlier op's output.
        if !digests.is_empty() {
            let wanted = usize::from(bytes.next() % 4);
            op.inputs = (0..wanted)
                .map(|_| pb::Input {
                    digest: digests[usize::from(bytes.next()) % digests.len()].clone(),
                    index: bytes.index().max(0),
                })
                .collect();
        } else {
            op.inputs.clear();
        }
        if kind & 0x40 != 0 {
            op.platform = Some(pb::Platform {
                os: bytes.pick(&["linux", "windows"]).into(),
                architecture: bytes.pick(&["amd64", "arm64", "x86_64"]).into(),
                variant: bytes.pick(&["", "v1", "v8"]).into(),
                ..Default::default()
            });
        }
        let digest = kiln_llb::op_digest(&op).to_string();
        if kind & 0x20 != 0 {
            let len = usize::from(bytes.next());
            let meta = pb::OpMetadata::decode(bytes.take(len)).unwrap_or_default();
            metadata.insert(digest.clone(), meta);
        }
        def.push(kiln_llb::marshal_op(&op));
        digests.push(digest);
    }
    if let Some(last) = digests.last() {
        let terminal = pb::Op {
            inputs: vec![pb::Input {
                digest: last.clone(),
                index: i64::from(bytes.next() % 3),
            }],
            ..Default::default()
        };
        def.push(kiln_llb::marshal_op(&terminal));
    }
    pb::Definition {
        def,
        metadata: metadata.into_iter().collect(),
        ..Default::default()
    }
}

fn source(bytes: &mut Bytes<'_>) -> pb::Op {
    let identifier = bytes.pick(IDENTIFIERS).to_owned();
    let attrs = (0..bytes.next() % 4)
        .map(|_| (bytes.pick(ATTRS).to_owned(), bytes.pick(VALUES).to_owned()))
        .collect();
    pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp { identifier, attrs })),
        ..Default::default()
    }
}

fn exec(bytes: &mut Bytes<'_>) -> pb::Op {
    let flags = bytes.next();
    let mounts = (0..bytes.next() % 4)
        .map(|i| pb::Mount {
            input: bytes.index(),
            selector: bytes.pick(PATHS).into(),
            dest: if i == 0 {
                "/".into()
            } else {
                bytes.pick(PATHS).into()
            },
            output: bytes.index(),
            readonly: bytes.next() % 2 == 0,
            mount_type: i32::from(bytes.next() % 6),
            tmpfs_opt: (flags & 1 != 0).then(|| pb::TmpfsOpt {
                size: i64::from(bytes.next()) - 1,
            }),
            cache_opt: (flags & 2 != 0).then(|| pb::CacheOpt {
                id: bytes.pick(PATHS).into(),
                sharing: i32::from(bytes.next() % 4),
            }),
            result_id: if flags & 4 != 0 {
                "r".into()
            } else {
                String::new()
            },
            content_cache: i32::from(bytes.next() % 4),
            ..Default::default()
        })
        .collect();
    pb::Op {
        op: Some(pb::op::Op::Exec(pb::ExecOp {
            meta: (flags & 8 != 0).then(|| pb::Meta {
                args: vec![bytes.pick(PATHS).into()],
                cwd: bytes.pick(PATHS).into(),
                proxy_env: (flags & 16 != 0).then(pb::ProxyEnv::default),
                ..Default::default()
            }),
            mounts,
            network: i32::from(bytes.next() % 4),
            security: i32::from(bytes.next() % 3),
            cdi_devices: if flags & 32 != 0 {
                vec![pb::CdiDevice {
                    name: "vendor.com/gpu=0".into(),
                    optional: flags & 64 != 0,
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn file(bytes: &mut Bytes<'_>) -> pb::Op {
    let actions = (0..bytes.next() % 4)
        .map(|_| {
            let action = match bytes.next() % 6 {
                0 => pb::file_action::Action::Copy(pb::FileActionCopy {
                    src: bytes.pick(PATHS).into(),
                    dest: bytes.pick(PATHS).into(),
                    mode: i32::from(bytes.next()) - 1,
                    mode_str: bytes.pick(&["", "u+x", "bogus"]).into(),
                    include_patterns: vec![bytes.pick(PATHS).into()],
                    ..Default::default()
                }),
                1 => pb::file_action::Action::Mkfile(pb::FileActionMkFile {
                    path: bytes.pick(PATHS).into(),
                    mode: i32::from(bytes.next()),
                    ..Default::default()
                }),
                2 => pb::file_action::Action::Mkdir(pb::FileActionMkDir {
                    path: bytes.pick(PATHS).into(),
                    make_parents: true,
                    owner: Some(pb::ChownOpt {
                        user: Some(pb::UserOpt {
                            user: Some(pb::user_opt::User::ByName(pb::NamedUserOpt {
                                name: bytes.pick(&["root", "1000", ""]).into(),
                                input: bytes.index(),
                            })),
                        }),
                        group: None,
                    }),
                    ..Default::default()
                }),
                3 => pb::file_action::Action::Rm(pb::FileActionRm {
                    path: bytes.pick(PATHS).into(),
                    allow_wildcard: true,
                    ..Default::default()
                }),
                4 => pb::file_action::Action::Symlink(pb::FileActionSymlink {
                    oldpath: bytes.pick(PATHS).into(),
                    newpath: bytes.pick(PATHS).into(),
                    ..Default::default()
                }),
                _ => return pb::FileAction::default(),
            };
            pb::FileAction {
                input: bytes.index(),
                secondary_input: bytes.index(),
                output: bytes.index(),
                action: Some(action),
            }
        })
        .collect();
    pb::Op {
        op: Some(pb::op::Op::File(pb::FileOp { actions })),
        ..Default::default()
    }
}
