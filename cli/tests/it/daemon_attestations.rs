//! Attestations of builds through `kiln daemon`: BuildKit's own client, buildctl, asks for
//! them with the frontend attributes buildx sends (`attest:provenance=mode=max`,
//! `attest:sbom=`), and the pushed index holds an attestation manifest per image, read back
//! with skopeo and the registry's blob API and checked as the in-process builds' are
//! (`attestations.rs`). Needs buildctl, root and the test registry; skips saying why, or
//! fails under `KILN_TEST_REQUIRE_ALL=1`.

use std::path::PathBuf;

use base64::Engine as _;

use crate::attestations::{
    attested, check_max_provenance, check_provenance, context, entries, index_digest, json, purl,
    raw, registry_blob, spdx_packages,
};
use crate::common::daemon::DaemonSetup;
use crate::common::{assert_ok, text};
use crate::daemon::buildctl_dockerfile;

const SLSA: &str = "https://slsa.dev/provenance/v1";
const SPDX: &str = "https://spdx.dev/Document";

/// A repository of the test registry no other test pushes to.
fn repository(what: &str) -> String {
    format!(
        "kiln-test/daemon-{what}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    )
}

/// A daemon whose `busybox:latest` is the test registry's, and [`context`]'s build for it.
fn start(ready: fn() -> bool) -> Option<(DaemonSetup, PathBuf)> {
    let setup = DaemonSetup::start_mirrored(ready)?;
    let context = PathBuf::from(context(setup.dir.path()));
    Some((setup, context))
}

/// buildctl's `--output` pushing to `name`.
fn push(name: &str) -> String {
    format!("type=image,name={name},push=true")
}

/// The in-toto statements of the attestation manifest `attestation` (an index entry) in
/// `repository`, by predicate type, in the manifest's order.
fn statements(
    repository: &str,
    attestation: &serde_json::Value,
) -> Vec<(String, serde_json::Value)> {
    let manifest = raw(&format!(
        "docker://127.0.0.1:5000/{repository}@{}",
        attestation["digest"].as_str().unwrap()
    ));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            assert_eq!(layer["mediaType"], "application/vnd.in-toto+json");
            let kind = layer["annotations"]["in-toto.io/predicate-type"]
                .as_str()
                .unwrap()
                .to_owned();
            let blob = registry_blob(repository, layer["digest"].as_str().unwrap());
            (kind, json(&blob))
        })
        .collect()
}

