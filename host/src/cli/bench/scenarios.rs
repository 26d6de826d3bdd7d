//! The scenarios, run the same way against an embedded host and a server.

use super::probe::{self, Pg};
use super::report::{Probe, Row};
use super::{Mode, Scenario, Sizes};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use weft::client::{Client, RunView, StartSpec};
use weft::model::{RunId, Sha256Hex};
use weft::{Host, ListFilter, RunStatus, StartRequest};

/// Reads at once in a nudge: twice a store's pool, so that every pooled connection takes one.
const NUDGE_READS: usize = 16;

/// How long one request waits for a run's result before it asks again.
const AWAIT: Duration = Duration::from_secs(30);

/// Where workflows are started and awaited.
#[derive(Clone)]
pub(super) enum Target {
    /// A host in this process, given module hashes.
    Embedded {
        host: Host,
        hello: Sha256Hex,
        scenarios: Option<Sha256Hex>,
    },
    /// A server, through API clients taken in turn: a server allows 200
    /// streams per connection, and `timers` awaits more runs than that at once.
    Service {
        clients: Arc<Vec<Client>>,
        next: Arc<AtomicUsize>,
    },
}

/// A workflow the scenarios run.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    /// `hello` of the hello example: one `greet` activity.
    Hello,
    /// `chain` of the scenarios test guest: this many `echo` activities in a row.
    Chain(u32),
    /// `sleep` of the scenarios test guest: one durable timer of this many milliseconds.
    Sleep(u64),
}

impl Kind {
    fn workflow_type(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Chain(_) => "chain",
            Kind::Sleep(_) => "sleep",
        }
    }

    /// The module name it is deployed under.
    fn module(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Chain(_) | Kind::Sleep(_) => "scenarios",
        }
    }

    fn input(self) -> Value {
        match self {
            Kind::Hello => json!("bench"),
            Kind::Chain(n) => json!({ "activities": n }),
            Kind::Sleep(ms) => json!(ms),
        }
    }
}

enum Started {
    Local(RunId),
    /// Started by a server, with the run as it was when the start's wait
    /// ended: closed, or still running after [`AWAIT`].
    Remote {
        workflow_id: String,
        run_id: String,
        run: Box<RunView>,
    },
}

impl Target {
    async fn start(&self, kind: Kind, workflow_id: String) -> anyhow::Result<Started> {
        match self {
            Target::Embedded {
                host,
                hello,
                scenarios,
            } => {
                let module = match kind.module() {
                    "hello" => hello.clone(),
                    _ => scenarios
                        .clone()
                        .context("the scenarios module was not deployed")?,
                };
                let run = host
                    .start(StartRequest {
                        workflow_id,
                        workflow_type: kind.workflow_type().into(),
                        input: kind.input(),
                        module,
                        options: Default::default(),
                    })
                    .await?;
                Ok(Started::Local(run))
            }
            Target::Service { clients, next } => {
                let client = &clients[next.fetch_add(1, Ordering::Relaxed) % clients.len()];
                let mut spec = StartSpec::new(kind.workflow_type(), workflow_id, kind.input());
                spec.module = Some(kind.module().into());
                // One request starts the run and waits for its result, as a
                // client that wants the result asks for it.
                let (started, run) = client.start_and_wait(spec, AWAIT).await?;
                Ok(Started::Remote {
                    workflow_id: started.workflow_id,
                    run_id: started.run_id,
                    run: Box::new(run),
                })
            }
        }
    }

    /// Waits for the run to close and fails unless it completed. The
    /// scenario's timeout bounds the wait.
    async fn finish(&self, started: Started) -> anyhow::Result<()> {
        match (self, started) {
            (Target::Embedded { host, .. }, Started::Local(run)) => {
                let record = host.wait(&run).await?;
                if record.status != RunStatus::Completed {
                    bail!(
                        "run {run} of {} ended {:?}: {:?} {:?}",
                        record.workflow_type,
                        record.status,
                        record.failure,
                        record.stuck
                    );
                }
                Ok(())
            }
            (
                Target::Service { clients, next },
                Started::Remote {
                    workflow_id,
                    run_id,
                    mut run,
                },
            ) => {
                let client = &clients[next.fetch_add(1, Ordering::Relaxed) % clients.len()];
                loop {
                    match run.status.as_str() {
                        "running" => {
                            *run = client
                                .await_result(&workflow_id, Some(&run_id), Some(AWAIT))
                                .await?;
                        }
                        "completed" => return Ok(()),
                        other => bail!(
                            "run {run_id} of {} ended {other}: {:?} {:?}",
                            run.workflow_type,
                            run.failure,
                            run.stuck
                        ),
                    }
                }
            }
            _ => unreachable!("a run is awaited where it was started"),
        }
    }

