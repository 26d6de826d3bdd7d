//! A remote activity worker: activities run in a process of their own,
//! fed by a Weft host over gRPC.
//!
//! Register `async fn`s in an [`Activities`] registry — the same registry,
//! and so the same code, that a host runs in-process — and hand it to
//! [`Worker::run`]. The worker long-polls the host for attempts of the
//! activities it serves, runs at most [`WorkerOptions::max_concurrent`] at a
//! time, completes or fails each, and heartbeats through
//! [`ActivityContext::heartbeat`](crate::ActivityContext::heartbeat) (its
//! details reach the next attempt; a cancelled or timed-out attempt learns to
//! stop). Whether a failure is retried is the host's decision, by the retry
//! policy the workflow gave.
//!
//! The worker rides out a host that is down or restarting: it logs, backs
//! off and polls again. When `shutdown` resolves it stops polling and lets
//! the attempts in flight finish (each bounded by its start-to-close timeout),
//! or abandons those still running after [`WorkerOptions::shutdown_grace`].
//!
//! ```no_run
//! # async fn f() -> Result<(), weft::worker::WorkerError> {
//! use weft::worker::{Worker, WorkerOptions};
//! use weft::{Activities, ActivityContext, ActivityError};
//!
//! let mut activities = Activities::new();
//! activities.register("greet", |_: ActivityContext, name: String| async move {
//!     Ok::<_, ActivityError>(format!("Hello, {name}!"))
//! });
//! let worker = Worker::connect("http://127.0.0.1:7233", WorkerOptions::default())?;
//! worker.run(activities, async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

use crate::activity::{Activities, AttemptRunner, Called, HeartbeatSink};
use crate::api::proto::{self, worker_service_client::WorkerServiceClient};
use crate::client::{Bearer, ClientError, ClientTls, MAX_MESSAGE_BYTES};
use crate::model::{ActivityOptions, RunId};
use crate::scheduler::SystemClock;
use crate::store::{ActivityTask, Heartbeat, StoreError};
use serde_json::Value;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

type Client = WorkerServiceClient<InterceptedService<Channel, Bearer>>;

