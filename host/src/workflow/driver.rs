//! One live activation of a claimed run, and queries against live runs.

use super::ReplayError;
use super::replay::{Replayed, StartInfo, command_events, parse_history, replay_into, run_guest};
use crate::activity::{Handoff, Taken};
use crate::model::{
    Command, Event, EventHash, GuestStatus, Job, ParentLink, RecordedEvent, RunId, Sha256Hex,
};
use crate::scheduler::Clock;
use crate::store::{
    ActivationCommit, ActivityTask, AttemptOutcome, CreateRun, DueTimer, FinishedAttempt,
    InlineClaim, NewActivityTask, NewChild, NewTimer, PendingJobs, ResolvedActivity, RunClaim,
    RunOptions, RunOutcome, RunRecord, RunStatus, Store, StoreError,
};
use crate::wasm::{GuestError, Instance, LoadedModule, RunRng, WasmEngine};
use lru::LruCache;
use serde_json::{Value, json};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Warm instances dropped when the instance pool is full.
const EVICT_ON_FULL_POOL: usize = 8;

#[derive(Clone, Debug)]
pub(crate) struct DriverConfig {
    /// Instances kept warm between activations.
    pub(crate) warm_instances: usize,
    /// How long a local activity is this host's to claim after the activation
    /// that scheduled it: hidden from ordinary claims until then, so that it
    /// runs here, and an ordinary task for any host if this one died.
    pub(crate) local_activity_window_ms: u64,
    /// The lease of an attempt whose activity sets no start-to-close timeout.
    pub(crate) default_lease_ms: u64,
}

/// A warm instance, valid while the stored history still ends where it did.
struct Warm {
    instance: Instance,
    start: StartInfo,
    last_seq: u64,
    last_time_ms: u64,
    /// The history's size in bytes ([`crate::model::History::verify_measured`]).
    history_bytes: u64,
    /// What this host last committed for the run, when this instance made
    /// that commit (not when it was rebuilt by replay for a query).
    committed: Option<Committed>,
    /// The run's open timers, when this instance has made every commit of
    /// the run since its start (`None` once it was rebuilt by replay).
    open_timers: Option<Vec<DueTimer>>,
}

/// A run as this host's last commit left it: enough to run its next
/// activation ahead of a claim and commit it with the result that wakes it.
#[derive(Clone)]
struct Committed {
    run: RunRecord,
    /// The lease the commit was made under (released by it, and unchanged
    /// until some host claims the run again).
    lease_token: i64,
    /// The wake-ups the commit handled.
    handled_wakeups: i64,
}

/// What one activation did, for the scheduler's bookkeeping.
#[derive(Debug, Default, Clone)]
pub(crate) struct ActivationReport {
    pub(crate) new_activities: usize,
    /// Some new activity has a deadline for the timeout sweep to watch.
    pub(crate) new_deadlines: bool,
    /// When the earliest timer it started fires, if it started any: the
    /// activation loop must hear of it if it means to sleep past that.
    pub(crate) new_timer_at_ms: Option<u64>,
    /// The local activities it scheduled, for this host to claim and run now.
    pub(crate) local_activities: Vec<LocalActivity>,
    /// The run stopped running, with this status: it closed, or was parked (stuck).
    pub(crate) closed: Option<RunStatus>,
    /// The run as its close left it, when the commit that closed it was
    /// fenced on nothing having reached the run since this host's last
    /// commit of it: what a read of the run would give, so that a waiter on
    /// this host need not read it.
    pub(crate) closed_run: Option<Box<RunRecord>>,
}

/// Tasks of an activation handed to a waiting poll.
struct HandOver {
    taken: Taken,
    tasks: Vec<ActivityTask>,
}

impl HandOver {
    /// Delivers the tasks once their commit applied; nothing otherwise (the
    /// poll goes back to waiting, and the tasks were never written).
    fn done(self, committed: bool) {
        let tasks = if committed { self.tasks } else { Vec::new() };
        self.taken.deliver(tasks);
    }
}

/// One activation, run and ready to commit.
struct Prepared {
    commit: ActivationCommit,
    report: ActivationReport,
    ahead: Ahead,
}

/// An instance that ran an activation not yet committed.
struct Ahead {
    /// The instance, as the activation left it.
    warm: Warm,
    /// The run as the commit leaves it.
    run_after: RunRecord,
    time_ms: u64,
}

impl Prepared {
    /// The activation only schedules work (activities, timers, markers):
    /// the run stays open and no other run, update or cancel is touched.
    fn schedules_only(&self) -> bool {
        let c = &self.commit;
        matches!(c.outcome, RunOutcome::Running)
            && c.new_children.is_empty()
            && c.cancelled_children.is_empty()
            && c.cancelled_activities.is_empty()
            && c.completed_updates.is_empty()
            && c.consumed_updates.is_empty()
            && !c.consumed_cancel
    }
}

/// A run as [`RunStore::create_run`](crate::store::RunStore::create_run) writes it.
fn new_run_record(create: &CreateRun) -> RunRecord {
    let o = &create.options;
    RunRecord {
        run_id: create.run_id.clone(),
        workflow_id: create.workflow_id.clone(),
        workflow_type: create.workflow_type.clone(),
        module_sha256: create.module_sha256.clone(),
        status: RunStatus::Running,
        output: None,
        failure: None,
        stuck: None,
        last_seq: create.first_event.seq,
        last_hash: create.first_event.hash,
        created_at_ms: create.now_ms,
        closed_at_ms: None,
        parent: o.parent.clone(),
        status_line: None,
        search_attributes: match &o.search_attributes {
            Value::Null => Value::Object(serde_json::Map::new()),
            attributes => attributes.clone(),
        },
        memo: o.memo.clone(),
        cancel_requested: None,
        termination_requested: None,
        deadline_ms: o.deadline_ms,
        execution_deadline_ms: o.execution_deadline_ms,
        run_timeout_ms: o.run_timeout_ms,
        continued_to: None,
    }
}

