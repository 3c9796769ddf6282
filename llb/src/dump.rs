//! Human-readable dumps of a Definition: `buildctl debug dump-llb` JSON lines, and Graphviz DOT.
//!
//! The JSON is byte-for-byte what BuildKit's `buildctl debug dump-llb` prints, which is Go's
//! `encoding/json` applied to BuildKit's generated protobuf structs. serde_json cannot be told
//! to follow Go's rules, so a small writer here does:
//! - keys are the proto field names (`secondaryInput`, `proxy_env`, `Architecture`), in field
//!   order; a oneof is an object under the Go field name (`"Op":{"exec":..}`,
//!   `"Action":{"mkdir":..}`, `"User":{"byName":..}`) as BuildKit's `solver/pb/json.go` writes it,
//!   which, among other things, leaves out symlink file actions;
//! - zero values are left out (`omitempty`), except `input`, `secondaryInput` and `output` of a
//!   file action; an empty but present message is `{}`;
//! - enums and 64-bit integers are plain numbers, `bytes` are standard base64;
//! - maps are objects with sorted keys;
//! - strings escape `<`, `>`, `&`, U+2028 and U+2029 as `\u` sequences, like Go's HTML-safe
//!   encoder.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;

use crate::definition::decode_op;
use crate::digest::Digest;
use crate::error::Error;
use crate::pb;

/// Dumps each op of `definition`, in `def` order, as one JSON object per line:
/// `{"Op":..,"Digest":"sha256:..","OpMetadata":..}`, exactly like `buildctl debug dump-llb`.
pub fn to_json_lines(definition: &pb::Definition) -> Result<String, Error> {
    let mut out = String::new();
    for (position, bytes) in definition.def.iter().enumerate() {
        let (digest, op) = decode_op(position, bytes)?;
        let metadata = definition
            .metadata
            .get(&digest.to_string())
            .cloned()
            .unwrap_or_default();
        let mut obj = Obj::new(&mut out);
        obj.key("Op");
        op.write_json(obj.out);
        obj.key("Digest");
        write_str(obj.out, &digest.to_string());
        obj.key("OpMetadata");
        metadata.write_json(obj.out);
        obj.end();
        out.push('\n');
    }
    Ok(out)
}

/// The JSON of one op, as `buildctl debug dump-llb` prints its `"Op"` field.
pub fn op_to_json(op: &pb::Op) -> String {
    let mut out = String::new();
    op.write_json(&mut out);
    out
}

/// Renders `definition` as a Graphviz DOT digraph: one node per op, named by its short digest
/// (12 hex digits) and labelled with its `llb.customname` or else a summary of the op; one edge
/// per input, labelled with the mount point for exec mounts other than `/`.
pub fn to_dot(definition: &pb::Definition) -> Result<String, Error> {
    let mut ops = Vec::with_capacity(definition.def.len());
    for (position, bytes) in definition.def.iter().enumerate() {
        ops.push(decode_op(position, bytes)?);
    }
    let mut out = String::from("digraph {\n");
    for (digest, op) in &ops {
        let name = definition
            .metadata
            .get(&digest.to_string())
            .and_then(|m| m.description.get("llb.customname"))
            .cloned()
            .unwrap_or_else(|| summary(op));
        let shape = match &op.op {
            Some(pb::op::Op::Source(_)) => "ellipse",
            Some(pb::op::Op::Exec(_)) => "box",
            Some(pb::op::Op::Build(_)) => "box3d",
            Some(pb::op::Op::Merge(_)) => "invtriangle",
            Some(pb::op::Op::Diff(_)) => "doublecircle",
            Some(pb::op::Op::File(_)) => "note",
            Some(pb::op::Op::Passthrough(_)) | None => "plaintext",
        };
        let _ = writeln!(
            out,
            "  {} [label={} shape={}];",
            dot_string(&digest.short()),
            dot_string(&name),
            dot_string(shape)
        );
    }
    for (digest, op) in &ops {
        for (i, input) in op.inputs.iter().enumerate() {
            let mut label = "";
            if let Some(pb::op::Op::Exec(exec)) = &op.op {
                for mount in &exec.mounts {
                    if usize::try_from(mount.input) == Ok(i) && mount.dest != "/" {
                        label = &mount.dest;
                    }
                }
            }
            let from = Digest::parse(&input.digest)
                .map(|d| d.short())
                .unwrap_or_else(|_| input.digest.clone());
            let _ = writeln!(
                out,
                "  {} -> {} [label={}];",
                dot_string(&from),
                dot_string(&digest.short()),
                dot_string(label)
            );
        }
    }
    out.push_str("}\n");
    Ok(out)
}

