//! spilo-rs: a drop-in, Rust replacement for Zalando's Spilo image.
//!
//! `config` reads the environment once into a typed model, `render` turns
//! the model into files, `files` puts them on disk, and `configure` is the
//! command that chains the three.

pub mod backup;
pub mod clone;
pub mod config;
pub mod configure;
pub mod envdir;
pub(crate) mod files;
pub mod init;
pub mod monitor;
pub mod render;
pub mod upgrade;
