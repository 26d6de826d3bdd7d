//! The front door: a [`Host`] runs workflows from deployed modules against a
//! store, with native activities, and answers starts, signals, queries and
//! result requests.

use crate::activity::Activities;
use crate::model::{Event, EventHash, Failure, History, RunId, Sha256Hex};
use crate::scheduler::{
    Clock, Closing, SystemClock, WAITER_POLL, Wakeups, activation_loop, activity_loop, change_loop,
    waiter_loop,
};
use crate::store::{
    CreateRun, Created, IdConflictPolicy, IdReusePolicy, ListFilter, ModuleRecord, RunOptions,
    RunPage, RunRecord, RunStatus, Store, StoreError, WaitingOn,
};
use crate::wasm::{EngineConfig, LoadError, RunRng, WasmEngine};
use crate::workflow::{Driver, DriverConfig, ReplayError, ReplayVerdict, replay_history};
use serde_json::Value;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::futures::Notified;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a host behaves. The defaults suit one host on a laptop.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Names this host in leases. A host restarted under the same id takes its
    /// old leases back at once instead of waiting for them to expire, so hosts
    /// sharing one database must each have their own id. The default is the
    /// machine's hostname.
    pub host_id: String,
    pub engine: EngineConfig,
    /// How long a claimed run stays this host's if the host goes silent; also
    /// how long a local activity waits for this host before any host may run it.
    pub run_lease: Duration,
    /// Start-to-close timeout (and lease) of activities that set none.
    pub default_start_to_close: Duration,
    pub max_concurrent_activations: usize,
    pub max_concurrent_activities: usize,
    /// Queries, update validators, replays and compatibility checks run at
    /// once, at most: each runs a guest instance, and a flood of them must
    /// not starve activations of CPU or the instance pool. A query, a
    /// validator or a replay that finds them all busy waits its turn up to
    /// 10 s, then is refused as busy (retryable).
    pub max_concurrent_queries: usize,
    /// How often idle loops look for work made ready by other hosts: a
    /// safety net, since a store with a change feed (Postgres `LISTEN/NOTIFY`)
    /// wakes them at once and SQLite's one host wakes its own. Those waiting
    /// for a run another host drives look at least every half second.
    pub poll_interval: Duration,
    /// Instances kept warm between activations (each holds its memory). 0
    /// keeps none: every activation replays the run from its history, as
    /// after a crash (the test kit uses it to prove replay).
    pub warm_instances: usize,
    /// Seeds run ids and workflow seeds; `None` draws from the operating system.
    pub seed: Option<u64>,
    /// Signs the head of every history this host exports or serves, so an
    /// export proves its origin to anyone with the public key ([`crate::audit::Signer`]).
    pub signer: Option<crate::audit::Signer>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            host_id: default_host_id(),
            engine: EngineConfig::default(),
            run_lease: Duration::from_secs(30),
            default_start_to_close: Duration::from_secs(60),
            max_concurrent_activations: 32,
            max_concurrent_activities: 64,
            max_concurrent_queries: 8,
            poll_interval: Duration::from_secs(5),
            warm_instances: 1024,
            seed: None,
            signer: None,
        }
    }
}

/// The machine's hostname: stable across restarts, distinct across machines.
fn default_host_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weft".into())
}

/// What went wrong with a request to the host. Each names the thing and the fix.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "module {0} is not deployed; deploy it first (Host::deploy) and start runs with the sha256 it returns"
    )]
    UnknownModule(Sha256Hex),
    #[error(
        "{what} is {size} bytes, over the limit of {limit} bytes; pass a reference (an id, a URL) instead of the data"
    )]
    PayloadTooLarge {
        what: String,
        size: usize,
        limit: usize,
    },
    /// A name or id a caller gave is too long or holds a NUL.
    #[error("{0}")]
    BadName(String),
    /// Every slot for queries, validators, replays and checks stayed busy
    /// for [`INSPECTION_WAIT`].
    #[error(
        "the host is running {limit} queries, update validations, replays and checks at once, its limit (--max-concurrent-queries), and none finished within {} s; ask again shortly",
        INSPECTION_WAIT.as_secs()
    )]
    Busy { limit: usize },
    #[error("query {name:?} on run {run_id} was refused by the workflow: {message}")]
    QueryRefused {
        run_id: RunId,
        name: String,
        message: String,
    },
    #[error(
        "update {name:?} on run {run_id} was rejected by the workflow's validator: {message}; nothing was recorded"
    )]
    UpdateRejected {
        run_id: RunId,
        name: String,
        message: String,
    },
    #[error("update {name:?} on run {run_id} failed: {failure}")]
    UpdateFailed {
        run_id: RunId,
        name: String,
        failure: Failure,
    },
    #[error("run {run_id} cannot be rebuilt: {error}")]
    Replay {
        run_id: RunId,
        error: Box<ReplayError>,
    },
    #[error("{0}")]
    Other(String),
}