/// A one-line description of what an op does.
pub fn summary(op: &pb::Op) -> String {
    match &op.op {
        Some(pb::op::Op::Source(source)) => source.identifier.clone(),
        Some(pb::op::Op::Exec(exec)) => exec
            .meta
            .as_ref()
            .map(|m| m.args.join(" "))
            .unwrap_or_default(),
        Some(pb::op::Op::Build(_)) => "build".to_owned(),
        Some(pb::op::Op::Merge(_)) => "merge".to_owned(),
        Some(pb::op::Op::Diff(_)) => "diff".to_owned(),
        Some(pb::op::Op::Passthrough(pass)) => format!("passthrough{{id={}}}", pass.id),
        Some(pb::op::Op::File(file)) => file
            .actions
            .iter()
            .map(|action| match &action.action {
                Some(pb::file_action::Action::Copy(c)) => {
                    format!("copy{{src={}, dest={}}}", c.src, c.dest)
                }
                Some(pb::file_action::Action::Mkfile(m)) => format!("mkfile{{path={}}}", m.path),
                Some(pb::file_action::Action::Mkdir(m)) => format!("mkdir{{path={}}}", m.path),
                Some(pb::file_action::Action::Rm(r)) => format!("rm{{path={}}}", r.path),
                Some(pb::file_action::Action::Symlink(s)) => {
                    format!("symlink{{oldpath={}, newpath={}}}", s.oldpath, s.newpath)
                }
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join(","),
        None => "result".to_owned(),
    }
}

/// `s` as a quoted Graphviz DOT string (quotes, backslashes and control characters escaped).
pub fn dot_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON array of strings, encoded as Go's `json.Marshal` does.
pub(crate) fn go_json_strings(values: &[String]) -> String {
    let mut out = String::new();
    write_list(&mut out, values, |out, v| write_str(out, v));
    out
}

/// Writes `values` as a JSON array, each item with `write`.
fn write_list<T>(out: &mut String, values: &[T], mut write: impl FnMut(&mut String, &T)) {
    out.push('[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(out, v);
    }
    out.push(']');
}

/// Writes `s` as a JSON string the way Go's `encoding/json` does (HTML-safe).
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An open JSON object; each method adds one field, leaving zero values out.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        write_str(self.out, key);
        self.out.push(':');
    }

    fn end(self) {
        self.out.push('}');
    }

    fn str(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.key(key);
            write_str(self.out, value);
        }
    }

    fn int(&mut self, key: &str, value: impl Into<i64>) {
        let value = value.into();
        if value != 0 {
            self.int_always(key, value);
        }
    }

    fn int_always(&mut self, key: &str, value: i64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    fn uint(&mut self, key: &str, value: impl Into<u64>) {
        let value = value.into();
        if value != 0 {
            self.key(key);
            let _ = write!(self.out, "{value}");
        }
    }

    fn bool(&mut self, key: &str, value: bool) {
        if value {
            self.key(key);
            self.out.push_str("true");
        }
    }

    fn bytes(&mut self, key: &str, value: &[u8]) {
        if !value.is_empty() {
            self.key(key);
            write_str(
                self.out,
                &base64::engine::general_purpose::STANDARD.encode(value),
            );
        }
    }

    /// A non-empty list, each item written with `write`.
    fn list<T>(&mut self, key: &str, values: &[T], write: impl FnMut(&mut String, &T)) {
        if !values.is_empty() {
            self.key(key);
            write_list(self.out, values, write);
        }
    }

    fn strs(&mut self, key: &str, values: &[String]) {
        self.list(key, values, |out, v| write_str(out, v));
    }

    fn ints<T: Copy + Into<i64>>(&mut self, key: &str, values: &[T]) {
        self.list(key, values, |out, v| {
            let _ = write!(out, "{}", (*v).into());
        });
    }

    fn msg<T: ToJson>(&mut self, key: &str, value: Option<&T>) {
        if let Some(value) = value {
            self.key(key);
            value.write_json(self.out);
        }
    }

    fn msgs<T: ToJson>(&mut self, key: &str, values: &[T]) {
        self.list(key, values, |out, v| v.write_json(out));
    }

    fn map<V>(
        &mut self,
        key: &str,
        map: &BTreeMap<String, V>,
        mut write: impl FnMut(&mut String, &V),
    ) {
        if !map.is_empty() {
            self.key(key);
            let mut inner = Obj::new(self.out);
            for (k, v) in map {
                inner.key(k);
                write(inner.out, v);
            }
            inner.end();
        }
    }

    fn map_str(&mut self, key: &str, map: &BTreeMap<String, String>) {
        self.map(key, map, |out, v| write_str(out, v));
    }

    fn map_bool(&mut self, key: &str, map: &BTreeMap<String, bool>) {
        self.map(key, map, |out, v| {
            out.push_str(if *v { "true" } else { "false" })
        });
    }

    fn map_msg<V: ToJson>(&mut self, key: &str, map: &BTreeMap<String, V>) {
        self.map(key, map, |out, v| v.write_json(out));
    }
}

