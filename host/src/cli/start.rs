//! `weft start`: a new run, optionally waiting for its result.

use super::{Global, json_arg, output};
use serde_json::json;
use std::time::Duration;
use weft::client::StartSpec;

#[derive(clap::Args)]
pub(crate) struct StartArgs {
    /// The workflow function the module exports (e.g. `hello`).
    workflow_type: String,
    /// The workflow id: names this business process (e.g. order-1234).
    #[arg(long)]
    id: String,
    /// The input, as JSON.
    #[arg(long, default_value = "null")]
    input: String,
    /// The module's name; default: the workflow type. Its newest version runs.
    #[arg(long)]
    module: Option<String>,
    #[arg(long)]
    module_version: Option<String>,
    /// Wait for the run to close and print its result.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up waiting after this many seconds.
    #[arg(long, default_value = "60", value_name = "SECONDS")]
    timeout: u64,
    /// allow_duplicate, allow_duplicate_failed_only or reject_duplicate.
    #[arg(long)]
    id_reuse_policy: Option<String>,
    /// fail, or use_existing (return the open run of the id).
    #[arg(long)]
    id_conflict_policy: Option<String>,
    #[arg(long, value_name = "SECONDS")]
    execution_timeout: Option<u64>,
    #[arg(long, value_name = "SECONDS")]
    run_timeout: Option<u64>,
    /// JSON shown by describe, never read by the workflow.
    #[arg(long)]
    memo: Option<String>,
    /// A JSON object of initial search attributes.
    #[arg(long)]
    search_attributes: Option<String>,
    /// Signal-with-start: signal the open run of the id, or start one with this signal queued.
    #[arg(long)]
    signal: Option<String>,
    #[arg(long, default_value = "null", requires = "signal")]
    signal_input: String,
}

pub(crate) async fn run(g: &Global, a: StartArgs) -> anyhow::Result<()> {
    let spec = StartSpec {
        workflow_type: a.workflow_type,
        workflow_id: a.id,
        input: json_arg("--input", &a.input)?,
        module: a.module,
        module_version: a.module_version,
        id_reuse_policy: a.id_reuse_policy,
        id_conflict_policy: a.id_conflict_policy,
        execution_timeout: a.execution_timeout.map(Duration::from_secs),
        run_timeout: a.run_timeout.map(Duration::from_secs),
        memo: a
            .memo
            .as_deref()
            .map(|m| json_arg("--memo", m))
            .transpose()?,
        search_attributes: a
            .search_attributes
            .as_deref()
            .map(|s| json_arg("--search-attributes", s))
            .transpose()?,
    };
    let client = g.client().await?;
    let timeout = Duration::from_secs(a.timeout);
    let since = std::time::Instant::now();
    // Start and wait in one request (a host waits up to a minute at a time).
    let (started, waited) = match &a.signal {
        None if a.wait => {
            let (started, run) = client
                .start_and_wait(spec, timeout.min(Duration::from_secs(60)))
                .await?;
            (started, Some(run))
        }
        None => (client.start(spec).await?, None),
        Some(name) => {
            let input = json_arg("--signal-input", &a.signal_input)?;
            (client.signal_with_start(spec, name, input).await?, None)
        }
    };
    if !a.wait {
        match g.output {
            output::Format::Json => output::json(&started),
            output::Format::Text => say!(
                "started run {} (workflow id {}) on module {}",
                started.run_id,
                started.workflow_id,
                output::short(&started.module_sha256)
            ),
        }
        return Ok(());
    }
    if g.output == output::Format::Text {
        say!(
            "started run {} (workflow id {}) on module {}",
            started.run_id,
            started.workflow_id,
            output::short(&started.module_sha256)
        );
    }
    // The host may have answered before the run closed (its wait limit):
    // wait on until the run closes or --timeout passes.
    let left = timeout.saturating_sub(since.elapsed());
    let run = match waited {
        Some(run) if run.status != "running" || left.is_zero() => run,
        _ => {
            client
                .await_result(&started.workflow_id, Some(&started.run_id), Some(left))
                .await?
        }
    };
    match g.output {
        output::Format::Json => output::json(&run),
        output::Format::Text => match (&run.output, &run.failure) {
            (Some(out), _) if run.status == "completed" => say!("completed: {out}"),
            (_, Some(f)) => say!("{}: {}: {}", run.status, f.error_type, f.message),
            _ => say!("{}", json!(run.status)),
        },
    }
    output::require_completed(&run)
}
