//! The Dockerfile conformance cases of `testdata/conformance/<case>/` (a Dockerfile, its
//! context and `case.toml`, the expectations checked against BuildKit): built with kiln and
//! their results checked as the corpus runner (`scripts/conformance.sh`) checks them.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::{kiln_in, text};

/// The `testdata/conformance/` directory.
pub(crate) fn conformance_dir() -> PathBuf {
    kiln_testdata::root().join("conformance")
}

/// Builds the case `name` from its Dockerfile with `kiln build -f` (its target, build
/// arguments and secrets as the corpus runner passes them) in `work`; returns what is wrong
/// with the result (empty: it passed).
pub(crate) fn run_dockerfile_case(work: &Path, name: &str) -> Vec<String> {
    let case_dir = conformance_dir().join(name);
    let case: toml::Table = fs_err::read_to_string(case_dir.join("case.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let string = |key: &str, default: &str| {
        case.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or(default)
            .to_owned()
    };
    let mut context = case_dir.join(string("context", "context"));
    if !context.is_dir() {
        // The case has no context files: an empty directory stands in.
        context = work.join(format!("{name}.context"));
        fs_err::create_dir_all(&context).unwrap();
    }
    let dockerfile = case_dir.join(string("dockerfile", "Dockerfile"));
    let out = work.join(format!("{name}.out"));
    let mut args = vec![
        "build".to_owned(),
        "--progress=plain".to_owned(),
        "-f".to_owned(),
        dockerfile.display().to_string(),
        "--output".to_owned(),
        format!("type=local,dest={}", out.display()),
    ];
    let expect = case["expect"].as_table().expect("[expect] is a table");
    // The image config is read from an OCI layout written beside the files.
    let layout = work.join(format!("{name}.oci"));
    let config = expect.get("config").and_then(|c| c.as_table());
    if config.is_some() {
        args.extend([
            "--output".to_owned(),
            format!("type=oci,dest={},tar=false", layout.display()),
        ]);
    }
    if let Some(target) = case.get("target").and_then(|v| v.as_str()) {
        args.extend(["--target".to_owned(), target.to_owned()]);
    }
    let tables = |key: &str| {
        case.get(key)
            .and_then(|v| v.as_table())
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect::<Vec<_>>()
    };
    for (key, value) in tables("build_args") {
        args.extend(["--build-arg".to_owned(), format!("{key}={value}")]);
    }
    for (id, file) in tables("secrets") {
        let src = case_dir.join(file);
        args.extend([
            "--secret".to_owned(),
            format!("id={id},src={}", src.display()),
        ]);
    }
    args.push(context.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = kiln_in(work, &args, &[]);
    let log = text(&output);
    if expect.get("outcome").and_then(|o| o.as_str()) == Some("failure") {
        if output.status.success() {
            return vec!["the build succeeded, want a failure".to_owned()];
        }
        let wanted = expect.get("error_contains").and_then(|e| e.as_array());
        return wanted
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str())
            .filter(|w| !log.to_lowercase().contains(&w.to_lowercase()))
            .map(|w| format!("the error does not say {w:?}:\n{log}"))
            .collect();
    }
    if !output.status.success() {
        return vec![format!("the build failed:\n{log}")];
    }
    let mut errors = check_expectations(expect, &out);
    if let Some(config) = config {
        errors.extend(check_config(config, &layout));
    }
    errors
}

/// The `.config` of the image config of the only image in the OCI layout directory `layout`.
fn layout_config(layout: &Path) -> serde_json::Value {
    let json = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs_err::read(path).unwrap()).unwrap()
    };
    let blob = |digest: &serde_json::Value| {
        json(
            &layout
                .join("blobs")
                .join(digest.as_str().unwrap().replacen(':', "/", 1)),
        )
    };
    let index = json(&layout.join("index.json"));
    let manifest = blob(&index["manifests"][0]["digest"]);
    blob(&manifest["config"]["digest"])["config"].clone()
}