/// Go `encoding/json` output of one BuildKit protobuf message.
trait ToJson {
    fn write_json(&self, out: &mut String);
}

/// Implements [`ToJson`] for a message (or several with the same fields): `field => kind`
/// pairs in Go struct order.
macro_rules! json_message {
    ($first:ty, $($rest:ty),+ { $($fields:tt)* }) => {
        json_message!($first { $($fields)* });
        json_message!($($rest),+ { $($fields)* });
    };
    ($ty:ty { $($key:literal => $kind:ident ($($field:tt)+)),* $(,)? }) => {
        impl ToJson for $ty {
            fn write_json(&self, out: &mut String) {
                #[allow(unused_mut)]
                let mut obj = Obj::new(out);
                $( json_message!(@field obj, self, $key, $kind, $($field)+); )*
                obj.end();
            }
        }
    };
    (@field $obj:ident, $self:ident, $key:literal, str, $field:ident) => { $obj.str($key, &$self.$field) };
    (@field $obj:ident, $self:ident, $key:literal, int, $field:ident) => { $obj.int($key, $self.$field) };
    (@field $obj:ident, $self:ident, $key:literal, uint, $field:ident) => { $obj.uint($key, $self.$field) };
    (@field $obj:ident, $self:ident, $key:literal, bool, $field:ident) => { $obj.bool($key, $self.$field) };
    (@field $obj:ident, $self:ident, $key:literal, bytes, $field:ident) => { $obj.bytes($key, &$self.$field) };
    (@field $obj:ident, $self:ident, $key:literal, strs, $field:ident) => { $obj.strs($key, &$self.$field) };
    (@field $obj:ident, $self:ident, $key:literal, ints, $field:ident) => { $obj.ints($key, &$self.$field) };
    (@field $obj:ident, $self:ident, $key:literal, msg, $field:ident) => { $obj.msg($key, $self.$field.as_ref()) };
    (@field $obj:ident, $self:ident, $key:literal, msgs, $field:ident) => { $obj.msgs($key, &$self.$field) };
    (@field $obj:ident, $self:ident, $key:literal, map_str, $field:ident) => { $obj.map_str($key, &$self.$field) };
    (@field $obj:ident, $self:ident, $key:literal, map_bool, $field:ident) => { $obj.map_bool($key, &$self.$field) };
    (@field $obj:ident, $self:ident, $key:literal, map_msg, $field:ident) => { $obj.map_msg($key, &$self.$field) };
    (@field $obj:ident, $self:ident, $key:literal, bytes_list, $field:ident) => {
        $obj.list($key, &$self.$field, |out, v| {
            write_str(out, &base64::engine::general_purpose::STANDARD.encode(v))
        })
    };
}

