//! What a run's chained events say about it: the facts a reader is shown
//! (ids, type, module, status, output, failure). The `runs` row and an
//! export's `run` section repeat them for convenience; where they disagree
//! with the events, the events win.

use super::AuditError;
use crate::model::{Event, Failure, GuestStatus, RecordedEvent, Sha256Hex};
use crate::store::{RunOutcome, RunRecord, RunStatus};
use serde_json::Value;

/// How the run's last event closed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Closed {
    pub status: RunStatus,
    /// The workflow's output, when it completed.
    pub output: Option<Value>,
    /// Why it did not complete (a cancel, a termination and a timeout are
    /// failures of their own type, as [`RunOutcome::result`] has them).
    pub failure: Option<Failure>,
}

/// How `event` closes a run, or `None` if it does not.
pub fn closed_by(event: &Event) -> Option<Closed> {
    let outcome = match event {
        Event::WorkflowCompleted { output } => RunOutcome::Completed {
            output: output.clone(),
        },
        Event::WorkflowFailed { failure } => RunOutcome::Failed {
            failure: failure.clone(),
        },
        Event::WorkflowCancelled { message } => RunOutcome::Cancelled {
            message: message.clone(),
        },
        Event::WorkflowTerminated { reason } => RunOutcome::Terminated {
            reason: reason.clone(),
        },
        Event::WorkflowTimedOut { timeout } => RunOutcome::TimedOut {
            timeout: timeout.clone(),
        },
        Event::WorkflowContinuedAsNew { .. } => {
            return Some(Closed {
                status: RunStatus::ContinuedAsNew,
                output: None,
                failure: None,
            });
        }
        _ => return None,
    };
    let (output, failure) = outcome.result();
    Some(Closed {
        status: outcome.status(),
        output: output.cloned(),
        failure,
    })
}

/// The facts a history's events establish about its run.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainedRun {
    pub workflow_id: String,
    pub workflow_type: String,
    pub input: Value,
    /// Event 1's module, or the last `module_changed`'s.
    pub module_sha256: Sha256Hex,
    /// `None` while the history is open.
    pub closed: Option<Closed>,
}

impl ChainedRun {
    /// What `events` (a whole history, in order) say; `None` when event 1
    /// is not `workflow_started`.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<Self> {
        let mut events = events.into_iter();
        let Some(Event::WorkflowStarted {
            workflow_type,
            workflow_id,
            input,
            module_sha256,
            ..
        }) = events.next()
        else {
            return None;
        };
        let mut run = ChainedRun {
            workflow_id: workflow_id.clone(),
            workflow_type: workflow_type.clone(),
            input: input.clone(),
            module_sha256: module_sha256.clone(),
            closed: None,
        };
        for event in events {
            if let Event::ModuleChanged { to, .. } = event {
                run.module_sha256 = to.clone();
            }
            run.closed = closed_by(event);
        }
        Some(run)
    }
}

/// `run` (a `runs` row) with its status, output and failure taken from its
/// last event, `last`: the row is an index, the event is the record. A
/// difference is logged, naming both, since it means the row was edited.
pub(crate) fn reconciled(mut run: RunRecord, last: Option<&RecordedEvent>) -> RunRecord {
    let closed = last.and_then(|e| closed_by(&e.event));
    let (status, output, failure) = match closed {
        Some(c) => (c.status, c.output, c.failure),
        // An open history: running, or parked (which only the row knows).
        None if run.status.is_open() => (run.status, None, None),
        None => (RunStatus::Running, None, None),
    };
    let mut differs = Vec::new();
    if run.status != status {
        differs.push(format!(
            "status {} (the events say {})",
            run.status.as_str(),
            status.as_str()
        ));
    }
    if not_null(&run.output) != not_null(&output) {
        differs.push(format!(
            "output {} (the events say {})",
            shown(&run.output),
            shown(&output)
        ));
    }
    if run.failure != failure {
        differs.push(format!(
            "failure {:?} (the events say {:?})",
            run.failure.as_ref().map(ToString::to_string),
            failure.as_ref().map(ToString::to_string)
        ));
    }
    if let Some(last) = last
        && (run.last_seq != last.seq || run.last_hash != last.hash)
    {
        differs.push(format!(
            "last event {} {} (the history's is {} {})",
            run.last_seq,
            run.last_hash.to_hex(),
            last.seq,
            last.hash.to_hex()
        ));
        run.last_seq = last.seq;
        run.last_hash = last.hash;
    }
    if !differs.is_empty() {
        tracing::error!(
            run_id = %run.run_id,
            "run {}'s row disagrees with its history: it says {}; the history wins (was the runs table edited?)",
            run.run_id,
            differs.join(", ")
        );
    }
    run.status = status;
    run.output = output;
    run.failure = failure;
    run
}

