//! Conversions between the wire types of [`super::proto`] and the host's
//! model, and from host errors to gRPC statuses. The only place that knows both.

use super::proto;
use crate::StartOptions;
use crate::host::HostError;
use crate::model::GuestStatus;
use crate::model::{Failure, RecordedEvent, RunId};
use crate::store::{
    Garbage, IdConflictPolicy, IdReusePolicy, ListFilter, ModuleRecord, ModuleUsage, RunRecord,
    RunStatus, StoreError, WaitingOn,
};
use crate::versions::{Deployed, RunCheck, RunUpgrade, UpgradeResult, Verdict};
use crate::workflow::{Divergence, ReplayVerdict};
use serde_json::Value;
use std::time::Duration;
use tonic::{Code, Status};

pub(crate) fn run_info(r: &RunRecord) -> proto::RunInfo {
    proto::RunInfo {
        run_id: r.run_id.to_string(),
        workflow_id: r.workflow_id.clone(),
        workflow_type: r.workflow_type.clone(),
        module_sha256: r.module_sha256.to_string(),
        status: r.status.as_str().into(),
        output_json: r.output.as_ref().map(Value::to_string),
        failure: r.failure.as_ref().map(failure),
        stuck_json: r.stuck.as_ref().map(Value::to_string),
        last_seq: r.last_seq,
        created_at_ms: r.created_at_ms,
        closed_at_ms: r.closed_at_ms,
        parent_workflow_id: r.parent.as_ref().map(|p| p.workflow_id.clone()),
        parent_run_id: r.parent.as_ref().map(|p| p.run_id.to_string()),
        status_line: r.status_line.clone(),
        search_attributes_json: r.search_attributes.to_string(),
        memo_json: r.memo.as_ref().map(Value::to_string),
        cancel_requested: r.cancel_requested.clone(),
        continued_to: r.continued_to.as_ref().map(ToString::to_string),
        pending_activities: Vec::new(),
        pending_timers: Vec::new(),
        pending_children: Vec::new(),
    }
}

/// A run as `describe` shows it: with what it waits on.
pub(crate) fn run_info_waiting(r: &RunRecord, waiting: &WaitingOn) -> proto::RunInfo {
    proto::RunInfo {
        pending_activities: waiting
            .activities
            .iter()
            .map(|a| proto::PendingActivity {
                seq: a.seq,
                name: a.name.clone(),
                state: if a.running { "running" } else { "scheduled" }.into(),
                attempt: a.attempt,
                next_at_ms: a.next_at_ms,
                owner: a.owner.clone(),
                last_failure: a.last_failure.as_ref().map(failure),
                heartbeat_details_json: a.heartbeat_details.as_ref().map(Value::to_string),
                heartbeat_at_ms: a.heartbeat_at_ms,
            })
            .collect(),
        pending_timers: waiting
            .timers
            .iter()
            .map(|t| proto::PendingTimer {
                seq: t.seq,
                fire_at_ms: t.fire_at_ms,
            })
            .collect(),
        pending_children: waiting
            .children
            .iter()
            .map(|c| proto::PendingChild {
                seq: c.seq,
                workflow_id: c.workflow_id.clone(),
                run_id: c
                    .run_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            })
            .collect(),
        ..run_info(r)
    }
}

pub(crate) fn failure(f: &Failure) -> proto::Failure {
    proto::Failure {
        error_type: f.error_type.clone(),
        message: f.message.clone(),
    }
}

pub(crate) fn event(e: &RecordedEvent) -> proto::Event {
    proto::Event {
        seq: e.seq,
        kind: e.event.kind().into(),
        event_json: serde_json::to_string(&e.event).unwrap_or_default(),
        recorded_at_ms: e.recorded_at_ms,
        hash: e.hash.to_hex(),
    }
}

pub(crate) fn module_info(m: &ModuleRecord) -> proto::ModuleInfo {
    proto::ModuleInfo {
        sha256: m.sha256.to_string(),
        name: m.name.clone(),
        version: m.version.clone(),
        size: m.size,
        created_at_ms: m.created_at_ms,
        ..Default::default()
    }
}

