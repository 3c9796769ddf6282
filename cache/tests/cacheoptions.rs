//! The `--cache-to` / `--cache-from` grammar: buildx's forms and BuildKit's messages.

use std::path::PathBuf;

use kiln_cache::{
    CacheDestination, CacheExportRequest, CacheImportRequest, CacheMode, CacheOptionsEntry,
    Compression,
};

fn export(value: &str) -> CacheExportRequest {
    let mut requests = CacheExportRequest::parse_all(&[value]).unwrap();
    assert_eq!(requests.len(), 1, "{value}");
    requests.remove(0)
}

fn export_error(value: &str) -> String {
    CacheExportRequest::parse_all(&[value])
        .unwrap_err()
        .to_string()
}

fn import_error(value: &str) -> String {
    CacheImportRequest::parse_all(&[value])
        .unwrap_err()
        .to_string()
}

#[test]
fn registry_export_with_every_option() {
    let request = export(
        "type=registry,ref=127.0.0.1:5000/app:buildcache,mode=max,image-manifest=true,\
         oci-mediatypes=true,compression=zstd,compression-level=9,force-compression=true,\
         ignore-error=true",
    );
    assert_eq!(
        request,
        CacheExportRequest {
            destination: CacheDestination::Registry {
                reference: "127.0.0.1:5000/app:buildcache".to_owned()
            },
            mode: CacheMode::Max,
            image_manifest: true,
            oci_mediatypes: true,
            compression: Compression::Zstd { level: 9 },
            force_compression: true,
            ignore_error: true,
        }
    );
}

#[test]
fn export_defaults_are_buildkits() {
    let request = export("type=registry,ref=app");
    assert_eq!(
        request.destination,
        CacheDestination::Registry {
            reference: "docker.io/library/app:latest".to_owned()
        }
    );
    assert_eq!(request.mode, CacheMode::Min);
    assert!(request.image_manifest && request.oci_mediatypes);
    assert_eq!(request.compression, Compression::Gzip { level: 6 });
    assert!(!request.force_compression && !request.ignore_error);
    // Docker media types without image-manifest= mean the index form.
    let docker = export("type=registry,ref=app,oci-mediatypes=false");
    assert!(!docker.image_manifest && !docker.oci_mediatypes);
    // An empty force-compression= means true; an unknown mode is ignored as BuildKit does.
    let forced = export("type=inline,force-compression=,mode=everything,compression=uncompressed");
    assert!(forced.force_compression);
    assert_eq!(forced.mode, CacheMode::Min);
    assert_eq!(forced.destination, CacheDestination::Inline);
    assert_eq!(forced.compression, Compression::Uncompressed);
}

#[test]
fn local_export_and_import() {
    let request = export("type=local,dest=/tmp/cache dir,tag=v1,mode=max");
    assert_eq!(
        request.destination,
        CacheDestination::Local {
            dest: PathBuf::from("/tmp/cache dir"),
            tag: "v1".to_owned()
        }
    );
    assert_eq!(
        CacheImportRequest::parse_all(&["type=local,src=/c"]).unwrap(),
        [CacheImportRequest::Local {
            src: PathBuf::from("/c"),
            tag: "latest".to_owned(),
            digest: None
        }]
    );
    let digest = "sha256:2f59c729682289377222b58ac40ba483388d710069fcbd122d4c47a401aca480";
    assert_eq!(
        CacheImportRequest::parse_all(&[format!("type=local,src=/c,digest={digest}")]).unwrap(),
        [CacheImportRequest::Local {
            src: PathBuf::from("/c"),
            tag: "latest".to_owned(),
            digest: Some(digest.parse().unwrap())
        }]
    );
}

#[test]
fn short_form_is_a_registry_ref_and_lists_split() {
    let requests =
        CacheImportRequest::parse_all(&["127.0.0.1:5000/app:1,127.0.0.1:5000/app:2", "", "x/y"])
            .unwrap();
    let references: Vec<String> = requests
        .iter()
        .map(|r| match r {
            CacheImportRequest::Registry { reference } => reference.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        references,
        [
            "127.0.0.1:5000/app:1",
            "127.0.0.1:5000/app:2",
            "docker.io/x/y:latest"
        ]
    );
}

#[test]
fn quoted_fields_keys_case_and_duplicates() {
    let entries = CacheOptionsEntry::parse_all(&[
        r#"type=local,"src=/a,b",TAG=t"#,
        r#"type=local,"src=/a,b",TAG=t"#,
    ])
    .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].kind, "local");
    assert_eq!(entries[0].attrs["src"], "/a,b");
    assert_eq!(entries[0].attrs["tag"], "t");
}

#[test]
fn errors_use_buildx_and_buildkit_wording() {
    assert_eq!(export_error("type=registry,ref"), "invalid value ref");
    assert_eq!(
        export_error("ref=app,mode=max"),
        r#"type required for "ref=app,mode=max""#
    );
    assert_eq!(
        export_error("type=s4,bucket=b"),
        r#"unknown cache exporter: "s4""#
    );
    assert_eq!(
        import_error("type=inline"),
        "unknown cache importer: inline"
    );
    assert_eq!(export_error("type=registry,mode=max"), "missing ref");
    assert_eq!(import_error("type=registry,ref="), "missing ref");
    assert_eq!(
        export_error("type=registry,ref=app@sha256:nope"),
        r#"invalid reference "app@sha256:nope""#
    );
    assert_eq!(
        export_error("type=local,mode=max"),
        "local cache exporter requires dest"
    );
    assert_eq!(
        import_error("type=local,dest=/x"),
        "local cache importer requires src"
    );
    assert_eq!(
        import_error("type=local,src=/x,digest=sha256:nope"),
        "invalid digest sha256:nope"
    );
    assert_eq!(
        export_error("type=registry,ref=app,compression=estargz2"),
        "unsupported compression type estargz2"
    );
    assert_eq!(
        export_error("type=registry,ref=app,compression-level=high"),
        "non-integer value high specified for compression-level"
    );
    assert_eq!(
        export_error("type=registry,ref=app,compression-level=12"),
        "compression-level 12 is out of range for gzip (0 to 9)"
    );
    assert_eq!(
        export_error("type=registry,ref=app,force-compression=yes"),
        "non-bool value yes specified for force-compression"
    );
    assert_eq!(
        export_error("type=registry,ref=app,image-manifest=maybe"),
        r#"failed to parse image-manifest: invalid syntax "maybe""#
    );
    assert_eq!(
        export_error("type=registry,ref=app,oci-mediatypes=false,image-manifest=true"),
        "invalid configuration for remote cache, OCI mediatypes are required for image-manifest cache format"
    );
}
