//! The figures, as one JSON object (`--output json`) or a table per backend.

use super::{Backend, Mode, Scenario, Sizes};
use serde::Serialize;

#[derive(Serialize)]
pub(super) struct Report {
    pub(super) machine: Machine,
    pub(super) sizes: Sizes,
    /// How to read the database columns.
    pub(super) database_note: &'static str,
    pub(super) backends: Vec<BackendReport>,
}

pub(super) const DATABASE_NOTE: &str = "write transactions, WAL bytes and WAL syncs are counters of the whole Postgres cluster read before and after each scenario: other clients of the same Postgres inflate them";

#[derive(Serialize)]
pub(super) struct Machine {
    /// `nproc`: the cores this process may use.
    pub(super) cores: usize,
    /// `SHOW server_version`, when Postgres is measured.
    pub(super) postgres_version: Option<String>,
    pub(super) weft_version: &'static str,
}

#[derive(Serialize)]
pub(super) struct BackendReport {
    pub(super) backend: Backend,
    pub(super) probe: Probe,
    pub(super) rows: Vec<Row>,
    pub(super) peak_rss_kib: PeakRss,
    pub(super) replay: Option<ReplayFigures>,
    pub(super) versions: Option<VersionFigures>,
}

/// Single-row commits from one connection: the yardstick.
#[derive(Serialize)]
pub(super) struct Probe {
    pub(super) commits: u64,
    pub(super) seconds: f64,
    pub(super) commits_per_second: f64,
    pub(super) how: String,
    /// SQLite only: the same with `synchronous=FULL`, each commit waiting for the disk.
    pub(super) full_sync_commits_per_second: Option<f64>,
}

/// One scenario in one mode.
#[derive(Serialize)]
pub(super) struct Row {
    pub(super) scenario: Scenario,
    pub(super) mode: Mode,
    pub(super) workflows: usize,
    /// Activities those workflows ran.
    pub(super) activities: usize,
    /// From the first start to the last result.
    pub(super) seconds: f64,
    /// `hello`, `timers`: workflows/s; `chain10`: activities/s; `seq`: none.
    pub(super) throughput: Option<f64>,
    pub(super) throughput_unit: Option<&'static str>,
    /// Start-to-result latency of one workflow.
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    /// The throughput divided by the probe's commits/s.
    pub(super) throughput_per_probe: Option<f64>,
    /// `seq`: the p50 latency as a number of probe commits.
    pub(super) p50_in_probe_commits: Option<f64>,
    /// Postgres only.
    pub(super) database: Option<DbCost>,
}

#[derive(Serialize)]
pub(super) struct DbCost {
    pub(super) write_transactions: i64,
    pub(super) wal_bytes: i64,
    pub(super) wal_syncs: Option<i64>,
    /// Whether the bench made Postgres's statistics current before reading
    /// the syncs (backends report them late; `--stats-settle`).
    pub(super) syncs_settled: bool,
    /// Samples (five a second) in which another client of the same Postgres
    /// was busy: when not 0, these figures count its writes too.
    pub(super) other_clients_seen: u32,
    pub(super) per_workflow: PerUnit,
    /// `chain10`: per activity, i.e. per step of a chain.
    pub(super) per_activity: Option<PerUnit>,
}

#[derive(Serialize)]
pub(super) struct PerUnit {
    pub(super) write_transactions: f64,
    pub(super) wal_bytes: f64,
    pub(super) wal_syncs: Option<f64>,
}

