//! `RUN --mount=...` specifications, parsed as BuildKit's `instructions/commands_runmount.go`
//! does (read as the model; independent implementation).

use crate::error::{DeviceError, ExpandError, MountError, UnknownKey};
use crate::flags::suggest;

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// `type=bind` (the default): a read-only view of a context or stage directory.
    Bind,
    /// `type=cache`: a persistent cache directory.
    Cache,
    /// `type=tmpfs`: an in-memory directory.
    Tmpfs,
    /// `type=secret`: a secret file.
    Secret,
    /// `type=ssh`: an SSH agent socket.
    Ssh,
}

impl MountType {
    /// The name as written in Dockerfiles.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

const MOUNT_TYPES: [&str; 5] = ["bind", "cache", "tmpfs", "secret", "ssh"];

/// How a cache mount is shared between concurrent builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    /// Used concurrently by every writer.
    Shared,
    /// A new instance per concurrent writer.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// One parsed `RUN --mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount type.
    pub kind: MountType,
    /// `from=`: a stage or image to take the source from.
    pub from: String,
    /// `source=`/`src=`.
    pub source: String,
    /// `target=`/`dst=`/`destination=`.
    pub target: String,
    /// `readonly`/`ro`/`rw` (defaults: read-only except cache and tmpfs).
    pub read_only: bool,
    /// `size=` of a tmpfs, in bytes (0 = unlimited).
    pub size_limit: i64,
    /// `id=` of a cache or secret.
    pub cache_id: String,
    /// `sharing=` of a cache.
    pub cache_sharing: Option<CacheSharing>,
    /// `required` for secret and ssh mounts.
    pub required: bool,
    /// `env=`: the environment variable a secret is exposed as.
    pub env: Option<String>,
    /// `mode=` (octal).
    pub mode: Option<u32>,
    /// `uid=`.
    pub uid: Option<u32>,
    /// `gid=`.
    pub gid: Option<u32>,
}

/// Expands one value of a mount specification (`$VAR` in `target=$DIR`).
pub type MountExpander<'a> = &'a mut dyn FnMut(&str) -> Result<String, ExpandError>;

