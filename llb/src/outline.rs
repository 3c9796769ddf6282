//! An op's definition as named fields (`command`, `working directory`, `mount /cache`,
//! `action 2`, …), the words a user would use for its parts, so that an explanation can say
//! which part of a step changed between two builds.
//!
//! What could hold a secret is left out or digested: environment values are not fields (a
//! build arg may be a token), and a file an op writes is given by the sha256 of its content.
//! A value is cut at [`MAX_VALUE`] bytes.
//!
//! ```
//! use kiln_llb::{outline, pb};
//!
//! let exec = pb::ExecOp {
//!     meta: Some(pb::Meta {
//!         args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
//!         cwd: "/app".into(),
//!         ..Default::default()
//!     }),
//!     ..Default::default()
//! };
//! let fields = outline::exec_fields(&exec);
//! assert_eq!(fields[0], ("command".to_owned(), "/bin/sh -c 'echo hi'".to_owned()));
//! assert_eq!(fields[1], ("working directory".to_owned(), "/app".to_owned()));
//! ```

use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

use crate::pb;

/// The longest value kept, in bytes; a longer one ends in `…`.
pub const MAX_VALUE: usize = 1024;

/// The fields of an exec or file op; other ops have none worth naming.
pub fn fields(op: &pb::Op) -> Vec<(String, String)> {
    match &op.op {
        Some(pb::op::Op::Exec(exec)) => exec_fields(exec),
        Some(pb::op::Op::File(file)) => file_fields(file),
        _ => Vec::new(),
    }
}

/// A process's fields: its command (its arguments as a shell would read them back), working
/// directory,
/// user, network and security modes, extra hosts and each mount but the root.
pub fn exec_fields(exec: &pb::ExecOp) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut push = |name: &str, value: String| {
        if !value.is_empty() {
            fields.push((name.to_owned(), cut(value)));
        }
    };
    if let Some(meta) = &exec.meta {
        let words: Vec<String> = meta.args.iter().map(|a| shell_word(a)).collect();
        push("command", words.join(" "));
        push("working directory", meta.cwd.clone());
        push("user", meta.user.clone());
        push("hostname", meta.hostname.clone());
        let hosts: Vec<String> = meta
            .extra_hosts
            .iter()
            .map(|h| format!("{}={}", h.host, h.ip))
            .collect();
        push("extra hosts", hosts.join(" "));
        let codes: Vec<String> = meta.valid_exit_codes.iter().map(i32::to_string).collect();
        push("valid exit codes", codes.join(" "));
    }
    if exec.network != 0 {
        push(
            "network",
            lower(pb::NetMode::try_from(exec.network).ok(), exec.network),
        );
    }
    if exec.security != 0 {
        let mode = pb::SecurityMode::try_from(exec.security).ok();
        push("security", lower(mode, exec.security));
    }
    for secret in &exec.secretenv {
        push(
            &format!("secret env {}", secret.name),
            format!("id={}", secret.id),
        );
    }
    for mount in exec.mounts.iter().filter(|m| m.dest != "/") {
        push(&format!("mount {}", mount.dest), mount_text(mount));
    }
    fields
}

/// A file op's fields: `action N` (from 1) for each action, as `copy SRC -> DEST (options)`,
/// `mkdir PATH (mode 755)`, `mkfile PATH (content sha256:…)`, `rm PATH` or
/// `symlink OLD -> NEW`.
pub fn file_fields(file: &pb::FileOp) -> Vec<(String, String)> {
    file.actions
        .iter()
        .enumerate()
        .map(|(i, action)| (format!("action {}", i + 1), cut(action_text(action))))
        .collect()
}

