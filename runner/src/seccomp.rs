//! Docker's default seccomp profile, compiled to a BPF program before the fork.
//!
//! # Overview
//!
//! The rules below are moby's `profiles/seccomp/default.json` from the moby/profiles repository
//! at commit 3c28324314729dbade8287e868eef6338c42807a (2026-05-06, the file's latest change
//! as of cd3bed8061c7b7378b61fc6827c7885779417a75), written out as Rust data:
//!
//! 1. everything not listed fails with `EPERM` (`defaultErrnoRet: 1`);
//! 2. a rule applies only when its conditions hold for this container: the capabilities it
//!    names are (or, for `unless`, are not) in the container's set, the machine's architecture
//!    is among its `arches` (Go names, as moby matches `runtime.GOARCH`), and the kernel is at
//!    least its `min_kernel`;
//! 3. syscall names are resolved by libseccomp for the native architecture and its
//!    compatibility ones (x86 and x32 beside x86_64, arm beside aarch64, as moby's `archMap`);
//!    names libseccomp does not know are skipped, as moby does (libseccomp 2.5.4 lacks the
//!    newest: `mseal`, `listmount`, `statmount`, `uretprobe`, the `*xattrat` family, which then
//!    fail with `EPERM`);
//! 4. libseccomp exports the filter as BPF once per capability set, and the forked child only
//!    hands that program to the kernel (`sys::process`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

use crate::error::{Error, Result};

/// `EPERM`, the profile's default errno.
const DEFAULT_ERRNO: i32 = libc::EPERM;

/// Syscalls allowed without conditions (the profile's first rule).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Capability numbers the profile's conditions name.
mod cap {
    pub(super) const DAC_READ_SEARCH: u32 = 2;
    pub(super) const SYS_MODULE: u32 = 16;
    pub(super) const SYS_RAWIO: u32 = 17;
    pub(super) const SYS_CHROOT: u32 = 18;
    pub(super) const SYS_PTRACE: u32 = 19;
    pub(super) const SYS_PACCT: u32 = 20;
    pub(super) const SYS_ADMIN: u32 = 21;
    pub(super) const SYS_BOOT: u32 = 22;
    pub(super) const SYS_NICE: u32 = 23;
    pub(super) const SYS_TIME: u32 = 25;
    pub(super) const SYS_TTY_CONFIG: u32 = 26;
    pub(super) const SYSLOG: u32 = 34;
    pub(super) const PERFMON: u32 = 38;
    pub(super) const BPF: u32 = 39;
}

/// One argument condition: `(argument index, comparison)`.
#[derive(Debug, Clone, Copy)]
enum Arg {
    Less(u32, u64),
    Equal(u32, u64),
    Greater(u32, u64),
    /// `(argument & mask) == value`.
    MaskedEqual {
        index: u32,
        mask: u64,
        value: u64,
    },
}

/// One rule of the profile.
#[derive(Debug, Clone, Copy)]
struct Rule {
    names: &'static [&'static str],
    /// `None`: allow; `Some(errno)`: fail with it.
    errno: Option<i32>,
    /// All must hold.
    args: &'static [Arg],
    /// The container must have this capability.
    with_capability: Option<u32>,
    /// The container must not have this capability.
    without_capability: Option<u32>,
    /// Architectures (Go names) the rule is for; empty: all.
    arches: &'static [&'static str],
    /// Architectures the rule is not for.
    not_arches: &'static [&'static str],
    /// Lowest kernel version `(major, minor)`.
    min_kernel: Option<(u32, u32)>,
}

const fn allow(names: &'static [&'static str]) -> Rule {
    Rule {
        names,
        errno: None,
        args: &[],
        with_capability: None,
        without_capability: None,
        arches: &[],
        not_arches: &[],
        min_kernel: None,
    }
}

const fn allow_with(capability: u32, names: &'static [&'static str]) -> Rule {
    Rule {
        with_capability: Some(capability),
        ..allow(names)
    }
}

const fn allow_on(arches: &'static [&'static str], names: &'static [&'static str]) -> Rule {
    Rule {
        arches,
        ..allow(names)
    }
}

