//! One live activation of a claimed run, and queries against live runs.

use super::ReplayError;
use super::replay::{Replayed, StartInfo, command_events, parse_history, replay_into, run_guest};
use crate::model::{Command, Event, EventHash, GuestStatus, Job, RecordedEvent, RunId, Sha256Hex};
use crate::scheduler::Clock;
use crate::store::{
    ActivationCommit, NewActivityTask, NewTimer, PendingJobs, RunClaim, RunOutcome, RunRecord,
    RunStatus, Store, StoreError,
};
use crate::wasm::{GuestError, Instance, InstanceOptions, LoadedModule, WasmEngine};
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
}

/// A warm instance, valid while the stored history still ends where it did.
struct Warm {
    instance: Instance,
    start: StartInfo,
    last_seq: u64,
    last_time_ms: u64,
}

/// What one activation did, for the scheduler's bookkeeping.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ActivationReport {
    pub(crate) new_activities: usize,
    /// The run stopped running: it completed, failed, or was parked.
    pub(crate) closed: bool,
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
    warm: Mutex<LruCache<RunId, Warm>>,
}

impl Driver {
    pub(crate) fn new(
        engine: Arc<WasmEngine>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: DriverConfig,
    ) -> Self {
        let cap = NonZeroUsize::new(config.warm_instances.max(1)).expect("at least one");
        Self {
            engine,
            store,
            clock,
            warm: Mutex::new(LruCache::new(cap)),
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
        let engine = self.engine.clone();
        let loaded = tokio::task::spawn_blocking(move || engine.load(&bytes))
            .await
            .map_err(|e| DriverError::Module {
                run_id: run_id.clone(),
                sha256: sha256.clone(),
                reason: e.to_string(),
            })?;
        loaded.map_err(|e| DriverError::Module {
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
        let options = InstanceOptions {
            run_id: run.run_id.clone(),
            seed: start.seed,
        };
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
            match replay_into(&mut instance, &start, &activations).await {
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
                        closed: true,
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
                    closed: true,
                    ..ActivationReport::default()
                });
            }
        };

        let mut events = vec![Event::ActivationStarted { time_ms }];
        events.extend(job_events);
        events.extend(command_events(&commands, &status, time_ms));
        let sealed = seal_all(run.last_seq, run.last_hash, events, now);
        let new_last_seq = sealed.last().map(|e| e.seq).unwrap_or(run.last_seq);

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
            outcome: match &status {
                GuestStatus::Pending => RunOutcome::Running,
                GuestStatus::Completed(output) => RunOutcome::Completed {
                    output: output.clone(),
                },
                GuestStatus::Failed(failure) => RunOutcome::Failed {
                    failure: failure.clone(),
                },
            },
            now_ms: now,
        };
        for command in commands {
            match command {
                Command::ScheduleActivity {
                    seq,
                    name,
                    input,
                    options,
                } => commit.new_activities.push(NewActivityTask {
                    seq,
                    name,
                    input,
                    options,
                    visible_at_ms: now,
                }),
                Command::StartTimer { seq, duration_ms } => commit.new_timers.push(NewTimer {
                    seq,
                    fire_at_ms: time_ms.saturating_add(duration_ms),
                }),
                Command::CancelTimer { seq } => commit.removed_timers.push(seq),
            }
        }
        let report = ActivationReport {
            new_activities: commit.new_activities.len(),
            closed: status != GuestStatus::Pending,
        };
        // A timer started and cancelled in the same activation never reaches the table.
        let removed = commit.removed_timers.clone();
        commit.new_timers.retain(|t| !removed.contains(&t.seq));

        match self.store.commit_activation(commit).await {
            Ok(()) => {
                tracing::debug!(run_id = %run.run_id, last_seq = new_last_seq, "activation committed");
                if !report.closed {
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
        let mut warm = match self.take_warm(&run) {
            Some(w) => w,
            None => self
                .rebuild(&run)
                .await?
                .map_err(|error| DriverError::Replay {
                    run_id: run_id.clone(),
                    error: Box::new(error),
                })?,
        };
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
