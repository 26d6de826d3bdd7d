//! Versions: what operators do with modules and the runs pinned to them.
//!
//! Every run stays on the module it started on until it ends; new runs of a
//! module name take its *default* module. On top of that:
//! - [`Host::deploy_module`] stores a module and (unless told not to) makes it
//!   the default of its name; with [`DeployOptions::check`] it first replays
//!   every open run of the name against it and refuses the default change if
//!   any would diverge ([`Host::promote`] does the same for a module already deployed).
//! - [`Host::check_runs`] and [`Host::check_run`]: the compatibility check,
//!   one [`RunCheck`] per open (and recently closed) run of a name.
//! - [`Host::upgrade_run`] moves an open run to another module when its history
//!   replays identically there; [`Host::resume`] puts a stuck run back to work,
//!   on the same module or a fixed one. Both record `module_changed` in the history.
//! - [`Host::reset`] starts the workflow over from a point in a run's
//!   history: a new run keeps the prefix, inherits its pending activities and
//!   timers, and receives again the signals that came after it.
//! - [`Host::collect_garbage`] deletes closed runs past their retention and the
//!   modules nothing needs any more.
//!
//! ```no_run
//! # async fn f(host: weft::Host, v2: Vec<u8>) -> Result<(), weft::HostError> {
//! use weft::versions::{DeployOptions, Verdict};
//! let deployed = host
//!     .deploy_module("loan", "2", &v2, DeployOptions { make_default: true, check: true })
//!     .await?;
//! for run in &deployed.diverging {
//!     if let Verdict::Diverged(d) = &run.verdict {
//!         println!("{} stays on its version: {d}", run.workflow_id);
//!     }
//! }
//! # Ok(()) }
//! ```

mod reset;

pub use reset::{Reapply, Reset, ResetRequest};

use crate::host::{Host, HostError};
use crate::model::{RunId, Sha256Hex};
use crate::store::{
    ChangeModule, Garbage, GarbageRequest, ModuleRecord, RunRecord, RunStatus, StoreError,
};
use crate::wasm::LoadedModule;
use crate::workflow::{Divergence, ReplayVerdict, replay_against};
use std::sync::Arc;
use std::time::Duration;

/// How [`Host::deploy_module`] treats the module's name.
#[derive(Clone, Copy, Debug)]
pub struct DeployOptions {
    /// Make it the module new runs of its name take.
    pub make_default: bool,
    /// Before making it the default, replay every open run of the name
    /// against it; if any would diverge, keep the old default.
    pub check: bool,
}

impl Default for DeployOptions {
    fn default() -> Self {
        Self {
            make_default: true,
            check: false,
        }
    }
}

/// What a deploy (or a promotion) did.
#[derive(Clone, Debug)]
pub struct Deployed {
    pub module: ModuleRecord,
    /// New runs of its name now take it.
    pub is_default: bool,
    /// With a check: the open runs that would diverge on it. Non-empty means
    /// the default was not changed.
    pub diverging: Vec<RunCheck>,
}

/// How one run's history fares against a module.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every recorded command is issued again, in order.
    Identical { events: u64 },
    /// The first recorded command the module does not issue again.
    Diverged(Box<Divergence>),
    /// No verdict: the guest trapped or the history could not be read.
    Failed { message: String },
}

/// One run in a compatibility check.
#[derive(Clone, Debug, PartialEq)]
pub struct RunCheck {
    pub run_id: RunId,
    pub workflow_id: String,
    pub workflow_type: String,
    /// Running or stuck (a closed run is checked as a sample of what ran).
    pub open: bool,
    /// The module the run is on now.
    pub module_sha256: Sha256Hex,
    pub verdict: Verdict,
}

impl RunCheck {
    /// An open run that the module would not replay.
    pub fn blocks(&self) -> bool {
        self.open && !matches!(self.verdict, Verdict::Identical { .. })
    }
}