/// A local activity an activation scheduled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LocalActivity {
    pub(crate) seq: u32,
    pub(crate) name: String,
}

/// Errors a driver call can end with. Guest problems are not here: they park the run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DriverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("module {sha256} of run {run_id} cannot be loaded: {reason}")]
    Module {
        run_id: RunId,
        sha256: Sha256Hex,
        reason: String,
    },
    #[error("run {run_id}: {error}")]
    Replay {
        run_id: RunId,
        error: Box<ReplayError>,
    },
    /// Every instance slot is in use; the run was released to be activated later.
    #[error("run {run_id} waits for an instance slot: {message}")]
    Busy { run_id: RunId, message: String },
}

pub(crate) struct Driver {
    engine: Arc<WasmEngine>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Draws the run ids and seeds of children and continued runs.
    ids: RunRng,
    warm: Mutex<LruCache<RunId, Warm>>,
    /// With `warm_instances == 0` every activation rebuilds its instance by replay.
    keep_warm: bool,
    local_activity_window_ms: u64,
    default_lease_ms: u64,
    /// Polls of remote workers waiting for tasks: an activation hands its new
    /// tasks to them in the commit that schedules them.
    handoff: Handoff,
}

impl Driver {
    pub(crate) fn new(
        engine: Arc<WasmEngine>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        ids: RunRng,
        config: DriverConfig,
    ) -> Self {
        let cap = NonZeroUsize::new(config.warm_instances.max(1)).expect("at least one");
        Self {
            engine,
            store,
            clock,
            ids,
            warm: Mutex::new(LruCache::new(cap)),
            keep_warm: config.warm_instances > 0,
            local_activity_window_ms: config.local_activity_window_ms,
            default_lease_ms: config.default_lease_ms,
            handoff: Handoff::default(),
        }
    }

    /// The line of remote workers' polls waiting for tasks.
    pub(crate) fn handoff(&self) -> &Handoff {
        &self.handoff
    }

    /// Hands the new tasks of an activation to a remote worker's poll that
    /// waits for them, if one does: they are written claimed for its worker
    /// (attempt 1) and delivered once the commit applied ([`HandOver::done`]).
    fn hand_over(&self, prepared: &mut Prepared) -> Option<HandOver> {
        let commit = &mut prepared.commit;
        if !matches!(commit.outcome, RunOutcome::Running) || commit.new_activities.is_empty() {
            return None;
        }
        let now = commit.now_ms;
        // A local activity is this host's to run; a task not visible yet waits.
        let remote = |t: &NewActivityTask| !t.options.local && t.visible_at_ms <= now;
        let taken = self.handoff.take(
            commit
                .new_activities
                .iter()
                .filter(|t| remote(t))
                .map(|t| t.name.as_str()),
        )?;
        let mut tasks = Vec::new();
        for t in commit.new_activities.iter_mut() {
            if tasks.len() as u32 >= taken.room {
                break;
            }
            if !remote(t) || !taken.serves(&t.name) {
                continue;
            }
            let lease_ms = match t.options.start_to_close_timeout_ms {
                0 => self.default_lease_ms,
                ms => ms,
            };
            t.claimed = Some(InlineClaim {
                owner: taken.worker_id.clone(),
                lease_expires_at_ms: now.saturating_add(lease_ms),
            });
            let close_ms = t.options.schedule_to_close_timeout_ms;
            tasks.push(ActivityTask {
                run_id: commit.run_id.clone(),
                seq: t.seq,
                name: t.name.clone(),
                input: t.input.clone(),
                options: t.options.clone(),
                attempt: 1,
                lease_token: 1,
                heartbeat_details: None,
                close_deadline_ms: (close_ms > 0).then(|| now.saturating_add(close_ms)),
            });
        }
        // Handed tasks are claimed already: no other poll needs waking for them.
        prepared.report.new_activities -= tasks.len();
        Some(HandOver { taken, tasks })
    }

    pub(crate) fn engine(&self) -> &Arc<WasmEngine> {
        &self.engine
    }

    /// The compiled module with this sha256, loading its bytes from the store if needed.
    pub(crate) async fn module(
        &self,
        run_id: &RunId,
        sha256: &Sha256Hex,
    ) -> Result<Arc<LoadedModule>, DriverError> {
        if let Some(m) = self.engine.loaded(sha256) {
            return Ok(m);
        }
        let bytes = self.store.module_bytes(sha256).await?;
        self.engine
            .load_off_thread(bytes)
            .await
            .map_err(|e| DriverError::Module {
                run_id: run_id.clone(),
                sha256: sha256.clone(),
                reason: e.to_string(),
            })
    }

    fn take_warm(&self, run: &RunRecord) -> Option<Warm> {
        let warm = self
            .warm
            .lock()
            .expect("warm cache poisoned")
            .pop(&run.run_id)?;
        (warm.last_seq == run.last_seq && !warm.instance.is_poisoned()).then_some(warm)
    }

    fn put_warm(&self, run_id: RunId, warm: Warm) {
        if !self.keep_warm {
            return;
        }
        self.warm
            .lock()
            .expect("warm cache poisoned")
            .put(run_id, warm);
    }