fn action_text(action: &pb::FileAction) -> String {
    use pb::file_action::Action;
    let mut options = Vec::new();
    let text = match &action.action {
        Some(Action::Copy(c)) => {
            mode_option(&mut options, c.mode, &c.mode_str);
            owner_option(&mut options, c.owner.as_ref());
            let flags = [
                (c.follow_symlink, "follow symlinks"),
                (c.dir_copy_contents, "contents"),
                (c.attempt_unpack_docker_compatibility, "unpack"),
                (c.create_dest_path, "create parents"),
                (c.allow_wildcard, "wildcards"),
                (c.always_replace_existing_dest_paths, "replace"),
            ];
            options.extend(
                flags
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, n)| n.to_string()),
            );
            if !c.include_patterns.is_empty() {
                options.push(format!("include {}", c.include_patterns.join(" ")));
            }
            if !c.exclude_patterns.is_empty() {
                options.push(format!("exclude {}", c.exclude_patterns.join(" ")));
            }
            if c.timestamp != -1 && c.timestamp != 0 {
                options.push(format!("time {}", c.timestamp));
            }
            format!("copy {} -> {}", c.src, c.dest)
        }
        Some(Action::Mkdir(m)) => {
            mode_option(&mut options, m.mode, "");
            owner_option(&mut options, m.owner.as_ref());
            if m.make_parents {
                options.push("parents".to_owned());
            }
            format!("mkdir {}", m.path)
        }
        Some(Action::Mkfile(m)) => {
            mode_option(&mut options, m.mode, "");
            owner_option(&mut options, m.owner.as_ref());
            let digest = Sha256::digest(&m.data);
            options.push(format!(
                "{} bytes, sha256:{}",
                m.data.len(),
                hex::encode(&digest[..8])
            ));
            format!("mkfile {}", m.path)
        }
        Some(Action::Rm(r)) => {
            if r.allow_not_found {
                options.push("if present".to_owned());
            }
            if r.allow_wildcard {
                options.push("wildcards".to_owned());
            }
            format!("rm {}", r.path)
        }
        Some(Action::Symlink(s)) => {
            owner_option(&mut options, s.owner.as_ref());
            format!("symlink {} -> {}", s.oldpath, s.newpath)
        }
        None => String::new(),
    };
    if options.is_empty() {
        text
    } else {
        format!("{text} ({})", options.join(", "))
    }
}

fn mode_option(options: &mut Vec<String>, mode: i32, mode_str: &str) {
    if !mode_str.is_empty() {
        options.push(format!("mode {mode_str}"));
    } else if mode >= 0 {
        options.push(format!("mode {mode:o}"));
    }
}

fn owner_option(options: &mut Vec<String>, owner: Option<&pb::ChownOpt>) {
    let Some(owner) = owner else { return };
    let name = |user: Option<&pb::UserOpt>| match user.and_then(|u| u.user.as_ref()) {
        Some(pb::user_opt::User::ByName(n)) => n.name.clone(),
        Some(pb::user_opt::User::ById(id)) => id.to_string(),
        None => String::new(),
    };
    let (user, group) = (name(owner.user.as_ref()), name(owner.group.as_ref()));
    options.push(if group.is_empty() {
        format!("owner {user}")
    } else {
        format!("owner {user}:{group}")
    });
}

fn mount_text(mount: &pb::Mount) -> String {
    let mut text = match pb::MountType::try_from(mount.mount_type) {
        Ok(pb::MountType::Cache) => {
            let cache = mount.cache_opt.clone().unwrap_or_default();
            let sharing = pb::CacheSharingOpt::try_from(cache.sharing).ok();
            format!(
                "cache id={} sharing={}",
                cache.id,
                lower(sharing, cache.sharing)
            )
        }
        Ok(pb::MountType::Tmpfs) => {
            let size = mount.tmpfs_opt.as_ref().map_or(0, |t| t.size);
            if size > 0 {
                format!("tmpfs size={size}")
            } else {
                "tmpfs".to_owned()
            }
        }
        Ok(pb::MountType::Secret) => {
            let secret = mount.secret_opt.clone().unwrap_or_default();
            format!("secret id={}", secret.id)
        }
        Ok(pb::MountType::Ssh) => {
            let ssh = mount.ssh_opt.clone().unwrap_or_default();
            format!("ssh id={}", ssh.id)
        }
        _ => format!("bind of input {}", mount.input),
    };
    if !mount.selector.is_empty() {
        let _ = write!(text, " source={}", mount.selector);
    }
    if mount.readonly {
        text.push_str(" readonly");
    }
    text
}

