//! The `weft` command line: one file per subcommand (or family of them).
//!
//! `dev` and `server` run a host; every other command is a client of one
//! (`--address`, `WEFT_ADDRESS`; `--token`, `WEFT_TOKEN`), printing readable
//! text or, with `--output json`, JSON for scripts.

/// `println!` for text a person reads: control characters other than
/// newline and tab are shown escaped ([`output::terminal_safe`]), so a
/// workflow id, a name or a message cannot move the cursor, recolour or
/// retitle the terminal. JSON output and exported files are printed as is.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", $crate::cli::output::terminal_safe(&format!($($arg)*)))
    };
}

mod audit;
mod bench;
mod deploy;
mod inspect;
mod messages;
mod output;
mod serve;
mod start;
mod versions;

use anyhow::Context;
use clap::{Parser, Subcommand};
use weft::client::{Client, ClientTls, DEFAULT_ADDRESS};

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
    /// The bearer token from a file (its first line): kept out of the
    /// process list and the environment.
    #[arg(
        long,
        global = true,
        env = "WEFT_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    token_file: Option<std::path::PathBuf>,
    /// For an `https://` address: the PEM certificate of the CA that signed
    /// the host's certificate (default: the system's roots).
    #[arg(long, global = true, env = "WEFT_CA_FILE", value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Readable text, or JSON for scripts.
    #[arg(long, global = true, value_enum, default_value = "text")]
    output: output::Format,
}

impl Global {
    async fn client(&self) -> anyhow::Result<Client> {
        let token = self.token()?;
        Ok(Client::connect_with(&self.address, token.as_deref(), &self.tls()?).await?)
    }

    /// The bearer token: given, or the first in the token file.
    fn token(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.token_file else {
            return Ok(self.token.clone());
        };
        match tokens_in(path)?.into_iter().next() {
            Some(token) => Ok(Some(token)),
            None => anyhow::bail!(
                "the token file {} holds no token; write the token on its first line",
                path.display()
            ),
        }
    }

    /// How an `https://` host is trusted.
    fn tls(&self) -> anyhow::Result<ClientTls> {
        Ok(match &self.ca_file {
            Some(path) => ClientTls::from_ca_file(path)?,
            None => ClientTls::default(),
        })
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
    /// Deployed modules: list (the default), set a name's default, download one, collect garbage.
    Modules {
        #[command(subcommand)]
        command: Option<versions::ModulesCommand>,
    },
    /// Replays the open (and recently closed) runs of a module name against a
    /// candidate and reports each: identical, or the first divergence. Exit code 3
    /// when an open run would not replay.
    Check(versions::CheckArgs),
    /// Moves the open runs of a name that replay identically on a deployed
    /// version to it; the others stay where they are.
    Upgrade(versions::UpgradeArgs),
    /// Puts a stuck run back to work, on its module or on a fixed version.
    Resume(versions::ResumeArgs),
    /// Starts a workflow over from the end of an activation of a run: a new
    /// run keeps the history up to there and receives again the signals that
    /// came after; an open old run is terminated.
    Reset(versions::ResetArgs),
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
    /// Shows a run: status, output or failure (read from its closing event),
    /// status line, search attributes.
    Describe(inspect::RunArgs),
    /// Lists runs, newest first.
    List(inspect::ListArgs),
    /// Shows a run's history, event by event, with its hash chain checked.
    Show(inspect::RunArgs),
    /// Waits for a run to close and shows it.
    Wait(inspect::WaitArgs),
    /// Replays a run against its module on the host, or an export offline
    /// (--history FILE --module FILE): identical, or the first divergence.
    Replay(audit::ReplayArgs),
    /// Writes a run's complete record (history, hash chain, module) as JSON.
    Export(audit::ExportArgs),
    /// Checks an export's (or a run's) hash chain and names the first
    /// altered, missing or reordered event, then that what the export says
    /// of the run (ids, module, status, output, failure) is what its events say.
    Verify(audit::VerifyArgs),
    /// Makes a signing key for `weft server --signing-key` and prints its
    /// public key, which auditors give to `weft verify --public-key`.
    Keygen(audit::KeygenArgs),
    /// Measures throughput, latency and database cost on each backend, embedded
    /// and as a service, against a probe of the disk; and replay speed.
    Bench(bench::BenchArgs),
    /// The activity worker that `weft bench` spawns for its service mode.
    #[command(hide = true)]
    BenchWorker(bench::WorkerArgs),
}

impl Cli {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let g = self.global;
        match self.command {
            Command::Dev(args) => serve::dev(args).await,
            Command::Server(args) => serve::server(args).await,
            Command::Deploy(args) => deploy::run(&g, args).await,
            Command::Modules { command } => versions::modules(&g, command).await,
            Command::Check(args) => versions::check(&g, args).await,
            Command::Upgrade(args) => versions::upgrade(&g, args).await,
            Command::Resume(args) => versions::resume(&g, args).await,
            Command::Reset(args) => versions::reset(&g, args).await,
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
            Command::Replay(args) => audit::replay(&g, args).await,
            Command::Export(args) => audit::export(&g, args).await,
            Command::Verify(args) => audit::verify(&g, args).await,
            Command::Keygen(args) => audit::keygen(&g, args),
            Command::Bench(args) => bench::run(&g, args).await,
            Command::BenchWorker(args) => bench::worker(&g, args).await,
        }
    }
}

/// A command that ran but whose answer is "no": the process exits with
/// `code` (documented with the command) after printing `message`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Refused {
    pub(crate) code: u8,
    message: String,
}

impl Refused {
    pub(crate) fn new(code: u8, message: String) -> Self {
        Self { code, message }
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

/// The tokens in a file: one per line (or comma-separated); blank lines and
/// lines starting with `#` are skipped. The server's token files and the
/// CLI's read alike.
pub(crate) fn tokens_in(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