const fn allow_if(names: &'static [&'static str], args: &'static [Arg]) -> Rule {
    Rule {
        args,
        ..allow(names)
    }
}

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
/// | CLONE_NEWNET`: the namespace flags `clone` may not use without `CAP_SYS_ADMIN`.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// The profile's rules after the first, in its order.
const RULES: &[Rule] = &[
    Rule {
        min_kernel: Some((4, 8)),
        ..allow(&["process_vm_readv", "process_vm_writev", "ptrace"])
    },
    // Every address family but AF_ALG (38) and AF_VSOCK (40).
    allow_if(&["socket"], &[Arg::Less(0, 38)]),
    allow_if(&["socket"], &[Arg::Equal(0, 39)]),
    allow_if(&["socket"], &[Arg::Greater(0, 40)]),
    // PER_LINUX, UNAME26, PER_LINUX32, UNAME26|PER_LINUX32, and the query 0xffffffff.
    allow_if(&["personality"], &[Arg::Equal(0, 0x0)]),
    allow_if(&["personality"], &[Arg::Equal(0, 0x8)]),
    allow_if(&["personality"], &[Arg::Equal(0, 0x20000)]),
    allow_if(&["personality"], &[Arg::Equal(0, 0x20008)]),
    allow_if(&["personality"], &[Arg::Equal(0, 0xffff_ffff)]),
    allow_on(&["ppc64le"], &["sync_file_range2", "swapcontext"]),
    allow_on(
        &["arm", "arm64"],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
    ),
    allow_on(&["amd64", "x32"], &["arch_prctl"]),
    allow_on(&["amd64", "x32", "x86"], &["modify_ldt"]),
    allow_on(
        &["s390", "s390x"],
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
    ),
    allow_on(&["riscv64"], &["riscv_flush_icache"]),
    allow_with(cap::DAC_READ_SEARCH, &["open_by_handle_at"]),
    allow_with(
        cap::SYS_ADMIN,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    // clone without namespace flags.
    Rule {
        args: &[Arg::MaskedEqual {
            index: 0,
            mask: CLONE_NAMESPACE_FLAGS,
            value: 0,
        }],
        without_capability: Some(cap::SYS_ADMIN),
        not_arches: &["s390", "s390x"],
        ..allow(&["clone"])
    },
    Rule {
        args: &[Arg::MaskedEqual {
            index: 1,
            mask: CLONE_NAMESPACE_FLAGS,
            value: 0,
        }],
        without_capability: Some(cap::SYS_ADMIN),
        arches: &["s390", "s390x"],
        ..allow(&["clone"])
    },
    // clone3 hides its flags in a struct the filter cannot read: ENOSYS makes the C library
    // fall back to clone, whose flags the rule above checks.
    Rule {
        errno: Some(libc::ENOSYS),
        without_capability: Some(cap::SYS_ADMIN),
        ..allow(&["clone3"])
    },
    allow_with(cap::SYS_BOOT, &["reboot"]),
    allow_with(cap::SYS_CHROOT, &["chroot"]),
    allow_with(
        cap::SYS_MODULE,
        &["delete_module", "init_module", "finit_module"],
    ),
    allow_with(cap::SYS_PACCT, &["acct"]),
    allow_with(
        cap::SYS_PTRACE,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    allow_with(cap::SYS_RAWIO, &["iopl", "ioperm"]),
    allow_with(
        cap::SYS_TIME,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    allow_with(cap::SYS_TTY_CONFIG, &["vhangup"]),
    allow_with(
        cap::SYS_NICE,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    allow_with(cap::SYSLOG, &["syslog"]),
    allow_with(cap::BPF, &["bpf"]),
    allow_with(cap::PERFMON, &["perf_event_open"]),
];

/// The machine's architecture in Go's naming, which the profile's `arches` use.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Compatibility architectures filtered beside the native one (moby's `archMap`).
fn extra_arches() -> &'static [ScmpArch] {
    match std::env::consts::ARCH {
        "x86_64" => &[ScmpArch::X86, ScmpArch::X32],
        "aarch64" => &[ScmpArch::Arm],
        _ => &[],
    }
}

/// The running kernel's `(major, minor)`, or `None` if `uname` says something unexpected.
fn kernel_version() -> Option<(u32, u32)> {
    let uts = nix::sys::utsname::uname().ok()?;
    let release = uts.release().to_str()?;
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl Rule {
    /// Whether the rule applies to a container with `capabilities` on this machine.
    fn applies(&self, capabilities: u64, arch: &str, kernel: Option<(u32, u32)>) -> bool {
        let has = |cap: u32| capabilities & (1 << cap) != 0;
        self.with_capability.is_none_or(has)
            && !self.without_capability.is_some_and(has)
            && (self.arches.is_empty() || self.arches.contains(&arch))
            && !self.not_arches.contains(&arch)
            && self
                .min_kernel
                .is_none_or(|min| kernel.is_some_and(|version| version >= min))
    }
}

fn compare(arg: Arg) -> ScmpArgCompare {
    match arg {
        Arg::Less(index, value) => ScmpArgCompare::new(index, ScmpCompareOp::Less, value),
        Arg::Equal(index, value) => ScmpArgCompare::new(index, ScmpCompareOp::Equal, value),
        Arg::Greater(index, value) => ScmpArgCompare::new(index, ScmpCompareOp::Greater, value),
        Arg::MaskedEqual { index, mask, value } => {
            ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(mask), value)
        }
    }
}

fn seccomp_error(what: &'static str) -> impl FnOnce(libseccomp::error::SeccompError) -> Error {
    move |source| Error::Seccomp {
        what,
        source: Box::new(source),
    }
}

/// The rules that apply to a container with `capabilities`, each with its syscall names.
fn applicable(capabilities: u64) -> impl Iterator<Item = Rule> {
    let arch = go_arch();
    let kernel = kernel_version();
    std::iter::once(allow(ALLOWED))
        .chain(RULES.iter().copied())
        .filter(move |rule| rule.applies(capabilities, arch, kernel))
}

/// Builds the libseccomp filter for a container with `capabilities`.
fn filter(capabilities: u64) -> Result<ScmpFilterContext> {
    let mut filter = ScmpFilterContext::new(ScmpAction::Errno(DEFAULT_ERRNO))
        .map_err(seccomp_error("create the filter"))?;
    for arch in extra_arches() {
        filter
            .add_arch(*arch)
            .map_err(seccomp_error("add an architecture"))?;
    }
    // The filter is loaded by the child with a bare seccomp(2); these only matter to `load`.
    filter
        .set_ctl_nnp(false)
        .map_err(seccomp_error("clear no_new_privs"))?;
    for rule in applicable(capabilities) {
        let action = rule.errno.map_or(ScmpAction::Allow, ScmpAction::Errno);
        let conditions: Vec<ScmpArgCompare> = rule.args.iter().copied().map(compare).collect();
        for name in rule.names {
            // As moby: a name this libseccomp does not know is skipped.
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                tracing::trace!(syscall = name, "not known to libseccomp, left out");
                continue;
            };
            filter
                .add_rule_conditional(action, syscall, &conditions)
                .map_err(seccomp_error("add a rule"))?;
        }
    }
    Ok(filter)
}

/// The BPF program of Docker's default profile for a container with `capabilities`, built
/// once per capability set and shared.
pub(crate) fn program(capabilities: u64) -> Result<Arc<Program>> {
    static PROGRAMS: OnceLock<Mutex<HashMap<u64, Arc<Program>>>> = OnceLock::new();
    let programs = PROGRAMS.get_or_init(Mutex::default);
    if let Some(program) = programs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&capabilities)
    {
        return Ok(Arc::clone(program));
    }
    let program = Arc::new(Program(export(&filter(capabilities)?)?));
    programs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(capabilities, Arc::clone(&program));
    Ok(program)
}

/// A compiled filter: the instructions `seccomp(SECCOMP_SET_MODE_FILTER)` takes.
pub(crate) struct Program(Vec<libc::sock_filter>);

impl Program {
    pub(crate) fn instructions(&self) -> &[libc::sock_filter] {
        &self.0
    }
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Program({} instructions)", self.0.len())
    }
}

/// The filter's BPF instructions, through a memory file (libseccomp writes to a descriptor).
fn export(filter: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    let memfd =
        nix::sys::memfd::memfd_create(c"kiln-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|source| Error::Syscall {
                call: "memfd_create",
                source,
            })?;
    filter
        .export_bpf(&memfd)
        .map_err(seccomp_error("export the filter"))?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match nix::sys::uio::pread(&memfd, &mut chunk, bytes.len() as libc::off_t) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(source) => {
                return Err(Error::Syscall {
                    call: "pread",
                    source,
                });
            }
        }
    }
    const SIZE: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % SIZE != 0 {
        return Err(Error::SeccompProgram { len: bytes.len() });
    }
    Ok(bytes
        .chunks_exact(SIZE)
        .map(|chunk| libc::sock_filter {
            code: u16::from_ne_bytes([chunk[0], chunk[1]]),
            jt: chunk[2],
            jf: chunk[3],
            k: u32::from_ne_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests;
