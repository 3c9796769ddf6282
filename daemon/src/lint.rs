//! BuildKit's `frontend.lint` subrequest of the Dockerfile frontend (`buildctl build --opt
//! requestid=frontend.lint`, and `kiln --host … build --check`): the build checks run on the
//! client's Dockerfile, as `kiln build --check` runs them, and nothing is built. The answer is
//! BuildKit's lint result, in the solve's response: `result.json` (base64 of the JSON:
//! `warnings` with `ruleName`, `description`, `url`, `detail` and `location`, `sources` with
//! the Dockerfile, and `buildError` when the conversion failed), `result.txt` (the warnings as
//! buildx prints them, with the Dockerfile's lines) and `result.statuscode` (1 when there is
//! a warning or an error, else 0).

use std::collections::HashMap;

use base64::Engine as _;
use kiln_frontend::{ConvertError, LintWarning};
use serde_json::json;

/// The request id (`requestid`) of the build checks.
pub(crate) const LINT_REQUEST: &str = "frontend.lint";

/// The response keys of the lint result of `dockerfile` (named `file_name`), given what its
/// conversion with the build checks gave.
pub(crate) fn lint_result(
    dockerfile: &[u8],
    file_name: &str,
    converted: Result<Vec<LintWarning>, ConvertError>,
) -> HashMap<String, String> {
    let (mut warnings, error) = match converted {
        Ok(warnings) => (warnings, None),
        Err(ConvertError::Lint { rules, warnings }) => (
            warnings,
            Some(format!(
                "lint violation found for rules: {}",
                rules.join(", ")
            )),
        ),
        Err(ConvertError::Checked { error, warnings }) => (warnings, Some(error.to_string())),
        Err(error) => (Vec::new(), Some(error.to_string())),
    };
    warnings.sort_by_key(|w| w.location.start_line);
    let text: String = warnings.iter().map(|w| w.render(dockerfile)).collect();
    let listed: Vec<serde_json::Value> = warnings
        .iter()
        .map(|w| {
            let mut warning = json!({
                "ruleName": w.rule.name,
                "description": w.rule.description,
                "detail": w.message,
                "location": {
                    "ranges": [{
                        "start": {"line": w.location.start_line},
                        "end": {"line": w.location.end_line.max(w.location.start_line)},
                    }],
                },
            });
            if !w.rule.url.is_empty() {
                warning["url"] = json!(w.rule.url);
            }
            warning
        })
        .collect();
    let mut result = json!({
        "warnings": listed,
        "sources": [{
            "filename": file_name,
            "language": "Dockerfile",
            "data": base64::engine::general_purpose::STANDARD.encode(dockerfile),
        }],
    });
    if let Some(message) = &error {
        result["buildError"] = json!({"message": message, "location": {}});
    }
    let status = u8::from(!warnings.is_empty() || error.is_some());
    HashMap::from([
        (
            "result.json".to_owned(),
            base64::engine::general_purpose::STANDARD.encode(result.to_string()),
        ),
        ("result.txt".to_owned(), text),
        ("result.statuscode".to_owned(), status.to_string()),
        ("version".to_owned(), "1.0.0".to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint(dockerfile: &[u8]) -> HashMap<String, String> {
        let converted = kiln_frontend::convert(
            dockerfile,
            &kiln_frontend::ConvertOptions::default(),
            &kiln_frontend::testing::FakeResolver::default(),
        )
        .map(|c| c.warnings);
        lint_result(dockerfile, "Dockerfile", converted)
    }

    #[test]
    fn warnings_become_buildkits_lint_result() {
        let dockerfile = b"FROM scratch AS Base\nCMD run it\n";
        let result = lint(dockerfile);
        assert_eq!(result["result.statuscode"], "1");
        let json: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(&result["result.json"])
                .unwrap(),
        )
        .unwrap();
        let rules: Vec<&str> = json["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["ruleName"].as_str().unwrap())
            .collect();
        assert_eq!(rules, ["StageNameCasing", "JSONArgsRecommended"]);
        assert_eq!(
            json["warnings"][1]["location"]["ranges"][0]["start"]["line"],
            2
        );
        assert_eq!(
            json["warnings"][0]["detail"],
            "Stage name 'Base' should be lowercase"
        );
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(json["sources"][0]["data"].as_str().unwrap())
                .unwrap(),
            dockerfile
        );
        assert!(json.get("buildError").is_none());
        assert!(
            result["result.txt"].starts_with("\nWARNING: StageNameCasing - https://"),
            "{}",
            result["result.txt"]
        );

        let clean = lint(b"FROM scratch\nCMD [\"run\"]\n");
        assert_eq!(clean["result.statuscode"], "0");
        assert_eq!(clean["result.txt"], "");

        // A Dockerfile that does not convert: its error, and a failed status.
        let broken = lint(b"FROM scratch\nNOPE x\n");
        assert_eq!(broken["result.statuscode"], "1");
        let json: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(&broken["result.json"])
                .unwrap(),
        )
        .unwrap();
        assert!(
            json["buildError"]["message"]
                .as_str()
                .unwrap()
                .contains("unknown instruction"),
            "{json}"
        );
    }
}
