//! `weft bench`: what a host does on this machine, read against what one
//! connection to its database can do.
//!
//! For each backend it first probes the database: single-row commits per
//! second from one connection (Postgres: a logged table in the bench's
//! schema; SQLite: a file opened the way `SqliteStore` opens its own). Every
//! throughput below is also given as a ratio to that, and the one-at-a-time
//! latency as a number of probe commits, so that figures from different
//! disks compare.
//!
//! Then the scenarios, each in two modes — `embedded`, a [`Host`] in this
//! process with the activities registered, and `service`, what users run: a
//! `weft dev` (SQLite) or `weft server` (Postgres) child process, a remote
//! worker child process serving the activities over gRPC, and this process
//! as the API client:
//!
//! - `hello`: hello workflows (one activity) with a number in flight:
//!   workflows per second, and start-to-result p50/p99;
//! - `seq`: hello one at a time: start-to-result p50/p99;
//! - `chain10`: `chain` workflows of ten activities each: activities per second;
//! - `timers`: many workflows started at once that each sleep one second on
//!   a durable timer: the wall time from the first start to the last result.
//!
//! On Postgres each scenario also says what it cost the database — write
//! transactions, WAL bytes and WAL syncs per workflow, from cluster-wide
//! counters — and for each mode the host's peak resident memory.
//!
//! Last, embedded only: replay speed of a ~1,000-event history, and how many
//! open runs per second `weft check` classifies (against a compatible and an
//! incompatible version) and `weft upgrade` moves.

mod probe;
mod report;
mod scenarios;
mod service;
mod versions;

pub(crate) use service::{WorkerArgs, worker};

use super::{Global, output};
use anyhow::Context;
use probe::Pg;
use report::{BackendReport, Machine, PeakRss, Report, Row};
use scenarios::{Measuring, Target};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use weft::store::{PostgresOptions, PostgresStore, SqliteStore, Store};
use weft::{Activities, ActivityContext, ActivityError, Host, HostConfig};

#[derive(clap::ValueEnum, Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub(super) enum Backend {
    Sqlite,
    Postgres,
}

#[derive(clap::ValueEnum, Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub(super) enum Mode {
    /// A host in the bench's process.
    Embedded,
    /// A server process, a worker process, the bench as the client.
    Service,
}

#[derive(clap::ValueEnum, Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub(super) enum Scenario {
    /// Hello workflows with --in-flight at once: workflows/s, p50/p99.
    Hello,
    /// Hello workflows one at a time: p50/p99.
    Seq,
    /// Chains of ten activities with --in-flight at once: activities/s.
    Chain10,
    /// Workflows started at once that sleep one second: wall time.
    Timers,
    /// Replay speed of a chain's history (embedded only).
    Replay,
    /// `weft check` and `weft upgrade` over open runs (embedded only).
    Versions,
}

