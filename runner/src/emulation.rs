//! Running another architecture's binaries: QEMU user emulation registered with the kernel's
//! `binfmt_misc`.
//!
//! A registration with the `F` (fix binary) flag has the kernel open the emulator when it is
//! registered, so it runs binaries inside a container's root that has no emulator of its own;
//! that is what Debian's `qemu-user-static` with `binfmt-support` registers. A registration
//! without `F` names a path the container's root does not have, and does not count here.
//!
//! Where the host has no usable registration, kiln registers an emulator of its own for the one
//! step ([`Emulator`]): since Linux 6.7 a `binfmt_misc` mounted inside a user namespace is that
//! namespace's own instance, whose registrations apply to its processes only and never to the
//! host. The step then runs in a user namespace that maps every id to itself, with its own
//! instance on /proc/sys/fs/binfmt_misc and the emulator registered there with the `F` flag
//! (opened from the host before the step's process starts), so every process of the step, not
//! only the first, runs emulated. The emulator is a statically linked `qemu-ARCH-static`
//! found in `$KILN_QEMU_DIR`, /usr/local/bin or /usr/bin (Debian's `qemu-user-static`).
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

use std::path::{Path, PathBuf};

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

/// The ELF header (the first 20 bytes: identification, type, machine) of QEMU's architecture
/// `qemu`, as `(magic, mask)` in hex, as QEMU's own `qemu-binfmt-conf.sh` registers them.
fn elf_signature(qemu: &str) -> Option<(&'static str, &'static str)> {
    const MASK: &str = "ffffffffffffff00fffffffffffffffffeffffff";
    const MASK_X86: &str = "fffffffffffefe00fffffffffffffffffeffffff";
    Some(match qemu {
        "x86_64" => ("7f454c4602010100000000000000000002003e00", MASK_X86),
        "i386" => ("7f454c4601010100000000000000000002000300", MASK_X86),
        "aarch64" => ("7f454c460201010000000000000000000200b700", MASK),
        "arm" => ("7f454c4601010100000000000000000002002800", MASK),
        "riscv64" => ("7f454c460201010000000000000000000200f300", MASK),
        "ppc64le" => (
            "7f454c4602010100000000000000000002001500",
            "fffffffffffffffcfffffffffffffffffeffff00",
        ),
        "s390x" => (
            "7f454c4602020100000000000000000000020016",
            "fffffffffffffffcfffffffffffffffffffeffff",
        ),
        "mips64el" => (
            "7f454c4602010100000000000000000002000800",
            "ffffffffffffff00fefffffffffffffffeffffff",
        ),
        "mips64" => (
            "7f454c4602020100000000000000000000020008",
            "ffffffffffffff00fefffffffffffffffffeffff",
        ),
        "loongarch64" => (
            "7f454c4602010100000000000000000002000201",
            "fffffffffffffffc00fffffffffffffffeffffff",
        ),
        _ => return None,
    })
}

/// An emulator kiln registers for one step in the step's own `binfmt_misc` instance, when the
/// host has no registration for the architecture (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emulator {
    /// QEMU's name of the architecture (`arm`).
    pub qemu: &'static str,
    /// The statically linked emulator on the host (`/usr/bin/qemu-arm-static`).
    pub path: PathBuf,
}

impl Emulator {
    /// The emulator for QEMU's architecture `qemu` found in `dirs` (the first
    /// `qemu-QEMU-static` that is a file), if kiln knows the architecture's ELF header.
    pub fn find_in(qemu: &'static str, dirs: &[PathBuf]) -> Option<Self> {
        elf_signature(qemu)?;
        let name = format!("qemu-{qemu}-static");
        dirs.iter()
            .map(|dir| dir.join(&name))
            .find(|path| path.is_file())
            .map(|path| Self { qemu, path })
    }

    /// The line written to a `binfmt_misc` `register` file up to the interpreter's path
    /// (`:qemu-arm:M::MAGIC:MASK:`); the path and `:FP` follow. Every byte of the magic and
    /// the mask is written `\xHH`, so none of them reads as a field separator.
    pub(crate) fn registration_head(&self) -> String {
        let (magic, mask) = elf_signature(self.qemu).expect("checked by find_in");
        let escape = |hex: &str| -> String {
            hex.as_bytes()
                .chunks(2)
                .map(|pair| format!("\\x{}", String::from_utf8_lossy(pair)))
                .collect()
        };
        format!(":qemu-{}:M::{}:{}:", self.qemu, escape(magic), escape(mask))
    }
}

