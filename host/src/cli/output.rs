//! Printing: readable text by default, JSON with `--output json`.

use serde::Serialize;
use weft::client::{FailureView, RunView, format_time};

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
}

/// Prints `value` as pretty JSON.
pub(crate) fn json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("views serialise")
    );
}

pub(crate) fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// A run in a few lines.
pub(crate) fn run(r: &RunView) {
    println!("workflow id   {}", r.workflow_id);
    println!("run id        {}", r.run_id);
    println!("type          {}", r.workflow_type);
    println!("module        {}", short(&r.module_sha256));
    println!("status        {}", r.status);
    if let Some(line) = &r.status_line {
        println!("status line   {line}");
    }
    if let Some(output) = &r.output {
        println!("output        {output}");
    }
    if let Some(FailureView {
        error_type,
        message,
    }) = &r.failure
    {
        println!("failure       {error_type}: {message}");
    }
    if let Some(stuck) = &r.stuck {
        println!("stuck         {stuck}");
    }
    if let Some(reason) = &r.cancel_requested {
        println!("cancel asked  {reason}");
    }
    if let Some(next) = &r.continued_to {
        println!("continued to  {next}");
    }
    if let Some(parent) = &r.parent_workflow_id {
        println!("parent        {parent}");
    }
    if r.search_attributes
        .as_object()
        .is_some_and(|o| !o.is_empty())
    {
        println!("attributes    {}", r.search_attributes);
    }
    if let Some(memo) = &r.memo {
        println!("memo          {memo}");
    }
    println!("events        {}", r.events);
    waiting_on(r);
}

/// What an open run waits on, a line each.
fn waiting_on(r: &RunView) {
    if r.pending_activities.is_empty()
        && r.pending_timers.is_empty()
        && r.pending_children.is_empty()
    {
        return;
    }
    println!("waiting on");
    for a in &r.pending_activities {
        let what = format!("activity {} {}", a.seq, a.name);
        let state = if a.state == "running" {
            format!(
                "attempt {} running on {} (lease until {})",
                a.attempt,
                a.owner.as_deref().unwrap_or("?"),
                format_time(a.next_at_ms)
            )
        } else if a.attempt == 0 {
            "scheduled, no attempt yet".to_owned()
        } else {
            format!(
                "attempt {} next at {}",
                a.attempt + 1,
                format_time(a.next_at_ms)
            )
        };
        println!("  {what:<30} {state}");
        if let Some(f) = &a.last_failure {
            println!("  {:<30} last failure {}: {}", "", f.error_type, f.message);
        }
        if let Some(at) = a.heartbeat_at_ms {
            let details = a
                .heartbeat_details
                .as_ref()
                .map(|d| format!(" {d}"))
                .unwrap_or_default();
            println!(
                "  {:<30} last heartbeat{details} at {}",
                "",
                format_time(at)
            );
        }
    }
    for t in &r.pending_timers {
        println!(
            "  {:<30} fires at {}",
            format!("timer {}", t.seq),
            format_time(t.fire_at_ms)
        );
    }
    for c in &r.pending_children {
        let run = c.run_id.as_deref().unwrap_or("not started");
        println!(
            "  {:<30} run {run}",
            format!("child {} {}", c.seq, c.workflow_id)
        );
    }
}

/// Fails the command when the run did not complete, so scripts see a non-zero exit.
pub(crate) fn require_completed(r: &RunView) -> anyhow::Result<()> {
    match r.status.as_str() {
        "completed" => Ok(()),
        "running" => anyhow::bail!(
            "run {} of workflow {:?} is still running; wait longer (--timeout) or look later with `weft describe {}`",
            r.run_id,
            r.workflow_id,
            r.workflow_id
        ),
        status => {
            let why = r
                .failure
                .as_ref()
                .map(|f| format!(": {}: {}", f.error_type, f.message))
                .or_else(|| r.stuck.as_ref().map(|s| format!(": {s}")))
                .unwrap_or_default();
            anyhow::bail!(
                "workflow {:?} (run {}) ended {status}{why}; see its history with `weft show {}`",
                r.workflow_id,
                r.run_id,
                r.workflow_id
            )
        }
    }
}