impl Scenario {
    /// The scenarios that run in both modes, in the order they run.
    const LOADS: [Scenario; 4] = [
        Scenario::Hello,
        Scenario::Seq,
        Scenario::Chain10,
        Scenario::Timers,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Hello => "hello",
            Scenario::Seq => "seq",
            Scenario::Chain10 => "chain10",
            Scenario::Timers => "timers",
            Scenario::Replay => "replay",
            Scenario::Versions => "versions",
        }
    }
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Embedded => "embedded",
            Mode::Service => "service",
        }
    }
}

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// Backends to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sqlite,postgres"
    )]
    backends: Vec<Backend>,
    /// Scenarios to run (replay and versions run embedded only).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "hello,seq,chain10,timers,replay,versions"
    )]
    scenarios: Vec<Scenario>,
    /// How the host runs: in the bench's process, or as a server with a remote worker.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "embedded,service"
    )]
    modes: Vec<Mode>,
    /// Postgres server for the postgres backend; each run uses fresh schemas and drops them.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_url: String,
    /// Shrinks every size for a smoke run of about half a minute (sizes given still apply).
    #[arg(long)]
    quick: bool,
    /// Hello workflows in `hello` [default: 1000; --quick: 100].
    #[arg(long)]
    workflows: Option<usize>,
    /// Workflows in flight at once in `hello` and `chain10`.
    #[arg(long, default_value = "100")]
    in_flight: usize,
    /// Hello workflows run one at a time in `seq` [default: 100; --quick: 10].
    #[arg(long)]
    sequential: Option<usize>,
    /// Chains of ten activities in `chain10` [default: 100; --quick: 10].
    #[arg(long)]
    chains: Option<usize>,
    /// Workflows started at once in `timers`, each sleeping one second [default: 1000; --quick: 100].
    #[arg(long)]
    timers: Option<usize>,
    /// Activities in the chain whose history `replay` replays (3 events each).
    #[arg(long, default_value = "333")]
    replay_activities: u32,
    /// Replays of that history [default: 200; --quick: 10].
    #[arg(long)]
    replays: Option<u32>,
    /// Open runs of `order` v1 that `versions` checks against v3 and v2, then upgrades [default: 500; --quick: 20].
    #[arg(long)]
    check_runs: Option<usize>,
    /// How long one scenario may take before the bench gives up.
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    scenario_timeout: u64,
    /// Postgres reports a backend's WAL syncs up to a second late while it
    /// works and up to 10 s late once it idles. By default the bench waits a
    /// second after each scenario and then reads on all the host's pooled
    /// connections, which makes them report; SECONDS waits that long instead
    /// (10.5 is certain); 0 reads at once and marks the syncs approximate (~)
    /// [--quick: 0].
    #[arg(long, value_name = "SECONDS")]
    stats_settle: Option<f64>,
    /// The directory of the guest modules (hello_workflow.wasm, test_scenarios.wasm,
    /// test_versions_v*.wasm) [default: $CARGO_TARGET_DIR/wasm32-wasip2/guest, else
    /// the one in the target directory this binary was built in].
    #[arg(long, value_name = "DIR")]
    guests: Option<PathBuf>,
}

/// The sizes in effect, defaults and `--quick` applied.
#[derive(Serialize)]
pub(super) struct Sizes {
    workflows: usize,
    in_flight: usize,
    sequential: usize,
    chains: usize,
    timers: usize,
    replay_activities: u32,
    replays: u32,
    check_runs: usize,
    #[serde(skip)]
    scenario_timeout: Duration,
    #[serde(serialize_with = "settle_text")]
    stats_settle: scenarios::Settle,
}

fn settle_text<S: serde::Serializer>(settle: &scenarios::Settle, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&match settle {
        scenarios::Settle::None => "none".to_owned(),
        scenarios::Settle::Nudge => "nudge".to_owned(),
        scenarios::Settle::Wait(d) => format!("{} s", d.as_secs_f64()),
    })
}

impl Sizes {
    fn new(a: &BenchArgs) -> anyhow::Result<Self> {
        let pick = |given: Option<usize>, full: usize, quick: usize| {
            given.unwrap_or(if a.quick { quick } else { full })
        };
        let stats_settle = match (a.stats_settle, a.quick) {
            (None, false) => scenarios::Settle::Nudge,
            (None, true) => scenarios::Settle::None,
            (Some(0.0), _) => scenarios::Settle::None,
            (Some(s), _) => scenarios::Settle::Wait(
                Duration::try_from_secs_f64(s)
                    .context("--stats-settle takes seconds, 0 or more")?,
            ),
        };
        Ok(Self {
            workflows: pick(a.workflows, 1000, 100),
            in_flight: a.in_flight.max(1),
            sequential: pick(a.sequential, 100, 10),
            chains: pick(a.chains, 100, 10),
            timers: pick(a.timers, 1000, 100),
            replay_activities: a.replay_activities,
            replays: a.replays.unwrap_or(if a.quick { 10 } else { 200 }),
            check_runs: pick(a.check_runs, 500, 20),
            scenario_timeout: Duration::from_secs(a.scenario_timeout.max(1)),
            stats_settle,
        })
    }
}

