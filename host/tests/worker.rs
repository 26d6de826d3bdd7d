//! Remote activity workers end to end: a host with no activities of its own
//! serves the API on loopback, and workers built with `weft::worker` run the
//! activities over gRPC. On SQLite and Postgres; the host runs on a manual
//! clock, so heartbeat timeouts and lease expiries happen when a test says.

mod common;

use common::{Backend, TestHost};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::{Barrier, mpsc, oneshot};
use weft::model::{Event, History, RunId};
use weft::store::RunStatus;
use weft::worker::{Worker, WorkerOptions};
use weft::{Activities, ActivityContext, ActivityError, HostConfig};

/// A host with no activities, serving the API on a loopback port.
struct Served {
    t: TestHost,
    address: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Served {
    async fn new(backend: Backend) -> Self {
        Self::with_config(backend, common::test_config()).await
    }

    async fn with_config(backend: Backend, config: HostConfig) -> Self {
        Self::with_tokens(backend, config, weft::api::Tokens::open()).await
    }

    async fn with_tokens(backend: Backend, config: HostConfig, tokens: weft::api::Tokens) -> Self {
        let t = TestHost::with_config(backend, Activities::new(), config).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let host = t.host.clone();
        tokio::spawn(weft::api::serve(host, listener, tokens, async {
            let _ = stopped.await;
        }));
        Self {
            t,
            address,
            stop: Some(stop),
        }
    }

    /// Runs a worker with `activities` in this process until the returned sender fires.
    fn worker(&self, name: &str, activities: Activities, max_concurrent: usize) -> WorkerHandle {
        self.worker_polling(name, activities, max_concurrent, Duration::from_secs(5))
    }

    /// A worker whose long polls last `poll_wait`.
    fn worker_polling(
        &self,
        name: &str,
        activities: Activities,
        max_concurrent: usize,
        poll_wait: Duration,
    ) -> WorkerHandle {
        let options = WorkerOptions {
            worker_id: name.into(),
            max_concurrent,
            poll_wait,
            ..WorkerOptions::default()
        };
        let worker = Worker::connect(&self.address, options).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            worker
                .run(activities, async {
                    let _ = stopped.await;
                })
                .await
        });
        WorkerHandle {
            stop: Some(stop),
            task,
        }
    }

    async fn finished_with(&self, run: &RunId) -> Value {
        let record = self.t.finished(run).await;
        assert_eq!(record.status, RunStatus::Completed, "{record:?}");
        record.output.expect("a completed run has an output")
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.t.stop().await;
    }
}

struct WorkerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), weft::worker::WorkerError>>,
}

impl WorkerHandle {
    /// Graceful: stops polling, lets attempts in flight finish.
    async fn shut_down(mut self) {
        let _ = self.stop.take().expect("once").send(());
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the worker stops within 30 s")
            .expect("the worker task does not panic")
            .expect("the worker stops cleanly");
    }

    /// What a killed worker process does: everything in flight is dropped.
    fn kill(self) {
        self.task.abort();
    }
}

fn lines() -> (
    mpsc::UnboundedSender<String>,
    mpsc::UnboundedReceiver<String>,
) {
    mpsc::unbounded_channel()
}

async fn expect(rx: &mut mpsc::UnboundedReceiver<String>, prefix: &str) -> String {
    let line = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no activity reported {prefix:?} within 30 s"))
        .expect("the activities hold the sender");
    assert!(
        line.starts_with(prefix),
        "expected {prefix:?}, got {line:?}"
    );
    line
}

fn completions(h: &History) -> Vec<(u32, u32)> {
    h.events()
        .iter()
        .filter_map(|e| match e.event {
            Event::ActivityCompleted { seq, attempt, .. } => Some((seq, attempt)),
            _ => None,
        })
        .collect()
}