impl ToJson for pb::Op {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::new(out);
        obj.msgs("inputs", &self.inputs);
        obj.key("Op");
        let mut body = Obj::new(obj.out);
        match &self.op {
            Some(pb::op::Op::Exec(v)) => body.msg("exec", Some(v)),
            Some(pb::op::Op::Source(v)) => body.msg("source", Some(v)),
            Some(pb::op::Op::File(v)) => body.msg("file", Some(v)),
            Some(pb::op::Op::Build(v)) => body.msg("build", Some(v)),
            Some(pb::op::Op::Merge(v)) => body.msg("merge", Some(v)),
            Some(pb::op::Op::Diff(v)) => body.msg("diff", Some(v)),
            Some(pb::op::Op::Passthrough(v)) => body.msg("passthrough", Some(v)),
            None => {}
        }
        body.end();
        obj.msg("platform", self.platform.as_ref());
        obj.msg("constraints", self.constraints.as_ref());
        obj.end();
    }
}

impl ToJson for pb::FileAction {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::new(out);
        obj.int_always("input", self.input);
        obj.int_always("secondaryInput", self.secondary_input);
        obj.int_always("output", self.output);
        obj.key("Action");
        let mut action = Obj::new(obj.out);
        // BuildKit's JSON form of FileAction has no member for symlink actions.
        match &self.action {
            Some(pb::file_action::Action::Copy(v)) => action.msg("copy", Some(v)),
            Some(pb::file_action::Action::Mkfile(v)) => action.msg("mkfile", Some(v)),
            Some(pb::file_action::Action::Mkdir(v)) => action.msg("mkdir", Some(v)),
            Some(pb::file_action::Action::Rm(v)) => action.msg("rm", Some(v)),
            Some(pb::file_action::Action::Symlink(_)) | None => {}
        }
        action.end();
        obj.end();
    }
}

impl ToJson for pb::UserOpt {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::new(out);
        obj.key("User");
        let mut user = Obj::new(obj.out);
        match &self.user {
            Some(pb::user_opt::User::ByName(v)) => user.msg("byName", Some(v)),
            Some(pb::user_opt::User::ById(id)) => user.uint("byId", *id),
            None => {}
        }
        user.end();
        obj.end();
    }
}