/// The `order` guests' bytes, oldest first.
pub(super) struct Orders {
    pub(super) v1: Vec<u8>,
    pub(super) v2: Vec<u8>,
    pub(super) v3: Vec<u8>,
}

/// The guest modules the selected scenarios need.
struct Guests {
    hello: Vec<u8>,
    scenarios: Option<Vec<u8>>,
    orders: Option<Orders>,
}

impl Guests {
    fn load(dir: &Path, scenarios: &[Scenario]) -> anyhow::Result<Self> {
        let read = |file: &str, krate: &str| {
            let path = dir.join(file);
            std::fs::read(&path).with_context(|| {
                format!(
                    "cannot read {}; build it with `cargo build --target wasm32-wasip2 --profile guest -p {krate}` (scripts/build-guests builds them all), or point --guests at the directory that holds it",
                    path.display()
                )
            })
        };
        let needs = |s: &[Scenario]| s.iter().any(|x| scenarios.contains(x));
        let scenarios_module = if needs(&[Scenario::Chain10, Scenario::Timers, Scenario::Replay]) {
            Some(read("test_scenarios.wasm", "test-scenarios")?)
        } else {
            None
        };
        let orders = if needs(&[Scenario::Versions]) {
            Some(Orders {
                v1: read("test_versions_v1.wasm", "test-versions-v1")?,
                v2: read("test_versions_v2.wasm", "test-versions-v2")?,
                v3: read("test_versions_v3.wasm", "test-versions-v3")?,
            })
        } else {
            None
        };
        Ok(Self {
            hello: read("hello_workflow.wasm", "hello-workflow")?,
            scenarios: scenarios_module,
            orders,
        })
    }
}

/// Where the guests are: `--guests`, else the first of `$CARGO_TARGET_DIR`,
/// the target directory this binary sits in (`target/<profile>/weft`) and
/// the one beside the source it was built from that holds the hello module.
fn guest_dir(given: Option<&Path>) -> PathBuf {
    if let Some(dir) = given {
        return dir.to_owned();
    }
    let mut targets = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        targets.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(target) = exe.parent().and_then(Path::parent)
    {
        targets.push(target.to_owned());
    }
    targets.push(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target"
    )));
    let dirs: Vec<PathBuf> = targets
        .into_iter()
        .map(|t| t.join("wasm32-wasip2/guest"))
        .collect();
    dirs.iter()
        .find(|d| d.join("hello_workflow.wasm").is_file())
        .unwrap_or(&dirs[dirs.len() - 1])
        .clone()
}

/// The activities the scenarios call, in the embedded host and in the worker.
pub(super) fn activities() -> Activities {
    let mut activities = Activities::new();
    activities.register("greet", |_: ActivityContext, name: String| async move {
        Ok::<_, ActivityError>(format!("Hello, {name}!"))
    });
    activities.register(
        "echo",
        |_: ActivityContext, v: serde_json::Value| async move { Ok::<_, ActivityError>(v) },
    );
    activities
}

pub(crate) async fn run(g: &Global, args: BenchArgs) -> anyhow::Result<()> {
    let sizes = Sizes::new(&args)?;
    let dir = guest_dir(args.guests.as_deref());
    let guests = Guests::load(&dir, &args.scenarios)?;
    let postgres_version = if args.backends.contains(&Backend::Postgres) {
        Some(Pg::connect(&args.postgres_url).await?.version().await?)
    } else {
        None
    };
    let machine = Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        postgres_version,
        weft_version: env!("CARGO_PKG_VERSION"),
    };
    let mut backends = Vec::new();
    for &backend in &args.backends {
        eprintln!("{}: probing…", backend.name());
        backends.push(measure_backend(backend, &args, &sizes, &guests).await?);
    }
    let report = Report {
        machine,
        sizes,
        database_note: report::DATABASE_NOTE,
        backends,
    };
    match g.output {
        output::Format::Json => output::json(&report),
        output::Format::Text => report::print_text(&report),
    }
    Ok(())
}

