use super::{Failure, Sha256Hex};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How an activity is retried. Mirrors `retry-policy` in the WIT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub initial_interval_ms: u64,
    pub backoff_coefficient: f64,
    /// 0 means 100 × the initial interval.
    pub maximum_interval_ms: u64,
    /// Attempts in all; 0 means unlimited.
    pub maximum_attempts: u32,
    #[serde(default)]
    pub non_retryable_error_types: Vec<String>,
}

impl Default for RetryPolicy {
    /// Temporal's default: 1 s, doubling, capped at 100 s, unlimited attempts.
    fn default() -> Self {
        Self {
            initial_interval_ms: 1_000,
            backoff_coefficient: 2.0,
            maximum_interval_ms: 100_000,
            maximum_attempts: 0,
            non_retryable_error_types: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 for the first retry), or `None`
    /// when the policy allows no further attempt after a failure of `error_type`.
    pub fn delay_before(&self, next_attempt: u32, error_type: &str) -> Option<u64> {
        if self
            .non_retryable_error_types
            .iter()
            .any(|t| t == error_type)
        {
            return None;
        }
        if self.maximum_attempts != 0 && next_attempt > self.maximum_attempts {
            return None;
        }
        let cap = if self.maximum_interval_ms == 0 {
            self.initial_interval_ms.saturating_mul(100)
        } else {
            self.maximum_interval_ms
        };
        let exponent = next_attempt.saturating_sub(2) as i32;
        let delay =
            self.initial_interval_ms as f64 * self.backoff_coefficient.max(1.0).powi(exponent);
        Some((delay.min(cap as f64)) as u64)
    }
}

/// Options recorded with a scheduled activity. Mirrors `activity-options` in
/// the WIT. A timeout of 0 means none (start-to-close: the host default).
/// Fields at their zero value are left out of the recorded JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityOptions {
    pub start_to_close_timeout_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub schedule_to_start_timeout_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub schedule_to_close_timeout_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub heartbeat_timeout_ms: u64,
    pub retry: Option<RetryPolicy>,
    /// Run in the workflow's host straight after the activation, without a task queue.
    #[serde(default, skip_serializing_if = "is_false")]
    pub local: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What happens to an open child workflow when its parent closes first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParentClosePolicy {
    /// The child is terminated (Temporal's default).
    #[default]
    Terminate,
    /// The child receives a cancel request.
    RequestCancel,
    /// The child runs on by itself.
    Abandon,
}

impl ParentClosePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ParentClosePolicy::Terminate => "terminate",
            ParentClosePolicy::RequestCancel => "request_cancel",
            ParentClosePolicy::Abandon => "abandon",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "terminate" => ParentClosePolicy::Terminate,
            "request_cancel" => ParentClosePolicy::RequestCancel,
            "abandon" => ParentClosePolicy::Abandon,
            _ => return None,
        })
    }
}

/// A child run's link to its parent, recorded in the child's event 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParentLink {
    pub workflow_id: String,
    pub run_id: super::RunId,
    /// The sequence number of the parent's `child_workflow_initiated`.
    pub seq: u32,
}

