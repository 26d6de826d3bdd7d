//! Kill -9 the host at five points of a multi-step workflow, restart it, and
//! check that the run carries on from its history: completed activities are
//! not run again, the timer keeps its original due time, the signal is not
//! lost, every completion is recorded exactly once, and the chain verifies.
//! And kill it with a hundred runs in flight: every one completes after the
//! restart, each completion recorded once.
//!
//! The host is a real child process: this test binary run again with only the
//! ignored `child_host` test selected and `WEFT_CRASH_DB` set.

mod common;

use common::{Backend, guest};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use weft::model::{Event, History, RunId};
use weft::store::{RunStatus, Store};
use weft::{
    Activities, ActivityContext, ActivityError, Host, HostConfig, StartRequest, SystemClock,
};

const TIMER_MS: u64 = 1_500;

/// The host process the parent kills. Not a test of its own: it runs only when spawned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the crash tests; runs only when they spawn it"]
async fn child_host() {
    tracing_subscriber::fmt()
        .with_env_filter("weft=debug")
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let db = std::env::var("WEFT_CRASH_DB").expect("spawned by the crash tests with WEFT_CRASH_DB");
    let store: Arc<dyn Store> = match std::env::var("WEFT_CRASH_SCHEMA") {
        Ok(schema) => Arc::new(
            weft::store::PostgresStore::connect_in_schema(&db, &schema)
                .await
                .unwrap(),
        ),
        Err(_) => Arc::new(weft::store::SqliteStore::open(&db).await.unwrap()),
    };
    let log = PathBuf::from(std::env::var("WEFT_CRASH_LOG").unwrap());
    let hang = std::env::var("WEFT_CRASH_HANG").unwrap_or_default();
    let mut activities = Activities::new();
    activities.register("step", move |_: ActivityContext, req: Value| {
        let (log, hang) = (log.clone(), hang.clone());
        async move {
            let name = req["name"].as_str().unwrap_or("?").to_owned();
            append(&log, &format!("start {name}"));
            if name == hang {
                // Hold the attempt open until the parent kills this process.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok::<_, ActivityError>(format!("{name}-done"))
        }
    });
    let echo_log = PathBuf::from(std::env::var("WEFT_CRASH_LOG").unwrap());
    activities.register("echo", move |_: ActivityContext, input: Value| {
        let log = echo_log.clone();
        async move {
            append(&log, "start echo");
            Ok::<_, ActivityError>(input)
        }
    });
    let mut config = HostConfig {
        host_id: "crash-host".into(),
        poll_interval: Duration::from_millis(50),
        ..HostConfig::default()
    };
    config.engine.cache_dir = std::env::var("WEFT_CRASH_CACHE").ok().map(PathBuf::from);
    let host = Host::new(store, activities, config).unwrap();
    let _running = host.run().await.unwrap();
    println!("child host ready");
    tokio::time::sleep(Duration::from_secs(120)).await;
    panic!("the crash test never killed its child host");
}

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    // One write per line: concurrent activities must not interleave their lines.
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

fn starts(log: &Path, name: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == format!("start {name}"))
        .count()
}

struct Scenario {
    db: common::Db,
    log: PathBuf,
    cache: PathBuf,
    _dir: tempfile::TempDir,
    client: Host,
}

impl Scenario {
    /// A fresh database, a client host on it (its loops not running), and
    /// the test-scenarios module deployed.
    async fn new(backend: Backend) -> (Scenario, weft::model::Sha256Hex) {
        let dir = tempfile::tempdir().unwrap();
        let db = common::fresh_db(backend).await;
        let client = Host::with_engine(
            db.store.clone(),
            Activities::new(),
            HostConfig::default(),
            Arc::new(SystemClock),
            common::engine(),
        );
        let s = Scenario {
            log: dir.path().join("activities.log"),
            cache: dir.path().join("cache"),
            db,
            _dir: dir,
            client,
        };
        let module = s
            .client
            .deploy("test-scenarios", "test", &guest("test-scenarios"))
            .await
            .unwrap()
            .sha256;
        (s, module)
    }

