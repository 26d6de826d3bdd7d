//! Activities: native Rust functions with side effects, run at least once.
//!
//! Register them in an [`Activities`] registry with typed (serde) input and
//! output. Each attempt gets an [`ActivityContext`] carrying a stable
//! [idempotency key](ActivityContext::idempotency_key) to pass to the outside
//! world, its [attempt](ActivityContext::attempt) number, and a line back to
//! the host: [`heartbeat`](ActivityContext::heartbeat) reports progress (the
//! next attempt resumes from it with
//! [`heartbeat_details`](ActivityContext::heartbeat_details)) and tells a
//! cancelled or timed-out attempt to stop.
//!
//! A failed attempt is retried by the activity's
//! [`RetryPolicy`](crate::model::RetryPolicy) unless its [`ActivityError`] is
//! non-retryable; an error may pick its own next delay with
//! [`retry_after`](ActivityError::retry_after). Four timeouts bound an
//! activity (see [`ActivityOptions`](crate::model::ActivityOptions)):
//! start-to-close per attempt, enforced here; schedule-to-start,
//! schedule-to-close and heartbeat, enforced by the store's timeout sweep
//! that every host runs.
//!
//! ```
//! use weft::{Activities, ActivityContext, ActivityError};
//! let mut activities = Activities::new();
//! activities.register("greet", |_ctx: ActivityContext, name: String| async move {
//!     Ok::<_, ActivityError>(format!("Hello, {name}!"))
//! });
//! ```

mod executor;
mod handoff;
mod registry;

pub(crate) use executor::{AttemptRunner, Called, exhausted, outcome_of_failure};
pub(crate) use handoff::{Handoff, Taken};
pub use registry::{Activities, ActivityContext, ActivityError};
pub(crate) use registry::{HeartbeatSink, StoreSink};