/// Checks the image config in `layout` against a case's `[expect.config]` table, as the
/// corpus runner does; returns what is wrong.
fn check_config(expect: &toml::Table, layout: &Path) -> Vec<String> {
    let config = layout_config(layout);
    let mut errors = Vec::new();
    let env: Vec<&str> = config["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
        .collect();
    for (key, want) in expect {
        let got = &config[key.as_str()];
        match key.as_str() {
            "env_contains" => {
                for entry in want
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_str())
                {
                    if !env.contains(&entry) {
                        errors.push(format!("config Env {env:?} lacks {entry:?}"));
                    }
                }
            }
            "env_absent_keys" => {
                for name in want
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_str())
                {
                    if env
                        .iter()
                        .any(|e| e.split_once('=').map(|(k, _)| k) == Some(name))
                    {
                        errors.push(format!("config Env {env:?} has {name:?}"));
                    }
                }
            }
            "null_fields" => {
                for field in want
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_str())
                {
                    let value = &config[field];
                    let empty = value.is_null()
                        || value.as_array().is_some_and(Vec::is_empty)
                        || value.as_object().is_some_and(serde_json::Map::is_empty);
                    if !empty {
                        errors.push(format!("config {field} is {value}, want null or empty"));
                    }
                }
            }
            "ExposedPorts" | "Volumes" => {
                let mut keys: Vec<&str> = got
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k.as_str())
                    .collect();
                let mut wanted: Vec<&str> = want
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_str())
                    .collect();
                keys.sort_unstable();
                wanted.sort_unstable();
                if keys != wanted {
                    errors.push(format!("config {key} {keys:?}, want {wanted:?}"));
                }
            }
            "Labels" | "Healthcheck" => {
                for (name, value) in want.as_table().into_iter().flatten() {
                    let want = toml_to_json(value);
                    if got[name.as_str()] != want {
                        errors.push(format!(
                            "config {key}.{name} is {}, want {want}",
                            got[name.as_str()]
                        ));
                    }
                }
            }
            _ => {
                let want = toml_to_json(want);
                if *got != want {
                    errors.push(format!("config {key} is {got}, want {want}"));
                }
            }
        }
    }
    errors
}

fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    serde_json::to_value(value).expect("TOML values are JSON values")
}

/// Builds each case from its Dockerfile and fails naming every case whose result is wrong.
pub(crate) fn assert_dockerfile_cases(names: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    let failures: Vec<String> = names
        .iter()
        .filter_map(|name| {
            let errors = run_dockerfile_case(work.path(), name);
            (!errors.is_empty()).then(|| format!("{name}:\n  {}", errors.join("\n  ")))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn file_type(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else {
        "other"
    }
}

/// Checks a local export against a case's `[expect]` table; returns what is wrong.
pub(crate) fn check_expectations(expect: &toml::Table, out: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    let files = expect.get("files").and_then(|f| f.as_array());
    for entry in files.into_iter().flatten() {
        let entry = entry.as_table().expect("expect.files entries are tables");
        let path = entry["path"].as_str().expect("path is a string");
        let full = out.join(path);
        let Ok(meta) = fs_err::symlink_metadata(&full) else {
            errors.push(format!("missing {path}"));
            continue;
        };
        if let Some(want) = entry.get("type").and_then(|v| v.as_str()) {
            if file_type(&meta) != want {
                errors.push(format!("{path}: type {}, want {want}", file_type(&meta)));
            }
        }
        if let Some(want) = entry.get("link_target").and_then(|v| v.as_str()) {
            let got = fs_err::read_link(&full).ok();
            if got.as_deref() != Some(Path::new(want)) {
                errors.push(format!("{path}: link target {got:?}, want {want:?}"));
            }
        }
        if let Some(want) = entry.get("mode").and_then(|v| v.as_str()) {
            let got = format!("{:04o}", meta.permissions().mode() & 0o7777);
            if got != want {
                errors.push(format!("{path}: mode {got}, want {want}"));
            }
        }
        if let Some(want) = entry.get("uid").and_then(|v| v.as_integer()) {
            if i64::from(meta.uid()) != want {
                errors.push(format!("{path}: uid {}, want {want}", meta.uid()));
            }
        }
        if let Some(want) = entry.get("gid").and_then(|v| v.as_integer()) {
            if i64::from(meta.gid()) != want {
                errors.push(format!("{path}: gid {}, want {want}", meta.gid()));
            }
        }
        let content = entry.get("content").and_then(|v| v.as_str());
        let contains = entry.get("contains").and_then(|v| v.as_str());
        let not_contains = entry.get("not_contains").and_then(|v| v.as_str());
        if content.is_some() || contains.is_some() || not_contains.is_some() {
            // Follows symlinks, as the conformance runner does.
            let data = match fs_err::read(&full) {
                Ok(data) => String::from_utf8_lossy(&data).into_owned(),
                Err(e) => {
                    errors.push(format!("{path}: unreadable ({e})"));
                    continue;
                }
            };
            if content.is_some_and(|want| data != want) {
                errors.push(format!("{path}: content {data:?}, want {content:?}"));
            }
            if contains.is_some_and(|want| !data.contains(want)) {
                errors.push(format!("{path}: {contains:?} not in {data:?}"));
            }
            if not_contains.is_some_and(|bad| data.contains(bad)) {
                errors.push(format!("{path}: {not_contains:?} unexpectedly in {data:?}"));
            }
        }
    }
    let absent = expect.get("absent").and_then(|a| a.as_array());
    for path in absent.into_iter().flatten() {
        let path = path.as_str().expect("absent entries are strings");
        if fs_err::symlink_metadata(out.join(path)).is_ok() {
            errors.push(format!("unexpected path {path}"));
        }
    }
    if expect.get("rootfs_empty").and_then(|v| v.as_bool()) == Some(true) {
        let left: Vec<_> = fs_err::read_dir(out)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if !left.is_empty() {
            errors.push(format!("rootfs not empty: {left:?}"));
        }
    }
    errors
}
