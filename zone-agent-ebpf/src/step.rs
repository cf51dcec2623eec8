//! `Step`: what a step that is its own BPF function (`#[inline(never)]`) returns.
//!
//! Such a function keeps its temporaries in its own stack frame and is verified once per
//! call site instead of multiplying the caller's paths; but Rust returns even a two-byte
//! `Result` through memory on this target, and the verifier does not let a BPF function
//! return a pointer into the caller's stack. So these functions return one `u32` in a
//! register, in this one encoding:
//!
//! - bit 31 set: the packet is to be dropped; the low byte is the `DropReason`;
//! - bit 31 clear: success; bits 0..31 are the step's value (0 when it has none), which
//!   the step documents.
//!
//! Larger results travel through out-parameters in `scratch::Scratch`. Inlined steps
//! return `Result<_, DropReason>` directly.

use zone_agent_common::DropReason;

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct Step(u32);

impl Step {
    /// Marks a drop; the low byte then holds the reason.
    const DROP: u32 = 1 << 31;

    /// Success with `value`, which must be below `1 << 31` (callers pass small constants
    /// or a `next header << 16 | length` pair); a larger one would read as a drop, which
    /// fails closed.
    #[inline(always)]
    pub const fn ok(value: u32) -> Step {
        Step(value)
    }

    #[inline(always)]
    pub const fn drop(reason: DropReason) -> Step {
        Step(Self::DROP | reason as u32)
    }

    #[inline(always)]
    pub fn from_result(r: Result<u32, DropReason>) -> Step {
        match r {
            Ok(v) => Step::ok(v),
            Err(reason) => Step::drop(reason),
        }
    }

    /// The value, or the drop reason; a reason number this build does not know fails
    /// closed as `Malformed`.
    #[inline(always)]
    pub fn result(self) -> Result<u32, DropReason> {
        if self.0 & Self::DROP != 0 {
            Err(DropReason::from_u8(self.0 as u8).unwrap_or(DropReason::Malformed))
        } else {
            Ok(self.0)
        }
    }
}