fn not_null(v: &Option<Value>) -> Option<&Value> {
    v.as_ref().filter(|v| !v.is_null())
}

fn shown(v: &Option<Value>) -> String {
    v.as_ref().map_or_else(|| "none".into(), Value::to_string)
}

/// Checks what an offline replay computed against the history's last event:
/// a guest that closed the run must have closed it as recorded, and a
/// guest still waiting must leave a history that is open or closed by the
/// host (terminated, timed out).
pub(crate) fn check_outcome(
    computed: &GuestStatus,
    last: Option<&RecordedEvent>,
) -> Result<(), AuditError> {
    let recorded = last.filter(|e| e.event.is_terminal());
    let expected = computed.to_event();
    let agrees = match (&expected, recorded) {
        (None, None) => true,
        (None, Some(r)) => r.event.is_host_verdict(),
        (Some(e), Some(r)) => *e == r.event,
        (Some(_), None) => false,
    };
    if agrees {
        return Ok(());
    }
    let describe = |e: Option<&Event>| match e {
        Some(e) => format!("{} {}", e.kind(), e.payload_json()),
        None => "no closing event (still running)".into(),
    };
    Err(AuditError::OutcomeDiffers {
        computed: describe(expected.as_ref()),
        recorded: match recorded {
            Some(r) => format!("event {}: {}", r.seq, describe(Some(&r.event))),
            None => describe(None),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventHash;
    use serde_json::json;

    fn recorded(seq: u64, event: Event) -> RecordedEvent {
        RecordedEvent {
            seq,
            recorded_at_ms: 0,
            event,
            hash: EventHash::GENESIS,
        }
    }

    #[test]
    fn a_replay_must_close_the_run_as_its_last_event_does() {
        let done = |v| Event::WorkflowCompleted { output: v };
        let last = recorded(9, done(json!("shipped")));
        check_outcome(&GuestStatus::Completed(json!("shipped")), Some(&last)).unwrap();
        let e = check_outcome(&GuestStatus::Completed(json!("refunded")), Some(&last))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"refunded\"") && e.contains("\"shipped\""),
            "{e}"
        );
        assert!(e.contains("event 9"), "{e}");
        // Completed by the guest, but the history never says so.
        let open = recorded(9, Event::ActivationStarted { time_ms: 0 });
        assert!(check_outcome(&GuestStatus::Completed(json!(1)), Some(&open)).is_err());
        // Still waiting: fine for an open history or one the host closed.
        check_outcome(&GuestStatus::Pending, Some(&open)).unwrap();
        let terminated = recorded(9, Event::WorkflowTerminated { reason: "x".into() });
        check_outcome(&GuestStatus::Pending, Some(&terminated)).unwrap();
        assert!(check_outcome(&GuestStatus::Pending, Some(&last)).is_err());
    }

    #[test]
    fn the_row_yields_to_the_closing_event() {
        let record = RunRecord {
            run_id: "r".into(),
            workflow_id: "w".into(),
            workflow_type: "t".into(),
            module_sha256: Sha256Hex::of(b"m"),
            status: RunStatus::Completed,
            output: Some(json!("forged")),
            failure: None,
            stuck: None,
            last_seq: 9,
            last_hash: EventHash::GENESIS,
            created_at_ms: 0,
            closed_at_ms: Some(1),
            parent: None,
            status_line: None,
            search_attributes: json!({}),
            memo: None,
            cancel_requested: None,
            termination_requested: None,
            deadline_ms: None,
            execution_deadline_ms: None,
            run_timeout_ms: None,
            continued_to: None,
        };
        let last = recorded(
            9,
            Event::WorkflowCompleted {
                output: json!("shipped"),
            },
        );
        let run = reconciled(record.clone(), Some(&last));
        assert_eq!(run.output, Some(json!("shipped")));
        assert_eq!(run.status, RunStatus::Completed);
        // A row that says closed over an open history: running.
        let open = recorded(9, Event::ActivationStarted { time_ms: 0 });
        let run = reconciled(record, Some(&open));
        assert_eq!((run.status, run.output), (RunStatus::Running, None));
    }
}