/// Where kiln looks for emulators of its own: `$KILN_QEMU_DIR` if set, /usr/local/bin,
/// /usr/bin.
pub fn emulator_dirs() -> Vec<PathBuf> {
    std::env::var_os("KILN_QEMU_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/local/bin", "/usr/bin"].map(PathBuf::from))
        .collect()
}

/// Whether the kernel gives a user namespace its own `binfmt_misc` instance (Linux 6.7 and
/// later), read from a release such as `6.18.4-1-amd64`.
pub fn release_has_namespaced_binfmt(release: &str) -> bool {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    (major, minor) >= (6, 7)
}

/// How a step of the OCI `architecture` runs on this host: `Ok(None)` through the host's own
/// registration, `Ok(Some(emulator))` with kiln's emulator registered for the step alone; the
/// error is a sentence saying why neither works and how to make it work.
pub fn emulator_for(architecture: &str) -> Result<Option<Emulator>, String> {
    let Some(qemu) = qemu_name(architecture) else {
        return Err(format!(
            "QEMU user emulation does not cover the {architecture} architecture"
        ));
    };
    let host = Emulation::probe_in(Path::new(BINFMT_MISC), qemu);
    if host == Emulation::Registered {
        return Ok(None);
    }
    let namespaced = fs_err::read_to_string("/proc/sys/kernel/osrelease")
        .is_ok_and(|release| release_has_namespaced_binfmt(release.trim()));
    if namespaced {
        if let Some(emulator) = Emulator::find_in(qemu, &emulator_dirs()) {
            return Ok(Some(emulator));
        }
    }
    Err(refusal(architecture, qemu, host, namespaced))
}

/// Whether binaries of the OCI `architecture` run in containers on this host; the error is a
/// sentence saying why not and how to make them run.
pub fn check(architecture: &str) -> Result<(), String> {
    emulator_for(architecture).map(|_| ())
}

/// Why steps of `architecture` cannot run: what the host's `binfmt_misc` lacks, and the
/// missing emulator of kiln's own where the kernel could take one.
fn refusal(architecture: &str, qemu: &str, host: Emulation, namespaced: bool) -> String {
    let install = "install QEMU user emulation (on Debian and Ubuntu: \
                   apt-get install qemu-user-static binfmt-support)";
    let own = if namespaced {
        format!(
            "; nor is there a qemu-{qemu}-static in $KILN_QEMU_DIR, /usr/local/bin or /usr/bin \
             to register for the step alone"
        )
    } else {
        String::new()
    };
    match host {
        Emulation::Registered => String::new(),
        Emulation::NotMounted => format!(
            "running {architecture} steps needs QEMU user emulation, and binfmt_misc is not \
             mounted{own}: mount -t binfmt_misc binfmt_misc {BINFMT_MISC}, then {install}"
        ),
        Emulation::Missing => format!(
            "running {architecture} steps needs QEMU user emulation, and no emulator is \
             registered for {qemu} in {BINFMT_MISC}{own}: {install}"
        ),
        Emulation::Disabled => format!(
            "running {architecture} steps needs QEMU user emulation, and the {qemu} emulator \
             is disabled{own}: update-binfmts --enable qemu-{qemu}"
        ),
        Emulation::NotFixed => format!(
            "running {architecture} steps needs QEMU user emulation, and the {qemu} emulator \
             is registered without the F flag, so it cannot run inside a container{own}: \
             {install}"
        ),
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

    #[test]
    fn an_emulator_of_kilns_own_is_a_static_qemu_in_the_directories() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().join("none"), dir.path().to_owned()];
        assert_eq!(Emulator::find_in("arm", &dirs), None);
        fs_err::write(dir.path().join("qemu-arm-static"), "").unwrap();
        let found = Emulator::find_in("arm", &dirs).unwrap();
        assert_eq!(found.path, dir.path().join("qemu-arm-static"));
        assert!(
            found
                .registration_head()
                .starts_with(":qemu-arm:M::\\x7f\\x45\\x4c\\x46\\x01"),
            "{}",
            found.registration_head()
        );
        assert!(release_has_namespaced_binfmt("6.7.0"));
        assert!(release_has_namespaced_binfmt("6.18.44-fc-v1272"));
        assert!(!release_has_namespaced_binfmt("6.6.30-amd64"));
        assert!(!release_has_namespaced_binfmt("5.15.0"));
    }
}
