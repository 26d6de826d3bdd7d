//! `weft check`, `weft upgrade`, `weft resume`, `weft reset` and `weft modules default|get|gc`:
//! what operators do with versions.

use super::{Global, Refused, output};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Duration;
use weft::client::{ModuleSpec, RunCheckView, RunResults, RunUpgradeView};

/// The exit code of a check (or a checked deploy) that found an open run the
/// module would not replay.
pub(crate) const DIVERGES: u8 = 3;

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// The candidate component; or name a deployed one with --version.
    file: Option<PathBuf>,
    /// The module name whose runs to replay.
    #[arg(long)]
    name: String,
    /// Check a deployed version of NAME instead of a file.
    #[arg(long, conflicts_with = "file")]
    version: Option<String>,
    /// How many of the most recently closed runs to replay too.
    #[arg(long, default_value_t = 20)]
    closed: u32,
}

#[derive(clap::Args)]
pub(crate) struct UpgradeArgs {
    /// The module name whose open runs move.
    name: String,
    /// The deployed version to move them to.
    #[arg(long)]
    to: String,
    /// Only these workflows (repeatable); default: every open run of NAME.
    #[arg(long = "workflow")]
    workflows: Vec<String>,
    /// Say what would move; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(clap::Args)]
pub(crate) struct ResumeArgs {
    /// The workflow id of the stuck run.
    id: String,
    /// An earlier run of the workflow.
    #[arg(long)]
    run_id: Option<String>,
    /// Resume on this deployed version of the run's module name (a fixed
    /// one); default: on the module the run is on.
    #[arg(long)]
    version: Option<String>,
}

#[derive(clap::Args)]
pub(crate) struct ResetArgs {
    /// The workflow id.
    id: String,
    /// An earlier run of the workflow (default: its open or latest run).
    #[arg(long)]
    run_id: Option<String>,
    /// The last event to keep: the end of one of the run's activations
    /// (`weft show ID` numbers them; a wrong one is answered with the valid ones).
    #[arg(long)]
    to_event: u64,
    /// Go on on this deployed version of the run's module name (a fixed one);
    /// default: the module the run was on at that event.
    #[arg(long)]
    version: Option<String>,
    /// Recorded in the new run's history and in the old run's termination.
    #[arg(long, default_value = "reset by an operator")]
    reason: String,
    /// What the new run does not receive again of what the old run got after
    /// the event (default: it receives signals and updates).
    #[arg(long, value_enum, value_delimiter = ',')]
    reapply_exclude: Vec<Reapplied>,
}

/// Messages a reset run can receive again.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Reapplied {
    Signals,
    Updates,
}

impl Reapplied {
    fn as_str(self) -> &'static str {
        match self {
            Reapplied::Signals => "signals",
            Reapplied::Updates => "updates",
        }
    }
}

