//! Receiving a client's local directory through its session: the `FileSync.DiffCopy` call of
//! BuildKit's file sync, in the packet protocol of its `fsutil` library.
//!
//! # Overview
//! 1. The daemon calls the client's `DiffCopy` with the directory's name and its selection
//!    (`dir-name`, `include-patterns`, `exclude-patterns`, `followpaths` metadata, URL-escaped
//!    with a `-encoded` marker when not ASCII); the client walks the selected files.
//! 2. The client sends one `STAT` packet per path, parents before children, and an empty `STAT`
//!    at the end. Each packet's index is its id.
//! 3. The receiver compares the listing with what the destination already holds from an
//!    earlier build (type, size, modification time, mode, owner): it removes what is gone or
//!    changed type, makes directories and links, and asks (`REQ` by id) only for the regular
//!    files that differ. The client answers `DATA` packets per file, an empty one ending it;
//!    each file is written beside its place and renamed into it when complete.
//! 4. Directory metadata is applied last (children change their parent's time), then the
//!    receiver sends `FIN` and the client answers `FIN`.
//!
//! The client is not trusted: a path must be relative and plain (no `..`, no `.`), its parent
//! must be a directory of the same listing (never a symlink), a hard link must point at a
//! regular file listed before it, and devices, fifos and sockets are skipped. Nothing is
//! written outside the destination.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use fs_err::os::unix::fs::OpenOptionsExt as _;
use kiln_solver::LocalRequest;
use tokio::sync::mpsc;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};

use crate::pb::filesync::file_sync_client::FileSyncClient;
use crate::pb::fsutil::types::{Packet, Stat, packet::PacketType};
use crate::session::ClientSession;

mod sender;

pub(crate) use sender::Sender;

/// The method a client serves its directories with.
pub(crate) const DIFF_COPY: &str = "/moby.filesync.v1.FileSync/DiffCopy";

// Go's `os.FileMode` bits, as fsutil's `Stat.mode` holds them.
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_STICKY: u32 = 1 << 20;
/// Every type bit: dir, append, exclusive, temporary, symlink, device, pipe, socket, char
/// device, irregular (setuid, setgid and sticky are permission bits).
const GO_TYPE: u32 = GO_DIR
    | (1 << 30)
    | (1 << 29)
    | (1 << 28)
    | GO_SYMLINK
    | (0b1111 << 24)
    | (1 << 21)
    | (1 << 19);

/// Why a directory could not be received.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    /// The client does not serve file sync.
    #[error("the client serves no local directories (its session has no {DIFF_COPY})")]
    NotServed,
    /// A pattern cannot travel in gRPC metadata.
    #[error("pattern {0:?} cannot be sent to the client")]
    BadPattern(String),
    /// The call failed.
    #[error("file sync call failed")]
    Call(#[source] tonic::Status),
    /// The sending side reported an error.
    #[error("error from sender: {0}")]
    Sender(String),
    /// The receiving side reported an error.
    #[error("error from receiver: {0}")]
    Receiver(String),
    /// The client broke the protocol.
    #[error("invalid file sync from the client: {0}")]
    Protocol(String),
    /// Writing the files failed.
    #[error("writing the received files")]
    Io(#[from] std::io::Error),
}

/// What a sync did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Received {
    /// Paths the client listed.
    pub(crate) listed: usize,
    /// Regular files whose contents were sent (the others were already here).
    pub(crate) transferred: usize,
    /// Bytes of file contents sent.
    pub(crate) bytes: u64,
}

fn protocol(text: impl Into<String>) -> SyncError {
    SyncError::Protocol(text.into())
}

/// Values as BuildKit encodes them for metadata: as they are when all ASCII, otherwise each
/// URL-escaped and the key marked `-encoded`.
fn put_list(
    metadata: &mut MetadataMap,
    key: &'static str,
    values: &[String],
) -> Result<(), SyncError> {
    let encode = values.iter().any(|v| !v.is_ascii());
    for value in values {
        let text = if encode {
            form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
        } else {
            value.clone()
        };
        let value: AsciiMetadataValue = text
            .parse()
            .map_err(|_| SyncError::BadPattern(value.clone()))?;
        metadata.append(key, value);
    }
    if encode {
        // BuildKit's mark: the key with `-encoded` after it.
        let marked = AsciiMetadataKey::from_bytes(format!("{key}-encoded").as_bytes())
            .map_err(|_| SyncError::BadPattern(key.to_owned()))?;
        metadata.insert(marked, AsciiMetadataValue::from_static("1"));
    }
    Ok(())
}

