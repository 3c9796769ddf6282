//! The image config and manifest of a set of layers.
//!
//! # Overview
//! 1. Start from the frontend's config (or a minimal one: linux/amd64).
//! 2. Set `rootfs.diff_ids` to the layers, and make `history` agree with them as BuildKit's
//!    exporter does: extra non-empty entries become empty from the bottom, missing ones are
//!    appended.
//! 3. With `SOURCE_DATE_EPOCH`, as BuildKit's exporter does: the base image's history entries
//!    (the leading entries equal to its history) keep their times; every later entry whose
//!    time is missing or after the epoch, and `created`, take the epoch.
//! 4. Serialise both documents with sorted keys, so equal inputs give equal bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use kiln_cache::{Digest, Image, Layer, Store, assemble, canonical_json};
use oci_spec::image::{
    Arch, History, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, Os, RootFsBuilder,
};
use serde::Deserialize;

use crate::error::Error;

/// How to assemble an image.
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    /// OCI media types (`true`) or docker's (`false`).
    pub oci_mediatypes: bool,
    /// `SOURCE_DATE_EPOCH`: the `created` time of the image and of every history entry.
    pub source_date_epoch: Option<i64>,
    /// The build's time (seconds since the epoch) for `created` when neither
    /// `SOURCE_DATE_EPOCH` nor the config sets it (default: now). Pass the same time to every
    /// output of one build so they describe the same image.
    pub build_time: Option<i64>,
    /// The histories of the images the result may be built on ([`base_histories`]).
    /// With `SOURCE_DATE_EPOCH`, the leading history entries equal to the best-matching one's
    /// keep their times, as BuildKit keeps the base image's.
    pub base_histories: Vec<Vec<History>>,
    /// When each layer was made (seconds since the epoch, bottom first), where known: the
    /// time of a history entry that has none, as BuildKit takes it from the layer's cache
    /// record, so that an image rebuilt from the cache is the same image.
    pub layer_times: Vec<Option<i64>>,
}

#[derive(Deserialize)]
struct HistoryDoc {
    /// `null` in configs the classic builder and `docker import` wrote.
    #[serde(default)]
    history: Option<Vec<History>>,
}

/// The histories of the stored images a result on the snapshot chain `keys` (bottom first) is
/// built on: those whose top snapshot is the highest of `keys` that is any image's top. These
/// are the candidates for [`ImageOptions::base_histories`].
pub fn base_histories(store: &Store, keys: &[String]) -> Result<Vec<Vec<History>>, Error> {
    let images = store.images()?;
    for key in keys.iter().rev() {
        let mut histories = Vec::new();
        for image in images
            .iter()
            .filter(|i| i.chain_id.is_some_and(|c| c.to_string() == *key))
        {
            let bytes = store.read_blob(&image.config)?;
            let config: HistoryDoc = serde_json::from_slice(&bytes)
                .map_err(|e| Error::json(format!("config {}", image.config), e))?;
            histories.push(config.history.unwrap_or_default());
        }
        if !histories.is_empty() {
            return Ok(histories);
        }
    }
    Ok(Vec::new())
}

/// Formats seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`); times beyond
/// what RFC 3339 can write are clamped to its range.
pub fn rfc3339(seconds: i64) -> String {
    let seconds = seconds.clamp(
        jiff::Timestamp::MIN.as_second(),
        jiff::Timestamp::MAX.as_second(),
    );
    jiff::Timestamp::from_second(seconds)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Seconds since the epoch of an RFC 3339 time (`2023-11-14T22:13:20.5+01:00`), and whether
/// it has a non-zero fraction of a second.
fn parse_rfc3339(text: &str) -> Option<(i64, bool)> {
    let time: jiff::Timestamp = text.parse().ok()?;
    // Whole seconds rounded down, as the fraction is then always positive.
    match time.subsec_nanosecond() {
        n if n < 0 => Some((time.as_second() - 1, true)),
        n => Some((time.as_second(), n != 0)),
    }
}

/// Whether a parsed time is after `epoch` (seconds).
fn later_than((seconds, fraction): (i64, bool), epoch: i64) -> bool {
    seconds > epoch || (seconds == epoch && fraction)
}

fn now_rfc3339() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    rfc3339(now)
}

