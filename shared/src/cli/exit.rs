//! Exit codes, standard output that ends quietly on a closed pipe, and the tokio
//! runtime of a command.

use std::{fmt, io::Write, process::ExitCode};

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 64;
pub const EXIT_CONFIG: u8 = 78;
/// The status a shell reports for a command ended by SIGPIPE (128 + 13).
pub const EXIT_CLOSED_PIPE: u8 = 141;

/// Writes one line to standard output. When the reader has gone
/// (`jantar-peer id | head -1`), the process ends at once and says nothing, with the
/// status a Unix tool killed by SIGPIPE has (141: a script with `pipefail` sees what it
/// sees for `yes | head -1`, and a failed `healthcheck` never turns into success);
/// another write error ends it with status 1 and the error.
pub(crate) fn out_line(args: fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(EXIT_CLOSED_PIPE));
        }
        eprintln!("cannot write to standard output: {e}");
        std::process::exit(i32::from(EXIT_FAILURE));
    }
}

/// `println!` for command output: see [`out_line`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::exit::out_line(format_args!($($arg)*))
    };
}
pub(crate) use out;

/// A tokio runtime (multi-threaded for a node, single-threaded for a short client
/// command), or the exit code after saying why there is none.
pub(super) fn runtime(bin: &str, multi_thread: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("{bin}: cannot start the async runtime: {e}");
        ExitCode::from(EXIT_FAILURE)
    })
}