/// Parses one `--mount` value.
///
/// With an `expander`, every value is expanded and validated. Without one (at instruction
/// parse time, when variables are not known yet), only `from=` is checked, for variable
/// references, which BuildKit rejects; the returned mount then holds defaults.
pub fn parse_mount(
    spec: &str,
    mut expander: Option<MountExpander<'_>>,
) -> Result<Mount, MountError> {
    let fields = csv_fields(spec)?;
    let mut m = Mount {
        kind: MountType::Bind,
        from: String::new(),
        source: String::new(),
        target: String::new(),
        read_only: false,
        size_limit: 0,
        cache_id: String::new(),
        cache_sharing: None,
        required: false,
        env: None,
        mode: None,
        uid: None,
        gid: None,
    };
    let mut ro_auto = true;
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(value) = value else {
            if expander.is_none() {
                continue;
            }
            match key.as_str() {
                "readonly" | "ro" => {
                    m.read_only = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.read_only = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true;
                }
                "required" => {
                    return Err(MountError::KeyNotForType {
                        key,
                        mount_type: m.kind.as_str().to_string(),
                    });
                }
                _ => {
                    return Err(MountError::NotKeyValue {
                        field: field.clone(),
                    });
                }
            }
            continue;
        };
        let value = match expander.as_mut() {
            Some(expand) => expand(value)?,
            None => {
                if key == "from" {
                    if let Some(i) = value.find('$') {
                        if i != value.len() - 1 {
                            return Err(MountError::FromExpansion { key });
                        }
                    }
                }
                continue;
            }
        };
        let invalid = |key: &str, value: &str| MountError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
        };
        let not_for_type = |key: &str, kind: MountType| MountError::KeyNotForType {
            key: key.to_string(),
            mount_type: kind.as_str().to_string(),
        };
        match key.as_str() {
            "type" => {
                m.kind = match value.to_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        return Err(MountError::UnsupportedType {
                            suggest: suggest(&value, &MOUNT_TYPES, true),
                            value,
                        });
                    }
                }
            }
            "from" => m.from = value,
            "source" | "src" => m.source = value,
            "target" | "dst" | "destination" => m.target = value,
            "readonly" | "ro" => {
                m.read_only = parse_bool(&value).ok_or_else(|| invalid(&key, &value))?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.read_only = !parse_bool(&value).ok_or_else(|| invalid(&key, &value))?;
                ro_auto = false;
            }
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(not_for_type(&key, m.kind));
                }
                m.required = parse_bool(&value).ok_or_else(|| invalid(&key, &value))?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(not_for_type(&key, m.kind));
                }
                m.size_limit = ram_in_bytes(&value).ok_or_else(|| invalid(&key, &value))?;
            }
            "id" => m.cache_id = value,
            "sharing" => {
                m.cache_sharing = Some(match value.to_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        return Err(MountError::UnsupportedSharing {
                            suggest: suggest(&value, &["shared", "private", "locked"], true),
                            value,
                        });
                    }
                })
            }
            "mode" => {
                let n = u32::from_str_radix(&value, 8)
                    .ok()
                    .filter(|_| is_plain_digits(&value));
                m.mode = Some(n.ok_or(MountError::InvalidNumber { key, value })?);
            }
            "uid" | "gid" => {
                let n = value
                    .parse::<u32>()
                    .ok()
                    .filter(|_| is_plain_digits(&value));
                let n = n.ok_or_else(|| MountError::InvalidNumber {
                    key: key.clone(),
                    value,
                })?;
                if key == "uid" {
                    m.uid = Some(n);
                } else {
                    m.gid = Some(n);
                }
            }
            "env" => m.env = Some(value),
            _ => {
                const KEYS: [&str; 19] = [
                    "type",
                    "from",
                    "source",
                    "target",
                    "readonly",
                    "id",
                    "sharing",
                    "required",
                    "size",
                    "mode",
                    "uid",
                    "gid",
                    "src",
                    "dst",
                    "destination",
                    "ro",
                    "rw",
                    "readwrite",
                    "env",
                ];
                return Err(UnknownKey::new(key, field.clone(), &KEYS).into());
            }
        }
    }

    if !matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    ) {
        for (key, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(MountError::FileInfoNotAllowed {
                    key: key.to_string(),
                    mount_type: m.kind.as_str().to_string(),
                });
            }
        }
    }
    if ro_auto {
        m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if !m.from.is_empty() {
            return Err(MountError::SecretFrom);
        }
        if m.cache_sharing.is_some() {
            return Err(MountError::SecretSharing);
        }
        if m.source.is_empty() && m.target.is_empty() && m.cache_id.is_empty() {
            return Err(MountError::SecretTarget);
        }
        if !m.source.is_empty() && !m.cache_id.is_empty() {
            return Err(MountError::SecretSourceAndId);
        }
    }
    if m.cache_sharing.is_some() && m.kind != MountType::Cache {
        return Err(MountError::SharingNotCache {
            mount_type: m.kind.as_str().to_string(),
        });
    }
    Ok(m)
}

/// One parsed `RUN --device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device name (a path or a CDI name).
    pub name: String,
    /// Whether the build fails when the device is not available.
    pub required: bool,
}

/// Parses one `--device` value: `name[,required[=bool]]` or `name=...,required=...`, as
/// BuildKit's `instructions/commands_rundevice.go` does.
pub fn parse_device(spec: &str) -> Result<Device, DeviceError> {
    let fields = csv_fields(spec).map_err(|e| DeviceError::Csv {
        reason: match e {
            MountError::Csv { reason } => reason,
            other => other.to_string(),
        },
    })?;
    let mut d = Device {
        name: String::new(),
        required: false,
    };
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            if field.eq_ignore_ascii_case("required") {
                d.required = true;
            } else if d.name.is_empty() {
                d.name = field;
            } else {
                return Err(DeviceError::NotKeyValue { field });
            }
            continue;
        };
        let key = key.to_lowercase();
        match key.as_str() {
            "name" => {
                if !d.name.is_empty() {
                    return Err(DeviceError::NameAlreadySet { name: d.name });
                }
                d.name = value.to_string();
            }
            "required" => {
                d.required = parse_bool(value).ok_or_else(|| DeviceError::InvalidValue {
                    key: key.clone(),
                    value: value.to_string(),
                })?;
            }
            _ if d.name.is_empty() => d.name = field,
            _ => {
                return Err(UnknownKey::new(key, field, &["name", "required"]).into());
            }
        }
    }
    Ok(d)
}

