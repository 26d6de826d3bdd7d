use crate::model::RunId;
use crate::scheduler::Clock;
use crate::store::{ActivityStore, ActivityTask, Heartbeat, StoreError};
use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often heartbeats reach the store when the activity has no heartbeat
/// timeout (they then carry details and news of cancellation only).
const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 1_000;

/// What an activity attempt knows about itself, and its line back to the
/// host: [`heartbeat`](Self::heartbeat) to report progress and learn of
/// cancellation. Clones share one attempt.
#[derive(Clone)]
pub struct ActivityContext {
    pub run_id: RunId,
    /// The command's sequence number within the run.
    pub seq: u32,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub activity: String,
    line: Arc<HostLine>,
}

/// Where an attempt's heartbeats go: the store for an attempt run by a host,
/// the host over gRPC for one run by a remote worker.
#[async_trait::async_trait]
pub(crate) trait HeartbeatSink: Send + Sync {
    /// Records a heartbeat; [`StoreError::Conflict`] when the attempt should stop.
    async fn heartbeat(&self, heartbeat: Heartbeat) -> Result<(), StoreError>;
}

/// Heartbeats straight into the store.
pub(crate) struct StoreSink(pub(crate) Arc<dyn ActivityStore>);

#[async_trait::async_trait]
impl HeartbeatSink for StoreSink {
    async fn heartbeat(&self, heartbeat: Heartbeat) -> Result<(), StoreError> {
        self.0.heartbeat(heartbeat).await
    }
}

/// The attempt's line to the host, shared by the context's clones.
struct HostLine {
    sink: Arc<dyn HeartbeatSink>,
    clock: Arc<dyn Clock>,
    lease_token: i64,
    /// Writes closer together than this are held back (the newest details are kept).
    interval_ms: u64,
    /// The details the last heartbeat of an earlier attempt recorded.
    earlier_details: Option<Value>,
    /// Set once the store said this attempt is no longer wanted.
    cancelled: AtomicBool,
    throttle: Mutex<Throttle>,
}

#[derive(Default)]
struct Throttle {
    last_write_ms: Option<u64>,
    /// The newest details held back by the throttle.
    unsent: Option<Value>,
    /// Why the store refused this attempt's heartbeat.
    stop_reason: Option<String>,
}

impl fmt::Debug for ActivityContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivityContext")
            .field("run_id", &self.run_id)
            .field("seq", &self.seq)
            .field("attempt", &self.attempt)
            .field("activity", &self.activity)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl ActivityContext {
    pub(crate) fn new(
        task: &ActivityTask,
        sink: Arc<dyn HeartbeatSink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let interval_ms = match task.options.heartbeat_timeout_ms {
            0 => DEFAULT_HEARTBEAT_INTERVAL_MS,
            timeout => timeout / 3,
        };
        Self {
            run_id: task.run_id.clone(),
            seq: task.seq,
            attempt: task.attempt,
            activity: task.name.clone(),
            line: Arc::new(HostLine {
                sink,
                clock,
                lease_token: task.lease_token,
                interval_ms,
                earlier_details: task.heartbeat_details.clone(),
                cancelled: AtomicBool::new(false),
                throttle: Mutex::default(),
            }),
        }
    }

    /// The same for every attempt of this activity call: pass it to payment
    /// providers and the like so a retried attempt is not done twice.
    pub fn idempotency_key(&self) -> String {
        format!("{}-{}", self.run_id, self.seq)
    }

    /// This attempt's number: 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Reports that the attempt is alive, with progress `details` that the
    /// next attempt receives from [`heartbeat_details`](Self::heartbeat_details)
    /// if this one fails or is lost. An activity with a heartbeat timeout must
    /// heartbeat within it, or the attempt is failed (`HeartbeatTimeout`) and
    /// retried.
    ///
    /// Cheap enough to call in a loop: at most one write reaches the store per
    /// third of the heartbeat timeout (per second without one); the details of
    /// calls in between are held back, the newest sent with the next write.
    ///
    /// An `Err` (type `Cancelled`) means the attempt should stop: the workflow
    /// cancelled the activity, the activity timed out, or another attempt took
    /// over. Whatever the attempt returns afterwards is discarded. It is
    /// returned from the last write on, without asking the store again.
    ///
    /// ```
    /// # use weft::{ActivityContext, ActivityError};
    /// async fn count(ctx: ActivityContext, to: u64) -> Result<u64, ActivityError> {
    ///     let start = ctx.heartbeat_details::<u64>().unwrap_or(0);
    ///     for i in start..to {
    ///         ctx.heartbeat(i).await?;
    ///         // … one step of the work …
    ///     }
    ///     Ok(to)
    /// }
    /// ```
    pub async fn heartbeat(&self, details: impl Serialize) -> Result<(), ActivityError> {
        let details = serde_json::to_value(details).map_err(|e| {
            ActivityError::non_retryable(
                "BadHeartbeatDetails",
                format!(
                    "the heartbeat details of activity {:?} cannot be serialized: {e}",
                    self.activity
                ),
            )
        })?;
        let now = self.line.clock.now_ms();
        {
            let mut throttle = self
                .line
                .throttle
                .lock()
                .expect("heartbeat throttle poisoned");
            if let Some(reason) = &throttle.stop_reason {
                return Err(self.stop_error(reason));
            }
            let due = throttle
                .last_write_ms
                .is_none_or(|last| now >= last.saturating_add(self.line.interval_ms));
            if !due {
                throttle.unsent = Some(details);
                return Ok(());
            }
            throttle.last_write_ms = Some(now);
            throttle.unsent = None;
        }
        self.write(Some(details), now).await
    }

    /// Writes the details the throttle held back, if any (before the attempt
    /// fails, so that the next attempt resumes from the newest).
    pub(crate) async fn flush_heartbeat(&self) {
        let unsent = self
            .line
            .throttle
            .lock()
            .expect("heartbeat throttle poisoned")
            .unsent
            .take();
        if let Some(details) = unsent
            && !self.is_cancelled()
        {
            let _ = self.write(Some(details), self.line.clock.now_ms()).await;
        }
    }

    async fn write(&self, details: Option<Value>, now_ms: u64) -> Result<(), ActivityError> {
        let heartbeat = Heartbeat {
            run_id: self.run_id.clone(),
            seq: self.seq,
            lease_token: self.line.lease_token,
            details,
            now_ms,
        };
        match self.line.sink.heartbeat(heartbeat.clone()).await {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict { reason, .. }) => {
                let error = self.stop_error(&reason);
                self.line
                    .throttle
                    .lock()
                    .expect("heartbeat throttle poisoned")
                    .stop_reason = Some(reason);
                self.line.cancelled.store(true, Ordering::Relaxed);
                Err(error)
            }
            Err(e) => {
                // The database is away: the attempt carries on, and the
                // details go out with the next heartbeat.
                tracing::warn!(run_id = %self.run_id, seq = self.seq, "recording a heartbeat failed: {e}");
                let mut throttle = self
                    .line
                    .throttle
                    .lock()
                    .expect("heartbeat throttle poisoned");
                if throttle.unsent.is_none() {
                    throttle.unsent = heartbeat.details;
                }
                throttle.last_write_ms = None;
                Ok(())
            }
        }
    }

    fn stop_error(&self, why: &str) -> ActivityError {
        ActivityError::non_retryable(
            "Cancelled",
            format!(
                "attempt {} of activity {:?} should stop: {why}",
                self.attempt, self.activity
            ),
        )
    }

    /// The details of the last heartbeat an earlier attempt recorded, as `T`;
    /// `None` on the first attempt, when none was recorded, or when they do
    /// not deserialize as `T`.
    pub fn heartbeat_details<T: DeserializeOwned>(&self) -> Option<T> {
        let details = self.line.earlier_details.as_ref()?;
        serde_json::from_value(details.clone()).ok()
    }

    /// Whether a heartbeat has learned that this attempt should stop (see
    /// [`heartbeat`](Self::heartbeat)).
    pub fn is_cancelled(&self) -> bool {
        self.line.cancelled.load(Ordering::Relaxed)
    }
}

