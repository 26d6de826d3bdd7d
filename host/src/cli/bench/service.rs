//! Service mode: a `weft dev` or `weft server` child process, a remote
//! worker child process (`weft bench-worker`, hidden), and this process as
//! the API client — what users run, with every hop it has.

use super::Backend;
use crate::cli::Global;
use anyhow::{Context, bail};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weft::client::Client;
use weft::worker::{Worker, WorkerOptions};

/// How long a server may take to answer after it was spawned.
const SERVER_START: Duration = Duration::from_secs(30);

/// Attempts the bench's worker runs at once: enough that activities never
/// queue on the worker, so the figures measure the host.
const WORKER_SLOTS: usize = 256;

#[derive(clap::Args)]
pub(crate) struct WorkerArgs {
    /// Activity attempts run at once.
    #[arg(long, default_value_t = WORKER_SLOTS)]
    max_concurrent: usize,
}

/// `weft bench-worker`: serves `greet` and `echo` to `--address` until its
/// standard input closes, which it does when the bench that spawned it
/// exits, however it exits.
pub(crate) async fn worker(g: &Global, args: WorkerArgs) -> anyhow::Result<()> {
    let options = WorkerOptions {
        token: g.token()?,
        worker_id: format!("bench-worker-{}", std::process::id()),
        max_concurrent: args.max_concurrent,
        shutdown_grace: Some(Duration::from_secs(5)),
        tls: g.tls()?,
        ..WorkerOptions::default()
    };
    let worker = Worker::connect(&g.address, options)?;
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    // Tokio reads stdin on a blocking thread anyway, and this crate's tokio
    // has no `io-std`: a plain thread does the same.
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed.send(());
    });
    worker
        .run(super::activities(), async {
            let _ = stdin_closed.await;
        })
        .await?;
    Ok(())
}

/// A child process, killed (by its pid) and reaped when dropped, so that an
/// error anywhere in the bench leaves nothing running.
struct Child {
    what: &'static str,
    child: std::process::Child,
    stderr: PathBuf,
    /// Held open: the worker exits when it closes.
    stdin: Option<std::process::ChildStdin>,
}

impl Child {
    fn spawn(
        what: &'static str,
        mut command: Command,
        stderr: PathBuf,
        keep_stdin: bool,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(&stderr)
            .with_context(|| format!("cannot create {}", stderr.display()))?;
        // Plain text in the log the bench shows when something goes wrong.
        command.env("NO_COLOR", "1");
        command
            .stdin(if keep_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot spawn the {what} ({command:?})"))?;
        let stdin = child.stdin.take();
        Ok(Self {
            what,
            child,
            stderr,
            stdin,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines it wrote to stderr.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n    ");
        if tail.is_empty() {
            format!("the {} wrote nothing to stderr", self.what)
        } else {
            // Inline, not as a path: the file goes with the bench's temporary directory.
            format!("the {}'s stderr ends:\n    {tail}", self.what)
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server and a worker serving it, both stopped when this is dropped.
pub(super) struct Service {
    pub(super) address: String,
    /// What the bench's clients present: an admin token, since they deploy.
    pub(super) token: Option<String>,
    server: Child,
    worker: Child,
}

/// A free loopback port: the kernel picks it, and it is released just before the server binds it.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot bind a loopback port for the bench's server")?;
    Ok(listener.local_addr()?.port())
}

/// `url` with `schema` as the `search_path` of every connection, in the
/// form sqlx reads from a URL (`options=-c search_path=…`).
pub(super) fn url_in_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

impl Service {
    /// Spawns the server for `backend` (on `database`: a SQLite file, or a
    /// Postgres URL that names the schema) and a worker, and waits for the
    /// server to answer.
    pub(super) async fn start(
        backend: Backend,
        database: &str,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let exe =
            std::env::current_exe().context("cannot find this executable to spawn a server")?;
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let address = format!("http://{listen}");
        let nonce = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos()
        );
        let mut server = Command::new(&exe);
        // Nothing from the caller's environment changes what is measured.
        for var in [
            "WEFT_ADMIN_TOKENS",
            "WEFT_TOKENS",
            "WEFT_TOKEN",
            "WEFT_ADDRESS",
            "WEFT_DATABASE",
            "WEFT_LISTEN",
            "WEFT_HOST_ID",
            "WEFT_SIGNING_KEY_FILE",
        ] {
            server.env_remove(var);
        }
        let (admin, user) = match backend {
            Backend::Sqlite => {
                server.args(["dev", "--listen", &listen, "--database", database]);
                (None, None)
            }
            Backend::Postgres => {
                let (admin, user) = (
                    format!("bench-admin-{nonce}"),
                    format!("bench-user-{nonce}"),
                );
                server
                    .args(["server", "--database", database, "--listen", &listen])
                    .args(["--host-id", "bench-server"])
                    .env("WEFT_ADMIN_TOKENS", &admin)
                    .env("WEFT_TOKENS", &user);
                (Some(admin), Some(user))
            }
        };
        let server = Child::spawn("server", server, logs.join("server.stderr"), false)?;

        let mut worker = Command::new(&exe);
        worker
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_ADDRESS")
            .args(["--address", &address]);
        if let Some(user) = &user {
            worker.args(["--token", user]);
        }
        worker.arg("bench-worker");
        let worker = Child::spawn("worker", worker, logs.join("worker.stderr"), true)?;

        let mut service = Self {
            address,
            token: admin,
            server,
            worker,
        };
        service.wait_until_up().await?;
        Ok(service)
    }

    async fn wait_until_up(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + SERVER_START;
        loop {
            for child in [&mut self.server, &mut self.worker] {
                if let Some(status) = child.child.try_wait()? {
                    bail!(
                        "the bench's {} exited ({status}) before the server answered; {}",
                        child.what,
                        child.tail()
                    );
                }
            }
            let answered = tokio::time::timeout(Duration::from_secs(5), async {
                let client = Client::connect(&self.address, self.token.as_deref()).await?;
                client.modules().await
            })
            .await;
            let why = match answered {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 5 s".into(),
            };
            if Instant::now() > deadline {
                bail!(
                    "the bench's server did not answer on {} within {} s ({why}); {}",
                    self.address,
                    SERVER_START.as_secs(),
                    self.server.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Connects `n` clients.
    pub(super) async fn clients(&self, n: usize) -> anyhow::Result<Vec<Client>> {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            clients.push(Client::connect(&self.address, self.token.as_deref()).await?);
        }
        Ok(clients)
    }

    /// The peak resident set of the server and of the worker, in KiB.
    pub(super) fn peak_rss_kib(&self) -> (Option<u64>, Option<u64>) {
        (
            super::probe::peak_rss_kib(&self.server.pid().to_string()),
            super::probe::peak_rss_kib(&self.worker.pid().to_string()),
        )
    }

    /// `error` with what the children last said, which usually explains it.
    pub(super) fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "{error:#}\n  {}\n  {}",
            self.server.tail(),
            self.worker.tail()
        )
    }
}
