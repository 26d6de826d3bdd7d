//! `weft deploy` and `weft modules`.

use super::{Global, output};
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct DeployArgs {
    /// The workflow component (`cargo build --target wasm32-wasip2`).
    file: PathBuf,
    /// The name runs are started by (`weft start` looks modules up by it).
    #[arg(long)]
    name: String,
    /// Default: the first 12 hex digits of the module's sha256.
    #[arg(long)]
    version: Option<String>,
}

#[derive(clap::Args)]
pub(crate) struct ModulesArgs {}

pub(crate) async fn run(g: &Global, args: DeployArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.file).with_context(|| {
        format!(
            "cannot read {}; build the workflow with `cargo build --target wasm32-wasip2`",
            args.file.display()
        )
    })?;
    let module = g
        .client()
        .await?
        .deploy(&args.name, args.version.as_deref(), wasm)
        .await?;
    match g.output {
        output::Format::Json => output::json(&module),
        output::Format::Text => println!(
            "deployed module {} {} (sha256 {}, {} KiB)",
            module.name,
            module.version,
            output::short(&module.sha256),
            module.size.div_ceil(1024)
        ),
    }
    Ok(())
}

pub(crate) async fn modules(g: &Global, _args: ModulesArgs) -> anyhow::Result<()> {
    let modules = g.client().await?.modules().await?;
    match g.output {
        output::Format::Json => output::json(&modules),
        output::Format::Text => {
            println!(
                "{:<24} {:<16} {:<14} {:>8}",
                "NAME", "VERSION", "SHA256", "KIB"
            );
            for m in &modules {
                println!(
                    "{:<24} {:<16} {:<14} {:>8}",
                    m.name,
                    m.version,
                    output::short(&m.sha256),
                    m.size.div_ceil(1024)
                );
            }
        }
    }
    Ok(())
}
