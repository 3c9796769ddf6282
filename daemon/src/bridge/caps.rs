//! The capabilities the bridge announces in its `Pong`: the gateway calls it serves a
//! frontend image, and the LLB fields its solver takes.

use crate::pb::moby::buildkit::v1::apicaps::ApiCap;

/// The gateway capabilities served to frontend images; the frontend falls back to simpler
/// calls for the ones left out.
const FRONTEND_CAPS: &[&str] = &[
    "solve.base",
    "solve.inlinereturn",
    "resolveimage",
    "resolveimage.resolvemode",
    "readfile",
    "return",
    "readdir",
    "statfile",
    "proto.refarray",
    "frontend.inputs",
    "gateway.solve.metadata",
    "gateway.solve.evaluate",
    "gateway.evaluate",
    "gateway.warnings",
    "gateway.exec",
    "gateway.exec.extrahosts",
    "gateway.exec.secretenv",
    "gateway.exec.signals",
    "source.metaresolver",
];

/// The LLB capabilities kiln's solver takes (it checks each field itself).
const LLB_CAPS: &[&str] = &[
    "source.image",
    "source.image.resolvemode",
    "source.local",
    "source.local.unique",
    "source.local.sessionid",
    "source.local.includepatterns",
    "source.local.followpaths",
    "source.local.excludepatterns",
    "source.local.sharedkeyhint",
    "source.git",
    "source.git.keepgitdir",
    "source.git.fullurl",
    "source.git.subdir",
    "source.http",
    "source.http.checksum",
    "source.http.perm",
    "soruce.http.uidgid",
    "exec.meta.base",
    "exec.meta.network",
    "exec.meta.proxyenv",
    "exec.meta.security",
    "exec.meta.setsdefaultpath",
    "exec.meta.ulimit",
    "exec.meta.removemountstubs.recursive",
    "exec.mount.bind",
    "exec.mount.bind.readwrite-nooutput",
    "exec.mount.cache",
    "exec.mount.cache.sharing",
    "exec.mount.selector",
    "exec.mount.tmpfs",
    "exec.mount.tmpfs.size",
    "exec.mount.secret",
    "exec.mount.ssh",
    "exec.secretenv",
    "exec.validexitcode",
    "file.base",
    "file.rm.wildcard",
    "file.copy.includeexcludepatterns",
    "file.rm.nofollowsymlink",
    "file.copy.alwaysreplaceexistingdestpaths",
    "file.copy.modestring",
    "file.symlink.create",
    "constraints",
    "platform",
    "meta.ignorecache",
    "meta.description",
    "meta.exportcache",
    "mergeop",
    "diffop",
];

/// The gateway capabilities, as a `Pong` lists them.
pub(super) fn frontend() -> Vec<ApiCap> {
    caps(FRONTEND_CAPS)
}

/// The LLB capabilities, as a `Pong` lists them.
pub(super) fn llb() -> Vec<ApiCap> {
    caps(LLB_CAPS)
}

/// The capability list of a `Pong`.
fn caps(ids: &[&str]) -> Vec<ApiCap> {
    ids.iter()
        .map(|id| ApiCap {
            id: (*id).to_owned(),
            enabled: true,
            ..Default::default()
        })
        .collect()
}
