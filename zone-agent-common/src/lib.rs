//! The kernel/user ABI of zone-agent, defined once.
//!
//! Everything the XDP program and the agent exchange lives here: map names and capacities,
//! key/value layouts, verdicts and drop reasons. Numbers are stable: a retired drop reason
//! keeps its slot. Structs are `repr(C)` with explicit padding fields so that the layout has
//! no implicit holes (the kernel compares keys byte-wise), and sizes are asserted at compile
//! time.
#![no_std]

pub mod alerts;
pub mod events;
pub mod maps;
pub mod policy_file;
pub mod scope;
pub mod verdict;

pub use alerts::*;
pub use events::*;
pub use maps::*;
pub use policy_file::*;
pub use scope::*;
pub use verdict::*;
