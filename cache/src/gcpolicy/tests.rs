use super::*;
use crate::registry::Config;

fn parse(text: &str) -> Result<GcConfig, String> {
    Config::parse(text, Path::new("kiln.toml"))
        .map(|c| c.gc)
        .map_err(|e| {
            let source = std::error::Error::source(&e).map(ToString::to_string);
            source.unwrap_or_default()
        })
}

#[test]
fn go_durations() {
    assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
    assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5_400));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    for bad in ["", "10", "3d", "h", "1h-2m"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse_duration("3d").unwrap_err().to_string(),
        "unknown unit \"d\" in \"3d\" (use ns, us, ms, s, m or h)"
    );
}

#[test]
fn docker_byte_sizes() {
    assert_eq!(parse_size("2048").unwrap(), 2048);
    assert_eq!(parse_size("512mb").unwrap(), 512 << 20);
    assert_eq!(parse_size("10GB").unwrap(), 10 << 30);
    assert_eq!(parse_size("1.5k").unwrap(), 1536);
    assert_eq!(parse_size("3 GiB").unwrap(), 3 << 30);
    for bad in ["", "lots", "5x", "-1"] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
    assert_eq!(DiskSpace::parse("30%").unwrap(), DiskSpace::Percent(30));
    assert_eq!(
        DiskSpace::parse("130%").unwrap_err().to_string(),
        "invalid percentage \"130%\": expected 0% to 100%"
    );
}

/// Two policies, the second in BuildKit's camelCase.
const POLICIES: &str = r#"
[gc]
enabled = true

[[gc.policy]]
filters = ["type==exec.cachemount"]
keep-duration = "48h"
max-used-space = "10GB"

[[gc.policy]]
all = true
keepDuration = 172800
reservedSpace = "512MB"
minFreeSpace = "20%"
"#;

#[test]
fn policies_parse_with_buildkits_names() {
    let gc = parse(&format!("{POLICIES}keepBytes = 1024\n"));
    // keepBytes and reservedSpace are one setting: naming both is a duplicate.
    assert!(gc.unwrap_err().contains("duplicate"));
    let gc = parse(POLICIES).unwrap();
    assert!(gc.enabled);
    assert_eq!(
        gc.policy,
        [
            GcPolicy {
                filters: vec!["exec.cachemount".to_owned()],
                keep_duration: Some(Duration::from_secs(48 * 3600)),
                max_used_space: Some(DiskSpace::Bytes(10 << 30)),
                ..GcPolicy::default()
            },
            GcPolicy {
                all: true,
                keep_duration: Some(Duration::from_secs(48 * 3600)),
                reserved_space: Some(DiskSpace::Bytes(512 << 20)),
                min_free_space: Some(DiskSpace::Percent(20)),
                ..GcPolicy::default()
            },
        ]
    );
    assert_eq!(gc.policies(1 << 40), gc.policy);
}

#[test]
fn bad_values_say_what_is_wrong() {
    for (text, message) in [
        (
            "[[gc.policy]]\nkeep-duration = \"3d\"\n",
            "unknown unit \"d\" in \"3d\" (use ns, us, ms, s, m or h)",
        ),
        (
            "[[gc.policy]]\nmax-used-space = \"lots\"\n",
            "no number at \"lots\"",
        ),
        (
            "[[gc.policy]]\nmax-used-space = \"10XB\"\n",
            "unknown unit in \"10XB\" (use b, k, m, g, t or p)",
        ),
        (
            "[[gc.policy]]\nfilters = [\"until=24h\"]\n",
            "unsupported filter \"until=24h\": expected type==TYPE",
        ),
        (
            "[[gc.policy]]\nfilters = [\"type==source.image\"]\n",
            "unknown cache type \"source.image\"",
        ),
        (
            "[[gc.policy]]\nkeep-storage = 1\n",
            "unknown field `keep-storage`",
        ),
    ] {
        let err = parse(text).unwrap_err();
        assert!(err.contains(message), "{text}: {err}");
    }
}

#[test]
fn default_policies_follow_buildkit() {
    let gc = GcConfig {
        enabled: true,
        ..GcConfig::default()
    };
    // On a 50 GB file system: reserve 10% (5 GB, rounded up to whole GB), use at most 80%,
    // keep 20% free.
    let policies = gc.policies(50_000_000_000);
    assert_eq!(policies.len(), 4);
    assert_eq!(
        policies[0].filters,
        ["source.local", "exec.cachemount", "source.git.checkout"]
    );
    assert_eq!(
        policies[0].keep_duration,
        Some(Duration::from_secs(48 * 3600))
    );
    assert_eq!(
        policies[0].max_used_space,
        Some(DiskSpace::Bytes(512_000_000))
    );
    assert_eq!(
        policies[1].keep_duration,
        Some(Duration::from_secs(60 * 86400))
    );
    assert!(policies[3].all);
    for policy in &policies[1..] {
        assert_eq!(policy.reserved_space, Some(DiskSpace::Percent(10)));
        assert_eq!(policy.max_used_space, Some(DiskSpace::Percent(80)));
        assert_eq!(policy.min_free_space, Some(DiskSpace::Percent(20)));
    }
    assert_eq!(DiskSpace::Percent(10).bytes(50_000_000_000), 5_000_000_000);
    // On a 10 TB one the caps apply.
    let policies = gc.policies(10_000_000_000_000);
    assert_eq!(
        policies[2].reserved_space,
        Some(DiskSpace::Bytes(10_000_000_000))
    );
    assert_eq!(
        policies[2].max_used_space,
        Some(DiskSpace::Bytes(100_000_000_000))
    );
}

#[test]
fn keep_limits_as_buildkit_computes_them() {
    assert_eq!(keep_limit(100, 0, None, None, None), None);
    assert_eq!(keep_limit(100, 0, Some(30), None, None), Some(30));
    assert_eq!(keep_limit(100, 0, None, Some(60), None), Some(60));
    assert_eq!(keep_limit(100, 0, Some(80), Some(60), None), Some(80));
    // 50 bytes short of the free space wanted: keep 50 of 100.
    assert_eq!(keep_limit(100, 10, None, None, Some(60)), Some(50));
    assert_eq!(keep_limit(100, 10, None, Some(40), Some(60)), Some(40));
    // Enough free space: nothing to remove for it.
    assert_eq!(keep_limit(100, 70, None, None, Some(60)), Some(100));
}

#[test]
fn prune_filters_narrow_the_prune() {
    let mut options = PruneOptions::default();
    options.add_filter("until=48h").unwrap();
    options.add_filter("type==exec.cachemount").unwrap();
    assert_eq!(options.older_than, Some(Duration::from_secs(48 * 3600)));
    assert_eq!(options.kind, Some(CacheKind::CacheMount));
    let err = |filter: &str| PruneOptions::default().add_filter(filter).unwrap_err();
    assert_eq!(
        err("label=x").to_string(),
        "unsupported filter \"label\": only until=DURATION and type=TYPE are supported"
    );
    assert_eq!(
        err("until").to_string(),
        "invalid filter \"until\": expected KEY=VALUE"
    );
    assert_eq!(
        err("type=source.git.checkout").to_string(),
        "unsupported type in filter \"type=source.git.checkout\": expected regular, exec.cachemount or source.local"
    );
    let bad_duration = err("until=3d");
    assert_eq!(
        bad_duration.to_string(),
        "invalid duration in filter \"until=3d\""
    );
    assert!(std::error::Error::source(&bad_duration).is_some());
}
