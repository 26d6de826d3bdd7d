//! The host side of `interface context`: every call either answers from the
//! run's recorded state or records a command. Calls are quick and never block.

use super::bindings::{self, context, wit};
use super::state::{Diverging, GuestState};
use crate::model::{ActivityOptions, ChildRequest, Command};
use serde_json::Value;

impl wit::Host for GuestState {}

impl GuestState {
    /// Records a command the guest issued. While a replay locates
    /// divergences ([`GuestState::expected`]), a command other than the one
    /// the history records at this point traps the guest here, so that the
    /// trap's backtrace names the guest code that issued it.
    ///
    /// A command over one of the run's limits ([`crate::limits::RunLimits`])
    /// traps the guest with the limit and its setting.
    fn issue(&mut self, command: Command) -> wasmtime::Result<()> {
        self.check_limits(&command)?;
        let now_ms = self.clock.now_ms();
        if let Some(expected) = &mut self.expected {
            let issued = command.to_event(now_ms);
            if expected.events.get(expected.next) != Some(&issued) {
                return Err(wasmtime::Error::new(Diverging {
                    index: expected.next,
                    issued: Box::new(issued),
                }));
            }
            expected.next += 1;
        }
        match &command {
            Command::ScheduleActivity { seq, .. } => {
                self.open.activities.insert(*seq);
            }
            Command::StartTimer { seq, .. } => {
                self.open.timers.insert(*seq);
            }
            Command::CancelTimer { seq } => {
                self.open.timers.remove(seq);
            }
            Command::StartChild { seq, .. } => {
                self.open.children.insert(*seq);
            }
            _ => {}
        }
        self.commands.push(command);
        Ok(())
    }