/// Receives the client's directory `request.name` into `dest` (made if missing), reusing what
/// `dest` already holds.
pub(crate) async fn receive(
    session: &ClientSession,
    request: &LocalRequest,
    dest: &Path,
) -> Result<Received, SyncError> {
    if !session.supports(DIFF_COPY) {
        return Err(SyncError::NotServed);
    }
    let (outgoing, outgoing_stream) = mpsc::unbounded_channel::<Packet>();
    let mut call = tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(
        outgoing_stream,
    ));
    let metadata = call.metadata_mut();
    put_list(metadata, "include-patterns", &request.include_patterns)?;
    put_list(metadata, "exclude-patterns", &request.exclude_patterns)?;
    put_list(metadata, "followpaths", &request.follow_paths)?;
    put_list(metadata, "dir-name", std::slice::from_ref(&request.name))?;
    let mut client = FileSyncClient::new(session.channel.clone())
        .max_decoding_message_size(crate::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(crate::MAX_MESSAGE_SIZE);
    let incoming = client
        .diff_copy(call)
        .await
        .map_err(SyncError::Call)?
        .into_inner();
    // The packets go to a blocking worker that does the file work; a bounded queue keeps the
    // client from running ahead of the disk.
    let (packets, mut queue) = mpsc::channel::<Result<Packet, SyncError>>(64);
    let _reader = AbortOnDrop(forward_packets(incoming, packets));
    let dest = dest.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut receiver = Receiver {
            dest,
            outgoing,
            next: Box::new(move || queue.blocking_recv()),
            merge: false,
            owner: None,
        };
        receiver.run()
    })
    .await
    .map_err(|e| SyncError::Io(std::io::Error::other(e)))?
}

/// Hands the packets of a call's response to `packets` (for a blocking worker), an error
/// last, until the call or the worker ends.
pub(crate) fn forward_packets(
    mut incoming: tonic::Streaming<Packet>,
    packets: mpsc::Sender<Result<Packet, SyncError>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let next = match incoming.message().await {
                Ok(Some(packet)) => Ok(packet),
                Ok(None) => break,
                Err(status) => Err(SyncError::Call(status)),
            };
            let failed = next.is_err();
            if packets.send(next).await.is_err() || failed {
                break;
            }
        }
    })
}

/// Tells the other side of a sync why this side gave up (as fsutil does), then returns the
/// result.
fn reported<T>(
    outgoing: &mpsc::UnboundedSender<Packet>,
    result: Result<T, SyncError>,
) -> Result<T, SyncError> {
    if let Err(e) = &result {
        let _ = outgoing.send(Packet {
            r#type: PacketType::PacketErr as i32,
            data: e.to_string().into_bytes(),
            ..Packet::default()
        });
    }
    result
}

pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One listed path.
struct Entry {
    path: PathBuf,
    stat: Stat,
}

impl Entry {
    fn is_dir(&self) -> bool {
        self.stat.mode & GO_DIR != 0
    }
    fn is_symlink(&self) -> bool {
        self.stat.mode & GO_SYMLINK != 0
    }
    fn is_regular(&self) -> bool {
        self.stat.mode & GO_TYPE == 0
    }
    fn is_hardlink(&self) -> bool {
        self.is_regular() && !self.stat.linkname.is_empty()
    }
    /// The size the listing gives (a negative one counts as none).
    fn size(&self) -> u64 {
        u64::try_from(self.stat.size).unwrap_or(0)
    }
    /// The Unix permission bits of the Go mode.
    fn permissions(&self) -> u32 {
        let mut mode = self.stat.mode & 0o777;
        for (go, unix) in [
            (GO_SETUID, 0o4000),
            (GO_SETGID, 0o2000),
            (GO_STICKY, 0o1000),
        ] {
            if self.stat.mode & go != 0 {
                mode |= unix;
            }
        }
        mode
    }
    fn mtime(&self) -> FileTime {
        let nanos = self.stat.mod_time;
        FileTime::from_unix_time(
            nanos.div_euclid(1_000_000_000),
            u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0),
        )
    }
}

/// A path from the client as a plain relative path, or why not.
fn plain_path(text: &str) -> Result<PathBuf, SyncError> {
    let path = Path::new(text);
    if text.is_empty() || text.len() > 4096 || text.contains('\0') {
        return Err(protocol(format!("invalid path {text:?}")));
    }
    // Segment by segment: `Path::components` would quietly drop `a/./b`'s dot.
    if text
        .split('/')
        .any(|segment| matches!(segment, "" | "." | ".."))
    {
        return Err(protocol(format!(
            "path {text:?} is not a plain relative path"
        )));
    }
    Ok(path.to_owned())
}