pub(crate) fn module_usage(u: &ModuleUsage) -> proto::ModuleInfo {
    proto::ModuleInfo {
        is_default: u.is_default,
        open_runs: u.open_runs,
        closed_runs: u.closed_runs,
        ..module_info(&u.module)
    }
}

pub(crate) fn deployed(d: &Deployed) -> proto::DeployResponse {
    proto::DeployResponse {
        module: Some(module_info(&d.module)),
        is_default: d.is_default,
        diverging: d.diverging.iter().map(run_check).collect(),
    }
}

pub(crate) fn run_check(c: &RunCheck) -> proto::RunCheck {
    let mut out = proto::RunCheck {
        run_id: c.run_id.to_string(),
        workflow_id: c.workflow_id.clone(),
        workflow_type: c.workflow_type.clone(),
        open: c.open,
        module_sha256: c.module_sha256.to_string(),
        ..Default::default()
    };
    match &c.verdict {
        Verdict::Identical { events } => {
            out.verdict = "identical".into();
            out.events = *events;
        }
        Verdict::Diverged(d) => {
            out.verdict = "diverged".into();
            out.divergence = Some(divergence(d));
        }
        Verdict::Failed { message } => {
            out.verdict = "failed".into();
            out.message = message.clone();
        }
    }
    out
}

fn divergence(d: &Divergence) -> proto::Divergence {
    let text = |e: &Option<crate::model::Event>| {
        e.as_ref()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .unwrap_or_default()
    };
    proto::Divergence {
        event_seq: d.event_seq,
        recorded_json: text(&d.recorded),
        issued_json: text(&d.issued),
        location: d.location.clone().unwrap_or_default(),
    }
}

pub(crate) fn run_upgrade(u: &RunUpgrade) -> proto::RunUpgrade {
    let mut out = proto::RunUpgrade {
        run_id: u.run_id.to_string(),
        workflow_id: u.workflow_id.clone(),
        from_sha256: u.from.to_string(),
        ..Default::default()
    };
    match &u.result {
        UpgradeResult::Upgraded => out.result = "upgraded".into(),
        UpgradeResult::WouldUpgrade => out.result = "would_upgrade".into(),
        UpgradeResult::Stays(verdict) => {
            out.result = "stays".into();
            out.check = Some(run_check(&RunCheck {
                run_id: u.run_id.clone(),
                workflow_id: u.workflow_id.clone(),
                workflow_type: String::new(),
                open: true,
                module_sha256: u.from.clone(),
                verdict: verdict.clone(),
            }));
        }
        UpgradeResult::Skipped(why) => {
            out.result = "skipped".into();
            out.message = why.clone();
        }
    }
    out
}

pub(crate) fn garbage(g: &Garbage) -> proto::CollectGarbageResponse {
    proto::CollectGarbageResponse {
        runs: g.runs,
        events: g.events,
        modules: g.modules.iter().map(module_info).collect(),
    }
}

pub(crate) fn replay(run_id: &RunId, verdict: &ReplayVerdict) -> proto::ReplayResponse {
    match verdict {
        ReplayVerdict::Identical { status, events } => proto::ReplayResponse {
            run_id: run_id.to_string(),
            identical: true,
            events: *events,
            status: guest_status(status).into(),
            ..Default::default()
        },
        ReplayVerdict::Diverged(d) => proto::ReplayResponse {
            run_id: run_id.to_string(),
            identical: false,
            diverged_at_seq: Some(d.event_seq),
            divergence: d.to_string(),
            divergence_json: serde_json::json!({
                "event_seq": d.event_seq,
                "recorded": d.recorded,
                "issued": d.issued,
            })
            .to_string(),
            ..Default::default()
        },
    }
}

fn guest_status(s: &GuestStatus) -> &'static str {
    match s {
        GuestStatus::Pending => "running",
        GuestStatus::Completed(_) => "completed",
        GuestStatus::Failed(_) => "failed",
        GuestStatus::Cancelled(_) => "cancelled",
        GuestStatus::ContinuedAsNew(_) => "continued_as_new",
    }
}

/// Parses a JSON field of a request; empty text is `null`.
pub(crate) fn json(field: &str, text: &str) -> Result<Value, Status> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| {
        Status::invalid_argument(format!(
            "{field} is not valid JSON ({e}); send JSON text, e.g. \"\\\"Ada\\\"\" for a string"
        ))
    })
}

