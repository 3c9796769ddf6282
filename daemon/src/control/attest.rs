//! The attestations a `Solve` asks for: buildx's and buildctl's `attest:provenance` and
//! `attest:sbom` frontend attributes (read by kiln-exporters' [`AttestationRequest`], as
//! `kiln build` reads its flags; provenance is `mode=max` when the value names no mode, as
//! BuildKit's), and what the provenance says of the request: the frontend and its attributes
//! (BuildKit's `provenance.FilterArgs`), the local sources, secrets and SSH sockets the LLB
//! names, and the Dockerfile.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kiln_exporters::{AttestationRequest, RequestFacts};
use kiln_llb::{LoadedDefinition, pb};
use tonic::Status;

/// What the request's frontend attributes ask for; an invalid value is the client's error.
pub(super) fn requested(attrs: &HashMap<String, String>) -> Result<AttestationRequest, Status> {
    AttestationRequest::from_frontend_attrs(attrs)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The attributes the provenance records, as BuildKit's `provenance.FilterArgs`: without the
/// daemon's own (`platform`, `image-resolve-mode`, `cgroup-parent`, `cache-imports`) and the
/// attestation requests, and with the credentials of the contexts' URLs masked.
fn provenance_args(attrs: &HashMap<String, String>) -> BTreeMap<String, String> {
    let context_key = attrs
        .get("contextkey")
        .filter(|k| !k.is_empty())
        .map_or("context", String::as_str);
    attrs
        .iter()
        .filter(|(key, _)| {
            !matches!(
                key.as_str(),
                "platform" | "image-resolve-mode" | "cgroup-parent" | "cache-imports"
            ) && !key.starts_with("attest:")
        })
        .map(|(key, value)| {
            let value = if key == context_key || key.starts_with("context:") {
                redact_credentials(value)
            } else {
                value.clone()
            };
            (key.clone(), value)
        })
        .collect()
}

/// A URL with the user and password of its authority masked (`https://xxxxx:xxxxx@host/…`),
/// as BuildKit's `urlutil.RedactCredentials`; any other text as it is.
fn redact_credentials(value: &str) -> String {
    const MASK: &str = "xxxxx";
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return value.to_owned();
    };
    let masked = match user_info.split_once(':') {
        Some(("", _)) => format!(":{MASK}"),
        Some(_) => format!("{MASK}:{MASK}"),
        None if user_info.is_empty() => String::new(),
        None => MASK.to_owned(),
    };
    let at = if masked.is_empty() { "" } else { "@" };
    format!("{scheme}://{masked}{at}{host}{path}")
}

/// The names of the local sources (`local://NAME`) of `definitions`.
fn local_names<'a>(
    definitions: impl IntoIterator<Item = &'a LoadedDefinition>,
) -> BTreeSet<String> {
    definitions
        .into_iter()
        .flat_map(|definition| definition.ops())
        .filter_map(|op| match op.body() {
            Some(pb::op::Op::Source(source)) => source
                .identifier
                .strip_prefix("local://")
                .map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// What the provenance says of a build of `frontend` (empty: an LLB build) with `attrs`,
/// whose LLB is `definitions` and whose Dockerfile, read by the built-in frontend, is
/// `dockerfile`.
pub(super) fn request_facts<'a>(
    frontend: &str,
    attrs: &HashMap<String, String>,
    definitions: impl IntoIterator<Item = &'a LoadedDefinition> + Clone,
    dockerfile: Option<Vec<u8>>,
) -> RequestFacts {
    let mut locals = local_names(definitions.clone());
    let mut secrets = BTreeSet::new();
    let mut ssh = BTreeSet::new();
    for definition in definitions {
        secrets.extend(crate::secrets::secret_ids(definition));
        ssh.extend(crate::sshforward::ssh_ids(definition));
    }
    let config_path = (frontend == crate::frontend::DOCKERFILE).then(|| {
        // The Dockerfile is read from its own local, as the context is.
        let key = attrs
            .get("dockerfilekey")
            .filter(|k| !k.is_empty())
            .map_or("dockerfile", String::as_str);
        locals.insert(key.to_owned());
        crate::frontend::dockerfile_name(attrs).to_owned()
    });
    RequestFacts {
        frontend: frontend.to_owned(),
        args: provenance_args(attrs),
        locals: locals.into_iter().collect(),
        secrets: secrets.into_iter().collect(),
        ssh: ssh.into_iter().collect(),
        config_path,
        config_data: dockerfile,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provenance_names_what_the_request_and_its_llb_use() {
        let attrs: HashMap<String, String> = [
            ("filename", "app.Dockerfile"),
            ("build-arg:A", "1"),
            ("platform", "linux/arm64"),
            ("attest:provenance", "mode=max"),
            ("image-resolve-mode", "pull"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let definition =
            LoadedDefinition::from_definition(kiln_llb::local("assets").marshal()).unwrap();
        let facts = request_facts(
            crate::frontend::DOCKERFILE,
            &attrs,
            [&definition],
            Some(b"FROM scratch\n".to_vec()),
        );
        assert_eq!(facts.frontend, "dockerfile.v0");
        assert_eq!(
            facts.args.keys().collect::<Vec<_>>(),
            ["build-arg:A", "filename"]
        );
        assert_eq!(facts.locals, ["assets", "dockerfile"]);
        assert_eq!(facts.config_path.as_deref(), Some("app.Dockerfile"));
        // An LLB build: no frontend, no Dockerfile.
        // A context's credentials never reach the attestation.
        let mut attrs = attrs;
        attrs.insert(
            "context:src".to_owned(),
            "https://user:token@example.com/a.git#main".to_owned(),
        );
        let facts = request_facts(crate::frontend::GATEWAY, &attrs, [&definition], None);
        assert_eq!(
            facts.args["context:src"],
            "https://xxxxx:xxxxx@example.com/a.git#main"
        );
        for (url, redacted) in [
            ("https://token@host/p", "https://xxxxx@host/p"),
            ("https://:pw@host", "https://:xxxxx@host"),
            ("https://host/p?q=a@b", "https://host/p?q=a@b"),
            ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ] {
            assert_eq!(redact_credentials(url), redacted);
        }
        let facts = request_facts("", &HashMap::new(), [&definition], None);
        assert_eq!((facts.frontend.as_str(), facts.config_path), ("", None));
        assert_eq!(facts.locals, ["assets"]);
        assert_eq!(
            requested(&[("attest:provenance".to_owned(), "mode=bogus".to_owned())].into())
                .unwrap_err()
                .message(),
            "invalid provenance mode \"bogus\": expected min or max"
        );
    }
}
