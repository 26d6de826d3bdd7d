//! The `weft` command. Each subcommand lives in its own file under `cli/`.

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match cli::Cli::parse().run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(refused) = e.downcast_ref::<cli::Refused>() {
                return std::process::ExitCode::from(refused.code);
            }
            // EX_TEMPFAIL: the host or its database is down for now; the same command may succeed later.
            match e.downcast_ref::<weft::client::ClientError>() {
                Some(c) if c.is_retryable() => std::process::ExitCode::from(75),
                _ => std::process::ExitCode::FAILURE,
            }
        }
    }
}
