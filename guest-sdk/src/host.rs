//! The boundary with the host, in the SDK's own types.
//!
//! [`Host`] is the `context` import interface of the WIT world as a trait, so
//! that the executor can run natively against a fake in unit tests; the wasm
//! implementation lives next to the generated bindings (`export/mapping.rs`).
//! [`Job`] and [`Status`] are the export side's `job` and `status`.

use crate::activity::ActivityOptions;
use crate::error::WorkflowError;

/// Severity of a log line written with [`Context::log`](crate::Context::log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// The imports a workflow may call. Each call is quick and never blocks: the
/// commands (`schedule_activity`, `start_timer`, `cancel_timer`) only return a
/// sequence number, and their outcomes arrive later as [`Job`]s.
pub(crate) trait Host {
    fn now_ms(&self) -> u64;
    fn random_u64(&self) -> u64;
    fn schedule_activity(&self, name: &str, input: &str, options: &ActivityOptions) -> u32;
    fn request_cancel_activity(&self, seq: u32);
    fn start_timer(&self, duration_ms: u64) -> u32;
    fn cancel_timer(&self, seq: u32);
    fn log(&self, level: LogLevel, message: &str);
    fn is_replaying(&self) -> bool;
}

/// Something the host delivers in an activation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Job {
    /// The activity scheduled as `seq` finished: its output (JSON) or its final failure.
    ActivityResolved {
        seq: u32,
        outcome: Result<String, WorkflowError>,
    },
    /// The timer started as `seq` fired.
    TimerFired(u32),
    /// A signal arrived; `input` is JSON.
    SignalReceived { name: String, input: String },
    /// A job this SDK version does not act on.
    Ignored,
}

/// The workflow's state at the end of an activation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Status {
    Pending,
    /// The workflow function returned; its output as JSON.
    Completed(String),
    Failed(WorkflowError),
}