/// What [`Host::upgrade_run`] did with one run.
#[derive(Clone, Debug, PartialEq)]
pub enum UpgradeResult {
    /// The run is on the new module now (`module_changed` is in its history).
    Upgraded,
    /// A dry run: it replays identically and would be moved.
    WouldUpgrade,
    /// It would diverge (or could not be checked): it stays where it is.
    Stays(Verdict),
    /// Nothing to do: it is on that module already, or not running.
    Skipped(String),
}

/// One run in an upgrade.
#[derive(Clone, Debug, PartialEq)]
pub struct RunUpgrade {
    pub run_id: RunId,
    pub workflow_id: String,
    pub from: Sha256Hex,
    pub result: UpgradeResult,
}

/// How often a module change is tried when a host is activating the run or
/// the run moves on between the check and the change.
const CHANGE_ATTEMPTS: u32 = 10;
/// The pause between those tries.
const CHANGE_PAUSE: Duration = Duration::from_millis(100);

impl Host {
    /// Validates, compiles and stores a module, and makes it the default of
    /// its name as `options` say (the first module of a name always becomes
    /// its default). An empty `version` is the first 12 hex digits of the
    /// module's sha256. The same bytes twice is a no-op (and the first name
    /// and version stay); other bytes under a taken name and version are refused.
    pub async fn deploy_module(
        &self,
        name: &str,
        version: &str,
        bytes: &[u8],
        options: DeployOptions,
    ) -> Result<Deployed, HostError> {
        let module = self.compile(bytes).await?;
        let version = if version.is_empty() {
            &module.sha256().as_str()[..12]
        } else {
            version
        };
        let record = self
            .store()
            .put_module(name, version, bytes, self.clock().now_ms())
            .await?;
        let first_of_its_name = self.store().default_module(&record.name).await?.is_none();
        if options.make_default || first_of_its_name {
            self.promote_loaded(record, &module, options.check).await
        } else {
            Ok(Deployed {
                module: record,
                is_default: false,
                diverging: Vec::new(),
            })
        }
    }

    /// Makes a deployed module the default of its name; with `check`, only if
    /// no open run of the name would diverge on it.
    pub async fn promote(&self, sha256: &Sha256Hex, check: bool) -> Result<Deployed, HostError> {
        let record = self.module_record(sha256).await?;
        let module = self.module(sha256).await?;
        self.promote_loaded(record, &module, check).await
    }

    async fn promote_loaded(
        &self,
        record: ModuleRecord,
        module: &LoadedModule,
        check: bool,
    ) -> Result<Deployed, HostError> {
        let mut diverging = Vec::new();
        if check {
            for run in self.check_runs(&record.name, 0).await? {
                if run.module_sha256 == record.sha256 {
                    continue;
                }
                let checked = self.check_run(module, &run).await;
                if checked.blocks() {
                    diverging.push(checked);
                }
            }
        }
        if !diverging.is_empty() {
            return Ok(Deployed {
                module: record,
                is_default: false,
                diverging,
            });
        }
        self.store()
            .set_default_module(&record.sha256, self.clock().now_ms())
            .await?;
        tracing::info!(module = %record.name, version = %record.version, sha256 = %record.sha256, "new runs take this module");
        Ok(Deployed {
            module: record,
            is_default: true,
            diverging,
        })
    }

    /// Compiles module bytes (off the async threads) without storing them.
    pub async fn compile(&self, bytes: &[u8]) -> Result<Arc<LoadedModule>, HostError> {
        Ok(self.engine().load_off_thread(bytes.to_vec()).await?)
    }

    /// A deployed module, compiled.
    pub async fn module(&self, sha256: &Sha256Hex) -> Result<Arc<LoadedModule>, HostError> {
        if let Some(m) = self.engine().loaded(sha256) {
            return Ok(m);
        }
        let bytes = match self.store().module_bytes(sha256).await {
            Err(StoreError::NotFound { .. }) => {
                return Err(HostError::UnknownModule(sha256.clone()));
            }
            other => other?,
        };
        self.compile(&bytes).await
    }

