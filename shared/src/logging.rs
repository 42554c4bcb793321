//! Structured logs as text or JSON on stderr. Lines from a node carry its span
//! (`node{role, peer}`), and lines about one connection that connection's
//! (`conn{peer, remote}`).

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub(crate) fn init(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&log.level));
    // Colours only on a terminal: journald, container logs and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // The node's and the connection's spans, outermost first, under `spans`.
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}
