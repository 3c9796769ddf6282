//! SLSA v1 provenance (`https://slsa.dev/provenance/v1`) of a build, as BuildKit's
//! `solver/llbsolver/provenance` writes it for `--provenance=mode=min|max`.
//!
//! # Overview
//! 1. `buildDefinition`: BuildKit's build type; `externalParameters.request` is what the
//!    client asked for (the frontend, its attributes, the names of the locals, secrets and SSH
//!    sockets, never their content), `configSource` the Dockerfile's path;
//!    `resolvedDependencies` the build's pinned sources read from its LLB: images as
//!    `pkg:docker/…?platform=…` package URLs with their manifest digests, git commits, HTTP
//!    files with their checksums.
//! 2. `runDetails`: the builder and `metadata` (invocation id, start and finish times,
//!    BuildKit's completeness and hermeticity flags).
//! 3. `mode=max` adds `internalParameters.buildConfig`: the LLB as BuildKit lists it
//!    (`llbDefinition`, one entry per op, `step0`…, with its inputs, and `digestMapping` from op
//!    digests to steps), and `runDetails.metadata.buildkit_metadata.source`, the Dockerfile
//!    locations of the steps.

use std::collections::BTreeMap;

use base64::Engine as _;
use kiln_llb::{Platform, pb};
use serde_json::{Value, json};

/// The predicate type of SLSA v1 provenance.
pub const PREDICATE_TYPE_SLSA_V1: &str = "https://slsa.dev/provenance/v1";

/// BuildKit's build type for its SLSA provenance.
pub const BUILD_TYPE: &str =
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";

/// How much provenance a build records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenanceMode {
    /// The request, the resolved dependencies and the run's metadata.
    Min,
    /// `Min` and the build's LLB and the source locations of its steps.
    Max,
}

/// What a build's provenance says about its request and run, the LLB apart.
#[derive(Debug, Clone)]
pub struct ProvenanceRequest {
    /// `min` or `max`.
    pub mode: ProvenanceMode,
    /// What the client asked for.
    pub request: RequestFacts,
    /// The build's id.
    pub invocation_id: String,
    /// When the build started and finished (seconds since 1970).
    pub started_on: Option<i64>,
    /// When the build finished.
    pub finished_on: Option<i64>,
}

/// What a build's provenance says about its request (names only, never a secret's content):
/// `kiln build` says it of its flags, `kiln daemon` of a `Solve`.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// The frontend (`dockerfile.v0`, `gateway.v0`; empty for a bare LLB build).
    pub frontend: String,
    /// Its attributes (`build-arg:NAME`, `target`, `filename`, `source`…).
    pub args: BTreeMap<String, String>,
    /// The names of the local sources (`context`, `dockerfile`).
    pub locals: Vec<String>,
    /// The ids of the secrets.
    pub secrets: Vec<String>,
    /// The ids of the SSH sockets.
    pub ssh: Vec<String>,
    /// The Dockerfile's path, relative to its directory's local (`Dockerfile`).
    pub config_path: Option<String>,
    /// The Dockerfile's text, the source of the steps in `mode=max` when the Definition
    /// carries no source map of its own.
    pub config_data: Option<Vec<u8>>,
}

/// The provenance predicate of one platform's build, whose LLB is `definition` (`None`: a
/// build of `scratch`).
pub fn provenance_predicate(
    request: &ProvenanceRequest,
    definition: Option<&pb::Definition>,
) -> Value {
    let facts = &request.request;
    let ops = definition.map(decoded_ops).unwrap_or_default();
    let mut has_local = false;
    let mut dependencies = Vec::new();
    for (_, op) in &ops {
        let Some(pb::op::Op::Source(source)) = &op.op else {
            continue;
        };
        let platform = op.platform.as_ref().map(Platform::from_pb);
        if source.identifier.starts_with("local://") {
            has_local = true;
        }
        if let Some(dependency) = resolved_dependency(source, platform.as_ref()) {
            if !dependencies.contains(&dependency) {
                dependencies.push(dependency);
            }
        }
    }
    let mut request_json = json!({
        "frontend": facts.frontend,
        "args": facts.args,
    });
    for (key, names) in [
        ("locals", &facts.locals),
        ("secrets", &facts.secrets),
        ("ssh", &facts.ssh),
    ] {
        if !names.is_empty() {
            let list: Vec<Value> = names
                .iter()
                .map(|n| json!({ "id": n, "name": n }))
                .collect();
            request_json[key] = list.into();
        }
    }
    if let Some(locals) = request_json.get_mut("locals").and_then(Value::as_array_mut) {
        // BuildKit names a local by `name` only.
        for local in locals {
            if let Some(object) = local.as_object_mut() {
                object.remove("id");
            }
        }
    }
    let mut external = json!({ "request": request_json });
    if let Some(path) = &facts.config_path {
        external["configSource"] = json!({ "path": path });
    }
    let mut build_definition = json!({
        "buildType": BUILD_TYPE,
        "externalParameters": external,
        "internalParameters": { "builderPlatform": Platform::host().to_string() },
        "resolvedDependencies": dependencies,
    });
    let mut metadata = json!({
        "invocationID": request.invocation_id,
        "buildkit_hermetic": false,
        "buildkit_completeness": {
            "request": true,
            "resolvedDependencies": !has_local,
        },
        "buildkit_metadata": {},
    });
    for (key, time) in [
        ("startedOn", request.started_on),
        ("finishedOn", request.finished_on),
    ] {
        if let Some(time) = time {
            metadata[key] = crate::image::rfc3339(time).into();
        }
    }
    if request.mode == ProvenanceMode::Max {
        build_definition["internalParameters"]["buildConfig"] = build_config(&ops);
        metadata["buildkit_metadata"]["source"] = sources(facts, definition, &ops);
    }
    json!({
        "buildDefinition": build_definition,
        "runDetails": {
            "builder": { "id": "" },
            "metadata": metadata,
        },
    })
}

