//! The host side of `interface context`: every call either answers from the
//! run's recorded state or records a command. Calls are quick and never block.

use super::bindings::{context, wit};
use super::state::GuestState;
use crate::model::{ActivityOptions, Command};
use serde_json::Value;

impl wit::Host for GuestState {}

impl GuestState {
    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Parses a payload the guest passed; a bad one traps the guest with a
    /// message naming what it was for, since it is a bug in the workflow.
    fn payload(&self, what: &str, text: &str) -> wasmtime::Result<Value> {
        if text.len() > self.max_payload_bytes {
            return Err(wasmtime::Error::msg(format!(
                "{what} is {} bytes, over the limit of {} bytes: pass a reference (an id, a URL) instead of the data",
                text.len(),
                self.max_payload_bytes
            )));
        }
        serde_json::from_str(text)
            .map_err(|e| wasmtime::Error::msg(format!("{what} is not valid JSON: {e}")))
    }
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
        let input = self.payload(&format!("the input of activity {name:?}"), &input)?;
        let options: ActivityOptions = options.into();
        let seq = self.take_seq();
        self.commands.push(Command::ScheduleActivity {
            seq,
            name,
            input,
            options,
        });
        Ok(seq)
    }

    fn start_timer(&mut self, duration_ms: u64) -> wasmtime::Result<u32> {
        let seq = self.take_seq();
        self.commands.push(Command::StartTimer { seq, duration_ms });
        Ok(seq)
    }

    fn cancel_timer(&mut self, seq: u32) -> wasmtime::Result<()> {
        self.commands.push(Command::CancelTimer { seq });
        Ok(())
    }

    fn log(&mut self, level: wit::LogLevel, message: String) -> wasmtime::Result<()> {
        if self.clock.replaying() {
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
