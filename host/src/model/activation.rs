use super::{ActivityOptions, Event, Failure};
use serde_json::Value;

/// Something delivered to the guest in an activation. Each one is recorded as
/// the matching job [`Event`] before the guest sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    ActivityResolved {
        seq: u32,
        outcome: Result<Value, Failure>,
    },
    TimerFired {
        seq: u32,
    },
    SignalReceived {
        name: String,
        input: Value,
    },
}

impl Job {
    /// The job an event records, if it records one.
    pub fn from_event(event: &Event) -> Option<Job> {
        Some(match event {
            Event::ActivityCompleted { seq, output, .. } => Job::ActivityResolved {
                seq: *seq,
                outcome: Ok(output.clone()),
            },
            Event::ActivityFailed { seq, failure, .. } => Job::ActivityResolved {
                seq: *seq,
                outcome: Err(failure.clone()),
            },
            Event::TimerFired { seq } => Job::TimerFired { seq: *seq },
            Event::SignalReceived { name, input } => Job::SignalReceived {
                name: name.clone(),
                input: input.clone(),
            },
            _ => return None,
        })
    }
}

/// What the guest asked for through an import during an activation.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    ScheduleActivity {
        seq: u32,
        name: String,
        input: Value,
        options: ActivityOptions,
    },
    StartTimer {
        seq: u32,
        duration_ms: u64,
    },
    CancelTimer {
        seq: u32,
    },
}

impl Command {
    /// The event that records this command in an activation at workflow time `time_ms`.
    pub fn to_event(&self, time_ms: u64) -> Event {
        match self.clone() {
            Command::ScheduleActivity {
                seq,
                name,
                input,
                options,
            } => Event::ActivityScheduled {
                seq,
                name,
                input,
                options,
            },
            Command::StartTimer { seq, duration_ms } => Event::TimerStarted {
                seq,
                duration_ms,
                fire_at_ms: time_ms.saturating_add(duration_ms),
            },
            Command::CancelTimer { seq } => Event::TimerCancelled { seq },
        }
    }
}

/// The guest's state at the end of an activation.
#[derive(Clone, Debug, PartialEq)]
pub enum GuestStatus {
    Pending,
    Completed(Value),
    Failed(Failure),
}

impl GuestStatus {
    /// The terminal event this status records, if the run ended.
    pub fn to_event(&self) -> Option<Event> {
        match self {
            GuestStatus::Pending => None,
            GuestStatus::Completed(output) => Some(Event::WorkflowCompleted {
                output: output.clone(),
            }),
            GuestStatus::Failed(failure) => Some(Event::WorkflowFailed {
                failure: failure.clone(),
            }),
        }
    }
}