/// One entry of a run's history. The JSON form (`kind` plus the fields) is what
/// is stored and hashed; the variants are never renumbered or renamed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Always event 1: what was started, on which module, with which random seed.
    WorkflowStarted {
        workflow_type: String,
        workflow_id: String,
        input: Value,
        module_sha256: Sha256Hex,
        seed: u64,
        /// Set for a child workflow.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentLink>,
        /// The run this one continues (continue-as-new).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        continued_from: Option<super::RunId>,
    },
    /// Opens an activation: the workflow time the guest sees until the next one.
    ActivationStarted { time_ms: u64 },
    /// Job: an activity finished successfully.
    ActivityCompleted {
        seq: u32,
        output: Value,
        attempt: u32,
    },
    /// Job: an activity failed for good (retries exhausted or not retryable).
    ActivityFailed {
        seq: u32,
        failure: Failure,
        attempt: u32,
    },
    /// Job: a timer fired.
    TimerFired { seq: u32 },
    /// Job: a signal was delivered.
    SignalReceived { name: String, input: Value },
    /// Job: a child workflow completed.
    ChildWorkflowCompleted { seq: u32, output: Value },
    /// Job: a child workflow failed, could not start, was cancelled, terminated or timed out.
    ChildWorkflowFailed { seq: u32, failure: Failure },
    /// Job: an accepted update was delivered.
    UpdateReceived {
        update_id: String,
        name: String,
        input: Value,
    },
    /// Job: someone asked the run to cancel.
    WorkflowCancelRequested { reason: String },
    /// Command: the guest scheduled an activity.
    ActivityScheduled {
        seq: u32,
        name: String,
        input: Value,
        options: ActivityOptions,
    },
    /// Command: the guest started a timer due at `fire_at_ms` (workflow time).
    TimerStarted {
        seq: u32,
        duration_ms: u64,
        fire_at_ms: u64,
    },
    /// Command: the guest cancelled a timer.
    TimerCancelled { seq: u32 },
    /// Command: the guest asked to cancel an activity.
    ActivityCancelRequested { seq: u32 },
    /// Command: the guest started a child workflow.
    ChildWorkflowInitiated {
        seq: u32,
        workflow_type: String,
        workflow_id: String,
        input: Value,
        parent_close_policy: ParentClosePolicy,
        #[serde(default, skip_serializing_if = "is_zero")]
        execution_timeout_ms: u64,
    },
    /// Command: the guest asked a child workflow to cancel.
    ChildWorkflowCancelRequested { seq: u32 },
    /// Command: the guest answered an update.
    UpdateCompleted { update_id: String, output: Value },
    /// Command: the guest's update handler failed.
    UpdateFailed { update_id: String, failure: Failure },
    /// Command: the run took the new code path of a change (`patched`).
    PatchMarker { change_id: String },
    /// Command: the workflow set its status line.
    StatusLineSet { text: String },
    /// Command: the workflow merged search attributes (null values remove keys).
    SearchAttributesUpserted { attributes: Value },
    /// Command: the workflow function returned its output.
    WorkflowCompleted { output: Value },
    /// Command: the workflow function returned an error.
    WorkflowFailed { failure: Failure },
    /// Command: the workflow honoured a cancel request.
    WorkflowCancelled { message: String },
    /// Command: the run ends and a new run of the workflow starts with `input`.
    WorkflowContinuedAsNew { input: Value },
    /// Written by the host, not the guest: the run was terminated. Ends the history.
    WorkflowTerminated { reason: String },
    /// Written by the host: the run or execution timeout passed. Ends the history.
    WorkflowTimedOut { timeout: String },
    /// Written by the host between activations: an operator moved the run to
    /// module `to` (an upgrade, or the resume of a stuck run on a fixed
    /// module) after `to` replayed the history so far identically. From here
    /// on the run, and any replay of its whole history, uses `to`.
    ModuleChanged {
        from: Sha256Hex,
        to: Sha256Hex,
        reason: String,
    },
    /// Written by the host after the kept prefix of a reset run: this run
    /// continues `from_run_id`'s history as it stood at event `at_event`.
    WorkflowReset {
        from_run_id: super::RunId,
        at_event: u64,
        reason: String,
    },
}