/// The minimal config of an image without a frontend config (`--llb` builds).
pub fn minimal_config() -> ImageConfiguration {
    ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .rootfs(RootFsBuilder::default().build().unwrap_or_default())
        .build()
        .expect("architecture, os and rootfs are set")
}

/// Makes `history` agree with `layer_count` layers, as BuildKit's exporter does; an entry
/// appended for layer `i` is dated `created(i)`.
fn fix_history(history: &mut Vec<History>, layer_count: usize, created: impl Fn(usize) -> String) {
    let mut non_empty = history
        .iter()
        .filter(|h| !h.empty_layer().unwrap_or(false))
        .count();
    // More history layers than layers: mark entries empty from the bottom.
    for entry in history.iter_mut() {
        if non_empty <= layer_count {
            break;
        }
        if !entry.empty_layer().unwrap_or(false) {
            entry.set_empty_layer(Some(true));
            non_empty -= 1;
        }
    }
    // Fewer: the base image's layers have no entries in a config made from scratch; append
    // one entry per missing layer.
    while non_empty < layer_count {
        history.push(
            HistoryBuilder::default()
                .created(created(non_empty))
                .created_by("kiln")
                .comment("exporter")
                .build()
                .expect("a history entry has no required fields"),
        );
        non_empty += 1;
    }
}

/// Dates the entries of `history` that have no time, as BuildKit's exporter does: an entry
/// of a layer by the layer's time (`layer_time`), an empty one by the next dated entry (or
/// the last one before it).
fn date_history(history: &mut [History], layer_time: impl Fn(usize) -> Option<String>) {
    let mut layer = 0;
    for entry in history.iter_mut() {
        if entry.empty_layer().unwrap_or(false) {
            continue;
        }
        if entry.created().is_none() {
            entry.set_created(layer_time(layer));
        }
        layer += 1;
    }
    let mut next: Option<String> = None;
    let mut filled = Vec::with_capacity(history.len());
    for entry in history.iter().rev() {
        if let Some(time) = entry.created() {
            next = Some(time.clone());
        }
        filled.push(next.clone());
    }
    filled.reverse();
    let mut previous: Option<String> = None;
    for (entry, next) in history.iter_mut().zip(filled) {
        match entry.created() {
            Some(time) => previous = Some(time.clone()),
            None => {
                entry.set_created(next.or_else(|| previous.clone()));
            }
        }
    }
}

/// Fills `config` in for the layers of `diff_ids` (diff IDs, history, created).
pub fn finish_config(
    mut config: ImageConfiguration,
    diff_ids: &[Digest],
    options: &ImageOptions,
) -> ImageConfiguration {
    let build_time = options.build_time.map_or_else(now_rfc3339, rfc3339);
    let layer_time = |layer: usize| {
        options
            .layer_times
            .get(layer)
            .copied()
            .flatten()
            .map(rfc3339)
    };
    config
        .rootfs_mut()
        .set_diff_ids(diff_ids.iter().map(ToString::to_string).collect());
    let mut history = config.history().clone().unwrap_or_default();
    fix_history(&mut history, diff_ids.len(), |layer| {
        layer_time(layer).unwrap_or_else(|| build_time.clone())
    });
    if options.source_date_epoch.is_none() {
        // Under SOURCE_DATE_EPOCH every undated entry takes the epoch instead (below).
        date_history(&mut history, layer_time);
    }
    let created = match options.source_date_epoch {
        // A `created` the config sets is clamped; a missing one is the epoch.
        Some(epoch) => match config.created() {
            Some(time) if parse_rfc3339(time).is_some_and(|t| !later_than(t, epoch)) => {
                time.clone()
            }
            _ => rfc3339(epoch),
        },
        // As BuildKit: the config's own, else the newest history entry's (so that an image
        // rebuilt from the cache is the same), else the build's time.
        None => config
            .created()
            .clone()
            .or_else(|| history.iter().rev().find_map(|h| h.created().clone()))
            .unwrap_or_else(|| build_time.clone()),
    };
    config.set_created(Some(created.clone()));
    if let Some(epoch) = options.source_date_epoch {
        let base = options
            .base_histories
            .iter()
            .map(|base| {
                history
                    .iter()
                    .zip(base)
                    .take_while(|(ours, theirs)| ours == theirs)
                    .count()
            })
            .max()
            .unwrap_or(0);
        let epoch_time = rfc3339(epoch);
        for entry in history.iter_mut().skip(base) {
            let clamp = entry
                .created()
                .as_deref()
                .and_then(parse_rfc3339)
                .is_none_or(|t| later_than(t, epoch));
            if clamp {
                entry.set_created(Some(epoch_time.clone()));
            }
        }
    } else {
        for entry in &mut history {
            if entry.created().is_none() {
                entry.set_created(Some(created.clone()));
            }
        }
    }
    config.set_history(Some(history));
    config
}

