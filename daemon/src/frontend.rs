//! The built-in `dockerfile.v0` frontend as the daemon serves it: the Dockerfile and its
//! `.dockerignore` come from the client's session, the options from the request's frontend
//! attributes (BuildKit's names: `filename`, `target`, `build-arg:NAME`, `label:NAME`,
//! `no-cache`, `platform`, `multi-platform`, `add-hosts`, `force-network-mode`, `shm-size`, `ulimit`,
//! `cgroup-parent`, `contextkey`, `dockerfilekey`), and kiln-frontend converts them as
//! `kiln build` does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_cache::{PullOptions, Store};
use kiln_frontend::{ConvertOptions, Converted, NamedContext};
use kiln_llb::pb;
use kiln_solver::{LocalDirs as _, LocalRequest};
use tonic::Status;

use crate::locals::SessionLocals;

/// The built-in frontend's name in a request.
pub(crate) const DOCKERFILE: &str = "dockerfile.v0";

/// The name of a frontend image in a request (`source=IMAGE`).
pub(crate) const GATEWAY: &str = "gateway.v0";

/// A bad frontend attribute.
fn invalid(text: String) -> Status {
    Status::invalid_argument(text)
}

/// BuildKit's comma-separated attribute values: one CSV record (quoted fields allowed).
fn csv_fields(value: &str) -> Result<Vec<String>, Status> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(value.as_bytes());
    let mut record = csv::StringRecord::new();
    reader
        .read_record(&mut record)
        .map_err(|e| invalid(format!("invalid value {value:?}: {e}")))?;
    Ok(record
        .iter()
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The conversion options the attributes ask for (the excludes come from `.dockerignore`).
pub(crate) fn convert_options(attrs: &HashMap<String, String>) -> Result<ConvertOptions, Status> {
    let get = |key: &str| attrs.get(key).map(String::as_str).unwrap_or_default();
    let mut options = ConvertOptions {
        target: Some(get("target").to_owned()).filter(|t| !t.is_empty()),
        context_name: Some(get("contextkey"))
            .filter(|k| !k.is_empty())
            .unwrap_or("context")
            .to_owned(),
        cgroup_parent: Some(get("cgroup-parent").to_owned()).filter(|c| !c.is_empty()),
        ..ConvertOptions::default()
    };
    options.file_name = Path::new(dockerfile_name(attrs)).file_name().map_or_else(
        || "Dockerfile".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let prefixed = |prefix: &str| -> BTreeMap<String, String> {
        attrs
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), v.clone())))
            .collect()
    };
    options.build_args = prefixed("build-arg:");
    options.labels = prefixed("label:");
    options.build_platform = kiln_llb::Platform::host().to_pb();
    options.platform = options.build_platform.clone();
    if let Some(platform) = attrs.get("platform").filter(|p| !p.is_empty()) {
        if platform.contains(',') {
            return Err(invalid(format!(
                "platform {platform:?}: one platform at a time (a build for several is \
                 converted once per platform)"
            )));
        }
        options.platform = kiln_llb::Platform::parse(platform)
            .map_err(|e| invalid(e.to_string()))?
            .to_pb();
    }
    for field in csv_fields(get("add-hosts"))? {
        let lower = field.to_lowercase();
        let (host, ip) = lower
            .split_once('=')
            .ok_or_else(|| invalid(format!("invalid key-value pair {field}")))?;
        let ip = ip
            .parse()
            .map_err(|_| invalid(format!("failed to parse IP {ip}")))?;
        options.extra_hosts.push((host.to_owned(), ip));
    }
    options.network = match get("force-network-mode") {
        "" | "sandbox" => pb::NetMode::Unset,
        "none" => pb::NetMode::None,
        "host" => pb::NetMode::Host,
        other => return Err(invalid(format!("invalid netmode {other}"))),
    };
    if let Some(size) = attrs.get("shm-size").filter(|s| !s.is_empty()) {
        options.shm_size = size
            .parse()
            .map_err(|_| invalid(format!("invalid shm-size {size:?}: expected bytes")))?;
    }
    for field in csv_fields(get("ulimit"))? {
        let ulimit: kiln_runner::Ulimit = field
            .parse()
            .map_err(|e| invalid(crate::control::error_text("invalid ulimit", &e)))?;
        options.ulimits.push(pb::Ulimit {
            name: ulimit.name,
            soft: ulimit.soft,
            hard: ulimit.hard,
        });
    }
    for (name, value) in prefixed("context:") {
        let context = if let Some(reference) = value.strip_prefix("docker-image://") {
            NamedContext::Image(reference.to_owned())
        } else if let Some(local) = value.strip_prefix("local:") {
            NamedContext::Local(local.to_owned())
        } else {
            return Err(Status::unimplemented(format!(
                "context:{name}={value}: kiln takes docker-image:// and local: contexts"
            )));
        };
        options.named_contexts.insert(name, context);
    }
    if let Some(stages) = attrs.get("no-cache").filter(|s| !s.is_empty()) {
        options.no_cache_stages = csv_fields(stages)?;
    }
    // One platform of a build for several: steps are named after their stage's platform.
    options.multi_platform = matches!(get("multi-platform"), "true" | "1");
    Ok(options)
}

