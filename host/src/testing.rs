//! A test kit for workflow authors: run a module against real (or mock)
//! activities on virtual time, in milliseconds of real time.
//!
//! [`TestEnv`] is a complete [`Host`] on an in-memory SQLite store and a
//! [`ManualClock`]. Nothing moves time but the test: [`TestEnv::sleep`] moves
//! it forward, stopping at every timer, retry and deadline on the way so that
//! each fires in order, and [`TestEnv::result`] skips ahead whenever the run is
//! only waiting on time. Signals, queries and updates go in at whatever virtual
//! time the test has reached. [`TestEnv::assert_replays`] replays the run's
//! history cut at every activation boundary, and
//! [`TestEnvBuilder::replay_every_activation`] drops the instance after every
//! activation so that each one starts with a replay, as after a crash.
//!
//! ```no_run
//! # async fn f(wasm: Vec<u8>) -> Result<(), weft::testing::TestError> {
//! use std::time::Duration;
//! use weft::testing::TestEnv;
//! use weft::{Activities, ActivityContext, ActivityError};
//!
//! let mut activities = Activities::new();
//! activities.register("greet", |_: ActivityContext, name: String| async move {
//!     Ok::<_, ActivityError>(format!("Hello, {name}!"))
//! });
//! let env = TestEnv::builder(activities).replay_every_activation().build().await?;
//! let module = env.deploy("hello", &wasm).await?;
//! let run = env.start(&module, "hello", "hello-1", "Ada").await?;
//! env.sleep(Duration::from_secs(3600)).await?; // an hour passes, at once
//! let greeting: String = env.output(&run).await?;
//! env.assert_replays(&run).await?;
//! # Ok(()) }
//! ```

use crate::activity::Activities;
use crate::host::{Host, HostConfig, HostError, Running, StartOptions, StartRequest};
use crate::model::{Event, Failure, History, RunId, Sha256Hex};
use crate::scheduler::{Clock, ManualClock};
use crate::store::{RunRecord, RunStatus, SqliteStore, Store, StoreError};
use crate::wasm::{EngineConfig, WasmEngine};
use crate::workflow::{Divergence, ReplayError, ReplayVerdict, replay_history};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// 2026-01-01T00:00:00Z: where virtual time starts unless the builder says otherwise.
pub const DEFAULT_START_MS: u64 = 1_767_225_600_000;

/// How long (real time) [`TestEnv::settle`] waits for the host to finish
/// the work that is ready before it gives up and names what is still pending.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// What went wrong in a workflow test. Each says what the run was doing.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the host did not settle within {}s of real time: {pending}; if that is an activity, register it in the Activities given to the test environment",
        SETTLE_LIMIT.as_secs()
    )]
    NotSettled { pending: String },
    #[error(
        "run {run_id} is waiting for something only the test can give (a signal, an update, a cancel): nothing is scheduled to happen; send it before asking for the result"
    )]
    Blocked { run_id: RunId },
    #[error("run {run_id} ended {status:?}, not completed: {failure}")]
    NotCompleted {
        run_id: RunId,
        status: RunStatus,
        failure: Failure,
    },
    #[error("the output of run {run_id} does not deserialize as {expected}: {reason}")]
    Output {
        run_id: RunId,
        expected: &'static str,
        reason: String,
    },
    #[error(
        "run {run_id} does not replay identically when cut after event {cut_after}: {divergence}"
    )]
    Diverged {
        run_id: RunId,
        cut_after: u64,
        divergence: Box<Divergence>,
    },
    #[error("run {run_id} cannot be replayed when cut after event {cut_after}: {error}")]
    Replay {
        run_id: RunId,
        cut_after: u64,
        error: Box<ReplayError>,
    },
    #[error("{0}")]
    Setup(String),
}

/// Builds a [`TestEnv`].
pub struct TestEnvBuilder {
    activities: Activities,
    store: Option<Arc<dyn Store>>,
    engine: Option<Arc<WasmEngine>>,
    start_ms: u64,
    clock: Option<ManualClock>,
    config: HostConfig,
}

