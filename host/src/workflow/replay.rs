use crate::model::{
    Command, Event, GuestStatus, History, Job, ParentLink, RecordedEvent, RunId, Sha256Hex,
};
use crate::wasm::{GuestError, Instance, InstanceOptions, LoadedModule, RunInfo, WasmEngine};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;

/// What event 1 says about a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StartInfo {
    pub workflow_type: String,
    pub workflow_id: String,
    pub input: Value,
    /// The module the run is on now: the one event 1 names, or the last
    /// `module_changed` moved it to. It replays the whole history.
    pub module_sha256: Sha256Hex,
    pub seed: u64,
    pub parent: Option<ParentLink>,
    pub continued_from: Option<RunId>,
    /// Change ids with a patch marker anywhere in the history.
    pub recorded_patches: BTreeSet<String>,
}

impl StartInfo {
    /// What a new instance of this run needs.
    pub(crate) fn instance_options(&self, run_id: RunId) -> InstanceOptions {
        InstanceOptions {
            run_id,
            seed: self.seed,
            info: RunInfo {
                workflow_id: self.workflow_id.clone(),
                workflow_type: self.workflow_type.clone(),
                parent_workflow_id: self.parent.as_ref().map(|p| p.workflow_id.clone()),
            },
            recorded_patches: self.recorded_patches.clone(),
        }
    }
}

/// One recorded activation: its time, the jobs it delivered, and the commands
/// (including a terminal `workflow_completed`/`workflow_failed`) it recorded.
#[derive(Clone, Debug)]
pub(crate) struct RecordedActivation<'h> {
    pub(crate) opened_at: u64,
    pub(crate) time_ms: u64,
    pub(crate) jobs: Vec<Job>,
    pub(crate) commands: Vec<&'h RecordedEvent>,
}

impl RecordedActivation<'_> {
    fn last_seq(&self) -> u64 {
        self.commands
            .last()
            .map(|e| e.seq)
            .unwrap_or(self.opened_at + self.jobs.len() as u64)
    }
}

/// A history that is not shaped as Weft writes them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("event {seq}: {reason}")]
pub struct HistoryError {
    pub seq: u64,
    pub reason: String,
}

/// The first point where a guest's commands differ from the recorded ones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    /// The recorded event that differs, or where the extra command would have been recorded.
    pub event_seq: u64,
    /// What the history holds there (`None`: the guest issued a command the history lacks).
    pub recorded: Option<Event>,
    /// What the guest issues now (`None`: the guest no longer issues the recorded command).
    pub issued: Option<Event>,
    /// The guest function that issued it, with file and line when the module
    /// has debug info; found by the compatibility check and offline replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |e: &Option<Event>| match e {
            Some(e) => serde_json::to_string(e).unwrap_or_else(|_| format!("{e:?}")),
            None => "nothing".to_owned(),
        };
        write!(
            f,
            "nondeterminism at event {}: the history records {}, the module now issues {}",
            self.event_seq,
            show(&self.recorded),
            show(&self.issued)
        )?;
        match &self.location {
            Some(location) => write!(f, " (issued in {location})"),
            None => Ok(()),
        }
    }
}

/// Why a replay did not reach the end of the history.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Diverged(Box<Divergence>),
    #[error("the guest failed while replaying the activation at event {at_event}: {error}")]
    Guest { at_event: u64, error: GuestError },
    #[error("the history is malformed: {0}")]
    Malformed(#[from] HistoryError),
    #[error(
        "the history was recorded on module {recorded}, but module {given} was given; replay with the recorded module"
    )]
    WrongModule {
        recorded: Sha256Hex,
        given: Sha256Hex,
    },
}

/// The verdict of replaying a whole history.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayVerdict {
    /// Every activation issued exactly the recorded commands; the guest ends in this status.
    Identical { status: GuestStatus, events: u64 },
    /// The first difference.
    Diverged(Box<Divergence>),
}