/// An activity served remotely completes its workflow, with the input,
/// attempt and idempotency key the host gave.
async fn a_remote_worker_runs_the_activity(backend: Backend) {
    let s = Served::new(backend).await;
    let mut a = Activities::new();
    a.register("greet", |ctx: ActivityContext, name: String| async move {
        Ok::<_, ActivityError>(format!(
            "Hello, {name}! (attempt {}, key {})",
            ctx.attempt(),
            ctx.idempotency_key()
        ))
    });
    let worker = s.worker("w1", a, 4);
    let module = s.t.deploy("test-activities").await;
    let run =
        s.t.start(
            &module,
            "call",
            "greet-1",
            json!({ "activity": "greet", "input": "Ada" }),
        )
        .await;
    let output = s.finished_with(&run).await;
    assert_eq!(
        output,
        json!({ "ok": format!("Hello, Ada! (attempt 1, key {run}-1)") })
    );
    let history = s.t.host.history(&run).await.unwrap();
    history.verify().unwrap();
    assert_eq!(completions(&history), vec![(1, 1)]);
    worker.shut_down().await;
    s.stop().await;
}

/// A failure is retried by the policy stored with the task (here: a one-hour
/// backoff, so only the error's own `retry_after` makes the retry quick),
/// and a non-retryable one fails the activity at once.
async fn failures_follow_the_stored_policy(backend: Backend) {
    let s = Served::new(backend).await;
    let calls = Arc::new(AtomicU32::new(0));
    let mut a = Activities::new();
    let seen = calls.clone();
    a.register("flaky", move |ctx: ActivityContext, _: Value| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            if ctx.attempt() == 1 {
                return Err(
                    ActivityError::retryable("RateLimited", "429").retry_after(Duration::ZERO)
                );
            }
            Ok(ctx.attempt())
        }
    });
    a.register("declined", |_: ActivityContext, _: Value| async move {
        Err::<Value, _>(ActivityError::non_retryable(
            "CardDeclined",
            "insufficient funds",
        ))
    });
    let worker = s.worker("w1", a, 4);
    let module = s.t.deploy("test-activities").await;
    let retry = json!({ "initial_interval_ms": 3_600_000, "maximum_attempts": 5 });
    let run =
        s.t.start(
            &module,
            "sequence",
            "flaky-1",
            json!([
                { "activity": "flaky", "retry": retry },
                { "activity": "declined", "retry": retry },
            ]),
        )
        .await;
    let output = s.finished_with(&run).await;
    assert_eq!(output[0], json!({ "ok": 2 }), "{output}");
    assert_eq!(output[1]["err"]["error_type"], "CardDeclined", "{output}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let history = s.t.host.history(&run).await.unwrap();
    assert_eq!(completions(&history), vec![(1, 2)]);
    worker.shut_down().await;
    s.stop().await;
}

/// A remote attempt that stops heartbeating is failed at its heartbeat
/// timeout; the next attempt, on another worker, resumes from the details
/// the first recorded, and the first learns at its next heartbeat to stop.
async fn heartbeat_details_reach_the_next_attempt(backend: Backend) {
    let s = Served::new(backend).await;
    let (tell, mut rx) = lines();
    let mut a = Activities::new();
    a.register("count", move |ctx: ActivityContext, to: u64| {
        let tell = tell.clone();
        async move {
            let from = ctx.heartbeat_details::<u64>().unwrap_or(0);
            tell.send(format!("attempt {} from {from}", ctx.attempt()))
                .unwrap();
            if ctx.attempt() == 1 {
                ctx.heartbeat(3u64).await?;
                tell.send("stalled".into()).unwrap();
                // Silent until told to go on, then it learns it was superseded.
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if ctx.heartbeat(4u64).await.is_err() {
                        tell.send("told to stop".into()).unwrap();
                        return Err(ActivityError::retryable("Stopped", "superseded"));
                    }
                }
            }
            Ok::<_, ActivityError>(from * 100 + to)
        }
    });
    let worker = s.worker("w1", a, 4);
    let module = s.t.deploy("test-activities").await;
    let run =
        s.t.start(
            &module,
            "call",
            "count-1",
            json!({ "activity": "count", "input": 7, "heartbeat_ms": 3_000,
                    "retry": { "initial_interval_ms": 1_000 } }),
        )
        .await;
    expect(&mut rx, "attempt 1 from 0").await;
    expect(&mut rx, "stalled").await;
    // The throttle lets one heartbeat through per second of real time; the
    // later ones are held back. The host's clock jumps past the deadline.
    s.t.clock.advance(Duration::from_secs(4));
    expect(&mut rx, "told to stop").await;
    s.t.clock.advance(Duration::from_secs(2));
    expect(&mut rx, "attempt 2 from 3").await;
    let output = s.finished_with(&run).await;
    assert_eq!(output, json!({ "ok": 307 }));
    let history = s.t.host.history(&run).await.unwrap();
    assert_eq!(completions(&history), vec![(1, 2)]);
    worker.shut_down().await;
    s.stop().await;
}

