//! Audiences on the device: segments computed from the profile and history,
//! the randomized segment report, and notification decisions.

pub(crate) mod notify;
pub(crate) mod report;
pub(crate) mod segments;
