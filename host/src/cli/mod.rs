//! The `weft` command line: one file per subcommand.

mod bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Weft: a durable workflow host for WebAssembly components"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measures throughput, start-to-result latency and replay speed on each backend.
    Bench(bench::BenchArgs),
}

impl Cli {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Bench(args) => bench::run(args).await,
        }
    }
}