/// One platform's frontend attributes (`None`: the attributes as given, one platform or none).
pub(crate) type PlatformAttrs = (Option<kiln_llb::Platform>, HashMap<String, String>);

/// The frontend attributes of each platform `attrs` asks for: one build for a `platform` of
/// several (each with its own `platform` and `multi-platform`, so that steps are named after
/// their platform), else the attributes as they are.
pub(crate) fn per_platform(attrs: &HashMap<String, String>) -> Result<Vec<PlatformAttrs>, Status> {
    let listed = attrs.get("platform").map_or("", String::as_str);
    if !listed.contains(',') {
        return Ok(vec![(None, attrs.clone())]);
    }
    let mut platforms: Vec<kiln_llb::Platform> = Vec::new();
    for text in listed.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let platform = kiln_llb::Platform::parse(text).map_err(|e| invalid(e.to_string()))?;
        if !platforms.contains(&platform) {
            platforms.push(platform);
        }
    }
    Ok(platforms
        .into_iter()
        .map(|platform| {
            let mut attrs = attrs.clone();
            attrs.insert("platform".to_owned(), platform.to_string());
            attrs.insert("multi-platform".to_owned(), "true".to_owned());
            (Some(platform), attrs)
        })
        .collect())
}

/// The frontend attributes of `options`, as BuildKit's clients send them to a frontend: the
/// inverse of [`convert_options`] (`no_cache`: `no-cache` for every step). The excludes are
/// left out: a frontend reads `.dockerignore` itself.
pub fn frontend_attrs(options: &ConvertOptions, no_cache: bool) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    let mut put = |key: String, value: String| {
        attrs.insert(key, value);
    };
    put("filename".to_owned(), options.file_name.clone());
    if let Some(target) = &options.target {
        put("target".to_owned(), target.clone());
    }
    // As buildx sends `--platform`: a frontend builds for the builder's platform without it.
    if options.platform != options.build_platform {
        put(
            "platform".to_owned(),
            kiln_llb::Platform::from_pb(&options.platform).to_string(),
        );
    }
    if options.context_name != "context" && !options.context_name.is_empty() {
        put("contextkey".to_owned(), options.context_name.clone());
    }
    for (name, value) in &options.build_args {
        put(format!("build-arg:{name}"), value.clone());
    }
    for (name, value) in &options.labels {
        put(format!("label:{name}"), value.clone());
    }
    // One CSV record, as BuildKit's clients join these lists.
    let record = |fields: Vec<String>| -> String {
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        // Writing to memory does not fail.
        let _ = writer.write_record(&fields);
        let bytes = writer.into_inner().unwrap_or_default();
        String::from_utf8_lossy(&bytes).trim_end().to_owned()
    };
    if !options.extra_hosts.is_empty() {
        let hosts = options
            .extra_hosts
            .iter()
            .map(|(host, ip)| format!("{host}={ip}"))
            .collect();
        put("add-hosts".to_owned(), record(hosts));
    }
    match options.network {
        pb::NetMode::None => put("force-network-mode".to_owned(), "none".to_owned()),
        pb::NetMode::Host => put("force-network-mode".to_owned(), "host".to_owned()),
        pb::NetMode::Unset => {}
    }
    if options.shm_size > 0 {
        put("shm-size".to_owned(), options.shm_size.to_string());
    }
    if !options.ulimits.is_empty() {
        let ulimits = options
            .ulimits
            .iter()
            .map(|u| format!("{}={}:{}", u.name, u.soft, u.hard))
            .collect();
        put("ulimit".to_owned(), record(ulimits));
    }
    if let Some(parent) = &options.cgroup_parent {
        put("cgroup-parent".to_owned(), parent.clone());
    }
    for (name, context) in &options.named_contexts {
        let value = match context {
            NamedContext::Image(reference) => format!("docker-image://{reference}"),
            NamedContext::Local(local) => format!("local:{local}"),
        };
        put(format!("context:{name}"), value);
    }
    if no_cache {
        put("no-cache".to_owned(), String::new());
    } else if !options.no_cache_stages.is_empty() {
        put(
            "no-cache".to_owned(),
            record(options.no_cache_stages.clone()),
        );
    }
    attrs
}