fn optional_json(field: &str, text: Option<&str>) -> Result<Option<Value>, Status> {
    text.map(|t| json(field, t)).transpose()
}

pub(crate) fn start_options(o: Option<&proto::StartOptions>) -> Result<StartOptions, Status> {
    let Some(o) = o else {
        return Ok(StartOptions::default());
    };
    Ok(StartOptions {
        id_reuse_policy: match o.id_reuse_policy.as_str() {
            "" | "allow_duplicate" => IdReusePolicy::AllowDuplicate,
            "allow_duplicate_failed_only" => IdReusePolicy::AllowDuplicateFailedOnly,
            "reject_duplicate" => IdReusePolicy::RejectDuplicate,
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown id_reuse_policy {other:?}; use allow_duplicate, allow_duplicate_failed_only or reject_duplicate"
                )));
            }
        },
        id_conflict_policy: match o.id_conflict_policy.as_str() {
            "" | "fail" => IdConflictPolicy::Fail,
            "use_existing" => IdConflictPolicy::UseExisting,
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown id_conflict_policy {other:?}; use fail or use_existing"
                )));
            }
        },
        execution_timeout: o.execution_timeout_ms.map(Duration::from_millis),
        run_timeout: o.run_timeout_ms.map(Duration::from_millis),
        memo: optional_json("options.memo_json", o.memo_json.as_deref())?,
        search_attributes: optional_json(
            "options.search_attributes_json",
            o.search_attributes_json.as_deref(),
        )?,
    })
}

pub(crate) fn list_filter(r: &proto::ListRequest) -> Result<ListFilter, Status> {
    let status = match r.status.as_str() {
        "" => None,
        s => Some(RunStatus::parse(s).map_err(|_| {
            Status::invalid_argument(format!(
                "unknown status {s:?}; use running, stuck, completed, failed, cancelled, terminated, continued_as_new or timed_out"
            ))
        })?),
    };
    let search_attributes = match json("search_attributes_json", &r.search_attributes_json)? {
        Value::Null => Vec::new(),
        Value::Object(map) => map.into_iter().collect(),
        _ => {
            return Err(Status::invalid_argument(
                "search_attributes_json must be a JSON object such as {\"customer\":\"acme\"}",
            ));
        }
    };
    Ok(ListFilter {
        workflow_type: Some(r.workflow_type.clone()).filter(|s| !s.is_empty()),
        status,
        workflow_id: Some(r.workflow_id.clone()).filter(|s| !s.is_empty()),
        // Resolved by the service: a name and version needs the store.
        module_sha256: None,
        search_attributes,
        limit: r.limit,
        // Decoded by the service from the page token, against the whole filter.
        after: None,
    })
}

/// The gRPC status of a host error: the code tells clients whether to retry,
/// the message (the error's own) says what to do.
pub(crate) fn status(e: HostError) -> Status {
    let code = match &e {
        HostError::Store(s) => match s {
            StoreError::Unavailable(_) => Code::Unavailable,
            StoreError::Conflict { .. } => Code::Aborted,
            StoreError::WorkflowIdInUse { .. }
            | StoreError::WorkflowIdReused { .. }
            | StoreError::VersionTaken { .. } => Code::AlreadyExists,
            StoreError::NotFound { .. } => Code::NotFound,
            StoreError::Corrupt(_) => Code::DataLoss,
            StoreError::Refused(_) => Code::FailedPrecondition,
            StoreError::Rejected(_) => Code::InvalidArgument,
            StoreError::Full { .. } => Code::ResourceExhausted,
        },
        HostError::Load(crate::wasm::LoadError::Compiler { .. }) => Code::Internal,
        HostError::Load(_) => Code::InvalidArgument,
        HostError::UnknownModule(_) => Code::NotFound,
        HostError::PayloadTooLarge { .. } => Code::InvalidArgument,
        HostError::Busy { .. } => Code::ResourceExhausted,
        HostError::BadName(_) => Code::InvalidArgument,
        HostError::QueryRefused { .. }
        | HostError::UpdateRejected { .. }
        | HostError::UpdateFailed { .. }
        | HostError::Replay { .. }
        | HostError::Other(_) => Code::FailedPrecondition,
    };
    Status::new(code, e.to_string())
}