impl HostError {
    /// Whether the same request may succeed if made again later: the
    /// database was unavailable (the error says so, and that it is retryable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, HostError::Store(e) if e.is_retryable())
    }
}

/// How often a caller waiting on a run looks again while this host's
/// [`waiter_loop`](crate::scheduler::waiter_loop) looks for it: only in
/// case a wake-up went astray.
const WATCHED_WAITER_POLL: Duration = Duration::from_secs(30);

/// An update to send ([`Host::update_within`]).
#[derive(Clone, Debug)]
pub struct UpdateCall {
    pub run_id: RunId,
    /// Makes the update idempotent: a second call with the same id waits
    /// for the first one's answer. `None`: one is made up.
    pub update_id: Option<String>,
    pub name: String,
    pub input: Value,
    /// The longest the call waits for the answer; `None`: until it comes.
    pub wait: Option<Duration>,
}

/// How an update call ended.
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateAnswer {
    /// The workflow's answer.
    Answered(Value),
    /// Accepted, not yet answered when the wait ran out; ask again with this id.
    Pending { update_id: String },
}

/// What to start.
#[derive(Clone, Debug)]
pub struct StartRequest {
    /// Chosen by the caller; unique among open runs.
    pub workflow_id: String,
    /// The workflow function's registered name in the module.
    pub workflow_type: String,
    pub input: Value,
    /// The deployed module the run is pinned to.
    pub module: Sha256Hex,
    pub options: StartOptions,
}

/// How a run starts, beyond what it runs. The default: a new id is required
/// only among open runs, no time limits, no memo.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Whether the id may follow closed runs of the same id.
    pub id_reuse_policy: IdReusePolicy,
    /// What happens when the id has an open run.
    pub id_conflict_policy: IdConflictPolicy,
    /// The whole execution, continue-as-new included, must end within this.
    pub execution_timeout: Option<Duration>,
    /// Each run must end within this.
    pub run_timeout: Option<Duration>,
    /// Shown by `describe`; the workflow never sees it.
    pub memo: Option<Value>,
    /// Initial search attributes: a JSON object of scalars.
    pub search_attributes: Option<Value>,
}

impl StartRequest {
    /// A start with default options.
    pub fn new(
        workflow_id: impl Into<String>,
        workflow_type: impl Into<String>,
        input: Value,
        module: Sha256Hex,
    ) -> Self {
        Self {
            workflow_id: workflow_id.into(),
            workflow_type: workflow_type.into(),
            input,
            module,
            options: StartOptions::default(),
        }
    }
}

pub(crate) struct HostInner {
    pub(crate) config: HostConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) activities: Activities,
    pub(crate) driver: Driver,
    pub(crate) wakeups: Wakeups,
    pub(crate) metrics: crate::metrics::Metrics,
    rng: RunRng,
    /// The database's task-token key, read once ([`HostInner::task_token_key`]).
    task_token_key: tokio::sync::OnceCell<[u8; 32]>,
    /// Slots for queries, validators, replays and checks
    /// ([`HostConfig::max_concurrent_queries`]).
    inspections: tokio::sync::Semaphore,
}

/// How long a query, an update's validation or a replay waits for a slot
/// ([`HostConfig::max_concurrent_queries`]) before it is refused as busy.
pub(crate) const INSPECTION_WAIT: Duration = Duration::from_secs(10);

impl HostInner {
    /// The key that MACs the task tokens of remote workers: the database's,
    /// shared by every host on it, read on first use and kept.
    pub(crate) async fn task_token_key(&self) -> Result<[u8; 32], StoreError> {
        self.task_token_key
            .get_or_try_init(|| self.store.task_token_key())
            .await
            .copied()
    }
}

/// A durable workflow host. Cheap to clone.
///
/// ```no_run
/// # async fn f(wasm: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
/// use weft::{Activities, ActivityContext, ActivityError, Host, HostConfig, StartRequest};
/// let store = weft::store::open("weft.db").await?;
/// let mut activities = Activities::new();
/// activities.register("greet", |_: ActivityContext, name: String| async move {
///     Ok::<_, ActivityError>(format!("Hello, {name}!"))
/// });
/// let host = Host::new(store, activities, HostConfig::default())?;
/// let running = host.run().await?;
/// let module = host.deploy("hello", "1", &wasm).await?;
/// let run = host
///     .start(StartRequest::new("hello-1", "hello", serde_json::json!("Ada"), module.sha256))
///     .await?;
/// let record = host.wait(&run).await?;
/// println!("{:?}", record.output);
/// running.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

