use std::os::unix::fs::symlink;

use super::*;

/// One direction of a sync: what one side sends, the other's next packet.
fn pipe() -> (mpsc::UnboundedSender<Packet>, NextPacket) {
    let (sender, mut receiver) = mpsc::unbounded_channel();
    (sender, Box::new(move || receiver.blocking_recv().map(Ok)))
}

/// Syncs `src` into `dest` over in-memory pipes; the receiver's and the sender's results.
fn sync(src: &Path, dest: &Path) -> (Result<Received, SyncError>, Result<u64, SyncError>) {
    let (to_sender, sender_next) = pipe();
    let (to_receiver, receiver_next) = pipe();
    std::thread::scope(|scope| {
        let sending = scope.spawn(|| {
            Sender {
                outgoing: to_receiver,
                next: sender_next,
            }
            .run(src)
        });
        let received = Receiver {
            dest: dest.to_owned(),
            outgoing: to_sender,
            next: receiver_next,
            merge: false,
            owner: None,
        }
        .run();
        (received, sending.join().unwrap())
    })
}

/// Every path below `root` with its type, mode, owner, size, time, link and contents.
fn tree(root: &Path) -> Vec<String> {
    walk(root)
        .unwrap()
        .iter()
        .map(|path| {
            let full = root.join(path);
            let meta = fs_err::symlink_metadata(&full).unwrap();
            let detail = if meta.file_type().is_symlink() {
                format!("-> {}", fs_err::read_link(&full).unwrap().display())
            } else if meta.is_file() {
                format!("{:?}", fs_err::read_to_string(&full).unwrap())
            } else {
                String::new()
            };
            let time = if meta.file_type().is_symlink() {
                0
            } else {
                meta.mtime()
            };
            format!(
                "{} {:o} {}:{} {} {detail}",
                path.display(),
                meta.mode(),
                meta.uid(),
                meta.gid(),
                time,
            )
        })
        .collect()
}

fn set_time(path: &Path, seconds: i64) {
    let time = FileTime::from_unix_time(seconds, 0);
    filetime::set_symlink_file_times(path, time, time).unwrap();
}

#[test]
fn a_directory_arrives_whole_and_then_only_what_changed() {
    let work = tempfile::tempdir().unwrap();
    let (src, dest, outside) = (
        work.path().join("src"),
        work.path().join("dest"),
        work.path().join("outside"),
    );
    fs_err::create_dir_all(src.join("sub/deeper")).unwrap();
    fs_err::write(src.join("a.txt"), "alpha").unwrap();
    fs_err::write(src.join("sub/deeper/b"), "bravo").unwrap();
    fs_err::write(src.join("empty"), "").unwrap();
    fs_err::write(src.join("tool"), "#!/bin/sh").unwrap();
    fs_err::set_permissions(src.join("tool"), std::fs::Permissions::from_mode(0o4750)).unwrap();
    fs_err::hard_link(src.join("a.txt"), src.join("sub/a-again")).unwrap();
    symlink("deeper/b", src.join("sub/link")).unwrap();
    for path in [
        "a.txt",
        "sub/deeper/b",
        "empty",
        "tool",
        "sub/deeper",
        "sub",
    ] {
        set_time(&src.join(path), 1_600_000_000);
    }
    // What an earlier sync left: a stale file, a symlink where a directory now is (to a
    // directory outside, which must not be written through), a file of the same size.
    fs_err::create_dir_all(&dest).unwrap();
    fs_err::create_dir_all(&outside).unwrap();
    fs_err::write(dest.join("stale"), "gone").unwrap();
    symlink(&outside, dest.join("sub")).unwrap();
    fs_err::write(dest.join("a.txt"), "ALPHA").unwrap();

    let (received, sent) = sync(&src, &dest);
    let received = received.unwrap();
    assert_eq!(tree(&dest), tree(&src));
    assert_eq!(fs_err::read_dir(&outside).unwrap().count(), 0);
    assert_eq!(received.listed, 8);
    // a.txt, b, empty, tool; the hard link is made, not sent.
    assert_eq!(received.transferred, 4);
    assert_eq!(sent.unwrap(), received.bytes);
    let linked = fs_err::metadata(dest.join("sub/a-again")).unwrap();
    assert_eq!(
        linked.ino(),
        fs_err::metadata(dest.join("a.txt")).unwrap().ino()
    );

    // Nothing changed: nothing travels.
    let (received, _) = sync(&src, &dest);
    let received = received.unwrap();
    assert_eq!((received.transferred, received.bytes), (0, 0));
    assert_eq!(tree(&dest), tree(&src));

    // One file touched, one removed.
    fs_err::write(src.join("sub/deeper/b"), "bravo2").unwrap();
    fs_err::remove_file(src.join("empty")).unwrap();
    let (received, _) = sync(&src, &dest);
    let received = received.unwrap();
    assert_eq!((received.transferred, received.bytes), (1, 6));
    assert_eq!(tree(&dest), tree(&src));
}