/// `word` as a POSIX shell reads it back: as it is when that is safe, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:,@%+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// An enum's name in lower case, or its number when it has none.
fn lower<E: EnumName>(value: Option<E>, raw: i32) -> String {
    value.map_or_else(|| raw.to_string(), |v| v.name().to_ascii_lowercase())
}

trait EnumName {
    fn name(&self) -> &'static str;
}

macro_rules! enum_name {
    ($($t:ty),*) => {$(
        impl EnumName for $t {
            fn name(&self) -> &'static str {
                self.as_str_name()
            }
        }
    )*};
}
enum_name!(pb::NetMode, pb::SecurityMode, pb::CacheSharingOpt);

/// `value` cut to at most [`MAX_VALUE`] bytes on a character boundary, ending in `…` when cut.
fn cut(mut value: String) -> String {
    if value.len() > MAX_VALUE {
        let mut end = MAX_VALUE - '…'.len_utf8();
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
        value.push('…');
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_actions_name_paths_and_options_and_digest_written_content() {
        let copy = pb::FileAction {
            action: Some(pb::file_action::Action::Copy(pb::FileActionCopy {
                src: "/app.txt".into(),
                dest: "/srv/app.txt".into(),
                mode: -1,
                timestamp: -1,
                create_dest_path: true,
                owner: Some(pb::ChownOpt {
                    user: Some(pb::UserOpt {
                        user: Some(pb::user_opt::User::ById(10)),
                    }),
                    group: None,
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let mkfile = pb::FileAction {
            action: Some(pb::file_action::Action::Mkfile(pb::FileActionMkFile {
                path: "/token".into(),
                mode: 0o600,
                data: b"secret".to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let fields = file_fields(&pb::FileOp {
            actions: vec![copy, mkfile],
        });
        assert_eq!(
            fields,
            [
                (
                    "action 1".to_owned(),
                    "copy /app.txt -> /srv/app.txt (owner 10, create parents)".to_owned()
                ),
                (
                    "action 2".to_owned(),
                    format!(
                        "mkfile /token (mode 600, 6 bytes, sha256:{})",
                        &hex::encode(Sha256::digest(b"secret"))[..16]
                    )
                ),
            ]
        );
        assert!(!fields[1].1.contains("secret"));
    }

    #[test]
    fn mounts_and_modes_are_named_and_environment_values_never() {
        let exec = pb::ExecOp {
            meta: Some(pb::Meta {
                args: vec!["make".into()],
                env: vec!["TOKEN=hunter2".into()],
                ..Default::default()
            }),
            network: pb::NetMode::None as i32,
            mounts: vec![
                pb::Mount {
                    dest: "/".into(),
                    ..Default::default()
                },
                pb::Mount {
                    dest: "/root/.cache".into(),
                    mount_type: pb::MountType::Cache as i32,
                    cache_opt: Some(pb::CacheOpt {
                        id: "go".into(),
                        sharing: pb::CacheSharingOpt::Locked as i32,
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let fields = exec_fields(&exec);
        assert_eq!(
            fields,
            [
                ("command".to_owned(), "make".to_owned()),
                ("network".to_owned(), "none".to_owned()),
                (
                    "mount /root/.cache".to_owned(),
                    "cache id=go sharing=locked".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_command_reads_as_a_shell_would_read_it_back() {
        let args = ["sh", "-c", "echo 'hi' > /out", ""];
        let words: Vec<String> = args.iter().map(|a| shell_word(a)).collect();
        assert_eq!(words.join(" "), r#"sh -c 'echo '\''hi'\'' > /out' ''"#);
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_VALUE);
        let cut = cut(long);
        assert!(cut.len() <= MAX_VALUE, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(super::cut("short".into()), "short");
    }
}