/// The host's loops, running until [`Running::shutdown`].
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops claiming new work and waits for the loops, and the activations
    /// in flight, to end. Activity attempts still running are not waited for:
    /// if the process exits, they are retried once their timeouts expire.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

impl Host {
    /// A host on the real clock.
    pub fn new(
        store: Arc<dyn Store>,
        activities: Activities,
        config: HostConfig,
    ) -> Result<Self, HostError> {
        Self::with_clock(store, activities, config, Arc::new(SystemClock))
    }

    /// A host on a given clock, such as a [`ManualClock`](crate::ManualClock) in tests.
    pub fn with_clock(
        store: Arc<dyn Store>,
        activities: Activities,
        config: HostConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, HostError> {
        let engine = Arc::new(
            WasmEngine::new(config.engine.clone())
                .map_err(|e| HostError::Other(format!("cannot create the wasm engine: {e:#}")))?,
        );
        Ok(Self::with_engine(store, activities, config, clock, engine))
    }

    /// A host sharing an engine (and so its compiled modules) with others in the process.
    pub fn with_engine(
        store: Arc<dyn Store>,
        activities: Activities,
        config: HostConfig,
        clock: Arc<dyn Clock>,
        engine: Arc<WasmEngine>,
    ) -> Self {
        let seed = config.seed.unwrap_or_else(|| {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).expect("the operating system has randomness");
            u64::from_le_bytes(b)
        });
        let rng = RunRng::new(seed);
        let driver = Driver::new(
            engine,
            store.clone(),
            clock.clone(),
            rng.clone(),
            DriverConfig {
                warm_instances: config.warm_instances,
                local_activity_window_ms: config.run_lease.as_millis() as u64,
                default_lease_ms: config.default_start_to_close.as_millis() as u64,
            },
        );
        let inspections = tokio::sync::Semaphore::new(config.max_concurrent_queries.max(1));
        Self {
            inner: Arc::new(HostInner {
                inspections,
                config,
                store,
                clock,
                activities,
                driver,
                wakeups: Wakeups::default(),
                metrics: crate::metrics::Metrics::default(),
                rng,
                task_token_key: tokio::sync::OnceCell::new(),
            }),
        }
    }

    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    pub(crate) fn wakeups(&self) -> &Wakeups {
        &self.inner.wakeups
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// A fresh run id from the host's seeded randomness.
    pub(crate) fn new_run_id(&self) -> RunId {
        RunId::from_random(
            (u128::from(self.inner.rng.next_u64()) << 64) | u128::from(self.inner.rng.next_u64()),
        )
    }

    /// The host's internals, for the API's services.
    pub(crate) fn inner(&self) -> &Arc<HostInner> {
        &self.inner
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn engine(&self) -> &Arc<WasmEngine> {
        self.inner.driver.engine()
    }

    /// Starts the loops that activate runs and execute activities. Takes back
    /// the leases an earlier process with the same host id held.
    pub async fn run(&self) -> Result<Running, HostError> {
        let reclaimed = self
            .inner
            .store
            .reclaim_leases(&self.inner.config.host_id)
            .await?;
        if reclaimed > 0 {
            tracing::info!(host_id = %self.inner.config.host_id, reclaimed, "took back leases from an earlier process of this host");
        }
        let (stop, rx) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(activation_loop(self.inner.clone(), rx.clone())),
            tokio::spawn(activity_loop(self.inner.clone(), rx.clone())),
            tokio::spawn(waiter_loop(self.inner.clone(), rx.clone())),
        ];
        if self.inner.config.signer.is_some() {
            tasks.push(tokio::spawn(crate::audit::seal_loop(
                self.clone(),
                rx.clone(),
            )));
        }
        // Other hosts' work wakes this one's loops (Postgres: LISTEN/NOTIFY).
        if let Some(changes) = self.inner.store.changes() {
            tasks.push(tokio::spawn(change_loop(self.inner.clone(), changes, rx)));
        }
        Ok(Running { stop, tasks })
    }

    /// Validates, compiles and stores a module, and makes it the default of
    /// its name: new runs started by name take it, open runs stay on theirs.
    /// The same bytes twice is a no-op. See
    /// [`deploy_module`](Self::deploy_module) for a checked deploy.
    pub async fn deploy(
        &self,
        name: &str,
        version: &str,
        bytes: &[u8],
    ) -> Result<ModuleRecord, HostError> {
        Ok(self
            .deploy_module(name, version, bytes, Default::default())
            .await?
            .module)
    }

    /// A name or id a caller gave, held to what a guest may pass: at most
    /// 1,000 bytes, no NUL.
    fn check_name(what: impl FnOnce() -> String, text: &str) -> Result<(), HostError> {
        crate::wasm::check_name(&what(), text).map_err(HostError::BadName)
    }

    fn check_payload(&self, what: impl FnOnce() -> String, value: &Value) -> Result<(), HostError> {
        let limit = self.inner.config.engine.max_payload_bytes;
        let size = value.to_string().len();
        if size > limit {
            return Err(HostError::PayloadTooLarge {
                what: what(),
                size,
                limit,
            });
        }
        crate::wasm::warn_if_large(&what(), size);
        Ok(())
    }

    /// Starts a run; it is activated by this or any host sharing the store.
    /// Under [`IdConflictPolicy::UseExisting`] an open run of the id is
    /// returned instead.
    pub async fn start(&self, request: StartRequest) -> Result<RunId, HostError> {
        self.create(self.new_run_id(), request, None).await
    }

    /// Starts a run and waits, at most `limit`, for the workflow's outcome
    /// as [`wait_workflow`](Self::wait_workflow) does: the run started (or
    /// the open run [`IdConflictPolicy::UseExisting`] returned), and its
    /// record once it stopped running (`None` while it still runs).
    ///
    /// A run this call created was running when its start committed, and
    /// its waiter was registered before that: its record is read once, when
    /// it stopped running, not also before the wait as `wait` must.
    pub async fn start_and_wait(
        &self,
        request: StartRequest,
        limit: Duration,
    ) -> Result<(RunId, Option<RunRecord>), HostError> {
        let run_id = self.new_run_id();
        let notify = self.inner.wakeups.on_close(&run_id);
        let mut closed = Box::pin(notify.notify.notified());
        closed.as_mut().enable();
        let started = self.create(run_id.clone(), request, None).await;
        // A run this call created, not an open one it was given instead.
        let created = matches!(&started, Ok(started) if *started == run_id);
        let running = created.then_some(closed);
        let waited = match (&started, running) {
            (Ok(started), running) => tokio::time::timeout(limit, async {
                let record = match running {
                    Some(closed) => self.wait_on(started, &notify, Some(closed)).await?,
                    None => self.wait(started).await?,
                };
                self.followed(record).await
            })
            .await
            .ok(),
            (Err(_), _) => None,
        };
        self.inner.wakeups.forget_close(&run_id, notify);
        Ok((started?, waited.transpose()?))
    }

    /// Signal-with-start: sends the signal to the workflow id's open run, or
    /// starts a run with the signal already in its inbox. Either way the
    /// signal is delivered exactly once; returns the run it went to.
    pub async fn signal_with_start(
        &self,
        mut request: StartRequest,
        signal: &str,
        input: Value,
    ) -> Result<RunId, HostError> {
        self.check_payload(
            || format!("signal {signal:?} to workflow {:?}", request.workflow_id),
            &input,
        )?;
        request.options.id_conflict_policy = IdConflictPolicy::UseExisting;
        self.create(self.new_run_id(), request, Some((signal.to_owned(), input)))
            .await
    }

    /// Starts a run as `run_id`; the open run of the workflow id instead,
    /// when the conflict policy says to use it.
    async fn create(
        &self,
        run_id: RunId,
        request: StartRequest,
        signal: Option<(String, Value)>,
    ) -> Result<RunId, HostError> {
        Self::check_name(|| "the workflow id".into(), &request.workflow_id)?;
        Self::check_name(
            || format!("the workflow type of workflow {:?}", request.workflow_id),
            &request.workflow_type,
        )?;
        if let Some((name, _)) = &signal {
            Self::check_name(|| "the signal name".into(), name)?;
        }
        self.check_payload(
            || format!("the input of workflow {:?}", request.workflow_id),
            &request.input,
        )?;
        if let Some(memo) = &request.options.memo {
            self.check_payload(
                || format!("the memo of workflow {:?}", request.workflow_id),
                memo,
            )?;
        }
        let search_attributes = match request.options.search_attributes.clone() {
            None => Value::Object(serde_json::Map::new()),
            Some(Value::Object(map))
                if map
                    .values()
                    .all(|v| !matches!(v, Value::Array(_) | Value::Object(_))) =>
            {
                Value::Object(map)
            }
            Some(_) => {
                return Err(HostError::Other(format!(
                    "the search attributes of workflow {:?} must be a JSON object of strings, numbers and booleans",
                    request.workflow_id
                )));
            }
        };
        // A module this engine has loaded exists; only an unknown one costs a read.
        if self.engine().loaded(&request.module).is_none() {
            match self.inner.store.module_bytes(&request.module).await {
                Ok(_) => {}
                Err(StoreError::NotFound { .. }) => {
                    return Err(HostError::UnknownModule(request.module));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let now = self.inner.clock.now_ms();
        let first = Event::WorkflowStarted {
            workflow_type: request.workflow_type.clone(),
            workflow_id: request.workflow_id.clone(),
            input: request.input,
            module_sha256: request.module.clone(),
            seed: self.inner.rng.next_u64(),
            parent: None,
            continued_from: None,
        };
        let first_event = crate::model::seal(EventHash::GENESIS, 1, first, now);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let execution_deadline = request
            .options
            .execution_timeout
            .map(|t| now.saturating_add(ms(t)));
        let run_timeout_ms = request.options.run_timeout.map(ms);
        let run_deadline = run_timeout_ms.map(|t| now.saturating_add(t));
        let deadline = match (run_deadline, execution_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let create = CreateRun {
            run_id: run_id.clone(),
            workflow_id: request.workflow_id,
            workflow_type: request.workflow_type,
            module_sha256: request.module,
            first_event,
            now_ms: now,
            options: RunOptions {
                parent: None,
                memo: request.options.memo,
                search_attributes,
                deadline_ms: deadline,
                execution_deadline_ms: execution_deadline,
                run_timeout_ms,
                id_reuse_policy: request.options.id_reuse_policy,
                id_conflict_policy: request.options.id_conflict_policy,
                signal,
            },
        };
        // A plain start on a module loaded here runs its first activation at
        // once and writes it with the run: one commit, no claim, no read-back.
        if create.options.signal.is_none() {
            let began = std::time::Instant::now();
            if let Some(report) = self
                .inner
                .driver
                .start_eagerly(&create)
                .await
                .map_err(driver_error)?
            {
                let metrics = &self.inner.metrics;
                metrics.activation_committed_inline(began.elapsed().as_secs_f64());
                metrics.run_started();
                crate::scheduler::activated_here(&self.inner, &run_id, &report).await;
                return Ok(run_id);
            }
        }
        let created = self.inner.store.create_run(create).await?;
        self.inner.wakeups.activations.notify_one();
        Ok(match created {
            Created::New => {
                self.inner.metrics.run_started();
                run_id
            }
            Created::Existing(existing) => existing,
        })
    }

    /// This host's metrics in the Prometheus text format (what `GET /metrics` serves).
    pub fn metrics_text(&self) -> String {
        self.inner.metrics.text()
    }

    /// Asks an open run to cancel. The workflow receives the request as a job
    /// and decides what to do: typically run compensations and end as
    /// cancelled. A run that ignores it runs on.
    pub async fn cancel(&self, run_id: &RunId, reason: &str) -> Result<(), HostError> {
        self.inner
            .store
            .request_cancel(run_id, reason, self.inner.clock.now_ms())
            .await?;
        self.inner.wakeups.activations.notify_one();
        Ok(())
    }

    /// Ends an open run (running or stuck) at once, without the workflow's
    /// say: `workflow_terminated` is appended as soon as no activation of the
    /// run is in flight. Its children are handled by their parent-close policy.
    pub async fn terminate(&self, run_id: &RunId, reason: &str) -> Result<(), HostError> {
        self.inner
            .store
            .request_termination(run_id, reason, self.inner.clock.now_ms())
            .await?;
        self.inner.wakeups.activations.notify_one();
        Ok(())
    }

    /// Sends an update and waits for the workflow's answer. The workflow's
    /// validator runs first, on the run's current state: a rejected update is
    /// never recorded and comes back as [`HostError::UpdateRejected`].
    pub async fn update(
        &self,
        run_id: &RunId,
        name: &str,
        input: Value,
    ) -> Result<Value, HostError> {
        let call = UpdateCall {
            run_id: run_id.clone(),
            update_id: None,
            name: name.into(),
            input,
            wait: None,
        };
        match self.update_within(call).await? {
            UpdateAnswer::Answered(output) => Ok(output),
            UpdateAnswer::Pending { update_id } => Err(HostError::Other(format!(
                "update {name:?} ({update_id}) of run {run_id} was not answered"
            ))),
        }
    }

    /// [`update`](Self::update) under its own id, waiting at most
    /// `call.wait`. An update id this run already took is not sent again:
    /// the call waits for (or gives) the answer of the one sent, so a caller
    /// whose wait ran out asks again with the same id.
    pub async fn update_within(&self, call: UpdateCall) -> Result<UpdateAnswer, HostError> {
        let UpdateCall {
            run_id,
            update_id,
            name,
            input,
            wait,
        } = call;
        let run_id = &run_id;
        Self::check_name(|| "the update name".into(), &name)?;
        if let Some(id) = &update_id {
            Self::check_name(|| "the update id".into(), id)?;
        }
        self.check_payload(|| format!("update {name:?} to run {run_id}"), &input)?;
        let sent = match &update_id {
            Some(id) => match self.inner.store.update_outcome(run_id, id).await {
                Ok(Some(outcome)) => {
                    return outcome.map(UpdateAnswer::Answered).map_err(|failure| {
                        HostError::UpdateFailed {
                            run_id: run_id.clone(),
                            name,
                            failure,
                        }
                    });
                }
                Ok(None) => true,
                Err(StoreError::NotFound { .. }) => false,
                Err(e) => return Err(e.into()),
            },
            None => false,
        };
        let update_id = update_id.unwrap_or_else(|| {
            format!(
                "upd-{:016x}{:016x}",
                self.inner.rng.next_u64(),
                self.inner.rng.next_u64()
            )
        });
        if !sent {
            self.send_new_update(run_id, &update_id, &name, input)
                .await?;
        }
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let notify = self.inner.wakeups.on_update(run_id);
        let result = loop {
            let woken = notify.notified();
            tokio::pin!(woken);
            // Registered before the outcome is read, so an answer in between is not missed.
            woken.as_mut().enable();
            match self.inner.store.update_outcome(run_id, &update_id).await {
                Ok(Some(outcome)) => {
                    break outcome.map(UpdateAnswer::Answered).map_err(|failure| {
                        HostError::UpdateFailed {
                            run_id: run_id.clone(),
                            name: name.clone(),
                            failure,
                        }
                    });
                }
                Ok(None) => {}
                Err(e) => break Err(e.into()),
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                break Ok(UpdateAnswer::Pending {
                    update_id: update_id.clone(),
                });
            }
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            // Another host may run the workflow: look again now and then.
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(self.inner.config.poll_interval.min(WAITER_POLL)) => {}
                () = tokio::time::sleep_until(deadline.unwrap_or(far)) => {}
            }
        };
        self.inner.wakeups.forget_update(run_id, notify);
        result
    }

    /// Validates an update against the open run and records it.
    async fn send_new_update(
        &self,
        run_id: &RunId,
        update_id: &str,
        name: &str,
        input: Value,
    ) -> Result<(), HostError> {
        let run = self.inner.store.run(run_id).await?;
        if !run.status.is_open() {
            return Err(HostError::Other(format!(
                "run {run_id} is {} and takes no updates; start a new run",
                run.status.as_str()
            )));
        }
        let slot = self.inspection_slot().await?;
        let validated = self
            .inner
            .driver
            .validate_update(run_id, name, &input)
            .await;
        drop(slot);
        match validated {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                return Err(HostError::UpdateRejected {
                    run_id: run_id.clone(),
                    name: name.into(),
                    message,
                });
            }
            Err(e) => return Err(driver_error(e)),
        }
        self.inner
            .store
            .send_update(
                run_id,
                update_id,
                name,
                input,
                self.inner.clock.now_ms(),
                self.inner.config.engine.run_limits.max_updates_in_flight as u64,
            )
            .await?;
        self.inner.wakeups.activations.notify_one();
        Ok(())
    }

    /// Runs that match `filter`, newest first: one page, see [`Host::list_page`].
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<RunRecord>, HostError> {
        Ok(self.list_page(filter).await?.runs)
    }

    /// A page of the runs that match `filter`, newest first: at most
    /// `filter.limit` (0: 100; at most 1,000) after `filter.after`, and
    /// where the next page starts (the `after` of the same filter).
    pub async fn list_page(&self, filter: &ListFilter) -> Result<RunPage, HostError> {
        Ok(self.inner.store.list_runs(filter).await?)
    }

    /// Sends a signal to an open run. It is recorded when the run next activates.
    pub async fn signal(&self, run_id: &RunId, name: &str, input: Value) -> Result<(), HostError> {
        Self::check_name(|| "the signal name".into(), name)?;
        self.check_payload(|| format!("signal {name:?} to run {run_id}"), &input)?;
        self.inner
            .store
            .send_signal(
                run_id,
                name,
                input,
                self.inner.clock.now_ms(),
                self.inner.config.engine.run_limits.max_pending_signals as u64,
            )
            .await?;
        self.inner.wakeups.activations.notify_one();
        Ok(())
    }

    /// A slot for a query, a validation or a replay: waits up to
    /// [`INSPECTION_WAIT`] for one, then [`HostError::Busy`].
    async fn inspection_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, HostError> {
        match tokio::time::timeout(INSPECTION_WAIT, self.inner.inspections.acquire()).await {
            Ok(permit) => Ok(permit.expect("the inspection semaphore is never closed")),
            Err(_) => Err(HostError::Busy {
                limit: self.inner.config.max_concurrent_queries.max(1),
            }),
        }
    }

    /// A slot for a compatibility check of one run: waits as long as it takes
    /// (a check is an operator's batch, not a caller with a deadline).
    pub(crate) async fn check_slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.inner
            .inspections
            .acquire()
            .await
            .expect("the inspection semaphore is never closed")
    }

    /// Asks a query of a run, open or closed; the run's state is not changed.
    pub async fn query(
        &self,
        run_id: &RunId,
        name: &str,
        input: Value,
    ) -> Result<Value, HostError> {
        let _slot = self.inspection_slot().await?;
        match self.inner.driver.query(run_id, name, &input).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(message)) => Err(HostError::QueryRefused {
                run_id: run_id.clone(),
                name: name.into(),
                message,
            }),
            Err(e) => Err(driver_error(e)),
        }
    }