/// An open file being received.
struct Incoming {
    entry: usize,
    temp: PathBuf,
    file: Option<fs_err::File>,
    /// Bytes written so far (at most the listed size).
    written: u64,
}

impl Drop for Incoming {
    /// A file not received whole leaves no temporary file behind (one received whole was
    /// renamed already).
    fn drop(&mut self) {
        self.file.take();
        let _ = fs_err::remove_file(&self.temp);
    }
}

pub(crate) type NextPacket = Box<dyn FnMut() -> Option<Result<Packet, SyncError>> + Send>;

/// The receiving side of a sync into `dest`.
pub(crate) struct Receiver {
    pub(crate) dest: PathBuf,
    pub(crate) outgoing: mpsc::UnboundedSender<Packet>,
    pub(crate) next: NextPacket,
    /// Keep what `dest` holds that the listing does not name (an export into a client's
    /// directory, as BuildKit's clients receive it), instead of removing it (a mirror).
    pub(crate) merge: bool,
    /// Give every file this owner (uid, gid) instead of the sender's: a client receiving an
    /// export owns what it receives.
    pub(crate) owner: Option<(u32, u32)>,
}

impl Receiver {
    fn send(&self, packet: Packet) -> Result<(), SyncError> {
        self.outgoing
            .send(packet)
            .map_err(|_| protocol("the client closed the sync"))
    }