/// `no-cache` without stage names: every step ignores the cache.
pub(crate) fn no_cache_all(attrs: &HashMap<String, String>) -> bool {
    attrs.get("no-cache").is_some_and(String::is_empty)
}

/// The Dockerfile's name in its local (`filename`, `Dockerfile` when not given).
pub(crate) fn dockerfile_name(attrs: &HashMap<String, String>) -> &str {
    attrs
        .get("filename")
        .map(String::as_str)
        .filter(|f| !f.is_empty())
        .unwrap_or("Dockerfile")
}

/// Receives the files `patterns` select from the client's directory `name`; returns where
/// they are. They go where the last build's went (kept apart from the build's own copy of the
/// directory, which selects other files), so that only what changed travels again.
async fn fetch(
    locals: &SessionLocals,
    name: &str,
    patterns: Vec<String>,
) -> Result<PathBuf, Status> {
    let request = LocalRequest {
        name: name.to_owned(),
        include_patterns: patterns,
        shared_key_hint: Some(format!("{name}:frontend")),
        ..LocalRequest::default()
    };
    locals.sync(request).await.map_err(|e| {
        Status::unknown(crate::control::error_text(
            &format!("failed to read {name}"),
            &*e,
        ))
    })
}

/// A file the client sent, `None` when it has no such file.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, Status> {
    match fs_err::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Status::internal(e.to_string())),
    }
}

/// What the built-in frontend makes of a request: `T` from its Dockerfile (the Dockerfile
/// read, or converted), or the frontend image the Dockerfile names (`# syntax=`,
/// `BUILDKIT_SYNTAX`) to forward the build to.
pub(crate) enum Frontend<T> {
    /// What the built-in frontend made of the Dockerfile.
    Dockerfile(T),
    /// The build goes to this frontend image.
    Forward(crate::bridge::Syntax),
}

/// A Dockerfile converted, and its text.
pub(crate) type ConvertedDockerfile = (Box<Converted>, Vec<u8>);

/// A Dockerfile's text, and the options to convert it with.
pub(crate) type ReadDockerfile = (Vec<u8>, Box<ConvertOptions>);

/// Converts the client's Dockerfile as the attributes say, unless it names a frontend image
/// (and the request is not already that image's: `cmdline` is set).
pub(crate) async fn convert(
    store: Arc<Store>,
    pull: PullOptions,
    locals: &SessionLocals,
    attrs: &HashMap<String, String>,
) -> Result<Frontend<ConvertedDockerfile>, Status> {
    let (dockerfile, options) = match read(locals, attrs).await? {
        Frontend::Forward(syntax) => return Ok(Frontend::Forward(syntax)),
        Frontend::Dockerfile(read) => read,
    };
    convert_read(store, pull, dockerfile.clone(), *options)
        .await?
        .map(|converted| Frontend::Dockerfile((Box::new(converted), dockerfile)))
        .map_err(|e| {
            Status::invalid_argument(crate::control::error_text(
                "failed to convert the Dockerfile",
                &e,
            ))
        })
}

/// Converts `dockerfile` with `options`, resolving its images through `store`.
pub(crate) async fn convert_read(
    store: Arc<Store>,
    pull: PullOptions,
    dockerfile: Vec<u8>,
    options: ConvertOptions,
) -> Result<Result<Converted, kiln_frontend::ConvertError>, Status> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let resolver = kiln_engine::StoreResolver::new(store, pull, handle);
        kiln_frontend::convert(&dockerfile, &options, &resolver)
    })
    .await
    .map_err(|e| Status::internal(format!("converting the Dockerfile: {e}")))
}