/// Splits a history into its start and its activations, checking its shape.
pub(crate) fn parse_history(
    history: &History,
) -> Result<(StartInfo, Vec<RecordedActivation<'_>>), HistoryError> {
    let events = history.events();
    let mut start = match events.first() {
        Some(RecordedEvent {
            event:
                Event::WorkflowStarted {
                    workflow_type,
                    workflow_id,
                    input,
                    module_sha256,
                    seed,
                    parent,
                    continued_from,
                },
            ..
        }) => StartInfo {
            workflow_type: workflow_type.clone(),
            workflow_id: workflow_id.clone(),
            input: input.clone(),
            module_sha256: module_sha256.clone(),
            seed: *seed,
            parent: parent.clone(),
            continued_from: continued_from.clone(),
            recorded_patches: events
                .iter()
                .filter_map(|e| match &e.event {
                    Event::PatchMarker { change_id } => Some(change_id.clone()),
                    _ => None,
                })
                .collect(),
        },
        Some(e) => {
            return Err(HistoryError {
                seq: e.seq,
                reason: format!(
                    "a history starts with workflow_started, not {}",
                    e.event.kind()
                ),
            });
        }
        None => {
            return Err(HistoryError {
                seq: 1,
                reason: "the history is empty".into(),
            });
        }
    };
    let mut activations: Vec<RecordedActivation<'_>> = Vec::new();
    let mut ended = false;
    for e in &events[1..] {
        if ended {
            return Err(HistoryError {
                seq: e.seq,
                reason: format!("{} after the workflow ended", e.event.kind()),
            });
        }
        match &e.event {
            Event::ActivationStarted { time_ms } => activations.push(RecordedActivation {
                opened_at: e.seq,
                time_ms: *time_ms,
                jobs: Vec::new(),
                commands: Vec::new(),
            }),
            Event::WorkflowStarted { .. } => {
                return Err(HistoryError {
                    seq: e.seq,
                    reason: "workflow_started is allowed only as event 1".into(),
                });
            }
            Event::ModuleChanged { from, to, .. } => {
                if from != &start.module_sha256 {
                    return Err(HistoryError {
                        seq: e.seq,
                        reason: format!(
                            "module_changed from {from}, but the run was on {}",
                            start.module_sha256
                        ),
                    });
                }
                start.module_sha256 = to.clone();
            }
            // Where a reset run's kept prefix ends: nothing for the guest.
            Event::WorkflowReset { .. } => {}
            // Termination and timeouts are the host's verdict, outside any activation.
            event if event.is_host_verdict() => ended = true,
            event => {
                let Some(current) = activations.last_mut() else {
                    return Err(HistoryError {
                        seq: e.seq,
                        reason: format!("{} before the first activation_started", event.kind()),
                    });
                };
                if let Some(job) = Job::from_event(event) {
                    if !current.commands.is_empty() {
                        return Err(HistoryError {
                            seq: e.seq,
                            reason: format!("job {} after the activation's commands", event.kind()),
                        });
                    }
                    current.jobs.push(job);
                } else {
                    ended = event.is_terminal();
                    current.commands.push(e);
                }
            }
        }
    }
    Ok((start, activations))
}

/// Runs one activation in `instance`: the first one calls `start` (and then
/// delivers any jobs that were already waiting, such as early signals), later
/// ones deliver their jobs. Live runs and replays both go through here, so
/// they cannot drift apart.
pub(crate) async fn run_guest(
    instance: &mut Instance,
    start: &StartInfo,
    first: bool,
    jobs: &[Job],
    time_ms: u64,
    replaying: bool,
) -> Result<(Vec<Command>, GuestStatus), GuestError> {
    instance.set_time(time_ms, replaying);
    let mut commands = Vec::new();
    let mut status = GuestStatus::Pending;
    if first {
        let a = instance.start(&start.workflow_type, &start.input).await?;
        commands.extend(a.commands);
        status = a.status;
    }
    if !jobs.is_empty() && status == GuestStatus::Pending {
        let a = instance.deliver(jobs).await?;
        commands.extend(a.commands);
        status = a.status;
    }
    Ok((commands, status))
}

/// The events an activation's commands and final status are recorded as.
pub(crate) fn command_events(
    commands: &[Command],
    status: &GuestStatus,
    time_ms: u64,
) -> Vec<Event> {
    commands
        .iter()
        .map(|c| c.to_event(time_ms))
        .chain(status.to_event())
        .collect()
}