/// `buildctl build --opt attest:sbom= --opt attest:provenance=mode=max`, pushed: the index
/// holds the image and its attestation manifest (naming the image's digest), whose two
/// statements are the SPDX SBOM (listing the dpkg package the build copied in) and `mode=max`
/// SLSA provenance (BuildKit's build type, `dockerfile.v0` with the build arg and no `attest:`
/// attribute, busybox as a resolved dependency, the LLB and the Dockerfile the daemon read).
#[test]
fn serial_daemon_attaches_the_provenance_and_sbom_buildctl_asks_for() {
    let Some((setup, context)) = start(crate::common::ready) else {
        return;
    };
    let (daemon, context) = (&setup.daemon, &context);
    let dockerfile = "FROM busybox:latest\nARG GREETING=hi\nRUN echo $GREETING > /greeting\n\
                      COPY status /var/lib/dpkg/status\n";
    fs_err::write(context.join("Dockerfile"), dockerfile).unwrap();
    fs_err::write(
        context.join("status"),
        "Package: hello\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.10-3\n",
    )
    .unwrap();
    let repository = repository("attest");
    let name = format!("127.0.0.1:5000/{repository}:v1");
    let metadata = setup.dir.path().join("metadata.json");
    assert_ok(buildctl_dockerfile(
        daemon,
        context,
        &[
            "--opt",
            "attest:sbom=",
            "--opt",
            "attest:provenance=mode=max",
            "--opt",
            "build-arg:GREETING=hello",
            "--output",
            &push(&name),
            "--metadata-file",
            metadata.to_str().unwrap(),
        ],
    ));
    let index = raw(&format!("docker://{name}"));
    let (image, attestation) = entries(&index);
    let image_digest = image["digest"].as_str().unwrap();
    // The daemon answers the index's digest, as BuildKit does.
    let response = json(&fs_err::read(&metadata).unwrap());
    assert_eq!(
        response["containerimage.digest"],
        index_digest(&name),
        "{response:#}"
    );
    let statements = statements(&repository, &attestation);
    let kinds: Vec<&str> = statements.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, [SPDX, SLSA]);

    let provenance = &statements[1].1;
    check_provenance(provenance, image_digest);
    check_max_provenance(provenance);
    assert_eq!(
        provenance["subject"][0]["name"],
        format!("pkg:docker/127.0.0.1:5000/{repository}@v1?platform=linux%2Famd64")
    );
    let request = &provenance["predicate"]["buildDefinition"]["externalParameters"]["request"];
    let args = request["args"].as_object().unwrap();
    assert!(
        args.keys().all(|k| !k.starts_with("attest:")),
        "{request:#}"
    );
    assert_eq!(
        request["locals"],
        serde_json::json!([{ "name": "context" }, { "name": "dockerfile" }])
    );
    let source = &provenance["predicate"]["runDetails"]["metadata"]["buildkit_metadata"]["source"];
    let data = base64::engine::general_purpose::STANDARD
        .decode(source["infos"][0]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(data).unwrap(), dockerfile);

    let packages = spdx_packages(&statements[0].1, image_digest);
    let purls: Vec<&str> = packages
        .values()
        .filter(|p| p["SPDXID"] != "SPDXRef-Image" && p["SPDXID"] != "SPDXRef-BaseImage")
        .map(purl)
        .collect();
    assert_eq!(purls, ["pkg:deb/debian/hello@2.10-3?arch=amd64"]);
}

/// Without `attest:` attributes a push is the image alone, as BuildKit's (buildctl sends no
/// default attestations); `attest:provenance=disabled=true` too.
#[test]
fn serial_daemon_pushes_no_attestations_unless_asked() {
    let Some((setup, context)) = start(crate::common::ready) else {
        return;
    };
    let (daemon, context) = (&setup.daemon, &context);
    let repository = repository("plain");
    for (tag, opts) in [
        ("plain", &[][..]),
        ("off", &["--opt", "attest:provenance=disabled=true"][..]),
    ] {
        let name = format!("127.0.0.1:5000/{repository}:{tag}");
        let output = push(&name);
        let mut args = opts.to_vec();
        args.extend(["--output", &output]);
        assert_ok(buildctl_dockerfile(daemon, context, &args));
        let manifest = raw(&format!("docker://{name}"));
        assert_eq!(
            manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json",
            "{tag}: {manifest:#}"
        );
        assert_eq!(
            manifest["layers"].as_array().unwrap().len(),
            2,
            "{manifest:#}"
        );
    }
}

/// An invalid attestation value fails the build with the error `kiln build`'s flags give,
/// before anything is built or pushed.
#[test]
fn serial_daemon_refuses_an_invalid_attest_value() {
    let Some((setup, context)) = start(crate::common::ready) else {
        return;
    };
    let (daemon, context) = (&setup.daemon, &context);
    for (opt, message) in [
        (
            "attest:provenance=mode=bogus",
            "invalid provenance mode \"bogus\": expected min or max",
        ),
        (
            "attest:sbom=generator=docker/buildkit-syft-scanner",
            "attest:sbom generator=docker/buildkit-syft-scanner: kiln makes the SBOM itself and \
             runs no generator image",
        ),
    ] {
        let built = buildctl_dockerfile(daemon, context, &["--opt", opt]);
        assert!(!built.status.success(), "{}", text(&built));
        let stderr = String::from_utf8_lossy(&built.stderr);
        assert!(stderr.contains(message), "{stderr}");
        assert!(!stderr.contains("RUN echo"), "{stderr}");
    }
}

