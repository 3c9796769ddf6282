//! Containers' file systems for `kiln run`: a writable snapshot on an image's top snapshot,
//! kept under a name until removed ([`Store::create_container`], [`Store::containers`],
//! [`Store::remove_container`]), so the CLI never handles snapshot keys itself.

use kiln_llb::Digest;

use crate::error::Error;
use crate::snapshot::{Mounts, SnapshotKind};
use crate::store::{ImageRecord, Store};

/// Prefix of the snapshot keys of containers' file systems.
const CONTAINER_PREFIX: &str = "container-";

impl Store {
    /// The committed snapshot of `image`'s whole file system (its chain ID), unpacking the
    /// layers that are not snapshots yet; `None` for an image without layers.
    pub fn image_snapshot(&self, image: &ImageRecord) -> Result<Option<Digest>, Error> {
        if let Some(chain) = image.chain_id
            && self.snapshot(&chain.to_string())?.is_some()
        {
            return Ok(Some(chain));
        }
        if image.pending.is_some() {
            // Its layers are its snapshots; there are no blobs to unpack them from.
            return Err(Error::SnapshotNotFound {
                key: image.chain_id.map_or_else(String::new, |c| c.to_string()),
            });
        }
        let mut parent = None;
        for (layer, diff_id) in image.layers.iter().zip(&image.diff_ids) {
            parent = Some(self.unpack_snapshot(parent.as_ref(), layer, diff_id)?);
        }
        Ok(parent)
    }

    /// Prepares the writable file system of the container `name` on `image`'s (unpacking the
    /// image's layers if needed). A name in use is an error.
    pub fn create_container(&self, name: &str, image: &ImageRecord) -> Result<Mounts, Error> {
        let top = self.image_snapshot(image)?;
        let key = format!("{CONTAINER_PREFIX}{name}");
        if self.snapshot(&key)?.is_some() {
            return Err(Error::ContainerNameInUse {
                name: name.to_owned(),
                id: key,
            });
        }
        self.prepare(&key, top.map(|t| t.to_string()).as_deref())
    }

    /// The mounts of the existing container `name`'s file system (to start it again).
    pub fn container_mounts(&self, name: &str) -> Result<Mounts, Error> {
        self.mounts(&format!("{CONTAINER_PREFIX}{name}"))
    }

    /// The kept containers: their names and creation times (seconds since the epoch).
    pub fn containers(&self) -> Result<Vec<(String, u64)>, Error> {
        Ok(self
            .snapshots()?
            .into_iter()
            .filter(|s| s.kind == SnapshotKind::Active)
            .filter_map(|s| Some((s.key.strip_prefix(CONTAINER_PREFIX)?.to_owned(), s.created)))
            .collect())
    }

    /// Removes the file system of the container `name`.
    pub fn remove_container(&self, name: &str) -> Result<(), Error> {
        let key = format!("{CONTAINER_PREFIX}{name}");
        if self
            .snapshot(&key)?
            .is_none_or(|s| s.kind != SnapshotKind::Active)
        {
            return Err(Error::NoSuchContainer {
                name: name.to_owned(),
            });
        }
        self.remove_snapshot(&key)
    }
}