/// Compares what the guest issued with what the activation recorded.
fn compare(activation: &RecordedActivation<'_>, issued: &[Event]) -> Result<(), Box<Divergence>> {
    for i in 0..activation.commands.len().max(issued.len()) {
        let recorded = activation.commands.get(i);
        let now = issued.get(i);
        if recorded.map(|r| &r.event) != now {
            let event_seq = recorded.map(|r| r.seq).unwrap_or(activation.last_seq() + 1);
            return Err(Box::new(Divergence {
                event_seq,
                recorded: recorded.map(|r| r.event.clone()),
                issued: now.cloned(),
                location: None,
            }));
        }
    }
    Ok(())
}

/// Where a replayed instance stands: what the guest last returned and the
/// workflow time of its last activation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Replayed {
    pub(crate) status: GuestStatus,
    pub(crate) last_time_ms: u64,
}

/// Replays `activations` into a fresh `instance`, checking every command.
/// With `locate`, a command that differs traps the guest where it was issued,
/// so that the divergence names the guest code (checks and audits use it; a
/// live rebuild does not pay for it).
pub(crate) async fn replay_into(
    instance: &mut Instance,
    start: &StartInfo,
    activations: &[RecordedActivation<'_>],
    locate: bool,
) -> Result<Replayed, ReplayError> {
    let mut replayed = Replayed {
        status: GuestStatus::Pending,
        last_time_ms: 0,
    };
    for (i, activation) in activations.iter().enumerate() {
        if locate {
            instance.expect(Some(
                activation
                    .commands
                    .iter()
                    .map(|e| e.event.clone())
                    .collect(),
            ));
        }
        let ran = run_guest(
            instance,
            start,
            i == 0,
            &activation.jobs,
            activation.time_ms,
            true,
        )
        .await;
        let (commands, status) = match ran {
            Ok(ran) => ran,
            Err(GuestError::Diverged {
                index,
                issued,
                location,
            }) => {
                let recorded = activation.commands.get(index);
                return Err(ReplayError::Diverged(Box::new(Divergence {
                    event_seq: recorded.map(|r| r.seq).unwrap_or(activation.last_seq() + 1),
                    recorded: recorded.map(|r| r.event.clone()),
                    issued: Some(*issued),
                    location,
                })));
            }
            Err(error) => {
                return Err(ReplayError::Guest {
                    at_event: activation.opened_at,
                    error,
                });
            }
        };
        let issued = command_events(&commands, &status, activation.time_ms);
        compare(activation, &issued).map_err(ReplayError::Diverged)?;
        replayed.status = status;
        replayed.last_time_ms = activation.time_ms;
    }
    Ok(replayed)
}

/// Replays a whole history against a module, offline: no database, no network.
///
/// The module must be the one the history was recorded on (its sha256 is in
/// event 1). Returns the verdict, or why no verdict could be reached (a
/// malformed history, the wrong module, a guest that traps).
pub async fn replay_history(
    engine: &WasmEngine,
    module: &LoadedModule,
    history: &History,
) -> Result<ReplayVerdict, ReplayError> {
    let (start, activations) = parse_history(history)?;
    if &start.module_sha256 != module.sha256() {
        return Err(ReplayError::WrongModule {
            recorded: start.module_sha256,
            given: module.sha256().clone(),
        });
    }
    replay_unpinned(engine, module, &start, &activations, history.len() as u64).await
}

/// Replays a history against any module, such as a candidate new version:
/// the compatibility check. Unlike [`replay_history`] it does not require the
/// recorded module.
pub async fn replay_against(
    engine: &WasmEngine,
    module: &LoadedModule,
    history: &History,
) -> Result<ReplayVerdict, ReplayError> {
    let (start, activations) = parse_history(history)?;
    replay_unpinned(engine, module, &start, &activations, history.len() as u64).await
}

async fn replay_unpinned(
    engine: &WasmEngine,
    module: &LoadedModule,
    start: &StartInfo,
    activations: &[RecordedActivation<'_>],
    events: u64,
) -> Result<ReplayVerdict, ReplayError> {
    let run_id = RunId(format!("replay-{}", start.workflow_id));
    let mut instance = Instance::new(engine, module, start.instance_options(run_id))
        .await
        .map_err(|error| ReplayError::Guest { at_event: 1, error })?;
    match replay_into(&mut instance, start, activations, true).await {
        Ok(r) => Ok(ReplayVerdict::Identical {
            status: r.status,
            events,
        }),
        Err(ReplayError::Diverged(d)) => Ok(ReplayVerdict::Diverged(d)),
        Err(e) => Err(e),
    }
}
