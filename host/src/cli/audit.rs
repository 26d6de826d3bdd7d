//! `weft export`, `weft verify` and `weft replay`: what auditors run.

use super::versions::DIVERGES;
use super::{Global, Refused, output};
use anyhow::Context;
use std::path::PathBuf;
use weft::audit::{self, Export};
use weft::model::EventHash;

/// The exit code of a record that does not verify.
pub(crate) const ALTERED: u8 = 4;

#[derive(clap::Args)]
pub(crate) struct ExportArgs {
    /// The workflow id (its open run, else its latest).
    id: String,
    /// An earlier run of the workflow id.
    #[arg(long)]
    run_id: Option<String>,
    /// Write it here instead of to standard output.
    #[arg(short = 'o', long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub(crate) struct VerifyArgs {
    /// An export (`weft export ID > run.json`), or a workflow id whose
    /// history the host holds. Exit code 4 when it does not verify: an
    /// event altered, missing or reordered, or a `run` field (status,
    /// output, …) that differs from what the events say.
    target: String,
    /// With a file: also compare its head hash with the host's record of
    /// the run, proving no event was cut off the end.
    #[arg(long)]
    against_host: bool,
    /// A head hash kept elsewhere (printed by an earlier `weft verify` or
    /// `weft export -o`): the export must contain that event, proving the
    /// history up to it unaltered without asking the host.
    #[arg(long, value_name = "HASH")]
    head: Option<String>,
    /// The exporting host's public key (`weft keygen` printed it): the
    /// export's head must carry that host's signature, proving the file is
    /// the one it exported, and a history whose last event closes the run
    /// must carry its seal, proving it is the one the run closed with —
    /// whatever the file's `status` says, without asking any host.
    #[arg(long, value_name = "KEY")]
    public_key: Option<String>,
}

#[derive(clap::Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the secret key (readable by its owner only; a host
    /// refuses a key file others can read).
    #[arg(short = 'o', long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// The workflow id whose run the host replays (omit with --history).
    id: Option<String>,
    /// An earlier run of the workflow id.
    #[arg(long)]
    run_id: Option<String>,
    /// Replay this export offline: no host, no database, no network. Prints
    /// the result the replay computed; exit code 3 when it diverges or ends
    /// otherwise than the closing event records, 4 when the export does not
    /// verify.
    #[arg(long, requires = "module", conflicts_with = "id")]
    history: Option<PathBuf>,
    /// The module the export names (`weft modules get NAME VERSION -o FILE`).
    #[arg(long, requires = "history")]
    module: Option<PathBuf>,
}

pub(crate) async fn export(g: &Global, a: ExportArgs) -> anyhow::Result<()> {
    let export = g.client().await?.export(&a.id, a.run_id.as_deref()).await?;
    let json = export.to_json();
    match &a.out {
        Some(path) => {
            std::fs::write(path, json + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "exported run {} of {} ({} events, head {}{}) to {}",
                export.run.run_id,
                export.run.workflow_id,
                export.event_count,
                output::short(&export.head.to_hex()),
                match (&export.signature, &export.seal) {
                    (Some(s), Some(_)) =>
                        format!(", signed by {}, sealed", output::short(&s.public_key)),
                    (Some(s), None) => format!(", signed by {}", output::short(&s.public_key)),
                    _ => String::new(),
                },
                path.display()
            );
        }
        None => println!("{json}"),
    }
    Ok(())
}

fn altered(e: audit::AuditError) -> anyhow::Error {
    Refused::new(ALTERED, e.to_string()).into()
}