impl Event {
    /// The stable name stored in the `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::WorkflowStarted { .. } => "workflow_started",
            Event::ActivationStarted { .. } => "activation_started",
            Event::ActivityCompleted { .. } => "activity_completed",
            Event::ActivityFailed { .. } => "activity_failed",
            Event::TimerFired { .. } => "timer_fired",
            Event::SignalReceived { .. } => "signal_received",
            Event::ActivityScheduled { .. } => "activity_scheduled",
            Event::TimerStarted { .. } => "timer_started",
            Event::TimerCancelled { .. } => "timer_cancelled",
            Event::ChildWorkflowCompleted { .. } => "child_workflow_completed",
            Event::ChildWorkflowFailed { .. } => "child_workflow_failed",
            Event::UpdateReceived { .. } => "update_received",
            Event::WorkflowCancelRequested { .. } => "workflow_cancel_requested",
            Event::ActivityCancelRequested { .. } => "activity_cancel_requested",
            Event::ChildWorkflowInitiated { .. } => "child_workflow_initiated",
            Event::ChildWorkflowCancelRequested { .. } => "child_workflow_cancel_requested",
            Event::UpdateCompleted { .. } => "update_completed",
            Event::UpdateFailed { .. } => "update_failed",
            Event::PatchMarker { .. } => "patch_marker",
            Event::StatusLineSet { .. } => "status_line_set",
            Event::SearchAttributesUpserted { .. } => "search_attributes_upserted",
            Event::WorkflowCompleted { .. } => "workflow_completed",
            Event::WorkflowFailed { .. } => "workflow_failed",
            Event::WorkflowCancelled { .. } => "workflow_cancelled",
            Event::WorkflowContinuedAsNew { .. } => "workflow_continued_as_new",
            Event::WorkflowTerminated { .. } => "workflow_terminated",
            Event::WorkflowTimedOut { .. } => "workflow_timed_out",
            Event::ModuleChanged { .. } => "module_changed",
            Event::WorkflowReset { .. } => "workflow_reset",
        }
    }

    /// Something delivered to the guest.
    pub fn is_job(&self) -> bool {
        matches!(
            self,
            Event::ActivityCompleted { .. }
                | Event::ActivityFailed { .. }
                | Event::TimerFired { .. }
                | Event::SignalReceived { .. }
                | Event::ChildWorkflowCompleted { .. }
                | Event::ChildWorkflowFailed { .. }
                | Event::UpdateReceived { .. }
                | Event::WorkflowCancelRequested { .. }
        )
    }

    /// Something the guest issued, checked on replay.
    pub fn is_command(&self) -> bool {
        matches!(
            self,
            Event::ActivityScheduled { .. }
                | Event::TimerStarted { .. }
                | Event::TimerCancelled { .. }
                | Event::ActivityCancelRequested { .. }
                | Event::ChildWorkflowInitiated { .. }
                | Event::ChildWorkflowCancelRequested { .. }
                | Event::UpdateCompleted { .. }
                | Event::UpdateFailed { .. }
                | Event::PatchMarker { .. }
                | Event::StatusLineSet { .. }
                | Event::SearchAttributesUpserted { .. }
                | Event::WorkflowCompleted { .. }
                | Event::WorkflowFailed { .. }
                | Event::WorkflowCancelled { .. }
                | Event::WorkflowContinuedAsNew { .. }
        )
    }

    /// Ends the history: nothing may follow it.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Event::WorkflowCompleted { .. }
                | Event::WorkflowFailed { .. }
                | Event::WorkflowCancelled { .. }
                | Event::WorkflowContinuedAsNew { .. }
                | Event::WorkflowTerminated { .. }
                | Event::WorkflowTimedOut { .. }
        )
    }

    /// Written by the host on its own authority, outside any activation
    /// (termination, timeouts): not compared on replay.
    pub fn is_host_verdict(&self) -> bool {
        matches!(
            self,
            Event::WorkflowTerminated { .. } | Event::WorkflowTimedOut { .. }
        )
    }

    /// The JSON object stored as the event's payload: every field but `kind`.
    /// Its text is canonical ([`super::canonical`]): the same bytes for the
    /// same event whatever serde_json's features or version.
    pub fn payload_json(&self) -> String {
        // Serialised once into a tree, then written once in canonical order:
        // derive(Serialize) writes fields in declaration order, so the tree
        // (or a buffering serializer) is what sorts them.
        match serde_json::to_value(self).expect("events always serialize") {
            Value::Object(map) => super::canonical::object_without(&map, "kind"),
            other => unreachable!("an internally tagged enum serialises as an object, not {other}"),
        }
    }

    /// Rebuilds an event from its stored `kind` and payload.
    pub fn from_parts(kind: &str, payload: &str) -> Result<Self, serde_json::Error> {
        let mut value: Value = serde_json::from_str(payload)?;
        if let Value::Object(map) = &mut value {
            map.insert("kind".into(), Value::String(kind.to_owned()));
        }
        serde_json::from_value(value)
    }
}

/// An event as stored: its number, when it was recorded, and its chain hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub seq: u64,
    /// Host time at which the event was written, ms since the Unix epoch.
    pub recorded_at_ms: u64,
    /// Nested, not flattened: several events have a `seq` field of their own.
    pub event: Event,
    pub hash: super::EventHash,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_event_serialises_each_field_once() {
        let recorded = RecordedEvent {
            seq: 7,
            recorded_at_ms: 1_000,
            event: Event::ActivityScheduled {
                seq: 2,
                name: "charge".into(),
                input: serde_json::json!({"cents": 100}),
                options: ActivityOptions::default(),
            },
            hash: super::super::EventHash::GENESIS,
        };
        let text = serde_json::to_string(&recorded).unwrap();
        // The event's own `seq` (its activity) no longer collides with the
        // event number: one `seq` at the top, one inside `event`.
        assert_eq!(text.matches("\"seq\":").count(), 2, "{text}");
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["seq"], 7);
        assert_eq!(value["event"]["seq"], 2);
        assert_eq!(value["event"]["kind"], "activity_scheduled");
        let back: RecordedEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back, recorded);
    }
}