/// How an activity attempt failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct ActivityError {
    /// A short classifier (`CardDeclined`); retry policies match on it.
    pub error_type: String,
    pub message: String,
    /// No further attempt, whatever the retry policy says.
    pub non_retryable: bool,
    /// The delay before the next attempt, chosen by the activity instead of
    /// the policy's backoff (see [`retry_after`](Self::retry_after)).
    pub next_retry_delay: Option<Duration>,
}

impl ActivityError {
    /// A failure the retry policy may retry.
    pub fn retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            non_retryable: false,
            next_retry_delay: None,
        }
    }

    /// A failure that ends the activity at once.
    pub fn non_retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            non_retryable: true,
            next_retry_delay: None,
        }
    }

    /// Retries after `delay` instead of the policy's next backoff: for an
    /// upstream that said when to come back (a rate limit's `Retry-After`).
    /// The policy still bounds it: its maximum attempts and non-retryable
    /// types hold, and a retry due at or after the schedule-to-close deadline
    /// is not made.
    ///
    /// ```
    /// # use weft::ActivityError;
    /// # use std::time::Duration;
    /// let e = ActivityError::retryable("RateLimited", "429 from the bank")
    ///     .retry_after(Duration::from_secs(30));
    /// ```
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.next_retry_delay = Some(delay);
        self
    }
}

pub(crate) type ActivityFn = Arc<
    dyn Fn(ActivityContext, Value) -> BoxFuture<'static, Result<Value, ActivityError>>
        + Send
        + Sync,
>;

/// Activities by name.
#[derive(Clone, Default)]
pub struct Activities {
    map: BTreeMap<String, ActivityFn>,
}

impl Activities {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `f` under `name`, replacing any earlier one.
    pub fn register<I, O, F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, ActivityError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let name_owned = name.to_owned();
        let erased: ActivityFn = Arc::new(move |ctx: ActivityContext, input: Value| {
            let f = f.clone();
            let name = name_owned.clone();
            Box::pin(async move {
                let input: I = serde_json::from_value(input).map_err(|e| {
                    ActivityError::non_retryable(
                        "BadInput",
                        format!("the input of activity {name:?} does not match its type: {e}"),
                    )
                })?;
                let output = f(ctx, input).await?;
                serde_json::to_value(output).map_err(|e| {
                    ActivityError::non_retryable(
                        "BadOutput",
                        format!("the output of activity {name:?} cannot be serialized: {e}"),
                    )
                })
            })
        });
        self.map.insert(name.to_owned(), erased);
        self
    }

    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&ActivityFn> {
        self.map.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