/// How a worker identifies itself and how much it takes on.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// A bearer token (a user token) for a host that needs one.
    pub token: Option<String>,
    /// Names the worker in the host's leases and logs.
    pub worker_id: String,
    /// Attempts run at once; the worker polls only with a free slot.
    pub max_concurrent: usize,
    /// How long one poll waits on the host for a task.
    pub poll_wait: Duration,
    /// Polls open at once (at least one). Each asks for as many tasks as
    /// there are free slots; a second one hides the round trip between an
    /// answer and the next poll.
    pub pollers: usize,
    /// How long a shutdown waits for the attempts in flight before it
    /// abandons them (the host runs each again once its start-to-close or
    /// heartbeat timeout expires). `None` waits for all of them.
    pub shutdown_grace: Option<Duration>,
    /// How an `https://` host is trusted: the system's roots unless a CA is given.
    pub tls: ClientTls,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "worker".into());
        Self {
            token: None,
            worker_id: format!("{host}-{}", std::process::id()),
            max_concurrent: 16,
            poll_wait: Duration::from_secs(30),
            pollers: 2,
            shutdown_grace: None,
            tls: ClientTls::default(),
        }
    }
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The host refused the worker for good (a bad token, no activities).
    #[error("the worker cannot serve: {0}")]
    Refused(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A connection to a host, ready to serve activities.
pub struct Worker {
    client: Client,
    options: WorkerOptions,
    address: String,
}

impl Worker {
    /// Prepares a worker for the host at `address`; the connection is made
    /// (and remade after a host restart) when it is needed, so a worker may
    /// start before its host.
    pub fn connect(address: &str, options: WorkerOptions) -> Result<Self, ClientError> {
        let channel = crate::client::endpoint(address, &options.tls)?.connect_lazy();
        let bearer = Bearer::new(options.token.as_deref())?;
        let client = WorkerServiceClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self {
            client,
            options,
            address: address.to_owned(),
        })
    }

    /// Serves `activities` until `shutdown` resolves, then waits for the
    /// attempts in flight (for at most [`WorkerOptions::shutdown_grace`]). Returns an error only when the host refuses the
    /// worker for good; an unreachable host is waited for.
    ///
    /// [`WorkerOptions::pollers`] polls are open at once, each asking for as
    /// many tasks as there are free slots, so that a worker's throughput is
    /// bounded by the host's database and its slots, not by one poll's round
    /// trip at a time.
    pub async fn run(
        self,
        activities: Activities,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), WorkerError> {
        let names = activities.names();
        if names.is_empty() {
            return Err(WorkerError::Refused(
                "no activities are registered; register them before running the worker".into(),
            ));
        }
        tracing::info!(address = %self.address, worker_id = %self.options.worker_id, activities = ?names, "worker serving");
        let shared = Polling {
            activities: Arc::new(activities),
            names,
            slots: Arc::new(Semaphore::new(self.options.max_concurrent.max(1))),
            attempts: Mutex::new(JoinSet::new()),
        };
        let pollers = (0..self.options.pollers.max(1)).map(|_| self.poll_loop(&shared));
        tokio::pin!(shutdown);
        let result = tokio::select! {
            refused = futures::future::try_join_all(pollers) => refused.map(|_| ()),
            () = &mut shutdown => Ok(()),
        };
        let mut attempts = shared.attempts.into_inner().expect("attempts poisoned");
        if !attempts.is_empty() {
            tracing::info!(
                in_flight = attempts.len(),
                "worker stopping: letting the attempts in flight finish"
            );
        }
        let drain = async { while attempts.join_next().await.is_some() {} };
        match self.options.shutdown_grace {
            None => drain.await,
            Some(grace) => {
                if tokio::time::timeout(grace, drain).await.is_err() {
                    tracing::warn!(
                        abandoned = attempts.len(),
                        ?grace,
                        "worker stopping: the grace period is over, abandoning the attempts still running; the host runs them again after their timeouts"
                    );
                    attempts.shutdown().await;
                }
            }
        }
        result
    }

    /// One poller: waits for a free slot, asks for as many tasks as there
    /// are free slots, runs each in a slot of its own. Ends only when the
    /// host refuses the worker for good (or when dropped, at shutdown).
    async fn poll_loop(&self, shared: &Polling) -> Result<(), WorkerError> {
        let mut backoff = Backoff::default();
        loop {
            let first = shared
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let extra = (shared.slots.available_permits() as u32).min(MAX_TASKS_PER_POLL - 1);
            let mut slots = vec![first];
            if extra > 0
                && let Ok(more) = shared.slots.clone().try_acquire_many_owned(extra)
            {
                slots.push(more);
            }
            let wanted: u32 = slots.iter().map(|s| s.num_permits() as u32).sum();
            let poll = proto::PollActivityTaskRequest {
                worker_id: self.options.worker_id.clone(),
                activity_names: shared.names.clone(),
                wait_ms: self.options.poll_wait.as_millis() as u64,
                max_tasks: wanted,
            };
            match self.client.clone().poll_activity_task(poll).await {
                Ok(answer) => {
                    backoff.reset(&self.address);
                    let tasks = answer.into_inner().tasks;
                    let mut permits = slots.into_iter().flat_map(split_permit);
                    let mut attempts = shared.attempts.lock().expect("attempts poisoned");
                    // Reap finished attempts so the set does not grow.
                    while attempts.try_join_next().is_some() {}
                    for task in tasks {
                        let slot = permits.next();
                        let (client, activities) = (self.client.clone(), shared.activities.clone());
                        attempts.spawn(async move {
                            run_attempt(client, &activities, task).await;
                            drop(slot);
                        });
                    }
                }
                Err(s) if fatal(&s) => return Err(WorkerError::Refused(s.message().to_owned())),
                Err(s) => {
                    drop(slots);
                    tokio::time::sleep(backoff.next(&self.address, &s)).await;
                }
            }
        }
    }
}

/// The most tasks one poll asks for (the host's own limit).
const MAX_TASKS_PER_POLL: u32 = 100;

