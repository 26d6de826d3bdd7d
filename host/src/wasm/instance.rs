//! One live guest: a wasmtime store plus the instantiated workflow world.

use super::bindings::{self, Workflow};
use super::engine::{EPOCH_TICK, LoadedModule, WasmEngine};
use super::state::{Diverging, Expected, GuestState, RunInfo};
use crate::model::{Command, GuestStatus, Job, RunId};
use std::sync::atomic::Ordering;
use wasmtime::{Store, UpdateDeadline};

/// Why a guest call did not return normally. The run is parked, never failed:
/// the history is intact and a fixed module can carry on from it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuestError {
    #[error(
        "the activation ran past its deadline of {limit_ms} ms (an endless loop?); raise `activation_timeout` if the work is legitimate"
    )]
    Deadline { limit_ms: u64 },
    #[error(
        "the guest exceeded its memory limit of {limit_bytes} bytes; raise `memory_limit_bytes` or keep less state in the workflow"
    )]
    Memory { limit_bytes: usize },
    #[error("the guest trapped: {message}")]
    Trap { message: String },
    #[error("the guest broke the contract: {message}")]
    Contract { message: String },
    #[error("the instance cannot be created: {message}")]
    Instantiate { message: String },
    /// Replaying with [`Instance::expect`]: the guest issued `issued` as the
    /// activation's command number `index` (from 0), which the history does
    /// not record there. `location` is the guest function that issued it
    /// (with file and line when the module carries debug info).
    #[error("the guest issued {} where the history records another command{}", issued.kind(), location.as_ref().map(|l| format!(" (in {l})")).unwrap_or_default())]
    Diverged {
        index: usize,
        issued: Box<crate::model::Event>,
        location: Option<String>,
    },
    /// Not the guest's fault: every instance slot is in use. Retry later.
    #[error(
        "every instance slot is in use ({message}); the activation is retried when one frees up, raise `pooled_instances` if this persists"
    )]
    PoolExhausted { message: String },
}

/// The result of one activation: the guest's status and the commands it issued, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    pub status: GuestStatus,
    pub commands: Vec<Command>,
}

/// What a new instance needs to know about its run.
#[derive(Debug, Clone)]
pub struct InstanceOptions {
    pub run_id: RunId,
    /// The random seed recorded in the run's first event.
    pub seed: u64,
    pub info: RunInfo,
    /// Change ids whose patch marker the history holds (empty for a new run).
    pub recorded_patches: std::collections::BTreeSet<String>,
}

/// Epoch ticks in a budget of `limit_ms`.
fn ticks_for(limit_ms: u64) -> u64 {
    (limit_ms / EPOCH_TICK.as_millis() as u64).max(1)
}

/// A guest instance, used by one activation at a time.
pub struct Instance {
    store: Store<GuestState>,
    bindings: Workflow,
    limit_ms: u64,
    limit_bytes: usize,
    /// A trapped instance cannot be entered again.
    poisoned: bool,
}

impl Instance {
    pub async fn new(
        engine: &WasmEngine,
        module: &LoadedModule,
        options: InstanceOptions,
    ) -> Result<Self, GuestError> {
        let config = &engine.config;
        let mut state = GuestState::new(
            options.run_id,
            options.seed,
            config.memory_limit_bytes,
            config.max_payload_bytes,
            config.run_limits.clone(),
        );
        state.info = options.info;
        state.recorded_patches = options.recorded_patches;
        // Instantiation runs guest code too (component start functions): give it a budget.
        state.ticks_left = ticks_for(config.activation_timeout.as_millis() as u64);
        let mut store = Store::new(engine.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            if state.ticks_left == 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            state.ticks_left -= 1;
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        let bindings = module
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| {
                let message = format!("{e:#}");
                if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some()
                {
                    GuestError::PoolExhausted { message }
                } else {
                    GuestError::Instantiate { message }
                }
            })?;
        Ok(Self {
            store,
            bindings,
            limit_ms: config.activation_timeout.as_millis() as u64,
            limit_bytes: config.memory_limit_bytes,
            poisoned: false,
        })
    }

