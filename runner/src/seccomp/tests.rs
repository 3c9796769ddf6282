use super::*;

fn docker_capabilities() -> u64 {
    crate::run::DOCKER_DEFAULT_CAPABILITIES
        .iter()
        .fold(0, |mask, cap| mask | 1 << cap)
}

fn names(capabilities: u64, errno: Option<i32>) -> Vec<&'static str> {
    applicable(capabilities)
        .filter(|rule| rule.errno == errno)
        .flat_map(|rule| rule.names.iter().copied())
        .collect()
}

#[test]
fn capability_conditions_follow_the_container_set() {
    let docker = docker_capabilities();
    let allowed = names(docker, None);
    // Docker's set has SYS_CHROOT but not SYS_ADMIN, SYS_PTRACE or SYS_TIME.
    assert!(allowed.contains(&"chroot"));
    for blocked in [
        "mount",
        "unshare",
        "setns",
        "kcmp",
        "clock_settime",
        "reboot",
        "bpf",
    ] {
        assert!(!allowed.contains(&blocked), "{blocked}");
    }
    assert_eq!(names(docker, Some(libc::ENOSYS)), ["clone3"]);
    // With SYS_ADMIN, clone and clone3 are allowed outright and clone3 gets no ENOSYS.
    let admin = docker | 1 << cap::SYS_ADMIN;
    assert!(names(admin, Some(libc::ENOSYS)).is_empty());
    assert!(names(admin, None).contains(&"clone3"));
    assert!(!applicable(admin).any(|rule| rule.names == ["clone"] && !rule.args.is_empty()));
    // Not in any rule: the default errno.
    for never in [
        "keyctl",
        "add_key",
        "request_key",
        "swapon",
        "kexec_load",
        "userfaultfd",
    ] {
        assert!(!names(u64::MAX, None).contains(&never), "{never}");
    }
}

#[test]
fn architecture_and_kernel_conditions() {
    let rule = allow_on(&["amd64", "x32"], &["arch_prctl"]);
    assert!(rule.applies(0, "amd64", None));
    assert!(!rule.applies(0, "arm64", None));
    let clone = RULES
        .iter()
        .find(|rule| rule.names == ["clone"] && rule.not_arches.contains(&"s390x"))
        .unwrap();
    assert!(clone.applies(0, "amd64", None) && !clone.applies(0, "s390x", None));
    let ptrace = RULES[0];
    assert!(ptrace.applies(0, "amd64", Some((6, 18))));
    assert!(!ptrace.applies(0, "amd64", Some((4, 4))));
    assert!(!ptrace.applies(0, "amd64", None));
}

#[test]
fn exports_one_program_per_capability_set() {
    let docker = program(docker_capabilities()).unwrap();
    let docker = docker.instructions();
    assert!(docker.len() > 100, "{}", docker.len());
    // The first instruction loads the architecture from seccomp_data.
    assert_eq!(
        docker[0].code,
        (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16
    );
    assert_eq!(docker[0].k, 4);
    assert!(Arc::ptr_eq(
        &program(docker_capabilities()).unwrap(),
        &program(docker_capabilities()).unwrap()
    ));
    let code = |program: &[libc::sock_filter]| {
        program
            .iter()
            .map(|i| (i.code, i.jt, i.jf, i.k))
            .collect::<Vec<_>>()
    };
    assert_ne!(
        code(program(u64::MAX).unwrap().instructions()),
        code(docker)
    );
}