    /// Drops the `n` least recently used warm instances.
    fn evict_idle(&self, n: usize) {
        let mut warm = self.warm.lock().expect("warm cache poisoned");
        for _ in 0..n {
            if warm.pop_lru().is_none() {
                break;
            }
        }
    }

    /// Drops every warm instance (as a restart would).
    pub(crate) fn forget_warm(&self) {
        self.warm.lock().expect("warm cache poisoned").clear();
    }

    /// Rebuilds a run's instance by replaying its stored history.
    async fn rebuild(&self, run: &RunRecord) -> Result<Result<Warm, ReplayError>, DriverError> {
        let history = self.store.history(&run.run_id).await?;
        let history_bytes = match history.verify_measured() {
            Ok(bytes) => bytes,
            Err(e) => {
                return Err(DriverError::Store(StoreError::Corrupt(format!(
                    "run {}: {e}",
                    run.run_id
                ))));
            }
        };
        let (start, activations) = match parse_history(&history) {
            Ok(parsed) => parsed,
            Err(e) => return Ok(Err(e.into())),
        };
        let module = self.module(&run.run_id, &run.module_sha256).await?;
        let options = start.instance_options(run.run_id.clone());
        let mut instance = match Instance::new(&self.engine, &module, options.clone()).await {
            Ok(i) => i,
            // The pool may be full of idle warm instances: free a few and try once more.
            Err(GuestError::PoolExhausted { .. }) => {
                self.evict_idle(EVICT_ON_FULL_POOL);
                match Instance::new(&self.engine, &module, options).await {
                    Ok(i) => i,
                    Err(GuestError::PoolExhausted { message }) => {
                        return Err(DriverError::Busy {
                            run_id: run.run_id.clone(),
                            message,
                        });
                    }
                    Err(error) => return Ok(Err(ReplayError::Guest { at_event: 1, error })),
                }
            }
            Err(error) => return Ok(Err(ReplayError::Guest { at_event: 1, error })),
        };
        Ok(
            match replay_into(&mut instance, &start, &activations, false).await {
                Ok(Replayed { last_time_ms, .. }) => Ok(Warm {
                    instance,
                    start,
                    last_seq: history.len() as u64,
                    last_time_ms,
                    history_bytes,
                    committed: None,
                    open_timers: None,
                }),
                Err(e) => Err(e),
            },
        )
    }

    /// Runs one activation of a claimed run and commits it.
    pub(crate) async fn activate(&self, claim: &RunClaim) -> Result<ActivationReport, DriverError> {
        if let Some(report) = self.activate_as_left(claim).await? {
            return Ok(report);
        }
        let run = self.store.run(&claim.run_id).await?;
        if run.status != RunStatus::Running {
            self.store
                .release_run(&run.run_id, claim.lease_token)
                .await?;
            return Ok(ActivationReport::default());
        }
        let now = self.clock.now_ms();
        if let Some(verdict) = host_verdict(&run, now) {
            return self.close_by_host(claim, &run, verdict, now).await;
        }
        let pending = self.store.pending_jobs(&run.run_id, now).await?;
        let first = run.last_seq == 1;
        if !first && pending.is_empty() {
            self.store
                .release_run(&run.run_id, claim.lease_token)
                .await?;
            return Ok(ActivationReport::default());
        }
        let warm = match self.take_warm(&run) {
            Some(w) => w,
            None => match self.rebuild(&run).await? {
                Ok(w) => w,
                Err(e) => {
                    self.park(claim, &e).await?;
                    return Ok(ActivationReport {
                        closed: Some(RunStatus::Stuck),
                        ..ActivationReport::default()
                    });
                }
            },
        };

        let limits = &self.engine.config.run_limits;
        if let Some(reason) = limits.history_over(run.last_seq, warm.history_bytes) {
            drop(warm);
            let verdict = Event::WorkflowTerminated { reason };
            return self.close_by_host(claim, &run, verdict, now).await;
        }
        let prepared = match self.prepare(claim, &run, &pending, warm, first, now).await {
            Ok(p) => p,
            Err(error) => {
                let at_event = run.last_seq + 1;
                self.park(claim, &ReplayError::Guest { at_event, error })
                    .await?;
                return Ok(ActivationReport {
                    closed: Some(RunStatus::Stuck),
                    ..ActivationReport::default()
                });
            }
        };
        // On an error, another host may own the run now: the instance is stale, drop it.
        let report = self
            .commit_prepared(claim, prepared, |commit| async move {
                self.store.commit_activation(commit).await.map(|()| true)
            })
            .await?;
        Ok(report.expect("a commit that did not fail applied"))
    }