    /// A deployed module's record.
    pub async fn module_record(&self, sha256: &Sha256Hex) -> Result<ModuleRecord, HostError> {
        self.store()
            .modules()
            .await?
            .into_iter()
            .find(|m| &m.sha256 == sha256)
            .ok_or_else(|| HostError::UnknownModule(sha256.clone()))
    }

    /// The module deployed as `name` `version`.
    pub async fn module_by_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<ModuleRecord, HostError> {
        let modules = self.store().modules().await?;
        if let Some(m) = modules
            .iter()
            .find(|m| m.name == name && m.version == version)
        {
            return Ok(m.clone());
        }
        let known: Vec<&str> = modules
            .iter()
            .filter(|m| m.name == name)
            .map(|m| m.version.as_str())
            .collect();
        Err(HostError::Other(if known.is_empty() {
            format!(
                "no module named {name:?} is deployed; deploy it with `weft deploy FILE.wasm --name {name}`"
            )
        } else {
            format!(
                "module {name:?} has no version {version:?}; deployed versions: {}",
                known.join(", ")
            )
        }))
    }

    /// The runs a compatibility check of `name` looks at: every open run
    /// pinned to a module of that name, then up to `closed_sample` of the most
    /// recently closed ones.
    pub async fn check_runs(
        &self,
        name: &str,
        closed_sample: u32,
    ) -> Result<Vec<RunRecord>, HostError> {
        Ok(self.store().runs_of_module(name, closed_sample).await?)
    }

    /// Replays one run's history against `module` (which need not be the
    /// run's own): the compatibility check of one run.
    pub async fn check_run(&self, module: &LoadedModule, run: &RunRecord) -> RunCheck {
        let _slot = self.check_slot().await;
        let verdict = match self.store().history(&run.run_id).await {
            Err(e) => Verdict::Failed {
                message: format!("its history cannot be read: {e}"),
            },
            Ok(history) => match replay_against(self.engine(), module, &history).await {
                Ok(ReplayVerdict::Identical { events, .. }) => Verdict::Identical { events },
                Ok(ReplayVerdict::Diverged(d)) => Verdict::Diverged(d),
                Err(e) => Verdict::Failed {
                    message: e.to_string(),
                },
            },
        };
        RunCheck {
            run_id: run.run_id.clone(),
            workflow_id: run.workflow_id.clone(),
            workflow_type: run.workflow_type.clone(),
            open: run.status.is_open(),
            module_sha256: run.module_sha256.clone(),
            verdict,
        }
    }

