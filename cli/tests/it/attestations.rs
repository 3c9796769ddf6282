//! Issue 19: attestations in BuildKit's layout (an attestation manifest per platform in the
//! image index, its layers in-toto statements), read back with skopeo and the registry's
//! blob API, the statements validated against the JSON schemas in `testdata/attestations/`.

use std::path::Path;
use std::process::Command;

use kiln_testdata::{BUSYBOX_MANIFEST_DIGEST, attestation_schema};

use crate::common::{kiln_in, ready, text};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub(crate) fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// `skopeo inspect --raw` of `reference` (a `docker://` or `oci:` name).
pub(crate) fn raw(reference: &str) -> serde_json::Value {
    let output = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", reference])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    json(&output.stdout)
}

/// A blob of the test registry's `repository`.
pub(crate) fn registry_blob(repository: &str, digest: &str) -> Vec<u8> {
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

/// A context whose Dockerfile builds on the test registry's busybox (`busybox:latest`, through
/// the docker.io mirror of [`crate::common::mirror_config`]).
pub(crate) fn context(dir: &Path) -> String {
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
pub(crate) fn entries(index: &serde_json::Value) -> (serde_json::Value, serde_json::Value) {
    let mut pairs = attested(index);
    assert_eq!(pairs.len(), 1, "{index:#}");
    pairs.remove(0)
}

/// The index's image entries, each with its attestation manifest entry (listed after every
/// image, in the images' order, as BuildKit writes them).
pub(crate) fn attested(index: &serde_json::Value) -> Vec<(serde_json::Value, serde_json::Value)> {
    assert_eq!(index["mediaType"], OCI_INDEX, "{index:#}");
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len() % 2, 0, "{index:#}");
    let (images, attestations) = manifests.split_at(manifests.len() / 2);
    images
        .iter()
        .zip(attestations)
        .map(|(image, attestation)| {
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
            (image.clone(), attestation.clone())
        })
        .collect()
}

/// The provenance statement's checks shared by the tests: it validates against the in-toto
/// statement and SLSA v1 schemas, names the image, and has the base image as a resolved
/// dependency (the build of [`context`] with `GREETING=hello`).
pub(crate) fn check_provenance(statement: &serde_json::Value, image_digest: &str) {
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
pub(crate) fn index_digest(name: &str) -> String {
    let output = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    kiln_cache::Digest::from_bytes(&output.stdout).to_string()
}

/// The checks of `mode=max` provenance: the predicate has the build's LLB (each op a step, the
/// busybox source among them, the digest mapping) and the Dockerfile as the steps' source.
pub(crate) fn check_max_provenance(statement: &serde_json::Value) {
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
    check_max_provenance(&statement);
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

/// The statement of `predicate_type` in the attestation manifest of the OCI layout `layout`'s
/// only image, with the image's manifest digest.
fn layout_statement(layout: &Path, predicate_type: &str) -> (serde_json::Value, String) {
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        fs_err::read(layout.join("blobs/sha256").join(hex)).unwrap()
    };
    let top = json(&fs_err::read(layout.join("index.json")).unwrap());
    let index = json(&blob(top["manifests"][0]["digest"].as_str().unwrap()));
    let (image, attestation) = entries(&index);
    let manifest = json(&blob(attestation["digest"].as_str().unwrap()));
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["annotations"]["in-toto.io/predicate-type"] == predicate_type)
        .unwrap_or_else(|| panic!("no {predicate_type} statement in {manifest:#}"))
        .clone();
    let statement = json(&blob(layer["digest"].as_str().unwrap()));
    (statement, image["digest"].as_str().unwrap().to_owned())
}

/// The SPDX packages of an SBOM statement by name, after checking the statement against
/// the in-toto and SPDX 2.3 schemas and its subject.
pub(crate) fn spdx_packages(
    statement: &serde_json::Value,
    image_digest: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    assert_valid("in-toto-statement.schema.json", statement);
    assert_eq!(statement["predicateType"], "https://spdx.dev/Document");
    let hex = image_digest.strip_prefix("sha256:").unwrap();
    assert_eq!(statement["subject"][0]["digest"]["sha256"], hex);
    let document = &statement["predicate"];
    assert_valid("spdx-2.3.schema.json", document);
    assert_eq!(document["spdxVersion"], "SPDX-2.3");
    document["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p.clone()))
        .collect()
}

/// A package's purl.
pub(crate) fn purl(package: &serde_json::Value) -> &str {
    package["externalRefs"][0]["referenceLocator"]
        .as_str()
        .unwrap()
}

/// `kiln build --sbom=true` of the context `dir/ctx` into the OCI layout `dir/layout` as
/// `name`: the build's output and the layout's path.
fn build_sbom_layout(
    dir: &Path,
    name: &str,
    env: &[(&str, &str)],
) -> (std::process::Output, std::path::PathBuf) {
    let layout = dir.join("layout");
    let output = kiln_in(
        dir,
        &[
            "build",
            "--sbom=true",
            "--output",
            &format!("type=oci,dest={},tar=false,name={name}", layout.display()),
            &dir.join("ctx").to_string_lossy(),
        ],
        env,
    );
    (output, layout)
}

/// `--sbom=true` on a Debian bookworm image made by debootstrap: the SPDX document lists
/// the packages of its dpkg database with Debian purls, attributed to the base image, and
/// the build's own layer adds none.
#[test]
fn the_sbom_of_a_debian_image_lists_its_packages_from_the_base_image() {
    if !ready() {
        return;
    }
    let probe = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "docker://127.0.0.1:5000/library/debian:bookworm",
        ])
        .output()
        .unwrap();
    if !probe.status.success() {
        kiln_testdata::skip(
            "the test registry has no library/debian:bookworm (run scripts/test-env.sh)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        "FROM debian:bookworm\nRUN echo built > /built\n",
    )
    .unwrap();
    let (output, layout) = build_sbom_layout(dir.path(), "example.com/deb:1", &[]);
    assert!(output.status.success(), "{}", text(&output));
    let (statement, image_digest) = layout_statement(&layout, "https://spdx.dev/Document");
    let packages = spdx_packages(&statement, &image_digest);
    for name in ["base-files", "dpkg", "bash", "libc6", "coreutils"] {
        let package = packages
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in {:#?}", packages.keys()));
        let purl = purl(package);
        assert!(
            purl.starts_with(&format!("pkg:deb/debian/{name}@"))
                && purl.contains("?arch=amd64&distro=debian-12"),
            "{purl}"
        );
        assert_eq!(
            package["versionInfo"],
            purl.split('@').nth(1).unwrap().split('?').next().unwrap()
        );
    }
    // Every package comes from the base image: none is the build's.
    let relationships = statement["predicate"]["relationships"].as_array().unwrap();
    let from_base = |id: &serde_json::Value| {
        relationships.iter().any(|r| {
            r["spdxElementId"] == "SPDXRef-BaseImage"
                && r["relationshipType"] == "CONTAINS"
                && r["relatedSpdxElement"] == *id
        })
    };
    let found: Vec<&serde_json::Value> = packages
        .values()
        .filter(|p| purl(p).starts_with("pkg:deb/"))
        .collect();
    assert!(found.len() > 50, "{} packages", found.len());
    assert!(found.iter().all(|p| from_base(&p["SPDXID"])));
}

/// `--sbom=true` on a push reads hand-written databases of every ecosystem kiln covers,
/// leaves out malformed entries and links (a package.json that is a link to /etc/passwd); the push
/// also takes its default provenance, both statements in one attestation manifest.
#[test]
fn serial_the_sbom_covers_each_ecosystem_and_skips_bad_entries() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    let files: [(&str, &str); 6] = [
        (
            "status",
            "Package: hello\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.10-3\n\n\
             Package: removed\nStatus: deinstall ok config-files\nVersion: 1\n\n\
             this paragraph is not a control file\n\n\
             Package: noversion\nStatus: install ok installed\n",
        ),
        ("installed", "P:musl\nV:1.2.4-r2\nA:x86_64\n\nP:broken\n"),
        (
            "METADATA",
            "Metadata-Version: 2.1\nName: Typing_Extensions\nVersion: 4.9.0\n",
        ),
        (
            "package.json",
            r#"{"name":"@types/node","version":"20.1.0"}"#,
        ),
        ("bad.json", "{ not json"),
        (
            "crates2.json",
            r#"{"installs":{"ripgrep 14.1.0 (registry+https://github.com/rust-lang/crates.io-index)":{}}}"#,
        ),
    ];
    fs_err::create_dir_all(&context).unwrap();
    for (name, text) in files {
        fs_err::write(context.join(name), text).unwrap();
    }
    fs_err::write(
        context.join("Dockerfile"),
        "FROM busybox:latest\n\
         COPY status /var/lib/dpkg/status\n\
         COPY installed /lib/apk/db/installed\n\
         COPY METADATA /usr/lib/python3.11/site-packages/typing_extensions-4.9.0.dist-info/METADATA\n\
         COPY package.json /app/node_modules/@types/node/package.json\n\
         COPY bad.json /app/node_modules/bad/package.json\n\
         COPY crates2.json /usr/local/cargo/.crates2.json\n\
         RUN mkdir /app/node_modules/linked && ln -s /etc/passwd /app/node_modules/linked/package.json\n",
    )
    .unwrap();
    let repository = format!(
        "kiln-test/sbom-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    );
    let name = format!("127.0.0.1:5000/{repository}:v1");
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--sbom=true",
            "-t",
            &name,
            "--push",
            &context.to_string_lossy(),
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let index = raw(&format!("docker://{name}"));
    let (image, attestation) = entries(&index);
    let manifest = raw(&format!(
        "docker://127.0.0.1:5000/{repository}@{}",
        attestation["digest"].as_str().unwrap()
    ));
    let types: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["annotations"]["in-toto.io/predicate-type"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        types,
        [
            "https://spdx.dev/Document",
            "https://slsa.dev/provenance/v1"
        ]
    );
    let statement = json(&registry_blob(
        &repository,
        manifest["layers"][0]["digest"].as_str().unwrap(),
    ));
    let packages = spdx_packages(&statement, image["digest"].as_str().unwrap());
    let purls: Vec<&str> = packages
        .values()
        .filter(|p| p["SPDXID"] != "SPDXRef-Image" && p["SPDXID"] != "SPDXRef-BaseImage")
        .map(purl)
        .collect();
    assert_eq!(
        purls,
        [
            "pkg:npm/%40types/node@20.1.0",
            "pkg:pypi/typing-extensions@4.9.0",
            "pkg:deb/debian/hello@2.10-3?arch=amd64",
            "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64",
            "pkg:cargo/ripgrep@14.1.0",
        ]
    );
    // busybox has no package database: nothing is the base image's.
    let relationships = statement["predicate"]["relationships"].as_array().unwrap();
    assert!(
        !relationships
            .iter()
            .any(|r| r["spdxElementId"] == "SPDXRef-BaseImage"
                && r["relationshipType"] == "CONTAINS"),
        "{relationships:#?}"
    );
}

/// `--sbom=true` on an image with an RPM database made by rpm, a binary built with
/// `cargo auditable` and a Go binary's build information (testdata/sbom/): the RPM packages
/// get Fedora purls from the image's os-release (the epoch a qualifier), the Rust binary's
/// runtime crates `pkg:cargo` purls and the Go binary's modules `pkg:golang` purls, located at
/// the binary; a truncated ELF file and a link to /etc/passwd in /usr/bin add nothing.
#[test]
fn the_sbom_lists_rpm_packages_and_the_modules_of_rust_and_go_binaries() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    let sbom = kiln_testdata::sbom_dir();
    for name in ["rpmdb.sqlite", "hello-auditable", "hello-go"] {
        fs_err::copy(sbom.join(name), context.join(name)).unwrap();
    }
    let binary = fs_err::read(sbom.join("hello-auditable")).unwrap();
    fs_err::write(context.join("truncated"), &binary[..200]).unwrap();
    fs_err::write(
        context.join("os-release"),
        "NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=40\n",
    )
    .unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        "FROM busybox:latest\n\
         COPY os-release /etc/os-release\n\
         COPY rpmdb.sqlite /var/lib/rpm/rpmdb.sqlite\n\
         COPY hello-auditable /usr/local/bin/hello\n\
         COPY hello-go /go/bin/hello-go\n\
         COPY truncated /usr/bin/truncated\n\
         RUN ln -s /etc/passwd /usr/bin/passwd-link\n",
    )
    .unwrap();
    let (output, layout) =
        build_sbom_layout(dir.path(), "example.com/rpm:1", &[("KILN_LOG", "warn")]);
    assert!(output.status.success(), "{}", text(&output));
    let (statement, image_digest) = layout_statement(&layout, "https://spdx.dev/Document");
    let packages = spdx_packages(&statement, &image_digest);
    let found: Vec<(&str, &str, &str, &str)> = packages
        .values()
        .filter(|p| p["SPDXID"] != "SPDXRef-Image" && p["SPDXID"] != "SPDXRef-BaseImage")
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["versionInfo"].as_str().unwrap(),
                purl(p),
                p["sourceInfo"].as_str().unwrap(),
            )
        })
        .collect();
    let rpmdb = "acquired package info from RPM DB: /var/lib/rpm/rpmdb.sqlite";
    let binary = "acquired package info from cargo auditable binary: /usr/local/bin/hello";
    let go = "acquired package info from go module binary: /go/bin/hello-go";
    assert_eq!(
        found,
        [
            (
                "example.com/hello-go",
                "(devel)",
                "pkg:golang/example.com/hello-go@%28devel%29",
                go
            ),
            (
                "github.com/google/uuid",
                "v1.3.0",
                "pkg:golang/github.com/google/uuid@v1.3.0",
                go
            ),
            (
                "hello-auditable",
                "0.1.0",
                "pkg:cargo/hello-auditable@0.1.0",
                binary
            ),
            (
                "hello-kiln",
                "1.2.3-4",
                "pkg:rpm/fedora/hello-kiln@1.2.3-4?arch=noarch&distro=fedora-40&upstream=hello-kiln-1.2.3-4.src.rpm",
                rpmdb
            ),
            ("itoa", "1.0.11", "pkg:cargo/itoa@1.0.11", binary),
            ("stdlib", "go1.19.8", "pkg:golang/stdlib@1.19.8", go),
            (
                "tool-kiln",
                "2:0.9-1.fc40",
                "pkg:rpm/fedora/tool-kiln@0.9-1.fc40?arch=x86_64&distro=fedora-40&epoch=2&upstream=tool-kiln-0.9-1.fc40.src.rpm",
                rpmdb
            ),
        ]
    );
    // The truncated binary was read and left out with a warning; the build went on.
    assert!(
        text(&output).contains("an ELF file whose headers cannot be read"),
        "{}",
        text(&output)
    );
}