pub(crate) async fn verify(g: &Global, a: VerifyArgs) -> anyhow::Result<()> {
    let path = PathBuf::from(&a.target);
    let (text, from_host) = if path.is_file() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        (text, false)
    } else {
        let export: Export = g.client().await?.export(&a.target, None).await?;
        (export.to_json(), true)
    };
    let (export, verified) = audit::verify_export(&text).map_err(altered)?;
    let anchor = match &a.head {
        None => None,
        Some(hex) => {
            let head = EventHash::from_hex(hex.trim()).map_err(|e| {
                anyhow::anyhow!(
                    "--head {hex:?} is not a hash: {e}; give the 64 hex digits a verify printed"
                )
            })?;
            Some(audit::anchored(&export, &head).map_err(altered)?)
        }
    };
    if let Some(key) = &a.public_key {
        audit::check_signature(&export, key).map_err(altered)?;
    }
    if a.against_host && !from_host {
        let history = g
            .client()
            .await?
            .history(&verified.workflow_id, Some(&verified.run_id))
            .await?;
        let host_head = history
            .events
            .last()
            .map(|e| e.hash.clone())
            .unwrap_or_default();
        let host_count = history.events.len() as u64;
        if host_count < verified.events
            || history
                .events
                .get(verified.events as usize - 1)
                .map(|e| &e.hash)
                != Some(&verified.head)
        {
            return Err(Refused::new(
                ALTERED,
                format!(
                    "the export's head {} is not the host's event {} (the host's head is {host_head}, after {host_count} events): the export was altered and re-chained",
                    verified.head, verified.events
                ),
            )
            .into());
        }
    }
    match g.output {
        output::Format::Json => {
            let mut v = serde_json::to_value(&verified)?;
            if let Some(seq) = anchor {
                v["anchored_at_event"] = seq.into();
            }
            if let Some(key) = &a.public_key {
                v["signed_by"] = key.trim().to_ascii_lowercase().into();
                if let Some(seal) = &export.seal {
                    v["sealed_at_ms"] = seal.sealed_at_ms.into();
                }
            }
            output::json(&v)
        }
        output::Format::Text => {
            say!(
                "run {} of {}: {} events, hash chain verified, head {}{}",
                verified.run_id,
                verified.workflow_id,
                verified.events,
                verified.head,
                if a.against_host && !from_host {
                    " (the host's record has the same event there)"
                } else {
                    ""
                }
            );
            if let Some(seq) = anchor {
                say!(
                    "the given head is event {seq}'s hash: events 1 to {seq} are the ones it was taken from"
                );
            }
            if let Some(key) = &a.public_key {
                say!(
                    "the head is signed by {}: this is the record that host exported",
                    key.trim().to_ascii_lowercase()
                );
                if let Some(seal) = &export.seal {
                    say!(
                        "sealed when the run closed ({}): the {} events are the ones the host closed it with",
                        weft::client::format_time(seal.sealed_at_ms),
                        seal.event_count
                    );
                }
            }
        }
    }
    Ok(())
}

/// `weft keygen -o FILE`.
pub(crate) fn keygen(g: &Global, a: KeygenArgs) -> anyhow::Result<()> {
    if a.out.exists() {
        anyhow::bail!(
            "{} exists; a new key would orphan the signatures made with it: pick another file",
            a.out.display()
        );
    }
    let signer = audit::Signer::generate().map_err(anyhow::Error::msg)?;
    write_secret(&a.out, &(signer.secret_hex() + "\n"))
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    match g.output {
        output::Format::Json => output::json(&serde_json::json!({
            "key_file": a.out.display().to_string(),
            "public_key": signer.public_key(),
        })),
        output::Format::Text => {
            say!("wrote a signing key to {}", a.out.display());
            say!("public key {}", signer.public_key());
            say!(
                "start the host with --signing-key {} and give auditors the public key",
                a.out.display()
            );
        }
    }
    Ok(())
}

/// Creates `path` readable and writable by its owner only, and writes `text`.
fn write_secret(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

pub(crate) async fn replay(g: &Global, a: ReplayArgs) -> anyhow::Result<()> {
    let (Some(history), Some(module)) = (&a.history, &a.module) else {
        let Some(id) = &a.id else {
            anyhow::bail!(
                "name the run (weft replay ID), or replay an export offline (--history FILE --module FILE)"
            );
        };
        return super::inspect::replay(g, id, a.run_id.as_deref()).await;
    };
    let text = std::fs::read_to_string(history)
        .with_context(|| format!("cannot read {}", history.display()))?;
    let wasm =
        std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
    let replayed = audit::replay_offline(&wasm, &text)
        .await
        .map_err(|e| match e {
            audit::AuditError::WrongModule { .. } | audit::AuditError::Module(_) => {
                anyhow::Error::new(e)
            }
            audit::AuditError::Replay(_) => anyhow::Error::new(e),
            audit::AuditError::OutcomeDiffers { .. } => {
                Refused::new(DIVERGES, e.to_string()).into()
            }
            e => altered(e),
        })?;
    let identical = matches!(
        replayed.verdict,
        weft::workflow::ReplayVerdict::Identical { .. }
    );
    match g.output {
        output::Format::Json => output::json(&serde_json::json!({
            "run_id": replayed.verified.run_id,
            "identical": identical,
            "events": replayed.verified.events,
            "head": replayed.verified.head,
            "verdict": replayed.verdict_text(),
        })),
        output::Format::Text => say!("{}", replayed.verdict_text()),
    }
    if !identical {
        return Err(Refused::new(
            DIVERGES,
            format!(
                "run {} does not replay against this module",
                replayed.verified.run_id
            ),
        )
        .into());
    }
    Ok(())
}