    fn packet(&mut self) -> Result<Packet, SyncError> {
        match (self.next)() {
            Some(Ok(packet)) if packet.r#type == PacketType::PacketErr as i32 => Err(
                SyncError::Sender(String::from_utf8_lossy(&packet.data).into_owned()),
            ),
            Some(packet) => packet,
            None => Err(protocol("the client ended the sync early")),
        }
    }

    pub(crate) fn run(&mut self) -> Result<Received, SyncError> {
        let result = self.sync();
        reported(&self.outgoing, result)
    }

    fn sync(&mut self) -> Result<Received, SyncError> {
        fs_err::create_dir_all(&self.dest)?;
        let entries = self.listing()?;
        let mut received = Received {
            listed: entries.len(),
            ..Received::default()
        };
        if !self.merge {
            self.remove_unlisted(&entries)?;
        }
        // Directories and symlinks now, parents first; the files the destination lacks asked for.
        let mut wanted = HashMap::new();
        for (id, entry) in entries.iter().enumerate() {
            let target = self.dest.join(&entry.path);
            let existing = fs_err::symlink_metadata(&target).ok();
            if entry.is_dir() {
                match &existing {
                    Some(meta) if meta.is_dir() => {}
                    Some(_) => {
                        remove(&target)?;
                        fs_err::create_dir(&target)?;
                    }
                    None => fs_err::create_dir(&target)?,
                }
            } else if entry.is_symlink() {
                let same = existing
                    .as_ref()
                    .is_some_and(|m| m.file_type().is_symlink())
                    && fs_err::read_link(&target)
                        .is_ok_and(|t| t.as_os_str().as_bytes() == entry.stat.linkname.as_bytes());
                if !same {
                    if existing.is_some() {
                        remove(&target)?;
                    }
                    std::os::unix::fs::symlink(OsStr::new(&entry.stat.linkname), &target)
                        .map_err(|e| io_at(e, "making symlink", &target))?;
                }
                self.metadata(entry, &target)?;
            } else if entry.is_regular() && !entry.is_hardlink() {
                let current = existing.as_ref().is_some_and(|meta| {
                    meta.is_file()
                        && meta.len() == u64::try_from(entry.stat.size).unwrap_or(u64::MAX)
                        && FileTime::from_last_modification_time(meta) == entry.mtime()
                        && meta.permissions().mode() & 0o7777 == entry.permissions()
                        && meta.uid() == entry.stat.uid
                        && meta.gid() == entry.stat.gid
                });
                if !current {
                    if existing.as_ref().is_some_and(std::fs::Metadata::is_dir) {
                        remove(&target)?;
                    }
                    let id = u32::try_from(id).map_err(|_| protocol("too many paths"))?;
                    wanted.insert(id, None::<Incoming>);
                }
            }
        }
        // The client says how large each file is; it sends no more (checked as it comes), and
        // asks for no more than the destination's file system has free.
        let announced: u64 = wanted
            .keys()
            .map(|id| entries[*id as usize].size())
            .fold(0, u64::saturating_add);
        let free = nix::sys::statvfs::statvfs(&self.dest)
            .map(|v| v.blocks_available().saturating_mul(v.fragment_size()))
            .unwrap_or(u64::MAX);
        if announced > free {
            return Err(protocol(format!(
                "the files to receive are {announced} bytes, more than the {free} bytes free \
                 where they go"
            )));
        }
        for id in sorted(wanted.keys().copied()) {
            self.send(Packet {
                r#type: PacketType::PacketReq as i32,
                id,
                ..Packet::default()
            })?;
        }
        let mut pending = wanted.len();
        while pending > 0 {
            let packet = self.packet()?;
            if packet.r#type != PacketType::PacketData as i32 {
                continue;
            }
            let slot = wanted.get_mut(&packet.id).ok_or_else(|| {
                protocol(format!("data for a file not asked for ({})", packet.id))
            })?;
            let index = usize::try_from(packet.id).unwrap_or(usize::MAX);
            if slot.is_none() {
                let entry = &entries[index];
                let temp = self.dest.join(
                    entry
                        .path
                        .with_file_name(format!(".kiln-sync-{}", packet.id)),
                );
                let file = fs_err::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&temp)?;
                *slot = Some(Incoming {
                    entry: index,
                    temp,
                    file: Some(file),
                    written: 0,
                });
            }
            if packet.data.is_empty() {
                let Some(mut done) = slot.take() else {
                    continue;
                };
                wanted.remove(&packet.id);
                pending -= 1;
                done.file.take();
                let entry = &entries[done.entry];
                let target = self.dest.join(&entry.path);
                self.metadata(entry, &done.temp)?;
                fs_err::rename(&done.temp, &target)?;
                received.transferred += 1;
            } else if let Some(open) = slot.as_mut() {
                let entry = &entries[open.entry];
                let written = open.written.saturating_add(packet.data.len() as u64);
                if written > entry.size() {
                    return Err(protocol(format!(
                        "{} is larger than the {} bytes its listing said",
                        entry.path.display(),
                        entry.size()
                    )));
                }
                if let Some(file) = open.file.as_mut() {
                    file.write_all(&packet.data)?;
                }
                open.written = written;
                received.bytes += packet.data.len() as u64;
            }
        }
        // Hard links once their targets are complete.
        for entry in entries.iter().filter(|e| e.is_hardlink()) {
            let target = self.dest.join(&entry.path);
            let source = self.dest.join(&entry.stat.linkname);
            if fs_err::symlink_metadata(&target).is_ok() {
                remove(&target)?;
            }
            fs_err::hard_link(&source, &target)?;
        }
        // Directory metadata last, deepest first: writing a child changes its parent's time.
        for entry in entries.iter().rev().filter(|e| e.is_dir()) {
            let target = self.dest.join(&entry.path);
            self.metadata(entry, &target)?;
        }
        self.send(Packet {
            r#type: PacketType::PacketFin as i32,
            ..Packet::default()
        })?;
        // The client answers FIN and ends its stream.
        loop {
            match (self.next)() {
                None => break,
                Some(Ok(p)) if p.r#type == PacketType::PacketFin as i32 => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
            }
        }
        Ok(received)
    }

    /// The client's listing, checked: plain paths, parents listed as directories before their
    /// children, hard links to regular files listed earlier. Devices, fifos and sockets are
    /// left out (a build context has no use for them on the daemon's host).
    fn listing(&mut self) -> Result<Vec<Entry>, SyncError> {
        let mut entries = Vec::new();
        let mut dirs: HashSet<PathBuf> = HashSet::new();
        let mut files: HashSet<PathBuf> = HashSet::new();
        let mut seen: HashSet<PathBuf> = HashSet::new();
        loop {
            let packet = self.packet()?;
            if packet.r#type != PacketType::PacketStat as i32 {
                return Err(protocol("expected the listing first"));
            }
            let Some(mut stat) = packet.stat else { break };
            if let Some((uid, gid)) = self.owner {
                (stat.uid, stat.gid) = (uid, gid);
            }
            let path = plain_path(&stat.path)?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                if !dirs.contains(parent) {
                    return Err(protocol(format!(
                        "{:?} is listed before its parent directory",
                        stat.path
                    )));
                }
            }
            if !seen.insert(path.clone()) {
                return Err(protocol(format!("{:?} is listed twice", stat.path)));
            }
            let entry = Entry { path, stat };
            if entry.is_dir() {
                dirs.insert(entry.path.clone());
            } else if entry.is_hardlink() {
                let source = plain_path(&entry.stat.linkname)?;
                if !files.contains(&source) {
                    return Err(protocol(format!(
                        "hard link {:?} to {:?}, which is not a file listed before it",
                        entry.stat.path, entry.stat.linkname
                    )));
                }
            } else if entry.is_regular() {
                files.insert(entry.path.clone());
            } else if !entry.is_symlink() {
                tracing::debug!(path = entry.stat.path, "special file skipped");
                // Its id still counts: ids are listing indexes.
            }
            entries.push(entry);
            if entries.len() > 10_000_000 {
                return Err(protocol("more than 10,000,000 paths"));
            }
        }
        Ok(entries)
    }

    /// Removes what the destination holds that the listing does not name (a special file's
    /// place included, as it is never made).
    fn remove_unlisted(&self, entries: &[Entry]) -> Result<(), SyncError> {
        let listed: HashSet<&Path> = entries
            .iter()
            .filter(|e| e.is_dir() || e.is_symlink() || e.is_regular())
            .map(|e| e.path.as_path())
            .collect();
        let mut stack = vec![PathBuf::new()];
        while let Some(dir) = stack.pop() {
            for child in fs_err::read_dir(self.dest.join(&dir))? {
                let child = child?;
                let relative = dir.join(child.file_name());
                if !listed.contains(relative.as_path()) {
                    remove(&child.path())?;
                } else if child.file_type()?.is_dir() {
                    stack.push(relative);
                }
            }
        }
        Ok(())
    }

    /// Owner, mode (the owner first: a change of owner clears setuid) and times.
    fn metadata(&self, entry: &Entry, target: &Path) -> Result<(), SyncError> {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            target,
            Some(nix::unistd::Uid::from_raw(entry.stat.uid)),
            Some(nix::unistd::Gid::from_raw(entry.stat.gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_at(e.into(), "changing the owner of", target))?;
        if !entry.is_symlink() {
            fs_err::set_permissions(target, std::fs::Permissions::from_mode(entry.permissions()))?;
        }
        let mtime = entry.mtime();
        filetime::set_symlink_file_times(target, mtime, mtime)
            .map_err(|e| io_at(e, "setting the times of", target))?;
        Ok(())
    }
}

