//! How paths are written in JSON: as strings, lossily when they are not
//! UTF-8, never with a panic. Entries holding such a path say so with
//! `"paths_lossy": true`.

use serde::Serializer;
use std::path::Path;

/// Serializes a path as a string, lossily when it is not UTF-8 (never a
/// panic); entries holding such a path say so with `"paths_lossy": true`.
pub fn ser_path<P: AsRef<Path>, S: Serializer>(p: &P, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.as_ref().to_string_lossy())
}

/// [`ser_path`] for an optional path.
pub fn ser_opt_path<S: Serializer>(p: &Option<&Path>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => ser_path(p, s),
        None => s.serialize_none(),
    }
}

/// Whether a path will be written lossily.
pub fn is_lossy(p: &Path) -> bool {
    p.to_str().is_none()
}