fn is_plain_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A size like `64m`, `1.5GiB`, `100` in bytes with binary multipliers (docker's
/// `units.RAMInBytes`).
pub(crate) fn ram_in_bytes(s: &str) -> Option<i64> {
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, rest) = s.split_at(num_end);
    // `\d+(\.\d+)*`
    if num.is_empty() || num.split('.').any(str::is_empty) {
        return None;
    }
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let mut chars = rest.chars().peekable();
    let mult: f64 = match chars.peek().map(|c| c.to_ascii_lowercase()) {
        Some('k') => 1024.0,
        Some('m') => 1024f64.powi(2),
        Some('g') => 1024f64.powi(3),
        Some('t') => 1024f64.powi(4),
        Some('p') => 1024f64.powi(5),
        _ => 1.0,
    };
    if mult != 1.0 {
        chars.next();
    }
    if chars.peek().is_some_and(|c| c.eq_ignore_ascii_case(&'i')) {
        chars.next();
    }
    if chars.peek().is_some_and(|c| c.eq_ignore_ascii_case(&'b')) {
        chars.next();
    }
    if chars.next().is_some() {
        return None;
    }
    // Go's ParseFloat stops at the first `.`-separated group it cannot use; a number like
    // `1.2.3` fails there too.
    let size: f64 = num.parse().ok()?;
    // Saturating, like Go's int64(float64) conversion on amd64 for in-range values.
    Some((size * mult) as i64)
}