#[derive(clap::Subcommand)]
pub(crate) enum ModulesCommand {
    /// Lists deployed modules, which is each name's default, and the runs using each.
    List,
    /// Makes a deployed version the one new runs of NAME take.
    Default {
        name: String,
        version: String,
        /// Only if every open run of NAME replays identically on it.
        #[arg(long)]
        check: bool,
    },
    /// Writes a deployed module's bytes to a file (for an offline replay).
    Get {
        name: String,
        version: String,
        /// Where to write it.
        #[arg(short = 'o', long)]
        out: PathBuf,
    },
    /// Deletes runs closed longer ago than the retention, with their
    /// histories, and the modules no kept run uses and no name has as its default.
    Gc {
        /// How long closed runs are kept, e.g. `30d`, `12h`.
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Duration,
        /// Count what would go; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn bar(total: u32, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(u64::from(total));
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} runs {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

/// Drains a host's per-run stream behind a progress bar.
async fn collect<T>(
    mut results: RunResults<T>,
    what: &str,
    show: impl Fn(&T) -> Option<String>,
) -> anyhow::Result<Vec<T>> {
    let bar = bar(results.total, what);
    let mut all = Vec::new();
    while let Some(item) = results.next().await? {
        if let Some(line) = show(&item) {
            bar.suspend(|| say!("{line}"));
        }
        bar.inc(1);
        all.push(item);
    }
    bar.finish_and_clear();
    Ok(all)
}

fn verdict_line(c: &RunCheckView) -> String {
    let state = if c.open { "open" } else { "closed" };
    let what = match c.verdict.as_str() {
        "identical" => format!("replays identically ({} events)", c.events),
        "diverged" => match &c.divergence {
            Some(d) => format!("DIVERGES at {d}"),
            None => "DIVERGES".into(),
        },
        _ => format!("CANNOT BE CHECKED: {}", c.message),
    };
    format!("{:<24} {:<6} {what}", c.workflow_id, state)
}

pub(crate) async fn check(g: &Global, a: CheckArgs) -> anyhow::Result<()> {
    let candidate = match (&a.file, &a.version) {
        (Some(file), None) => Ok(std::fs::read(file).with_context(|| {
            format!(
                "cannot read {}; build the workflow with `cargo build --target wasm32-wasip2`",
                file.display()
            )
        })?),
        (None, Some(version)) => Err(ModuleSpec::Version {
            name: a.name.clone(),
            version: version.clone(),
        }),
        _ => anyhow::bail!("give the candidate: a .wasm file, or --version of a deployed one"),
    };
    let results = g
        .client()
        .await?
        .check(&a.name, candidate, a.closed)
        .await?;
    let text = g.output == output::Format::Text;
    let checked = collect(results, "replaying", |c| text.then(|| verdict_line(c))).await?;
    let identical = checked.iter().filter(|c| c.identical()).count();
    let diverged = checked.iter().filter(|c| c.verdict == "diverged").count();
    let failed = checked.len() - identical - diverged;
    let blocking = checked.iter().filter(|c| c.blocks()).count();
    match g.output {
        output::Format::Json => output::json(&serde_json::json!({
            "name": a.name,
            "runs": checked,
            "identical": identical,
            "diverged": diverged,
            "failed": failed,
            "open_runs_blocking": blocking,
        })),
        output::Format::Text => say!(
            "{} runs of {}: {identical} replay identically, {diverged} diverge, {failed} could not be checked; {blocking} open run(s) would not replay",
            checked.len(),
            a.name
        ),
    }
    if blocking > 0 {
        return Err(Refused::new(
            DIVERGES,
            format!(
                "{blocking} open run(s) of {} would not replay on the candidate; they stay safe on their own version, but do not move them (weft upgrade moves only runs that replay identically)",
                a.name
            ),
        )
        .into());
    }
    Ok(())
}

fn upgrade_line(u: &RunUpgradeView) -> String {
    let what = match u.result.as_str() {
        "upgraded" => "moved".to_owned(),
        "would_upgrade" => "would move (dry run)".to_owned(),
        "stays" => match u.check.as_ref().and_then(|c| c.divergence.as_ref()) {
            Some(d) => format!("stays: it diverges at {d}"),
            None => format!(
                "stays: {}",
                u.check.as_ref().map(|c| c.message.as_str()).unwrap_or("")
            ),
        },
        _ => format!("skipped: {}", u.message),
    };
    format!(
        "{:<24} from {}  {what}",
        u.workflow_id,
        output::short(&u.from_sha256)
    )
}

pub(crate) async fn upgrade(g: &Global, a: UpgradeArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    let mut run_ids = Vec::new();
    for workflow_id in &a.workflows {
        run_ids.push(client.describe(workflow_id, None).await?.run_id);
    }
    let to = ModuleSpec::Version {
        name: a.name.clone(),
        version: a.to.clone(),
    };
    let results = client.upgrade(&a.name, &to, run_ids, a.dry_run).await?;
    let text = g.output == output::Format::Text;
    let upgraded = collect(results, "upgrading", |u| text.then(|| upgrade_line(u))).await?;
    let count = |r: &str| upgraded.iter().filter(|u| u.result == r).count();
    match g.output {
        output::Format::Json => output::json(&upgraded),
        output::Format::Text => say!(
            "{} open runs of {}: {} moved to {}, {} would move, {} stay, {} skipped",
            upgraded.len(),
            a.name,
            count("upgraded"),
            a.to,
            count("would_upgrade"),
            count("stays"),
            count("skipped"),
        ),
    }
    Ok(())
}

/// `--version V` of a run's own module name, as a module reference.
async fn version_of_runs_module(
    client: &weft::client::Client,
    id: &str,
    run_id: Option<&str>,
    version: Option<&String>,
) -> anyhow::Result<Option<ModuleSpec>> {
    let Some(version) = version else {
        return Ok(None);
    };
    let run = client.describe(id, run_id).await?;
    let modules = client.modules().await?;
    let name = modules
        .iter()
        .find(|m| m.sha256 == run.module_sha256)
        .map(|m| m.name.clone())
        .with_context(|| {
            format!(
                "run {}'s module {} is no longer deployed",
                run.run_id, run.module_sha256
            )
        })?;
    Ok(Some(ModuleSpec::Version {
        name,
        version: version.clone(),
    }))
}

pub(crate) async fn reset(g: &Global, a: ResetArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    let module =
        version_of_runs_module(&client, &a.id, a.run_id.as_deref(), a.version.as_ref()).await?;
    let reset = client
        .reset(
            &a.id,
            a.run_id.as_deref(),
            a.to_event,
            module.as_ref(),
            &a.reason,
            &a.reapply_exclude
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect::<Vec<_>>(),
        )
        .await?;
    match g.output {
        output::Format::Json => output::json(&reset),
        output::Format::Text => say!(
            "{} continues as run {} on module {}: {} events kept, {} signal(s) and {} update(s) queued again{}",
            reset.workflow_id,
            reset.run_id,
            output::short(&reset.module_sha256),
            reset.kept_events,
            reset.signals,
            reset.updates,
            if reset.terminated_old {
                "; the old run was terminated"
            } else {
                ""
            }
        ),
    }
    Ok(())
}

pub(crate) async fn resume(g: &Global, a: ResumeArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    let module =
        version_of_runs_module(&client, &a.id, a.run_id.as_deref(), a.version.as_ref()).await?;
    let run = client
        .resume(&a.id, a.run_id.as_deref(), module.as_ref())
        .await?;
    match g.output {
        output::Format::Json => output::json(&run),
        output::Format::Text => say!(
            "run {} of {} is running again on module {}",
            run.run_id,
            run.workflow_id,
            output::short(&run.module_sha256)
        ),
    }
    Ok(())
}

pub(crate) async fn modules(g: &Global, command: Option<ModulesCommand>) -> anyhow::Result<()> {
    match command.unwrap_or(ModulesCommand::List) {
        ModulesCommand::List => super::deploy::list(g).await,
        ModulesCommand::Default {
            name,
            version,
            check,
        } => {
            let module = ModuleSpec::Version {
                name: name.clone(),
                version: version.clone(),
            };
            let promoted = g.client().await?.set_default(&module, check).await?;
            super::deploy::report(g, &promoted)
        }
        ModulesCommand::Get { name, version, out } => {
            let module = ModuleSpec::Version { name, version };
            let (record, wasm) = g.client().await?.get_module(&module).await?;
            std::fs::write(&out, &wasm)
                .with_context(|| format!("cannot write {}", out.display()))?;
            match g.output {
                output::Format::Json => output::json(&record),
                output::Format::Text => say!(
                    "wrote module {} {} (sha256 {}) to {}",
                    record.name,
                    record.version,
                    record.sha256,
                    out.display()
                ),
            }
            Ok(())
        }
        ModulesCommand::Gc { retention, dry_run } => {
            let garbage = g
                .client()
                .await?
                .collect_garbage(retention, dry_run)
                .await?;
            match g.output {
                output::Format::Json => output::json(&garbage),
                output::Format::Text => {
                    let verb = if dry_run { "would delete" } else { "deleted" };
                    say!(
                        "{verb} {} closed runs ({} events) and {} modules",
                        garbage.runs,
                        garbage.events,
                        garbage.modules.len()
                    );
                    for m in &garbage.modules {
                        say!("  {} {} ({})", m.name, m.version, output::short(&m.sha256));
                    }
                }
            }
            Ok(())
        }
    }
}
