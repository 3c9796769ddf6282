//! File ops: chains of mkdir, mkfile, rm, symlink and copy actions on merged views.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use kiln_llb::pb;

use super::fileop;
use super::{ActiveSnapshot, Ref, SessionConfig, blocking, input_ref, scratch_dir};
use crate::error::{Error, InputOf};
use crate::scheduler::{CacheDep, CacheMap, ContentDigestFn, Op, OpContext, OpError};
use kiln_cache::{View, with_views};

pub(super) struct FileOp {
    digest: String,
    inputs: usize,
    file: pb::FileOp,
    config: Arc<SessionConfig>,
}

impl FileOp {
    pub(super) fn new(
        digest: String,
        inputs: usize,
        file: pb::FileOp,
        config: Arc<SessionConfig>,
    ) -> Self {
        Self {
            digest,
            inputs,
            file,
            config,
        }
    }
}

impl FileOp {
    /// The source paths read from each input that only copies read (`None` for inputs that
    /// actions also change, whose whole tree matters).
    fn copy_sources(&self) -> Vec<Option<Vec<String>>> {
        let mut sources: Vec<Option<Vec<String>>> = vec![Some(Vec::new()); self.inputs];
        for action in &self.file.actions {
            let as_base = usize::try_from(action.input).ok();
            if let Some(slot) = as_base.and_then(|i| sources.get_mut(i)) {
                *slot = None;
            }
            if let Some(pb::file_action::Action::Copy(copy)) = &action.action {
                let from = usize::try_from(action.secondary_input).ok();
                if let Some(Some(paths)) = from.and_then(|i| sources.get_mut(i)) {
                    paths.push(copy.src.clone());
                }
            }
        }
        for paths in sources.iter_mut().flatten() {
            paths.sort();
            paths.dedup();
        }
        sources
    }
}

impl Op<Ref> for FileOp {
    /// Inputs that are only copied from are also keyed by a checksum of exactly the paths
    /// copied (see `checksum`), so the same files reached another way still hit.
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
        let deps = self
            .copy_sources()
            .into_iter()
            .map(|paths| match paths {
                Some(paths) if !paths.is_empty() => CacheDep {
                    selector: Some(paths.join("\n")),
                    content: Some(copy_content(self.config.clone(), paths)),
                },
                _ => CacheDep::definition(),
            })
            .collect();
        let map = CacheMap {
            lineage: None,
            outline: Some(crate::Outline {
                kind: "file",
                fields: kiln_llb::outline::file_fields(&self.file),
            }),
            digest: self.digest.clone(),
            deps,
        };
        async move { Ok(map) }.boxed()
    }

    fn exec(
        &self,
        ctx: OpContext,
        inputs: Vec<Ref>,
    ) -> BoxFuture<'static, Result<Vec<Ref>, OpError>> {
        let config = self.config.clone();
        let file = self.file.clone();
        async move {
            let _phase = ctx.phase("files");
            Ok(blocking(move || run(&config, &file, &inputs)).await?)
        }
        .boxed()
    }
}

/// Digests the copied paths of an input's result.
fn copy_content(config: Arc<SessionConfig>, paths: Vec<String>) -> ContentDigestFn<Ref> {
    Arc::new(move |input: Ref, _selector| {
        let config = config.clone();
        let paths = paths.clone();
        async move {
            blocking(move || {
                let store = &config.store;
                let lowers = input.lowers(store)?;
                tracing::debug!(?paths, layers = lowers.len(), "digesting copied paths");
                // A local source's layer, whose file checksums are known, is read in place:
                // it has no whiteouts, so it needs no overlay mount.
                if let [layer] = lowers.as_slice() {
                    if let Some(known) = super::checksum::known(layer) {
                        return Ok(super::checksum::paths_digest(layer, &paths, Some(&known))?);
                    }
                }
                let view = View {
                    lowers,
                    writable: None,
                };
                let digest = with_views(&scratch_dir(store)?, &[view], |points| {
                    super::checksum::paths_digest(&points[0], &paths, None)
                })??;
                Ok(digest)
            })
            .await
            .map_err(OpError::from)
        }
        .boxed()
    })
}

