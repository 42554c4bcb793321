//! How errors are shown: one line, with their causes.

use std::fmt;

/// Displays an error and its sources on one line (`outer: cause: root cause`), leaving
/// out a source whose text the line already holds. Log fields use it as
/// `error = %ErrorChain(&e)`, so every error in the logs reads the same way.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a dyn std::error::Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        let mut cur = self.0.source();
        while let Some(src) = cur {
            let t = src.to_string();
            if !shown.contains(&t) {
                shown.push_str(": ");
                shown.push_str(&t);
            }
            cur = src.source();
        }
        f.write_str(&shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot dial: {0}")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("handshake failed")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn shows_each_cause_once() {
        let e = Outer(Middle(std::io::Error::other("connection reset")));
        assert_eq!(
            ErrorChain(&e).to_string(),
            "cannot dial: handshake failed: connection reset"
        );
    }
}
