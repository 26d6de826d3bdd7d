//! The `weft` command line: one file per subcommand (or family of them).
//!
//! `dev` and `server` run a host; every other command is a client of one
//! (`--address`, `WEFT_ADDRESS`; `--token`, `WEFT_TOKEN`), printing readable
//! text or, with `--output json`, JSON for scripts.

mod bench;
mod deploy;
mod inspect;
mod messages;
mod output;
mod serve;
mod start;

use clap::{Parser, Subcommand};
use weft::client::{Client, DEFAULT_ADDRESS};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Weft: a durable workflow host for WebAssembly components"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: Global,
}

/// How client commands reach a host and print.
#[derive(clap::Args, Clone)]
pub(crate) struct Global {
    /// The Weft host to talk to.
    #[arg(long, global = true, env = "WEFT_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: String,
    /// Bearer token for a host that needs one.
    #[arg(long, global = true, env = "WEFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Readable text, or JSON for scripts.
    #[arg(long, global = true, value_enum, default_value = "text")]
    output: output::Format,
}

impl Global {
    async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.address, self.token.as_deref()).await?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Runs a development host: SQLite file, loopback, no tokens needed.
    Dev(serve::DevArgs),
    /// Runs a production host (Postgres, bearer tokens); several may share one database.
    Server(serve::ServerArgs),
    /// Deploys a workflow module (a .wasm component) under a name and version.
    Deploy(deploy::DeployArgs),
    /// Lists deployed modules.
    Modules(deploy::ModulesArgs),
    /// Starts a workflow run (optionally waiting for its result).
    Start(start::StartArgs),
    /// Sends a signal to a workflow.
    Signal(messages::SignalArgs),
    /// Asks a workflow a query; nothing is recorded.
    Query(messages::QueryArgs),
    /// Sends an update and prints the workflow's answer.
    Update(messages::UpdateArgs),
    /// Asks a workflow to cancel (it decides how, e.g. by compensating).
    Cancel(messages::CancelArgs),
    /// Ends a run now, without the workflow's say.
    Terminate(messages::CancelArgs),
    /// Shows a run: status, output or failure, status line, search attributes.
    Describe(inspect::RunArgs),
    /// Lists runs, newest first.
    List(inspect::ListArgs),
    /// Shows a run's history, event by event, with its hash chain checked.
    Show(inspect::RunArgs),
    /// Waits for a run to close and shows it.
    Wait(inspect::WaitArgs),
    /// Replays a run against its module: identical, or the first divergence.
    Replay(inspect::RunArgs),
    /// Measures throughput, start-to-result latency and replay speed on each backend.
    Bench(bench::BenchArgs),
}

impl Cli {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let g = self.global;
        match self.command {
            Command::Dev(args) => serve::dev(args).await,
            Command::Server(args) => serve::server(args).await,
            Command::Deploy(args) => deploy::run(&g, args).await,
            Command::Modules(args) => deploy::modules(&g, args).await,
            Command::Start(args) => start::run(&g, args).await,
            Command::Signal(args) => messages::signal(&g, args).await,
            Command::Query(args) => messages::query(&g, args).await,
            Command::Update(args) => messages::update(&g, args).await,
            Command::Cancel(args) => messages::cancel(&g, args).await,
            Command::Terminate(args) => messages::terminate(&g, args).await,
            Command::Describe(args) => inspect::describe(&g, args).await,
            Command::List(args) => inspect::list(&g, args).await,
            Command::Show(args) => inspect::show(&g, args).await,
            Command::Wait(args) => inspect::wait(&g, args).await,
            Command::Replay(args) => inspect::replay(&g, args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    }
}

/// Parses a JSON argument, naming the flag when it is not JSON.
pub(crate) fn json_arg(flag: &str, text: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{flag} is not JSON ({e}); quote strings as JSON, e.g. {flag} '\"Ada\"' or {flag} '{{\"amount\": 10}}'"
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
