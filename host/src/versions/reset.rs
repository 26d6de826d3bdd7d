//! Reset: a new run of the workflow that keeps a prefix of an old run's
//! history (up to the end of one of its activations), inherits the
//! activities and timers that prefix left pending, and receives again the
//! signals and updates the old run got after it. The old run, if open, is
//! terminated.

use crate::host::{Host, HostError};
use crate::model::{Event, History, RecordedEvent, RunId, Sha256Hex, seal};
use crate::store::{
    ActivationCommit, CreateRun, IdConflictPolicy, IdReusePolicy, NewActivityTask, NewTimer,
    Reapplied, ReappliedUpdate, RunOptions, RunOutcome, RunRecord, RunStatus,
};
use crate::workflow::{ReplayVerdict, parse_history, replay_against};
use std::collections::BTreeMap;
use std::time::Duration;

/// What to reset.
#[derive(Clone, Debug)]
pub struct ResetRequest {
    pub run_id: RunId,
    /// The last event kept: the end of one of the run's activations.
    pub to_event: u64,
    /// Continue on this module instead of the one the run was on at
    /// `to_event` (it must replay the kept prefix identically).
    pub module: Option<Sha256Hex>,
    pub reason: String,
    /// What the new run receives again of what the old one got after `to_event`.
    pub reapply: Reapply,
}

/// What a reset run receives again. The default: signals and updates both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reapply {
    pub signals: bool,
    pub updates: bool,
}

impl Default for Reapply {
    fn default() -> Self {
        Self {
            signals: true,
            updates: true,
        }
    }
}

/// What a reset did.
#[derive(Clone, Debug, PartialEq)]
pub struct Reset {
    /// The new run.
    pub run_id: RunId,
    pub workflow_id: String,
    pub module_sha256: Sha256Hex,
    /// Events kept from the old run.
    pub kept_events: u64,
    /// Signals the old run received after the kept prefix, queued again.
    pub signals: usize,
    /// Updates the old run accepted after the kept prefix, applied again.
    pub updates: usize,
    /// The old run was open and has been terminated.
    pub terminated_old: bool,
}

/// How long a reset waits for the old run's termination to be carried out.
const TERMINATION_WAIT: Duration = Duration::from_secs(30);

/// The work a prefix of a history leaves pending, from its commands and jobs.
#[derive(Default)]
struct Pending {
    activities: BTreeMap<u32, NewActivityTask>,
    timers: BTreeMap<u32, NewTimer>,
    /// Why the prefix cannot be continued by a new run, if it cannot.
    blocked: Option<String>,
}

fn pending(prefix: &[RecordedEvent], now_ms: u64) -> Pending {
    let mut p = Pending::default();
    let mut children = BTreeMap::new();
    let mut cancelled = BTreeMap::new();
    let mut updates = BTreeMap::new();
    for e in prefix {
        match &e.event {
            Event::ActivityScheduled {
                seq,
                name,
                input,
                options,
            } => {
                p.activities.insert(
                    *seq,
                    NewActivityTask {
                        seq: *seq,
                        name: name.clone(),
                        input: input.clone(),
                        options: options.clone(),
                        visible_at_ms: now_ms,
                        claimed: None,
                    },
                );
            }
            Event::ActivityCompleted { seq, .. } | Event::ActivityFailed { seq, .. } => {
                p.activities.remove(seq);
                cancelled.remove(seq);
            }
            Event::ActivityCancelRequested { seq } => {
                cancelled.insert(*seq, e.seq);
            }
            Event::TimerStarted {
                seq, fire_at_ms, ..
            } => {
                p.timers.insert(
                    *seq,
                    NewTimer {
                        seq: *seq,
                        fire_at_ms: *fire_at_ms,
                    },
                );
            }
            Event::TimerFired { seq } | Event::TimerCancelled { seq } => {
                p.timers.remove(seq);
            }
            Event::ChildWorkflowInitiated { seq, .. } => {
                children.insert(*seq, e.seq);
            }
            Event::ChildWorkflowCompleted { seq, .. } | Event::ChildWorkflowFailed { seq, .. } => {
                children.remove(seq);
            }
            Event::UpdateReceived { update_id, .. } => {
                updates.insert(update_id.clone(), e.seq);
            }
            Event::UpdateCompleted { update_id, .. } | Event::UpdateFailed { update_id, .. } => {
                updates.remove(update_id);
            }
            _ => {}
        }
    }
    p.blocked = if let Some((seq, at)) = children.iter().next() {
        Some(format!(
            "child workflow {seq} (started at event {at}) has not finished by then, and a child reports to the run that started it"
        ))
    } else if let Some((seq, at)) = cancelled.iter().next() {
        Some(format!(
            "activity {seq} was asked to cancel at event {at} and had not resolved by then"
        ))
    } else {
        updates.iter().next().map(|(id, at)| {
            format!(
                "update {id:?} (received at event {at}) is unanswered by then, and its caller waits on the old run"
            )
        })
    };
    p
}