/// Reads the client's Dockerfile and its `.dockerignore` files, and the conversion options
/// of the attributes; or the frontend image the Dockerfile names.
pub(crate) async fn read(
    locals: &SessionLocals,
    attrs: &HashMap<String, String>,
) -> Result<Frontend<ReadDockerfile>, Status> {
    let mut options = convert_options(attrs)?;
    let filename = dockerfile_name(attrs).trim_start_matches("./").to_owned();
    let dockerfile_key = attrs
        .get("dockerfilekey")
        .filter(|k| !k.is_empty())
        .map_or("dockerfile", String::as_str);
    let specific_ignore = format!("{filename}.dockerignore");
    let context_name = options.context_name.clone();
    let (fetched_dockerfile, fetched_context) = tokio::join!(
        fetch(
            locals,
            dockerfile_key,
            vec![filename.clone(), specific_ignore.clone()],
        ),
        fetch(locals, &context_name, vec![".dockerignore".to_owned()]),
    );
    let (dockerfile_dir, context_dir) = (fetched_dockerfile?, fetched_context?);
    let dockerfile = read_optional(&dockerfile_dir.join(&filename))?.ok_or_else(|| {
        Status::not_found(format!(
            "failed to solve: failed to read dockerfile: open {filename}: no such file or directory"
        ))
    })?;
    if !attrs.contains_key("cmdline") {
        if let Some(syntax) = crate::bridge::Syntax::of(&options.build_args, &dockerfile) {
            return Ok(Frontend::Forward(syntax));
        }
    }
    let text = |bytes: Option<Vec<u8>>| bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
    let specific = text(read_optional(&dockerfile_dir.join(&specific_ignore))?);
    let general = text(read_optional(&context_dir.join(".dockerignore"))?);
    options.excludes = kiln_frontend::select_dockerignore(specific.as_deref(), general.as_deref())
        .map(kiln_frontend::parse_dockerignore)
        .unwrap_or_default();
    Ok(Frontend::Dockerfile((dockerfile, Box::new(options))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn attributes_become_conversion_options() {
        let options = convert_options(&attrs(&[
            ("filename", "sub/app.Dockerfile"),
            ("target", "build"),
            ("build-arg:A", "1"),
            ("label:team", "ci"),
            ("add-hosts", "DB=10.0.0.5,cache=10.0.0.6"),
            ("force-network-mode", "none"),
            ("shm-size", "134217728"),
            ("ulimit", "nofile=1024:2048"),
            ("no-cache", "app,\"web\""),
            ("context:base", "docker-image://busybox:1"),
            ("context:assets", "local:assets"),
        ]))
        .unwrap();
        assert_eq!(options.file_name, "app.Dockerfile");
        assert_eq!(options.target.as_deref(), Some("build"));
        assert_eq!(options.build_args["A"], "1");
        assert_eq!(options.labels["team"], "ci");
        let hosts: Vec<String> = options
            .extra_hosts
            .iter()
            .map(|(h, ip)| format!("{h}={ip}"))
            .collect();
        assert_eq!(hosts, ["db=10.0.0.5", "cache=10.0.0.6"]);
        assert_eq!(options.network, pb::NetMode::None);
        assert_eq!(options.shm_size, 128 << 20);
        assert_eq!(options.ulimits[0].soft, 1024);
        assert_eq!(options.ulimits[0].hard, 2048);
        assert_eq!(options.no_cache_stages, ["app", "web"]);
        assert_eq!(options.context_name, "context");
        assert_eq!(
            options.named_contexts["base"],
            NamedContext::Image("busybox:1".to_owned())
        );
        assert_eq!(
            options.named_contexts["assets"],
            NamedContext::Local("assets".to_owned())
        );
        assert!(!no_cache_all(&attrs(&[("no-cache", "app")])));
        assert!(no_cache_all(&attrs(&[("no-cache", "")])));

        let err = |pairs: &[(&str, &str)]| {
            convert_options(&attrs(pairs))
                .unwrap_err()
                .message()
                .to_owned()
        };
        assert_eq!(err(&[("add-hosts", "db")]), "invalid key-value pair db");
        assert_eq!(err(&[("add-hosts", "db=x")]), "failed to parse IP x");
        assert_eq!(
            err(&[("force-network-mode", "bridge")]),
            "invalid netmode bridge"
        );
        // Several platforms are split into one conversion each before options are made.
        assert_eq!(
            err(&[("platform", "linux/amd64,linux/arm64")]),
            "platform \"linux/amd64,linux/arm64\": one platform at a time (a build for several is converted once per platform)"
        );
        let split = per_platform(&attrs(&[
            ("platform", "linux/amd64, linux/arm64,linux/amd64"),
            ("target", "app"),
        ]))
        .unwrap();
        let platforms: Vec<String> = split
            .iter()
            .map(|(platform, attrs)| {
                let options = convert_options(attrs).unwrap();
                assert!(options.multi_platform);
                assert_eq!(options.target.as_deref(), Some("app"));
                assert_eq!(
                    kiln_llb::Platform::from_pb(&options.platform),
                    platform.clone().unwrap()
                );
                platform.as_ref().unwrap().to_string()
            })
            .collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
        let one = per_platform(&attrs(&[("platform", "linux/arm64")])).unwrap();
        assert_eq!(one.len(), 1);
        assert!(one[0].0.is_none() && !convert_options(&one[0].1).unwrap().multi_platform);
        assert_eq!(
            per_platform(&attrs(&[("platform", "linux/amd64,bogus/")]))
                .unwrap_err()
                .message(),
            "invalid platform \"bogus/\": an empty part"
        );
    }

    #[test]
    fn options_become_the_attributes_they_come_from() {
        let options = ConvertOptions {
            target: Some("build".to_owned()),
            file_name: "app.Dockerfile".to_owned(),
            build_args: [("A".to_owned(), "1,2".to_owned())].into(),
            labels: [("team".to_owned(), "ci".to_owned())].into(),
            extra_hosts: vec![
                ("db".to_owned(), "10.0.0.5".parse().unwrap()),
                ("v6".to_owned(), "2001:db8::1".parse().unwrap()),
            ],
            network: pb::NetMode::Host,
            shm_size: 64 << 20,
            ulimits: vec![pb::Ulimit {
                name: "nofile".to_owned(),
                soft: 1024,
                hard: 2048,
            }],
            cgroup_parent: Some("ci.slice".to_owned()),
            no_cache_stages: vec!["app".to_owned(), "web,x".to_owned()],
            named_contexts: [
                (
                    "base".to_owned(),
                    NamedContext::Image("busybox:1".to_owned()),
                ),
                (
                    "assets".to_owned(),
                    NamedContext::Local("assets".to_owned()),
                ),
            ]
            .into(),
            platform: kiln_llb::Platform::parse("linux/arm64").unwrap().to_pb(),
            build_platform: kiln_llb::Platform::host().to_pb(),
            ..ConvertOptions::default()
        };
        let attrs: HashMap<String, String> = frontend_attrs(&options, false).into_iter().collect();
        assert_eq!(attrs["add-hosts"], "db=10.0.0.5,v6=2001:db8::1");
        assert_eq!(attrs["platform"], "linux/arm64");
        assert_eq!(attrs["no-cache"], "app,\"web,x\"");
        let back = convert_options(&attrs).unwrap();
        assert_eq!(back.target, options.target);
        assert_eq!(back.file_name, options.file_name);
        assert_eq!(back.build_args, options.build_args);
        assert_eq!(back.labels, options.labels);
        assert_eq!(back.extra_hosts, options.extra_hosts);
        assert_eq!(back.network, options.network);
        assert_eq!(back.shm_size, options.shm_size);
        assert_eq!(back.ulimits, options.ulimits);
        assert_eq!(back.cgroup_parent, options.cgroup_parent);
        assert_eq!(back.no_cache_stages, options.no_cache_stages);
        assert_eq!(back.named_contexts, options.named_contexts);
        assert_eq!(back.platform, options.platform);
        assert!(!no_cache_all(&attrs));
        let all: HashMap<String, String> = frontend_attrs(&options, true).into_iter().collect();
        assert!(no_cache_all(&all));
    }
}
