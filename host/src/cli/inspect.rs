//! `weft describe`, `list`, `show`, `wait` and `replay ID`: reading runs.

use super::{Global, output};
use std::time::Duration;
use weft::client::{ListSpec, ModuleSpec};

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The workflow id (its open run, else its latest).
    id: String,
    /// Address an earlier run of the workflow id.
    #[arg(long)]
    run_id: Option<String>,
}

#[derive(clap::Args)]
pub(crate) struct ListArgs {
    /// running, stuck, completed, failed, cancelled, terminated, continued_as_new or timed_out.
    #[arg(long)]
    status: Option<String>,
    /// Only runs of this workflow type.
    #[arg(long = "type")]
    workflow_type: Option<String>,
    /// Only runs pinned to this module: its name (with --version) or its
    /// sha256 (`weft modules list` shows both).
    #[arg(long, value_name = "NAME|SHA256")]
    module: Option<String>,
    /// The version of --module NAME.
    #[arg(long, requires = "module")]
    version: Option<String>,
    /// At most this many, newest first (a page: the server gives at most 1000).
    #[arg(long, default_value = "100")]
    limit: u32,
    /// Continue after the previous page: the token it ended with, and the same filters.
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
    /// Follow the pages to the end: every run that matches, --limit at a time.
    #[arg(long)]
    all: bool,
}

/// `--module` and `--version` as a module reference.
fn module_spec(
    module: Option<String>,
    version: Option<String>,
) -> anyhow::Result<Option<ModuleSpec>> {
    Ok(match (module, version) {
        (None, _) => None,
        (Some(name), Some(version)) => Some(ModuleSpec::Version { name, version }),
        (Some(sha), None) if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(ModuleSpec::Sha256(sha.to_ascii_lowercase()))
        }
        (Some(name), None) => anyhow::bail!(
            "--module {name:?} needs --version (or give the module's full sha256); `weft modules list` shows both"
        ),
    })
}

#[derive(clap::Args)]
pub(crate) struct WaitArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Give up after this many seconds.
    #[arg(long, default_value = "60", value_name = "SECONDS")]
    timeout: u64,
}

pub(crate) async fn describe(g: &Global, a: RunArgs) -> anyhow::Result<()> {
    let run = g
        .client()
        .await?
        .describe(&a.id, a.run_id.as_deref())
        .await?;
    match g.output {
        output::Format::Json => output::json(&run),
        output::Format::Text => output::run(&run),
    }
    Ok(())
}

pub(crate) async fn list(g: &Global, a: ListArgs) -> anyhow::Result<()> {
    let mut spec = ListSpec {
        status: a.status,
        workflow_type: a.workflow_type,
        module: module_spec(a.module, a.version)?,
        limit: a.limit,
        page_token: a.page_token,
        ..ListSpec::default()
    };
    let client = g.client().await?;
    let mut page = client.list_page(&spec).await?;
    while a.all
        && let Some(token) = page.next_page_token.take()
    {
        spec.page_token = Some(token);
        let next = client.list_page(&spec).await?;
        page.runs.extend(next.runs);
        page.next_page_token = next.next_page_token;
    }
    match g.output {
        output::Format::Json => output::json(&page),
        output::Format::Text => {
            say!(
                "{:<28} {:<20} {:<16} {:<32} {:>6}  STATUS LINE",
                "WORKFLOW ID",
                "TYPE",
                "STATUS",
                "RUN ID",
                "EVENTS"
            );
            for r in &page.runs {
                say!(
                    "{:<28} {:<20} {:<16} {:<32} {:>6}  {}",
                    r.workflow_id,
                    r.workflow_type,
                    r.status,
                    r.run_id,
                    r.events,
                    r.status_line.as_deref().unwrap_or("")
                );
            }
            if let Some(token) = &page.next_page_token {
                say!(
                    "More runs match: for the next page, repeat with --page-token {token} (or --all for every page)."
                );
            }
        }
    }
    Ok(())
}

pub(crate) async fn show(g: &Global, a: RunArgs) -> anyhow::Result<()> {
    let history = g
        .client()
        .await?
        .history(&a.id, a.run_id.as_deref())
        .await?;
    match g.output {
        output::Format::Json => output::json(&history),
        output::Format::Text => {
            let chain = if history.chain_verified {
                "hash chain verified"
            } else {
                "HASH CHAIN BROKEN: the stored history was altered"
            };
            say!(
                "run {}: {} events, {chain}",
                history.run_id,
                history.events.len()
            );
            for e in &history.events {
                let mut detail = e.event.clone();
                if let Some(o) = detail.as_object_mut() {
                    o.remove("kind");
                }
                let detail = detail.to_string();
                let detail = if detail.len() > 100 {
                    format!("{}…", &detail[..detail.floor_char_boundary(100)])
                } else {
                    detail
                };
                say!("{:>5} {:<30} {detail}", e.seq, e.kind);
            }
        }
    }
    if !history.chain_verified {
        anyhow::bail!(
            "the hash chain of run {} does not verify: an event was altered, removed or reordered in the database",
            history.run_id
        );
    }
    Ok(())
}

pub(crate) async fn wait(g: &Global, a: WaitArgs) -> anyhow::Result<()> {
    let run = g
        .client()
        .await?
        .await_result(
            &a.run.id,
            a.run.run_id.as_deref(),
            Some(Duration::from_secs(a.timeout)),
        )
        .await?;
    match g.output {
        output::Format::Json => output::json(&run),
        output::Format::Text => output::run(&run),
    }
    output::require_completed(&run)
}

/// Replays a run on the host, against the module it is on.
pub(crate) async fn replay(g: &Global, id: &str, run_id: Option<&str>) -> anyhow::Result<()> {
    let verdict = g.client().await?.replay(id, run_id).await?;
    match g.output {
        output::Format::Json => output::json(&verdict),
        output::Format::Text if verdict.identical => say!(
            "run {} replays identically: {} events, the workflow ends {}",
            verdict.run_id,
            verdict.events,
            verdict.status
        ),
        output::Format::Text => say!("run {}: {}", verdict.run_id, verdict.divergence),
    }
    if !verdict.identical {
        anyhow::bail!(
            "run {} does not replay against its module: {}",
            verdict.run_id,
            verdict.divergence
        );
    }
    Ok(())
}