    /// The run's record. Its status, output and failure are read from its
    /// last event (the `runs` row is only an index), and that event must
    /// match its hash.
    pub async fn describe(&self, run_id: &RunId) -> Result<RunRecord, HostError> {
        let run = self.inner.store.run(run_id).await?;
        self.as_chained(run).await
    }

    /// `run`, a `runs` row, with what its history's last event says in
    /// place of the row's status, output and failure (see
    /// [`crate::audit::ChainedRun`]); a last event that does not match its
    /// hash is refused as corrupt. Reads the last two events.
    async fn as_chained(&self, run: RunRecord) -> Result<RunRecord, HostError> {
        let store = &self.inner.store;
        let mut tail = store
            .events_after(&run.run_id, run.last_seq.saturating_sub(2))
            .await?;
        if tail.is_empty() && run.last_seq > 0 {
            // The row claims more events than there are.
            tail = store.history(&run.run_id).await?.into_events();
        }
        let n = tail.len();
        if let Some(last) = tail.last() {
            let prev = match n {
                2.. if tail[n - 2].seq + 1 == last.seq => Some(tail[n - 2].hash),
                _ if last.seq == 1 => Some(crate::model::EventHash::GENESIS),
                // Cannot be checked from here: the row's count is off, and
                // `reconciled` says so.
                _ => None,
            };
            if let Some(prev) = prev {
                let hash = crate::model::EventHash::chain(
                    &prev,
                    last.seq,
                    last.event.kind(),
                    last.recorded_at_ms,
                    &last.event.payload_json(),
                );
                if hash != last.hash {
                    tracing::error!(run_id = %run.run_id, seq = last.seq, "a run's last event does not match its hash");
                    return Err(StoreError::Corrupt(format!(
                        "run {}'s last event {} ({}) does not match its hash: the history was altered in the database; check it with `weft verify {}`",
                        run.run_id,
                        last.seq,
                        last.event.kind(),
                        run.workflow_id
                    ))
                    .into());
                }
            }
        }
        Ok(crate::audit::reconciled(run, tail.last()))
    }