/// The ops of a Definition with their digests, in `def` order (the last is the result's
/// empty op); an op that does not decode is left out (the solver refused it already).
fn decoded_ops(definition: &pb::Definition) -> Vec<(String, pb::Op)> {
    definition
        .def
        .iter()
        .filter_map(|bytes| {
            let op = <pb::Op as kiln_llb::prost::Message>::decode(bytes.as_slice()).ok()?;
            Some((kiln_llb::Digest::from_bytes(bytes).to_string(), op))
        })
        .collect()
}

/// The resolved dependency a source op names, if it is pinned: an image by digest, a git
/// commit, an HTTP file with its checksum.
fn resolved_dependency(source: &pb::SourceOp, platform: Option<&Platform>) -> Option<Value> {
    let identifier = &source.identifier;
    if let Some(reference) = identifier.strip_prefix("docker-image://") {
        let (name, digest) = reference.split_once('@')?;
        let hex = digest.strip_prefix("sha256:")?;
        return Some(json!({
            "uri": docker_purl(name, platform),
            "digest": { "sha256": hex },
        }));
    }
    if let Some(remote) = identifier.strip_prefix("git://") {
        // A commit pinned in the reference (`#<40 hex digits>`).
        let (_, commit) = remote.rsplit_once('#')?;
        let commit = commit.split(':').next().unwrap_or(commit);
        if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let url =
            source.attrs.get("git.fullurl").cloned().unwrap_or_else(|| {
                format!("https://{}", remote.split('#').next().unwrap_or(remote))
            });
        return Some(json!({ "uri": url, "digest": { "sha1": commit } }));
    }
    if identifier.starts_with("https://") || identifier.starts_with("http://") {
        let checksum = source.attrs.get("http.checksum")?;
        let hex = checksum.strip_prefix("sha256:")?;
        return Some(json!({ "uri": identifier, "digest": { "sha256": hex } }));
    }
    None
}

/// The package URL of an image reference (`host/path/name:tag`, normalized), as BuildKit's
/// `purl.RefToPURL`: Docker Hub's names in their short form, the tag as the version, the
/// platform as a qualifier.
pub fn docker_purl(reference: &str, platform: Option<&Platform>) -> String {
    let (path, tag) = match reference.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, Some(tag)),
        _ => (reference, None),
    };
    let short = path
        .strip_prefix("docker.io/library/")
        .or_else(|| path.strip_prefix("docker.io/"))
        .unwrap_or(path);
    let mut purl = format!("pkg:docker/{short}");
    if let Some(tag) = tag {
        purl.push('@');
        purl.push_str(tag);
    }
    if let Some(platform) = platform {
        purl.push_str("?platform=");
        purl.push_str(&platform.to_string().replace('/', "%2F"));
    }
    purl
}

/// BuildKit's `buildConfig` of `mode=max`: each op as a step, its inputs as `stepN:OUTPUT`.
fn build_config(ops: &[(String, pb::Op)]) -> Value {
    let steps: BTreeMap<&str, String> = ops
        .iter()
        .enumerate()
        .map(|(position, (digest, _))| (digest.as_str(), format!("step{position}")))
        .collect();
    let definition: Vec<Value> = ops
        .iter()
        .enumerate()
        .map(|(position, (_, op))| {
            let inputs: Vec<String> = op
                .inputs
                .iter()
                .map(|input| {
                    let step = steps
                        .get(input.digest.as_str())
                        .cloned()
                        .unwrap_or_else(|| input.digest.clone());
                    format!("{step}:{}", input.index)
                })
                .collect();
            let mut without_inputs = op.clone();
            without_inputs.inputs.clear();
            let op_json: Value = serde_json::from_str(&kiln_llb::dump::op_to_json(&without_inputs))
                .unwrap_or(Value::Null);
            let mut step = json!({ "id": format!("step{position}"), "op": op_json });
            if !inputs.is_empty() {
                step["inputs"] = inputs.into();
            }
            step
        })
        .collect();
    json!({ "llbDefinition": definition, "digestMapping": steps })
}

