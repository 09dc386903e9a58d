//! Where the image puts things: shared by the build steps and the runtime
//! (`config::version` re-exports these), defined here so the build tool
//! compiles on its own.

/// Where the per-major trees live (`<root>/<major>/bin`).
pub const POSTGRES_ROOT: &str = "/usr/lib/postgresql";

/// Subdirectory of the root with the majors `spilo build compress` packed
/// (`<N>.json` beside each archive). They count as installed: `spilo init`
/// unpacks the one it runs.
pub const ARCHIVE_SUBDIR: &str = "archives";
