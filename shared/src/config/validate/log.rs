//! The `log` section: level (or filter) and output format.

use super::Checker;
use crate::config::{ConfigError, LogConfig, LogFormat, Overrides, file::LogFile};

/// Applies overrides and checks that the level is a valid tracing filter.
pub(super) fn check(c: &Checker<'_>, l: LogFile, o: &Overrides) -> Result<LogConfig, ConfigError> {
    let level = o
        .log_level
        .clone()
        .or(l.level)
        .unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(c.bad(
            "log.level",
            format!("{level:?} is not a log level (error, warn, info, debug, trace) or filter"),
        ));
    }
    let format = match o.log_format.as_deref().or(l.format.as_deref()) {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(c.bad("log.format", format!("{other:?} is not `text` or `json`")));
        }
    };
    Ok(LogConfig { level, format })
}