/// The events that end an activation whose history can go on: reset points.
fn reset_points(history: &History) -> Vec<u64> {
    let events = history.events();
    let mut points = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let boundary = match events.get(i + 1).map(|n| &n.event) {
            None => true,
            Some(next) => {
                next.is_host_verdict()
                    || matches!(
                        next,
                        Event::ActivationStarted { .. }
                            | Event::ModuleChanged { .. }
                            | Event::WorkflowReset { .. }
                    )
            }
        };
        if boundary && !e.event.is_terminal() && !matches!(e.event, Event::WorkflowStarted { .. }) {
            points.push(e.seq);
        }
    }
    points
}

impl Host {
    /// Resets a run: a new run of its workflow id keeps its history up to
    /// `to_event` (the end of an activation), inherits the activities and
    /// timers pending there, and gets again the signals and updates the old
    /// run received after it. An open old run is terminated first. With `module`, the new
    /// run goes on on that module, which must replay the kept prefix identically.
    pub async fn reset(&self, request: ResetRequest) -> Result<Reset, HostError> {
        let old = self.store().run(&request.run_id).await?;
        let history = self.store().history(&old.run_id).await?;
        let points = reset_points(&history);
        if !points.contains(&request.to_event) {
            return Err(HostError::Other(format!(
                "run {} cannot be reset to event {}: a reset keeps whole activations; reset it to the end of one: {}",
                old.run_id,
                request.to_event,
                describe_points(&points)
            )));
        }
        let prefix: Vec<RecordedEvent> = history.events()[..request.to_event as usize].to_vec();
        let now = self.clock().now_ms();
        let inherited = pending(&prefix, now);
        if let Some(why) = inherited.blocked {
            return Err(HostError::Other(format!(
                "run {} cannot be reset to event {}: {why}; pick another event",
                old.run_id, request.to_event
            )));
        }
        let kept = History::from_recorded(prefix.clone());
        // The module the run was on at `to_event`, as replay reads it.
        let on_module = parse_history(&kept)
            .map_err(|e| HostError::Replay {
                run_id: old.run_id.clone(),
                error: Box::new(e.into()),
            })?
            .0
            .module_sha256;
        let to = request.module.clone().unwrap_or(on_module.clone());
        let module = self.module(&to).await?;
        match replay_against(self.engine(), &module, &kept).await {
            Ok(ReplayVerdict::Identical { .. }) => {}
            Ok(ReplayVerdict::Diverged(d)) => {
                return Err(HostError::Other(format!(
                    "run {} cannot be reset to event {} on module {to}: the kept history does not replay there: {d}",
                    old.run_id, request.to_event
                )));
            }
            Err(e) => {
                return Err(HostError::Replay {
                    run_id: old.run_id.clone(),
                    error: Box::new(e),
                });
            }
        }
        // Signals after the prefix: in the history, then any still in the
        // inbox. Updates the old run accepted after the prefix: their callers
        // have the old run's answers; the new run applies them again (the same
        // ids, so a retry gets its answer). Updates still in the old run's
        // inbox are not moved: terminating the old run fails them, and their
        // callers hear so.
        let mut reapplied = Reapplied::default();
        for e in &history.events()[prefix.len()..] {
            match &e.event {
                Event::SignalReceived { name, input } => {
                    reapplied.signals.push((name.clone(), input.clone()))
                }
                Event::UpdateReceived {
                    update_id,
                    name,
                    input,
                } => reapplied.updates.push(ReappliedUpdate {
                    update_id: update_id.clone(),
                    name: name.clone(),
                    input: input.clone(),
                }),
                _ => {}
            }
        }
        let run_id = self.new_run_id();
        let terminated_old = old.status.is_open();
        if terminated_old {
            let inbox = self.store().pending_jobs(&old.run_id, now).await?;
            reapplied
                .signals
                .extend(inbox.signals.into_iter().map(|s| (s.name, s.input)));
            self.terminate(
                &old.run_id,
                &format!(
                    "reset to event {} as run {run_id}: {}",
                    request.to_event, request.reason
                ),
            )
            .await?;
            self.closed(&old.run_id).await?;
        }

        let mut events = prefix.clone();
        let mut push = |event: Event| {
            let prev = events.last().expect("the prefix has event 1");
            let sealed = seal(prev.hash, prev.seq + 1, event, now);
            events.push(sealed);
        };
        push(Event::WorkflowReset {
            from_run_id: old.run_id.clone(),
            at_event: request.to_event,
            reason: request.reason.clone(),
        });
        if to != on_module {
            push(Event::ModuleChanged {
                from: on_module,
                to: to.clone(),
                reason: format!("reset onto this module: {}", request.reason),
            });
        }
        let Some(Event::WorkflowStarted { parent, .. }) = events.first().map(|e| &e.event) else {
            unreachable!("reset points exist only in histories that start with workflow_started");
        };
        let parent = parent.clone();
        let first_event = events.remove(0);
        let rest = ActivationCommit {
            run_id: run_id.clone(),
            events,
            new_activities: inherited.activities.into_values().collect(),
            new_timers: inherited.timers.into_values().collect(),
            outcome: RunOutcome::Running,
            now_ms: now,
            ..ActivationCommit::default()
        };
        if !request.reapply.signals {
            reapplied.signals.clear();
        }
        if !request.reapply.updates {
            reapplied.updates.clear();
        }
        let signal_count = reapplied.signals.len();
        let update_count = reapplied.updates.len();
        self.store()
            .create_reset_run(
                CreateRun {
                    run_id: run_id.clone(),
                    workflow_id: old.workflow_id.clone(),
                    workflow_type: old.workflow_type.clone(),
                    module_sha256: to.clone(),
                    first_event,
                    now_ms: now,
                    options: RunOptions {
                        parent,
                        memo: old.memo.clone(),
                        search_attributes: old.search_attributes.clone(),
                        id_reuse_policy: IdReusePolicy::AllowDuplicate,
                        id_conflict_policy: IdConflictPolicy::Fail,
                        ..RunOptions::default()
                    },
                },
                rest,
                reapplied,
            )
            .await?;
        self.inner().wakeups.activations.notify_one();
        self.inner().wakeups.activities_ready();
        tracing::info!(old = %old.run_id, new = %run_id, at_event = request.to_event, "reset a run");
        Ok(Reset {
            run_id,
            workflow_id: old.workflow_id,
            module_sha256: to,
            kept_events: request.to_event,
            signals: signal_count,
            updates: update_count,
            terminated_old,
        })
    }

    /// Waits, bounded, for a run whose termination was asked for to close.
    async fn closed(&self, run_id: &RunId) -> Result<RunRecord, HostError> {
        let deadline = tokio::time::Instant::now() + TERMINATION_WAIT;
        loop {
            let run = self.store().run(run_id).await?;
            if !run.status.is_open() {
                return Ok(run);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HostError::Other(format!(
                    "run {run_id} was asked to terminate but is still {} after {TERMINATION_WAIT:?}; is a host running? Reset it again once it closed",
                    run.status.as_str()
                )));
            }
            if run.status == RunStatus::Running {
                let _ = tokio::time::timeout(Duration::from_millis(200), self.wait(run_id)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn describe_points(points: &[u64]) -> String {
    if points.is_empty() {
        return "it has none yet".into();
    }
    let shown: Vec<String> = points.iter().take(20).map(u64::to_string).collect();
    let more = if points.len() > 20 { ", …" } else { "" };
    format!("events {}{more}", shown.join(", "))
}
