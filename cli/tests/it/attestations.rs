//! Issue 19: attestations in BuildKit's layout (an attestation manifest per platform in the
//! image index, its layers in-toto statements), read back with skopeo and the registry's
//! blob API, the statements validated against the JSON schemas in `testdata/attestations/`.

use std::path::Path;
use std::process::Command;

use kiln_testdata::{BUSYBOX_MANIFEST_DIGEST, attestation_schema};

use crate::common::{kiln_in, ready, text};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// `skopeo inspect --raw` of `reference` (a `docker://` or `oci:` name).
fn raw(reference: &str) -> serde_json::Value {
    let output = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", reference])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    json(&output.stdout)
}

/// A blob of the test registry's `repository`.
fn registry_blob(repository: &str, digest: &str) -> Vec<u8> {
    let url = format!("http://127.0.0.1:5000/v2/{repository}/blobs/{digest}");
    let output = Command::new("curl").args(["-fsSL", &url]).output().unwrap();
    assert!(output.status.success(), "{url}: {}", text(&output));
    output.stdout
}

/// Fails with every schema error of `instance`.
fn assert_valid(schema: &str, instance: &serde_json::Value) {
    let schema = attestation_schema(schema);
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{instance:#}");
}

/// A context whose Dockerfile builds on the test registry's busybox.
fn context(dir: &Path) -> String {
    let context = dir.join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        "FROM busybox:latest\nARG GREETING=hi\nRUN echo $GREETING > /greeting\n",
    )
    .unwrap();
    context.to_string_lossy().into_owned()
}

/// The index's one image entry and its attestation manifest entry.
fn entries(index: &serde_json::Value) -> (serde_json::Value, serde_json::Value) {
    assert_eq!(index["mediaType"], OCI_INDEX, "{index:#}");
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index:#}");
    let (image, attestation) = (manifests[0].clone(), manifests[1].clone());
    assert_eq!(image["platform"]["os"], "linux", "{index:#}");
    assert_eq!(
        attestation["platform"],
        serde_json::json!({ "architecture": "unknown", "os": "unknown" })
    );
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.digest"],
        image["digest"]
    );
    (image, attestation)
}

/// The provenance statement's checks shared by the tests: it validates against the in-toto
/// statement and SLSA v1 schemas, names the image, and has the base image as a resolved
/// dependency.
fn check_provenance(statement: &serde_json::Value, image_digest: &str) {
    assert_valid("in-toto-statement.schema.json", statement);
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    let predicate = &statement["predicate"];
    assert_valid("slsa-provenance-v1.schema.json", predicate);
    let hex = image_digest.strip_prefix("sha256:").unwrap();
    assert_eq!(statement["subject"][0]["digest"]["sha256"], hex);
    let definition = &predicate["buildDefinition"];
    assert_eq!(
        definition["buildType"],
        "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
    );
    let request = &definition["externalParameters"]["request"];
    assert_eq!(request["frontend"], "dockerfile.v0");
    assert_eq!(request["args"]["build-arg:GREETING"], "hello");
    assert_eq!(
        definition["externalParameters"]["configSource"]["path"],
        "Dockerfile"
    );
    let base = BUSYBOX_MANIFEST_DIGEST.strip_prefix("sha256:").unwrap();
    let dependencies = definition["resolvedDependencies"].as_array().unwrap();
    assert!(
        dependencies.iter().any(|d| d["digest"]["sha256"] == base
            && d["uri"] == "pkg:docker/busybox@latest?platform=linux%2Famd64"),
        "{dependencies:#?}"
    );
}