    /// Runs the activation of a claimed run that is as this host's last
    /// commit left it, woken only by its own timers, without reading it:
    /// the claim is the next one after that commit's (nobody else claimed
    /// the run since), its history ends where that commit left it, and no
    /// wake-up came since (no result, signal, update, child or request), so
    /// what is pending is the timers this instance knows of that are due.
    /// `None` (the instance put back) when any of that does not hold, or a
    /// deadline is due: the caller reads the run and takes the ordinary way.
    /// The commit is fenced as any claimed activation's is.
    async fn activate_as_left(
        &self,
        claim: &RunClaim,
    ) -> Result<Option<ActivationReport>, DriverError> {
        let Some(warm) = self.take_committed(&claim.run_id) else {
            return Ok(None);
        };
        let now = self.clock.now_ms();
        let committed = warm.committed.clone().expect("take_committed checks it");
        let due: Vec<DueTimer> = warm
            .open_timers
            .iter()
            .flatten()
            .filter(|t| t.fire_at_ms <= now)
            .cloned()
            .collect();
        let as_left = claim.lease_token == committed.lease_token + 1
            && claim.last_seq == committed.run.last_seq
            && claim.observed_wakeups == committed.handled_wakeups
            && warm.last_seq == committed.run.last_seq;
        if !as_left
            || due.is_empty()
            || host_verdict(&committed.run, now).is_some()
            || self
                .engine
                .config
                .run_limits
                .history_over(committed.run.last_seq, warm.history_bytes)
                .is_some()
        {
            self.put_warm(claim.run_id.clone(), warm);
            return Ok(None);
        }
        let pending = PendingJobs {
            due_timers: due,
            ..PendingJobs::default()
        };
        let prepared = match self
            .prepare(claim, &committed.run, &pending, warm, false, now)
            .await
        {
            Ok(p) => p,
            // The ordinary way replays the run and parks it with the reason.
            Err(_) => return Ok(None),
        };
        let report = self
            .commit_prepared(claim, prepared, |commit| async move {
                self.store.commit_activation(commit).await.map(|()| true)
            })
            .await?;
        Ok(Some(report.expect("a commit that did not fail applied")))
    }

    /// Writes a prepared activation with `write` (`true`: it applied): hands
    /// its new tasks to a poll waiting for them, delivers them once the write
    /// applied (none otherwise), and keeps the instance warm. The report,
    /// when the write applied.
    async fn commit_prepared<Write>(
        &self,
        claim: &RunClaim,
        mut prepared: Prepared,
        write: impl FnOnce(ActivationCommit) -> Write,
    ) -> Result<Option<ActivationReport>, StoreError>
    where
        Write: std::future::Future<Output = Result<bool, StoreError>>,
    {
        let handed = self.hand_over(&mut prepared);
        let Prepared {
            commit,
            report,
            ahead,
        } = prepared;
        let applied = write(commit).await;
        if let Some(h) = handed {
            h.done(matches!(applied, Ok(true)));
        }
        if !applied? {
            return Ok(None);
        }
        tracing::debug!(run_id = %claim.run_id, last_seq = ahead.run_after.last_seq, "activation committed");
        self.keep_committed(claim, &report, ahead);
        Ok(Some(report))
    }

    /// Starts a run with its first activation already done: the guest runs
    /// here, and the run, its first events and what they schedule are
    /// written in one transaction ([`RunStore::start_run`](crate::store::RunStore::start_run)),
    /// so a new run costs one commit instead of a create, a claim, a read-back
    /// of its history and a commit. `None` when that does not apply and the
    /// caller creates the run the ordinary way (which the activation loop
    /// then activates): the module is not loaded here, the guest failed in
    /// its first activation (the ordinary path parks it with the reason), the
    /// first activation does more than schedule work (it closes the run,
    /// starts children, answers updates), or the workflow id is not free
    /// (the ordinary path gives the refusal or the open run).
    pub(crate) async fn start_eagerly(
        &self,
        create: &CreateRun,
    ) -> Result<Option<ActivationReport>, DriverError> {
        let Some(module) = self.engine.loaded(&create.module_sha256) else {
            return Ok(None);
        };
        let history = crate::model::History::from_recorded(vec![create.first_event.clone()]);
        let Ok((start, _)) = parse_history(&history) else {
            return Ok(None);
        };
        let options = start.instance_options(create.run_id.clone());
        let Ok(instance) = Instance::new(&self.engine, &module, options).await else {
            return Ok(None);
        };
        let run = new_run_record(create);
        let warm = Warm {
            instance,
            start,
            last_seq: 1,
            last_time_ms: 0,
            history_bytes: create.first_event.event.payload_json().len() as u64,
            committed: None,
            open_timers: Some(Vec::new()),
        };
        // Nobody else can see the run before the transaction commits: the
        // run's first lease token, and the wake-up it is created with.
        let claim = RunClaim {
            run_id: run.run_id.clone(),
            lease_token: 0,
            observed_wakeups: 1,
            last_seq: 0,
        };
        let Ok(prepared) = self
            .prepare(
                &claim,
                &run,
                &PendingJobs::default(),
                warm,
                true,
                create.now_ms,
            )
            .await
        else {
            return Ok(None);
        };
        if !prepared.schedules_only() {
            return Ok(None);
        }
        Ok(self
            .commit_prepared(&claim, prepared, |first| {
                self.store.start_run(create.clone(), first)
            })
            .await?)
    }

