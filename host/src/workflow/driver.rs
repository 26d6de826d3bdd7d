//! One live activation of a claimed run, and queries against live runs.

use super::ReplayError;
use super::replay::{Replayed, StartInfo, command_events, parse_history, replay_into, run_guest};
use crate::model::{
    Command, Event, EventHash, GuestStatus, Job, ParentLink, RecordedEvent, RunId, Sha256Hex,
};
use crate::scheduler::Clock;
use crate::store::{
    ActivationCommit, CreateRun, NewActivityTask, NewChild, NewTimer, PendingJobs, RunClaim,
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
}

/// A warm instance, valid while the stored history still ends where it did.
struct Warm {
    instance: Instance,
    start: StartInfo,
    last_seq: u64,
    last_time_ms: u64,
}

/// What one activation did, for the scheduler's bookkeeping.
#[derive(Debug, Default, Clone)]
pub(crate) struct ActivationReport {
    pub(crate) new_activities: usize,
    /// Some new activity has a deadline for the timeout sweep to watch.
    pub(crate) new_deadlines: bool,
    /// The local activities it scheduled, for this host to claim and run now.
    pub(crate) local_activities: Vec<LocalActivity>,
    /// The run stopped running, with this status: it closed, or was parked (stuck).
    pub(crate) closed: Option<RunStatus>,
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
        }
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
        if let Err(e) = history.verify() {
            return Err(DriverError::Store(StoreError::Corrupt(format!(
                "run {}: {e}",
                run.run_id
            ))));
        }
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
                }),
                Err(e) => Err(e),
            },
        )
    }

    /// Runs one activation of a claimed run and commits it.
    pub(crate) async fn activate(&self, claim: &RunClaim) -> Result<ActivationReport, DriverError> {
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
        let mut warm = match self.take_warm(&run) {
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

        // Workflow time never goes backwards, even if host clocks disagree.
        let time_ms = now.max(warm.last_time_ms);
        let (job_events, jobs) = ordered_jobs(&pending);
        let (commands, status) = match run_guest(
            &mut warm.instance,
            &warm.start,
            first,
            &jobs,
            time_ms,
            false,
        )
        .await
        {
            Ok(r) => r,
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

        let mut events = vec![Event::ActivationStarted { time_ms }];
        events.extend(job_events);
        events.extend(command_events(&commands, &status, time_ms));
        let sealed = seal_all(run.last_seq, run.last_hash, events, now);
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
                next: Box::new(self.continued_run(&run, &warm.start, input.clone(), now)),
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
        let closed = (status != GuestStatus::Pending).then(|| commit.outcome.status());
        let report = ActivationReport {
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
        };
        // A timer started and cancelled in the same activation never reaches the table.
        let removed = commit.removed_timers.clone();
        commit.new_timers.retain(|t| !removed.contains(&t.seq));

        match self.store.commit_activation(commit).await {
            Ok(()) => {
                tracing::debug!(run_id = %run.run_id, last_seq = new_last_seq, "activation committed");
                if report.closed.is_none() {
                    warm.last_seq = new_last_seq;
                    warm.last_time_ms = time_ms;
                    self.put_warm(run.run_id.clone(), warm);
                }
                Ok(report)
            }
            // Another host owns the run now: our instance is stale, drop it.
            Err(e) => Err(e.into()),
        }
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
        let events = seal_all(run.last_seq, run.last_hash, vec![verdict], now);
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
fn seal_all(
    last_seq: u64,
    last_hash: EventHash,
    events: Vec<Event>,
    recorded_at_ms: u64,
) -> Vec<RecordedEvent> {
    let mut prev = last_hash;
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let sealed = crate::model::seal(prev, last_seq + 1 + i as u64, event, recorded_at_ms);
            prev = sealed.hash;
            sealed
        })
        .collect()
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
