//! Policy: parse (TOML with locations) → validate (complete, located diagnostics) →
//! compile (maps), with the guideline `lint` inside validation. `model` is the plain-Rust
//! statement of the semantics; `template` holds the starting policies `policy init` writes,
//! `diff` says what a reload would change.

pub mod compile;
pub mod diagnostic;
pub mod diff;
pub mod explain;
pub mod frame;
pub mod lint;
pub mod model;
pub mod nft;
pub mod parse;
pub mod read;
pub mod template;
pub mod text;
pub mod types;
pub mod validate;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use types::*;