    /// What a run waits on: its unresolved activities (attempts, the last
    /// failure, the last heartbeat), its timers and its unresolved children.
    pub async fn waiting_on(&self, run_id: &RunId) -> Result<WaitingOn, HostError> {
        Ok(self.inner.store.waiting_on(run_id).await?)
    }

    pub async fn history(&self, run_id: &RunId) -> Result<History, HostError> {
        Ok(self.inner.store.history(run_id).await?)
    }

    /// Waits until the run is no longer running (completed, failed, or parked
    /// as stuck) and returns its record.
    pub async fn wait(&self, run_id: &RunId) -> Result<RunRecord, HostError> {
        let notify = self.inner.wakeups.on_close(run_id);
        let result = self.wait_on(run_id, &notify, None).await;
        self.inner.wakeups.forget_close(run_id, notify);
        result
    }

    /// [`wait`](Self::wait) on `notify`, the run's close notification.
    /// `running`: a notification the caller enabled while it knew the run
    /// to be running, so that the run need not be read before it fires.
    async fn wait_on(
        &self,
        run_id: &RunId,
        closing: &Closing,
        mut running: Option<Pin<Box<Notified<'_>>>>,
    ) -> Result<RunRecord, HostError> {
        loop {
            let mut closed = match running.take() {
                Some(closed) => closed,
                None => {
                    let mut closed = Box::pin(closing.notify.notified());
                    // Registered before the status is read, so a close in between is not missed.
                    closed.as_mut().enable();
                    let run = self.inner.store.run(run_id).await?;
                    if run.status != RunStatus::Running {
                        let run = self.as_chained(run).await?;
                        if run.status != RunStatus::Running {
                            return Ok(run);
                        }
                    }
                    closed
                }
            };
            // Another host may close it: the waiter loop looks for all the
            // awaited runs at once; without it, each waiter looks itself.
            let again = if self.inner.wakeups.waiters_watched.load(Ordering::SeqCst) {
                WATCHED_WAITER_POLL
            } else {
                self.inner.config.poll_interval.min(WAITER_POLL)
            };
            tokio::select! {
                () = closed.as_mut() => {
                    // Closed here, by a commit that knew the run as it closed.
                    if let Some(record) = closing.record() {
                        return Ok(record);
                    }
                }
                () = tokio::time::sleep(again) => {}
            }
        }
    }