/// A push takes `mode=min` provenance by default, as with buildx: the index names the image
/// and its attestation manifest, whose statement is SLSA v1 provenance about that image;
/// `--metadata-file` carries the predicate; `--provenance=false` pushes the image alone.
#[test]
fn serial_pushed_images_carry_slsa_provenance() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    let repository = format!(
        "kiln-test/attest-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    );
    let name = format!("127.0.0.1:5000/{repository}:v1");
    let metadata = dir.path().join("metadata.json");
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--progress=plain",
            "--build-arg",
            "GREETING=hello",
            "--metadata-file",
            &metadata.to_string_lossy(),
            "-t",
            &name,
            "--push",
            &context,
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let index = raw(&format!("docker://{name}"));
    let (image, attestation) = entries(&index);
    let image_digest = image["digest"].as_str().unwrap();
    let manifest = raw(&format!(
        "docker://127.0.0.1:5000/{repository}@{}",
        attestation["digest"].as_str().unwrap()
    ));
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest:#}");
    assert_eq!(layers[0]["mediaType"], "application/vnd.in-toto+json");
    assert_eq!(
        layers[0]["annotations"]["in-toto.io/predicate-type"],
        "https://slsa.dev/provenance/v1"
    );
    let statement = json(&registry_blob(
        &repository,
        layers[0]["digest"].as_str().unwrap(),
    ));
    check_provenance(&statement, image_digest);
    assert_eq!(
        statement["subject"][0]["name"],
        format!("pkg:docker/127.0.0.1:5000/{repository}@v1?platform=linux%2Famd64")
    );
    // min: no LLB.
    let internal = &statement["predicate"]["buildDefinition"]["internalParameters"];
    assert!(internal.get("buildConfig").is_none(), "{internal:#}");
    // The metadata file: the index and the predicate, as buildx writes them.
    let written = json(&fs_err::read(&metadata).unwrap());
    assert_eq!(written["containerimage.digest"], index_digest(&name));
    assert_eq!(written["buildx.build.provenance"], statement["predicate"]);

    // --provenance=false: the image alone.
    let plain = format!("127.0.0.1:5000/{repository}:plain");
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--provenance=false",
            "-t",
            &plain,
            "--push",
            &context,
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let manifest = raw(&format!("docker://{plain}"));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
}

/// The digest of the manifest `skopeo inspect --raw` reads for `name` (the index's).
fn index_digest(name: &str) -> String {
    let output = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    kiln_cache::Digest::from_bytes(&output.stdout).to_string()
}

/// `--provenance=mode=max` into an OCI layout: the layout's index names the attestation
/// manifest, and the predicate has the build's LLB (each op a step, the digest mapping) and
/// the Dockerfile as the steps' source; skopeo and umoci read the layout.
#[test]
fn max_provenance_in_an_oci_layout_has_the_llb() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    let layout = dir.path().join("layout");
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--provenance=mode=max",
            "--build-arg",
            "GREETING=hello",
            "--output",
            &format!(
                "type=oci,dest={},tar=false,name=example.com/a:1",
                layout.display()
            ),
            &context,
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        fs_err::read(layout.join("blobs/sha256").join(hex)).unwrap()
    };
    let top = json(&fs_err::read(layout.join("index.json")).unwrap());
    let index = json(&blob(top["manifests"][0]["digest"].as_str().unwrap()));
    let (image, attestation) = entries(&index);
    let manifest = json(&blob(attestation["digest"].as_str().unwrap()));
    let statement = json(&blob(manifest["layers"][0]["digest"].as_str().unwrap()));
    check_provenance(&statement, image["digest"].as_str().unwrap());
    let config = &statement["predicate"]["buildDefinition"]["internalParameters"]["buildConfig"];
    let steps = config["llbDefinition"].as_array().unwrap();
    // The image source, the RUN, the result.
    assert!(steps.len() >= 3, "{config:#}");
    assert!(
        steps.iter().any(|s| s["op"]["Op"]["source"]["identifier"]
            .as_str()
            .is_some_and(|i| i.starts_with("docker-image://docker.io/library/busybox:latest@"))),
        "{config:#}"
    );
    assert_eq!(
        config["digestMapping"].as_object().unwrap().len(),
        steps.len()
    );
    let source = &statement["predicate"]["runDetails"]["metadata"]["buildkit_metadata"]["source"];
    assert_eq!(source["infos"][0]["filename"], "Dockerfile", "{source:#}");
    assert_eq!(source["infos"][0]["language"], "Dockerfile", "{source:#}");
    assert!(
        source["infos"][0]["data"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    // skopeo copies the host's image out of the index (leaving the attestation manifest, as
    // for BuildKit's layouts), and umoci unpacks it.
    let single = dir.path().join("single");
    let copy = Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("oci:{}:1", single.display()))
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", text(&copy));
    let bundle = dir.path().join("bundle");
    let unpack = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1", single.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(unpack.status.success(), "{}", text(&unpack));
    assert_eq!(
        fs_err::read_to_string(bundle.join("rootfs/greeting")).unwrap(),
        "hello\n"
    );
}