    /// Sets the workflow time and whether the next calls replay recorded history.
    /// While replaying to locate divergences: the events the next
    /// activation recorded for its commands (`None`: stop checking). A
    /// different command then ends the call with [`GuestError::Diverged`],
    /// which names the guest code that issued it.
    pub(crate) fn expect(&mut self, events: Option<Vec<crate::model::Event>>) {
        self.store.data_mut().expected = events.map(|events| Expected { events, next: 0 });
    }

    pub fn set_time(&mut self, time_ms: u64, replaying: bool) {
        let clock = &self.store.data().clock;
        clock.time_ms.store(time_ms, Ordering::Relaxed);
        clock.replaying.store(replaying, Ordering::Relaxed);
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn arm(&mut self) {
        self.store.data_mut().ticks_left = ticks_for(self.limit_ms);
        self.store.set_epoch_deadline(1);
        self.store.data_mut().commands.clear();
    }

    /// Ends a guest call's log budget (warning of what it dropped).
    fn settle_logs(&self) {
        let state = self.store.data();
        state.log_budget.settle(&state.run_id);
    }

    fn classify(&mut self, err: wasmtime::Error) -> GuestError {
        self.poisoned = true;
        self.settle_logs();
        if matches!(
            err.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        ) {
            return GuestError::Trap {
                message: format!(
                    "the guest holds {} handles (streams, pollables) at once, the limit (--max-guest-resources); it must drop the handles it no longer needs",
                    self.store.data().run_limits.max_guest_resources
                ),
            };
        }
        if let Some(d) = err.downcast_ref::<Diverging>() {
            return GuestError::Diverged {
                index: d.index,
                issued: d.issued.clone(),
                location: err
                    .downcast_ref::<wasmtime::WasmBacktrace>()
                    .and_then(guest_location),
            };
        }
        if err.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            return GuestError::Deadline {
                limit_ms: self.limit_ms,
            };
        }
        let message = format!("{err:#}");
        if message.contains("forcing trap when growing memory") {
            return GuestError::Memory {
                limit_bytes: self.limit_bytes,
            };
        }
        GuestError::Trap { message }
    }

    fn finish(&mut self, status: bindings::wit::Status) -> Result<Activation, GuestError> {
        self.settle_logs();
        let limit = self.store.data().max_payload_bytes;
        let status = bindings::status_from_wit(status, limit)
            .map_err(|message| GuestError::Contract { message })?;
        Ok(Activation {
            status,
            commands: std::mem::take(&mut self.store.data_mut().commands),
        })
    }

    fn check_usable(&self) -> Result<(), GuestError> {
        if self.poisoned {
            return Err(GuestError::Contract {
                message: "this instance trapped before and cannot be used again".into(),
            });
        }
        Ok(())
    }

    /// The first activation: calls the workflow function with its input.
    pub async fn start(
        &mut self,
        workflow_type: &str,
        input: &serde_json::Value,
    ) -> Result<Activation, GuestError> {
        self.check_usable()?;
        self.arm();
        let input = input.to_string();
        match self
            .bindings
            .call_start(&mut self.store, workflow_type, &input)
            .await
        {
            Ok(status) => self.finish(status),
            Err(e) => Err(self.classify(e)),
        }
    }

