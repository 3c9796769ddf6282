//! Owners of what file actions create: a `ChownOpt` resolved to ids, names looked up in the
//! `/etc/passwd` and `/etc/group` of a root.

use std::path::{Path, PathBuf};

use kiln_llb::pb;

use super::{FileError, Result, scoped};

pub use kiln_fsutil::Owner;

/// Resolves a `ChownOpt`; names are looked up in `/etc/passwd` and `/etc/group` of the root
/// that `root_of(input)` gives (an action input index).
pub fn resolve_owner(
    opt: Option<&pb::ChownOpt>,
    root_of: impl Fn(i64) -> Option<PathBuf>,
) -> Result<Option<Owner>> {
    let Some(opt) = opt else { return Ok(None) };
    let id = |user: Option<&pb::UserOpt>, group: bool| -> Result<Option<u32>> {
        let Some(user) = user.and_then(|u| u.user.as_ref()) else {
            return Ok(None);
        };
        match user {
            pb::user_opt::User::ById(id) => Ok(Some(*id)),
            pb::user_opt::User::ByName(named) => {
                let (file, kind) = if group {
                    ("group", "group")
                } else {
                    ("passwd", "user")
                };
                if let Ok(id) = named.name.parse::<u32>() {
                    return Ok(Some(id));
                }
                let root =
                    root_of(named.input).ok_or(FileError::MissingInput { input: named.input })?;
                lookup_id(&root, file, &named.name)
                    .map(Some)
                    .ok_or_else(|| FileError::UnknownOwner {
                        kind,
                        name: named.name.clone(),
                        file,
                    })
            }
        }
    };
    let uid = id(opt.user.as_ref(), false)?;
    let gid = id(opt.group.as_ref(), true)?;
    // A user without a group gets the user's primary group, as `chown user` does in BuildKit.
    let gid = match (uid, gid, opt.user.as_ref().and_then(|u| u.user.as_ref())) {
        (_, Some(gid), _) => gid,
        (Some(_), None, Some(pb::user_opt::User::ByName(named))) => root_of(named.input)
            .and_then(|root| primary_gid(&root, &named.name))
            .unwrap_or(0),
        (Some(uid), None, _) => uid,
        (None, None, _) => return Ok(None),
    };
    Ok(Some(Owner {
        uid: uid.unwrap_or(0),
        gid,
    }))
}

/// The third field of the line for `name` in `/etc/{file}` of `root`.
fn lookup_id(root: &Path, file: &str, name: &str) -> Option<u32> {
    passwd_fields(root, file, name).and_then(|f| f.get(2)?.parse().ok())
}

fn primary_gid(root: &Path, name: &str) -> Option<u32> {
    passwd_fields(root, "passwd", name).and_then(|f| f.get(3)?.parse().ok())
}

fn passwd_fields(root: &Path, file: &str, name: &str) -> Option<Vec<String>> {
    let path = scoped::resolve(root, format!("/etc/{file}"), true).ok()?;
    let text = fs_err::read_to_string(path).ok()?;
    text.lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f.first().map(String::as_str) == Some(name))
}
