//! `weft deploy` and `weft modules list`.

use super::versions::DIVERGES;
use super::{Global, Refused, output};
use anyhow::Context;
use std::path::PathBuf;
use weft::client::{DeploySpec, DeployedView};

#[derive(clap::Args)]
pub(crate) struct DeployArgs {
    /// The workflow component (`cargo build --target wasm32-wasip2`).
    file: PathBuf,
    /// The name runs are started by (`weft start` takes the name's default module).
    #[arg(long)]
    name: String,
    /// Default: the first 12 hex digits of the module's sha256.
    #[arg(long)]
    version: Option<String>,
    /// Make it the default only if every open run of NAME replays
    /// identically on it (exit code 3 and the diverging runs otherwise).
    #[arg(long)]
    check: bool,
    /// Store it without making it the default: new runs keep taking the
    /// current default (the first module of a name is always its default).
    #[arg(long, conflicts_with = "check")]
    no_default: bool,
}

pub(crate) async fn run(g: &Global, args: DeployArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.file).with_context(|| {
        format!(
            "cannot read {}; build the workflow with `cargo build --target wasm32-wasip2`",
            args.file.display()
        )
    })?;
    let deployed = g
        .client()
        .await?
        .deploy_module(DeploySpec {
            name: args.name,
            version: args.version,
            wasm,
            keep_default: args.no_default,
            check: args.check,
        })
        .await?;
    report(g, &deployed)
}

/// Prints what a deploy or a default change did; refuses (exit code 3) when
/// a check kept the old default.
pub(crate) fn report(g: &Global, deployed: &DeployedView) -> anyhow::Result<()> {
    let m = &deployed.module;
    match g.output {
        output::Format::Json => output::json(deployed),
        output::Format::Text => {
            say!(
                "deployed module {} {} (sha256 {}, {} KiB)",
                m.name,
                m.version,
                output::short(&m.sha256),
                m.size.div_ceil(1024)
            );
            if deployed.is_default {
                say!("new runs of {} take version {}", m.name, m.version);
            } else if deployed.diverging.is_empty() {
                say!(
                    "new runs of {} keep their default; make this one it with `weft modules default {} {}`",
                    m.name,
                    m.name,
                    m.version
                );
            }
            for run in &deployed.diverging {
                let why = run
                    .divergence
                    .as_ref()
                    .map(|d| format!("diverges at {d}"))
                    .unwrap_or_else(|| format!("cannot be checked: {}", run.message));
                say!("  open run {} {why}", run.workflow_id);
            }
        }
    }
    if !deployed.diverging.is_empty() {
        return Err(Refused::new(
            DIVERGES,
            format!(
                "{} open run(s) of {} would diverge on {} {}, so it was stored but NOT made the default; open runs stay on their versions either way. Deploy without --check to start new runs on it anyway",
                deployed.diverging.len(),
                m.name,
                m.name,
                m.version
            ),
        )
        .into());
    }
    Ok(())
}

pub(crate) async fn list(g: &Global) -> anyhow::Result<()> {
    let modules = g.client().await?.modules().await?;
    match g.output {
        output::Format::Json => output::json(&modules),
        output::Format::Text => {
            say!(
                "{:<24} {:<16} {:<14} {:>8} {:>7} {:>5} {:>7}",
                "NAME",
                "VERSION",
                "SHA256",
                "KIB",
                "DEFAULT",
                "OPEN",
                "CLOSED"
            );
            for m in &modules {
                say!(
                    "{:<24} {:<16} {:<14} {:>8} {:>7} {:>5} {:>7}",
                    m.name,
                    m.version,
                    output::short(&m.sha256),
                    m.size.div_ceil(1024),
                    if m.is_default { "*" } else { "" },
                    m.open_runs,
                    m.closed_runs
                );
            }
            if modules.iter().any(|m| m.open_runs + m.closed_runs > 0) {
                say!("(the runs on a module: weft list --module NAME --version VERSION)");
            }
        }
    }
    Ok(())
}
