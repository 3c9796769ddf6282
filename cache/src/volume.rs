//! Named volumes for `kiln run -v NAME:/path` and `kiln volume`: a directory per volume under
//! `ROOT/volumes/NAME/_data` (docker's local driver layout) with its record in
//! `ROOT/volumes/NAME/volume.json`, made on first use and kept until `kiln volume rm`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::container_record::now_rfc3339;
use crate::error::Error;
use crate::mount::{View, with_views};
use crate::store::{ImageRecord, Store};

impl Store {
    /// Copies what `image`'s file system holds in the directory `path` into `dest` (a new
    /// volume's data, as docker fills a volume on its first mount), with the directory's owner
    /// and mode; `false` when the image has no directory there.
    pub fn copy_image_dir(
        &self,
        image: &ImageRecord,
        path: &Path,
        dest: &Path,
    ) -> Result<bool, Error> {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let Some(top) = self.image_snapshot(image)? else {
            return Ok(false);
        };
        let root = kiln_fsutil::Root::layered(self.lowers(&top.to_string())?);
        let resolved = root
            .resolve(path, true)
            .map_err(|source| Error::ResolveInImage {
                path: path.to_owned(),
                source,
            })?;
        let Some(entry) = resolved.entry.filter(|e| e.metadata.is_dir()) else {
            return Ok(false);
        };
        let view = View {
            lowers: entry.layers.clone(),
            writable: None,
        };
        with_views(&self.scratch_dir()?, &[view], |points| {
            kiln_fsutil::TreeCopy::default().copy_contents(
                &points[0],
                dest,
                &mut kiln_fsutil::HardLinks::new(),
            )
        })??;
        std::os::unix::fs::lchown(dest, Some(entry.metadata.uid()), Some(entry.metadata.gid()))?;
        fs_err::set_permissions(
            dest,
            std::fs::Permissions::from_mode(entry.metadata.mode() & 0o7777),
        )?;
        Ok(true)
    }
}

/// A named volume, as `docker volume inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// Always `local`.
    pub driver: String,
    /// Where its data lives on the host.
    pub mountpoint: PathBuf,
    /// Its name.
    pub name: String,
    /// Always `local`.
    pub scope: String,
}

/// The named volumes under a store root.
#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
}

impl Volumes {
    /// The volumes under `root/volumes`.
    pub fn new(root: &Path) -> Self {
        Self {
            dir: root.join("volumes"),
        }
    }

    /// Whether `text` is a volume name rather than a host path (docker: a host path is
    /// absolute).
    pub fn is_name(text: &str) -> bool {
        !text.starts_with('/') && !text.starts_with('.') && !text.contains('/')
    }

    /// The volume `name`, made if missing; `true` with it when this call made it.
    pub fn create(&self, name: &str) -> Result<(Volume, bool), Error> {
        check_name(name)?;
        if let Ok(volume) = self.get(name) {
            return Ok((volume, false));
        }
        let dir = self.dir.join(name);
        fs_err::create_dir_all(dir.join("_data"))?;
        let volume = Volume {
            created_at: now_rfc3339(),
            driver: "local".to_owned(),
            mountpoint: dir.join("_data"),
            name: name.to_owned(),
            scope: "local".to_owned(),
        };
        let bytes =
            serde_json::to_vec_pretty(&volume).map_err(|e| Error::json("volume record", e))?;
        let temporary = dir.join("volume.json.new");
        fs_err::write(&temporary, bytes)?;
        match fs_err::hard_link(&temporary, dir.join("volume.json")) {
            // Another process made it first: use theirs.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                fs_err::remove_file(&temporary)?;
                Ok((self.get(name)?, false))
            }
            Err(err) => Err(err.into()),
            Ok(()) => {
                fs_err::remove_file(&temporary)?;
                Ok((volume, true))
            }
        }
    }

    /// The volume `name`.
    pub fn get(&self, name: &str) -> Result<Volume, Error> {
        let missing = || Error::NoSuchVolume {
            name: name.to_owned(),
        };
        check_name(name).map_err(|_| missing())?;
        let path = self.dir.join(name).join("volume.json");
        let bytes = fs_err::read(&path).map_err(|_| missing())?;
        serde_json::from_slice(&bytes).map_err(|e| Error::json(path.display().to_string(), e))
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>, Error> {
        let Ok(entries) = fs_err::read_dir(&self.dir) else {
            return Ok(Vec::new());
        };
        let mut volumes: Vec<Volume> = entries
            .flatten()
            .filter_map(|e| self.get(e.file_name().to_str()?).ok())
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// Removes the volume `name` and its data.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        self.get(name)?;
        let dir = self.dir.join(name);
        // The record goes first, so a half-removed volume is no volume.
        fs_err::remove_file(dir.join("volume.json"))?;
        fs_err::remove_dir_all(dir)?;
        Ok(())
    }
}

/// docker's rule for local volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn check_name(name: &str) -> Result<(), Error> {
    let mut bytes = name.bytes();
    let valid = name.len() >= 2
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidVolumeName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_made_once_listed_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(root.path());
        let (data, made) = volumes.create("data").unwrap();
        assert!(made);
        assert_eq!(data.mountpoint, root.path().join("volumes/data/_data"));
        fs_err::write(data.mountpoint.join("f"), "kept").unwrap();
        let (again, made) = volumes.create("data").unwrap();
        assert!(!made);
        assert_eq!(again, data);
        assert_eq!(
            fs_err::read_to_string(again.mountpoint.join("f")).unwrap(),
            "kept"
        );
        assert_eq!(
            volumes.create("../x").unwrap_err().to_string(),
            "create ../x: \"../x\" includes invalid characters for a local volume name, only \
             \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host \
             directory, use absolute path"
        );
        assert_eq!(volumes.list().unwrap(), vec![data]);
        volumes.remove("data").unwrap();
        assert!(!root.path().join("volumes/data").exists());
        assert_eq!(
            volumes.remove("data").unwrap_err().to_string(),
            "get data: no such volume"
        );
        assert!(Volumes::is_name("data"));
        assert!(!Volumes::is_name("/srv/data"));
        assert!(!Volumes::is_name("./data"));
    }
}