fn io_at(error: std::io::Error, what: &str, path: &Path) -> SyncError {
    SyncError::Io(std::io::Error::new(
        error.kind(),
        format!("{what} {}: {error}", path.display()),
    ))
}

/// Removes a file, link or directory tree without following links.
fn remove(path: &Path) -> Result<(), SyncError> {
    let meta = fs_err::symlink_metadata(path)?;
    if meta.is_dir() {
        fs_err::remove_dir_all(path)?;
    } else {
        fs_err::remove_file(path)?;
    }
    Ok(())
}

fn sorted(ids: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut ids: Vec<u32> = ids.collect();
    ids.sort_unstable();
    ids
}

/// The Go `os.FileMode` of a file's metadata.
fn go_mode(meta: &std::fs::Metadata) -> u32 {
    let file_type = meta.file_type();
    let unix = meta.permissions().mode();
    let mut mode = unix & 0o777;
    for (unix_bit, go) in [
        (0o4000, GO_SETUID),
        (0o2000, GO_SETGID),
        (0o1000, GO_STICKY),
    ] {
        if unix & unix_bit != 0 {
            mode |= go;
        }
    }
    use std::os::unix::fs::FileTypeExt as _;
    if file_type.is_dir() {
        mode |= GO_DIR;
    } else if file_type.is_symlink() {
        mode |= GO_SYMLINK;
    } else if file_type.is_block_device() {
        mode |= 1 << 26;
    } else if file_type.is_char_device() {
        mode |= (1 << 26) | (1 << 21);
    } else if file_type.is_fifo() {
        mode |= 1 << 25;
    } else if file_type.is_socket() {
        mode |= 1 << 24;
    }
    mode
}

/// A file's `Stat` as fsutil sends it, named `path`: Go's mode bits, nanosecond times (the
/// link name of a symbolic link is the caller's to fill in).
pub(crate) fn stat(path: &str, meta: &std::fs::Metadata) -> Stat {
    Stat {
        path: path.to_owned(),
        mode: go_mode(meta),
        uid: meta.uid(),
        gid: meta.gid(),
        size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
        mod_time: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        ..Stat::default()
    }
}

/// The paths below `root` in the order fsutil walks and checks them: depth first, each
/// directory's entries by name, a directory before what it holds.
pub(crate) fn walk(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn visit(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut names: Vec<_> = fs_err::read_dir(root.join(dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let path = dir.join(name);
            let is_dir = fs_err::symlink_metadata(root.join(&path))?.is_dir();
            out.push(path.clone());
            if is_dir {
                visit(root, &path, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    visit(root, Path::new(""), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
