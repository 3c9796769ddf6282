//! `type=local` and `type=tar`: a result's merged file system into a host directory or one tar
//! stream, read through the store's snapshot mount ([`Store::with_snapshot`]).

use std::io::Write;
use std::path::Path;

use kiln_cache::{Compression, DiffSource, LayerOptions, Store};
use kiln_fsutil::{DeviceNodes, HardLinks, TreeCopy};

use crate::error::Error;

/// Writes the merged file system of the snapshot `key` (`None`: the empty result) into the
/// directory `dest` (made if missing), as `--output type=local` does. Modes (setuid bits
/// included), owners, times, links and xattrs are kept; device nodes are left out with a
/// warning (an export must not make devices on the host); FIFOs are recreated, as BuildKit's
/// local exporter does.
pub fn export_local(store: &Store, key: Option<&str>, dest: &Path) -> Result<(), Error> {
    let failed = |source| Error::Export {
        dest: dest.to_owned(),
        source,
    };
    fs_err::create_dir_all(dest).map_err(failed)?;
    let copy = TreeCopy {
        devices: DeviceNodes::Skip,
        ..TreeCopy::default()
    };
    store
        .with_snapshot(key, |root| {
            copy.copy_contents(root, dest, &mut HardLinks::new())
        })?
        .map_err(failed)
}

/// Writes the merged file system of the snapshot `key` (`None`: the empty result) as one
/// uncompressed tar stream to `out`, as `--output type=tar` does: device nodes are archive
/// entries, never made on the host; with `source_date_epoch`, no time is later than it.
pub fn export_tar<W: Write + Send + 'static>(
    store: &Store,
    key: Option<&str>,
    source_date_epoch: Option<i64>,
    out: W,
) -> Result<W, Error> {
    let options = LayerOptions {
        compression: Compression::Uncompressed,
        source_date_epoch,
        threads: 1,
    };
    let (_, out) = store.with_snapshot(key, |root| {
        kiln_cache::write_layer(root, DiffSource::Directory, &options, out)
    })??;
    Ok(out)
}