/// What a worker's pollers share.
struct Polling {
    activities: Arc<Activities>,
    names: Vec<String>,
    /// One permit per attempt that may run at once.
    slots: Arc<Semaphore>,
    attempts: Mutex<JoinSet<()>>,
}

/// A permit of several slots as permits of one slot each, so that each
/// attempt frees its own slot when it ends.
fn split_permit(mut permit: OwnedSemaphorePermit) -> Vec<OwnedSemaphorePermit> {
    let mut one_each = Vec::with_capacity(permit.num_permits());
    while permit.num_permits() > 1 {
        one_each.push(permit.split(1).expect("more than one permit"));
    }
    one_each.push(permit);
    one_each
}

/// Errors that retrying cannot fix.
fn fatal(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::InvalidArgument
            | Code::Unimplemented
    )
}

/// Pauses between failed polls: 100 ms doubling to 5 s, each drawn at random
/// from its upper half, so that workers cut off together (a host restart) do
/// not come back in lockstep. One log line per outage.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self, address: &str, s: &Status) -> Duration {
        if self.failures == 0 {
            tracing::warn!(%address, "the host is unreachable or failing ({}: {}); retrying with backoff", s.code(), s.message());
        }
        self.failures = self.failures.saturating_add(1);
        let ceiling = Duration::from_millis(100u64.saturating_mul(1 << self.failures.min(6)))
            .min(Duration::from_secs(5));
        jittered(ceiling, random_fraction())
    }

    fn reset(&mut self, address: &str) {
        if self.failures > 0 {
            tracing::info!(%address, "the host answers again");
        }
        self.failures = 0;
    }
}

/// A pause between half of `ceiling` and all of it; `fraction` is in [0, 1).
fn jittered(ceiling: Duration, fraction: f64) -> Duration {
    ceiling.mul_f64(0.5 + fraction.clamp(0.0, 1.0) / 2.0)
}

/// A fraction in [0, 1) from the operating system's randomness (0 without it:
/// the pause is then half the ceiling, which is still a pause).
fn random_fraction() -> f64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.0,
    }
}

/// Runs one attempt and reports how it ended.
async fn run_attempt(client: Client, activities: &Activities, task: proto::ActivityTask) {
    let token = task.task_token.clone();
    let input = match serde_json::from_str::<Value>(&task.input_json) {
        Ok(v) => v,
        Err(e) => {
            let fail = failure(
                &token,
                "BadInput",
                format!("the input is not JSON: {e}"),
                true,
            );
            report(client, Report::Fail(fail)).await;
            return;
        }
    };
    let attempt = ActivityTask {
        run_id: RunId(task.run_id.clone()),
        seq: task.seq,
        name: task.activity_name.clone(),
        input,
        options: ActivityOptions {
            start_to_close_timeout_ms: task.start_to_close_timeout_ms,
            heartbeat_timeout_ms: task.heartbeat_timeout_ms,
            ..ActivityOptions::default()
        },
        attempt: task.attempt,
        // The host knows the attempt by its task token; this one is not used.
        lease_token: 0,
        heartbeat_details: task
            .heartbeat_details_json
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok()),
        // The host enforces the schedule-to-close deadline.
        close_deadline_ms: None,
    };
    let runner = AttemptRunner {
        activities,
        sink: Arc::new(GrpcSink {
            client: client.clone(),
            token: token.clone(),
        }),
        clock: Arc::new(SystemClock),
        default_timeout_ms: task.start_to_close_timeout_ms,
    };
    tracing::debug!(run_id = %task.run_id, seq = task.seq, activity = %task.activity_name, attempt = task.attempt, "running an activity attempt");
    let report_of = match runner.call(&attempt).await {
        Called::Returned(Ok(output)) => Report::Complete(proto::CompleteActivityTaskRequest {
            task_token: token,
            output_json: output.to_string(),
        }),
        Called::Returned(Err(e)) => Report::Fail(proto::FailActivityTaskRequest {
            retry_after_ms: e.next_retry_delay.map(|d| d.as_millis() as u64),
            ..failure(&token, &e.error_type, e.message, e.non_retryable)
        }),
        // Only with a close deadline, which a remote attempt does not carry.
        Called::TooLate => return,
    };
    report(client, report_of).await;
}

