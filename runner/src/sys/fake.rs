//! A recording [`Sys`] (and [`CgroupFs`]) for unit tests: it logs every call and fails the
//! ones it is told to.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::{MountAttributes, Sys};
use crate::cgroup::CgroupFs;

/// Records calls as text lines; `fail` holds (call prefix, error) pairs consulted in order;
/// `files` holds what reads of files return (and which files exist).
#[derive(Debug, Default)]
pub(crate) struct RecordingSys {
    pub(crate) calls: Vec<String>,
    pub(crate) fail: Vec<(String, Errno)>,
    pub(crate) files: HashMap<PathBuf, String>,
    next_fd: RawFd,
}

impl RecordingSys {
    fn call(&mut self, line: String) -> nix::Result<()> {
        let failure = self
            .fail
            .iter()
            .find(|(prefix, _)| line.starts_with(prefix.as_str()))
            .map(|(_, e)| *e);
        self.calls.push(line);
        failure.map_or(Ok(()), Err)
    }
}

/// `MS_BIND | MS_REC`, or `-` for no flags.
fn flag_names(flags: MsFlags) -> String {
    if flags.is_empty() {
        return "-".to_owned();
    }
    flags
        .iter_names()
        .map(|(name, _)| name)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// `MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV`.
fn attribute_names(attributes: MountAttributes) -> String {
    attributes
        .iter_names()
        .map(|(name, _)| name)
        .collect::<Vec<_>>()
        .join(" | ")
}

fn s(c: &CStr) -> String {
    c.to_string_lossy().into_owned()
}

impl Sys for RecordingSys {
    fn umask(&mut self, mode: u32) {
        self.calls.push(format!("umask {mode:o}"));
    }

    fn mount(
        &mut self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: MsFlags,
        data: Option<&CStr>,
    ) -> nix::Result<()> {
        self.call(format!(
            "mount {} {} {} {} {}",
            source.map_or_else(|| "-".to_owned(), s),
            s(target),
            fstype.map_or_else(|| "-".to_owned(), s),
            flag_names(flags),
            data.map_or_else(|| "-".to_owned(), s)
        ))
    }

    fn mount_layers(
        &mut self,
        target: &CStr,
        lowers: &[CString],
        upper_work: Option<(&CStr, &CStr)>,
        nodev: bool,
    ) -> nix::Result<()> {
        let lowers: Vec<String> = lowers.iter().map(|l| s(l)).collect();
        self.call(format!(
            "mount_layers {} lowers={} upper_work={} nodev={nodev}",
            s(target),
            lowers.join(":"),
            upper_work.map_or_else(|| "-".to_owned(), |(u, w)| format!("{},{}", s(u), s(w))),
        ))
    }

    fn umount_detach(&mut self, target: &CStr) -> nix::Result<()> {
        self.call(format!("umount {}", s(target)))
    }

    fn mkdir(&mut self, path: &CStr, mode: u32) -> nix::Result<()> {
        self.call(format!("mkdir {} {mode:o}", s(path)))
    }

    fn create_file(&mut self, path: &CStr, mode: u32) -> nix::Result<()> {
        self.call(format!("create {} {mode:o}", s(path)))
    }

    fn mknod_char(&mut self, path: &CStr, mode: u32, major: u64, minor: u64) -> nix::Result<()> {
        self.call(format!("mknod {} {mode:o} {major}:{minor}", s(path)))
    }

    fn symlink(&mut self, target: &CStr, link: &CStr) -> nix::Result<()> {
        self.call(format!("symlink {} -> {}", s(link), s(target)))
    }

    fn chdir(&mut self, path: &CStr) -> nix::Result<()> {
        self.call(format!("chdir {}", s(path)))
    }

    fn pivot_root(&mut self, new_root: &CStr, put_old: &CStr) -> nix::Result<()> {
        self.call(format!("pivot_root {} {}", s(new_root), s(put_old)))
    }

    fn clone_tree(&mut self, path: &CStr) -> nix::Result<RawFd> {
        self.call(format!("open_tree {}", s(path)))?;
        self.next_fd += 1;
        Ok(100 + self.next_fd)
    }

    fn set_tree_attributes(&mut self, fd: RawFd, attributes: MountAttributes) -> nix::Result<()> {
        self.call(format!(
            "mount_setattr {fd} AT_RECURSIVE {}",
            attribute_names(attributes)
        ))
    }

    fn set_mount_attributes(
        &mut self,
        path: &CStr,
        set: MountAttributes,
        clear: MountAttributes,
        recursive: bool,
    ) -> nix::Result<()> {
        let mut line = format!("mount_setattr {}", s(path));
        if recursive {
            line.push_str(" AT_RECURSIVE");
        }
        if !set.is_empty() {
            line.push_str(&format!(" {}", attribute_names(set)));
        }
        if !clear.is_empty() {
            line.push_str(&format!(" clear {}", attribute_names(clear)));
        }
        self.call(line)
    }

    fn attach_tree(&mut self, fd: RawFd, target: &CStr) -> nix::Result<()> {
        self.call(format!("move_mount {fd} {}", s(target)))
    }

    fn sethostname(&mut self, name: &CStr) -> nix::Result<()> {
        self.call(format!("sethostname {}", s(name)))
    }

    fn loopback_up(&mut self) -> nix::Result<()> {
        self.call("loopback up".to_owned())
    }

    fn open_file(&mut self, path: &CStr) -> nix::Result<RawFd> {
        self.call(format!("open {}", s(path)))?;
        self.next_fd += 1;
        Ok(100 + self.next_fd)
    }

    fn enter_user_namespace(&mut self) -> nix::Result<()> {
        self.call("unshare user mnt uts, map 0 0 4294967295".to_owned())
    }

    fn write_with_fd(
        &mut self,
        path: &CStr,
        head: &[u8],
        fd: RawFd,
        tail: &[u8],
    ) -> nix::Result<()> {
        self.call(format!(
            "write {} {}{fd}{}",
            s(path),
            String::from_utf8_lossy(head),
            String::from_utf8_lossy(tail)
        ))
    }

    fn close(&mut self, fd: RawFd) -> nix::Result<()> {
        self.call(format!("close {fd}"))
    }
}

impl CgroupFs for RecordingSys {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn exists(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }

    fn create_dir(&mut self, path: &Path) -> io::Result<()> {
        self.call(format!("mkdir {}", path.display()))
            .map_err(io::Error::from)
    }

    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        self.call(format!("write {} {value}", path.display()))
            .map_err(io::Error::from)
    }

    fn write_each(&mut self, path: &Path, values: &[&str]) -> io::Result<()> {
        for value in values {
            self.write(path, value.trim_end())?;
        }
        Ok(())
    }

    fn remove_dir(&mut self, path: &Path) -> io::Result<()> {
        self.call(format!("rmdir {}", path.display()))
            .map_err(io::Error::from)
    }
}