    /// Reads through the host on many pooled connections at once. Postgres
    /// reports a backend's statistics (WAL syncs among them) at the end of a
    /// transaction at most once a second, and an idle backend's only ~10 s
    /// later; a read on each connection more than a second after its last
    /// report makes it report now.
    async fn nudge(&self) -> anyhow::Result<()> {
        let mut reads = JoinSet::new();
        for _ in 0..NUDGE_READS {
            match self.clone() {
                Target::Embedded { host, .. } => reads.spawn(async move {
                    let filter = ListFilter {
                        limit: 1,
                        ..ListFilter::default()
                    };
                    host.list(&filter)
                        .await
                        .map(drop)
                        .map_err(anyhow::Error::from)
                }),
                Target::Service { clients, .. } => reads.spawn(async move {
                    clients[0]
                        .list(None, None, None, 1)
                        .await
                        .map(drop)
                        .map_err(anyhow::Error::from)
                }),
            };
        }
        while let Some(read) = reads.join_next().await {
            read??;
        }
        Ok(())
    }

    /// Starts one workflow and waits for its result: the time that took.
    pub(super) async fn run_one(
        &self,
        kind: Kind,
        workflow_id: String,
    ) -> anyhow::Result<Duration> {
        let began = Instant::now();
        let started = self.start(kind, workflow_id).await?;
        self.finish(started).await?;
        Ok(began.elapsed())
    }
}

/// What one scenario measured.
pub(super) struct Measured {
    pub(super) workflows: usize,
    pub(super) activities: usize,
    /// From the first start to the last result.
    pub(super) elapsed: Duration,
    /// Each workflow's start-to-result time, sorted.
    latencies: Vec<Duration>,
}

