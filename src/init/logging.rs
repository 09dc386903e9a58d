//! The supervisor's own lines and its children's output, through one
//! tracing subscriber: plain lines by default, JSON objects when asked
//! (log shippers parse one object per line).

use std::sync::OnceLock;

use tracing::Level;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Plain,
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Installs the subscriber (once; later calls keep the first).
pub fn init(format: Format) {
    if FORMAT.set(format).is_err() {
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .with_max_level(Level::INFO);
    let _ = match format {
        Format::Plain => builder.try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// One line of a child's output, tagged with the child's name: a prefix
/// in plain lines, a field in JSON so that it can be filtered on.
pub(crate) fn child_line(name: &str, line: &str) {
    match FORMAT.get() {
        Some(Format::Json) => tracing::info!(child = name, "{line}"),
        _ => tracing::info!("{name}: {line}"),
    }
}