    /// Records an attempt's result and, when this host holds the run warm
    /// from its last commit, runs the activation that result wakes at once
    /// and commits both in one transaction
    /// ([`RunStore::finish_and_commit`](crate::store::RunStore::finish_and_commit)):
    /// one commit instead of a result, a claim and an activation. Otherwise
    /// (no warm instance, a retry, a deadline due, the guest failing, or the
    /// run moved on meanwhile) the result alone is recorded and the run is
    /// activated the ordinary way. The report of the activation, when it
    /// was committed with the result.
    pub(crate) async fn finish_attempt(
        &self,
        finished: FinishedAttempt,
    ) -> Result<Option<ActivationReport>, StoreError> {
        let resolved = match &finished.outcome {
            AttemptOutcome::Completed { output } => Some(Ok(output.clone())),
            AttemptOutcome::Failed { failure } => Some(Err(failure.clone())),
            AttemptOutcome::Retry { .. } => None,
        };
        let warm = resolved
            .as_ref()
            .and_then(|_| self.take_committed(&finished.run_id));
        let (Some(resolved), Some(warm)) = (resolved, warm) else {
            return self.finish_alone(finished).await;
        };
        let committed = warm.committed.clone().expect("take_committed checks it");
        let limits = &self.engine.config.run_limits;
        if host_verdict(&committed.run, finished.now_ms).is_some()
            || limits
                .history_over(committed.run.last_seq, warm.history_bytes)
                .is_some()
        {
            self.put_warm(finished.run_id.clone(), warm);
            return self.finish_alone(finished).await;
        }
        let pending = PendingJobs {
            activities: vec![ResolvedActivity {
                seq: finished.seq,
                attempt: finished.attempt,
                outcome: resolved,
                resolved_at_ms: finished.now_ms,
            }],
            ..PendingJobs::default()
        };
        let claim = RunClaim {
            run_id: finished.run_id.clone(),
            lease_token: committed.lease_token,
            observed_wakeups: committed.handled_wakeups + 1,
            last_seq: committed.run.last_seq,
        };
        let prepared = match self
            .prepare(
                &claim,
                &committed.run,
                &pending,
                warm,
                false,
                finished.now_ms,
            )
            .await
        {
            Ok(p) => p,
            // The ordinary path replays the run and parks it with the reason.
            Err(_) => return self.finish_alone(finished).await,
        };
        // `None`: the result is recorded; the instance ran ahead of a run
        // that moved on, and is dropped.
        // The run as this commit would close it. Exact: the commit applies
        // only if nothing reached the run since the commit that left
        // `committed.run` (no cancel or termination request, no other write).
        let closed_run = closed_record(&prepared.ahead.run_after, &prepared.commit);
        let report = self
            .commit_prepared(&claim, prepared, |next| {
                self.store.finish_and_commit(finished, next)
            })
            .await?;
        Ok(report.map(|mut report| {
            report.closed_run = closed_run.map(Box::new);
            report
        }))
    }

    async fn finish_alone(
        &self,
        finished: FinishedAttempt,
    ) -> Result<Option<ActivationReport>, StoreError> {
        self.store
            .finish_attempt(
                &finished.run_id,
                finished.seq,
                finished.lease_token,
                finished.outcome,
                finished.now_ms,
            )
            .await?;
        Ok(None)
    }

    /// The warm instance of a run, if this host's last commit of it made it.
    fn take_committed(&self, run_id: &RunId) -> Option<Warm> {
        let warm = self.warm.lock().expect("warm cache poisoned").pop(run_id)?;
        (warm.committed.is_some() && !warm.instance.is_poisoned()).then_some(warm)
    }

