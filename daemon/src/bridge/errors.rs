//! A frontend's error as the user sees it: its message, under the source lines it names
//! (BuildKit's `errdefs.Source` detail), rendered as kiln's own Dockerfile errors are.

use kiln_llb::pb::{Range, SourceInfo};
use prost::Message as _;

use crate::pb::google::rpc::Status;

/// BuildKit's `errdefs.Source`: the file and the line ranges an error is about.
#[derive(Clone, PartialEq, prost::Message)]
struct Source {
    #[prost(message, optional, tag = "1")]
    info: Option<SourceInfo>,
    #[prost(message, repeated, tag = "2")]
    ranges: Vec<Range>,
}

/// The type name of `errdefs.Source` in a status detail's type URL: protobuf, or (as
/// BuildKit's Go frontends send it) protobuf's JSON mapping under `…errdefs.Source+json`.
const SOURCE_TYPE: &str = "errdefs.Source";
const SOURCE_JSON_TYPE: &str = "errdefs.Source+json";

/// `errdefs.Source` in protobuf's JSON mapping: bytes in base64, 64-bit numbers maybe quoted.
fn source_from_json(value: &[u8]) -> Option<Source> {
    use base64::Engine as _;
    let json: serde_json::Value = serde_json::from_slice(value).ok()?;
    let number = |v: &serde_json::Value| -> i32 {
        v.as_i64()
            .or_else(|| v.as_str()?.parse().ok())
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or_default()
    };
    let info = &json["info"];
    let data = base64::engine::general_purpose::STANDARD
        .decode(info["data"].as_str().unwrap_or_default())
        .ok()?;
    let position = |p: &serde_json::Value| kiln_llb::pb::Position {
        line: number(&p["line"]),
        character: number(&p["character"]),
    };
    let ranges = json["ranges"]
        .as_array()?
        .iter()
        .map(|r| Range {
            start: Some(position(&r["start"])),
            end: Some(position(&r["end"])),
        })
        .collect();
    Some(Source {
        info: Some(SourceInfo {
            filename: info["filename"].as_str()?.to_owned(),
            data,
            ..SourceInfo::default()
        }),
        ranges,
    })
}

/// At most this many bytes of a frontend's message are kept.
const MAX_MESSAGE: usize = 64 << 10;

/// The source location of `ranges` in `info`: `file:line`, with the lines themselves.
fn location(info: &SourceInfo, ranges: &[Range]) -> Option<kiln_frontend::Location> {
    let range = ranges.first()?;
    let start = usize::try_from(range.start.as_ref()?.line).ok()?.max(1);
    let end = range
        .end
        .as_ref()
        .and_then(|p| usize::try_from(p.line).ok())
        .unwrap_or(start)
        .max(start);
    let text = String::from_utf8_lossy(&info.data);
    let source = text
        .lines()
        .skip(start - 1)
        .take(end - start + 1)
        .map(str::to_owned)
        .collect();
    Some(kiln_frontend::Location {
        file: info.filename.clone(),
        start_line: start,
        end_line: end,
        column: None,
        source,
    })
}

/// `file:line` of the first range, for a one-line warning.
pub(super) fn first_line(info: Option<&SourceInfo>, ranges: &[Range]) -> Option<String> {
    let location = location(info?, ranges)?;
    Some(format!("{}:{}", location.file, location.start_line))
}

/// The text of a frontend's error status: the source lines it names, then its message.
pub(super) fn describe(status: &Status) -> String {
    let mut message = status.message.clone();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" ...");
    }
    let source = status
        .details
        .iter()
        .find_map(|d| match d.type_url.rsplit('/').next() {
            Some(SOURCE_TYPE) => Source::decode(d.value.as_slice()).ok(),
            Some(SOURCE_JSON_TYPE) => source_from_json(&d.value),
            _ => None,
        });
    match source.and_then(|s| location(s.info.as_ref()?, &s.ranges)) {
        Some(location) => format!("{location}{message}"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_llb::pb::Position;

    fn range(start: i32, end: i32) -> Range {
        Range {
            start: Some(Position {
                line: start,
                character: 0,
            }),
            end: Some(Position {
                line: end,
                character: 0,
            }),
        }
    }

    #[test]
    fn an_error_with_a_source_detail_shows_the_lines() {
        let source = Source {
            info: Some(SourceInfo {
                filename: "Dockerfile".to_owned(),
                data: b"FROM busybox\nFOO bar\nRUN true\n".to_vec(),
                ..SourceInfo::default()
            }),
            ranges: vec![range(2, 2)],
        };
        let status = Status {
            code: 2,
            message: "dockerfile parse error on line 2: unknown instruction: FOO".to_owned(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/errdefs.Source".to_owned(),
                value: source.encode_to_vec(),
            }],
        };
        assert_eq!(
            describe(&status),
            "Dockerfile:2\n--------------------\n   2 | >>> FOO bar\n--------------------\n\
             dockerfile parse error on line 2: unknown instruction: FOO"
        );
        assert_eq!(
            first_line(source.info.as_ref(), &source.ranges).as_deref(),
            Some("Dockerfile:2")
        );
        // Without a detail, or with one that does not decode, the message alone.
        let plain = Status {
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/errdefs.Source".to_owned(),
                value: vec![0xff, 0xff],
            }],
            ..status
        };
        assert_eq!(
            describe(&plain),
            "dockerfile parse error on line 2: unknown instruction: FOO"
        );
    }

    #[test]
    fn a_json_source_detail_as_go_frontends_send_it() {
        // What BuildKit's Dockerfile frontend sends (its definition left out).
        let value = br#"{"info":{"filename":"Dockerfile","data":"RlJPTSBidXN5Ym94CkZST0JOSUNBVEUgbm93Cg==","language":"Dockerfile"},"ranges":[{"start":{"line":2},"end":{"line":"2"}}]}"#;
        let status = Status {
            code: 2,
            message: "unknown instruction: FROBNICATE".to_owned(),
            details: vec![prost_types::Any {
                type_url: "github.com/moby/buildkit/errdefs.Source+json".to_owned(),
                value: value.to_vec(),
            }],
        };
        assert_eq!(
            describe(&status),
            "Dockerfile:2\n--------------------\n   2 | >>> FROBNICATE now\n--------------------\n\
             unknown instruction: FROBNICATE"
        );
        let broken = Status {
            details: vec![prost_types::Any {
                type_url: "github.com/moby/buildkit/errdefs.Source+json".to_owned(),
                value: b"{\"info\": 7}".to_vec(),
            }],
            ..status
        };
        assert_eq!(describe(&broken), "unknown instruction: FROBNICATE");
    }

    #[test]
    fn hostile_ranges_and_huge_messages_are_bounded() {
        let info = SourceInfo {
            filename: "Dockerfile".to_owned(),
            data: b"one\ntwo\n".to_vec(),
            ..SourceInfo::default()
        };
        // Lines past the end or before the start give no source lines, and no panic.
        let far = location(&info, &[range(1_000_000, -5)]).unwrap();
        assert!(far.source.is_empty());
        assert_eq!(location(&info, &[range(-3, 0)]), None);
        assert_eq!(location(&info, &[]), None);
        let status = Status {
            code: 2,
            message: "é".repeat(MAX_MESSAGE),
            details: Vec::new(),
        };
        let text = describe(&status);
        assert!(text.len() <= MAX_MESSAGE + 4, "{}", text.len());
        assert!(text.ends_with(" ..."));
    }
}