/// The workflow drops an activity (a timer wins the race): the remote
/// attempt learns it at its next heartbeat and stops.
async fn a_dropped_activity_stops_the_remote_attempt(backend: Backend) {
    let s = Served::new(backend).await;
    let (tell, mut rx) = lines();
    let mut a = Activities::new();
    a.register("watch", move |ctx: ActivityContext, _: Value| {
        let tell = tell.clone();
        async move {
            tell.send("watching".into()).unwrap();
            loop {
                if let Err(e) = ctx.heartbeat(()).await {
                    tell.send(format!("stopped: {e}")).unwrap();
                    return Err::<(), _>(e);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let worker = s.worker("w1", a, 4);
    let module = s.t.deploy("test-activities").await;
    let run =
        s.t.start(
            &module,
            "race",
            "race-1",
            json!({ "call": { "activity": "watch" }, "timer_ms": 1_000, "linger_ms": 1_000 }),
        )
        .await;
    expect(&mut rx, "watching").await;
    s.t.clock.advance(Duration::from_secs(1));
    let stopped = expect(&mut rx, "stopped").await;
    assert!(stopped.contains("cancel"), "{stopped}");
    s.t.clock.advance(Duration::from_secs(1));
    assert_eq!(s.finished_with(&run).await, json!({ "winner": "timer" }));
    worker.shut_down().await;
    s.stop().await;
}

/// A worker killed mid-attempt: once the attempt's lease (its
/// start-to-close timeout) expires, another worker runs it, and the history
/// records one completion.
async fn a_killed_workers_attempt_runs_again_elsewhere(backend: Backend) {
    let s = Served::new(backend).await;
    let (tell, mut rx) = lines();
    let hanging = {
        let tell = tell.clone();
        let mut a = Activities::new();
        a.register("charge", move |ctx: ActivityContext, _: Value| {
            let tell = tell.clone();
            async move {
                tell.send(format!("attempt {} hangs", ctx.attempt()))
                    .unwrap();
                std::future::pending::<()>().await;
                Ok::<_, ActivityError>(0)
            }
        });
        a
    };
    let doomed = s.worker("doomed", hanging, 1);
    let module = s.t.deploy("test-activities").await;
    let run =
        s.t.start(
            &module,
            "call",
            "charge-1",
            json!({ "activity": "charge", "start_to_close_ms": 600_000,
                    "retry": { "initial_interval_ms": 1_000 } }),
        )
        .await;
    expect(&mut rx, "attempt 1 hangs").await;
    doomed.kill();
    let mut a = Activities::new();
    a.register("charge", |ctx: ActivityContext, _: Value| async move {
        Ok::<_, ActivityError>(ctx.attempt())
    });
    let rescuer = s.worker("rescuer", a, 1);
    s.t.clock.advance(Duration::from_secs(601));
    assert_eq!(s.finished_with(&run).await, json!({ "ok": 2 }));
    let history = s.t.host.history(&run).await.unwrap();
    history.verify().unwrap();
    assert_eq!(completions(&history), vec![(1, 2)]);
    rescuer.shut_down().await;
    s.stop().await;
}

/// Shutting a worker down stops its polling and lets the attempt in flight finish.
async fn shutdown_lets_the_attempt_in_flight_finish(backend: Backend) {
    let s = Served::new(backend).await;
    let (tell, mut rx) = lines();
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut a = Activities::new();
    a.register("slow", move |_: ActivityContext, _: Value| {
        let (tell, mut go) = (tell.clone(), go_rx.clone());
        async move {
            tell.send("started".into()).unwrap();
            let _ = go.wait_for(|g| *g).await;
            Ok::<_, ActivityError>("done")
        }
    });
    let worker = s.worker("w1", a, 2);
    let module = s.t.deploy("test-activities").await;
    let run =
        s.t.start(&module, "call", "slow-1", json!({ "activity": "slow" }))
            .await;
    expect(&mut rx, "started").await;
    let stopping = tokio::spawn(worker.shut_down());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!stopping.is_finished(), "the worker waits for its attempt");
    go_tx.send(true).unwrap();
    stopping.await.unwrap();
    assert_eq!(s.finished_with(&run).await, json!({ "ok": "done" }));
    s.stop().await;
}

/// With a grace period, a shutdown abandons the attempt still running when
/// it is over; the attempt runs again on another worker once its
/// start-to-close timeout expires, and completes the workflow once.
async fn shutdown_grace_abandons_an_attempt_that_does_not_finish(backend: Backend) {
    let s = Served::new(backend).await;
    let (tell, mut rx) = lines();
    let mut stuck = Activities::new();
    stuck.register("slow", move |_: ActivityContext, _: Value| {
        let tell = tell.clone();
        async move {
            tell.send("started".into()).unwrap();
            std::future::pending::<()>().await;
            Ok::<_, ActivityError>("never")
        }
    });
    let options = WorkerOptions {
        worker_id: "w-stuck".into(),
        max_concurrent: 1,
        poll_wait: Duration::from_secs(5),
        shutdown_grace: Some(Duration::from_millis(50)),
        ..WorkerOptions::default()
    };
    let worker = Worker::connect(&s.address, options).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(stuck, async {
        let _ = stopped.await;
    }));
    let module = s.t.deploy("test-activities").await;
    let run =
        s.t.start(
            &module,
            "call",
            "stuck-1",
            json!({ "activity": "slow", "start_to_close_ms": 10_000,
                    "retry": { "initial_interval_ms": 1_000 } }),
        )
        .await;
    expect(&mut rx, "started").await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the grace period ends the shutdown")
        .expect("the worker task does not panic")
        .expect("the worker stops cleanly");
    let mut done = Activities::new();
    done.register("slow", |_: ActivityContext, _: Value| async move {
        Ok::<_, ActivityError>("done")
    });
    let rescuer = s.worker("w-rescuer", done, 1);
    s.t.clock.advance(Duration::from_secs(11));
    assert_eq!(s.finished_with(&run).await, json!({ "ok": "done" }));
    let history = s.t.host.history(&run).await.unwrap();
    assert_eq!(completions(&history), vec![(1, 2)]);
    rescuer.shut_down().await;
    s.stop().await;
}

/// Every idle worker's long poll is woken when tasks appear (not only one,
/// and not by the host's hourly re-check or the end of a minute-long poll):
/// one activation schedules two activities that can finish only together,
/// and two workers with one slot each must both take one.
async fn every_idle_poller_is_woken(backend: Backend) {
    let config = HostConfig {
        poll_interval: Duration::from_secs(3_600),
        ..common::test_config()
    };
    let s = Served::with_config(backend, config).await;
    let together = Arc::new(Barrier::new(2));
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let together = together.clone();
            let mut a = Activities::new();
            a.register("step", move |_: ActivityContext, step: Value| {
                let together = together.clone();
                async move {
                    if step["name"] != "a" {
                        together.wait().await;
                    }
                    Ok::<_, ActivityError>(format!("{}@w{i}", step["name"].as_str().unwrap_or("?")))
                }
            });
            s.worker_polling(&format!("w{i}"), a, 1, Duration::from_secs(60))
        })
        .collect();
    let module = s.t.deploy("test-scenarios").await;
    let run =
        s.t.start(
            &module,
            "steps",
            "steps-1",
            json!({ "label": "x", "timer_ms": 0 }),
        )
        .await;
    s.t.host.signal(&run, "go", json!("now")).await.unwrap();
    s.t.host.signal(&run, "extra", json!("more")).await.unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), s.finished_with(&run))
        .await
        .expect("b and c finish long before a minute-long poll ends");
    let (b, c) = (output["b"].as_str().unwrap(), output["c"].as_str().unwrap());
    assert_ne!(
        &b[2..],
        &c[2..],
        "b and c ran on different workers: {output}"
    );
    for w in workers {
        w.shut_down().await;
    }
    s.stop().await;
}

