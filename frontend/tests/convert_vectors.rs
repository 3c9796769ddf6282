//! Converts the Dockerfile of every BuildKit LLB vector and compares the result with BuildKit's
//! own Definition and image configuration, op by op.
//!
//! `local.unique` is a random id BuildKit's client library draws per invocation for a context
//! source without a session (`identity.NewID()` in `client/llb/state.go`), so no converter can
//! reproduce the vector's value on its own. The frontend emits the attribute as BuildKit does
//! (a fresh id in the same format, see `ConvertOptions::local_unique`); here the vector's own
//! value is passed in, and the Definitions must then be digest-identical op for op. The
//! comparison with `local.unique` removed from both sides is reported too.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_frontend::testing::FakeResolver;
use kiln_frontend::{ConvertOptions, convert};
use kiln_llb::prost::Message as _;
use kiln_llb::{marshal_op, pb};

/// The image every vector is built on (BuildKit's test registry).
const BUSYBOX: &str = "127.0.0.1:5000/library/busybox:latest";

/// Serves the busybox test image as `BUSYBOX`.
fn busybox() -> FakeResolver {
    let layout = kiln_testdata::busybox_layout();
    let blob = |digest: &str| {
        fs_err::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest_digest = kiln_testdata::BUSYBOX_MANIFEST_DIGEST;
    let manifest: serde_json::Value = serde_json::from_slice(&blob(manifest_digest)).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap();
    FakeResolver::default().image(BUSYBOX, manifest_digest, blob(config))
}

/// The ops of a Definition with `local.unique` removed, re-digested; returns the JSON dump of
/// each op in order and the raw digests.
fn normalise(definition: &pb::Definition) -> (Vec<String>, Vec<String>) {
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    let mut dumps = Vec::new();
    let mut raw = Vec::new();
    for bytes in &definition.def {
        let old = kiln_llb::Digest::from_bytes(bytes).to_string();
        raw.push(old.clone());
        let mut op = pb::Op::decode(bytes.as_slice()).unwrap();
        if let Some(pb::op::Op::Source(source)) = &mut op.op {
            source.attrs.remove("local.unique");
        }
        for input in &mut op.inputs {
            if let Some(new) = renamed.get(&input.digest) {
                input.digest = new.clone();
            }
        }
        let new = kiln_llb::Digest::from_bytes(&marshal_op(&op)).to_string();
        renamed.insert(old, new.clone());
        dumps.push(format!("{new} {}", kiln_llb::dump::op_to_json(&op)));
    }
    (dumps, raw)
}

/// The `local.unique` value of the Definition's context source, if it has one.
fn local_unique_of(definition: &pb::Definition) -> Option<String> {
    definition.def.iter().find_map(|bytes| {
        let op = pb::Op::decode(bytes.as_slice()).ok()?;
        match op.op {
            Some(pb::op::Op::Source(source)) => source.attrs.get("local.unique").cloned(),
            _ => None,
        }
    })
}

fn target_of(dir: &Path) -> Option<String> {
    let text = fs_err::read_to_string(dir.join("case.txt")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("target = "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Cases whose LLB matches BuildKit's byte for byte (with the vector's `local.unique`); a
/// regression fails the test.
const MATCHING: &[&str] = &[
    "003-lowercase-instructions",
    "018-global-arg-not-in-stage",
    "024-arg-target-stage",
    "027-arg-empty-in-env",
    "036-env-literal-percent",
    "045-workdir-run-pwd",
    "051-multistage-index-from",
    "054-multistage-target-skips-later",
    "063-multistage-chain-inherit",
    "066-copy-empty-wildcard-partial",
    "069-copy-dir-copies-contents",
    "072-copy-into-existing-dir-no-slash",
    "075-copy-var-substitution",
    "078-copy-unicode-path",
    "081-copy-chown-existing-dir",
    "087-copy-link-dot-dest",
    "090-copy-through-symlink-context",
    "093-copy-through-symlink-multistage",
    "102-copy-parents-pivot",
    "105-add-targz-extract",
    "108-add-tar-into-dir",
    "111-add-chown-archive",
    "123-run-shell-form-uses-sh-c",
    "129-run-env-and-arg-visible",
    "159-onbuild-triggers-in-child-stage",
    "165-mount-bind-not-persisted",
    "168-mount-cache-default-id",
    "171-mount-arg-type",
    "186-heredoc-copy-special-symbols",
    "189-heredoc-run-shebang",
    "192-heredoc-var-substitution",
    "201-crlf-line-endings",
    "_canary",
];

#[test]
#[expect(
    clippy::print_stderr,
    reason = "the comparison report is the test's output"
)]
fn vectors_match_buildkit() {
    let mut identical = Vec::new();
    let mut normalised_equal = Vec::new();
    let mut config_equal = Vec::new();
    let mut report = String::new();
    let vectors = kiln_testdata::llb_vectors();
    let resolver = busybox();
    for dir in &vectors {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let dockerfile = fs_err::read(dir.join("Dockerfile")).unwrap();
        let expected =
            pb::Definition::decode(fs_err::read(dir.join("def.pb")).unwrap().as_slice()).unwrap();
        let options = ConvertOptions {
            target: target_of(dir),
            local_unique: local_unique_of(&expected),
            ..ConvertOptions::default()
        };
        let converted = match convert(&dockerfile, &options, &resolver) {
            Ok(c) => c,
            Err(e) => {
                report.push_str(&format!("{name}: conversion failed: {e}\n"));
                continue;
            }
        };
        let (want, want_raw) = normalise(&expected);
        let (got, got_raw) = normalise(&converted.definition);
        if want_raw == got_raw {
            identical.push(name.clone());
        }
        if want == got {
            normalised_equal.push(name.clone());
        } else {
            report.push_str(&format!("{name}: LLB differs\n"));
            for line in &want {
                if !got.contains(line) {
                    report.push_str(&format!("  - {line}\n"));
                }
            }
            for line in &got {
                if !want.contains(line) {
                    report.push_str(&format!("  + {line}\n"));
                }
            }
        }
        let want_config: serde_json::Value =
            serde_json::from_slice(&fs_err::read(dir.join("image-config.json")).unwrap()).unwrap();
        let mut want_config = want_config;
        // Go writes a nil diff_ids list as null.
        if want_config["rootfs"]["diff_ids"].is_null() {
            want_config["rootfs"]["diff_ids"] = serde_json::json!([]);
        }
        let got_config: serde_json::Value =
            serde_json::from_slice(&converted.config.to_json()).unwrap();
        if want_config == got_config {
            config_equal.push(name.clone());
        } else {
            report.push_str(&format!(
                "{name}: image config differs\n  want {want_config}\n  got  {got_config}\n"
            ));
        }
    }
    eprintln!("{report}");
    eprintln!(
        "{} vectors: {} digest-identical, {} identical without local.unique, {} with an identical image config",
        vectors.len(),
        identical.len(),
        normalised_equal.len(),
        config_equal.len()
    );
    for name in MATCHING {
        assert!(
            identical.iter().any(|n| n == name),
            "{name} no longer matches BuildKit's LLB byte for byte"
        );
    }
    assert_eq!(config_equal.len(), vectors.len(), "image configs differ");
}