/// Builds the image of `layers`: the finished config plus the manifest.
pub fn build_image(
    layers: Vec<Layer>,
    config: Option<ImageConfiguration>,
    options: &ImageOptions,
) -> Result<Image, Error> {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
    let config = finish_config(config.unwrap_or_else(minimal_config), &diff_ids, options);
    let bytes = canonical_json(&config, "the image config")?;
    Ok(assemble(&bytes, layers, options.oci_mediatypes)?)
}

/// Copies the keys of `original` that `value` lacks (docker's `Healthcheck`, `Shell`,
/// `OnBuild`, ... which the OCI types do not model), recursively through objects.
fn merge_missing(value: &mut serde_json::Value, original: &serde_json::Value) {
    let (serde_json::Value::Object(target), serde_json::Value::Object(source)) = (value, original)
    else {
        return;
    };
    for (key, from) in source {
        match target.get_mut(key) {
            Some(to) => merge_missing(to, from),
            None if !from.is_null() => {
                target.insert(key.clone(), from.clone());
            }
            None => {}
        }
    }
}

/// Builds the image of `layers` from a config given as JSON (the frontend's), keeping fields
/// the OCI types do not model.
pub fn build_image_from_json(
    layers: Vec<Layer>,
    config: &serde_json::Value,
    options: &ImageOptions,
) -> Result<Image, Error> {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
    let bytes = image_config(&diff_ids, Some(config), options)?;
    Ok(assemble(&bytes, layers, options.oci_mediatypes)?)
}