    /// Runs the guest for one activation and builds what it writes. A guest
    /// error is returned for the caller to park the run (or not start it).
    async fn prepare(
        &self,
        claim: &RunClaim,
        run: &RunRecord,
        pending: &PendingJobs,
        mut warm: Warm,
        first: bool,
        now: u64,
    ) -> Result<Prepared, GuestError> {
        // Workflow time never goes backwards, even if host clocks disagree.
        let time_ms = now.max(warm.last_time_ms);
        let (job_events, jobs) = ordered_jobs(pending);
        let (commands, status) = run_guest(
            &mut warm.instance,
            &warm.start,
            first,
            &jobs,
            time_ms,
            false,
        )
        .await?;

        let mut events = vec![Event::ActivationStarted { time_ms }];
        events.extend(job_events);
        events.extend(command_events(&commands, &status, time_ms));
        let (sealed, bytes) = seal_all(run.last_seq, run.last_hash, events, now);
        let limits = &self.engine.config.run_limits;
        let before = (run.last_seq, warm.history_bytes);
        warm.history_bytes += bytes;
        let after = (run.last_seq + sealed.len() as u64, warm.history_bytes);
        if limits.history_warning_crossed(before, after) {
            tracing::warn!(
                run_id = %run.run_id,
                events = after.0,
                bytes = after.1,
                "the run's history passed its warning size ({} events or {} bytes); at {} events or {} bytes the host terminates the run: continue-as-new before then",
                limits.warn_history_events,
                limits.warn_history_bytes,
                limits.max_history_events,
                limits.max_history_bytes,
            );
        }
        let new_last_seq = sealed.last().map(|e| e.seq).unwrap_or(run.last_seq);

        let outcome = match &status {
            GuestStatus::Pending => RunOutcome::Running,
            GuestStatus::Completed(output) => RunOutcome::Completed {
                output: output.clone(),
            },
            GuestStatus::Failed(failure) => RunOutcome::Failed {
                failure: failure.clone(),
            },
            GuestStatus::Cancelled(message) => RunOutcome::Cancelled {
                message: message.clone(),
            },
            GuestStatus::ContinuedAsNew(input) => RunOutcome::ContinuedAsNew {
                next: Box::new(self.continued_run(run, &warm.start, input.clone(), now)),
            },
        };
        let mut commit = ActivationCommit {
            run_id: run.run_id.clone(),
            lease_token: claim.lease_token,
            observed_wakeups: claim.observed_wakeups,
            events: sealed,
            consumed_activities: pending.activities.iter().map(|a| a.seq).collect(),
            consumed_signals: pending.signals.iter().map(|s| s.id).collect(),
            removed_timers: pending.due_timers.iter().map(|t| t.seq).collect(),
            new_activities: Vec::new(),
            new_timers: Vec::new(),
            cancelled_activities: Vec::new(),
            consumed_children: pending.children.iter().map(|c| c.seq).collect(),
            new_children: Vec::new(),
            cancelled_children: Vec::new(),
            consumed_updates: pending
                .updates
                .iter()
                .map(|u| u.update_id.clone())
                .collect(),
            completed_updates: Vec::new(),
            consumed_cancel: pending.cancel.is_some(),
            status_line: None,
            search_attributes: None,
            outcome,
            now_ms: now,
        };
        let mut search_attributes = run.search_attributes.clone();
        let mut local_activities = Vec::new();
        for command in commands {
            match command {
                Command::ScheduleActivity {
                    seq,
                    name,
                    input,
                    options,
                } => {
                    let visible_at_ms = if options.local {
                        local_activities.push(LocalActivity {
                            seq,
                            name: name.clone(),
                        });
                        now.saturating_add(self.local_activity_window_ms)
                    } else {
                        now
                    };
                    commit.new_activities.push(NewActivityTask {
                        seq,
                        name,
                        input,
                        options,
                        visible_at_ms,
                        claimed: None,
                    })
                }
                Command::RequestCancelActivity { seq } => commit.cancelled_activities.push(seq),
                Command::StartTimer { seq, duration_ms } => commit.new_timers.push(NewTimer {
                    seq,
                    fire_at_ms: time_ms.saturating_add(duration_ms),
                }),
                Command::CancelTimer { seq } => commit.removed_timers.push(seq),
                Command::StartChild { seq, request } => {
                    let parent = ParentLink {
                        workflow_id: warm.start.workflow_id.clone(),
                        run_id: run.run_id.clone(),
                        seq,
                    };
                    let first = Event::WorkflowStarted {
                        workflow_type: request.workflow_type.clone(),
                        workflow_id: request.workflow_id.clone(),
                        input: request.input,
                        module_sha256: run.module_sha256.clone(),
                        seed: self.ids.next_u64(),
                        parent: Some(parent.clone()),
                        continued_from: None,
                    };
                    let deadline = (request.execution_timeout_ms > 0)
                        .then(|| now.saturating_add(request.execution_timeout_ms));
                    commit.new_children.push(NewChild {
                        seq,
                        parent_close_policy: request.parent_close_policy,
                        run: CreateRun {
                            run_id: self.new_run_id(),
                            workflow_id: request.workflow_id,
                            workflow_type: request.workflow_type,
                            module_sha256: run.module_sha256.clone(),
                            first_event: crate::model::seal(EventHash::GENESIS, 1, first, now),
                            now_ms: now,
                            options: RunOptions {
                                parent: Some(parent),
                                deadline_ms: deadline,
                                execution_deadline_ms: deadline,
                                ..RunOptions::default()
                            },
                        },
                    });
                }
                Command::RequestCancelChild { seq } => commit.cancelled_children.push(seq),
                Command::CompleteUpdate { update_id, outcome } => {
                    commit.completed_updates.push((update_id, outcome))
                }
                // Recorded in the history only; `patched` answers from it.
                Command::PatchMarker { .. } => {}
                Command::SetStatusLine { text } => commit.status_line = Some(text),
                Command::UpsertSearchAttributes { attributes } => {
                    merge_attributes(&mut search_attributes, &attributes);
                    commit.search_attributes = Some(search_attributes.clone());
                }
            }
        }
        if let Some(attributes) = &commit.search_attributes {
            let size = attributes.to_string().len();
            let limit = limits.max_search_attribute_bytes;
            if size > limit {
                return Err(GuestError::Contract {
                    message: format!(
                        "the run's search attributes would be {size} bytes, over the limit of {limit} (--max-search-attribute-bytes): keep them to small values that runs are found by (ids, states), and the data in the workflow"
                    ),
                });
            }
        }
        let closed = (status != GuestStatus::Pending).then(|| commit.outcome.status());
        // A timer started and cancelled in the same activation never reaches the table.
        let removed = commit.removed_timers.clone();
        commit.new_timers.retain(|t| !removed.contains(&t.seq));
        let report = ActivationReport {
            new_timer_at_ms: commit.new_timers.iter().map(|t| t.fire_at_ms).min(),
            new_activities: commit.new_activities.len(),
            new_deadlines: commit.new_activities.iter().any(|t| {
                t.options.schedule_to_start_timeout_ms > 0
                    || t.options.schedule_to_close_timeout_ms > 0
            }),
            // A closing run abandons its tasks: nothing to run.
            local_activities: if closed.is_some() {
                Vec::new()
            } else {
                local_activities
            },
            closed,
            closed_run: None,
        };
        let mut run_after = run.clone();
        run_after.last_seq = new_last_seq;
        if let Some(last) = commit.events.last() {
            run_after.last_hash = last.hash;
        }
        if let Some(attributes) = &commit.search_attributes {
            run_after.search_attributes = attributes.clone();
        }
        if commit.status_line.is_some() {
            run_after.status_line = commit.status_line.clone();
        }
        if let Some(open) = &mut warm.open_timers {
            open.retain(|t| !commit.removed_timers.contains(&t.seq));
            open.extend(commit.new_timers.iter().map(|t| DueTimer {
                seq: t.seq,
                fire_at_ms: t.fire_at_ms,
            }));
        }
        Ok(Prepared {
            commit,
            report,
            ahead: Ahead {
                warm,
                run_after,
                time_ms,
            },
        })
    }

