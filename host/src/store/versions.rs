//! What operators change about versions: which module each name's new runs
//! take ([`VersionStore::set_default_module`]), which module an open run is on
//! ([`VersionStore::change_module`]), and what is kept
//! ([`VersionStore::collect_garbage`]).

use super::{ActivationCommit, CreateRun, ModuleRecord, RunRecord, StoreResult};
use crate::model::{RunId, Sha256Hex};
use async_trait::async_trait;
use serde_json::Value;

/// What a reset run receives again: what the old run received after the
/// reset point, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reapplied {
    /// Name and input of each signal.
    pub signals: Vec<(String, Value)>,
    /// Each update, with its id: a caller who retries it with that id gets
    /// the reset run's answer.
    pub updates: Vec<ReappliedUpdate>,
}

/// An update a reset run receives again.
#[derive(Clone, Debug, PartialEq)]
pub struct ReappliedUpdate {
    pub update_id: String,
    pub name: String,
    pub input: Value,
}

/// A deployed module and what uses it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleUsage {
    pub module: ModuleRecord,
    /// New runs of the module's name take this module.
    pub is_default: bool,
    /// Runs pinned to it that are running or stuck.
    pub open_runs: u64,
    /// Closed runs pinned to it whose histories are kept.
    pub closed_runs: u64,
}

/// Moves one open run to another module: an upgrade, or the resume of a stuck
/// run on a fixed module. The caller has replayed the history up to
/// `expected_last_seq` against `to` and found it identical; the change
/// applies only if the history has not moved on since and no host is
/// activating the run, so that the check still holds.
#[derive(Clone, Debug)]
pub struct ChangeModule {
    pub run_id: RunId,
    /// The module the run is on now.
    pub from: Sha256Hex,
    /// The module it moves to. Equal to `from` with `resume`: resume on the same module.
    pub to: Sha256Hex,
    /// The last event the check replayed.
    pub expected_last_seq: u64,
    /// Recorded in the `module_changed` event.
    pub reason: String,
    /// The run is stuck and becomes running again (only a stuck run may).
    pub resume: bool,
    pub now_ms: u64,
}

/// What [`VersionStore::collect_garbage`] removes.
#[derive(Clone, Debug)]
pub struct GarbageRequest {
    /// Closed runs that closed before this, with their histories; then the
    /// modules deployed before this that no kept run uses and no name has as
    /// its default.
    pub closed_before_ms: u64,
    /// At most this many runs in one call (one transaction); `None`: all.
    pub limit: Option<u32>,
    /// Count what would go, and keep it.
    pub dry_run: bool,
}

/// What [`VersionStore::collect_garbage`] removed (or, in a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Garbage {
    pub runs: u64,
    pub events: u64,
    pub modules: Vec<ModuleRecord>,
}

/// Versions, defaults and retention.
#[async_trait]
pub trait VersionStore: Send + Sync {
    /// Makes a deployed module the one new runs of its name take.
    async fn set_default_module(
        &self,
        sha256: &Sha256Hex,
        now_ms: u64,
    ) -> StoreResult<ModuleRecord>;
    /// The module new runs of `name` take, if any of that name is deployed.
    async fn default_module(&self, name: &str) -> StoreResult<Option<ModuleRecord>>;
    /// Every deployed module with its default flag and run counts, oldest first.
    async fn module_usage(&self) -> StoreResult<Vec<ModuleUsage>>;
    /// The open runs pinned to any module of `name` (oldest first), then up
    /// to `closed_sample` of its most recently closed runs: what a
    /// compatibility check replays.
    async fn runs_of_module(&self, name: &str, closed_sample: u32) -> StoreResult<Vec<RunRecord>>;
    /// Appends `module_changed` and moves the run, or fails with
    /// [`StoreError::Conflict`](super::StoreError::Conflict) saying why not
    /// (the run moved on, is being activated, closed, or is on another module).
    async fn change_module(&self, change: ChangeModule) -> StoreResult<()>;
    /// Deletes closed runs past their retention and the modules nothing needs any more.
    async fn collect_garbage(&self, request: GarbageRequest) -> StoreResult<Garbage>;
    /// Places a reset run in one transaction, so that no host sees part of
    /// it: `run` with its event 1, then `rest` — the events that follow event 1
    /// and the activities and timers the kept prefix left pending, laid out as
    /// an activation commit (its lease token and outcome are ignored) — and
    /// the signals and updates it receives again, queued in order. Fails like [`RunStore::create_run`](super::RunStore::create_run)
    /// when the workflow id has an open run.
    async fn create_reset_run(
        &self,
        run: CreateRun,
        rest: ActivationCommit,
        reapplied: Reapplied,
    ) -> StoreResult<()>;
}
