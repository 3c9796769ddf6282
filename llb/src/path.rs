//! Slash paths as Go's `path` package cleans them: the paths of LLB (file actions, git
//! subdirectories, source identifiers) are always `/`-separated, whatever the host.

/// Go's `path.Clean`: the shortest equivalent slash path (`.`, `..` and repeated `/` resolved;
/// `""` becomes `.`).
pub fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}