impl Measured {
    pub(super) fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

/// `n` workflows of `kind`, at most `in_flight` at a time.
async fn load(
    target: &Target,
    kind: Kind,
    prefix: &str,
    n: usize,
    in_flight: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let permits = Arc::new(Semaphore::new(in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let mut latencies = Vec::with_capacity(n);
    let began = Instant::now();
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await?;
        let (target, id) = (target.clone(), format!("{prefix}-{i}"));
        tasks.spawn(async move {
            let took = target.run_one(kind, id).await;
            drop(permit);
            took
        });
        // A failure surfaces now, not after every other run.
        while let Some(done) = tasks.try_join_next() {
            latencies.push(done??);
        }
    }
    while let Some(done) = tasks.join_next().await {
        latencies.push(done??);
    }
    let elapsed = began.elapsed();
    latencies.sort();
    Ok((elapsed, latencies))
}

impl Scenario {
    async fn run(self, target: &Target, sizes: &Sizes) -> anyhow::Result<Measured> {
        let (kind, n, in_flight, prefix) = match self {
            Scenario::Hello => (Kind::Hello, sizes.workflows, sizes.in_flight, "hello"),
            Scenario::Seq => (Kind::Hello, sizes.sequential, 1, "seq"),
            Scenario::Chain10 => (Kind::Chain(10), sizes.chains, sizes.in_flight, "chain"),
            // All at once: the timers are due together, as after an outage.
            Scenario::Timers => (Kind::Sleep(1000), sizes.timers, sizes.timers, "timer"),
            Scenario::Replay | Scenario::Versions => unreachable!("embedded only, measured apart"),
        };
        let (elapsed, latencies) = load(target, kind, prefix, n, in_flight).await?;
        let per_workflow = match kind {
            Kind::Hello => 1,
            Kind::Chain(a) => a as usize,
            Kind::Sleep(_) => 0,
        };
        Ok(Measured {
            workflows: n,
            activities: n * per_workflow,
            elapsed,
            latencies,
        })
    }
}

/// Untimed runs first: module compilation, connections and caches are not in the figures.
async fn warm_up(target: &Target, scenarios: &[Scenario]) -> anyhow::Result<()> {
    for i in 0..20 {
        target
            .run_one(Kind::Hello, format!("warm-{i}"))
            .await
            .context("a warm-up hello workflow failed")?;
    }
    if scenarios.contains(&Scenario::Chain10) {
        target
            .run_one(Kind::Chain(1), "warm-chain".into())
            .await
            .context("a warm-up chain workflow failed")?;
    }
    if scenarios.contains(&Scenario::Timers) {
        target.run_one(Kind::Sleep(1), "warm-sleep".into()).await.context(
            "a warm-up `sleep` workflow failed; if test_scenarios.wasm predates the `sleep` workflow, rebuild it with `cargo build --target wasm32-wasip2 --profile guest -p test-scenarios`",
        )?;
    }
    Ok(())
}

/// How a backend's scenarios are measured: the probe they are read against
/// and, on Postgres, the connection that reads the database's counters.
pub(super) struct Measuring<'a> {
    pub(super) backend: super::Backend,
    pub(super) sizes: &'a Sizes,
    pub(super) probe: &'a Probe,
    pub(super) pg: Option<&'a mut Pg>,
}

/// Runs the selected scenarios (of hello, seq, chain10, timers) in order.
pub(super) async fn run_all(
    target: &Target,
    mode: Mode,
    scenarios: &[Scenario],
    m: &mut Measuring<'_>,
) -> anyhow::Result<Vec<Row>> {
    let selected: Vec<Scenario> = Scenario::LOADS
        .into_iter()
        .filter(|s| scenarios.contains(s))
        .collect();
    if selected.is_empty() {
        return Ok(Vec::new());
    }
    tokio::time::timeout(m.sizes.scenario_timeout, warm_up(target, &selected))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the warm-up ({}, {}) did not finish within {} s: are the host and its activities running?",
                mode.name(),
                m.backend.name(),
                m.sizes.scenario_timeout.as_secs()
            )
        })??;
    let settle = m.sizes.stats_settle;
    let mut before = match m.pg.as_deref_mut() {
        // The warm-up's statistics arrive late too; they are not the first scenario's.
        Some(pg) => {
            let counters = settled(pg, target, settle).await?;
            pg.others_seen();
            Some(counters)
        }
        None => None,
    };
    let mut rows = Vec::new();
    for scenario in selected {
        eprintln!(
            "  {} {} {}…",
            m.backend.name(),
            mode.name(),
            scenario.name()
        );
        let measured = tokio::time::timeout(m.sizes.scenario_timeout, scenario.run(target, m.sizes))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "scenario {} ({}, {}) did not finish within {} s; give it longer with --scenario-timeout, or fewer workflows",
                    scenario.name(),
                    mode.name(),
                    m.backend.name(),
                    m.sizes.scenario_timeout.as_secs()
                )
            })?
            .with_context(|| {
                format!(
                    "scenario {} ({}, {})",
                    scenario.name(),
                    mode.name(),
                    m.backend.name()
                )
            })?;
        let database = match (m.pg.as_deref_mut(), before) {
            (Some(pg), Some(earlier)) => {
                let now = settled(pg, target, settle).await?;
                before = Some(now);
                let activities = (scenario == Scenario::Chain10).then_some(measured.activities);
                Some(probe::cost(
                    earlier,
                    now,
                    measured.workflows,
                    activities,
                    settle != Settle::None,
                    pg.others_seen(),
                ))
            }
            _ => None,
        };
        rows.push(Row::new(scenario, mode, &measured, m.probe, database));
    }
    Ok(rows)
}

/// How the bench makes sure Postgres's statistics include a scenario's WAL
/// syncs before it reads them.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Settle {
    /// Reads at once: syncs from the last second or so may land in the next scenario.
    None,
    /// Waits a second, then has the host read on every pooled connection.
    Nudge,
    /// Waits this long: past Postgres's 10 s idle report, certain but slow.
    Wait(Duration),
}

/// The counters once the statistics are in.
async fn settled(pg: &mut Pg, target: &Target, settle: Settle) -> anyhow::Result<probe::Counters> {
    match settle {
        Settle::None => {}
        Settle::Nudge => {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            tokio::time::timeout(Duration::from_secs(30), target.nudge())
                .await
                .context("the host did not answer 16 list requests within 30 s")??;
        }
        Settle::Wait(d) => tokio::time::sleep(d).await,
    }
    pg.counters().await
}
