//! What a frontend returns: its one result (a default ref, or one ref by platform where
//! kiln asked for one platform) and that platform's metadata under the plain keys.

use std::collections::HashMap;

use super::service::{Bridge, Returned};
use crate::pb::gateway::{Ref as PbRef, Result as PbResult, result};

/// The result a frontend returned: its default ref, or its one ref by platform (kiln asks a
/// frontend for one platform at a time; a frontend may still answer with a map, as BuildKit's
/// Dockerfile frontend does when asked for `multi-platform`), and its metadata, the keys of
/// that platform (`containerimage.config/PLATFORM`) under their plain names.
pub(super) fn returned_result(bridge: &Bridge, result: PbResult) -> Result<Returned, String> {
    let mut metadata = result.metadata;
    let id = match result.result {
        Some(result::Result::Ref(PbRef { id, .. }) | result::Result::RefDeprecated(id)) => id,
        None => String::new(),
        Some(result::Result::Refs(map)) => {
            let (platform, id) = one_platform(map.refs.into_iter().map(|(k, r)| (k, r.id)))?;
            lift_platform_keys(&mut metadata, &platform);
            id
        }
        Some(result::Result::RefsDeprecated(map)) => {
            let (platform, id) = one_platform(map.refs.into_iter())?;
            lift_platform_keys(&mut metadata, &platform);
            id
        }
    };
    bridge.returned_ref(&id, metadata)
}

/// The one entry of a result by platform.
fn one_platform(
    mut refs: impl Iterator<Item = (String, String)>,
) -> Result<(String, String), String> {
    match (refs.next(), refs.next()) {
        (Some(entry), None) => Ok(entry),
        (None, _) => Err("the frontend returned a result by platform without any".to_owned()),
        (Some(_), Some(_)) => Err(
            "the frontend returned results for several platforms where kiln asked for one"
                .to_owned(),
        ),
    }
}

/// Gives the metadata keys of `platform` (`KEY/PLATFORM`) their plain names (`KEY`).
fn lift_platform_keys(metadata: &mut HashMap<String, Vec<u8>>, platform: &str) {
    let suffix = format!("/{platform}");
    let lifted: Vec<(String, Vec<u8>)> = metadata
        .iter()
        .filter_map(|(key, value)| {
            key.strip_suffix(&suffix)
                .map(|plain| (plain.to_owned(), value.clone()))
        })
        .collect();
    metadata.extend(lifted);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_by_platform_gives_its_one_entry_and_that_platform_s_keys() {
        let entry = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            one_platform([entry("linux/arm64", "r1")].into_iter()).unwrap(),
            entry("linux/arm64", "r1")
        );
        assert_eq!(
            one_platform(std::iter::empty()).unwrap_err(),
            "the frontend returned a result by platform without any"
        );
        assert_eq!(
            one_platform([entry("linux/amd64", "a"), entry("linux/arm64", "b")].into_iter())
                .unwrap_err(),
            "the frontend returned results for several platforms where kiln asked for one"
        );
        let mut metadata: HashMap<String, Vec<u8>> = [
            (
                "containerimage.config/linux/arm64".to_owned(),
                b"{}".to_vec(),
            ),
            (
                "containerimage.config/linux/amd64".to_owned(),
                b"x".to_vec(),
            ),
            ("refs.platforms".to_owned(), b"[]".to_vec()),
        ]
        .into();
        lift_platform_keys(&mut metadata, "linux/arm64");
        assert_eq!(metadata["containerimage.config"], b"{}");
        assert_eq!(metadata.len(), 4);
    }
}