/// Least privilege: a client token cannot take activity tasks, a worker
/// token can do nothing else, and a worker token scoped to named
/// activities may neither poll for nor report on any other.
async fn worker_and_client_tokens_keep_to_their_calls(backend: Backend) {
    let tokens = weft::api::Tokens::new(vec![], vec![])
        .with_clients(vec!["client-1".into()])
        .with_workers(vec!["any-1".into(), "pay-1:charge+refund".into()])
        .unwrap();
    let s = Served::with_tokens(backend, common::test_config(), tokens).await;
    let greeter = || {
        let mut a = Activities::new();
        a.register("greet", |_: ActivityContext, name: String| async move {
            Ok::<_, ActivityError>(format!("Hello, {name}!"))
        });
        a
    };
    let refused = |token: &str| {
        let options = WorkerOptions {
            worker_id: format!("with-{token}"),
            token: Some(token.into()),
            ..WorkerOptions::default()
        };
        let worker = Worker::connect(&s.address, options).unwrap();
        let activities = greeter();
        async move {
            let run = worker.run(activities, std::future::pending());
            tokio::time::timeout(Duration::from_secs(30), run)
                .await
                .expect("a refused worker stops at once")
                .expect_err("the host refuses the worker")
                .to_string()
        }
    };
    let e = refused("client-1").await;
    assert!(e.contains("a client token cannot take"), "{e}");
    let e = refused("pay-1").await;
    assert!(
        e.contains("serves only charge, refund, not activity \"greet\""),
        "{e}"
    );

    let client = weft::client::Client::connect(&s.address, Some("any-1"))
        .await
        .unwrap();
    let e = client
        .list(None, None, None, 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("a worker token may only poll"), "{e}");
    let client = weft::client::Client::connect(&s.address, Some("client-1"))
        .await
        .unwrap();
    assert!(client.list(None, None, None, 10).await.unwrap().is_empty());

    // A worker token for any activity serves greet.
    let options = WorkerOptions {
        worker_id: "any".into(),
        token: Some("any-1".into()),
        ..WorkerOptions::default()
    };
    let worker = Worker::connect(&s.address, options).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run(greeter(), async {
                let _ = stopped.await;
            })
            .await
    });
    let module = s.t.deploy("test-activities").await;
    let run =
        s.t.start(
            &module,
            "call",
            "greet-scoped",
            json!({ "activity": "greet", "input": "Ada" }),
        )
        .await;
    assert_eq!(s.finished_with(&run).await, json!({ "ok": "Hello, Ada!" }));
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    s.stop().await;
}

both_backends!(
    worker_and_client_tokens_keep_to_their_calls,
    a_remote_worker_runs_the_activity,
    failures_follow_the_stored_policy,
    heartbeat_details_reach_the_next_attempt,
    a_dropped_activity_stops_the_remote_attempt,
    a_killed_workers_attempt_runs_again_elsewhere,
    shutdown_lets_the_attempt_in_flight_finish,
    shutdown_grace_abandons_an_attempt_that_does_not_finish,
    every_idle_poller_is_woken,
);