    /// A later activation: delivers jobs in order.
    pub async fn deliver(&mut self, jobs: &[Job]) -> Result<Activation, GuestError> {
        self.check_usable()?;
        self.arm();
        let open = &mut self.store.data_mut().open;
        for job in jobs {
            open.resolve(job);
        }
        let jobs: Vec<bindings::wit::Job> = jobs.iter().map(bindings::job_to_wit).collect();
        match self.bindings.call_deliver(&mut self.store, &jobs).await {
            Ok(status) => self.finish(status),
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Asks the guest whether it accepts an update. Like a query, it must not
    /// change state; commands it tries are dropped.
    pub async fn validate_update(
        &mut self,
        name: &str,
        input: &serde_json::Value,
    ) -> Result<Result<(), String>, GuestError> {
        self.check_usable()?;
        self.arm();
        let input = input.to_string();
        // Commands a validator tries are dropped, and so is their count.
        let open = self.store.data().open.clone();
        let answer = match self
            .bindings
            .call_validate_update(&mut self.store, name, &input)
            .await
        {
            Ok(answer) => answer,
            Err(e) => return Err(self.classify(e)),
        };
        self.settle_logs();
        self.store.data_mut().open = open;
        let issued = std::mem::take(&mut self.store.data_mut().commands);
        if !issued.is_empty() {
            tracing::warn!(run_id = %self.store.data().run_id, "the validator of update {name:?} issued {} command(s); validators must only read state, the commands were dropped", issued.len());
        }
        Ok(answer)
    }

    /// Asks a query. The outer error is the guest failing; the inner one is the
    /// guest's own answer that the query is wrong (unknown name, bad input).
    pub async fn query(
        &mut self,
        name: &str,
        input: &serde_json::Value,
    ) -> Result<Result<serde_json::Value, String>, GuestError> {
        self.check_usable()?;
        self.arm();
        let input = input.to_string();
        let open = self.store.data().open.clone();
        let answer = match self
            .bindings
            .call_query(&mut self.store, name, &input)
            .await
        {
            Ok(answer) => answer,
            Err(e) => return Err(self.classify(e)),
        };
        self.settle_logs();
        // A query must not issue commands; any it tried are dropped, and
        // so is their count.
        self.store.data_mut().open = open;
        let issued = std::mem::take(&mut self.store.data_mut().commands);
        if !issued.is_empty() {
            tracing::warn!(run_id = %self.store.data().run_id, "query {name:?} issued {} command(s); queries must only read state, the commands were dropped", issued.len());
        }
        Ok(match answer {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| format!("the answer to query {name:?} is not valid JSON: {e}")),
            Err(message) => Err(message),
        })
    }
}

/// Where in the guest's own code a backtrace was taken: the innermost source
/// line outside the SDK, its bindings and the standard library, when the
/// module carries DWARF line tables; else the innermost such function by
/// name. Release builds inline the workflow into the SDK's executor, so
/// without debug info there is often nothing to name (`None`).
fn guest_location(bt: &wasmtime::WasmBacktrace) -> Option<String> {
    const PLUMBING_FILES: &[&str] = &[
        "/guest-sdk/",
        "/weft-sdk",
        "/wit-bindgen",
        "/rustc/",
        "/.cargo/registry/",
        "/library/core/",
        "/library/alloc/",
        "/library/std/",
    ];
    const PLUMBING_NAMES: &[&str] = &[
        "weft_sdk::",
        "<weft_sdk::",
        "wit_bindgen",
        "<wit_bindgen",
        "core::",
        "<core::",
        "alloc::",
        "<alloc::",
        "std::",
        "<std::",
    ];
    const EXPORTS: &[&str] = &["start", "deliver", "query", "validate-update"];
    let line = bt.frames().iter().find_map(|frame| {
        frame.symbols().iter().find_map(|symbol| {
            let file = symbol.file()?;
            if PLUMBING_FILES.iter().any(|p| file.contains(p)) {
                return None;
            }
            Some(match symbol.line() {
                Some(line) => format!("{file}:{line}"),
                None => file.to_owned(),
            })
        })
    });
    line.or_else(|| {
        bt.frames().iter().find_map(|frame| {
            let name = format!("{:#}", rustc_demangle::demangle(frame.func_name()?));
            let plumbing = PLUMBING_NAMES.iter().any(|p| name.starts_with(p))
                || EXPORTS.contains(&name.as_str())
                || name.starts_with("wasm-function");
            (!plumbing).then_some(name)
        })
    })
}
