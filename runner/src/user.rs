//! Resolving Docker's `USER` against the root filesystem's /etc/passwd and /etc/group.

use std::path::Path;

use crate::error::{Error, Result};
use crate::view::RootView;

/// A resolved user: ids plus the values Docker derives from /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Supplementary groups, the primary gid first.
    pub(crate) groups: Vec<u32>,
    pub(crate) home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The entries of an /etc/passwd-style file: `entry` of the `:`-separated fields of each line
/// that has at least `min_fields` (comment lines skipped).
fn parse_lines<T>(text: &str, min_fields: usize, entry: impl Fn(&[&str]) -> Option<T>) -> Vec<T> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < min_fields || line.starts_with('#') {
                return None;
            }
            entry(&fields)
        })
        .collect()
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    parse_lines(text, 6, |fields| {
        Some(PasswdEntry {
            name: fields[0].to_owned(),
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields[5].to_owned(),
        })
    })
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    parse_lines(text, 3, |fields| {
        Some(GroupEntry {
            name: fields[0].to_owned(),
            gid: fields[2].parse().ok()?,
            members: fields
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

/// Reads `path` inside the root filesystem as the container will see it (whiteouts respected,
/// symbolic links resolved inside the root). A missing file reads as empty, as runc treats it.
fn read_in_root(view: &RootView, path: &str) -> Result<String> {
    let bytes = view
        .read(Path::new(path))
        .map_err(Error::Prepare)?
        .unwrap_or_default();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Resolves `user` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...) the way Docker does:
/// a name must exist in passwd; a numeric uid need not (then gid 0 and home `/`); the primary
/// group comes from passwd unless given; supplementary groups are the groups listing the user.
pub(crate) fn resolve(view: &RootView, user: &str) -> Result<ResolvedUser> {
    let passwd = parse_passwd(&read_in_root(view, "/etc/passwd")?);
    let groups = parse_group(&read_in_root(view, "/etc/group")?);
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = passwd.iter().find(|e| e.name == user_part).or_else(|| {
        user_part
            .parse::<u32>()
            .ok()
            .and_then(|uid| passwd.iter().find(|e| e.uid == uid))
    });
    let (uid, mut gid, home, name) = match entry {
        Some(e) => (e.uid, e.gid, e.home.clone(), Some(e.name.as_str())),
        None => match user_part.parse::<u32>() {
            Ok(uid) => (uid, 0, "/".to_owned(), None),
            Err(_) => {
                return Err(Error::UnknownUser {
                    user: user.to_owned(),
                });
            }
        },
    };
    if let Some(group) = group_part.filter(|g| !g.is_empty()) {
        gid = match groups.iter().find(|g| g.name == group) {
            Some(g) => g.gid,
            None => group.parse().map_err(|_| Error::UnknownGroup {
                group: group.to_owned(),
            })?,
        };
    }
    let mut supplementary = vec![gid];
    // An explicit group replaces the supplementary groups, as in Docker.
    if group_part.is_none() {
        if let Some(name) = name {
            for g in &groups {
                if g.members.iter().any(|m| m == name) && !supplementary.contains(&g.gid) {
                    supplementary.push(g.gid);
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        groups: supplementary,
        home,
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn resolve(layers: &[PathBuf], user: &str) -> Result<ResolvedUser> {
        super::resolve(&RootView::new(layers.to_vec()), user)
    }

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, text).unwrap();
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app,other\nnogroup:x:65534:\n";

    fn layers() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        let bottom = dir.path().join("bottom");
        write(&bottom, "etc/passwd", PASSWD);
        write(&bottom, "etc/group", GROUP);
        fs_err::create_dir_all(&top).unwrap();
        (dir, vec![top, bottom])
    }

    #[test]
    fn root_by_default() {
        let (_d, layers) = layers();
        let u = resolve(&layers, "").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups.clone(), u.home.as_str()),
            (0, 0, vec![0], "/root")
        );
    }

    #[test]
    fn name_with_supplementary_groups() {
        let (_d, layers) = layers();
        let u = resolve(&layers, "app").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups.clone(), u.home.as_str()),
            (1000, 1000, vec![1000, 2000], "/home/app")
        );
        assert_eq!(resolve(&layers, "1000").unwrap(), u);
    }

    #[test]
    fn explicit_group_by_name_and_number() {
        let (_d, layers) = layers();
        let u = resolve(&layers, "app:extra").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 2000, vec![2000]));
        let u = resolve(&layers, "1234:4321").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1234, 4321, "/"));
    }

    #[test]
    fn unknown_names_fail() {
        let (_d, layers) = layers();
        let err = resolve(&layers, "ghost").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        let err = resolve(&layers, "app:ghosts").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find group ghosts: no matching entries in group file"
        );
    }

    #[test]
    fn upper_layer_wins() {
        let (_d, layers) = layers();
        write(
            &layers[0],
            "etc/passwd",
            "root:x:0:0:root:/toproot:/bin/sh\n",
        );
        assert_eq!(resolve(&layers, "").unwrap().home, "/toproot");
        assert!(matches!(
            resolve(&layers, "app"),
            Err(Error::UnknownUser { .. })
        ));
    }

    #[test]
    fn a_whiteout_hides_the_lower_passwd() {
        let (_d, layers) = layers();
        // An overlayfs whiteout (0/0 character device) needs CAP_MKNOD; the OCI form does not.
        let whiteout = layers[0].join("etc/passwd");
        fs_err::create_dir_all(whiteout.parent().unwrap()).unwrap();
        let made = nix::sys::stat::mknod(
            &whiteout,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
            0,
        );
        if made.is_err() {
            write(&layers[0], "etc/.wh.passwd", "");
        }
        assert!(matches!(
            resolve(&layers, "app"),
            Err(Error::UnknownUser { .. })
        ));
        // Without passwd, root keeps its defaults and groups still come from below.
        let u = resolve(&layers, "").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/"));
        let u = resolve(&layers, "1000:extra").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 2000));
    }

    #[test]
    fn an_absolute_symlink_is_resolved_inside_the_root_not_on_the_host() {
        let (_d, layers) = layers();
        let host = tempfile::tempdir().unwrap();
        let host_passwd = host.path().join("shadow-like");
        fs_err::write(&host_passwd, "app:x:4242:4242::/host:/bin/sh\n").unwrap();
        fs_err::create_dir_all(layers[0].join("etc")).unwrap();
        fs_err::os::unix::fs::symlink(&host_passwd, layers[0].join("etc/passwd")).unwrap();
        // The host file is never read: inside the root the target does not exist.
        assert!(matches!(
            resolve(&layers, "app"),
            Err(Error::UnknownUser { .. })
        ));
        // The same absolute target, present inside the root (in the lower layer), is read.
        write(
            &layers[1],
            host_passwd.strip_prefix("/").unwrap().to_str().unwrap(),
            "app:x:7000:7001::/inside:/bin/sh\n",
        );
        let u = resolve(&layers, "app").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (7000, 7001, "/inside"));
    }
}