/// The config bytes of the image of the layers of `diff_ids`: the frontend's config (as
/// JSON, keeping fields the OCI types do not model) or a minimal one, finished. The manifest
/// is made from them and the layer blobs ([`kiln_cache::assemble`]).
pub fn image_config(
    diff_ids: &[Digest],
    config: Option<&serde_json::Value>,
    options: &ImageOptions,
) -> Result<Vec<u8>, Error> {
    let Some(config) = config else {
        let config = finish_config(minimal_config(), diff_ids, options);
        return Ok(canonical_json(&config, "the image config")?);
    };
    let mut parsed_input = config.clone();
    if let serde_json::Value::Object(map) = &mut parsed_input {
        // The OCI type requires these; the frontend may leave them empty.
        for (key, default) in [("architecture", "amd64"), ("os", "linux")] {
            if map
                .get(key)
                .and_then(|v| v.as_str())
                .is_none_or(str::is_empty)
            {
                map.insert(key.to_owned(), default.into());
            }
        }
        map.entry("rootfs")
            .or_insert_with(|| serde_json::json!({"type": "layers", "diff_ids": []}));
    }
    let parsed: ImageConfiguration = serde_json::from_value(parsed_input.clone())
        .map_err(|e| Error::json("the image config", e))?;
    let finished = finish_config(parsed, diff_ids, options);
    let mut value =
        serde_json::to_value(&finished).map_err(|e| Error::json("the image config", e))?;
    merge_missing(&mut value, &parsed_input);
    Ok(canonical_json(&value, "the image config")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_cache::{MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_OCI_CONFIG};

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // `date -u -d @1700000000 +%FT%TZ`
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_825_600), "2000-02-29T12:00:00Z");
    }

    fn layer(n: u8) -> Layer {
        Layer {
            digest: Digest::from_bytes(&[n]),
            size: 10,
            diff_id: Digest::from_bytes(&[n, n]),
            media_type: MEDIA_TYPE_LAYER_GZIP.to_owned(),
            snapshot: None,
            source_date_epoch: None,
        }
    }

    fn ids(layers: &[Layer]) -> Vec<Digest> {
        layers.iter().map(|l| l.diff_id).collect()
    }

    /// The creation times of the history entries of `config`, each one set.
    fn history_times(config: &ImageConfiguration) -> Vec<String> {
        config
            .history()
            .as_ref()
            .unwrap()
            .iter()
            .map(|h| h.created().clone().unwrap())
            .collect()
    }

    fn entry(by: &str, empty: bool) -> History {
        let mut h = HistoryBuilder::default().created_by(by).build().unwrap();
        if empty {
            h.set_empty_layer(Some(true));
        }
        h
    }

    #[test]
    fn undated_history_takes_its_layers_times_and_the_image_the_newest() {
        let mut config = minimal_config();
        let mut base = entry("FROM base", false);
        base.set_created(Some("2001-01-01T00:00:00Z".to_owned()));
        config.set_history(Some(vec![
            base,
            entry("ENV x", true),
            entry("RUN one", false),
            entry("ENV y", true),
        ]));
        let options = ImageOptions {
            build_time: Some(1_800_000_000),
            layer_times: vec![
                Some(1_000_000_000),
                Some(1_700_000_000),
                Some(1_700_000_100),
            ],
            ..ImageOptions::default()
        };
        // Three layers, two entries: one appended for the third layer, dated by it.
        let fixed = finish_config(config, &ids(&[layer(1), layer(2), layer(3)]), &options);
        let times = history_times(&fixed);
        assert_eq!(
            times,
            [
                "2001-01-01T00:00:00Z",
                // An empty entry: the next dated one's time.
                "2023-11-14T22:13:20Z",
                "2023-11-14T22:13:20Z",
                // The entry appended for the third layer comes after it.
                "2023-11-14T22:15:00Z",
                "2023-11-14T22:15:00Z",
            ]
        );
        assert_eq!(fixed.created().as_deref(), Some("2023-11-14T22:15:00Z"));
    }

    #[test]
    fn history_is_fixed_up_to_match_the_layers() {
        let mut config = minimal_config();
        config.set_history(Some(vec![
            entry("FROM a", false),
            entry("ENV x", true),
            entry("RUN one", false),
            entry("RUN two", false),
        ]));
        let options = ImageOptions {
            source_date_epoch: Some(0),
            ..ImageOptions::default()
        };
        // Two layers, three non-empty entries: the bottom one becomes empty.
        let fixed = finish_config(config.clone(), &ids(&[layer(1), layer(2)]), &options);
        let empties: Vec<bool> = fixed
            .history()
            .as_ref()
            .unwrap()
            .iter()
            .map(|h| h.empty_layer().unwrap_or(false))
            .collect();
        assert_eq!(empties, [true, true, false, false]);
        // Five layers: two entries are appended.
        let fixed = finish_config(
            config,
            &ids(&(1..=5).map(layer).collect::<Vec<_>>()),
            &options,
        );
        let history = fixed.history().as_ref().unwrap();
        assert_eq!(history.len(), 6);
        assert!(
            history
                .iter()
                .all(|h| h.created().as_deref() == Some("1970-01-01T00:00:00Z"))
        );
        assert_eq!(fixed.rootfs().diff_ids().len(), 5);
        assert_eq!(fixed.created().as_deref(), Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn source_date_epoch_clamps_later_history_times() {
        let mut config = minimal_config();
        let mut old = entry("FROM base", false);
        old.set_created(Some("1999-01-01T00:00:00Z".to_owned()));
        let mut new = entry("RUN x", false);
        new.set_created(Some("2030-01-01T00:00:00Z".to_owned()));
        config.set_history(Some(vec![old, new]));
        let options = ImageOptions {
            source_date_epoch: Some(1_700_000_000),
            ..ImageOptions::default()
        };
        let fixed = finish_config(config, &ids(&[layer(1), layer(2)]), &options);
        let times = history_times(&fixed);
        assert_eq!(times, ["1999-01-01T00:00:00Z", "2023-11-14T22:13:20Z"]);
    }

    #[test]
    fn the_base_images_history_keeps_its_times_as_in_buildkit() {
        let dated = |by: &str, time: &str| {
            let mut h = entry(by, false);
            h.set_created(Some(time.to_owned()));
            h
        };
        let base = vec![
            dated("FROM base", "2030-01-01T00:00:00Z"),
            dated("CMD base", "2031-06-01T12:00:00.5+02:00"),
        ];
        let mut config = minimal_config();
        let mut history = base.clone();
        history.push(dated("RUN ours", "2032-01-01T00:00:00Z"));
        history.push(dated("RUN older", "2001-01-01T00:00:00Z"));
        config.set_history(Some(history));
        config.set_created(Some("2000-01-01T00:00:00Z".to_owned()));
        let layers: Vec<Layer> = (1..=4).map(layer).collect();
        let times = |options: &ImageOptions| {
            let fixed = finish_config(config.clone(), &ids(&layers), options);
            let times = history_times(&fixed);
            (times, fixed.created().clone().unwrap())
        };
        let epoch = "2023-11-14T22:13:20Z";
        // Without the base image: every later time is clamped, an earlier one kept.
        let mut options = ImageOptions {
            source_date_epoch: Some(1_700_000_000),
            ..ImageOptions::default()
        };
        let (history, created) = times(&options);
        assert_eq!(history, [epoch, epoch, epoch, "2001-01-01T00:00:00Z"]);
        // An earlier `created` stays.
        assert_eq!(created, "2000-01-01T00:00:00Z");
        // With it (and an unrelated candidate): the base image's entries keep their times.
        options.base_histories = vec![vec![dated("FROM other", epoch)], base.clone()];
        let (history, _) = times(&options);
        assert_eq!(
            history,
            [
                "2030-01-01T00:00:00Z",
                "2031-06-01T12:00:00.5+02:00",
                epoch,
                "2001-01-01T00:00:00Z"
            ]
        );
        // Once an entry differs, later ones count as the build's even if they match.
        let mut diverged = base;
        diverged[0].set_comment(Some("changed".to_owned()));
        options.base_histories = vec![diverged];
        assert_eq!(times(&options).0[1], epoch);
    }

    #[test]
    fn rfc3339_times_parse_with_fractions_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, false)));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20Z"),
            Some((1_700_000_000, false))
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.25+01:00"),
            Some((1_700_000_000, true))
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T12:00:00.000Z"),
            Some((951_825_600, false))
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert!(later_than((1_700_000_000, true), 1_700_000_000));
        assert!(!later_than((1_700_000_000, false), 1_700_000_000));
    }

    #[test]
    fn json_configs_keep_docker_fields() {
        let config = serde_json::json!({
            "architecture": "",
            "os": "",
            "config": {"Cmd": ["sh"], "Shell": ["/bin/bash", "-c"], "Labels": {"b": "2", "a": "1"}},
            "history": [{"created_by": "RUN x"}],
        });
        let options = ImageOptions {
            oci_mediatypes: true,
            source_date_epoch: Some(0),
            build_time: None,
            base_histories: Vec::new(),
            layer_times: Vec::new(),
        };
        let image = build_image_from_json(vec![layer(1)], &config, &options).unwrap();
        let text = String::from_utf8(image.config.clone()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["config"]["Shell"][0], "/bin/bash");
        assert_eq!(value["config"]["Cmd"][0], "sh");
        assert_eq!(value["architecture"], "amd64");
        assert_eq!(value["history"][0]["created"], "1970-01-01T00:00:00Z");
        assert!(
            text.find("\"a\"").unwrap() < text.find("\"b\"").unwrap(),
            "{text}"
        );
    }

    #[test]
    fn manifests_are_deterministic_and_name_the_config() {
        let options = ImageOptions {
            oci_mediatypes: true,
            source_date_epoch: Some(5),
            build_time: None,
            base_histories: Vec::new(),
            layer_times: Vec::new(),
        };
        let a = build_image(vec![layer(1)], None, &options).unwrap();
        let b = build_image(vec![layer(1)], None, &options).unwrap();
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.config, b.config);
        let manifest: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(
            manifest["config"]["digest"],
            Digest::from_bytes(&a.config).to_string()
        );
        assert_eq!(manifest["config"]["mediaType"], MEDIA_TYPE_OCI_CONFIG);
        assert_eq!(manifest["layers"][0]["mediaType"], MEDIA_TYPE_LAYER_GZIP);
        let config: serde_json::Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            Digest::from_bytes(&[1, 1]).to_string()
        );
        let docker = build_image(
            vec![layer(1)],
            None,
            &ImageOptions {
                oci_mediatypes: false,
                ..options
            },
        )
        .unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&docker.manifest).unwrap();
        assert_eq!(manifest["mediaType"], MEDIA_TYPE_DOCKER_MANIFEST);
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }
}
