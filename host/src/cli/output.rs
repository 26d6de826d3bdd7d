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

/// `text` with every control character but newline and tab written as an
/// escape (`\u{1b}`): what the terminal shows is the text, never an
/// instruction to the terminal.
pub(crate) fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.contains(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

pub(crate) fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// A run in a few lines.
pub(crate) fn run(r: &RunView) {
    say!("workflow id   {}", r.workflow_id);
    say!("run id        {}", r.run_id);
    say!("type          {}", r.workflow_type);
    say!("module        {}", short(&r.module_sha256));
    say!("status        {}", r.status);
    if let Some(line) = &r.status_line {
        say!("status line   {line}");
    }
    if let Some(output) = &r.output {
        say!("output        {output}");
    }
    if let Some(FailureView {
        error_type,
        message,
    }) = &r.failure
    {
        say!("failure       {error_type}: {message}");
    }
    if let Some(stuck) = &r.stuck {
        say!("stuck         {stuck}");
    }
    if let Some(reason) = &r.cancel_requested {
        say!("cancel asked  {reason}");
    }
    if let Some(next) = &r.continued_to {
        say!("continued to  {next}");
    }
    if let Some(parent) = &r.parent_workflow_id {
        say!("parent        {parent}");
    }
    if r.search_attributes
        .as_object()
        .is_some_and(|o| !o.is_empty())
    {
        say!("attributes    {}", r.search_attributes);
    }
    if let Some(memo) = &r.memo {
        say!("memo          {memo}");
    }
    say!("events        {}", r.events);
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
    say!("waiting on");
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
        say!("  {what:<30} {state}");
        if let Some(f) = &a.last_failure {
            say!("  {:<30} last failure {}: {}", "", f.error_type, f.message);
        }
        if let Some(at) = a.heartbeat_at_ms {
            let details = a
                .heartbeat_details
                .as_ref()
                .map(|d| format!(" {d}"))
                .unwrap_or_default();
            say!(
                "  {:<30} last heartbeat{details} at {}",
                "",
                format_time(at)
            );
        }
    }
    for t in &r.pending_timers {
        say!(
            "  {:<30} fires at {}",
            format!("timer {}", t.seq),
            format_time(t.fire_at_ms)
        );
    }
    for c in &r.pending_children {
        let run = c.run_id.as_deref().unwrap_or("not started");
        say!(
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

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(super::terminal_safe("order-1\tok\n"), "order-1\tok\n");
        assert_eq!(
            super::terminal_safe("a\u{1b}]0;pwned\u{7}b\u{9b}c\u{7f}"),
            "a\\u{1b}]0;pwned\\u{7}b\\u{9b}c\\u{7f}"
        );
    }
}