/// The sources of the steps (`mode=max`): the Definition's source map (each file, and the
/// locations of the steps in it), else the Dockerfile alone.
fn sources(
    request: &RequestFacts,
    definition: Option<&pb::Definition>,
    ops: &[(String, pb::Op)],
) -> Value {
    let info = |filename: &str, language: &str, data: &[u8]| {
        json!({
            "filename": filename,
            "language": language,
            "data": base64::engine::general_purpose::STANDARD.encode(data),
        })
    };
    let Some(map) = definition.and_then(|d| d.source.as_ref()) else {
        let infos: Vec<Value> = match (&request.config_path, &request.config_data) {
            (Some(path), Some(data)) => vec![info(path, "Dockerfile", data)],
            _ => Vec::new(),
        };
        return json!({ "infos": infos, "locations": {} });
    };
    let infos: Vec<Value> = map
        .infos
        .iter()
        .map(|i| info(&i.filename, &i.language, &i.data))
        .collect();
    let steps: BTreeMap<&str, usize> = ops
        .iter()
        .enumerate()
        .map(|(position, (digest, _))| (digest.as_str(), position))
        .collect();
    let mut locations = serde_json::Map::new();
    for (digest, list) in &map.locations {
        let Some(position) = steps.get(digest.as_str()) else {
            continue;
        };
        let entries: Vec<Value> = list
            .locations
            .iter()
            .map(|l| {
                let ranges: Vec<Value> = l
                    .ranges
                    .iter()
                    .map(|r| {
                        let point = |p: &Option<pb::Position>| {
                            p.as_ref().map_or(json!({}), |p| json!({ "line": p.line }))
                        };
                        json!({ "start": point(&r.start), "end": point(&r.end) })
                    })
                    .collect();
                json!({ "sourceIndex": l.source_index, "ranges": ranges })
            })
            .collect();
        locations.insert(format!("step{position}"), json!({ "locations": entries }));
    }
    json!({ "infos": infos, "locations": locations })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mode: ProvenanceMode) -> ProvenanceRequest {
        ProvenanceRequest {
            mode,
            request: RequestFacts {
                frontend: "dockerfile.v0".to_owned(),
                args: BTreeMap::from([("build-arg:A".to_owned(), "1".to_owned())]),
                locals: vec!["context".to_owned()],
                secrets: vec!["token".to_owned()],
                ssh: Vec::new(),
                config_path: Some("Dockerfile".to_owned()),
                config_data: Some(b"FROM busybox\n".to_vec()),
            },
            invocation_id: "abc".to_owned(),
            started_on: Some(0),
            finished_on: Some(1),
        }
    }

    #[test]
    fn pinned_images_are_resolved_dependencies_and_locals_make_it_incomplete() {
        let digest = kiln_llb::Digest::from_bytes(b"busybox");
        let amd64 = Platform::new("linux", "amd64", "").to_pb();
        let image = kiln_llb::image_for(&format!("busybox:latest@{digest}"), amd64);
        let definition = image.marshal();
        let predicate = provenance_predicate(&request(ProvenanceMode::Min), Some(&definition));
        let build = &predicate["buildDefinition"];
        assert_eq!(
            build["resolvedDependencies"],
            json!([{
                "uri": "pkg:docker/busybox@latest?platform=linux%2Famd64",
                "digest": { "sha256": digest.hex() },
            }])
        );
        assert_eq!(
            build["externalParameters"]["request"]["args"]["build-arg:A"],
            "1"
        );
        assert_eq!(
            build["externalParameters"]["request"]["secrets"],
            json!([{ "id": "token", "name": "token" }])
        );
        let metadata = &predicate["runDetails"]["metadata"];
        assert_eq!(metadata["startedOn"], "1970-01-01T00:00:00Z");
        assert_eq!(
            metadata["buildkit_completeness"]["resolvedDependencies"],
            true
        );
        assert!(build["internalParameters"].get("buildConfig").is_none());

        // A local source is not pinned: the dependencies are incomplete.
        let local = kiln_llb::local("context").marshal();
        let predicate = provenance_predicate(&request(ProvenanceMode::Max), Some(&local));
        let metadata = &predicate["runDetails"]["metadata"];
        assert_eq!(
            metadata["buildkit_completeness"]["resolvedDependencies"],
            false
        );
        let config = &predicate["buildDefinition"]["internalParameters"]["buildConfig"];
        assert_eq!(config["llbDefinition"][0]["id"], "step0");
        assert_eq!(
            config["llbDefinition"][0]["op"]["Op"]["source"]["identifier"],
            "local://context"
        );
        assert_eq!(config["llbDefinition"][1]["inputs"], json!(["step0:0"]));
    }

    #[test]
    fn docker_purls_are_short_for_docker_hub() {
        let arm = Platform::new("linux", "arm64", "v8");
        assert_eq!(
            docker_purl("docker.io/library/alpine:3.20", Some(&arm)),
            "pkg:docker/alpine@3.20?platform=linux%2Farm64"
        );
        assert_eq!(
            docker_purl("127.0.0.1:5000/a/b:v1", None),
            "pkg:docker/127.0.0.1:5000/a/b@v1"
        );
    }
}