    /// Keeps the instance warm after its activation committed under `claim`
    /// (unless the run closed).
    fn keep_committed(&self, claim: &RunClaim, report: &ActivationReport, ahead: Ahead) {
        if report.closed.is_some() {
            return;
        }
        let Ahead {
            mut warm,
            run_after,
            time_ms,
        } = ahead;
        warm.last_seq = run_after.last_seq;
        warm.last_time_ms = time_ms;
        warm.committed = Some(Committed {
            run: run_after,
            lease_token: claim.lease_token,
            handled_wakeups: claim.observed_wakeups,
        });
        self.put_warm(claim.run_id.clone(), warm);
    }

    fn new_run_id(&self) -> RunId {
        RunId::from_random(
            (u128::from(self.ids.next_u64()) << 64) | u128::from(self.ids.next_u64()),
        )
    }

    /// The run that carries on after `run` continues as new: same workflow id,
    /// type, module and parent, a fresh seed and history.
    fn continued_run(
        &self,
        run: &RunRecord,
        start: &StartInfo,
        input: Value,
        now: u64,
    ) -> CreateRun {
        let first = Event::WorkflowStarted {
            workflow_type: start.workflow_type.clone(),
            workflow_id: start.workflow_id.clone(),
            input,
            module_sha256: run.module_sha256.clone(),
            seed: self.ids.next_u64(),
            parent: start.parent.clone(),
            continued_from: Some(run.run_id.clone()),
        };
        let run_deadline = run.run_timeout_ms.map(|t| now.saturating_add(t));
        CreateRun {
            run_id: self.new_run_id(),
            workflow_id: start.workflow_id.clone(),
            workflow_type: start.workflow_type.clone(),
            module_sha256: run.module_sha256.clone(),
            first_event: crate::model::seal(EventHash::GENESIS, 1, first, now),
            now_ms: now,
            options: RunOptions {
                parent: start.parent.clone(),
                memo: run.memo.clone(),
                search_attributes: run.search_attributes.clone(),
                deadline_ms: earliest(run_deadline, run.execution_deadline_ms),
                execution_deadline_ms: run.execution_deadline_ms,
                run_timeout_ms: run.run_timeout_ms,
                ..RunOptions::default()
            },
        }
    }

    /// Ends a run on the host's authority (termination, a timeout): one event,
    /// outside any activation, and no guest involved.
    async fn close_by_host(
        &self,
        claim: &RunClaim,
        run: &RunRecord,
        verdict: Event,
        now: u64,
    ) -> Result<ActivationReport, DriverError> {
        let outcome = match &verdict {
            Event::WorkflowTerminated { reason } => RunOutcome::Terminated {
                reason: reason.clone(),
            },
            Event::WorkflowTimedOut { timeout } => RunOutcome::TimedOut {
                timeout: timeout.clone(),
            },
            other => unreachable!("{} is not a host verdict", other.kind()),
        };
        tracing::info!(run_id = %run.run_id, "run closed by the host: {}", verdict.payload_json());
        let status = outcome.status();
        let (events, _) = seal_all(run.last_seq, run.last_hash, vec![verdict], now);
        let commit = ActivationCommit {
            run_id: run.run_id.clone(),
            lease_token: claim.lease_token,
            observed_wakeups: claim.observed_wakeups,
            events,
            outcome,
            now_ms: now,
            ..ActivationCommit::default()
        };
        self.store.commit_activation(commit).await?;
        self.warm
            .lock()
            .expect("warm cache poisoned")
            .pop(&run.run_id);
        Ok(ActivationReport {
            closed: Some(status),
            ..ActivationReport::default()
        })
    }

    /// Asks the run's workflow whether it accepts an update, from a warm
    /// instance or one rebuilt by replay. Nothing is recorded.
    pub(crate) async fn validate_update(
        &self,
        run_id: &RunId,
        name: &str,
        input: &Value,
    ) -> Result<Result<(), String>, DriverError> {
        let run = self.store.run(run_id).await?;
        let mut warm = self.warm_or_rebuilt(&run).await?;
        match warm.instance.validate_update(name, input).await {
            Ok(answer) => {
                self.put_warm(run_id.clone(), warm);
                Ok(answer)
            }
            Err(error) => Err(DriverError::Replay {
                run_id: run_id.clone(),
                error: Box::new(ReplayError::Guest {
                    at_event: run.last_seq,
                    error,
                }),
            }),
        }
    }

    async fn warm_or_rebuilt(&self, run: &RunRecord) -> Result<Warm, DriverError> {
        match self.take_warm(run) {
            Some(w) => Ok(w),
            None => self
                .rebuild(run)
                .await?
                .map_err(|error| DriverError::Replay {
                    run_id: run.run_id.clone(),
                    error: Box::new(error),
                }),
        }
    }

    async fn park(&self, claim: &RunClaim, error: &ReplayError) -> Result<(), DriverError> {
        let reason = match error {
            ReplayError::Diverged(d) => json!({
                "kind": "nondeterminism",
                "event_seq": d.event_seq,
                "recorded": d.recorded,
                "issued": d.issued,
                "message": d.to_string(),
            }),
            ReplayError::Guest { at_event, error } => json!({
                "kind": "guest_error",
                "event_seq": at_event,
                "message": error.to_string(),
            }),
            other => json!({ "kind": "history", "message": other.to_string() }),
        };
        tracing::warn!(run_id = %claim.run_id, "run parked as stuck: {error}");
        self.store
            .park_run(&claim.run_id, claim.lease_token, reason)
            .await?;
        Ok(())
    }

