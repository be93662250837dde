//! Rendering of results: the human lines ([`text`]) and the `--json`
//! documents ([`json`]). Nothing here decides anything; it only formats what
//! the library found.

pub mod json;
pub mod text;
pub mod time;

pub use json::*;
pub use text::*;
pub use time::*;