json_message!(pb::Platform {
    "Architecture" => str(architecture),
    "OS" => str(os),
    "Variant" => str(variant),
    "OSVersion" => str(os_version),
    "OSFeatures" => strs(os_features),
});
json_message!(pb::Input { "digest" => str(digest), "index" => int(index) });
json_message!(pb::ExecOp {
    "meta" => msg(meta),
    "mounts" => msgs(mounts),
    "network" => int(network),
    "security" => int(security),
    "secretenv" => msgs(secretenv),
    "cdiDevices" => msgs(cdi_devices),
});
json_message!(pb::Meta {
    "args" => strs(args),
    "env" => strs(env),
    "cwd" => str(cwd),
    "user" => str(user),
    "proxy_env" => msg(proxy_env),
    "extraHosts" => msgs(extra_hosts),
    "hostname" => str(hostname),
    "ulimit" => msgs(ulimit),
    "cgroupParent" => str(cgroup_parent),
    "removeMountStubsRecursive" => bool(remove_mount_stubs_recursive),
    "validExitCodes" => ints(valid_exit_codes),
});
json_message!(pb::HostIp { "Host" => str(host), "IP" => str(ip) });
json_message!(pb::Ulimit { "Name" => str(name), "Soft" => int(soft), "Hard" => int(hard) });
json_message!(pb::SecretEnv {
    "ID" => str(id),
    "name" => str(name),
    "optional" => bool(optional),
});
json_message!(pb::CdiDevice { "name" => str(name), "optional" => bool(optional) });
json_message!(pb::Mount {
    "input" => int(input),
    "selector" => str(selector),
    "dest" => str(dest),
    "output" => int(output),
    "readonly" => bool(readonly),
    "mountType" => int(mount_type),
    "TmpfsOpt" => msg(tmpfs_opt),
    "cacheOpt" => msg(cache_opt),
    "secretOpt" => msg(secret_opt),
    "SSHOpt" => msg(ssh_opt),
    "resultID" => str(result_id),
    "contentCache" => int(content_cache),
});
json_message!(pb::TmpfsOpt { "size" => int(size) });
json_message!(pb::CacheOpt { "ID" => str(id), "sharing" => int(sharing) });
// A secret's and an SSH socket's mount options are the same fields.
json_message!(pb::SecretOpt, pb::SshOpt {
    "ID" => str(id),
    "uid" => uint(uid),
    "gid" => uint(gid),
    "mode" => uint(mode),
    "optional" => bool(optional),
});
json_message!(pb::SourceOp { "identifier" => str(identifier), "attrs" => map_str(attrs) });
json_message!(pb::BuildOp {
    "builder" => int(builder),
    "inputs" => map_msg(inputs),
    "def" => msg(def),
    "attrs" => map_str(attrs),
});
json_message!(pb::BuildInput { "input" => int(input) });
json_message!(pb::OpMetadata {
    "ignore_cache" => bool(ignore_cache),
    "description" => map_str(description),
    "export_cache" => msg(export_cache),
    "caps" => map_bool(caps),
    "progress_group" => msg(progress_group),
    "linux_resources" => msg(linux_resources),
});
json_message!(pb::Source { "locations" => map_msg(locations), "infos" => msgs(infos) });
json_message!(pb::Locations { "locations" => msgs(locations) });
json_message!(pb::SourceInfo {
    "filename" => str(filename),
    "data" => bytes(data),
    "definition" => msg(definition),
    "language" => str(language),
});
json_message!(pb::Location { "sourceIndex" => int(source_index), "ranges" => msgs(ranges) });
json_message!(pb::Range { "start" => msg(start), "end" => msg(end) });
json_message!(pb::Position { "line" => int(line), "character" => int(character) });
json_message!(pb::ExportCache { "Value" => bool(value) });
json_message!(pb::ProgressGroup { "id" => str(id), "name" => str(name), "weak" => bool(weak) });
json_message!(pb::LinuxResources {
    "memory" => int(memory),
    "memorySwap" => int(memory_swap),
    "cpuShares" => uint(cpu_shares),
    "cpuPeriod" => uint(cpu_period),
    "cpuQuota" => int(cpu_quota),
    "cpusetCpus" => str(cpuset_cpus),
    "cpusetMems" => str(cpuset_mems),
});
json_message!(pb::ProxyEnv {
    "http_proxy" => str(http_proxy),
    "https_proxy" => str(https_proxy),
    "ftp_proxy" => str(ftp_proxy),
    "no_proxy" => str(no_proxy),
    "all_proxy" => str(all_proxy),
});
json_message!(pb::WorkerConstraints { "filter" => strs(filter) });
json_message!(pb::Definition {
    "def" => bytes_list(def),
    "metadata" => map_msg(metadata),
    "Source" => msg(source),
});
json_message!(pb::FileOp { "actions" => msgs(actions) });
json_message!(pb::FileActionCopy {
    "src" => str(src),
    "dest" => str(dest),
    "owner" => msg(owner),
    "mode" => int(mode),
    "followSymlink" => bool(follow_symlink),
    "dirCopyContents" => bool(dir_copy_contents),
    "attemptUnpackDockerCompatibility" => bool(attempt_unpack_docker_compatibility),
    "createDestPath" => bool(create_dest_path),
    "allowWildcard" => bool(allow_wildcard),
    "allowEmptyWildcard" => bool(allow_empty_wildcard),
    "timestamp" => int(timestamp),
    "include_patterns" => strs(include_patterns),
    "exclude_patterns" => strs(exclude_patterns),
    "alwaysReplaceExistingDestPaths" => bool(always_replace_existing_dest_paths),
    "modeStr" => str(mode_str),
    "required_paths" => strs(required_paths),
});
json_message!(pb::FileActionMkFile {
    "path" => str(path),
    "mode" => int(mode),
    "data" => bytes(data),
    "owner" => msg(owner),
    "timestamp" => int(timestamp),
});
json_message!(pb::FileActionSymlink {
    "oldpath" => str(oldpath),
    "newpath" => str(newpath),
    "owner" => msg(owner),
    "timestamp" => int(timestamp),
});
json_message!(pb::FileActionMkDir {
    "path" => str(path),
    "mode" => int(mode),
    "makeParents" => bool(make_parents),
    "owner" => msg(owner),
    "timestamp" => int(timestamp),
});
json_message!(pb::FileActionRm {
    "path" => str(path),
    "allowNotFound" => bool(allow_not_found),
    "allowWildcard" => bool(allow_wildcard),
});
json_message!(pb::ChownOpt { "user" => msg(user), "group" => msg(group) });
json_message!(pb::NamedUserOpt { "name" => str(name), "input" => int(input) });
json_message!(pb::MergeInput { "input" => int(input) });
json_message!(pb::MergeOp { "inputs" => msgs(inputs) });
json_message!(pb::LowerDiffInput { "input" => int(input) });
json_message!(pb::UpperDiffInput { "input" => int(input) });
json_message!(pb::DiffOp { "lower" => msg(lower), "upper" => msg(upper) });
json_message!(pb::PassthroughOp { "id" => str(id), "outputs" => ints(outputs) });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_like_go() {
        let mut out = String::new();
        write_str(&mut out, "a<b>&\"\\\n\t\u{1}\u{8}\u{2028}é");
        assert_eq!(out, r#""a\u003cb\u003e\u0026\"\\\n\t\u0001\b\u2028é""#);
    }

    #[test]
    fn symlink_actions_dump_as_empty_action() {
        let action = pb::FileAction {
            input: 0,
            secondary_input: -1,
            output: 0,
            action: Some(pb::file_action::Action::Symlink(pb::FileActionSymlink {
                oldpath: "a".into(),
                newpath: "b".into(),
                ..Default::default()
            })),
        };
        let mut out = String::new();
        action.write_json(&mut out);
        assert_eq!(
            out,
            r#"{"input":0,"secondaryInput":-1,"output":0,"Action":{}}"#
        );
    }

    #[test]
    fn user_opt_and_bytes() {
        let mkfile = pb::FileActionMkFile {
            path: "/f".into(),
            mode: 0o644,
            data: b"hi\n".to_vec(),
            owner: Some(pb::ChownOpt {
                user: Some(pb::UserOpt {
                    user: Some(pb::user_opt::User::ById(1000)),
                }),
                group: Some(pb::UserOpt {
                    user: Some(pb::user_opt::User::ByName(pb::NamedUserOpt {
                        name: "staff".into(),
                        input: 0,
                    })),
                }),
            }),
            timestamp: -1,
        };
        let mut out = String::new();
        mkfile.write_json(&mut out);
        assert_eq!(
            out,
            r#"{"path":"/f","mode":420,"data":"aGkK","owner":{"user":{"User":{"byId":1000}},"group":{"User":{"byName":{"name":"staff"}}}},"timestamp":-1}"#
        );
    }
}
