//! Config errors that name the file, the line and the key.

use std::path::{Path, PathBuf};

/// Why a config was refused. Every variant's message names the file; `Invalid` also
/// names the line (when known) and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}{}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default(), key.as_ref().map(|k| format!(", key `{k}`")).unwrap_or_default())]
    Invalid {
        /// The file, or "embedded default config".
        origin: String,
        line: Option<u64>,
        key: Option<String>,
        message: String,
    },
}

impl ConfigError {
    /// The dotted key this error is about, if any (`network.bootstrap_nodes[0]`).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => key.as_deref(),
            ConfigError::Read { .. } => None,
        }
    }

    /// The 1-based line in the file, if known.
    pub fn line(&self) -> Option<u64> {
        match self {
            ConfigError::Invalid { line, .. } => *line,
            ConfigError::Read { .. } => None,
        }
    }
}

/// The text a config came from, for turning positions into keys and keys into lines.
pub(super) struct Origin<'a> {
    path: Option<&'a Path>,
    keys: Vec<(u64, String)>,
}

impl<'a> Origin<'a> {
    pub(super) fn new(path: Option<&'a Path>, text: &str) -> Self {
        Origin {
            path,
            keys: index_keys(text),
        }
    }

    pub(super) fn path(&self) -> Option<&'a Path> {
        self.path
    }

    fn name(&self) -> String {
        match self.path {
            Some(p) => p.display().to_string(),
            None => "embedded default config".into(),
        }
    }

    /// The first line at which `key` (or one of its list items) is written.
    fn line_of(&self, key: &str) -> Option<u64> {
        self.keys
            .iter()
            .find(|(_, k)| k == key || k.strip_prefix(key).is_some_and(|r| r.starts_with('[')))
            .map(|(l, _)| *l)
    }

    fn key_at(&self, line: u64) -> Option<String> {
        self.keys
            .iter()
            .rev()
            .find(|(l, _)| *l <= line)
            .map(|(_, k)| k.clone())
    }

    pub(super) fn invalid(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: self.name(),
            line: self.line_of(key),
            key: Some(key.to_string()),
            message,
        }
    }

    pub(super) fn describe_key(&self, key: &str, message: &str) -> String {
        self.invalid(key, message.to_string()).to_string()
    }

    pub(super) fn yaml_error(&self, e: &serde_saphyr::Error) -> ConfigError {
        let line = e.location().map(|l| l.line()).filter(|l| *l > 0);
        let mut message = match e {
            serde_saphyr::Error::Message { msg, .. } => msg.clone(),
            other => strip_position(other.to_string().lines().next().unwrap_or("invalid YAML")),
        };
        let mut key = line.and_then(|l| self.key_at(l));
        if let Some((unknown, expected)) = parse_unknown_field(&message) {
            // The error points at the unknown key; name its parent section too.
            if let Some(k) = key.as_mut() {
                if let Some((parent, _)) = k.rsplit_once('.') {
                    *k = format!("{parent}.{unknown}");
                } else {
                    *k = unknown.clone();
                }
            }
            message = match suggest(&unknown, &expected) {
                Some(s) => format!("unknown key `{unknown}`; did you mean `{s}`?"),
                None => format!(
                    "unknown key `{unknown}`; expected one of {}",
                    expected
                        .iter()
                        .map(|e| format!("`{e}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
        }
        ConfigError::Invalid {
            origin: self.name(),
            line,
            key,
            message,
        }
    }
}

/// Drops the rendered "error: line 4 column 3: " prefix; we print the line ourselves.
fn strip_position(msg: &str) -> String {
    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
    match msg.split_once(": ") {
        Some((pos, rest)) if pos.starts_with("line ") && pos.contains(" column ") => {
            rest.to_string()
        }
        _ => msg.to_string(),
    }
}

/// Parses serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`").
fn parse_unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let start = msg.find("unknown field `")?;
    let rest = &msg[start + "unknown field `".len()..];
    let (unknown, rest) = rest.split_once('`')?;
    let list = rest
        .split_once("expected one of ")
        .or_else(|| rest.split_once("expected "))
        .map_or("", |(_, l)| l);
    let expected = list
        .split(',')
        .map(|e| e.trim().trim_matches('`').to_string())
        .filter(|e| !e.is_empty())
        .collect();
    Some((unknown.to_string(), expected))
}

/// The closest expected key, if it is close enough to be a typo.
fn suggest(unknown: &str, expected: &[String]) -> Option<String> {
    expected
        .iter()
        .map(|e| (strsim::damerau_levenshtein(unknown, e), e))
        .filter(|(d, e)| *d <= 2.max(e.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e.clone())
}

/// Maps each line of block-style YAML that starts a key or a list item to its dotted
/// path (`network.connection_limits.max_peers`, `network.bootstrap_nodes[1]`).
fn index_keys(text: &str) -> Vec<(u64, String)> {
    // (indent, key, next list index)
    let mut stack: Vec<(usize, String, usize)> = Vec::new();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i as u64 + 1;
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        if let Some(item) = trimmed.strip_prefix('-') {
            if !(item.is_empty() || item.starts_with(' ')) {
                continue;
            }
            // A list item belongs to the nearest key at this indent or shallower.
            while stack.last().is_some_and(|(ind, _, _)| *ind > indent) {
                stack.pop();
            }
            if let Some((top, parents)) = stack.split_last_mut() {
                let path = format!("{}[{}]", path_of(parents, &top.1), top.2);
                top.2 += 1;
                out.push((line_no, path));
            }
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        if key.is_empty() || key.contains(' ') {
            continue;
        }
        while stack.last().is_some_and(|(ind, _, _)| *ind >= indent) {
            stack.pop();
        }
        let path = path_of(&stack, key);
        stack.push((indent, key.to_string(), 0));
        out.push((line_no, path));
    }
    out
}

fn path_of(stack: &[(usize, String, usize)], key: &str) -> String {
    let mut p: Vec<&str> = stack.iter().map(|(_, k, _)| k.as_str()).collect();
    p.push(key);
    p.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_keys_and_list_items() {
        let text = "name: x\nnetwork:\n  # c\n  bootstrap_nodes:\n    - \"/a\"\n    - \"/b\"\n  connection_limits:\n    max_peers: 5\nport: 1\n";
        let keys = index_keys(text);
        assert_eq!(
            keys,
            vec![
                (1, "name".into()),
                (2, "network".into()),
                (4, "network.bootstrap_nodes".into()),
                (5, "network.bootstrap_nodes[0]".into()),
                (6, "network.bootstrap_nodes[1]".into()),
                (7, "network.connection_limits".into()),
                (8, "network.connection_limits.max_peers".into()),
                (9, "port".into()),
            ]
        );
    }

    #[test]
    fn list_items_at_key_indent() {
        let keys = index_keys("relay_nodes:\n- /a\n- /b\nport: 2\n");
        assert_eq!(keys[2], (3, "relay_nodes[1]".into()));
        assert_eq!(keys[3], (4, "port".into()));
    }

    #[test]
    fn suggests_close_keys_only() {
        let expected: Vec<String> = ["bootstrap_nodes", "relay_nodes", "enable_dht"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            suggest("bootstrap_node", &expected).as_deref(),
            Some("bootstrap_nodes")
        );
        assert_eq!(
            suggest("enabel_dht", &expected).as_deref(),
            Some("enable_dht")
        );
        assert_eq!(suggest("colour", &expected), None);
    }
}