/// One backend: the probe, then each mode. Its schemas are dropped however it ends.
async fn measure_backend(
    backend: Backend,
    args: &BenchArgs,
    sizes: &Sizes,
    guests: &Guests,
) -> anyhow::Result<BackendReport> {
    let temp = tempfile::tempdir()?;
    let mut pg = match backend {
        Backend::Postgres => {
            let mut pg = Pg::connect(&args.postgres_url).await?;
            pg.watch_others().await?;
            Some(pg)
        }
        Backend::Sqlite => None,
    };
    let measured = measure_modes(backend, args, sizes, guests, temp.path(), pg.as_mut()).await;
    if let Some(pg) = pg.as_mut() {
        pg.drop_schemas().await;
    }
    measured
}

async fn measure_modes(
    backend: Backend,
    args: &BenchArgs,
    sizes: &Sizes,
    guests: &Guests,
    temp: &Path,
    mut pg: Option<&mut Pg>,
) -> anyhow::Result<BackendReport> {
    let schema = format!("weft_bench_{}", std::process::id());
    let probe = match pg.as_deref_mut() {
        Some(pg) => {
            pg.create_schema(&schema).await?;
            probe::postgres(&args.postgres_url, &schema).await?
        }
        None => probe::sqlite(temp).await?,
    };
    let mut report = BackendReport {
        backend,
        probe,
        rows: Vec::new(),
        peak_rss_kib: PeakRss::default(),
        replay: None,
        versions: None,
    };
    if args.modes.contains(&Mode::Embedded) {
        let store: Arc<dyn Store> = match backend {
            Backend::Sqlite => {
                let file = temp.join("embedded.db");
                Arc::new(SqliteStore::open(&file.to_string_lossy()).await?)
            }
            Backend::Postgres => {
                let options = PostgresOptions {
                    schema: Some(schema.clone()),
                    application_name: Some("weft-bench-embedded".into()),
                };
                Arc::new(PostgresStore::connect_with(&args.postgres_url, options).await?)
            }
        };
        let mut m = Measuring {
            backend,
            sizes,
            probe: &report.probe,
            pg: pg.as_deref_mut(),
        };
        let (rows, rss, replay, versions) =
            embedded(store, guests, &args.scenarios, &mut m).await?;
        report.rows.extend(rows);
        report.peak_rss_kib.embedded = rss;
        report.replay = replay;
        report.versions = versions;
    }
    let loads = Scenario::LOADS.iter().any(|s| args.scenarios.contains(s));
    if args.modes.contains(&Mode::Service) && loads {
        let database = match pg.as_deref_mut() {
            Some(pg) => {
                let schema = format!("{schema}_service");
                pg.create_schema(&schema).await?;
                service::url_in_schema(&args.postgres_url, &schema)
            }
            None => temp.join("service.db").to_string_lossy().into_owned(),
        };
        eprintln!("  {}: starting a server and a worker…", backend.name());
        let svc = service::Service::start(backend, &database, temp).await?;
        if let Some(pg) = pg.as_deref_mut() {
            let schema = format!("{schema}_service");
            if pg.tables_in(&schema).await? == 0 {
                anyhow::bail!(
                    "the server did not create its tables in schema {schema}: the URL's options=-c search_path=… was not honoured, and the bench would measure another schema"
                );
            }
        }
        let mut m = Measuring {
            backend,
            sizes,
            probe: &report.probe,
            pg,
        };
        let measured = service_scenarios(&svc, guests, &args.scenarios, &mut m).await;
        let rows = measured.map_err(|e| svc.explain(e))?;
        let (server, worker) = svc.peak_rss_kib();
        report.rows.extend(rows);
        report.peak_rss_kib.service_server = server;
        report.peak_rss_kib.service_worker = worker;
    }
    Ok(report)
}

