//! The version this binary reports (`--version`, `/status`, `/metrics`, identify, and
//! what a release is compared with).
//!
//! It is read at run time from a fixed slot in the binary, [`SLOT_MARKER`] followed by
//! the version and NUL padding, rather than folded into the code. A copy of a built
//! binary can so be given another version by rewriting the bytes after the marker,
//! which is how the update tests get a second version without a second build.

/// Starts the slot.
pub const SLOT_MARKER: &[u8] = b"JANTAR-VERSION-SLOT:";
/// Bytes for the version after the marker.
pub const SLOT_LEN: usize = 48;

const fn slot() -> [u8; SLOT_MARKER.len() + SLOT_LEN] {
    let mut s = [0u8; SLOT_MARKER.len() + SLOT_LEN];
    let mut i = 0;
    while i < SLOT_MARKER.len() {
        s[i] = SLOT_MARKER[i];
        i += 1;
    }
    let v = env!("CARGO_PKG_VERSION").as_bytes();
    let mut j = 0;
    while j < v.len() && j < SLOT_LEN {
        s[SLOT_MARKER.len() + j] = v[j];
        j += 1;
    }
    s
}

#[used]
static SLOT: [u8; SLOT_MARKER.len() + SLOT_LEN] = slot();

/// This binary's version.
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        // Read through an opaque reference, so the bytes in the file are what count.
        let slot: &'static [u8] = std::hint::black_box(&SLOT[..]);
        let body = &slot[SLOT_MARKER.len()..];
        let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
        match std::str::from_utf8(&body[..end]) {
            Ok(v) if !v.is_empty() => v,
            _ => env!("CARGO_PKG_VERSION"),
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_slot_holds_the_package_version() {
        assert_eq!(super::version(), env!("CARGO_PKG_VERSION"));
    }
}
