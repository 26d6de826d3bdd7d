//! `weft signal`, `query`, `update`, `cancel` and `terminate`: messages to a run.

use super::{Global, json_arg, output};
use serde_json::json;

#[derive(clap::Args)]
pub(crate) struct SignalArgs {
    /// The workflow id (its open run, else its latest).
    id: String,
    /// The signal's name, as the workflow listens for it.
    name: String,
    /// The signal's input, as JSON.
    #[arg(long, default_value = "null")]
    input: String,
    /// Address an earlier run of the workflow id.
    #[arg(long)]
    run_id: Option<String>,
}

pub(crate) type QueryArgs = SignalArgs;
pub(crate) type UpdateArgs = SignalArgs;

#[derive(clap::Args)]
pub(crate) struct CancelArgs {
    /// The workflow id (its open run, else its latest).
    id: String,
    /// Recorded in the history and shown by describe.
    #[arg(long, default_value = "")]
    reason: String,
    #[arg(long)]
    run_id: Option<String>,
}

pub(crate) async fn signal(g: &Global, a: SignalArgs) -> anyhow::Result<()> {
    let input = json_arg("--input", &a.input)?;
    let run_id = g
        .client()
        .await?
        .signal(&a.id, a.run_id.as_deref(), &a.name, input)
        .await?;
    match g.output {
        output::Format::Json => output::json(&json!({ "run_id": run_id, "signal": a.name })),
        output::Format::Text => say!("signalled {} to run {run_id} of {}", a.name, a.id),
    }
    Ok(())
}

pub(crate) async fn query(g: &Global, a: QueryArgs) -> anyhow::Result<()> {
    let input = json_arg("--input", &a.input)?;
    let answer = g
        .client()
        .await?
        .query(&a.id, a.run_id.as_deref(), &a.name, input)
        .await?;
    match g.output {
        output::Format::Json => output::json(&answer),
        output::Format::Text => say!("{answer}"),
    }
    Ok(())
}

pub(crate) async fn update(g: &Global, a: UpdateArgs) -> anyhow::Result<()> {
    let input = json_arg("--input", &a.input)?;
    let answer = g
        .client()
        .await?
        .update(&a.id, a.run_id.as_deref(), &a.name, input)
        .await?;
    match g.output {
        output::Format::Json => output::json(&answer),
        output::Format::Text => say!("{answer}"),
    }
    Ok(())
}

pub(crate) async fn cancel(g: &Global, a: CancelArgs) -> anyhow::Result<()> {
    let run_id = g
        .client()
        .await?
        .cancel(&a.id, a.run_id.as_deref(), &a.reason)
        .await?;
    match g.output {
        output::Format::Json => {
            output::json(&json!({ "run_id": run_id, "cancel_requested": true }))
        }
        output::Format::Text => say!(
            "asked run {run_id} of {} to cancel; the workflow decides how (see `weft describe {}`)",
            a.id,
            a.id
        ),
    }
    Ok(())
}

pub(crate) async fn terminate(g: &Global, a: CancelArgs) -> anyhow::Result<()> {
    let run_id = g
        .client()
        .await?
        .terminate(&a.id, a.run_id.as_deref(), &a.reason)
        .await?;
    match g.output {
        output::Format::Json => output::json(&json!({ "run_id": run_id, "terminated": true })),
        output::Format::Text => say!("terminated run {run_id} of {}", a.id),
    }
    Ok(())
}
