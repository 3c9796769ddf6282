use super::*;

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}

#[test]
fn usable_from_async_code() {
    // spawn_blocking needs Send; the handle is shared with the task that cancels.
    assert_send_sync::<Runner>();
    assert_send_sync::<Handle>();
    assert_send::<Spec>();
    assert_send::<Error>();
}

#[test]
fn sweep_removes_dead_runs_files_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    Runner::new(&missing).sweep();
    assert!(!missing.exists());
    let dir = tmp.path().join("state");
    fs_err::create_dir(&dir).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = format!(
        "{}-{}-0",
        child.id(),
        state::start_time(child.id()).unwrap_or(1)
    );
    child.wait().unwrap();
    let me = std::process::id();
    let live = format!("{me}-{}-0", state::start_time(me).unwrap());
    for name in [&dead, &live] {
        fs_err::create_dir_all(dir.join(name).join("rootfs")).unwrap();
    }
    Runner::new(&dir).sweep();
    let left: Vec<String> = fs_err::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, [live]);
}

#[test]
fn step_codes_round_trip() {
    for code in 0..14 {
        let step = Step::from_code(code).unwrap();
        assert_eq!(step as u32, code);
        assert!(!step.describe().is_empty());
    }
    assert_eq!(Step::from_code(14), None);
    assert_eq!(
        Step::from_code(Step::Seccomp as u32).map(Step::describe),
        Some("install the seccomp filter")
    );
}

#[test]
fn handle_queues_requests_until_taken() {
    let handle = Handle::new().unwrap();
    handle.signal(Signal::SIGTERM);
    handle.cancel();
    let taken = handle.take();
    assert!(matches!(
        taken[..],
        [Request::Signal(Signal::SIGTERM), Request::Cancel]
    ));
    assert!(handle.take().is_empty());
    // Dropping an armed guard cancels; a disarmed one does not.
    handle.cancel_on_drop().disarm();
    assert!(handle.take().is_empty());
    drop(handle.cancel_on_drop());
    assert!(matches!(handle.take()[..], [Request::Cancel]));
}