/// Splits a CSV record with Go `encoding/csv` rules (quoted fields, `""` escapes, no bare
/// quotes in unquoted fields). A small parser of our own: the `csv` crate accepts bare quotes,
/// which BuildKit rejects.
pub(crate) fn csv_fields(s: &str) -> Result<Vec<String>, MountError> {
    let err = |reason: &str| MountError::Csv {
        reason: reason.to_string(),
    };
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(err("extraneous or missing \" in quoted-field")),
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some(',') | None => break,
                        Some(_) => return Err(err("extraneous or missing \" in quoted-field")),
                    },
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err(err("bare \" in non-quoted-field"));
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            _ => break,
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(spec: &str) -> Result<Mount, MountError> {
        let mut identity = |s: &str| Ok::<_, ExpandError>(s.to_string());
        parse_mount(spec, Some(&mut identity))
    }

    #[test]
    fn defaults_and_aliases() {
        let m = full("target=/x").unwrap();
        assert_eq!(
            (m.kind, m.read_only, m.target.as_str()),
            (MountType::Bind, true, "/x")
        );
        let m = full("type=cache,dst=/c,id=go,sharing=locked,mode=0755,uid=1,gid=2").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert!(!m.read_only);
        assert_eq!(m.cache_sharing, Some(CacheSharing::Locked));
        assert_eq!((m.mode, m.uid, m.gid), (Some(0o755), Some(1), Some(2)));
        assert_eq!(m.cache_id, "go");
        let m = full("type=tmpfs,destination=/t,size=64m").unwrap();
        assert_eq!(m.size_limit, 64 * 1024 * 1024);
        let m = full("type=secret,id=tok,required,env=TOKEN").unwrap();
        assert!(m.required && m.read_only);
        assert_eq!(m.env.as_deref(), Some("TOKEN"));
        let m = full("type=ssh,required=false").unwrap();
        assert!(!m.required);
        let m = full("type=bind,from=build,source=/src,target=/dst,rw").unwrap();
        assert!(!m.read_only);
        assert_eq!((m.from.as_str(), m.source.as_str()), ("build", "/src"));
        let m = full("type=bind,target=/dst,readonly=false").unwrap();
        assert!(!m.read_only);
        let m = full("type=cache,target=/dst,ro").unwrap();
        assert!(m.read_only);
        let m = full("\"target=/a,b\"").unwrap();
        assert_eq!(m.target, "/a,b");
    }

    #[test]
    fn errors_use_buildkit_wording() {
        let e = |s: &str| full(s).unwrap_err().to_string();
        assert_eq!(
            e("type=tmp"),
            "unsupported mount type \"tmp\" (did you mean tmpfs?)"
        );
        assert_eq!(e("type=cache,sharing=x"), "unsupported sharing value \"x\"");
        assert_eq!(
            e("type=bind,required"),
            "unexpected key 'required' for mount type 'bind'"
        );
        assert_eq!(
            e("type=cache,size=1m"),
            "unexpected key 'size' for mount type 'cache'"
        );
        assert_eq!(
            e("target"),
            "invalid field 'target' must be a key=value pair"
        );
        assert_eq!(
            e("type=bind,mode=0700"),
            "mode not allowed for \"bind\" type mounts"
        );
        assert_eq!(e("type=cache,mode=9"), "invalid value 9 for mode");
        assert_eq!(e("type=cache,uid=-1"), "invalid value -1 for uid");
        assert_eq!(e("type=tmpfs,size=lots"), "invalid value for size: lots");
        assert_eq!(e("ro=maybe"), "invalid value for ro: maybe");
        assert_eq!(
            e("type=secret,from=x,id=a"),
            "secret mount should not have a from"
        );
        assert_eq!(
            e("type=secret"),
            "invalid secret mount. one of source, target required"
        );
        assert_eq!(
            e("type=secret,src=a,id=b"),
            "both source and id can't be set"
        );
        assert_eq!(
            e("type=secret,id=a,sharing=shared"),
            "secret mount should not define sharing"
        );
        assert_eq!(
            e("sharing=shared"),
            "invalid cache sharing set for bind mount"
        );
        assert_eq!(
            e("targte=/x"),
            "unexpected key 'targte' in 'targte=/x' (did you mean target?)"
        );
        assert_eq!(
            e("a\"b"),
            "failed to parse csv mounts: bare \" in non-quoted-field"
        );
    }

    #[test]
    fn without_expander_only_from_is_checked() {
        let e = parse_mount("from=$stage,type=cache", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "'from' doesn't support variable expansion, define alias stage instead"
        );
        // A trailing `$` is not a variable.
        assert!(parse_mount("from=stage$", None).is_ok());
        // Everything else is left for later.
        assert!(parse_mount("type=nope,target", None).is_ok());
    }

    #[test]
    fn devices() {
        let d = parse_device("/dev/fuse").unwrap();
        assert_eq!((d.name.as_str(), d.required), ("/dev/fuse", false));
        let d = parse_device("vendor.com/gpu=all,required").unwrap();
        assert_eq!((d.name.as_str(), d.required), ("vendor.com/gpu=all", true));
        let d = parse_device("name=/dev/kvm,required=false").unwrap();
        assert_eq!((d.name.as_str(), d.required), ("/dev/kvm", false));
        let e = |s: &str| parse_device(s).unwrap_err().to_string();
        assert_eq!(e("a,b"), "invalid field 'b' must be a key=value pair");
        assert_eq!(e("a,name=b"), "device name already set to a");
        assert_eq!(e("a,required=maybe"), "invalid value for required: maybe");
        assert_eq!(
            e("a,nam=b"),
            "unexpected key 'nam' in 'nam=b' (did you mean name?)"
        );
        assert_eq!(
            e("a\"b"),
            "failed to parse csv devices: bare \" in non-quoted-field"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(ram_in_bytes("100"), Some(100));
        assert_eq!(ram_in_bytes("1k"), Some(1024));
        assert_eq!(ram_in_bytes("1.5 GiB"), Some(1536 * 1024 * 1024));
        assert_eq!(ram_in_bytes("2MB"), Some(2 * 1024 * 1024));
        assert_eq!(ram_in_bytes("x"), None);
        assert_eq!(ram_in_bytes("1x"), None);
        assert_eq!(ram_in_bytes(""), None);
    }
}
