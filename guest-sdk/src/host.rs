//! The boundary with the host, in the SDK's own types.
//!
//! [`Host`] is the `context` import interface of the WIT world as a trait, so
//! that the executor can run natively against a fake in unit tests; the wasm
//! implementation lives next to the generated bindings (`export/mapping.rs`).
//! [`Job`] and [`Status`] are the export side's `job` and `status`.

use crate::activity::ActivityOptions;
use crate::child::ChildRequest;
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
/// commands (`schedule_activity`, `start_timer`, `start_child`, ...) only
/// return a sequence number, and their outcomes arrive later as [`Job`]s.
pub(crate) trait Host {
    fn now_ms(&self) -> u64;
    fn random_u64(&self) -> u64;
    fn schedule_activity(&self, name: &str, input: &str, options: &ActivityOptions) -> u32;
    fn request_cancel_activity(&self, seq: u32);
    fn start_timer(&self, duration_ms: u64) -> u32;
    fn cancel_timer(&self, seq: u32);
    fn log(&self, level: LogLevel, message: &str);
    fn is_replaying(&self) -> bool;
    fn start_child(&self, request: &ChildRequest) -> u32;
    fn request_cancel_child(&self, seq: u32);
    /// Answers update `id`: its output (JSON) or why it failed.
    fn complete_update(&self, id: &str, outcome: Result<String, WorkflowError>);
    fn patched(&self, change_id: &str) -> bool;
    fn set_status_line(&self, text: &str);
    /// `attributes` is one JSON object.
    fn upsert_search_attributes(&self, attributes: &str);
    fn info(&self) -> WorkflowInfo;
}

/// What the run knows about itself: the `info` import's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WorkflowInfo {
    pub(crate) workflow_id: String,
    pub(crate) workflow_type: String,
    pub(crate) parent_workflow_id: Option<String>,
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
    /// The child workflow started as `seq` ended: its output (JSON) or its failure.
    ChildResolved {
        seq: u32,
        outcome: Result<String, WorkflowError>,
    },
    /// An update that passed validation; `input` is JSON.
    UpdateReceived {
        id: String,
        name: String,
        input: String,
    },
    /// Someone asked the run to cancel, for this reason.
    CancelRequested(String),
}

/// The workflow's state at the end of an activation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Status {
    Pending,
    /// The workflow function returned; its output as JSON.
    Completed(String),
    Failed(WorkflowError),
    /// The workflow honoured a cancel request, with this message.
    Cancelled(String),
    /// A new run starts with this input (JSON).
    ContinuedAsNew(String),
}