    /// Waits for a workflow's final outcome: like [`wait`](Self::wait), but a
    /// run that continued as new is followed to the run that carries on.
    pub async fn wait_workflow(&self, run_id: &RunId) -> Result<RunRecord, HostError> {
        let record = self.wait(run_id).await?;
        self.followed(record).await
    }

    /// `record`, or, when its run continued as new, the outcome of the run
    /// that carries on.
    async fn followed(&self, mut record: RunRecord) -> Result<RunRecord, HostError> {
        while let (RunStatus::ContinuedAsNew, Some(next)) = (record.status, &record.continued_to) {
            record = self.wait(&next.clone()).await?;
        }
        Ok(record)
    }

    /// Replays a run's stored history against its module and gives the verdict.
    pub async fn replay(&self, run_id: &RunId) -> Result<ReplayVerdict, HostError> {
        let _slot = self.inspection_slot().await?;
        let run = self.inner.store.run(run_id).await?;
        let history = self.inner.store.history(run_id).await?;
        let module = self
            .inner
            .driver
            .module(run_id, &run.module_sha256)
            .await
            .map_err(|e| HostError::Other(e.to_string()))?;
        replay_history(self.engine(), &module, &history)
            .await
            .map_err(|error| HostError::Replay {
                run_id: run_id.clone(),
                error: Box::new(error),
            })
    }

