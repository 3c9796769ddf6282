//! Overlays deeper than `mount(2)`'s one page of options, mounted layer by layer.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use kiln_fsutil::{MAX_LAYERS, MOUNT_DATA_LIMIT, MountAttributes, mount_layers};
use nix::mount::{MntFlags, umount2};

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// Runs `f` on a thread in a mount namespace of its own (the mounts vanish with it).
fn in_private_namespace<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            kiln_testdata::private_mount_namespace();
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn three_hundred_layers_with_long_paths_merge_and_take_writes() {
    if !kiln_testdata::is_root() {
        kiln_testdata::skip("mounting overlays needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layers = 300;
    let mut lowers = Vec::new();
    for i in 0..layers {
        // Paths as long as a store's snapshot directories, so that the options of `mount(2)`
        // would be far over the limit.
        let layer = dir.path().join(format!("{i:03}-{}", "a".repeat(64)));
        fs_err::create_dir(&layer).unwrap();
        fs_err::write(layer.join(format!("f{i}")), format!("{i}")).unwrap();
        fs_err::write(layer.join("shared"), format!("layer {i}")).unwrap();
        lowers.push(c(&layer));
    }
    // Topmost first.
    lowers.reverse();
    let joined: usize = lowers.iter().map(|l| l.as_bytes().len() + 1).sum();
    assert!(
        joined > MOUNT_DATA_LIMIT * 4,
        "options would be {joined} bytes"
    );
    let (upper, work, target) = (
        dir.path().join("upper"),
        dir.path().join("work"),
        dir.path().join("merged"),
    );
    for d in [&upper, &work, &target] {
        fs_err::create_dir(d).unwrap();
    }
    let refs: Vec<&std::ffi::CStr> = lowers.iter().map(CString::as_c_str).collect();
    in_private_namespace(|| {
        mount_layers(
            &c(&target),
            &refs,
            Some((&c(&upper), &c(&work))),
            MountAttributes {
                readonly: false,
                nodev: true,
            },
        )
        .unwrap();
        assert_eq!(fs_err::read_to_string(target.join("f0")).unwrap(), "0");
        assert_eq!(fs_err::read_to_string(target.join("f299")).unwrap(), "299");
        assert_eq!(
            fs_err::read_to_string(target.join("shared")).unwrap(),
            "layer 299",
            "the topmost layer wins"
        );
        fs_err::write(target.join("new"), "written").unwrap();
        umount2(&target, MntFlags::MNT_DETACH).unwrap();
    });
    assert_eq!(
        fs_err::read_to_string(upper.join("new")).unwrap(),
        "written"
    );
    assert!(!target.join("f0").exists(), "unmounted with the namespace");

    // Read-only without an upper.
    in_private_namespace(|| {
        mount_layers(
            &c(&target),
            &refs,
            None,
            MountAttributes {
                readonly: true,
                nodev: false,
            },
        )
        .unwrap();
        assert_eq!(fs_err::read_to_string(target.join("f150")).unwrap(), "150");
        let err = fs_err::write(target.join("new"), "x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ReadOnlyFilesystem, "{err}");
    });
}

#[test]
fn more_layers_than_the_kernel_takes_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let lower = c(dir.path());
    let lowers = vec![lower.as_c_str(); MAX_LAYERS + 1];
    let err = mount_layers(&c(dir.path()), &lowers, None, MountAttributes::default()).unwrap_err();
    assert_eq!(err.errno, nix::errno::Errno::E2BIG);
    assert_eq!(
        err.to_string(),
        "overlay lower layer 500: E2BIG: Argument list too long"
    );
}