    /// Moves a running run to `module` if its history replays identically
    /// there; otherwise it stays. With `dry_run` it only says what it would do.
    pub async fn upgrade_run(
        &self,
        module: &LoadedModule,
        run_id: &RunId,
        dry_run: bool,
    ) -> Result<RunUpgrade, HostError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let run = self.store().run(run_id).await?;
            let done = |result| RunUpgrade {
                run_id: run.run_id.clone(),
                workflow_id: run.workflow_id.clone(),
                from: run.module_sha256.clone(),
                result,
            };
            if &run.module_sha256 == module.sha256() {
                return Ok(done(UpgradeResult::Skipped(
                    "it is on this module already".into(),
                )));
            }
            if run.status != RunStatus::Running {
                return Ok(done(UpgradeResult::Skipped(format!(
                    "it is {}{}",
                    run.status.as_str(),
                    if run.status == RunStatus::Stuck {
                        "; resume it on the module instead (weft resume)"
                    } else {
                        ""
                    }
                ))));
            }
            let checked = self.check_run(module, &run).await;
            let Verdict::Identical { events } = checked.verdict else {
                return Ok(done(UpgradeResult::Stays(checked.verdict)));
            };
            if dry_run {
                return Ok(done(UpgradeResult::WouldUpgrade));
            }
            let change = ChangeModule {
                run_id: run.run_id.clone(),
                from: run.module_sha256.clone(),
                to: module.sha256().clone(),
                expected_last_seq: events,
                reason: "upgrade: the history replays identically on the new module".into(),
                resume: false,
                now_ms: self.clock().now_ms(),
            };
            match self.store().change_module(change).await {
                Ok(()) => {
                    tracing::info!(run_id = %run.run_id, from = %run.module_sha256, to = %module.sha256(), "upgraded a run");
                    return Ok(done(UpgradeResult::Upgraded));
                }
                Err(StoreError::Conflict { .. }) if attempt < CHANGE_ATTEMPTS => {
                    tokio::time::sleep(CHANGE_PAUSE).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Puts a stuck run back to work: on `module` (a fixed version), or on its
    /// own module when `None` (after a trap whose cause is gone, such as a
    /// limit raised). The history must replay identically on the module;
    /// otherwise the run stays stuck and the divergence is returned.
    pub async fn resume(
        &self,
        run_id: &RunId,
        module: Option<&Sha256Hex>,
    ) -> Result<RunRecord, HostError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let run = self.store().run(run_id).await?;
            if run.status != RunStatus::Stuck {
                return Err(HostError::Other(format!(
                    "run {run_id} of workflow {} is {}, not stuck: only a stuck run is resumed (move a running run with weft upgrade)",
                    run.workflow_id,
                    run.status.as_str()
                )));
            }
            let to = module.unwrap_or(&run.module_sha256).clone();
            let loaded = self.module(&to).await?;
            let checked = self.check_run(&loaded, &run).await;
            let events = match checked.verdict {
                Verdict::Identical { events } => events,
                Verdict::Diverged(d) => {
                    return Err(HostError::Other(format!(
                        "run {run_id} stays stuck: module {to} does not replay its history: {d}; fix the module, deploy it, and resume on it"
                    )));
                }
                Verdict::Failed { message } => {
                    return Err(HostError::Other(format!(
                        "run {run_id} stays stuck: replaying its history on module {to} failed: {message}"
                    )));
                }
            };
            let change = ChangeModule {
                run_id: run.run_id.clone(),
                from: run.module_sha256.clone(),
                to: to.clone(),
                expected_last_seq: events,
                reason: "resume: an operator resumed the stuck run on this module".into(),
                resume: true,
                now_ms: self.clock().now_ms(),
            };
            match self.store().change_module(change).await {
                Ok(()) => {
                    tracing::info!(%run_id, module = %to, "resumed a stuck run");
                    // Read as resumed, before the activation loop hears of
                    // it: a run that traps again at once could be stuck
                    // again by the time a later read looked.
                    let resumed = self.store().run(run_id).await;
                    self.inner().wakeups.activations.notify_one();
                    return Ok(resumed?);
                }
                Err(StoreError::Conflict { .. }) if attempt < CHANGE_ATTEMPTS => {
                    tokio::time::sleep(CHANGE_PAUSE).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deletes the runs that closed more than `retention` ago, with their
    /// histories, then the modules deployed before then that no kept run uses
    /// and that are no name's default. A dry run only counts them.
    pub async fn collect_garbage(
        &self,
        retention: Duration,
        dry_run: bool,
    ) -> Result<Garbage, HostError> {
        /// Runs deleted per transaction.
        const BATCH: u32 = 500;
        let closed_before_ms = self
            .clock()
            .now_ms()
            .saturating_sub(retention.as_millis() as u64);
        let mut total = Garbage::default();
        loop {
            let batch = self
                .store()
                .collect_garbage(GarbageRequest {
                    closed_before_ms,
                    limit: (!dry_run).then_some(BATCH),
                    dry_run,
                })
                .await?;
            total.runs += batch.runs;
            total.events += batch.events;
            total.modules.extend(batch.modules);
            if dry_run || batch.runs < u64::from(BATCH) {
                return Ok(total);
            }
        }
    }
}