    /// Drops every warm instance, so the next activation of each run replays
    /// (what a restart does; tests use it to prove replay).
    pub fn forget_warm_instances(&self) {
        self.inner.driver.forget_warm();
    }
}

fn driver_error(e: crate::workflow::DriverError) -> HostError {
    match e {
        crate::workflow::DriverError::Store(e) => e.into(),
        crate::workflow::DriverError::Replay { run_id, error } => {
            HostError::Replay { run_id, error }
        }
        e => HostError::Other(e.to_string()),
    }
}

/// A run's final outcome, for callers that want a `Result`.
pub fn outcome(record: &RunRecord) -> Result<Value, Failure> {
    match record.status {
        RunStatus::Completed => Ok(record.output.clone().unwrap_or(Value::Null)),
        RunStatus::Failed => Err(record
            .failure
            .clone()
            .unwrap_or_else(|| Failure::new("Unknown", "no failure recorded"))),
        RunStatus::Stuck => Err(Failure::new(
            "Stuck",
            record
                .stuck
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
        )),
        RunStatus::Running => Err(Failure::new(
            "Running",
            format!("run {} has not finished", record.run_id),
        )),
        RunStatus::Cancelled => Err(Failure::new(
            "Cancelled",
            record
                .failure
                .as_ref()
                .map(|f| f.message.clone())
                .unwrap_or_default(),
        )),
        RunStatus::Terminated => Err(record
            .failure
            .clone()
            .unwrap_or_else(|| Failure::new("Terminated", "terminated"))),
        RunStatus::TimedOut => Err(record
            .failure
            .clone()
            .unwrap_or_else(|| Failure::new("TimedOut", "timed out"))),
        RunStatus::ContinuedAsNew => Err(Failure::new(
            "ContinuedAsNew",
            format!(
                "run {} continued as new as run {}; wait for that one",
                record.run_id,
                record
                    .continued_to
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_default()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every slot busy, a query waits its turn and then is refused as
    /// busy, naming the limit; with a slot free it goes on (here to the
    /// store, which knows no such run).
    #[tokio::test]
    async fn queries_wait_for_a_slot_then_are_refused_as_busy() {
        let env = crate::testing::TestEnv::new(Activities::new())
            .await
            .unwrap();
        let host = env.host();
        let all = host.inner.config.max_concurrent_queries as u32;
        assert_eq!(all, 8);
        let held = host.inner.inspections.acquire_many(all).await.unwrap();
        let run = RunId("no-such-run".into());
        tokio::time::pause();
        let refused = host.query(&run, "status", Value::Null).await.unwrap_err();
        tokio::time::resume();
        assert!(matches!(refused, HostError::Busy { limit: 8 }), "{refused}");
        assert!(
            refused.to_string().contains("--max-concurrent-queries"),
            "{refused}"
        );
        let replay = {
            tokio::time::pause();
            let r = host.replay(&run).await.unwrap_err();
            tokio::time::resume();
            r
        };
        assert!(matches!(replay, HostError::Busy { .. }), "{replay}");
        drop(held);
        let answered = host.query(&run, "status", Value::Null).await.unwrap_err();
        assert!(!matches!(answered, HostError::Busy { .. }), "{answered}");
    }
}
