//! Sending a directory in fsutil's packet protocol: the other side of [`receive`](super::receive),
//! for the outputs a build sends back to the client (`FileSend`).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::{NextPacket, SyncError, protocol, reported, stat, walk};
use crate::pb::fsutil::types::{Packet, packet::PacketType};

/// Sends the directory `root` as fsutil's sender does: the listing, then the files the
/// receiver asks for, until it says `FIN`.
pub(crate) struct Sender {
    pub(crate) outgoing: mpsc::UnboundedSender<Packet>,
    pub(crate) next: NextPacket,
}

impl Sender {
    fn send(&self, packet: Packet) -> Result<(), SyncError> {
        self.outgoing
            .send(packet)
            .map_err(|_| protocol("the receiver closed the sync"))
    }

    /// Sends `root`; returns the bytes of file contents sent.
    pub(crate) fn run(&mut self, root: &Path) -> Result<u64, SyncError> {
        let result = walk(root)
            .map_err(SyncError::from)
            .and_then(|paths| self.send_dir(root, paths));
        reported(&self.outgoing, result)
    }

    /// Sends the `paths` of `root` (relative, parents before children, in walk order, as
    /// [`kiln_solver::LocalRequest::select`] lists them); returns the bytes of file contents
    /// sent.
    pub(crate) fn run_selected(
        &mut self,
        root: &Path,
        paths: Vec<PathBuf>,
    ) -> Result<u64, SyncError> {
        let result = self.send_dir(root, paths);
        reported(&self.outgoing, result)
    }

    /// Tells the receiver why nothing is sent.
    pub(crate) fn run_failed(&mut self, error: SyncError) -> Result<u64, SyncError> {
        reported(&self.outgoing, Err(error))
    }

    fn send_dir(&mut self, root: &Path, paths: Vec<PathBuf>) -> Result<u64, SyncError> {
        let mut files: HashMap<u32, PathBuf> = HashMap::new();
        let mut first_links: HashMap<(u64, u64), String> = HashMap::new();
        for (id, path) in paths.into_iter().enumerate() {
            let id = u32::try_from(id).map_err(|_| protocol("too many paths"))?;
            let full = root.join(&path);
            let meta = fs_err::symlink_metadata(&full)?;
            let text = path
                .to_str()
                .ok_or_else(|| protocol(format!("path {} is not UTF-8", path.display())))?
                .to_owned();
            let mut stat = stat(&text, &meta);
            if meta.file_type().is_symlink() {
                stat.linkname = fs_err::read_link(&full)?
                    .to_str()
                    .ok_or_else(|| protocol(format!("link {text} is not UTF-8")))?
                    .to_owned();
                stat.size = 0;
            } else if meta.is_file() {
                // A second name of a file already listed goes as a hard link to the first.
                let inode = (meta.dev(), meta.ino());
                match (meta.nlink() > 1)
                    .then(|| first_links.get(&inode))
                    .flatten()
                {
                    Some(first) => {
                        stat.linkname = first.clone();
                        stat.size = 0;
                    }
                    None => {
                        if meta.nlink() > 1 {
                            first_links.insert(inode, text.clone());
                        }
                        files.insert(id, full);
                    }
                }
            } else if meta.is_dir() {
                stat.size = 0;
            }
            self.send(Packet {
                r#type: PacketType::PacketStat as i32,
                stat: Some(stat),
                ..Packet::default()
            })?;
        }
        self.send(Packet {
            r#type: PacketType::PacketStat as i32,
            ..Packet::default()
        })?;
        let mut bytes = 0;
        loop {
            let packet = match (self.next)() {
                Some(packet) => packet?,
                None => return Err(protocol("the receiver ended the sync early")),
            };
            match PacketType::try_from(packet.r#type) {
                Ok(PacketType::PacketReq) => {
                    let path = files
                        .remove(&packet.id)
                        .ok_or_else(|| protocol(format!("invalid file id {}", packet.id)))?;
                    let mut file = fs_err::File::open(&path)?;
                    let mut buffer = vec![0; CHUNK];
                    loop {
                        let n = std::io::Read::read(&mut file, &mut buffer)?;
                        if n == 0 {
                            break;
                        }
                        bytes += n as u64;
                        self.send(Packet {
                            r#type: PacketType::PacketData as i32,
                            id: packet.id,
                            data: buffer[..n].to_vec(),
                            ..Packet::default()
                        })?;
                    }
                    self.send(Packet {
                        r#type: PacketType::PacketData as i32,
                        id: packet.id,
                        ..Packet::default()
                    })?;
                }
                Ok(PacketType::PacketFin) => {
                    self.send(Packet {
                        r#type: PacketType::PacketFin as i32,
                        ..Packet::default()
                    })?;
                    return Ok(bytes);
                }
                Ok(PacketType::PacketErr) => {
                    return Err(SyncError::Receiver(
                        String::from_utf8_lossy(&packet.data).into_owned(),
                    ));
                }
                _ => {}
            }
        }
    }
}

/// The bytes a file sync message carries at most.
const CHUNK: usize = 32 << 10;