    fn spawn(&self, hang: &str) -> Child {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "child_host",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WEFT_CRASH_DB", &self.db.url)
        .env("WEFT_CRASH_LOG", &self.log)
        .env("WEFT_CRASH_CACHE", &self.cache)
        .env("WEFT_CRASH_HANG", hang)
        .stdout(Stdio::null())
        .stderr(self.host_log());
        if let Some(schema) = &self.db.schema {
            cmd.env("WEFT_CRASH_SCHEMA", schema);
        }
        cmd.spawn().unwrap()
    }

    /// Where the child hosts write their logs, all appended to one file.
    fn host_log(&self) -> std::fs::File {
        let path = self.log.with_extension("hosts.log");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
    }

    fn host_log_text(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("hosts.log")).unwrap_or_default()
    }

    async fn history(&self, run: &RunId) -> History {
        self.client.history(run).await.unwrap()
    }

    async fn until(&self, what: &str, mut check: impl FnMut(&History) -> bool, run: &RunId) {
        for _ in 0..600 {
            if check(&self.history(run).await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let kinds: Vec<_> = self
            .history(run)
            .await
            .events()
            .iter()
            .map(|e| e.event.kind())
            .collect();
        panic!(
            "never reached: {what}; history: {kinds:?}\nhost logs:\n{}",
            self.host_log_text()
        );
    }
}

/// Whether activity `b`'s completion is in the history.
fn b_done(h: &History) -> bool {
    h.events()
        .iter()
        .any(|e| matches!(&e.event, Event::ActivityCompleted { output, .. } if output == "b-done"))
}

fn count(h: &History, kind: &str) -> usize {
    h.events().iter().filter(|e| e.event.kind() == kind).count()
}

fn kill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

async fn host_killed_at_five_points_carries_on(backend: Backend) {
    let (s, module) = Scenario::new(backend).await;
    let run = s
        .client
        .start(StartRequest {
            workflow_id: "crash-1".into(),
            workflow_type: "steps".into(),
            input: json!({ "label": "crash", "timer_ms": TIMER_MS }),
            module,
            options: Default::default(),
        })
        .await
        .unwrap();

    // 1. Killed while activity `a` is running: it is run again, and recorded once.
    let child = s.spawn("a");
    for _ in 0..600 {
        if starts(&s.log, "a") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        starts(&s.log, "a"),
        1,
        "activity a started in the first host"
    );
    kill(child);

    // 2. Killed right after `a` completed, with the timer pending.
    let child = s.spawn("");
    s.until(
        "a completed",
        |h| count(h, "activity_completed") == 1 && count(h, "timer_started") == 1,
        &run,
    )
    .await;
    kill(child);
    assert_eq!(starts(&s.log, "a"), 2);

    // 3. The timer fires on time in a new host; killed with signal `go` in flight.
    let child = s.spawn("");
    s.until("timer fired", |h| count(h, "timer_fired") == 1, &run)
        .await;
    s.client.signal(&run, "go", json!("green")).await.unwrap();
    kill(child);

    // 4. Killed while `b` runs (inside the join) — unless the host killed
    //    with the signal in flight got as far as finishing `b` itself.
    let b_before = starts(&s.log, "b");
    let child = s.spawn("b");
    for _ in 0..600 {
        if starts(&s.log, "b") > b_before || b_done(&s.history(&run).await) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        starts(&s.log, "b") > b_before || b_done(&s.history(&run).await),
        "b neither ran again nor was done; host logs:\n{}",
        s.host_log_text()
    );
    kill(child);

    // 5. The last host finishes the run.
    let child = s.spawn("");
    s.until("run closed", |h| count(h, "workflow_completed") == 1, &run)
        .await;
    kill(child);

    let record = s.client.describe(&run).await.unwrap();
    assert_eq!(record.status, RunStatus::Completed, "{record:?}");
    assert_eq!(
        record.output,
        Some(
            json!({ "a": "a-done", "go": "green", "b": "b-done", "c": "c-done", "extra": "no-extra" })
        )
    );

    let history = s.history(&run).await;
    history.verify().expect("the hash chain verifies");
    common::assert_each_completion_once(&history, 3);
    assert_eq!(
        count(&history, "signal_received"),
        1,
        "the signal was delivered exactly once"
    );
    assert_eq!(
        starts(&s.log, "a"),
        2,
        "a completed activity is never run again"
    );
    assert!(starts(&s.log, "b") >= 1);

    // The timer kept its original due time across the crash.
    let fire_at = history
        .events()
        .iter()
        .find_map(|e| match e.event {
            Event::TimerStarted { fire_at_ms, .. } => Some(fire_at_ms),
            _ => None,
        })
        .unwrap();
    let mut activation_time = 0;
    for e in history.events() {
        match e.event {
            Event::ActivationStarted { time_ms } => activation_time = time_ms,
            Event::TimerFired { .. } => {
                assert!(
                    activation_time >= fire_at,
                    "fired at {activation_time}, due at {fire_at}"
                );
                break;
            }
            _ => {}
        }
    }
    // And a fresh replay of the whole history agrees with it.
    assert!(matches!(
        s.client.replay(&run).await.unwrap(),
        weft::workflow::ReplayVerdict::Identical { .. }
    ));
    s.db.drop().await;
}

/// Runs in flight when their host is killed with `kill -9`: started together,
/// each a chain of this many activities.
const BATCH_RUNS: usize = 100;
const BATCH_STEPS: usize = 5;

/// A host killed with a batch of runs in flight, most of them between
/// activations, some with attempts running, some with results on the way:
/// after its restart every run completes, each activity's completion is in
/// its history exactly once, and every chain verifies. How long the
/// recovery took, from the restart to the last run closing, is printed.
async fn host_killed_with_a_batch_in_flight_finishes_every_run(backend: Backend) {
    let (s, module) = Scenario::new(backend).await;
    let child = s.spawn("");
    let mut runs = Vec::with_capacity(BATCH_RUNS);
    for i in 0..BATCH_RUNS {
        let request = StartRequest {
            workflow_id: format!("batch-{i}"),
            workflow_type: "chain".into(),
            input: json!({ "activities": BATCH_STEPS }),
            module: module.clone(),
            options: Default::default(),
        };
        runs.push(s.client.start(request).await.unwrap());
    }
    // Killed once about a third of the work was done (the first host
    // compiles the module first: a debug build on a busy machine takes a while).
    let third = BATCH_RUNS * BATCH_STEPS / 3;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while starts(&s.log, "echo") < third && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        starts(&s.log, "echo") >= third,
        "a third of the activities ran within 2 minutes; host logs:\n{}",
        s.host_log_text()
    );
    kill(child);
    let killed_at = starts(&s.log, "echo");
    assert!(
        killed_at < BATCH_RUNS * BATCH_STEPS,
        "the host was killed with work left"
    );

    let restarted = std::time::Instant::now();
    let child = s.spawn("");
    let mut open = runs.clone();
    for _ in 0..2400 {
        let mut still = Vec::new();
        for run in open {
            if s.client.describe(&run).await.unwrap().status == RunStatus::Running {
                still.push(run);
            }
        }
        open = still;
        if open.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery = restarted.elapsed();
    assert!(
        open.is_empty(),
        "{} runs still open 120 s after the restart; host logs:\n{}",
        open.len(),
        s.host_log_text()
    );
    kill(child);
    eprintln!(
        "recovery: {BATCH_RUNS} runs of {BATCH_STEPS} activities, killed after {killed_at} attempts; \
         the last run closed {recovery:?} after the restart ({} attempts in all)",
        starts(&s.log, "echo")
    );
    for run in &runs {
        let record = s.client.describe(run).await.unwrap();
        assert_eq!(record.status, RunStatus::Completed, "{record:?}");
        assert_eq!(record.output, Some(json!(BATCH_STEPS)));
        let history = s.history(run).await;
        history.verify().expect("the hash chain verifies");
        common::assert_each_completion_once(&history, BATCH_STEPS);
    }
    s.db.drop().await;
}

both_backends!(
    host_killed_at_five_points_carries_on,
    host_killed_with_a_batch_in_flight_finishes_every_run
);
