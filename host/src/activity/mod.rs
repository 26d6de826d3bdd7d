//! Activities: native Rust functions with side effects, run at least once.
//!
//! Register them in an [`Activities`] registry with typed (serde) input and
//! output. Each attempt gets an [`ActivityContext`] carrying a stable
//! [idempotency key](ActivityContext::idempotency_key) to pass to the outside
//! world. A failed attempt is retried by the activity's
//! [`RetryPolicy`](crate::model::RetryPolicy) unless its [`ActivityError`] is
//! non-retryable; the start-to-close timeout bounds each attempt.
//!
//! ```
//! use weft::{Activities, ActivityContext, ActivityError};
//! let mut activities = Activities::new();
//! activities.register("greet", |_ctx: ActivityContext, name: String| async move {
//!     Ok::<_, ActivityError>(format!("Hello, {name}!"))
//! });
//! ```

mod executor;
mod registry;

pub(crate) use executor::run_attempt;
pub use registry::{Activities, ActivityContext, ActivityError};
