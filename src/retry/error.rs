//! The failures [`ReplayBody`](super::ReplayBody) adds of its own.

use std::fmt;

/// An attempt's request body could not be served from the replay recording.
///
/// It reaches only a body that an inner service polls *after* a later attempt made the
/// recording useless — in practice an older attempt's body still held by a connection after
/// its response arrived. [`RetryAfter`](super::RetryAfter) itself never starts an attempt it
/// cannot serve: a body past the cap or one that failed is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayError {
    /// The body passed the replay cap, so its start was not kept.
    Capped,
    /// The caller's body failed while it was read (the error went to the attempt that read it).
    Failed,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Capped => {
                f.write_str("request body cannot be replayed: it is larger than the replay cap")
            }
            ReplayError::Failed => {
                f.write_str("request body cannot be replayed: it failed while it was read")
            }
        }
    }
}

impl std::error::Error for ReplayError {}