type EmbeddedFigures = (
    Vec<Row>,
    Option<u64>,
    Option<report::ReplayFigures>,
    Option<report::VersionFigures>,
);

async fn embedded(
    store: Arc<dyn Store>,
    guests: &Guests,
    scenarios: &[Scenario],
    m: &mut Measuring<'_>,
) -> anyhow::Result<EmbeddedFigures> {
    probe::reset_peak_rss();
    // The defaults, as `weft server` runs: the modes differ by the process
    // boundary and the network, nothing else.
    let config = HostConfig {
        host_id: format!("bench-{}", std::process::id()),
        ..HostConfig::default()
    };
    let host = Host::new(store, activities(), config)?;
    let running = host.run().await?;
    let measured = async {
        let hello = host.deploy("hello", "bench", &guests.hello).await?.sha256;
        let scenarios_module = match &guests.scenarios {
            Some(bytes) => Some(host.deploy("scenarios", "bench", bytes).await?.sha256),
            None => None,
        };
        let target = Target::Embedded {
            host: host.clone(),
            hello,
            scenarios: scenarios_module.clone(),
        };
        let rows = scenarios::run_all(&target, Mode::Embedded, scenarios, m).await?;
        let rss = probe::peak_rss_kib("self");
        let replay = match (&guests.scenarios, scenarios_module) {
            (Some(bytes), Some(module)) if scenarios.contains(&Scenario::Replay) => {
                eprintln!("  {} embedded replay…", m.backend.name());
                let replay = versions::measure_replay(
                    &host,
                    &module,
                    bytes,
                    m.sizes.replay_activities,
                    m.sizes.replays,
                );
                Some(bounded("replay", m, replay).await?)
            }
            _ => None,
        };
        let versions = match &guests.orders {
            Some(orders) if scenarios.contains(&Scenario::Versions) => {
                eprintln!("  {} embedded versions…", m.backend.name());
                let measured = versions::measure_versions(&host, orders, m.sizes.check_runs);
                Some(bounded("versions", m, measured).await?)
            }
            _ => None,
        };
        Ok::<_, anyhow::Error>((rows, rss, replay, versions))
    }
    .await;
    running.shutdown().await;
    measured
}

/// `measured`, given up on after the scenario timeout.
async fn bounded<T>(
    scenario: &str,
    m: &Measuring<'_>,
    measured: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let limit = m.sizes.scenario_timeout;
    tokio::time::timeout(limit, measured)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "scenario {scenario} (embedded, {}) did not finish within {} s; give it longer with --scenario-timeout",
                m.backend.name(),
                limit.as_secs()
            )
        })?
        .with_context(|| format!("scenario {scenario} (embedded, {})", m.backend.name()))
}

async fn service_scenarios(
    svc: &service::Service,
    guests: &Guests,
    scenarios: &[Scenario],
    m: &mut Measuring<'_>,
) -> anyhow::Result<Vec<Row>> {
    // One connection per 100 calls at once, well under a server's 200
    // streams per connection.
    let most = m
        .sizes
        .in_flight
        .max(if scenarios.contains(&Scenario::Timers) {
            m.sizes.timers
        } else {
            1
        });
    let clients = svc.clients(most.div_ceil(100)).await?;
    clients[0]
        .deploy("hello", Some("bench"), guests.hello.clone())
        .await
        .context("deploying the hello module to the bench's server")?;
    if let Some(bytes) = &guests.scenarios {
        clients[0]
            .deploy("scenarios", Some("bench"), bytes.clone())
            .await
            .context("deploying the scenarios module to the bench's server")?;
    }
    let target = Target::Service {
        clients: Arc::new(clients),
        next: Default::default(),
    };
    scenarios::run_all(&target, Mode::Service, scenarios, m).await
}
