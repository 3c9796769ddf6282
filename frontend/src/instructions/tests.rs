use super::*;

#[test]
fn go_durations() {
    assert_eq!(parse_go_duration("5s"), Some(5_000_000_000));
    assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
    assert_eq!(parse_go_duration("1.5h"), Some(5_400_000_000_000));
    assert_eq!(parse_go_duration("50ns"), Some(50));
    assert_eq!(parse_go_duration("-1ms"), Some(-1_000_000));
    assert_eq!(parse_go_duration("0"), Some(0));
    assert_eq!(parse_go_duration(".5s"), Some(500_000_000));
    assert_eq!(parse_go_duration("3µs"), Some(3000));
    assert_eq!(parse_go_duration("10"), None);
    assert_eq!(parse_go_duration("s"), None);
    assert_eq!(parse_go_duration(""), None);
    assert_eq!(parse_go_duration("1d"), None);
    assert_eq!(parse_go_duration("9999999999999h"), None);
}

#[test]
fn stage_names() {
    assert!(is_valid_stage_name("build-1.x_y"));
    assert!(!is_valid_stage_name("1build"));
    assert!(!is_valid_stage_name("bu$ld"));
    assert!(!is_valid_stage_name(""));
}

#[test]
fn onbuild_strip() {
    assert_eq!(strip_onbuild("  onBuild   RUN x"), "RUN x");
    assert_eq!(strip_onbuild("RUN x"), "RUN x");
}