fn failure(
    token: &str,
    error_type: &str,
    message: String,
    non_retryable: bool,
) -> proto::FailActivityTaskRequest {
    proto::FailActivityTaskRequest {
        task_token: token.to_owned(),
        error_type: error_type.to_owned(),
        message,
        non_retryable,
        retry_after_ms: None,
    }
}

enum Report {
    Complete(proto::CompleteActivityTaskRequest),
    Fail(proto::FailActivityTaskRequest),
}

/// Sends a report, retrying while the host is unreachable (up to about a
/// minute: past that the attempt's lease has most likely expired and another
/// attempt runs).
async fn report(client: Client, report: Report) {
    let mut pause = Duration::from_millis(100);
    for _ in 0..20 {
        let mut c = client.clone();
        let sent = match &report {
            Report::Complete(r) => c.complete_activity_task(r.clone()).await.map(|_| ()),
            Report::Fail(r) => c.fail_activity_task(r.clone()).await.map(|_| ()),
        };
        match sent {
            Ok(()) => return,
            Err(s) if s.code() == Code::FailedPrecondition => {
                tracing::debug!("an attempt's report was refused: {}", s.message());
                return;
            }
            Err(s) if fatal(&s) || s.code() == Code::NotFound => {
                tracing::warn!(
                    "reporting an activity attempt failed: {}: {}",
                    s.code(),
                    s.message()
                );
                return;
            }
            // Anything else may be a host going away or restarting (a reset
            // stream, a cancelled call, a database outage): the report is
            // fenced by its task token, so sending it again is harmless, and
            // dropping it would have the activity run again after its lease.
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::warn!(
        "gave up reporting an activity attempt: the host stayed unreachable; it is retried after its lease"
    );
}

/// Heartbeats over gRPC for one attempt.
struct GrpcSink {
    client: Client,
    token: String,
}

#[async_trait::async_trait]
impl HeartbeatSink for GrpcSink {
    async fn heartbeat(&self, heartbeat: Heartbeat) -> Result<(), StoreError> {
        let request = proto::HeartbeatActivityTaskRequest {
            task_token: self.token.clone(),
            details_json: heartbeat.details.as_ref().map(Value::to_string),
        };
        match self.client.clone().heartbeat_activity_task(request).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                if answer.cancel_requested {
                    Err(StoreError::Conflict {
                        run_id: heartbeat.run_id,
                        reason: answer.reason,
                    })
                } else {
                    Ok(())
                }
            }
            Err(s) => Err(StoreError::Unavailable(format!(
                "the host did not take the heartbeat ({}: {})",
                s.code(),
                s.message()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_the_upper_half_of_the_ceiling() {
        let ceiling = Duration::from_millis(800);
        assert_eq!(jittered(ceiling, 0.0), Duration::from_millis(400));
        assert_eq!(jittered(ceiling, 0.5), Duration::from_millis(600));
        assert!(jittered(ceiling, 0.999_999) < ceiling);
        // Out-of-range fractions are clamped, never beyond the ceiling.
        assert_eq!(jittered(ceiling, 7.0), ceiling);
        for _ in 0..1000 {
            let f = random_fraction();
            assert!((0.0..1.0).contains(&f), "{f}");
        }
    }

    #[test]
    fn backoff_doubles_to_five_seconds_and_resets() {
        let status = Status::unavailable("down");
        let mut b = Backoff::default();
        let pauses: Vec<Duration> = (0..10).map(|_| b.next("a", &status)).collect();
        for (i, p) in pauses.iter().enumerate() {
            let ceiling = Duration::from_millis(100 << (i + 1).min(6)).min(Duration::from_secs(5));
            assert!(*p >= ceiling / 2 && *p <= ceiling, "pause {i}: {p:?}");
        }
        assert!(pauses[9] >= Duration::from_millis(2500));
        b.reset("a");
        assert!(b.next("a", &status) <= Duration::from_millis(200));
    }
}
