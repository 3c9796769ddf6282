//! Issue 18: the `docker buildx build` flags that apply on Linux, each checked on what the build
//! made (the image config, the files a step wrote), not only on its exit code.

use std::path::Path;

use crate::build_dockerfile_sources::build;
use crate::common::{ready, text};

/// The image config of the only image in the OCI layout directory `layout`.
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
    blob(&manifest["config"]["digest"])
}

#[test]
fn label_sets_the_image_config_labels() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let dest = format!(
        "type=oci,dest={},tar=false,name=labelled:1",
        layout.display()
    );
    let output = build(
        dir.path(),
        "FROM busybox\nLABEL version=1 kept=yes\n",
        &[],
        &[
            "--output",
            &dest,
            "--label",
            "org.opencontainers.image.title=kiln test",
            "--label",
            "version=2",
            "--label",
            "empty",
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let config = layout_config(&layout);
    assert_eq!(
        config["config"]["Labels"],
        serde_json::json!({
            "empty": "",
            "kept": "yes",
            "org.opencontainers.image.title": "kiln test",
            "version": "2",
        })
    );
    // A label without a key is buildx's error, before anything runs.
    let output = build(dir.path(), "FROM busybox\n", &[], &["--label", "=x"]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("invalid key-value pair \"=x\": empty key"),
        "{}",
        text(&output)
    );
}