fn stat(path: &str, mode: u32) -> Packet {
    Packet {
        r#type: PacketType::PacketStat as i32,
        stat: Some(Stat {
            path: path.to_owned(),
            mode,
            ..Stat::default()
        }),
        ..Packet::default()
    }
}

fn link(path: &str, mode: u32, target: &str) -> Packet {
    let mut packet = stat(path, mode);
    packet.stat.as_mut().unwrap().linkname = target.to_owned();
    packet
}

/// Receives a hostile listing into `dest`; the receiver's error.
fn receive_listing(dest: &Path, mut packets: Vec<Packet>) -> String {
    packets.push(Packet {
        r#type: PacketType::PacketStat as i32,
        ..Packet::default()
    });
    let mut packets = packets.into_iter();
    let (outgoing, _replies) = mpsc::unbounded_channel();
    let result = Receiver {
        dest: dest.to_owned(),
        outgoing,
        next: Box::new(move || packets.next().map(Ok)),
        merge: false,
        owner: None,
    }
    .run();
    result.unwrap_err().to_string()
}

#[test]
fn hostile_listings_are_refused_and_nothing_escapes() {
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("dest");
    let outside = work.path().join("outside");
    fs_err::create_dir_all(&outside).unwrap();
    let file = 0o644;
    let dir = GO_DIR | 0o755;
    let cases: Vec<(Vec<Packet>, &str)> = vec![
        (
            vec![stat("../escape", file)],
            "is not a plain relative path",
        ),
        (
            vec![stat("/etc/escape", file)],
            "is not a plain relative path",
        ),
        (vec![stat("a/./b", dir)], "is not a plain relative path"),
        (vec![stat("", file)], "invalid path"),
        (
            vec![stat("sub/file", file)],
            "is listed before its parent directory",
        ),
        (
            vec![
                link("sub", GO_SYMLINK | 0o777, outside.to_str().unwrap()),
                stat("sub/file", file),
            ],
            "is listed before its parent directory",
        ),
        (vec![stat("a", file), stat("a", file)], "is listed twice"),
        (
            vec![link("hard", file, "/etc/passwd")],
            "is not a plain relative path",
        ),
        (
            vec![link("hard", file, "later"), stat("later", file)],
            "which is not a file listed before it",
        ),
    ];
    for (packets, expected) in cases {
        let error = receive_listing(&dest, packets);
        assert!(error.contains(expected), "{error} (expected {expected})");
    }
    assert_eq!(fs_err::read_dir(&outside).unwrap().count(), 0);
    assert!(!work.path().join("escape").exists());
}

#[test]
fn a_client_sends_no_more_than_it_listed_nor_more_than_fits() {
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("dest");
    let sized = |size: i64| {
        let mut packet = stat("big", 0o644);
        packet.stat.as_mut().unwrap().size = size;
        packet
    };
    let end = Packet {
        r#type: PacketType::PacketStat as i32,
        ..Packet::default()
    };
    let data = Packet {
        r#type: PacketType::PacketData as i32,
        id: 0,
        data: vec![b'x'; 10],
        ..Packet::default()
    };
    let receive = |packets: Vec<Packet>| {
        let mut packets = packets.into_iter();
        let (outgoing, _replies) = mpsc::unbounded_channel();
        Receiver {
            dest: dest.clone(),
            outgoing,
            next: Box::new(move || packets.next().map(Ok)),
            merge: false,
            owner: None,
        }
        .run()
        .unwrap_err()
        .to_string()
    };
    let error = receive(vec![sized(4), end.clone(), data]);
    assert!(
        error.contains("big is larger than the 4 bytes its listing said"),
        "{error}"
    );
    // Nothing is left of the refused file.
    assert_eq!(fs_err::read_dir(&dest).unwrap().count(), 0);
    let error = receive(vec![sized(i64::MAX), end]);
    assert!(error.contains("bytes free where they go"), "{error}");
}