/// Several platforms (`platform=linux/amd64,linux/arm64`) with `attest:provenance=`: an
/// attestation manifest per platform's image, each naming its image, whose provenance
/// (BuildKit's default `mode=max`) is about that image and has that platform's base image.
#[test]
fn serial_daemon_attests_each_platform_of_an_index() {
    let Some((setup, context)) = start(crate::multiplatform::multi_ready) else {
        return;
    };
    let (daemon, context) = (&setup.daemon, &context);
    fs_err::write(
        context.join("Dockerfile"),
        "FROM 127.0.0.1:5000/library/busybox:multi\nCOPY Dockerfile /Dockerfile\n",
    )
    .unwrap();
    let repository = repository("multi");
    let name = format!("127.0.0.1:5000/{repository}:v1");
    assert_ok(buildctl_dockerfile(
        daemon,
        context,
        &[
            "--opt",
            "platform=linux/amd64,linux/arm64",
            "--opt",
            "attest:provenance=",
            "--output",
            &push(&name),
        ],
    ));
    let index = raw(&format!("docker://{name}"));
    let pairs = attested(&index);
    let arches: Vec<&str> = pairs
        .iter()
        .map(|(image, _)| image["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"], "{index:#}");
    for (image, attestation) in &pairs {
        let arch = image["platform"]["architecture"].as_str().unwrap();
        let statements = statements(&repository, attestation);
        assert_eq!(statements.len(), 1);
        let (kind, statement) = &statements[0];
        assert_eq!(kind, SLSA);
        let hex = image["digest"].as_str().unwrap().strip_prefix("sha256:");
        assert_eq!(statement["subject"][0]["digest"]["sha256"], hex.unwrap());
        let predicate = &statement["predicate"]["buildDefinition"];
        let dependencies = predicate["resolvedDependencies"].as_array().unwrap();
        assert!(
            dependencies.iter().any(|d| d["uri"]
                == format!(
                    "pkg:docker/127.0.0.1:5000/library/busybox@multi?platform=linux%2F{arch}"
                )),
            "{arch}: {dependencies:#?}"
        );
        assert!(
            predicate["internalParameters"]["buildConfig"]["llbDefinition"]
                .as_array()
                .is_some_and(|steps| !steps.is_empty()),
            "{arch}: {predicate:#}"
        );
    }
}

/// `kiln --host … build` asks for attestations as buildx does: `--sbom=true` and a push (which
/// gets `mode=min` provenance by default) give the image an attestation manifest with both
/// statements; `--provenance=false` pushes the image alone.
#[test]
fn serial_kiln_host_sends_its_attestation_flags_as_buildx_does() {
    let Some((setup, context)) = start(crate::common::ready) else {
        return;
    };
    let (daemon, context) = (&setup.daemon, &context);
    let client_root = setup.dir.path().join("client-root");
    let repository = repository("host");
    let name = format!("127.0.0.1:5000/{repository}:attested");
    let build = |flags: &[&str], name: &str| {
        let mut args = vec!["build", "-o"];
        let output = push(name);
        args.push(&output);
        args.extend_from_slice(flags);
        args.push(context.to_str().unwrap());
        assert_ok(daemon.kiln(&client_root, &args, &[]));
    };
    build(&["--sbom=true", "--build-arg", "GREETING=hello"], &name);
    let index = raw(&format!("docker://{name}"));
    let (image, attestation) = entries(&index);
    let statements = statements(&repository, &attestation);
    let kinds: Vec<&str> = statements.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, [SPDX, SLSA]);
    check_provenance(&statements[1].1, image["digest"].as_str().unwrap());
    // mode=min: no LLB.
    let build_config = &statements[1].1["predicate"]["buildDefinition"]["internalParameters"];
    assert!(
        build_config.get("buildConfig").is_none(),
        "{build_config:#}"
    );

    let plain = format!("127.0.0.1:5000/{repository}:plain");
    build(&["--provenance=false"], &plain);
    let manifest = raw(&format!("docker://{plain}"));
    assert_eq!(
        manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{manifest:#}"
    );
}