#[derive(Serialize, Default)]
pub(super) struct PeakRss {
    /// This process, over the embedded scenarios.
    pub(super) embedded: Option<u64>,
    /// The `weft dev` / `weft server` process, over the service scenarios.
    pub(super) service_server: Option<u64>,
    /// The worker process, over the service scenarios.
    pub(super) service_worker: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct ReplayFigures {
    pub(super) events: u64,
    pub(super) replays: u32,
    pub(super) events_per_second: f64,
}

#[derive(Serialize)]
pub(super) struct VersionFigures {
    pub(super) open_runs: usize,
    pub(super) check_identical_runs_per_second: f64,
    pub(super) check_diverging_runs_per_second: f64,
    pub(super) upgrade_runs_per_second: f64,
}

impl Row {
    /// Derives the ratios to the probe from what was measured.
    pub(super) fn new(
        scenario: Scenario,
        mode: Mode,
        measured: &super::scenarios::Measured,
        probe: &Probe,
        database: Option<DbCost>,
    ) -> Self {
        let seconds = measured.elapsed.as_secs_f64();
        let (throughput, unit) = match scenario {
            Scenario::Seq => (None, None),
            Scenario::Chain10 => (
                Some(measured.activities as f64 / seconds),
                Some("activities/s"),
            ),
            _ => (
                Some(measured.workflows as f64 / seconds),
                Some("workflows/s"),
            ),
        };
        let p50_ms = measured.percentile_ms(0.50);
        Self {
            scenario,
            mode,
            workflows: measured.workflows,
            activities: measured.activities,
            seconds,
            throughput,
            throughput_unit: unit,
            p50_ms,
            p99_ms: measured.percentile_ms(0.99),
            throughput_per_probe: throughput.map(|t| t / probe.commits_per_second),
            p50_in_probe_commits: (scenario == Scenario::Seq)
                .then(|| p50_ms / (1000.0 / probe.commits_per_second)),
            database,
        }
    }
}

/// Thousands separated by commas, for the table.
fn grouped(n: f64) -> String {
    let digits = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0.0 { format!("-{out}") } else { out }
}

pub(super) fn print_text(report: &Report) {
    let m = &report.machine;
    let postgres = m
        .postgres_version
        .as_deref()
        .map(|v| format!(", Postgres {v}"))
        .unwrap_or_default();
    println!(
        "weft {} bench on {} cores{postgres}",
        m.weft_version, m.cores
    );
    let s = &report.sizes;
    println!(
        "sizes: hello {} with {} in flight; seq {}; chain10 {} chains; timers {} at once; replay {} activities x{}; versions {} runs",
        s.workflows,
        s.in_flight,
        s.sequential,
        s.chains,
        s.timers,
        s.replay_activities,
        s.replays,
        s.check_runs
    );
    for b in &report.backends {
        println!();
        print_backend(b);
    }
    let costs = || {
        report
            .backends
            .iter()
            .flat_map(|b| &b.rows)
            .filter_map(|r| r.database.as_ref())
    };
    if costs().next().is_some() {
        println!();
        println!("note: {}.", report.database_note);
    }
    if costs().any(|d| d.other_clients_seen > 0) {
        println!(
            "* other clients were busy on this Postgres during the scenario: its database figures count their writes too; measure again when it is quiet."
        );
    }
    if costs().any(|d| !d.syncs_settled) {
        println!(
            "~ WAL syncs read without waiting for Postgres's statistics: some of a scenario's land in the next one's."
        );
    }
}

fn print_backend(b: &BackendReport) {
    let p = &b.probe;
    let full = p
        .full_sync_commits_per_second
        .map(|f| format!("; with synchronous=FULL {}/s", grouped(f)))
        .unwrap_or_default();
    println!(
        "{}: probe {} commits/s ({}{full})",
        b.backend.name(),
        grouped(p.commits_per_second),
        p.how
    );
    if !b.rows.is_empty() {
        println!(
            "  {:<8} {:<8} {:>17} {:>9} {:>9} {:>10} {:>8} {:>9} {:>8}",
            "scenario",
            "mode",
            "throughput",
            "p50 ms",
            "p99 ms",
            "vs probe",
            "txns/wf",
            "WAL B/wf",
            "syncs/wf"
        );
    }
    for r in &b.rows {
        let throughput = match (r.scenario, r.throughput) {
            (Scenario::Timers, _) => format!("{:.2} s wall", r.seconds),
            (Scenario::Chain10, Some(t)) => format!("{} act/s", grouped(t)),
            (_, Some(t)) => format!("{} wf/s", grouped(t)),
            (_, None) => "-".into(),
        };
        let ratio = match (r.throughput_per_probe, r.p50_in_probe_commits) {
            (Some(x), _) => format!("{x:.4}"),
            (None, Some(c)) => format!("{c:.1} cmt"),
            (None, None) => "-".into(),
        };
        let (txns, wal, syncs) = match &r.database {
            Some(d) => (
                format!(
                    "{}{:.1}",
                    if d.other_clients_seen > 0 { "*" } else { "" },
                    d.per_workflow.write_transactions
                ),
                grouped(d.per_workflow.wal_bytes),
                d.per_workflow
                    .wal_syncs
                    .map(|s| format!("{}{s:.2}", if d.syncs_settled { "" } else { "~" }))
                    .unwrap_or_else(|| "-".into()),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "  {:<8} {:<8} {:>17} {:>9.2} {:>9.2} {:>10} {:>8} {:>9} {:>8}",
            r.scenario.name(),
            r.mode.name(),
            throughput,
            r.p50_ms,
            r.p99_ms,
            ratio,
            txns,
            wal,
            syncs
        );
    }
    for r in &b.rows {
        if let Some(a) = r.database.as_ref().and_then(|d| d.per_activity.as_ref()) {
            println!(
                "  {} {} per activity: {:.2} write txns, {} WAL bytes, {} WAL syncs",
                r.scenario.name(),
                r.mode.name(),
                a.write_transactions,
                grouped(a.wal_bytes),
                a.wal_syncs
                    .map(|s| format!("{s:.2}"))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    let rss = &b.peak_rss_kib;
    let mib = |k: Option<u64>| k.map(|k| format!("{:.0} MiB", k as f64 / 1024.0));
    let mut peaks = Vec::new();
    if let Some(e) = mib(rss.embedded) {
        peaks.push(format!("embedded (the bench process) {e}"));
    }
    if let Some(s) = mib(rss.service_server) {
        let worker = mib(rss.service_worker)
            .map(|w| format!(", worker {w}"))
            .unwrap_or_default();
        peaks.push(format!("service: server {s}{worker}"));
    }
    if !peaks.is_empty() {
        println!("  peak RSS: {}", peaks.join("; "));
    }
    if let Some(r) = &b.replay {
        println!(
            "  replay: {} events/s (a {}-event history, x{})",
            grouped(r.events_per_second),
            r.events,
            r.replays
        );
    }
    if let Some(v) = &b.versions {
        println!(
            "  versions ({} open runs): check identical {} runs/s, check diverging {} runs/s, upgrade {} runs/s",
            v.open_runs,
            grouped(v.check_identical_runs_per_second),
            grouped(v.check_diverging_runs_per_second),
            grouped(v.upgrade_runs_per_second)
        );
    }
}