impl TestEnvBuilder {
    /// Runs on this clock (a clone shares its time), so that activities
    /// registered before the environment exists can read virtual time too.
    /// It replaces [`start_at_ms`](Self::start_at_ms).
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Runs on this store instead of a fresh in-memory SQLite one (say, a
    /// Postgres schema, to test against production's backend).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Shares an engine (and its compiled modules) between environments: a
    /// test suite compiles each module once.
    pub fn engine(mut self, engine: Arc<WasmEngine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Where virtual time starts, in ms since the Unix epoch.
    pub fn start_at_ms(mut self, start_ms: u64) -> Self {
        self.start_ms = start_ms;
        self
    }

    /// Keeps no instance between activations: every activation first replays
    /// the run from its history, exactly what a host does after a crash. A
    /// workflow that is not deterministic is parked `stuck` at the first
    /// activation where it diverges.
    pub fn replay_every_activation(mut self) -> Self {
        self.config.warm_instances = 0;
        self
    }

    /// Adjusts the host's configuration (limits, lease times, …).
    pub fn config(mut self, adjust: impl FnOnce(&mut HostConfig)) -> Self {
        adjust(&mut self.config);
        self
    }

    pub async fn build(self) -> Result<TestEnv, TestError> {
        let store: Arc<dyn Store> = match self.store {
            Some(s) => s,
            None => Arc::new(SqliteStore::in_memory().await?),
        };
        let engine =
            match self.engine {
                Some(e) => e,
                None => Arc::new(WasmEngine::new(self.config.engine.clone()).map_err(|e| {
                    TestError::Setup(format!("cannot create the wasm engine: {e:#}"))
                })?),
            };
        let clock = self
            .clock
            .unwrap_or_else(|| ManualClock::new(self.start_ms));
        let activity_names = self.activities.names();
        let host = Host::with_engine(
            store.clone(),
            self.activities,
            self.config,
            Arc::new(clock.clone()),
            engine,
        );
        let running = host.run().await?;
        Ok(TestEnv {
            host,
            clock,
            store,
            activity_names,
            running: Some(running),
        })
    }
}

/// A host on virtual time for one test. See the [module docs](self).
pub struct TestEnv {
    host: Host,
    clock: ManualClock,
    store: Arc<dyn Store>,
    activity_names: Vec<String>,
    running: Option<Running>,
}

impl TestEnv {
    /// A builder with these activities, an in-memory store and virtual time
    /// starting at [`DEFAULT_START_MS`].
    pub fn builder(activities: Activities) -> TestEnvBuilder {
        TestEnvBuilder {
            activities,
            store: None,
            engine: None,
            start_ms: DEFAULT_START_MS,
            clock: None,
            config: HostConfig {
                host_id: "weft-test".into(),
                poll_interval: Duration::from_millis(20),
                seed: Some(7),
                engine: EngineConfig::default(),
                ..HostConfig::default()
            },
        }
    }

    /// An environment with default settings.
    pub async fn new(activities: Activities) -> Result<Self, TestError> {
        Self::builder(activities).build().await
    }

    /// The host, for everything the kit does not wrap.
    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Virtual time, ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Deploys a module (its version: the first 12 hex digits of its sha256) and returns its sha256.
    pub async fn deploy(&self, name: &str, wasm: &[u8]) -> Result<Sha256Hex, TestError> {
        // The version is the sha256 prefix: each build of a module is its own version.
        Ok(self.host.deploy(name, "", wasm).await?.sha256)
    }

    /// Starts a run and lets it run until it waits.
    pub async fn start(
        &self,
        module: &Sha256Hex,
        workflow_type: &str,
        workflow_id: &str,
        input: impl Serialize,
    ) -> Result<RunId, TestError> {
        self.start_with(
            module,
            workflow_type,
            workflow_id,
            input,
            StartOptions::default(),
        )
        .await
    }

    /// [`start`](Self::start) with options (timeouts, id policies, memo, …).
    pub async fn start_with(
        &self,
        module: &Sha256Hex,
        workflow_type: &str,
        workflow_id: &str,
        input: impl Serialize,
        options: StartOptions,
    ) -> Result<RunId, TestError> {
        let mut request =
            StartRequest::new(workflow_id, workflow_type, json(input)?, module.clone());
        request.options = options;
        let run = self.host.start(request).await?;
        self.settle().await?;
        Ok(run)
    }

    /// Sends a signal now and lets the run react.
    pub async fn signal(
        &self,
        run: &RunId,
        name: &str,
        input: impl Serialize,
    ) -> Result<(), TestError> {
        self.host.signal(run, name, json(input)?).await?;
        self.settle().await
    }

    /// Asks a query and deserializes the answer.
    pub async fn query<T: DeserializeOwned>(
        &self,
        run: &RunId,
        name: &str,
        input: impl Serialize,
    ) -> Result<T, TestError> {
        let answer = self.host.query(run, name, json(input)?).await?;
        serde_json::from_value(answer).map_err(|e| TestError::Output {
            run_id: run.clone(),
            expected: std::any::type_name::<T>(),
            reason: format!("query {name}: {e}"),
        })
    }

    /// Sends an update and waits for the workflow's answer (the update's own
    /// activities run meanwhile; time does not move).
    pub async fn update(
        &self,
        run: &RunId,
        name: &str,
        input: impl Serialize,
    ) -> Result<Value, TestError> {
        let answer = self.host.update(run, name, json(input)?).await?;
        self.settle().await?;
        Ok(answer)
    }

    /// Asks the run to cancel and lets it react.
    pub async fn cancel(&self, run: &RunId, reason: &str) -> Result<(), TestError> {
        self.host.cancel(run, reason).await?;
        self.settle().await
    }

    /// Waits (in real time, bounded) until nothing more can happen without
    /// time moving on or the test sending something.
    pub async fn settle(&self) -> Result<(), TestError> {
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        let mut pause = Duration::from_millis(1);
        loop {
            let Some(pending) = self.store.pending_work(self.clock.now_ms()).await? else {
                return Ok(());
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(TestError::NotSettled { pending });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// The next time something is due: a timer, a run deadline, an activity
    /// retry or lease expiry, an activity timeout.
    async fn next_due(&self) -> Result<Option<u64>, TestError> {
        let due = [
            self.store.next_timer_at().await?,
            self.store.next_activity_at(&self.activity_names).await?,
            self.store.next_activity_timeout_at().await?,
        ];
        Ok(due.into_iter().flatten().min())
    }

    /// Lets `duration` of virtual time pass, stopping at every timer,
    /// deadline and retry on the way so that each happens in order.
    pub async fn sleep(&self, duration: Duration) -> Result<(), TestError> {
        let target = self
            .clock
            .now_ms()
            .saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        loop {
            self.settle().await?;
            match self.next_due().await? {
                Some(t) if t <= target && t > self.clock.now_ms() => self.clock.set(t),
                Some(t) if t <= self.clock.now_ms() => {
                    // Due already but not yet taken: let the loops catch up.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                _ => break,
            }
        }
        self.clock.set(target.max(self.clock.now_ms()));
        self.settle().await
    }

    /// Runs the workflow to its end, skipping virtual time whenever it only
    /// waits on timers; follows continue-as-new to the last run. Returns
    /// [`TestError::Blocked`] if it waits for something only the test can send.
    pub async fn result(&self, run: &RunId) -> Result<RunRecord, TestError> {
        let mut current = run.clone();
        loop {
            self.settle().await?;
            let record = self.host.describe(&current).await?;
            match (record.status, &record.continued_to) {
                (RunStatus::ContinuedAsNew, Some(next)) => {
                    current = next.clone();
                    continue;
                }
                (RunStatus::Running, _) => {}
                _ => return Ok(record),
            }
            match self.next_due().await? {
                Some(t) if t > self.clock.now_ms() => self.clock.set(t),
                Some(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                None => return Err(TestError::Blocked { run_id: current }),
            }
        }
    }

    /// Runs the workflow to its end and deserializes its output; any other
    /// end is an error naming the failure.
    pub async fn output<T: DeserializeOwned>(&self, run: &RunId) -> Result<T, TestError> {
        let record = self.result(run).await?;
        match crate::outcome(&record) {
            Ok(output) => serde_json::from_value(output).map_err(|e| TestError::Output {
                run_id: record.run_id.clone(),
                expected: std::any::type_name::<T>(),
                reason: e.to_string(),
            }),
            Err(failure) => Err(TestError::NotCompleted {
                run_id: record.run_id,
                status: record.status,
                failure,
            }),
        }
    }

    pub async fn history(&self, run: &RunId) -> Result<History, TestError> {
        Ok(self.host.history(run).await?)
    }

    /// Replays the run's history against its module cut before every
    /// activation and at its end: what a host that crashed at each of those
    /// points would do. Every cut must replay identically.
    pub async fn assert_replays(&self, run: &RunId) -> Result<(), TestError> {
        let record = self.host.describe(run).await?;
        let history = self.host.history(run).await?;
        let module = match self.host.engine().loaded(&record.module_sha256) {
            Some(m) => m,
            None => {
                let bytes = self.store.module_bytes(&record.module_sha256).await?;
                self.host.engine().load(&bytes).map_err(HostError::from)?
            }
        };
        let events = history.events();
        let mut cuts: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.event, Event::ActivationStarted { .. }))
            .map(|(i, _)| i)
            .collect();
        cuts.push(events.len());
        for cut in cuts {
            let prefix = History::from_recorded(events[..cut].to_vec());
            let cut_after = cut as u64;
            match replay_history(self.host.engine(), &module, &prefix).await {
                Ok(ReplayVerdict::Identical { .. }) => {}
                Ok(ReplayVerdict::Diverged(divergence)) => {
                    return Err(TestError::Diverged {
                        run_id: run.clone(),
                        cut_after,
                        divergence,
                    });
                }
                Err(error) => {
                    return Err(TestError::Replay {
                        run_id: run.clone(),
                        cut_after,
                        error: Box::new(error),
                    });
                }
            }
        }
        Ok(())
    }

    /// Stops the host's loops.
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// The bytes of a workflow component built by `scripts/build-guests`, by
/// crate name (`approval-workflow`). Looks in `$CARGO_TARGET_DIR`, else in the
/// `target/` directory of the nearest enclosing workspace.
pub fn guest_wasm(crate_name: &str) -> Result<Vec<u8>, TestError> {
    let file = format!("{}.wasm", crate_name.replace('-', "_"));
    let relative = std::path::Path::new("wasm32-wasip2")
        .join("guest")
        .join(&file);
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(std::path::PathBuf::from(dir).join(&relative));
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            candidates.push(dir.join("target").join(&relative));
        }
    }
    for path in &candidates {
        if let Ok(bytes) = std::fs::read(path) {
            return Ok(bytes);
        }
    }
    Err(TestError::Setup(format!(
        "cannot find {file} (looked in {}); build the workflows first with `scripts/build-guests`",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn json(value: impl Serialize) -> Result<Value, TestError> {
    serde_json::to_value(value)
        .map_err(|e| TestError::Setup(format!("a test input does not serialize to JSON: {e}")))
}