/// Runs the actions in order. An action's input index names an op input, an earlier action's
/// result (numbered after the inputs), or scratch.
fn run(config: &SessionConfig, file: &pb::FileOp, inputs: &[Ref]) -> Result<Vec<Ref>, Error> {
    let store = &config.store;
    let scratch = scratch_dir(store)?;
    let mut available: Vec<Ref> = inputs.to_vec();
    for action in &file.actions {
        let base = input_ref(&available, action.input, InputOf::FileAction)?;
        let secondary = match action.action {
            Some(pb::file_action::Action::Copy(_)) => Some(input_ref(
                &available,
                action.secondary_input,
                InputOf::FileAction,
            )?),
            _ => None,
        };
        let (active, mounts) = ActiveSnapshot::prepare(store, base.key())?;
        if let (Some(pb::file_action::Action::Copy(copy)), Some(src)) = (&action.action, &secondary)
        {
            if link_copy(store, &scratch, action, copy, src, &mounts)? {
                available.push(active.commit("file")?);
                continue;
            }
        }
        let mut views = vec![View {
            lowers: mounts.lowers.clone(),
            writable: Some((mounts.upper.clone(), mounts.work.clone())),
        }];
        if let Some(src) = &secondary {
            views.push(View {
                lowers: src.lowers(store)?,
                writable: None,
            });
        }
        let outcome = with_views(&scratch, &views, |points| {
            apply(action, &points[0], points.get(1).map(PathBuf::as_path))
        });
        outcome??;
        available.push(active.commit("file")?);
    }
    let results = &available[inputs.len()..];
    let outputs = file
        .actions
        .iter()
        .filter_map(|a| usize::try_from(a.output).ok())
        .max()
        .map_or(0, |m| m + 1);
    let mut refs = vec![Ref::scratch(); outputs];
    for (action, result) in file.actions.iter().zip(results) {
        if let Ok(output) = usize::try_from(action.output) {
            refs[output] = result.clone();
        }
    }
    Ok(refs)
}

/// A copy whose source is one committed layer (a build context, a stage on scratch) into a
/// directory the destination does not have yet: the layer is read in place and the files the
/// copy leaves as they are become hard links to its files, written into the destination's
/// upper directory once its overlay is unmounted (nothing to merge with there). Answers
/// whether it did the copy; `false` leaves everything as it was.
fn link_copy(
    store: &kiln_cache::Store,
    scratch: &std::path::Path,
    action: &pb::FileAction,
    copy: &pb::FileActionCopy,
    src: &Ref,
    mounts: &kiln_cache::Mounts,
) -> Result<bool, Error> {
    if !fileop::may_link(copy) {
        return Ok(false);
    }
    let lowers = src.lowers(store)?;
    let [layer] = lowers.as_slice() else {
        return Ok(false);
    };
    let view = View {
        lowers: mounts.lowers.clone(),
        writable: Some((mounts.upper.clone(), mounts.work.clone())),
    };
    let target = with_views(scratch, &[view], |points| {
        let dest = &points[0];
        let root_of = |index: i64| -> Option<PathBuf> {
            if index == action.input {
                Some(dest.clone())
            } else if index == action.secondary_input {
                Some(layer.clone())
            } else {
                None
            }
        };
        let owner = fileop::resolve_owner(copy.owner.as_ref(), root_of)?;
        let target = fileop::link_target(layer, dest, copy, owner)?;
        Ok::<_, Error>(target.map(|(src_dir, rel)| (src_dir, rel, owner)))
    })??;
    let Some((src_dir, rel, owner)) = target else {
        return Ok(false);
    };
    fileop::link_contents(&src_dir, &mounts.upper, &rel, copy, owner)?;
    Ok(true)
}

/// Applies one action with the destination tree at `dest` and the copy source at `src`.
fn apply(
    action: &pb::FileAction,
    dest: &std::path::Path,
    src: Option<&std::path::Path>,
) -> Result<(), Error> {
    // Names in chown options are looked up in the destination tree or in the copy source.
    let root_of = |index: i64| -> Option<PathBuf> {
        if index == action.input {
            Some(dest.to_owned())
        } else if index == action.secondary_input {
            src.map(ToOwned::to_owned)
        } else {
            None
        }
    };
    match &action.action {
        Some(pb::file_action::Action::Mkdir(mkdir)) => {
            let owner = fileop::resolve_owner(mkdir.owner.as_ref(), root_of)?;
            fileop::mkdir(dest, mkdir, owner)?;
        }
        Some(pb::file_action::Action::Mkfile(mkfile)) => {
            let owner = fileop::resolve_owner(mkfile.owner.as_ref(), root_of)?;
            fileop::mkfile(dest, mkfile, owner)?;
        }
        Some(pb::file_action::Action::Rm(rm)) => fileop::rm(dest, rm)?,
        Some(pb::file_action::Action::Symlink(symlink)) => {
            let owner = fileop::resolve_owner(symlink.owner.as_ref(), root_of)?;
            fileop::symlink(dest, symlink, owner)?;
        }
        Some(pb::file_action::Action::Copy(copy)) => {
            let owner = fileop::resolve_owner(copy.owner.as_ref(), root_of)?;
            let src = src.ok_or(Error::CopyWithoutSource)?;
            fileop::copy(src, dest, copy, owner)?;
        }
        None => return Err(Error::NoFileAction),
    }
    Ok(())
}
