//! Running another architecture's binaries: QEMU user emulation registered with the kernel's
//! `binfmt_misc`.
//!
//! A registration with the `F` (fix binary) flag has the kernel open the emulator when it is
//! registered, so it runs binaries inside a container's root that has no emulator of its own;
//! that is what Debian's `qemu-user-static` with `binfmt-support` registers. A registration
//! without `F` names a path the container's root does not have, and does not count here.
//! New ways of finding an emulator go here; the solver asks through its executor.
//!
//! ```
//! use kiln_runner::emulation::{Emulation, qemu_name};
//! assert_eq!(qemu_name("arm64"), Some("aarch64"));
//! let entry = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n";
//! assert_eq!(Emulation::from_entry(entry), Emulation::Registered);
//! assert_eq!(Emulation::from_entry("disabled\nflags: PF\n"), Emulation::Disabled);
//! assert_eq!(Emulation::from_entry("enabled\nflags: P\n"), Emulation::NotFixed);
//! ```

use std::path::Path;

/// Where the kernel shows its `binfmt_misc` registrations.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// What the host's `binfmt_misc` says about one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulation {
    /// An enabled emulator with the `F` flag: binaries of the architecture run in containers.
    Registered,
    /// A registration that is switched off.
    Disabled,
    /// An enabled registration without the `F` flag: the emulator's path would have to exist
    /// inside every container's root.
    NotFixed,
    /// No registration for the architecture.
    Missing,
    /// `binfmt_misc` is not mounted.
    NotMounted,
}

impl Emulation {
    /// Reads one registration file's text (`enabled`, `interpreter …`, `flags: PF`, …).
    pub fn from_entry(text: &str) -> Self {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some("enabled") {
            return Self::Disabled;
        }
        let fixed = text
            .lines()
            .filter_map(|l| l.strip_prefix("flags:"))
            .any(|flags| flags.trim().contains('F'));
        if fixed {
            Self::Registered
        } else {
            Self::NotFixed
        }
    }

    /// What `binfmt_misc` mounted at `dir` says about the QEMU architecture `qemu`.
    pub fn probe_in(dir: &Path, qemu: &str) -> Self {
        if !dir.join("register").exists() {
            return Self::NotMounted;
        }
        match fs_err::read_to_string(dir.join(format!("qemu-{qemu}"))) {
            Ok(text) => Self::from_entry(&text),
            Err(_) => Self::Missing,
        }
    }
}

/// QEMU's name of an OCI architecture (`arm64` is `aarch64`); `None` for one QEMU does not
/// emulate.
pub fn qemu_name(architecture: &str) -> Option<&'static str> {
    Some(match architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        "mips64" => "mips64",
        "loong64" => "loongarch64",
        _ => return None,
    })
}

/// Whether binaries of the OCI `architecture` run in containers on this host; the error is a
/// sentence saying why not and how to make them run.
pub fn check(architecture: &str) -> Result<(), String> {
    let Some(qemu) = qemu_name(architecture) else {
        return Err(format!(
            "QEMU user emulation does not cover the {architecture} architecture"
        ));
    };
    let install = "install QEMU user emulation (on Debian and Ubuntu: \
                   apt-get install qemu-user-static binfmt-support)";
    match Emulation::probe_in(Path::new(BINFMT_MISC), qemu) {
        Emulation::Registered => Ok(()),
        Emulation::NotMounted => Err(format!(
            "running {architecture} steps needs QEMU user emulation, and binfmt_misc is not \
             mounted: mount -t binfmt_misc binfmt_misc {BINFMT_MISC}, then {install}"
        )),
        Emulation::Missing => Err(format!(
            "running {architecture} steps needs QEMU user emulation, and no emulator is \
             registered for {qemu} in {BINFMT_MISC}: {install}"
        )),
        Emulation::Disabled => Err(format!(
            "running {architecture} steps needs QEMU user emulation, and the {qemu} emulator \
             is disabled: update-binfmts --enable qemu-{qemu}"
        )),
        Emulation::NotFixed => Err(format!(
            "running {architecture} steps needs QEMU user emulation, and the {qemu} emulator \
             is registered without the F flag, so it cannot run inside a container: {install}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reads_a_binfmt_misc_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Emulation::probe_in(dir.path(), "aarch64"),
            Emulation::NotMounted
        );
        fs_err::write(dir.path().join("register"), "").unwrap();
        assert_eq!(
            Emulation::probe_in(dir.path(), "aarch64"),
            Emulation::Missing
        );
        fs_err::write(
            dir.path().join("qemu-aarch64"),
            "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: OCF\noffset 0\n",
        )
        .unwrap();
        assert_eq!(
            Emulation::probe_in(dir.path(), "aarch64"),
            Emulation::Registered
        );
        assert_eq!(qemu_name("sparc"), None);
        assert!(check("sparc").unwrap_err().contains("does not cover"));
    }
}