    fn check_limits(&self, command: &Command) -> wasmtime::Result<()> {
        let limits = &self.run_limits;
        let over = |what: &str, limit: usize, setting: &str, fix: &str| {
            Err(wasmtime::Error::msg(format!(
                "the run already has {limit} {what}, the limit ({setting}): {fix}"
            )))
        };
        if self.commands.len() >= limits.max_commands_per_activation {
            return over(
                "commands in this activation",
                limits.max_commands_per_activation,
                "--max-commands-per-activation",
                "issue fewer per activation, e.g. await some work between batches, or split it into child workflows",
            );
        }
        match command {
            Command::ScheduleActivity { .. }
                if self.open.activities.len() >= limits.max_pending_activities =>
            {
                over(
                    "activities pending",
                    limits.max_pending_activities,
                    "--max-pending-activities",
                    "await some before scheduling more, or split the work into child workflows",
                )
            }
            Command::StartTimer { .. } if self.open.timers.len() >= limits.max_pending_timers => {
                over(
                    "timers pending",
                    limits.max_pending_timers,
                    "--max-pending-timers",
                    "let some fire or cancel them before starting more",
                )
            }
            Command::StartChild { .. }
                if self.open.children.len() >= limits.max_pending_children =>
            {
                over(
                    "child workflows pending",
                    limits.max_pending_children,
                    "--max-pending-children",
                    "await some before starting more, or start them from several children",
                )
            }
            _ => Ok(()),
        }
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Parses a payload the guest passed; a bad one traps the guest with a
    /// message naming what it was for, since it is a bug in the workflow.
    fn payload(&self, what: &str, text: &str) -> wasmtime::Result<Value> {
        let value =
            bindings::payload(what, text, self.max_payload_bytes).map_err(wasmtime::Error::msg)?;
        if !self.clock.replaying() {
            bindings::warn_if_large(&format!("run {}: {what}", self.run_id), text.len());
        }
        Ok(value)
    }
}

/// Checks a name or id the guest passed ([`bindings::name`]); a bad one
/// traps the guest.
fn name(what: &str, text: &str) -> wasmtime::Result<()> {
    bindings::name(what, text).map_err(wasmtime::Error::msg)
}

/// Checks an activity's options: a retry policy's backoff coefficient must
/// be a finite number (a NaN or an infinity cannot be stored as JSON: the
/// run's history could not be read back).
fn check_options(name: &str, options: &ActivityOptions) -> wasmtime::Result<()> {
    if let Some(retry) = &options.retry {
        let c = retry.backoff_coefficient;
        if !c.is_finite() {
            return Err(wasmtime::Error::msg(format!(
                "the retry policy of activity {name:?} has backoff coefficient {c}: it must be a finite number, e.g. 2.0"
            )));
        }
        for t in &retry.non_retryable_error_types {
            self::name(
                &format!("a non-retryable error type of activity {name:?}"),
                t,
            )?;
        }
    }
    Ok(())
}

impl context::Host for GuestState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self.clock.now_ms())
    }

    fn random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.rng.next_u64())
    }

    fn schedule_activity(
        &mut self,
        name: String,
        input: String,
        options: wit::ActivityOptions,
    ) -> wasmtime::Result<u32> {
        self::name("an activity's name", &name)?;
        let input = self.payload(&format!("the input of activity {name:?}"), &input)?;
        let options: ActivityOptions = options.into();
        check_options(&name, &options)?;
        let seq = self.take_seq();
        self.issue(Command::ScheduleActivity {
            seq,
            name,
            input,
            options,
        })?;
        Ok(seq)
    }

    fn request_cancel_activity(&mut self, seq: u32) -> wasmtime::Result<()> {
        self.issue(Command::RequestCancelActivity { seq })?;
        Ok(())
    }

    fn start_child(&mut self, options: wit::ChildOptions) -> wasmtime::Result<u32> {
        name("a child workflow's type", &options.workflow_type)?;
        name(
            &format!(
                "the workflow id of child workflow {:?}",
                options.workflow_type
            ),
            &options.workflow_id,
        )?;
        let input = self.payload(
            &format!("the input of child workflow {:?}", options.workflow_type),
            &options.input,
        )?;
        let seq = self.take_seq();
        let workflow_id = if options.workflow_id.is_empty() {
            format!("{}/{seq}", self.info.workflow_id)
        } else {
            options.workflow_id
        };
        self.issue(Command::StartChild {
            seq,
            request: ChildRequest {
                workflow_type: options.workflow_type,
                workflow_id,
                input,
                parent_close_policy: options.parent_close_policy.into(),
                execution_timeout_ms: options.execution_timeout_ms,
            },
        })?;
        Ok(seq)
    }

    fn request_cancel_child(&mut self, seq: u32) -> wasmtime::Result<()> {
        self.issue(Command::RequestCancelChild { seq })?;
        Ok(())
    }

    fn complete_update(
        &mut self,
        id: String,
        outcome: Result<String, wit::Failure>,
    ) -> wasmtime::Result<()> {
        name("an update's id", &id)?;
        let outcome = match outcome {
            Ok(text) => Ok(self.payload(&format!("the answer to update {id:?}"), &text)?),
            Err(failure) => {
                Err(
                    bindings::failure(&format!("update {id:?}"), failure, self.max_payload_bytes)
                        .map_err(wasmtime::Error::msg)?,
                )
            }
        };
        self.issue(Command::CompleteUpdate {
            update_id: id,
            outcome,
        })?;
        Ok(())
    }

    fn patched(&mut self, change_id: String) -> wasmtime::Result<bool> {
        name("a patch's change id", &change_id)?;
        if let Some(answer) = self.patch_answers.get(&change_id) {
            return Ok(*answer);
        }
        // Replaying, the history decides; live, the new path is taken and marked.
        let answer = !self.clock.replaying() || self.recorded_patches.contains(&change_id);
        if answer {
            self.issue(Command::PatchMarker {
                change_id: change_id.clone(),
            })?;
        }
        self.patch_answers.insert(change_id, answer);
        Ok(answer)
    }

    fn set_status_line(&mut self, text: String) -> wasmtime::Result<()> {
        const MAX_STATUS_LINE: usize = 1_024;
        if text.len() > MAX_STATUS_LINE {
            return Err(wasmtime::Error::msg(format!(
                "the status line is {} bytes, over the limit of {MAX_STATUS_LINE}: keep it to a short sentence",
                text.len()
            )));
        }
        bindings::no_nul("the status line", &text).map_err(wasmtime::Error::msg)?;
        self.issue(Command::SetStatusLine { text })?;
        Ok(())
    }

    fn upsert_search_attributes(&mut self, attributes: String) -> wasmtime::Result<()> {
        let attributes = self.payload("the search attributes", &attributes)?;
        let Value::Object(map) = &attributes else {
            return Err(wasmtime::Error::msg(
                "search attributes must be a JSON object of key to value",
            ));
        };
        if let Some((key, _)) = map
            .iter()
            .find(|(_, v)| matches!(v, Value::Array(_) | Value::Object(_)))
        {
            return Err(wasmtime::Error::msg(format!(
                "search attribute {key:?} is a list or an object; values must be strings, numbers, booleans or null"
            )));
        }
        self.issue(Command::UpsertSearchAttributes { attributes })
    }

    fn info(&mut self) -> wasmtime::Result<wit::WorkflowInfo> {
        Ok(wit::WorkflowInfo {
            workflow_id: self.info.workflow_id.clone(),
            workflow_type: self.info.workflow_type.clone(),
            parent_workflow_id: self.info.parent_workflow_id.clone(),
        })
    }

    fn start_timer(&mut self, duration_ms: u64) -> wasmtime::Result<u32> {
        let seq = self.take_seq();
        self.issue(Command::StartTimer { seq, duration_ms })?;
        Ok(seq)
    }

    fn cancel_timer(&mut self, seq: u32) -> wasmtime::Result<()> {
        self.issue(Command::CancelTimer { seq })?;
        Ok(())
    }

    fn log(&mut self, level: wit::LogLevel, message: String) -> wasmtime::Result<()> {
        if self.clock.replaying() || !self.log_budget.admit(message.len()) {
            return Ok(());
        }
        let run_id = &self.run_id;
        match level {
            wit::LogLevel::Trace => tracing::trace!(target: "weft::guest", %run_id, "{message}"),
            wit::LogLevel::Debug => tracing::debug!(target: "weft::guest", %run_id, "{message}"),
            wit::LogLevel::Info => tracing::info!(target: "weft::guest", %run_id, "{message}"),
            wit::LogLevel::Warn => tracing::warn!(target: "weft::guest", %run_id, "{message}"),
            wit::LogLevel::Error => tracing::error!(target: "weft::guest", %run_id, "{message}"),
        }
        Ok(())
    }

    fn is_replaying(&mut self) -> wasmtime::Result<bool> {
        Ok(self.clock.replaying())
    }
}