    /// Answers a query from a warm instance, or from one rebuilt by replay.
    pub(crate) async fn query(
        &self,
        run_id: &RunId,
        name: &str,
        input: &Value,
    ) -> Result<Result<Value, String>, DriverError> {
        let run = self.store.run(run_id).await?;
        let mut warm = self.warm_or_rebuilt(&run).await?;
        let answer = warm.instance.query(name, input).await;
        match answer {
            Ok(answer) => {
                if run.status == RunStatus::Running {
                    self.put_warm(run_id.clone(), warm);
                }
                Ok(answer)
            }
            Err(error) => Err(DriverError::Replay {
                run_id: run_id.clone(),
                error: Box::new(ReplayError::Guest {
                    at_event: run.last_seq,
                    error,
                }),
            }),
        }
    }
}

/// The pending jobs in the order they happened, as events and as guest jobs.
fn ordered_jobs(pending: &PendingJobs) -> (Vec<Event>, Vec<Job>) {
    let mut timed: Vec<(u64, u8, u64, Event)> = Vec::new();
    for a in &pending.activities {
        let event = match &a.outcome {
            Ok(output) => Event::ActivityCompleted {
                seq: a.seq,
                output: output.clone(),
                attempt: a.attempt,
            },
            Err(failure) => Event::ActivityFailed {
                seq: a.seq,
                failure: failure.clone(),
                attempt: a.attempt,
            },
        };
        timed.push((a.resolved_at_ms, 0, u64::from(a.seq), event));
    }
    for t in &pending.due_timers {
        timed.push((
            t.fire_at_ms,
            1,
            u64::from(t.seq),
            Event::TimerFired { seq: t.seq },
        ));
    }
    for s in &pending.signals {
        timed.push((
            s.received_at_ms,
            2,
            s.id as u64,
            Event::SignalReceived {
                name: s.name.clone(),
                input: s.input.clone(),
            },
        ));
    }
    for c in &pending.children {
        let event = match &c.outcome {
            Ok(output) => Event::ChildWorkflowCompleted {
                seq: c.seq,
                output: output.clone(),
            },
            Err(failure) => Event::ChildWorkflowFailed {
                seq: c.seq,
                failure: failure.clone(),
            },
        };
        timed.push((c.resolved_at_ms, 3, u64::from(c.seq), event));
    }
    for (i, u) in pending.updates.iter().enumerate() {
        timed.push((
            u.received_at_ms,
            4,
            i as u64,
            Event::UpdateReceived {
                update_id: u.update_id.clone(),
                name: u.name.clone(),
                input: u.input.clone(),
            },
        ));
    }
    if let Some(cancel) = &pending.cancel {
        timed.push((
            cancel.requested_at_ms,
            5,
            0,
            Event::WorkflowCancelRequested {
                reason: cancel.reason.clone(),
            },
        ));
    }
    timed.sort_by_key(|(at, family, n, _)| (*at, *family, *n));
    let events: Vec<Event> = timed.into_iter().map(|(_, _, _, e)| e).collect();
    let jobs = events.iter().filter_map(Job::from_event).collect();
    (events, jobs)
}

/// Numbers and hashes events that follow `last_seq`/`last_hash`.
/// Numbers and hashes `events` after event `last_seq`; with the bytes of
/// their payloads.
fn seal_all(
    last_seq: u64,
    last_hash: EventHash,
    events: Vec<Event>,
    recorded_at_ms: u64,
) -> (Vec<RecordedEvent>, u64) {
    let mut prev = last_hash;
    let mut bytes = 0u64;
    let sealed = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let (sealed, size) =
                crate::model::seal_measured(prev, last_seq + 1 + i as u64, event, recorded_at_ms);
            prev = sealed.hash;
            bytes += size as u64;
            sealed
        })
        .collect();
    (sealed, bytes)
}

/// The verdict the host passes on a run before activating it, if any:
/// a termination asked for, or a deadline passed.
fn host_verdict(run: &RunRecord, now: u64) -> Option<Event> {
    if let Some(reason) = &run.termination_requested {
        return Some(Event::WorkflowTerminated {
            reason: reason.clone(),
        });
    }
    let deadline = run.deadline_ms?;
    (now >= deadline).then(|| Event::WorkflowTimedOut {
        timeout: if run.execution_deadline_ms == Some(deadline) {
            "execution".into()
        } else {
            "run".into()
        },
    })
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Merges upserted search attributes into the current ones; null removes a key.
fn merge_attributes(current: &mut Value, upsert: &Value) {
    if !current.is_object() {
        *current = Value::Object(serde_json::Map::new());
    }
    let (Value::Object(current), Value::Object(upsert)) = (current, upsert) else {
        return;
    };
    for (key, value) in upsert {
        if value.is_null() {
            current.remove(key);
        } else {
            current.insert(key.clone(), value.clone());
        }
    }
}

/// `run_after`, the run as `commit` leaves it, closed as the store closes
/// it: the outcome's status, output and failure, `closed_at_ms` the commit's
/// time. `None` for a commit that leaves it running, and for a
/// continue-as-new (whose close also links the next run).
fn closed_record(run_after: &RunRecord, commit: &ActivationCommit) -> Option<RunRecord> {
    if matches!(
        commit.outcome,
        RunOutcome::Running | RunOutcome::ContinuedAsNew { .. }
    ) {
        return None;
    }
    let (output, failure) = commit.outcome.result();
    Some(RunRecord {
        status: commit.outcome.status(),
        output: output.cloned(),
        failure,
        closed_at_ms: Some(commit.now_ms),
        ..run_after.clone()
    })
}
