//! The failures [`ReplayBody`](super::ReplayBody) adds of its own.

use std::fmt;

/// An attempt's request body could not be served.
///
/// It reaches only the body of an attempt that was already answered, polled on after a later
/// attempt began — in practice an older attempt's body still held by a connection after its
/// response arrived: the recording is gone ([`Capped`](Self::Capped),
/// [`Failed`](Self::Failed)), or the later attempt took the caller's body over
/// ([`Superseded`](Self::Superseded)). [`RetryAfter`](super::RetryAfter) itself never starts
/// an attempt it cannot serve: a body past the cap or one that failed is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayError {
    /// The body passed the replay cap, so its start was not kept.
    Capped,
    /// The caller's body failed while it was read (the error went to the attempt that read it).
    Failed,
    /// A later attempt took the caller's body over: this attempt had sent what was recorded
    /// and would have had to read on.
    Superseded,
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
            ReplayError::Superseded => f.write_str(
                "request body is no longer sent by this attempt: a later attempt took it over",
            ),
        }
    }
}

impl std::error::Error for ReplayError {}
